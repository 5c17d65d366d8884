//! Fault injection: the real binary on a data directory whose disk fills
//! up (a small tmpfs, so it needs root to mount). While the disk is full:
//! - every write answers 503 `storage_unavailable` or, if it did get a
//!   200/201, is really on disk (checked after a restart);
//! - reads keep working, and `/readyz` says 503 `not_ready` until writes work again;
//! - nothing panics and the process stays up.
//!
//! Once space returns, writes work again without a restart. The fill and
//! the recovery run twice, the second time under concurrent writes.
//!
//! ```text
//! cargo build --release
//! sudo cargo run --release --example faults [-- --binary target/release/latchkey]
//! ```
//!
//! Prints each phase and the violations; exits 1 on any, 2 when it cannot
//! run (not root, no tmpfs).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

const PASSWORD: &str = "correct horse battery staple";
/// Size of the tmpfs the data directory lives on.
const DISK: &str = "32m";
/// The longest recovery may take once space returns.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

fn fail_to_run(problem: &str) -> ! {
    eprintln!("faults: {problem}");
    std::process::exit(2);
}

fn sh(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", command])
        .status()
        .is_ok_and(|status| status.success())
}

fn start(binary: &Path, data_dir: &Path) -> Server {
    Server::start(binary, data_dir, &["--rate-limits", "off"])
        .unwrap_or_else(|problem| fail_to_run(&problem))
}

#[derive(Default)]
struct Report {
    violations: Vec<String>,
}

impl Report {
    fn expect(&mut self, holds: bool, what: impl FnOnce() -> String) {
        if !holds {
            let what = what();
            println!("  VIOLATION: {what}");
            self.violations.push(what);
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn register(&self, name: &str) -> (u16, Value) {
        let body =
            json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD});
        self.send(
            self.http
                .post(format!("{}/api/auth/register", self.base))
                .json(&body),
        )
        .await
    }

    async fn login(&self, name: &str) -> (u16, Value) {
        let body = json!({"email": format!("{name}@example.com"), "password": PASSWORD});
        self.send(
            self.http
                .post(format!("{}/api/auth/login", self.base))
                .json(&body),
        )
        .await
    }

    async fn get(&self, path: &str, token: &str) -> u16 {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
        .0
    }
}

/// Fills the disk of `dir` but for a few KiB.
fn fill(dir: &Path) -> bool {
    sh(&format!(
        "avail=$(df --output=avail -k {dir} | tail -1); dd if=/dev/zero of={dir}/filler bs=1k count=$((avail - 16)) 2>/dev/null; true",
        dir = dir.display()
    ))
}

/// Writes, in batches of `batch` at once, until the full disk refuses some
/// (sled first fills space it already holds): each must be refused with
/// 503 `storage_unavailable`, or be acknowledged (and checked after a
/// restart). Returns (writes, refused).
async fn write_until_refused(
    api: &Arc<Api>,
    round: u32,
    batch: u32,
    report: &mut Report,
    acknowledged: &mut Vec<String>,
) -> (u32, u32) {
    let (mut written, mut refused) = (0, 0);
    while refused == 0 && written < 5_000 {
        let attempts: Vec<_> = (written..written + batch)
            .map(|n| {
                let api = Arc::clone(api);
                let name = format!("full{round}x{n}");
                async move {
                    let answer = api.register(&name).await;
                    (name, answer)
                }
            })
            .collect();
        written += batch;
        for (name, (status, body)) in futures_util::future::join_all(attempts).await {
            match status {
                503 => {
                    report.expect(body["code"] == "storage_unavailable", || {
                        format!("a 503 with code {}", body["code"])
                    });
                    refused += 1;
                }
                201 => acknowledged.push(name),
                other => report.expect(false, || {
                    format!("a write while the disk is full got {other}: {body}")
                }),
            }
        }
    }
    (written, refused)
}

/// Polls a write until it succeeds; returns how long recovery took.
async fn recovery_time(api: &Api, name: &str) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < RECOVERY_LIMIT {
        if api.register(name).await.0 == 201 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::main]
async fn main() {
    let binary = support::binary();
    if !binary.exists() {
        fail_to_run(&format!(
            "{} does not exist: run `cargo build` first",
            binary.display()
        ));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    if uid != "0" {
        fail_to_run("needs root to mount a small tmpfs");
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let disk = scratch.path().join("disk");
    std::fs::create_dir(&disk).expect("mount point");
    if !sh(&format!(
        "mount -t tmpfs -o size={DISK} tmpfs {}",
        disk.display()
    )) {
        fail_to_run("cannot mount a tmpfs");
    }
    let data_dir = disk.join("data");
    let mut report = Report::default();
    let mut acknowledged = vec!["alice".to_owned()];
    println!(
        "faults: data directory on a {DISK} tmpfs ({})",
        binary.display()
    );

    let mut server = start(&binary, &data_dir);
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        base: server.base.clone(),
    });
    report.expect(api.register("alice").await.0 == 201, || {
        "alice registers".into()
    });
    let (status, body) = api.login("alice").await;
    report.expect(status == 200, || format!("alice logs in ({status})"));
    let token = body["accessToken"].as_str().unwrap_or_default().to_owned();

    for (round, batch) in [(1u32, 1), (2, 20)] {
        fill(&disk);
        let (written, refused) =
            write_until_refused(&api, round, batch, &mut report, &mut acknowledged).await;
        println!(
            "  round {round}: disk full, {written} writes in batches of {batch}: {refused} refused with 503 storage_unavailable, the others acknowledged"
        );
        report.expect(refused > 0, || "a full disk refused no write".into());
        for path in [
            "/api/profile/me",
            "/api/auth/sessions",
            "/.well-known/jwks.json",
        ] {
            let status = api.get(path, &token).await;
            report.expect(status == 200, || {
                format!("read {path} while full: {status}")
            });
        }
        println!("  round {round}: reads answered 200 while full");
        let ready = api.get("/readyz", &token).await;
        report.expect(ready == 503, || {
            format!("/readyz while full: {ready}, not 503 not_ready")
        });
        report.expect(server.child.try_wait().ok().flatten().is_none(), || {
            "the process died".into()
        });
        sh(&format!("rm -f {}/filler", disk.display()));
        match recovery_time(&api, &format!("back{round}")).await {
            Some(took) => {
                acknowledged.push(format!("back{round}"));
                let ready = api.get("/readyz", &token).await;
                report.expect(ready == 200, || {
                    format!("/readyz after recovery: {ready}, not 200")
                });
                println!(
                    "  round {round}: space returned, writes work again after {took:.1?}, no restart"
                );
            }
            None => report.expect(false, || {
                format!("round {round}: no recovery within {RECOVERY_LIMIT:?}")
            }),
        }
    }

    let panicked = server
        .log
        .lock()
        .expect("log")
        .iter()
        .any(|line| line.contains("panicked"));
    report.expect(!panicked, || "the server panicked".into());
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
    // Every acknowledged write survives a restart.
    let mut restarted = start(&binary, &data_dir);
    let api = Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client"),
        base: restarted.base.clone(),
    };
    for name in &acknowledged {
        let status = api.login(name).await.0;
        report.expect(status == 200, || {
            format!("acknowledged {name} cannot log in after a restart ({status})")
        });
    }
    println!(
        "  after a restart: {} acknowledged accounts checked",
        acknowledged.len()
    );
    restarted.kill();
    sh(&format!("umount {}", disk.display()));
    println!("violations: {}", report.violations.len());
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
