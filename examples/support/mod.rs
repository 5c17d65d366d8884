//! What the example harnesses share: which binary to run, starting it on a
//! data directory and learning its address, and reading a process's memory.
//! Each example uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary given with `--binary PATH`, else the newest of the release
/// and debug builds that exists.
pub fn binary() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        if flag == "--binary"
            && let Some(path) = given.next()
        {
            return PathBuf::from(path);
        }
    }
    ["release", "debug"]
        .iter()
        .map(|profile| manifest.join("target").join(profile).join("latchkey"))
        .find(|path| path.exists())
        .unwrap_or_else(|| manifest.join("target/debug/latchkey"))
}

/// A latchkey process serving on a free port of 127.0.0.1.
pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    /// `http://` + the address.
    pub base: String,
    /// Every line it has logged so far, but the one per request.
    pub log: Arc<Mutex<Vec<String>>>,
    /// From spawning the process to its "listening" line.
    pub started_in: Duration,
}

impl Server {
    /// Starts `binary` on `data_dir` with `args` (after `--port 0`), without
    /// secrets from this environment, and waits (up to 60 s) until it listens.
    ///
    /// # Errors
    /// A sentence saying why it did not start.
    pub fn start(binary: &Path, data_dir: &Path, args: &[&str]) -> Result<Server, String> {
        Server::start_with(binary, data_dir, args, &[])
    }

    /// [`Server::start`] with these environment variables set
    /// (`DATABASE_URL`…).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start_with(
        binary: &Path,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let spawned = Instant::now();
        let mut child = Command::new(binary)
            .envs(env.iter().copied())
            .args(["--port", "0"])
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn,latchkey=info")
            .env_remove("JWT_SECRET")
            .env_remove("REFRESH_TOKEN_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", binary.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("address=").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = found.send((address.trim_matches('"').to_owned(), Instant::now()));
                }
                // One line per request would pile up under load: keep the rest.
                if !line.contains("latency_us=") {
                    lines.lock().expect("log").push(line);
                }
            }
        });
        let Ok((address, listening)) = address.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = log.lock().expect("log").join("\n");
            return Err(format!("latchkey did not start:\n{log}"));
        };
        let address: SocketAddr = address
            .parse()
            .map_err(|_| format!("latchkey logged an odd address: {address}"))?;
        Ok(Server {
            child,
            address,
            base: format!("http://{address}"),
            log,
            started_in: listening - spawned,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`: now; `VmHWM`: peak), or 0.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident memory of process `pid` now, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}
