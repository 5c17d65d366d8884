//! The real `latchkey` binary as a self-hoster runs it: zero configuration,
//! `.env`, signals, a locked data dir, TLS, `latchkey openapi` and
//! `latchkey audit`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Api, PASSWORD, Session, assert_error, self_signed};

const BINARY: &str = env!("CARGO_BIN_EXE_latchkey");

pub(crate) struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

pub(crate) fn command(cwd: &Path) -> Command {
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
    let mut command = command(cwd);
    command.args(["--port", "0"]).args(args);
    start_command(command)
}

/// Starts `command` (a latchkey that logs its address) and waits until it listens.
pub(crate) fn start_command(mut command: Command) -> Server {
    let mut child = command.spawn().expect("spawn latchkey");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (address_tx, address_rx) = mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // A text line (`name=value`) or a JSON one (`--log-format json`).
            let json = serde_json::from_str::<Value>(&line).ok();
            let field = |name: &str| match &json {
                Some(json) => json["fields"][name].as_str().map(str::to_owned),
                None => line
                    .split(&format!("{name}="))
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(|value| value.trim_matches('"').to_owned()),
            };
            if let Some(address) = field("address") {
                let scheme = field("scheme").unwrap_or_else(|| "http".into());
                let _ = address_tx.send(format!("{scheme}://{address}"));
            }
            lines.lock().expect("log").push(line);
        }
    });
    let address = address_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("latchkey did not start: {:?}", log.lock().expect("log")));
    Server {
        child,
        base: address,
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

impl Server {
    /// CPU time (user + system) the process has used, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc stat");
        // Fields after the command name (which ends with ')').
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat format")
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// The listening address, for raw sockets.
    fn address(&self) -> String {
        self.base.split("://").nth(1).expect("address").to_owned()
    }

    /// The log lines so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    /// A client of this server.
    pub(crate) fn api(&self) -> Api {
        Api::new(self.base.clone())
    }
}

#[tokio::test]
async fn zero_configuration_start_survives_sigterm_and_restart_without_leaking_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let cwd = tempfile::tempdir().expect("temp dir");

    let server = start(cwd.path(), &[]);
    let session = server.api().logged_in_user().await;
    let (access, refresh) = (&session.access_token, &session.refresh_token);
    assert_eq!(server.api().me(access).await.status(), StatusCode::OK);
    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    for secret in ["signing_keys.json", "refresh_token_secret"] {
        let mode = std::fs::metadata(cwd.path().join("data").join(secret))
            .expect("secret file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret} is owner-only");
    }
    assert!(
        !cwd.path().join("data/jwt_secret").exists(),
        "EdDSA by default: no HMAC secret"
    );
    let log = log.join("\n");
    assert!(
        !log.contains("could be read by other users"),
        "a first start does not warn about the files it has just created: {log}"
    );
    let stored = stored_credentials(&cwd.path().join("data"));
    for needle in [PASSWORD, access.as_str(), refresh.as_str()]
        .into_iter()
        .chain(stored.iter().map(String::as_str))
    {
        assert!(!log.contains(needle), "the log leaks a credential");
    }

    let server = start(cwd.path(), &[]);
    assert_eq!(
        server.api().me(access).await.status(),
        StatusCode::OK,
        "tokens survive a restart"
    );
    let refreshed = server.api().refresh_with(refresh).await;
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
    let access = server.api().logged_in_user().await.access_token;
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
    assert_fails_with_one_line(&output, "in use by another latchkey process");
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

#[test]
fn a_database_url_that_cannot_work_stops_startup_with_one_line_that_never_shows_its_password() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let key = "k".repeat(32);
    let refused = "postgres://latchkey:hunter2-pw@127.0.0.1:1/latchkey";
    for (url, master, needle) in [
        (refused, None, "needs LATCHKEY_MASTER_KEY"),
        (refused, Some("short"), "at least 32 bytes"),
        (
            "mysql://latchkey:hunter2-pw@127.0.0.1:1/latchkey",
            Some(key.as_str()),
            "must start with postgres://",
        ),
        (refused, Some(key.as_str()), "Connection refused"),
    ] {
        let mut run = command(cwd.path());
        run.env("DATABASE_URL", url).args(["--port", "0"]);
        match master {
            Some(master) => run.env("LATCHKEY_MASTER_KEY", master),
            None => run.env_remove("LATCHKEY_MASTER_KEY"),
        };
        let output = run.output().expect("run latchkey");
        assert_fails_with_one_line(&output, needle);
        for said in [&output.stdout, &output.stderr] {
            assert!(!String::from_utf8_lossy(said).contains("hunter2"), "{url}");
        }
    }
}

/// Asserts that a run failed with exactly one `latchkey: …` line on stderr,
/// containing `needle`, and no panic.
pub(crate) fn assert_fails_with_one_line(output: &std::process::Output, needle: &str) {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("latchkey:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every secret latchkey keeps in `data_dir`: the secret files and the
/// private keys of the key ring.
fn stored_credentials(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for name in ["jwt_secret", "refresh_token_secret"] {
        if let Ok(secret) = std::fs::read_to_string(data_dir.join(name)) {
            found.push(secret.trim().to_owned());
        }
    }
    if let Ok(ring) = std::fs::read_to_string(data_dir.join("signing_keys.json")) {
        let ring: Value = serde_json::from_str(&ring).expect("ring");
        for key in ring["keys"].as_array().expect("keys") {
            found.push(key["pkcs8"].as_str().expect("pkcs8").to_owned());
        }
    }
    assert!(found.len() >= 2, "the secrets are where we look");
    found
}

/// Runs `latchkey <args>` to completion in `cwd`.
fn run(cwd: &Path, args: &[&str]) -> std::process::Output {
    command(cwd).args(args).output().expect("run")
}

#[tokio::test]
async fn a_full_flow_with_an_attack_logs_no_secret_and_the_audit_command_shows_it() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let server = start(cwd.path(), &["--reuse-grace", "0s"]);
    let api = server.api();
    let first = api.logged_in_user().await;
    let (access, stolen) = (first.access_token, first.refresh_token);
    let wrong_password = "not-alices-password-4711";
    let failed = api.login("alice@example.com", wrong_password).await;
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let rotated = Session::from_token_response(api.refresh_with(&stolen).await).await;
    let (rotated_access, successor) = (rotated.access_token, rotated.refresh_token);
    let reused = api.refresh_with(&stolen).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        reused.json::<Value>().await.expect("json")["code"],
        "refresh_token_reused"
    );

    let running = run(cwd.path(), &["audit"]);
    assert!(!running.status.success());
    let stderr = String::from_utf8_lossy(&running.stderr);
    assert!(stderr.contains("stop it first"), "{stderr}");

    let (status, log) = server.terminate();
    assert!(status.success());
    let log = log.join("\n");
    assert!(log.contains("refresh token reuse detected"), "{log}");
    let stored = stored_credentials(&cwd.path().join("data"));
    let mut needles = vec![
        PASSWORD,
        wrong_password,
        &access,
        &rotated_access,
        &stolen,
        &successor,
    ];
    needles.extend(stored.iter().map(String::as_str));
    for needle in needles.iter().copied() {
        assert!(!log.contains(needle), "the log leaks a credential");
    }

    let json = run(cwd.path(), &["audit", "--json"]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let events: Vec<Value> = String::from_utf8(json.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "register",
            "verification_sent",
            "login_succeeded",
            "login_failed",
            "refresh",
            "reuse_detected"
        ]
    );
    assert_eq!(events[4]["ip"], "127.0.0.1");
    assert!(
        events[4]["time"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z'))
    );
    let user_id = events[0]["userId"]
        .as_str()
        .expect("user id (camelCase, as the API)");
    assert!(events[0].get("user_id").is_none() && events[0].get("at").is_none());
    let whole = serde_json::to_string(&events).expect("json");
    for needle in needles {
        assert!(!whole.contains(needle), "the audit log holds a credential");
    }

    let text = run(cwd.path(), &["audit", "--user", user_id, "--since", "1h"]);
    let text = String::from_utf8(text.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(
        text.contains("reuse_detected") && text.contains(&format!("user={user_id}")),
        "{text}"
    );
    let nobody = run(cwd.path(), &["audit", "--user", "nobody"]);
    assert!(nobody.status.success() && nobody.stdout.is_empty());
}

#[test]
fn audit_on_a_directory_without_a_database_says_so() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let output = run(cwd.path(), &["audit"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds no latchkey database"), "{stderr}");
    assert!(!cwd.path().join("data").exists(), "nothing was created");
}

#[tokio::test]
async fn with_a_certificate_it_serves_https_with_hsts_and_secure_cookies() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let (trusted, cert, key) = self_signed(cwd.path());
    let server = start(cwd.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let tls_client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([trusted])
        .build()
        .expect("client");
    let api = Api::with_client(server.base.clone(), tls_client);
    let index = api.get("/").await;
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(
        index.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let session = api.logged_in_user().await;
    assert!(
        session.set_cookie.contains("Secure"),
        "{}",
        session.set_cookie
    );
    // Plain HTTP on the TLS port gets no API answer.
    let plain = Api::new(server.base.replacen("https://", "http://", 1));
    let answered = plain
        .client
        .get(plain.url("/"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success());
    assert!(!answered);
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_startup_with_one_line() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let (_, cert, _) = self_signed(cwd.path());
    let other = cwd.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    let (_, _, wrong_key) = self_signed(&other);
    let output = run(
        cwd.path(),
        &["--port", "0", "--tls-cert", &cert, "--tls-key", &wrong_key],
    );
    assert_fails_with_one_line(&output, "TLS certificate");
    let missing = run(
        cwd.path(),
        &[
            "--port",
            "0",
            "--tls-cert",
            "nowhere.pem",
            "--tls-key",
            &wrong_key,
        ],
    );
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && stderr.contains("cannot read --tls-cert nowhere.pem"),
        "{stderr}"
    );
}

/// Runs `latchkey <args>` in `cwd` with `stdin` as standard input.
fn run_with_input(cwd: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command(cwd)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("run")
}

#[tokio::test]
async fn the_first_admin_is_created_offline_and_users_are_managed_from_the_command_line() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let dir = cwd.path();
    let created = run_with_input(
        dir,
        &[
            "user",
            "create",
            "--email",
            "Root@Example.com",
            "--username",
            "root",
            "--role",
            "admin",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let line = String::from_utf8(created.stdout).expect("utf-8");
    assert!(
        line.starts_with("created ")
            && line.contains("root@example.com")
            && line.contains("roles=user,admin")
            && line.contains("email=verified"),
        "{line}"
    );
    let root_id = line.split_whitespace().nth(1).expect("id").to_owned();

    let create_bob = [
        "user",
        "create",
        "--email",
        "bob@example.com",
        "--username",
        "bob",
    ];
    let from_stdin = [&create_bob[..], &["--password-stdin"]].concat();
    let weak = run_with_input(dir, &from_stdin, "password\n");
    assert_fails_with_one_line(&weak, "too common");
    let no_terminal = run(dir, &create_bob);
    assert_fails_with_one_line(&no_terminal, "--password-stdin");
    let bob = run_with_input(dir, &from_stdin, &format!("{PASSWORD}\n"));
    assert!(bob.status.success());

    let server = start(dir, &[]);
    let running = run(dir, &["user", "list"]);
    assert_fails_with_one_line(&running, "stop it first");
    let api = server.api();
    let root = Session::from_token_response(api.login("root@example.com", PASSWORD).await).await;
    let users = api
        .call(
            reqwest::Method::GET,
            "/api/admin/users",
            &root.access_token,
            None,
        )
        .await;
    assert_eq!(
        users.status(),
        StatusCode::OK,
        "the offline admin is an admin"
    );
    let (status, _) = server.terminate();
    assert!(status.success());

    let listed = String::from_utf8(run(dir, &["user", "list"]).stdout).expect("utf-8");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed
            .lines()
            .next()
            .is_some_and(|first| first.contains("bob@example.com")),
        "{listed}"
    );
    let json_lines =
        String::from_utf8(run(dir, &["user", "list", "--json", "--query", "root"]).stdout)
            .expect("utf-8");
    let root: Value = serde_json::from_str(json_lines.trim()).expect("one JSON line");
    assert_eq!(root["roles"], json!(["user", "admin"]));

    let unknown_role = run(dir, &["user", "set-roles", &root_id, "user,auditor"]);
    assert_fails_with_one_line(&unknown_role, "not a known role");
    let demoted = run(
        dir,
        &[
            "user",
            "set-roles",
            &root_id,
            "user,auditor",
            "--extra-roles",
            "auditor",
        ],
    );
    assert!(String::from_utf8_lossy(&demoted.stdout).contains("roles=user,auditor"));
    let disabled = run(dir, &["user", "disable", "bob@example.com"]);
    assert!(String::from_utf8_lossy(&disabled.stdout).starts_with("disabled "));
    let unknown = run(dir, &["user", "disable", "nobody@example.com"]);
    assert_fails_with_one_line(&unknown, "User not found");

    let server = start(dir, &[]);
    assert_error(
        server.api().login("bob@example.com", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
        None,
    )
    .await;
}

#[tokio::test]
async fn keys_rotate_makes_a_new_key_active_and_keeps_the_old_one_published() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let dir = cwd.path();
    let server = start(dir, &[]);
    let old_access = server.api().logged_in_user().await.access_token;
    let running = run(dir, &["keys", "rotate"]);
    assert_fails_with_one_line(&running, "stop it first");
    server.terminate();

    let rotated = run(dir, &["keys", "rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let printed = String::from_utf8(rotated.stdout).expect("utf-8");
    let new_kid = printed
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .expect("active kid")
        .to_owned();
    assert!(printed.contains("retired "), "{printed}");
    let listed = String::from_utf8(run(dir, &["keys", "list"]).stdout).expect("utf-8");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        listed
            .lines()
            .next()
            .is_some_and(|line| line.starts_with(&new_kid) && line.contains("active")),
        "{listed}"
    );

    let server = start(dir, &[]);
    assert_eq!(server.api().me(&old_access).await.status(), StatusCode::OK);
    let jwks: Value = server
        .api()
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 2);
    drop(server);

    let hmac = tempfile::tempdir().expect("temp dir");
    let server = start(hmac.path(), &["--signing-alg", "HS256"]);
    server.terminate();
    let refused = run(hmac.path(), &["keys", "rotate"]);
    assert_fails_with_one_line(&refused, "HS256");
}

/// Runs `command_line` on a pseudo-terminal (util-linux `script`), typing
/// `typed` into it, as a person at a shell would.
fn run_on_terminal(cwd: &Path, command_line: &str, typed: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("script")
        .args(["-qec", command_line, "/dev/null"])
        .current_dir(cwd)
        .env_remove("JWT_SECRET")
        .env_remove("REFRESH_TOKEN_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn script (util-linux)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(typed.as_bytes())
        .expect("type");
    child.wait_with_output().expect("run")
}

#[test]
fn user_create_asks_for_the_password_twice_on_a_terminal() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let create = format!("{BINARY} user create --email tty@example.com --username ttyuser");
    let differ = run_on_terminal(
        cwd.path(),
        &create,
        "ultra violet kestrel 42\nultra violet kestrel 43\n",
    );
    let shown = String::from_utf8_lossy(&differ.stdout);
    assert!(!differ.status.success(), "{shown}");
    assert!(
        shown.contains("Password again:") && shown.contains("the two passwords differ"),
        "{shown}"
    );
    let same = run_on_terminal(
        cwd.path(),
        &create,
        "ultra violet kestrel 42\nultra violet kestrel 42\n",
    );
    let shown = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{shown}");
    assert!(
        shown.contains("created ") && shown.contains("tty@example.com"),
        "{shown}"
    );
}

#[tokio::test]
async fn sigterm_closes_silent_and_half_sent_connections_at_once() {
    use tokio::io::AsyncWriteExt;
    let cwd = tempfile::tempdir().expect("temp dir");
    // Long timeouts: only the shutdown can close these connections quickly.
    let server = start(
        cwd.path(),
        &["--header-timeout", "60s", "--idle-timeout", "120s"],
    );
    let mut sockets = Vec::new();
    for n in 0..30 {
        let mut socket = tokio::net::TcpStream::connect(server.address())
            .await
            .expect("connect");
        if n % 3 == 0 {
            socket
                .write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("half a head");
        }
        sockets.push(socket);
    }
    // An idle keep-alive connection too.
    assert_eq!(server.api().get("/").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (status, _) = server.terminate();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_few_descriptors_and_many_silent_sockets_it_neither_spins_nor_stays_down() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let mut limited = Command::new("prlimit");
    limited
        .args(["--nofile=128:128", BINARY, "--port", "0"])
        .args(["--header-timeout", "2s", "--max-connections", "100000"])
        .current_dir(cwd.path())
        .env_remove("JWT_SECRET")
        .env_remove("REFRESH_TOKEN_SECRET")
        .env_remove("PORT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let server = start_command(limited);
    let mut sockets = Vec::new();
    for _ in 0..300 {
        match tokio::net::TcpStream::connect(server.address()).await {
            Ok(socket) => sockets.push(socket),
            Err(_) => break,
        }
    }
    let before = server.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = server.cpu_ticks() - before;
    // A spinning accept loop burns ~100 ticks a second.
    assert!(
        spent < 30,
        "{spent} ticks of CPU in one second with silent sockets"
    );
    let log = server.log.lock().expect("log").join("\n");
    assert!(
        log.contains("lowered"),
        "the cap follows the descriptor limit: {log}"
    );
    drop(sockets);
    // Once the silent sockets are gone, everyone is served again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answered = server
            .api()
            .client
            .get(server.api().url("/"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if answered.is_ok_and(|response| response.status() == StatusCode::OK) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served again");
    }
}

#[tokio::test]
async fn over_tls_browsers_speak_http2_and_same_origin_refresh_works() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let (trusted, cert, key) = self_signed(cwd.path());
    let server = start(cwd.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([trusted])
        .build()
        .expect("client");
    let api = Api::with_client(server.base.clone(), client);
    let session = api.logged_in_user().await;
    let refreshed = api
        .client
        .post(api.url("/api/auth/refresh"))
        .header("Origin", &server.base)
        .header("Cookie", format!("refresh_token={}", session.refresh_token))
        .send()
        .await
        .expect("refresh");
    assert_eq!(
        refreshed.version(),
        reqwest::Version::HTTP_2,
        "ALPN chose h2"
    );
    Session::from_token_response(refreshed).await;
    let discovery: Value = api
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/.well-known/jwks.json", server.base)
    );
}

#[test]
fn nonsense_settings_are_refused_with_one_line_naming_the_flag() {
    let cwd = tempfile::tempdir().expect("temp dir");
    for (flag, value) in [
        ("--access-ttl", "18446744073709551000s"),
        ("--refresh-ttl", "1m"),
        ("--reuse-grace", "100y"),
        ("--sweep-interval", "0s"),
        ("--refresh-ttl", "600000000years"),
        ("--max-connections", "0"),
        ("--hash-concurrency", "100"),
        ("--hash-queue", "0"),
        ("--db-cache-mib", "0"),
        ("--db-cache-mib", "999999999"),
        ("--reset-ttl", "0s"),
        ("--verify-ttl", "100y"),
        ("--public-url", "javascript:alert(1)"),
        ("--email-link-base", "https://app.example/?next=evil"),
        ("--mail-from", "not an address"),
        ("--webauthn-origin", "javascript:alert(1)"),
        ("--webauthn-rp-id", "not a domain"),
        // Not the host of the origin (localhost, from the listening address).
        ("--webauthn-rp-id", "evil.example"),
    ] {
        let output = run(cwd.path(), &["--port", "0", flag, value]);
        assert_fails_with_one_line(&output, flag);
    }
    assert!(!cwd.path().join("data").exists(), "nothing was created");
}

#[tokio::test]
async fn a_data_dir_others_can_read_is_warned_about_and_its_files_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let cwd = tempfile::tempdir().expect("temp dir");
    let data = cwd.path().join("data");
    std::fs::create_dir(&data).expect("dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = start(cwd.path(), &[]);
    server.api().logged_in_user().await;
    let (status, log) = server.terminate();
    assert!(status.success());
    assert!(
        log.iter()
            .any(|line| line.contains("can be read by other users")),
        "{log:?}"
    );
    let fresh = tempfile::tempdir().expect("temp dir");
    let server = start(fresh.path(), &[]);
    server.terminate();
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&fresh.path().join("data")), 0o700);
    assert_eq!(mode(&fresh.path().join("data/db")) & 0o077, 0);
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_with_its_route_status_and_id() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let server = start(cwd.path(), &["--log-format", "json"]);
    let response = reqwest::Client::new()
        .get(format!("{}/api/admin/users/some-id", server.base))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let id = response
        .headers()
        .get("x-request-id")
        .expect("request id")
        .to_str()
        .expect("ascii")
        .to_owned();
    // A client's own method name and a path the router does not know are
    // not written into the log as sent.
    let odd = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(&[b'X'; 2000]).expect("a token"),
            format!("{}/healthz/", server.base),
        )
        .send()
        .await
        .expect("request");
    let odd_id = odd.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let (_, log) = server.terminate();
    let lines: Vec<Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let odd_line = lines
        .iter()
        .find(|line| line["fields"]["request_id"] == odd_id.as_str())
        .expect("the odd request is logged");
    assert_eq!(odd_line["fields"]["method"], "(other)");
    assert_eq!(odd_line["fields"]["route"], "(none)");
    let requests: Vec<&Value> = lines
        .iter()
        .filter(|line| line["fields"]["request_id"] == id.as_str())
        .collect();
    assert_eq!(requests.len(), 1, "{lines:?}");
    let fields = &requests[0]["fields"];
    assert_eq!(fields["method"], "GET");
    assert_eq!(
        fields["route"], "/api/admin/users/{id}",
        "the template, not the path"
    );
    assert_eq!(fields["status"], 401);
    assert_eq!(fields["ip"], "127.0.0.1");
    assert!(fields["latency_us"].is_u64());
}
