//! Soak: mixed load on the real binary for a given time, to show that
//! nothing grows but what the load creates and that nothing fails. Clients
//! register, log in, call `/me`, refresh and log out in a loop; the
//! process's RSS is sampled every second.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example soak -- --minutes 10 [--binary target/release/latchkey]
//! ```
//!
//! Prints requests by outcome, unexpected answers (any 5xx, or a 4xx the
//! flow does not expect), sessions created, and RSS at the start (after a
//! warm-up), at the end and at its peak; exits 1 on any unexpected answer.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, rss_kib};

const PASSWORD: &str = "correct horse battery staple";
const CLIENTS: usize = 16;

struct Args {
    duration: Duration,
    binary: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(60),
        binary: support::binary(),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => {
                let minutes: f64 = value.parse().map_err(|_| "--minutes: a number")?;
                args.duration = Duration::from_secs_f64(minutes * 60.0);
            }
            "--seconds" => {
                args.duration =
                    Duration::from_secs(value.parse().map_err(|_| "--seconds: a number")?);
            }
            "--binary" => args.binary = PathBuf::from(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !args.binary.exists() {
        return Err(format!(
            "{} does not exist: run `cargo build` first",
            args.binary.display()
        ));
    }
    Ok(args)
}

#[derive(Default)]
struct Outcomes {
    /// "operation status" → count.
    counts: BTreeMap<String, u64>,
    unexpected: Vec<String>,
}

impl Outcomes {
    fn note(&mut self, operation: &str, status: u16, expected: &[u16], body: &Value) {
        *self
            .counts
            .entry(format!("{operation} {status}"))
            .or_insert(0) += 1;
        if !expected.contains(&status) && self.unexpected.len() < 20 {
            self.unexpected
                .push(format!("{operation} answered {status}: {body}"));
        }
    }
}

async fn send(request: reqwest::RequestBuilder) -> (u16, Value, Option<String>) {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let cookie = response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(|value| value.strip_prefix("refresh_token="))
                .and_then(|rest| rest.split(';').next())
                .filter(|token| !token.is_empty())
                .map(str::to_owned);
            (status, response.json().await.unwrap_or(Value::Null), cookie)
        }
        Err(err) => (0, Value::String(err.to_string()), None),
    }
}

/// One client's loop: its own account; log in, a burst of `/me`, a few
/// refreshes, log out; again until `stop`.
async fn client(
    base: String,
    id: usize,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
    sessions: Arc<AtomicU64>,
) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let email = format!("soak{id}@example.com");
    let (status, body, _) = send(
        http.post(format!("{base}/api/auth/register"))
            .json(&json!({"username": format!("soak{id}"), "email": email, "password": PASSWORD})),
    )
    .await;
    outcomes
        .lock()
        .expect("outcomes")
        .note("register", status, &[201], &body);
    while !stop.load(Ordering::SeqCst) {
        let (status, body, cookie) = send(
            http.post(format!("{base}/api/auth/login"))
                .json(&json!({"email": email, "password": PASSWORD})),
        )
        .await;
        outcomes
            .lock()
            .expect("outcomes")
            .note("login", status, &[200], &body);
        let (Some(mut refresh), Some(mut access)) =
            (cookie, body["accessToken"].as_str().map(str::to_owned))
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        sessions.fetch_add(1, Ordering::SeqCst);
        for _ in 0..5 {
            for _ in 0..20 {
                let (status, body, _) = send(
                    http.get(format!("{base}/api/profile/me"))
                        .bearer_auth(&access),
                )
                .await;
                outcomes
                    .lock()
                    .expect("outcomes")
                    .note("me", status, &[200], &body);
            }
            let (status, body, cookie) = send(
                http.post(format!("{base}/api/auth/refresh"))
                    .header("Cookie", format!("refresh_token={refresh}")),
            )
            .await;
            outcomes
                .lock()
                .expect("outcomes")
                .note("refresh", status, &[200], &body);
            if let (Some(next), Some(token)) = (cookie, body["accessToken"].as_str()) {
                refresh = next;
                access = token.to_owned();
            }
        }
        let (status, body, _) = send(
            http.post(format!("{base}/api/auth/logout"))
                .header("Cookie", format!("refresh_token={refresh}")),
        )
        .await;
        outcomes
            .lock()
            .expect("outcomes")
            .note("logout", status, &[200], &body);
    }
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("soak: {problem}");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(
        &args.binary,
        &dir.path().join("data"),
        &["--rate-limits", "off"],
    )
    .unwrap_or_else(|problem| {
        eprintln!("soak: {problem}");
        std::process::exit(2);
    });
    let base = server.base.clone();
    let pid = server.pid();
    println!(
        "soak: {CLIENTS} clients for {:?} ({})",
        args.duration,
        args.binary.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let sessions = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                base.clone(),
                id,
                Arc::clone(&stop),
                Arc::clone(&outcomes),
                Arc::clone(&sessions),
            ))
        })
        .collect();
    // RSS after a warm-up (every client logged in once), then once a second.
    let warm_up = Duration::from_secs(5).min(args.duration / 4);
    tokio::time::sleep(warm_up).await;
    let start_rss = rss_kib(pid);
    let mut peak = start_rss;
    let started = Instant::now();
    while started.elapsed() + warm_up < args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(pid));
    }
    let end_rss = rss_kib(pid);
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let _ = client.await;
    }
    server.kill();
    let outcomes = outcomes.lock().expect("outcomes");
    let total: u64 = outcomes.counts.values().sum();
    println!("requests: {total} in {:?}", args.duration);
    for (what, count) in &outcomes.counts {
        println!("  {what:<16} {count:>10}");
    }
    println!("sessions created: {}", sessions.load(Ordering::SeqCst));
    println!(
        "RSS: {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1} MiB), {:.1} MiB at peak",
        start_rss as f64 / 1024.0,
        end_rss as f64 / 1024.0,
        (end_rss as f64 - start_rss as f64) / 1024.0,
        peak as f64 / 1024.0
    );
    println!("unexpected answers: {}", outcomes.unexpected.len());
    for line in &outcomes.unexpected {
        println!("  {line}");
    }
    if !outcomes.unexpected.is_empty() {
        std::process::exit(1);
    }
}
