//! The benchmark: latchkey against the limits of the machine it runs on,
//! each measured in the same run, so that the ratios hold on a noisy shared
//! machine where absolute figures drift.
//!
//! ```text
//! cargo run --release --features bench --example bench            # about 6 minutes
//! cargo run --release --features bench --example bench -- --quick # a smoke run (CI)
//! ```
//!
//! It builds the release binary if needed (or runs `--binary PATH`), starts
//! it on temporary data directories, drives it over loopback with its own
//! load generator (hyper, HTTP/1.1 keep-alive, closed loop: each connection
//! sends its next request when the answer arrives) and prints one table:
//! scenario, requests/s, p50, p99, the baseline, its figure, the ratio and
//! the goal. Each row alternates baseline and latchkey phases (`--rounds`,
//! default 3) and reports medians. The baselines:
//!
//! - a bare poem handler answering a small JSON, served by latchkey's own
//!   connection loop with the same settings (this program, in another
//!   process);
//! - argon2id verifications and hashes with latchkey's parameters, one
//!   thread per core, in this process;
//! - a sled transaction over two trees plus a flush, at the same concurrency
//!   as the refresh chains, in this process;
//! - with `--database-url postgres://…` (the `postgres` rows): a raw
//!   PostgreSQL transaction of the shape latchkey's refresh runs (three
//!   rows read and locked, one statement writing five rows in four
//!   tables, commit), at the same concurrency, from this process; and the
//!   register-shaped one, for the notes.
//!
//! The million-session figures are seeded through the library
//! (`Latchkey::seed_sessions`, behind the `bench` feature), not over HTTP.
//! The sweep runs in this process on a manual clock, so the seeded sessions
//! can expire at once. It never fails on speed: it exits 1 only when a
//! request got an answer it should not have (a correctness failure).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use latchkey::config::RateLimits;
use latchkey::{ClientInfo, Clock, Config, Latchkey};
use serde_json::{Value, json};
use sled::Transactional;
use support::{Server, peak_rss_kib, rss_kib};

const PASSWORD: &str = "correct horse battery staple";

struct Args {
    quick: bool,
    binary: Option<PathBuf>,
    rounds: usize,
    phase: Duration,
    sessions: usize,
    /// Only these groups of rows (`me`, `hashing`, `refresh`, `sessions`,
    /// `postgres`).
    only: Vec<String>,
    /// The PostgreSQL server for the `postgres` rows (each run in a schema
    /// of its own); without it they are skipped.
    database_url: Option<String>,
}

impl Args {
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|wanted| wanted == group)
    }
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        binary: None,
        rounds: 3,
        phase: Duration::from_secs(4),
        sessions: 1_000_000,
        only: Vec::new(),
        database_url: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        match flag.as_str() {
            "--quick" => {
                args.quick = true;
                args.rounds = 1;
                args.phase = Duration::from_millis(700);
                args.sessions = 20_000;
            }
            "--binary" => args.binary = given.next().map(PathBuf::from),
            "--database-url" => args.database_url = given.next(),
            "--only" => args.only.extend(
                given
                    .next()
                    .iter()
                    .flat_map(|groups| groups.split(','))
                    .map(str::to_owned),
            ),
            "--rounds" => {
                args.rounds = given
                    .next()
                    .and_then(|value| value.parse().ok())
                    .filter(|rounds| *rounds > 0)
                    .ok_or("--rounds: a number above 0")?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn main() {
    // Started by this program as the bare-handler baseline.
    if std::env::args().any(|arg| arg == "--serve-baseline") {
        serve_baseline();
        return;
    }
    let args = args().unwrap_or_else(|problem| {
        eprintln!("bench: {problem}");
        std::process::exit(2);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let failures = runtime.block_on(bench(&args));
    if failures > 0 {
        eprintln!("bench: {failures} requests got an unexpected answer");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- baselines

/// A bare poem handler with a body shaped like `/api/profile/me`'s, served
/// by latchkey's connection loop with the default settings. Prints
/// `address=…` on stderr as latchkey does, and serves until killed.
fn serve_baseline() {
    use poem::web::Json;
    use poem::{Route, get, handler};

    #[handler]
    fn me() -> Json<Value> {
        Json(json!({"user": {
            "id": "0f9d5b1e-3c1a-4c57-9a59-1f3c0b7c2d11",
            "username": "bench",
            "email": "bench@example.com",
            "createdAt": "2026-12-02T00:00:00Z",
            "roles": ["user"],
        }}))
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        eprintln!("address={}", listener.local_addr().expect("address"));
        let app = Route::new().at("/api/profile/me", get(me));
        latchkey::http::serve_endpoint(listener, app, &Config::default(), std::future::pending())
            .await
            .expect("serve");
    });
}

/// Runs one thread per worker that `worker` makes for `phase`, each calling
/// its step over and over; returns steps per second, all threads together.
fn steps_per_second<S: FnMut() + Send + 'static>(
    threads: usize,
    phase: Duration,
    mut worker: impl FnMut() -> S,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let mut step = worker();
            std::thread::spawn(move || {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    step();
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let done: u64 = workers
        .into_iter()
        .map(|worker| worker.join().expect("baseline thread"))
        .sum();
    done as f64 / started.elapsed().as_secs_f64()
}

/// Password checks per second with latchkey's argon2id parameters, one
/// thread per core, each reusing its memory as latchkey's threads do.
/// `verify`: compare with a stored hash; otherwise hash with a new salt.
fn raw_argon2(phase: Duration, verify: bool) -> f64 {
    steps_per_second(cores(), phase, || {
        let params = Params::DEFAULT;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut memory = vec![Block::default(); params.block_count()];
        let salt = *b"sixteen byte slt";
        let mut expected = [0u8; 32];
        argon2
            .hash_password_into_with_memory(PASSWORD.as_bytes(), &salt, &mut expected, &mut memory)
            .expect("hash");
        move || {
            let mut salt = salt;
            if !verify {
                rand::fill(&mut salt);
            }
            let mut out = [0u8; 32];
            argon2
                .hash_password_into_with_memory(PASSWORD.as_bytes(), &salt, &mut out, &mut memory)
                .expect("hash");
            assert!(!verify || out == expected);
        }
    })
}

/// Durable writes per second straight on sled: `concurrency` threads, each
/// writing a record and its expiry index entry in one transaction over two
/// trees, then flushing.
fn raw_sled(dir: &Path, phase: Duration, concurrency: usize) -> f64 {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 << 20)
        .open()
        .expect("sled");
    let records = db.open_tree("records").expect("tree");
    let expiry = db.open_tree("expiry").expect("tree");
    steps_per_second(concurrency, phase, || {
        let (db, records, expiry) = (db.clone(), records.clone(), expiry.clone());
        move || {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            (&records, &expiry)
                .transaction(|(records, expiry)| {
                    records.insert(&key, &[7u8; 200][..])?;
                    expiry.insert(&key, &[][..])?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .expect("transaction");
            db.flush().expect("flush");
        }
    })
}

// ----------------------------------------------------------- load generator

/// What one connection does, over and over.
#[derive(Clone)]
enum Job {
    /// `GET /api/profile/me` with this access token.
    Me(Arc<str>),
    /// Log in with the right password.
    Login(String),
    /// Register a new account each time (`n` counts them).
    Register { prefix: String, n: u64 },
    /// Refresh with this cookie, and keep the next one.
    Refresh(String),
}

impl Job {
    fn request(&mut self) -> (hyper::Request<Full<Bytes>>, u16) {
        let builder = hyper::Request::builder().header("host", "127.0.0.1");
        let post = |path: &str, body: Value| {
            hyper::Request::builder()
                .method("POST")
                .uri(path)
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("request")
        };
        match self {
            Job::Me(token) => (
                builder
                    .uri("/api/profile/me")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::default())
                    .expect("request"),
                200,
            ),
            Job::Login(email) => (
                post(
                    "/api/auth/login",
                    json!({"email": email, "password": PASSWORD}),
                ),
                200,
            ),
            Job::Register { prefix, n } => {
                *n += 1;
                let name = format!("{prefix}x{n}");
                let body = json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD});
                (post("/api/auth/register", body), 201)
            }
            Job::Refresh(cookie) => (
                builder
                    .method("POST")
                    .uri("/api/auth/refresh")
                    .header("cookie", format!("refresh_token={cookie}"))
                    .body(Full::default())
                    .expect("request"),
                200,
            ),
        }
    }
}

/// What a phase of load measured.
#[derive(Default)]
struct Sample {
    latencies_us: Vec<u32>,
    elapsed: Duration,
    unexpected: BTreeMap<String, u64>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        Duration::from_micros(u64::from(self.latencies_us[index]))
    }
}

async fn connect(address: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Runs every job on its own keep-alive connection for `phase`; `jobs` are
/// left as they ended (a refresh chain holds its newest cookie).
async fn load_jobs(address: SocketAddr, jobs: &mut Vec<Job>, phase: Duration) -> Sample {
    let deadline = Instant::now() + phase;
    let tasks: Vec<_> = jobs
        .drain(..)
        .map(|job| tokio::spawn(connection_loop(address, job, Until::Time(deadline))))
        .collect();
    let (sample, ended) = gather(tasks).await;
    *jobs = ended;
    sample
}

/// [`load_jobs`] for jobs whose state does not matter afterwards.
async fn load(address: SocketAddr, mut jobs: Vec<Job>, phase: Duration) -> Sample {
    load_jobs(address, &mut jobs, phase).await
}

/// When a connection stops.
#[derive(Clone)]
enum Until {
    Time(Instant),
    Flag(Arc<AtomicBool>),
}

impl Until {
    fn reached(&self) -> bool {
        match self {
            Until::Time(deadline) => Instant::now() >= *deadline,
            Until::Flag(flag) => flag.load(Ordering::Relaxed),
        }
    }
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<(Sample, Job)>>) -> (Sample, Vec<Job>) {
    let mut total = Sample::default();
    let mut jobs = Vec::new();
    for task in tasks {
        let (sample, job) = task.await.expect("connection task");
        jobs.push(job);
        total.latencies_us.extend(sample.latencies_us);
        total.elapsed = total.elapsed.max(sample.elapsed);
        for (what, count) in sample.unexpected {
            *total.unexpected.entry(what).or_default() += count;
        }
    }
    (total, jobs)
}

async fn connection_loop(address: SocketAddr, mut job: Job, until: Until) -> (Sample, Job) {
    let mut sender = connect(address).await;
    let mut sample = Sample::default();
    let started = Instant::now();
    while !until.reached() {
        let (request, expected) = job.request();
        let sent = Instant::now();
        let answer = match sender.send_request(request).await {
            Ok(answer) => answer,
            Err(err) => {
                *sample.unexpected.entry(format!("error {err}")).or_default() += 1;
                sender = connect(address).await;
                continue;
            }
        };
        let status = answer.status().as_u16();
        let cookie = answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.strip_prefix("refresh_token="))
            .map(|rest| rest.split(';').next().unwrap_or_default().to_owned());
        let body = answer.into_body().collect().await;
        let latency = sent.elapsed();
        if status != expected || body.is_err() {
            let text = body
                .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
                .unwrap_or_default();
            *sample
                .unexpected
                .entry(format!(
                    "{status} {}",
                    text.chars().take(120).collect::<String>()
                ))
                .or_default() += 1;
            continue;
        }
        if let (Job::Refresh(current), Some(next)) = (&mut job, cookie) {
            *current = next;
        }
        sample
            .latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }
    sample.elapsed = started.elapsed();
    (sample, job)
}

// ------------------------------------------------------------------ helpers

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| cores.get())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Sends one request on a fresh connection: status, JSON body, refresh cookie.
async fn call(address: SocketAddr, mut job: Job) -> (u16, Value, Option<String>) {
    let mut sender = connect(address).await;
    let (request, _) = job.request();
    let answer = sender.send_request(request).await.expect("answer");
    let status = answer.status().as_u16();
    let cookie = answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("refresh_token="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned());
    let body = answer.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        cookie,
    )
}

/// Registers `name` and logs it in `sessions` times: the access tokens and
/// refresh cookies.
async fn account(address: SocketAddr, name: &str, sessions: usize) -> Vec<(Arc<str>, String)> {
    let mut register = Job::Register {
        prefix: name.to_owned(),
        n: 0,
    };
    let (request, _) = register.request();
    let mut sender = connect(address).await;
    let answer = sender.send_request(request).await.expect("register");
    assert_eq!(answer.status().as_u16(), 201, "register {name}");
    let email = format!("{name}x1@example.com");
    let mut out = Vec::new();
    for _ in 0..sessions {
        let (status, body, cookie) = call(address, Job::Login(email.clone())).await;
        assert_eq!(status, 200, "login {email}: {body}");
        let token = body["accessToken"].as_str().expect("access token");
        out.push((Arc::from(token), cookie.expect("refresh cookie")));
    }
    out
}

/// A formatted duration in ms.
fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1000.0)
}

/// The table being printed.
struct Table {
    failures: u64,
}

impl Table {
    fn header() {
        println!(
            "{:<44} {:>9} {:>8} {:>8}  {:<34} {:>10} {:>7}  goal",
            "scenario", "req/s", "p50 ms", "p99 ms", "baseline", "baseline", "ratio"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        scenario: &str,
        rate: String,
        p50: String,
        p99: String,
        baseline: &str,
        figure: String,
        ratio: String,
        goal: &str,
    ) {
        println!(
            "{scenario:<44} {rate:>9} {p50:>8} {p99:>8}  {baseline:<34} {figure:>10} {ratio:>7}  {goal}"
        );
    }

    fn check(&mut self, what: &str, sample: &Sample) {
        for (answer, count) in &sample.unexpected {
            eprintln!("  unexpected in {what}: {count} × {answer}");
            self.failures += count;
        }
    }
}

// -------------------------------------------------------------------- bench

async fn bench(args: &Args) -> u64 {
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => {
            let built = Command::new(env!("CARGO"))
                .args(["build", "--release", "--quiet", "--bin", "latchkey"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .is_ok_and(|status| status.success());
            if !built {
                eprintln!("bench: cargo build --release failed");
                std::process::exit(2);
            }
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/latchkey")
        }
    };
    let size = std::fs::metadata(&binary).map_or(0, |meta| meta.len());
    let params = Params::DEFAULT;
    println!(
        "latchkey bench: {} ({:.1} MB), {} cores, argon2id m={} KiB t={} p={}, {} round(s) of {:?} per phase{}",
        binary.display(),
        size as f64 / 1e6,
        cores(),
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        args.rounds,
        args.phase,
        if args.quick { ", --quick" } else { "" }
    );
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut table = Table { failures: 0 };
    let mut notes = Vec::new();
    Table::header();

    if args.wants("me") {
        // /me against a bare handler, EdDSA then HS256.
        let baseline_server = Server::start(
            &std::env::current_exe().expect("this program"),
            &scratch.path().join("unused"),
            &["--serve-baseline"],
        )
        .expect("baseline server");
        for alg in ["EdDSA", "HS256"] {
            let dir = scratch.path().join(format!("me-{alg}"));
            let server = Server::start(
                &binary,
                &dir,
                &["--rate-limits", "off", "--signing-alg", alg],
            )
            .expect("latchkey");
            let sessions = account(server.address, &format!("me{}", alg.to_lowercase()), 1).await;
            let token = sessions[0].0.clone();
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            for _ in 0..args.rounds {
                let bare = load(
                    baseline_server.address,
                    vec![Job::Me(token.clone()); 32],
                    args.phase,
                )
                .await;
                table.check("baseline /me", &bare);
                theirs.push(bare);
                let sample =
                    load(server.address, vec![Job::Me(token.clone()); 32], args.phase).await;
                table.check(&format!("/me {alg}"), &sample);
                ours.push(sample);
            }
            row_against(
                &mut table,
                &format!("GET /me, {alg}, 32 connections"),
                ours,
                "bare poem handler, same loop",
                theirs,
                "≥ 0.80×",
            );
            drop(server);
        }
        drop(baseline_server);
    }

    if args.wants("hashing") {
        // Logins and registrations against raw argon2; /me under a login storm.
        let dir = scratch.path().join("hashing");
        let mut server = Server::start(&binary, &dir, &["--rate-limits", "off"]).expect("latchkey");
        let idle_rss = rss_kib(server.pid());
        let storm = account(server.address, "storm", 1).await;
        let mut logins = Vec::new();
        let mut raw = Vec::new();
        for _ in 0..args.rounds {
            raw.push(raw_argon2(args.phase, true));
            let sample = load(
                server.address,
                vec![Job::Login("stormx1@example.com".into()); 16],
                args.phase,
            )
            .await;
            table.check("login", &sample);
            logins.push(sample);
        }
        rate_against(
            &mut table,
            "POST /login, 16 connections",
            logins,
            "raw argon2id verify, all cores",
            raw,
            "≥ 0.90×",
        );
        let (registers, raw) = register_rounds(server.address, "r", args, &mut table).await;
        rate_against(
            &mut table,
            "POST /register, 16 connections",
            registers,
            "raw argon2id hash, all cores",
            raw,
            "≥ 0.85×",
        );
        let token = storm[0].0.clone();
        let mut idle = Vec::new();
        let mut stormy = Vec::new();
        for _ in 0..args.rounds {
            let sample = load(server.address, vec![Job::Me(token.clone()); 8], args.phase).await;
            table.check("/me idle", &sample);
            idle.push(sample);
            let storm = tokio::spawn(load(
                server.address,
                vec![Job::Login("stormx1@example.com".into()); 16],
                args.phase,
            ));
            let sample = load(server.address, vec![Job::Me(token.clone()); 8], args.phase).await;
            table.check("/me in a login storm", &sample);
            stormy.push(sample);
            let storm = storm.await.expect("storm");
            table.check("login storm", &storm);
        }
        p99_against(
            &mut table,
            "GET /me p99 during a login storm (8 + 16 c.)",
            stormy,
            "/me p99 idle",
            idle,
            "≤ 3×",
        );
        let peak_rss = peak_rss_kib(server.pid());
        let argon2_mib = f64::from(params.m_cost()) / 1024.0;
        let hashes = cores();
        notes.push(format!(
            "memory: idle RSS {:.1} MiB (goal < 30); peak under the login storm {:.1} MiB (goal ≤ idle + {hashes} hashes × {argon2_mib:.0} MiB + 16 = {:.1})",
            idle_rss as f64 / 1024.0,
            peak_rss as f64 / 1024.0,
            idle_rss as f64 / 1024.0 + hashes as f64 * argon2_mib + 16.0,
        ));
        server.kill();
    }

    if args.wants("refresh") {
        // Refresh chains against raw sled writes.
        for chains in [1usize, 16, 64] {
            let dir = scratch.path().join(format!("refresh-{chains}"));
            let server = Server::start(&binary, &dir, &["--rate-limits", "off"]).expect("latchkey");
            let mut chain: Vec<_> = account(server.address, &format!("chain{chains}"), chains)
                .await
                .into_iter()
                .map(|(_, cookie)| Job::Refresh(cookie))
                .collect();
            let mut ours = Vec::new();
            let mut raw = Vec::new();
            for round in 0..args.rounds {
                let sled_dir = scratch.path().join(format!("sled-{chains}-{round}"));
                raw.push(raw_sled(&sled_dir, args.phase, chains));
                let _ = std::fs::remove_dir_all(&sled_dir);
                // Each round continues the chains where the last one stopped.
                let sample = load_jobs(server.address, &mut chain, args.phase).await;
                table.check("refresh", &sample);
                ours.push(sample);
            }
            rate_against(
                &mut table,
                &format!("POST /refresh, {chains} chain(s)"),
                ours,
                "raw sled tx + flush, same conc.",
                raw,
                "≥ 0.70×",
            );
        }
    }

    if args.wants("postgres")
        && let Some(url) = &args.database_url
    {
        postgres_rows(args, &binary, url, scratch.path(), &mut table, &mut notes).await;
    }

    if args.wants("sessions") {
        // A million sessions: startup, memory, disk, and the sweep.
        let seeded = scratch.path().join("seeded");
        let empty = scratch.path().join("empty");
        let seed_started = Instant::now();
        let clock = Clock::manual(unix_now());
        let config = |dir: &Path| Config {
            limits: RateLimits::off(),
            access_ttl: Duration::from_secs(2 * 3600),
            sweep_interval: Duration::from_secs(86_400),
            ..Config::with_data_dir(dir)
        };
        {
            let core = Latchkey::open_with_clock(config(&seeded), clock.clone())
                .await
                .expect("open");
            let user = seeded_account(&core).await;
            core.seed_sessions(&user.id, args.sessions, clock.now() + 3600)
                .await
                .expect("seed");
            // The same account without the sessions, to tell their share of the disk.
            let empty_core = Latchkey::open(config(&empty)).await.expect("open");
            seeded_account(&empty_core).await;
            empty_core.flush().expect("flush");
        }
        let seed_time = seed_started.elapsed();
        let sessions = args.sessions;
        let per_session = (du(&seeded).saturating_sub(du(&empty))) as f64 / sessions as f64;
        let mut empty_starts = Vec::new();
        let mut seeded_starts = Vec::new();
        let mut seeded_rss = 0;
        for _ in 0..args.rounds {
            let mut server = Server::start(&binary, &empty, &[]).expect("latchkey");
            empty_starts.push(server.started_in.as_secs_f64());
            server.kill();
            let mut server = Server::start(&binary, &seeded, &[]).expect("latchkey");
            seeded_starts.push(server.started_in.as_secs_f64());
            let (status, body, _) =
                call(server.address, Job::Login("seeded@example.com".into())).await;
            if status != 200 {
                eprintln!("  unexpected: login on the seeded directory: {status} {body}");
                table.failures += 1;
            }
            seeded_rss = rss_kib(server.pid());
            server.kill();
        }
        let (empty_start, seeded_start) = (median(empty_starts), median(seeded_starts));
        table.row(
            &format!("startup with {sessions} sessions"),
            "—".into(),
            format!("{:.0}", seeded_start * 1000.0),
            "—".into(),
            "startup, empty data dir (ms)",
            format!("{:.0}", empty_start * 1000.0),
            format!("{:.2}×", seeded_start / empty_start.max(1e-9)),
            "< 1 s",
        );

        let (swept, sweep_time, mut before, mut during) =
            sweep_under_load(config(&seeded), clock, args.phase).await;
        table.check("/me before the sweep", &before);
        table.check("/me during the sweep", &during);
        let (p99_before, p99_during) = (before.percentile(0.99), during.percentile(0.99));
        table.row(
            &format!("GET /me p99 while sweeping {swept}"),
            format!("{:.0}", during.rate()),
            ms(during.percentile(0.5)),
            ms(p99_during),
            "/me p99 without the sweep",
            ms(p99_before),
            format!(
                "{:.2}×",
                p99_during.as_secs_f64() / p99_before.as_secs_f64().max(1e-9)
            ),
            "≤ 2×",
        );

        notes.push(format!(
            "memory: RSS after startup on {sessions} sessions and one login {:.1} MiB",
            seeded_rss as f64 / 1024.0,
        ));
        notes.push(format!(
            "disk: {per_session:.0} bytes per session (a session, its refresh record and their index entries); seeding {sessions} took {:.1} s; the sweep deleted {swept} in {:.2} s",
            seed_time.as_secs_f64(),
            sweep_time.as_secs_f64()
        ));
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    table.failures
}

/// Serves the seeded directory in this process with the background
/// sweeper (every 200 ms) on a manual clock, measures /me before anything
/// has expired, then moves the clock past every seeded session's expiry and
/// measures /me until the sweeper has deleted them all. Returns how many it
/// deleted, how long that took and the two samples.
async fn sweep_under_load(
    mut config: Config,
    clock: Clock,
    phase: Duration,
) -> (usize, Duration, Sample, Sample) {
    config.sweep_interval = Duration::from_millis(200);
    let sweep = watch_sweeps();
    let core = Latchkey::open_with_clock(config, clock.clone())
        .await
        .expect("open seeded");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(latchkey::run(listener, core.clone(), async move {
        let _ = stopped.await;
    }));
    let (status, body, _) = call(address, Job::Login("seeded@example.com".into())).await;
    assert_eq!(status, 200, "login on the seeded directory: {body}");
    let token: Arc<str> = Arc::from(body["accessToken"].as_str().expect("token"));
    let before = load(address, vec![Job::Me(token.clone()); 8], phase).await;
    let flag = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(connection_loop(
                address,
                Job::Me(token.clone()),
                Until::Flag(Arc::clone(&flag)),
            ))
        })
        .collect();
    let started = Instant::now();
    clock.advance(Duration::from_secs(3700));
    let swept = loop {
        if let Some(swept) = *sweep.lock().expect("sweep") {
            break swept;
        }
        if started.elapsed() > Duration::from_secs(900) {
            break 0;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let sweep_time = started.elapsed();
    flag.store(true, Ordering::Relaxed);
    let (during, _) = gather(tasks).await;
    let _ = stop.send(());
    let _ = serving.await;
    (swept, sweep_time, before, during)
}

/// Watches latchkey's log lines in this process for the sweeper's report
/// of a sweep that deleted sessions, and notes how many.
fn watch_sweeps() -> Arc<std::sync::Mutex<Option<usize>>> {
    struct Watch(Arc<std::sync::Mutex<Option<usize>>>);
    impl std::io::Write for Watch {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let line = String::from_utf8_lossy(bytes);
            if line.contains("swept expired records")
                && let Some(count) = line
                    .split("sessions=")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|count| count.parse::<usize>().ok())
                    .filter(|count| *count > 0)
            {
                *self.0.lock().expect("sweep") = Some(count);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let seen = Arc::new(std::sync::Mutex::new(None));
    let shared = Arc::clone(&seen);
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Watch(Arc::clone(&shared)))
        .init();
    seen
}

/// Registers the account the seeded sessions belong to.
async fn seeded_account(core: &Latchkey) -> latchkey::User {
    core.register(
        "seeded",
        "seeded@example.com",
        PASSWORD,
        ClientInfo::default(),
    )
    .await
    .expect("register")
}

/// Bytes the files under `dir` take on disk.
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// Rounds of 16 connections registering accounts (named after `tag`),
/// each after a phase of raw argon2id hashes: latchkey's samples and the
/// raw rates.
async fn register_rounds(
    address: SocketAddr,
    tag: &str,
    args: &Args,
    table: &mut Table,
) -> (Vec<Sample>, Vec<f64>) {
    let mut registers = Vec::new();
    let mut raw = Vec::new();
    for round in 0..args.rounds {
        raw.push(raw_argon2(args.phase, false));
        let jobs = (0..16)
            .map(|n| Job::Register {
                prefix: format!("{tag}{round}c{n}"),
                n: 0,
            })
            .collect();
        let sample = load(address, jobs, args.phase).await;
        table.check(&format!("register ({tag})"), &sample);
        registers.push(sample);
    }
    (registers, raw)
}

/// A rate row: medians of latchkey's phases against the baseline's rates.
fn rate_against(
    table: &mut Table,
    scenario: &str,
    mut ours: Vec<Sample>,
    baseline: &str,
    theirs: Vec<f64>,
    goal: &str,
) {
    let rate = median(ours.iter().map(Sample::rate).collect());
    let p50 = median(
        ours.iter_mut()
            .map(|s| s.percentile(0.5).as_secs_f64())
            .collect(),
    );
    let p99 = median(
        ours.iter_mut()
            .map(|s| s.percentile(0.99).as_secs_f64())
            .collect(),
    );
    let figure = median(theirs);
    table.row(
        scenario,
        format!("{rate:.0}"),
        ms(Duration::from_secs_f64(p50)),
        ms(Duration::from_secs_f64(p99)),
        baseline,
        format!("{figure:.0}/s"),
        format!("{:.2}×", rate / figure.max(1e-9)),
        goal,
    );
}

/// A rate row against another load sample's rate.
fn row_against(
    table: &mut Table,
    scenario: &str,
    ours: Vec<Sample>,
    baseline: &str,
    theirs: Vec<Sample>,
    goal: &str,
) {
    let theirs = theirs.iter().map(Sample::rate).collect();
    rate_against(table, scenario, ours, baseline, theirs, goal);
}

/// A p99 row against another sample's p99.
fn p99_against(
    table: &mut Table,
    scenario: &str,
    mut ours: Vec<Sample>,
    baseline: &str,
    mut theirs: Vec<Sample>,
    goal: &str,
) {
    let rate = median(ours.iter().map(Sample::rate).collect());
    let p50 = median(
        ours.iter_mut()
            .map(|s| s.percentile(0.5).as_secs_f64())
            .collect(),
    );
    let p99 = median(
        ours.iter_mut()
            .map(|s| s.percentile(0.99).as_secs_f64())
            .collect(),
    );
    let figure = median(
        theirs
            .iter_mut()
            .map(|s| s.percentile(0.99).as_secs_f64())
            .collect(),
    );
    table.row(
        scenario,
        format!("{rate:.0}"),
        ms(Duration::from_secs_f64(p50)),
        ms(Duration::from_secs_f64(p99)),
        baseline,
        ms(Duration::from_secs_f64(figure)),
        format!("{:.2}×", p99 / figure.max(1e-9)),
        goal,
    );
}

// ---------------------------------------------------------------- postgres

/// The URL of a new schema on `url` (latchkey creates the schema named
/// first on its search path).
fn fresh_schema(url: &str, name: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}options[search_path]=bench_{name}_{}",
        unix_now()
    )
}

const MASTER_KEY: &str = "the benchmark's master key, thirty-two bytes or more";

/// A latchkey node on the PostgreSQL schema `url`.
fn pg_node(binary: &Path, dir: &Path, url: &str) -> Server {
    Server::start_with(
        binary,
        dir,
        &["--rate-limits", "off"],
        &[("DATABASE_URL", url), ("LATCHKEY_MASTER_KEY", MASTER_KEY)],
    )
    .expect("latchkey on PostgreSQL")
}

/// Refresh, register and /me on PostgreSQL: latchkey's refresh against a
/// raw transaction of the same shape, its registration against argon2 (the
/// limit), and /me on one node and on two.
async fn postgres_rows(
    args: &Args,
    binary: &Path,
    url: &str,
    scratch: &Path,
    table: &mut Table,
    notes: &mut Vec<String>,
) {
    let chains = 16;
    let schema = fresh_schema(url, "refresh");
    let server = pg_node(binary, &scratch.join("pg-refresh"), &schema);
    let mut chain: Vec<_> = account(server.address, "pgchain", chains)
        .await
        .into_iter()
        .map(|(_, cookie)| Job::Refresh(cookie))
        .collect();
    let raw_schema = fresh_schema(url, "raw");
    let raw_pool = raw_pg_pool(&raw_schema, chains).await;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..args.rounds {
        raw.push(raw_pg(&raw_pool, args.phase, chains, Shape::Refresh).await);
        let sample = load_jobs(server.address, &mut chain, args.phase).await;
        table.check("refresh on PostgreSQL", &sample);
        ours.push(sample);
    }
    rate_against(
        table,
        &format!("POST /refresh on PostgreSQL, {chains} chains"),
        ours,
        "raw PG tx (refresh shape), same c.",
        raw,
        "≥ 0.70×",
    );

    let (registers, raw) = register_rounds(server.address, "pg", args, table).await;
    rate_against(
        table,
        "POST /register on PostgreSQL, 16 conn.",
        registers,
        "raw argon2id hash, all cores",
        raw,
        "≥ 0.85×",
    );
    let register_tx = raw_pg(&raw_pool, args.phase, 16, Shape::Register).await;
    notes.push(format!(
        "postgres: a raw register-shaped transaction (two absent rows read, four rows written, commit) runs {register_tx:.0}/s at 16 connections: the hash, not the database, bounds registration"
    ));

    // /me: one node, then two nodes on the same schema, 32 connections.
    let token = account(server.address, "pgme", 1).await[0].0.clone();
    let second = pg_node(binary, &scratch.join("pg-second"), &schema);
    let mut one = Vec::new();
    let mut two = Vec::new();
    for _ in 0..args.rounds {
        let sample = load(server.address, vec![Job::Me(token.clone()); 32], args.phase).await;
        table.check("/me on one PostgreSQL node", &sample);
        one.push(sample);
        let split = tokio::spawn(load(
            second.address,
            vec![Job::Me(token.clone()); 16],
            args.phase,
        ));
        let mut sample = load(server.address, vec![Job::Me(token.clone()); 16], args.phase).await;
        let other = split.await.expect("second node");
        table.check("/me on two PostgreSQL nodes", &sample);
        table.check("/me on two PostgreSQL nodes", &other);
        sample.latencies_us.extend(other.latencies_us);
        sample.elapsed = sample.elapsed.max(other.elapsed);
        two.push(sample);
    }
    let one_rates: Vec<Sample> = one;
    let baseline: Vec<f64> = one_rates.iter().map(Sample::rate).collect();
    rate_against(
        table,
        "GET /me on PostgreSQL, 1 node, 32 c.",
        one_rates,
        "(for the row below)",
        baseline.clone(),
        "—",
    );
    rate_against(
        table,
        "GET /me on PostgreSQL, 2 nodes, 16+16 c.",
        two,
        "1 node, 32 connections",
        baseline,
        "≥ 0.90× (same 2 cores)",
    );
    drop(second);
    drop(server);
}

/// What a raw transaction does.
#[derive(Clone, Copy)]
enum Shape {
    /// As latchkey's refresh: read and lock a user, a session and a
    /// refresh record; write the old record, the new one, its expiry and
    /// session index entries and the session (one statement); commit.
    Refresh,
    /// As latchkey's registration: look up an email and a username (both
    /// absent); write the user, both index entries, a mailed token, its
    /// expiry entry and the mail (one statement); commit.
    Register,
}

/// A pool on a new schema holding tables shaped like latchkey's.
async fn raw_pg_pool(url: &str, connections: usize) -> sqlx::PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(connections + 1).unwrap_or(32))
        .connect(url)
        .await
        .expect("raw PostgreSQL pool");
    let schema = url.rsplit('=').next().unwrap_or("bench").to_owned();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&pool)
    .await
    .expect("schema");
    for table in ["users", "sessions", "records", "expiry", "index", "outbox"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS raw_{table} (key bytea PRIMARY KEY, value bytea NOT NULL)"
        )))
        .execute(&pool)
        .await
        .expect("table");
    }
    pool
}

/// Transactions of `shape` per second: `concurrency` tasks, each on rows of its own.
async fn raw_pg(pool: &sqlx::PgPool, phase: Duration, concurrency: usize, shape: Shape) -> f64 {
    let stop = Instant::now() + phase;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mine = |what: &str| format!("{what}-{worker}-{}", unix_now()).into_bytes();
                let (user, session, record) = (mine("user"), mine("session"), mine("record"));
                for (table, key) in [("users", &user), ("sessions", &session), ("records", &record)] {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO raw_{table} (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                    )))
                    .bind(key)
                    .bind(vec![7u8; 400])
                    .execute(&pool)
                    .await
                    .expect("seed row");
                }
                let mut done = 0u64;
                while Instant::now() < stop {
                    let mut tx = pool.begin().await.expect("begin");
                    let mut fresh = [0u8; 32];
                    rand::fill(&mut fresh);
                    match shape {
                        Shape::Refresh => {
                            for (table, key) in
                                [("users", &user), ("sessions", &session), ("records", &record)]
                            {
                                let _: Option<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(
                                    format!("SELECT value FROM raw_{table} WHERE key = $1 FOR UPDATE"),
                                ))
                                .bind(key)
                                .fetch_optional(&mut *tx)
                                .await
                                .expect("read");
                            }
                            sqlx::query(
                                "WITH w0 AS (INSERT INTO raw_records (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value), \
                                 w1 AS (INSERT INTO raw_expiry (key, value) SELECT * FROM unnest($3::bytea[], $4::bytea[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value), \
                                 w2 AS (INSERT INTO raw_index (key, value) SELECT * FROM unnest($3::bytea[], $4::bytea[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value), \
                                 w3 AS (INSERT INTO raw_sessions (key, value) SELECT * FROM unnest($5::bytea[], $6::bytea[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value) SELECT 1",
                            )
                            .bind(vec![record.clone(), fresh.to_vec()])
                            .bind(vec![vec![7u8; 400], vec![8u8; 400]])
                            .bind(vec![fresh.to_vec()])
                            .bind(vec![Vec::<u8>::new()])
                            .bind(vec![session.clone()])
                            .bind(vec![vec![9u8; 400]])
                            .execute(&mut *tx)
                            .await
                            .expect("write");
                        }
                        Shape::Register => {
                            for _ in 0..2 {
                                let mut absent = [0u8; 16];
                                rand::fill(&mut absent);
                                let _: Option<Vec<u8>> = sqlx::query_scalar(
                                    "SELECT value FROM raw_index WHERE key = $1 FOR UPDATE",
                                )
                                .bind(absent.to_vec())
                                .fetch_optional(&mut *tx)
                                .await
                                .expect("read");
                            }
                            let keys: Vec<Vec<u8>> = (0..3u8)
                                .map(|n| {
                                    let mut key = fresh.to_vec();
                                    key.push(n);
                                    key
                                })
                                .collect();
                            sqlx::query(
                                "WITH w0 AS (INSERT INTO raw_users (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])), \
                                 w1 AS (INSERT INTO raw_index (key, value) SELECT * FROM unnest($3::bytea[], $4::bytea[])), \
                                 w2 AS (INSERT INTO raw_outbox (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])) SELECT 1",
                            )
                            .bind(vec![keys[0].clone()])
                            .bind(vec![vec![7u8; 600]])
                            .bind(vec![keys[1].clone(), keys[2].clone()])
                            .bind(vec![vec![1u8; 36], vec![2u8; 36]])
                            .execute(&mut *tx)
                            .await
                            .expect("write");
                        }
                    }
                    tx.commit().await.expect("commit");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("raw task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}
