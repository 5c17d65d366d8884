//! The real `latchkey` binary as a self-hoster runs it: zero configuration,
//! `.env`, signals, a locked data dir, `latchkey openapi`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, cookie_value};

const BINARY: &str = env!("CARGO_BIN_EXE_latchkey");

struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn command(cwd: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .current_dir(cwd)
        .env_remove("JWT_SECRET")
        .env_remove("REFRESH_TOKEN_SECRET")
        .env_remove("PORT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts `latchkey --port 0 <args>` in `cwd` and waits until it listens.
fn start(cwd: &Path, args: &[&str]) -> Server {
    let mut child = command(cwd)
        .args(["--port", "0"])
        .args(args)
        .spawn()
        .expect("spawn latchkey");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let address = line
                .split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(address) = address {
                let _ = address_tx.send(address.to_owned());
            }
            lines.lock().expect("log").push(line);
        }
    });
    let address = address_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("latchkey did not start: {:?}", log.lock().expect("log")));
    Server {
        child,
        base: format!("http://{address}"),
        log,
    }
}

impl Server {
    /// Sends SIGTERM and returns the exit status.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = self.child.wait().expect("wait");
        // Give the reader thread a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let log = self.log.lock().expect("log").clone();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

async fn register_and_login(base: &str) -> (String, String) {
    let client = client();
    let registered = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = login.json().await.expect("json");
    let access = body["accessToken"].as_str().expect("token").to_owned();
    (
        access,
        cookie_value(&cookie, "refresh_token").expect("refresh cookie"),
    )
}

async fn me_status(base: &str, access: &str) -> StatusCode {
    client()
        .get(format!("{base}/api/profile/me"))
        .bearer_auth(access)
        .send()
        .await
        .expect("me")
        .status()
}

#[tokio::test]
async fn zero_configuration_start_survives_sigterm_and_restart_without_leaking_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let cwd = tempfile::tempdir().expect("temp dir");

    let server = start(cwd.path(), &[]);
    let (access, refresh) = register_and_login(&server.base).await;
    assert_eq!(me_status(&server.base, &access).await, StatusCode::OK);
    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    for secret in ["jwt_secret", "refresh_token_secret"] {
        let mode = std::fs::metadata(cwd.path().join("data").join(secret))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret} is owner-only");
    }
    let secret = std::fs::read_to_string(cwd.path().join("data/jwt_secret")).expect("secret");
    let log = log.join("\n");
    for needle in [PASSWORD, access.as_str(), refresh.as_str(), secret.trim()] {
        assert!(!log.contains(needle), "the log leaks a credential");
    }

    let server = start(cwd.path(), &[]);
    assert_eq!(
        me_status(&server.base, &access).await,
        StatusCode::OK,
        "tokens survive a restart"
    );
    let refreshed = client()
        .post(format!("{}/api/auth/refresh", server.base))
        .header("Cookie", format!("refresh_token={refresh}"))
        .send()
        .await
        .expect("refresh");
    assert_eq!(
        refreshed.status(),
        StatusCode::OK,
        "sessions survive a restart"
    );
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test]
async fn secrets_come_from_a_dot_env_file() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let access_secret = "an-access-secret-from-dotenv-0123456789";
    std::fs::write(
        cwd.path().join(".env"),
        format!("JWT_SECRET={access_secret}\nREFRESH_TOKEN_SECRET=a-refresh-secret-from-dotenv-0123456789\n"),
    )
    .expect("write .env");
    let server = start(cwd.path(), &[]);
    let (access, _) = register_and_login(&server.base).await;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    let key = jsonwebtoken::DecodingKey::from_secret(access_secret.as_bytes());
    jsonwebtoken::decode::<Value>(&access, &key, &validation)
        .expect("signed with JWT_SECRET from .env");
    assert!(
        !cwd.path().join("data/jwt_secret").exists(),
        "no secret is generated when one is configured"
    );
}

#[test]
fn a_short_secret_is_refused_at_startup() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let output = command(cwd.path())
        .env("JWT_SECRET", "too-short")
        .args(["--port", "0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("JWT_SECRET must be at least 32 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_second_instance_on_the_same_data_dir_exits_with_one_line() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let first = start(cwd.path(), &[]);
    let output = command(cwd.path())
        .args(["--port", "0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("latchkey:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("in use by another latchkey process"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    drop(first);
}

#[test]
fn the_openapi_subcommand_prints_the_checked_in_spec() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let output = command(cwd.path()).arg("openapi").output().expect("run");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("openapi.json");
    assert_eq!(printed.trim_end(), file.trim_end());
    assert!(
        !cwd.path().join("data").exists(),
        "printing the spec touches no data dir"
    );
}
