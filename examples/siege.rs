//! Siege: what the connection limits and timeouts withstand. Runs the real
//! binary with its default limits and, while a legitimate client keeps
//! calling `/api/profile/me` (and logging in), attacks it three ways:
//! - idle sockets: connections that never send a byte, from one address
//!   and then from many (loopback offers 127.0.0.0/8 as source addresses);
//! - slow senders: request heads trickled a byte at a time (slowloris);
//! - a login storm: hundreds of concurrent logins with wrong passwords.
//!
//! For each phase it prints the legitimate client's success rate and
//! latency (p50, p99, max) and what the server did with the attackers.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example siege [-- --binary target/release/latchkey]
//! ```

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, rss_kib};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const PASSWORD: &str = "correct horse battery staple";
const PHASE: Duration = Duration::from_secs(12);

/// A socket to `server` from source address `from`.
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(server))
        .await
        .ok()?
        .ok()
}

/// The legitimate client's view of a phase: how many of its calls worked
/// and how long they took.
struct Legit {
    latencies: Vec<Duration>,
    failures: u64,
}

impl Legit {
    fn summary(&mut self) -> String {
        self.latencies.sort_unstable();
        let at = |share: f64| {
            self.latencies
                .get(((self.latencies.len() as f64 - 1.0) * share).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        format!(
            "{} ok, {} failed; p50 {:.1?}, p99 {:.1?}, max {:.1?}",
            self.latencies.len(),
            self.failures,
            at(0.5),
            at(0.99),
            self.latencies.last().copied().unwrap_or_default()
        )
    }
}

/// Calls `/me` with a fresh connection each time (a new visitor), for
/// `PHASE`, with a 15 s budget per call.
async fn legit_client(base: String, token: String) -> Legit {
    let mut legit = Legit {
        latencies: Vec::new(),
        failures: 0,
    };
    let started = Instant::now();
    while started.elapsed() < PHASE {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        let call = Instant::now();
        match http
            .get(format!("{base}/api/profile/me"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => legit.latencies.push(call.elapsed()),
            _ => legit.failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    legit
}

/// Holds `per_address` silent connections from each of `addresses` source
/// addresses, reopening them as the server closes them, until `stop`.
/// Returns the connections it managed to open.
async fn idle_sockets(
    server: SocketAddr,
    addresses: u8,
    per_address: usize,
    stop: Arc<AtomicBool>,
    trickle: bool,
) -> u64 {
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for a in 0..addresses {
        for _ in 0..per_address {
            let stop = Arc::clone(&stop);
            let opened = Arc::clone(&opened);
            tasks.push(tokio::spawn(async move {
                let from = Ipv4Addr::new(127, 0, 10, a + 1);
                while !stop.load(Ordering::SeqCst) {
                    let Some(mut socket) = connect_from(from, server).await else {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    opened.fetch_add(1, Ordering::SeqCst);
                    if trickle {
                        let _ = socket
                            .write_all(b"GET /api/profile/me HTTP/1.1\r\nHost: x\r\n")
                            .await;
                    }
                    // Hold it (trickling a byte a second) until the server hangs up.
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let alive = if trickle {
                            socket.write_all(b"X").await.is_ok()
                        } else {
                            let mut probe = [0u8; 1];
                            match socket.try_read(&mut probe) {
                                Ok(0) => false,
                                Ok(_) => true,
                                Err(err) => err.kind() == std::io::ErrorKind::WouldBlock,
                            }
                        };
                        if !alive {
                            break;
                        }
                    }
                }
            }));
        }
    }
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    opened.load(Ordering::SeqCst)
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    match http.post(url).json(&body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

#[tokio::main]
async fn main() {
    let binary = support::binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(&binary, &dir.path().join("data"), &["--rate-limits", "off"])
        .expect("latchkey starts");
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    post(
        &http,
        format!("{base}/api/auth/register"),
        json!({"username": "legit", "email": "legit@example.com", "password": PASSWORD}),
    )
    .await;
    let first = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "legit@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    // The device cookie: from now on this client is a known device.
    let device = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| cookie.strip_prefix("latchkey_device="))
        .and_then(|rest| rest.split(';').next())
        .expect("a device cookie")
        .to_owned();
    let login: Value = first.json().await.expect("json");
    let token = login["accessToken"].as_str().expect("token").to_owned();
    println!(
        "siege: {} with its default limits ({})",
        server.address,
        binary.display()
    );

    let baseline = legit_client(base.clone(), token.clone()).await.summary();
    println!("  quiet:                          legit /me: {baseline}");
    for (name, addresses, per_address, trickle) in [
        ("1000 idle sockets, 1 address", 1u8, 1000usize, false),
        ("1000 idle sockets, 16 addresses", 16, 63, false),
        ("512 slowloris heads, 8 addresses", 8, 64, true),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let attack = tokio::spawn(idle_sockets(
            server.address,
            addresses,
            per_address,
            Arc::clone(&stop),
            trickle,
        ));
        let mut legit = legit_client(base.clone(), token.clone()).await;
        stop.store(true, Ordering::SeqCst);
        let opened = attack.await.unwrap_or(0);
        println!(
            "  {name:<32} legit /me: {}; attacker connections opened: {opened}",
            legit.summary()
        );
    }

    // A login storm: 400 concurrent wrong-password logins, over and over,
    // from 50 addresses other than the legitimate client's.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(std::sync::Mutex::new([0u64; 4]));
    let storm: Vec<_> = (0..400)
        .map(|n| {
            let stop = Arc::clone(&stop);
            let outcomes = Arc::clone(&outcomes);
            let base = base.clone();
            tokio::spawn(async move {
                let from = Ipv4Addr::new(127, 0, 20, (n % 50) as u8 + 1);
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .local_address(IpAddr::V4(from))
                    .build()
                    .expect("client");
                while !stop.load(Ordering::SeqCst) {
                    let (status, _) = post(&http, format!("{base}/api/auth/login"), json!({"email": format!("storm{n}@example.com"), "password": "wrong wrong wrong"})).await;
                    let slot = match status {
                        401 => 0,
                        503 => 1,
                        0 => 2,
                        _ => 3,
                    };
                    outcomes.lock().expect("outcomes")[slot] += 1;
                }
            })
        })
        .collect();
    // The owner logs in every 200 ms from a known device, and from a new one.
    let legit_login = |device: Option<String>| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let mut legit = Legit {
                latencies: Vec::new(),
                failures: 0,
            };
            let started = Instant::now();
            while started.elapsed() < PHASE {
                let call = Instant::now();
                let mut request = http
                    .post(format!("{base}/api/auth/login"))
                    .json(&json!({"email": "legit@example.com", "password": PASSWORD}));
                if let Some(device) = &device {
                    request = request.header("cookie", format!("latchkey_device={device}"));
                }
                match request
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
                {
                    Ok(200) => legit.latencies.push(call.elapsed()),
                    _ => legit.failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            legit
        }
    };
    let (mut me, mut known, mut new) = tokio::join!(
        legit_client(base.clone(), token.clone()),
        legit_login(Some(device)),
        legit_login(None)
    );
    stop.store(true, Ordering::SeqCst);
    for task in storm {
        let _ = task.await;
    }
    let [refused, overloaded, failed, other] = *outcomes.lock().expect("outcomes");
    println!(
        "  login storm (400 at once):      legit /me: {}",
        me.summary()
    );
    println!(
        "                                  legit login, known device: {}",
        known.summary()
    );
    println!(
        "                                  legit login, new device: {}",
        new.summary()
    );
    println!(
        "                                  storm: {refused} answered 401, {overloaded} 503 overloaded, {failed} failed, {other} other"
    );
    println!(
        "  server RSS after the siege: {} MiB",
        rss_kib(server.pid()) / 1024
    );
    server.kill();
}
