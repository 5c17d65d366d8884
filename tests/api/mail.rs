//! Account recovery by email, against a real SMTP server: mailin-embedded
//! runs in the test process, lettre (inside latchkey) speaks SMTP to it,
//! and the tests read what it received — recipient, subject, the link and
//! its token.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey::{Config, Secret};
use mailin_embedded::{Handler, Response, Server, SslConfig, response};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Session, TestApp, spawn_configured};

/// One mail as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The `Subject:` header.
    pub fn subject(&self) -> String {
        self.data
            .lines()
            .find_map(|line| line.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_owned()
    }

    /// The first link in the body.
    pub fn link(&self) -> Option<String> {
        let body = self.body();
        let start = body.find("http")?;
        Some(
            body[start..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// The `token` of the first link.
    pub fn token(&self) -> Option<String> {
        self.link()?
            .split("token=")
            .nth(1)
            .map(|token| token.trim().to_owned())
    }

    /// The body, with quoted-printable soft line breaks joined.
    pub fn body(&self) -> String {
        let body = self
            .data
            .split("\r\n\r\n")
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n");
        body.replace("=\r\n", "").replace("=3D", "=")
    }
}

#[derive(Clone)]
struct Collect {
    received: Arc<Mutex<Vec<Received>>>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Collect {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = Received {
            to: std::mem::take(&mut self.to),
            data: String::from_utf8_lossy(&self.data).into_owned(),
        };
        self.received.lock().expect("mails").push(mail);
        response::OK
    }
}

/// An SMTP server on 127.0.0.1 that keeps what it receives.
pub struct Sink {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    /// Starts on a free port.
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        Sink::serve(listener, port)
    }

    /// Starts on `port` (for a server that comes back).
    pub fn start_on(port: u16) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the port again");
        Sink::serve(listener, port)
    }

    fn serve(listener: TcpListener, port: u16) -> Sink {
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler = Collect {
            received: Arc::clone(&received),
            to: Vec::new(),
            data: Vec::new(),
        };
        std::thread::spawn(move || {
            let mut server = Server::new(handler);
            server
                .with_name("sink.test")
                .with_ssl(SslConfig::None)
                .expect("no TLS")
                .with_tcp_listener(listener);
            let _ = server.serve();
        });
        Sink { port, received }
    }

    /// `SMTP_URL` for this server.
    pub fn url(&self) -> Secret {
        Secret::new(format!("smtp://127.0.0.1:{}", self.port))
    }

    /// Every mail received so far.
    pub fn mails(&self) -> Vec<Received> {
        self.received.lock().expect("mails").clone()
    }

    /// The mails to `address`, waiting up to 10 s for at least `count`.
    pub async fn wait_for(&self, address: &str, count: usize) -> Vec<Received> {
        for _ in 0..200 {
            let mails = self.to(address);
            if mails.len() >= count {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{count} mail(s) to {address} did not arrive; got {:?}",
            self.mails()
        );
    }

    /// The mails received for `address` so far.
    pub fn to(&self, address: &str) -> Vec<Received> {
        self.mails()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to == address))
            .collect()
    }
}

/// A free port nobody listens on (yet).
fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

async fn with_sink(change: impl FnOnce(&mut Config)) -> (TestApp, Sink) {
    let sink = Sink::start();
    let url = sink.url();
    let app = spawn_configured(move |config| {
        config.smtp_url = Some(url);
        config.public_url = Some("https://auth.example.test".into());
        change(config);
    })
    .await;
    (app, sink)
}

async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post_json(path, &body).await
}

async fn code_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

async fn me(app: &TestApp, session: &Session) -> Value {
    app.me(&session.access_token)
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn registration_mails_a_verification_link_that_works_once_and_only_by_post() {
    let (app, sink) = with_sink(|_| {}).await;
    let session = app.logged_in("vera", "vera@example.com").await;
    assert_eq!(me(&app, &session).await["user"]["emailVerified"], false);

    let mail = sink.wait_for("vera@example.com", 1).await.remove(0);
    assert_eq!(mail.subject(), "Verify your email address");
    let link = mail.link().expect("a link");
    assert!(
        link.starts_with("https://auth.example.test/account/verify-email?token="),
        "{link}"
    );
    let token = mail.token().expect("a token");
    assert_eq!(token.len(), 43, "32 bytes, base64url");

    // Opening the link (a mail scanner does) consumes nothing.
    let page = app
        .get(&format!("/account/verify-email?token={token}"))
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text().await.expect("html");
    assert!(html.contains("../api/auth/verify-email") && !html.contains(&token));
    assert_eq!(me(&app, &session).await["user"]["emailVerified"], false);

    let verified = post(&app, "/api/auth/verify-email", json!({"token": token})).await;
    assert_eq!(verified.status(), StatusCode::OK);
    assert_eq!(
        verified.json::<Value>().await.expect("json"),
        json!({"message": "Email verified"})
    );
    assert_eq!(me(&app, &session).await["user"]["emailVerified"], true);
    let again = post(&app, "/api/auth/verify-email", json!({"token": token})).await;
    assert_eq!(
        code_of(again).await,
        (StatusCode::BAD_REQUEST, "verification_token_invalid".into())
    );
    let kinds = app.audit_kinds().await;
    assert!(
        kinds.contains(&"verification_sent".to_owned())
            && kinds.contains(&"email_verified".to_owned())
    );

    // A verified account gets no new link; an unknown address neither; both answer 202.
    for email in ["vera@example.com", "nobody@example.com"] {
        let resent = post(
            &app,
            "/api/auth/verify-email/resend",
            json!({"email": email}),
        )
        .await;
        assert_eq!(resent.status(), StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.to("vera@example.com").len(), 1);
    assert!(sink.to("nobody@example.com").is_empty());
}

#[tokio::test]
async fn a_resend_mails_a_new_link_and_an_expired_one_says_so() {
    let (app, sink) = with_sink(|_| {}).await;
    app.register("ned", "ned@example.com", PASSWORD).await;
    let first = sink.wait_for("ned@example.com", 1).await.remove(0);
    let resent = post(
        &app,
        "/api/auth/verify-email/resend",
        json!({"email": "NED@example.com"}),
    )
    .await;
    assert_eq!(resent.status(), StatusCode::ACCEPTED);
    let second = sink.wait_for("ned@example.com", 2).await.remove(1);
    assert_ne!(first.token(), second.token());
    app.clock.advance(Duration::from_secs(25 * 3600));
    let expired = post(
        &app,
        "/api/auth/verify-email",
        json!({"token": second.token()}),
    )
    .await;
    assert_eq!(
        code_of(expired).await,
        (StatusCode::BAD_REQUEST, "verification_token_expired".into())
    );
}

#[tokio::test]
async fn a_password_reset_mails_a_link_that_sets_the_password_and_ends_every_session() {
    let (app, sink) = with_sink(|_| {}).await;
    let session = app.logged_in("rita", "rita@example.com").await;
    sink.wait_for("rita@example.com", 1).await;

    // Unknown address: the same 202, and no mail.
    let unknown = post(
        &app,
        "/api/auth/password-reset",
        json!({"email": "ghost@example.com"}),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    let unknown_body = unknown.json::<Value>().await.expect("json");
    let asked = post(
        &app,
        "/api/auth/password-reset",
        json!({"email": "rita@example.com"}),
    )
    .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    assert_eq!(asked.json::<Value>().await.expect("json"), unknown_body);
    assert_eq!(
        unknown_body["message"],
        "If an account exists for this address, a reset link has been sent"
    );
    let mail = sink.wait_for("rita@example.com", 2).await.remove(1);
    assert_eq!(mail.subject(), "Reset your password");
    assert!(
        mail.link()
            .expect("link")
            .contains("/account/reset-password?token=")
    );
    let token = mail.token().expect("token");
    assert!(sink.to("ghost@example.com").is_empty());

    let page = app
        .get(&format!("/account/reset-password?token={token}"))
        .await;
    assert_eq!(page.status(), StatusCode::OK);

    // The policy holds, and a refused attempt leaves the token usable.
    let weak = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": token, "newPassword": "password1"}),
    )
    .await;
    assert_eq!(
        code_of(weak).await,
        (StatusCode::BAD_REQUEST, "weak_password".into())
    );
    let done = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": token, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(done.status(), StatusCode::OK);
    // Every session ended; the old password is gone, the new one works.
    app.assert_session_revoked(&session.access_token).await;
    assert_eq!(
        app.refresh_with(&session.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("rita@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = Session::from_token_response(
        app.login("rita@example.com", "a brand new passphrase")
            .await,
    )
    .await;
    assert_eq!(me(&app, &fresh).await["user"]["emailVerified"], true);
    let notice = sink.wait_for("rita@example.com", 3).await.remove(2);
    assert_eq!(notice.subject(), "Your password was changed");
    assert!(notice.token().is_none(), "a notice carries no token");

    let reused = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": token, "newPassword": "yet another passphrase"}),
    )
    .await;
    assert_eq!(
        code_of(reused).await,
        (StatusCode::BAD_REQUEST, "reset_token_invalid".into())
    );
    let kinds = app.audit_kinds().await;
    for kind in ["password_reset_requested", "password_reset"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} in {kinds:?}");
    }
}

#[tokio::test]
async fn reset_links_expire_and_die_with_the_account_or_a_later_password() {
    let (app, sink) = with_sink(|_| {}).await;
    let user = app.logged_in("tom", "tom@example.com").await;
    sink.wait_for("tom@example.com", 1).await;
    let ask = || {
        post(
            &app,
            "/api/auth/password-reset",
            json!({"email": "tom@example.com"}),
        )
    };

    assert_eq!(ask().await.status(), StatusCode::ACCEPTED);
    let expiring = sink.wait_for("tom@example.com", 2).await.remove(1).token();
    app.clock.advance(Duration::from_secs(31 * 60));
    let expired = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": expiring, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(
        code_of(expired).await,
        (StatusCode::BAD_REQUEST, "reset_token_expired".into())
    );

    // A link from before a password change is void.
    assert_eq!(ask().await.status(), StatusCode::ACCEPTED);
    let stale = sink.wait_for("tom@example.com", 3).await.remove(2).token();
    let fresh = Session::from_token_response(app.login("tom@example.com", PASSWORD).await).await;
    assert_eq!(
        app.change_password(&fresh.access_token, PASSWORD, "another long passphrase")
            .await
            .status(),
        StatusCode::OK
    );
    let void = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": stale, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(
        code_of(void).await,
        (StatusCode::BAD_REQUEST, "reset_token_invalid".into())
    );

    // A disabled account gets no link, and an earlier link is refused.
    assert_eq!(ask().await.status(), StatusCode::ACCEPTED);
    let before_disable = sink.wait_for("tom@example.com", 4).await.remove(3).token();
    let admin = app
        .logged_in_with_roles("boss", "boss@example.com", &["user", "admin"])
        .await;
    assert_eq!(
        app.set_disabled(&admin.access_token, &user.user_id, true)
            .await
            .status(),
        StatusCode::OK
    );
    let refused = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": before_disable, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(
        code_of(refused).await,
        (StatusCode::BAD_REQUEST, "reset_token_invalid".into())
    );
    assert_eq!(ask().await.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sink.to("tom@example.com").len(),
        4,
        "no link for a disabled account"
    );
}

#[tokio::test]
async fn an_email_change_is_confirmed_from_the_new_address_and_noticed_at_the_old_one() {
    let (app, sink) = with_sink(|_| {}).await;
    let session = app.logged_in("eve", "eve@example.com").await;
    app.register("other", "taken@example.com", PASSWORD).await;
    let change = |new_email: &str, password: &str| {
        app.client
            .post(app.url("/api/profile/email"))
            .bearer_auth(&session.access_token)
            .json(&json!({"newEmail": new_email, "password": password}))
            .send()
    };
    assert_eq!(
        code_of(
            change("eve@new.example", "not my password")
                .await
                .expect("request")
        )
        .await,
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    assert_eq!(
        code_of(
            change("taken@example.com", PASSWORD)
                .await
                .expect("request")
        )
        .await,
        (StatusCode::CONFLICT, "user_exists".into())
    );
    let unauthenticated = post(
        &app,
        "/api/profile/email",
        json!({"newEmail": "eve@new.example", "password": PASSWORD}),
    )
    .await;
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let asked = change("Eve@New.Example", PASSWORD).await.expect("request");
    assert_eq!(asked.status(), StatusCode::ACCEPTED);

    let link = sink.wait_for("eve@new.example", 1).await.remove(0);
    assert_eq!(link.subject(), "Confirm your new email address");
    assert!(
        link.link()
            .expect("link")
            .contains("/account/confirm-email?token=")
    );
    let notices = sink.wait_for("eve@example.com", 2).await;
    let notice = notices
        .iter()
        .find(|mail| mail.subject() == "Your email address is being changed")
        .expect("a notice to the old address");
    assert!(notice.token().is_none() && !notice.body().contains("eve@new.example"));

    let confirmed = post(
        &app,
        "/api/profile/email/confirm",
        json!({"token": link.token()}),
    )
    .await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let body: Value = confirmed.json().await.expect("json");
    assert_eq!(body["user"]["email"], "eve@new.example");
    assert_eq!(body["user"]["emailVerified"], true);
    assert_eq!(
        app.login("eve@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("eve@new.example", PASSWORD).await.status(),
        StatusCode::OK
    );
    // The old address is free again; the link works once.
    assert_eq!(
        app.register("eve2", "eve@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    let again = post(
        &app,
        "/api/profile/email/confirm",
        json!({"token": link.token()}),
    )
    .await;
    assert_eq!(
        code_of(again).await,
        (StatusCode::BAD_REQUEST, "email_change_token_invalid".into())
    );
    assert!(
        app.audit_kinds()
            .await
            .contains(&"email_changed".to_owned())
    );
}

#[tokio::test]
async fn an_address_taken_before_the_confirmation_is_a_conflict() {
    let (app, sink) = with_sink(|_| {}).await;
    let session = app.logged_in("ann", "ann@example.com").await;
    let asked = app
        .client
        .post(app.url("/api/profile/email"))
        .bearer_auth(&session.access_token)
        .json(&json!({"newEmail": "wanted@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("request");
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = sink
        .wait_for("wanted@example.com", 1)
        .await
        .remove(0)
        .token();
    assert_eq!(
        app.register("quick", "wanted@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    let late = post(&app, "/api/profile/email/confirm", json!({"token": token})).await;
    assert_eq!(
        code_of(late).await,
        (StatusCode::CONFLICT, "user_exists".into())
    );
}

#[tokio::test]
async fn over_the_mail_limits_the_answer_is_the_same_and_no_mail_goes() {
    let (app, sink) = with_sink(|config| {
        config.limits.mail_account = "1/1h".parse().expect("rate");
    })
    .await;
    app.register("max", "max@example.com", PASSWORD).await;
    sink.wait_for("max@example.com", 1).await;
    for _ in 0..3 {
        let asked = post(
            &app,
            "/api/auth/password-reset",
            json!({"email": "max@example.com"}),
        )
        .await;
        assert_eq!(asked.status(), StatusCode::ACCEPTED);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sink.to("max@example.com").len(),
        2,
        "one reset mail, not three"
    );
    let scrape = app.get("/metrics").await.text().await.expect("text");
    assert!(
        scrape.contains(r#"latchkey_rate_limited_total{rule="mail/account"} 2"#),
        "{scrape}"
    );
}

#[tokio::test]
async fn with_verified_email_required_an_unverified_account_is_refused_after_the_password() {
    let (app, sink) = with_sink(|config| config.require_verified_email = true).await;
    assert_eq!(
        app.register("uma", "uma@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        code_of(app.login("uma@example.com", "wrong password").await).await,
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    assert_eq!(
        code_of(app.login("uma@example.com", PASSWORD).await).await,
        (StatusCode::FORBIDDEN, "email_not_verified".into())
    );
    let token = sink.wait_for("uma@example.com", 1).await.remove(0).token();
    assert_eq!(
        post(&app, "/api/auth/verify-email", json!({"token": token}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("uma@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn mails_queued_while_the_smtp_server_is_down_are_each_delivered_once_it_is_back() {
    let port = unused_port();
    let app = spawn_configured(move |config| {
        config.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
    })
    .await;
    for name in ["one", "two", "three"] {
        let registered = app
            .register(name, &format!("{name}@example.com"), PASSWORD)
            .await;
        assert_eq!(
            registered.status(),
            StatusCode::CREATED,
            "the outage slows no request"
        );
    }
    // Every mail has failed at least once, and waits for its retry.
    for _ in 0..200 {
        let outbox = app.core.outbox().await.expect("outbox");
        if outbox.len() == 3 && outbox.iter().all(|entry| entry.attempts >= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outbox = app.core.outbox().await.expect("outbox");
    assert!(outbox.iter().all(|entry| entry.attempts >= 1), "{outbox:?}");
    assert!(app.audit_kinds().await.contains(&"mail_failed".to_owned()));

    // The relay comes back; the retries deliver, each mail once.
    let sink = Sink::start_on(port);
    app.clock.advance(Duration::from_secs(60));
    for name in ["one", "two", "three"] {
        sink.wait_for(&format!("{name}@example.com"), 1).await;
    }
    app.clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sink.mails().len(), 3, "{:?}", sink.mails());
    assert!(app.core.outbox().await.expect("outbox").is_empty());
    let scrape = app.get("/metrics").await.text().await.expect("text");
    for line in [
        r#"latchkey_mails_total{outcome="delivered"} 3"#,
        "latchkey_outbox_depth 0",
    ] {
        assert!(scrape.contains(line), "{line} in {scrape}");
    }
    assert!(
        !scrape.contains(r#"latchkey_mails_total{outcome="retried"} 0"#),
        "{scrape}"
    );
}

#[tokio::test]
async fn without_smtp_mails_are_private_files_in_the_data_directory() {
    let app = spawn_configured(|_| {}).await;
    app.register("fay", "fay@example.com", PASSWORD).await;
    let folder = app.data_dir.join("outbox-files");
    let mut files = Vec::new();
    for _ in 0..200 {
        files = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .collect()
            })
            .unwrap_or_default();
        if !files.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file.extension().and_then(|ext| ext.to_str()), Some("eml"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let folder_mode = std::fs::metadata(&folder)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(folder_mode & 0o777, 0o700);
    }
    let text = std::fs::read_to_string(file).expect("read");
    let mail = Received {
        to: vec!["fay@example.com".into()],
        data: text.replace('\n', "\r\n").replace("\r\r\n", "\r\n"),
    };
    assert!(text.contains("To: fay@example.com"), "{text}");
    // Plain text: the link is whole in the raw file (no quoted-printable).
    assert!(text.contains("Content-Transfer-Encoding: 7bit"), "{text}");
    let raw_link = text
        .lines()
        .find(|line| line.contains("/account/verify-email?token="))
        .expect("the link on one line");
    assert_eq!(
        raw_link.trim().split("token=").nth(1).map(str::len),
        Some(43)
    );
    assert_eq!(mail.subject(), "Verify your email address");
    let token = mail.token().expect("token");
    assert_eq!(
        post(&app, "/api/auth/verify-email", json!({"token": token}))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_mail_queued_when_latchkey_is_killed_is_delivered_after_the_restart() {
    use crate::binary::{command, start_command};

    let cwd = tempfile::tempdir().expect("temp dir");
    let port = unused_port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let start = || {
        let mut latchkey = command(cwd.path());
        latchkey.args(["--port", "0"]).env("SMTP_URL", &smtp_url);
        start_command(latchkey)
    };
    let server = start();
    let api = server.api();
    // The relay is down: the mail is queued, and the answer does not wait.
    assert_eq!(
        api.register("kim", "kim@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    drop(server); // SIGKILL

    let sink = Sink::start_on(port);
    let server = start();
    let mail = sink.wait_for("kim@example.com", 1).await.remove(0);
    assert_eq!(mail.subject(), "Verify your email address");
    let verified = server
        .api()
        .post_json("/api/auth/verify-email", &json!({"token": mail.token()}))
        .await;
    assert_eq!(verified.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.mails().len(), 1, "delivered once");
}

#[tokio::test]
async fn a_pending_email_change_dies_with_a_password_change_or_a_logout_everywhere() {
    let (app, sink) = with_sink(|_| {}).await;
    let session = app.logged_in("vic", "vic@example.com").await;
    let ask = |token: String, to: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/api/profile/email"))
                .bearer_auth(token)
                .json(&json!({"newEmail": to, "password": PASSWORD}))
                .send()
                .await
                .expect("request")
        }
    };
    // Someone with the password asks to move the account; the owner, told
    // by the notice, changes the password: the move is cancelled.
    assert_eq!(
        ask(session.access_token.clone(), "thief@evil.test")
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let stolen = sink.wait_for("thief@evil.test", 1).await.remove(0).token();
    assert_eq!(
        app.change_password(&session.access_token, PASSWORD, "a brand new passphrase")
            .await
            .status(),
        StatusCode::OK
    );
    let cancelled = post(&app, "/api/profile/email/confirm", json!({"token": stolen})).await;
    assert_eq!(
        code_of(cancelled).await,
        (StatusCode::BAD_REQUEST, "email_change_token_invalid".into())
    );

    // Log out everywhere cancels one too.
    let session =
        Session::from_token_response(app.login("vic@example.com", "a brand new passphrase").await)
            .await;
    let asked = app
        .client
        .post(app.url("/api/profile/email"))
        .bearer_auth(&session.access_token)
        .json(&json!({"newEmail": "thief2@evil.test", "password": "a brand new passphrase"}))
        .send()
        .await
        .expect("request");
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let stolen = sink.wait_for("thief2@evil.test", 1).await.remove(0).token();
    let out = app
        .client
        .post(app.url("/api/auth/logout-all"))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .expect("request");
    assert_eq!(out.status(), StatusCode::OK);
    let cancelled = post(&app, "/api/profile/email/confirm", json!({"token": stolen})).await;
    assert_eq!(
        code_of(cancelled).await,
        (StatusCode::BAD_REQUEST, "email_change_token_invalid".into())
    );
    let requested = app
        .audit_events()
        .await
        .into_iter()
        .find(|event| event["kind"] == "email_change_requested")
        .expect("requested");
    assert_eq!(
        requested["detail"],
        "from=vic@example.com; to=thief@evil.test"
    );
}

#[tokio::test]
async fn a_reset_link_stays_dead_when_a_disabled_account_is_enabled_again() {
    let (app, sink) = with_sink(|_| {}).await;
    let user = app.logged_in("ren", "ren@example.com").await;
    let admin = app
        .logged_in_with_roles("root", "root@example.com", &["user", "admin"])
        .await;
    let asked = post(
        &app,
        "/api/auth/password-reset",
        json!({"email": "ren@example.com"}),
    )
    .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = sink.wait_for("ren@example.com", 2).await.remove(1).token();
    for disabled in [true, false] {
        assert_eq!(
            app.set_disabled(&admin.access_token, &user.user_id, disabled)
                .await
                .status(),
            StatusCode::OK
        );
    }
    let revived = post(
        &app,
        "/api/auth/password-reset/confirm",
        json!({"token": token, "newPassword": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(
        code_of(revived).await,
        (StatusCode::BAD_REQUEST, "reset_token_invalid".into())
    );
    let audit = app.audit_events().await;
    let requested = audit
        .iter()
        .find(|event| event["kind"] == "password_reset_requested")
        .expect("requested");
    assert_eq!(requested["ip"], "127.0.0.1", "who asked is recorded");
}

#[tokio::test]
async fn spending_an_addresss_verification_budget_holds_back_no_reset_mail() {
    let (app, sink) = with_sink(|_| {}).await;
    app.register("lee", "lee@example.com", PASSWORD).await;
    let token = sink.wait_for("lee@example.com", 1).await.remove(0).token();
    assert_eq!(
        post(&app, "/api/auth/verify-email", json!({"token": token}))
            .await
            .status(),
        StatusCode::OK
    );
    // A stranger spends the verification budget (nothing is sent: verified).
    for _ in 0..5 {
        post(
            &app,
            "/api/auth/verify-email/resend",
            json!({"email": "lee@example.com"}),
        )
        .await;
    }
    let asked = post(
        &app,
        "/api/auth/password-reset",
        json!({"email": "lee@example.com"}),
    )
    .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let reset = sink.wait_for("lee@example.com", 2).await.remove(1);
    assert_eq!(reset.subject(), "Reset your password");
    // The Message-ID names the sender's domain, not this machine.
    assert!(
        reset.data.contains("@localhost>"),
        "{}",
        reset
            .data
            .lines()
            .find(|line| line.starts_with("Message-ID"))
            .unwrap_or_default()
    );
}

#[tokio::test]
async fn an_account_made_by_the_operator_counts_as_verified() {
    let app = spawn_configured(|config| config.require_verified_email = true).await;
    let user = app
        .core
        .create_user(
            "operator",
            "op@example.com",
            PASSWORD,
            &["user"],
            latchkey::ClientInfo::default(),
        )
        .await
        .expect("created");
    assert!(user.email_verified);
    assert_eq!(
        app.login("op@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_relay_that_never_answers_holds_up_neither_requests_nor_shutdown() {
    // Accepts connections and says nothing, ever.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let app = spawn_configured(move |config| {
        config.smtp_url = Some(Secret::new(format!("smtp://127.0.0.1:{port}")));
    })
    .await;
    let started = std::time::Instant::now();
    assert_eq!(
        app.register("sid", "sid@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Let the sender start its conversation with the silent relay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let core = app.core.clone();
    let stopping = std::time::Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for the relay",
        stopping.elapsed()
    );
    // The mail is still queued, for the next start.
    assert_eq!(core.outbox().await.expect("outbox").len(), 1);
}

#[tokio::test]
async fn over_http2_a_streamed_reset_request_and_its_confirmation_work() {
    use futures_util::stream;

    let (app, sink) = with_sink(|_| {}).await;
    app.logged_in("hal", "hal@example.com").await;
    sink.wait_for("hal@example.com", 1).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    // A body in pieces, without Content-Length (and HTTP/2 has no Host).
    let pieces: Vec<Result<&'static [u8], std::io::Error>> =
        vec![Ok(b"{\"email\":"), Ok(b"\"hal@example.com\"}")];
    let asked = client
        .post(app.url("/api/auth/password-reset"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await
        .expect("request");
    assert_eq!(asked.version(), reqwest::Version::HTTP_2);
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = sink.wait_for("hal@example.com", 2).await.remove(1).token();
    let done = client
        .post(app.url("/api/auth/password-reset/confirm"))
        .json(&json!({"token": token, "newPassword": "a brand new passphrase"}))
        .send()
        .await
        .expect("request");
    assert_eq!(done.status(), StatusCode::OK);
    let scrape = client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(
        scrape.contains(r#"latchkey_http_requests_total{route="/api/auth/password-reset",method="POST",status="202"} 1"#),
        "{scrape}"
    );
}

#[tokio::test]
async fn of_many_racing_uses_of_one_reset_link_exactly_one_wins() {
    let (app, sink) = with_sink(|_| {}).await;
    app.logged_in("ray", "ray@example.com").await;
    sink.wait_for("ray@example.com", 1).await;
    post(
        &app,
        "/api/auth/password-reset",
        json!({"email": "ray@example.com"}),
    )
    .await;
    let token = sink.wait_for("ray@example.com", 2).await.remove(1).token();
    let attempts = (0..8).map(|n| {
        let api = app.api.clone();
        let token = token.clone();
        async move {
            api.post_json(
                "/api/auth/password-reset/confirm",
                &json!({"token": token, "newPassword": format!("racing passphrase number {n}")}),
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let won = statuses
        .iter()
        .filter(|status| **status == StatusCode::OK)
        .count();
    assert_eq!(won, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::OK || *status == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
    // One notice for the one reset.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let notices = sink
        .to("ray@example.com")
        .into_iter()
        .filter(|mail| mail.subject() == "Your password was changed")
        .count();
    assert_eq!(notices, 1);
}
