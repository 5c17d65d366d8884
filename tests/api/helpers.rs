//! `spawn_app()` and typed helpers over reqwest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use latchkey::{Clock, Config, Latchkey, Secret};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A time well inside the range of every token library (2027-01-15).
pub const START: u64 = 1_800_000_000;
pub const PASSWORD: &str = "correct horse battery staple";

/// A client of a latchkey at `base` (an in-process test server or the real
/// binary): typed helpers for every call more than one test makes.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

impl Api {
    /// A client of `base` (`http://127.0.0.1:PORT`) that follows no redirects
    /// and ignores proxy settings.
    pub fn new(base: impl Into<String>) -> Api {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Api::with_client(base, client)
    }

    pub fn with_client(base: impl Into<String>, client: reqwest::Client) -> Api {
        Api {
            base: base.into(),
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// A POST without a body (and without cookies).
    pub async fn post(&self, path: &str) -> Response {
        self.client
            .post(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn register(&self, username: &str, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/register",
            &json!({"username": username, "email": email, "password": password}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Registers alice and logs her in.
    pub async fn logged_in_user(&self) -> Session {
        self.logged_in("alice", "alice@example.com").await
    }

    pub async fn logged_in(&self, username: &str, email: &str) -> Session {
        let registered = self.register(username, email, PASSWORD).await;
        assert_eq!(registered.status(), StatusCode::CREATED);
        Session::from_token_response(self.login(email, PASSWORD).await).await
    }

    /// A login sent with this device token (`latchkey_device` cookie) and
    /// from this client address (an `X-Forwarded-For` a trusted proxy vouches for).
    pub async fn login_from(
        &self,
        email: &str,
        password: &str,
        device_token: Option<&str>,
        address: &str,
    ) -> Response {
        let mut request = self
            .client
            .post(self.url("/api/auth/login"))
            .header("X-Forwarded-For", address)
            .json(&json!({"email": email, "password": password}));
        if let Some(token) = device_token {
            request = request.header("Cookie", format!("latchkey_device={token}"));
        }
        request.send().await.expect("request")
    }

    /// A login of an existing user with a chosen `User-Agent`.
    pub async fn login_as_device(&self, email: &str, user_agent: &str) -> Session {
        let response = self
            .client
            .post(self.url("/api/auth/login"))
            .header("User-Agent", user_agent)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("request");
        Session::from_token_response(response).await
    }

    /// A refresh that may fail to get an answer (a node killed meanwhile).
    pub async fn try_refresh_with(&self, refresh_token: &str) -> reqwest::Result<Response> {
        self.client
            .post(self.url("/api/auth/refresh"))
            .header("Cookie", format!("refresh_token={refresh_token}"))
            .send()
            .await
    }

    /// A registration that may fail to get an answer.
    pub async fn try_register(
        &self,
        username: &str,
        email: &str,
        password: &str,
    ) -> reqwest::Result<Response> {
        self.client
            .post(self.url("/api/auth/register"))
            .json(&json!({"username": username, "email": email, "password": password}))
            .send()
            .await
    }

    pub async fn refresh_with(&self, refresh_token: &str) -> Response {
        self.client
            .post(self.url("/api/auth/refresh"))
            .header("Cookie", format!("refresh_token={refresh_token}"))
            .send()
            .await
            .expect("request")
    }

    pub async fn logout_with(&self, refresh_token: Option<&str>) -> Response {
        let mut request = self.client.post(self.url("/api/auth/logout"));
        if let Some(token) = refresh_token {
            request = request.header("Cookie", format!("refresh_token={token}"));
        }
        request.send().await.expect("request")
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.client
            .get(self.url("/api/profile/me"))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("request")
    }

    /// `POST /api/auth/password` as the holder of `access_token`.
    pub async fn change_password(&self, access_token: &str, current: &str, new: &str) -> Response {
        self.call(
            reqwest::Method::POST,
            "/api/auth/password",
            access_token,
            Some(&json!({"currentPassword": current, "newPassword": new})),
        )
        .await
    }

    /// `PATCH /api/admin/users/{user_id}` `{"disabled": …}` as an admin.
    pub async fn set_disabled(&self, admin_token: &str, user_id: &str, disabled: bool) -> Response {
        self.call(
            reqwest::Method::PATCH,
            &format!("/api/admin/users/{user_id}"),
            admin_token,
            Some(&json!({ "disabled": disabled })),
        )
        .await
    }

    /// A request with a bearer token and an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        access_token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// `call` and parse a JSON body, asserting the status first.
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        access_token: &str,
        body: Option<&Value>,
        status: StatusCode,
    ) -> Value {
        let response = self.call(method.clone(), path, access_token, body).await;
        assert_eq!(response.status(), status, "{method} {path}");
        response.json().await.expect("json body")
    }

    /// Asserts that latchkey's routes refuse this access token because its
    /// session was revoked (the message is checked once, here).
    pub async fn assert_session_revoked(&self, access_token: &str) {
        assert_error(
            self.me(access_token).await,
            StatusCode::UNAUTHORIZED,
            "session_revoked",
            Some("Session revoked"),
        )
        .await;
    }

    /// Asserts that a session is dead both ways: its refresh token is
    /// refused with `refresh_code` and its access token with `session_revoked`.
    pub async fn assert_session_dead(&self, session: &Session, refresh_code: &str) {
        let refreshed = self.refresh_with(&session.refresh_token).await;
        let status = match refresh_code {
            "account_disabled" => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        assert_error(refreshed, status, refresh_code, None).await;
        self.assert_session_revoked(&session.access_token).await;
    }
}

/// A latchkey served in-process on a temporary data dir and an ephemeral
/// port, with a manual clock; dereferences to its [`Api`].
pub struct TestApp {
    pub api: Api,
    pub address: SocketAddr,
    pub core: Latchkey,
    pub clock: Clock,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<latchkey::Result<()>>>,
    // Kept last so the directory outlives the server.
    _temp: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Settings for a test server; start from [`Options::default`].
pub struct Options {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub sweep_interval: Duration,
    pub secure_cookies: bool,
    /// Any further change to the configuration (reuse grace, rate limits…).
    pub tweak: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(7 * 86_400),
            sweep_interval: Duration::from_secs(3600),
            secure_cookies: false,
            tweak: |_| {},
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut app = spawn_on(&data_dir, &options, Clock::manual(START)).await;
    app._temp = Some(temp);
    app
}

/// The configuration a test server runs with on `data_dir`.
pub fn test_config(data_dir: &Path, options: &Options) -> Config {
    let mut config = Config {
        access_ttl: options.access_ttl,
        refresh_ttl: options.refresh_ttl,
        sweep_interval: options.sweep_interval,
        secure_cookies: options.secure_cookies,
        hash_concurrency: Some(2),
        ..Config::with_data_dir(data_dir)
    };
    (options.tweak)(&mut config);
    on_test_database(&mut config, data_dir);
    config
}

/// With `LATCHKEY_TEST_DATABASE_URL` set, points `config` at PostgreSQL: a
/// schema of its own, named after `data_dir` (so a server restarted on the
/// same directory finds its data again), created by latchkey itself.
pub fn on_test_database(config: &mut Config, data_dir: &Path) {
    if let Some(url) = test_database_url(data_dir) {
        config.database_url = Some(Secret::new(url));
        config.master_key = Some(Secret::new(TEST_MASTER_KEY));
    }
}

/// The master key of test servers on PostgreSQL.
pub const TEST_MASTER_KEY: &str = "a test master key, at least thirty-two bytes long";

/// The URL of the schema the test database keeps for `data_dir`, when
/// `LATCHKEY_TEST_DATABASE_URL` is set.
pub fn test_database_url(data_dir: &Path) -> Option<String> {
    use std::hash::{Hash, Hasher};
    let base = std::env::var("LATCHKEY_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options[search_path]=t_{:016x}",
        hasher.finish()
    ))
}

/// Starts a server on `data_dir` (which the caller keeps alive).
pub async fn spawn_on(data_dir: &Path, options: &Options, clock: Clock) -> TestApp {
    spawn_config(data_dir, test_config(data_dir, options), clock).await
}

/// Starts a server with the default test settings changed by `change`
/// (which, unlike [`Options::tweak`], may capture values: an SMTP port).
pub async fn spawn_configured(change: impl FnOnce(&mut Config)) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let data_dir = temp.path().join("data");
    let mut config = test_config(&data_dir, &Options::default());
    change(&mut config);
    let mut app = spawn_config(&data_dir, config, Clock::manual(START)).await;
    app._temp = Some(temp);
    app
}

/// Starts a server with `config` on `data_dir` (which the caller keeps alive).
pub async fn spawn_config(data_dir: &Path, config: Config, clock: Clock) -> TestApp {
    let core = Latchkey::open_with_clock(config, clock.clone())
        .await
        .expect("core opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(latchkey::run(listener, core.clone(), async move {
        let _ = stop.await;
    }));
    TestApp {
        api: Api::new(format!("http://{address}")),
        address,
        core,
        clock,
        data_dir: data_dir.to_owned(),
        shutdown: Some(shutdown),
        server: Some(server),
        _temp: None,
    }
}

impl TestApp {
    /// Stops the server gracefully and waits until its data dir is released.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
        self._temp.take()
    }

    /// Creates a user with these roles directly in the core (no rate limit)
    /// and logs them in.
    pub async fn logged_in_with_roles(
        &self,
        username: &str,
        email: &str,
        roles: &[&str],
    ) -> Session {
        self.core
            .create_user(username, email, PASSWORD, roles, Default::default())
            .await
            .expect("user created");
        Session::from_token_response(self.login(email, PASSWORD).await).await
    }

    /// A secret the server generated (in its data dir, or its database).
    pub async fn stored_secret(&self, name: &str) -> String {
        self.core
            .stored_secret(name)
            .await
            .expect("readable")
            .expect("secret stored")
            .trim()
            .to_owned()
    }

    /// Signs `claims` with the server's own access key for `header.alg`
    /// (the HS256 secret, or the active EdDSA/ES256 private key), as an
    /// attacker who stole it (or latchkey itself) could.
    pub async fn mint_access(&self, header: Header, claims: &Value) -> String {
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                EncodingKey::from_secret(self.stored_secret("jwt_secret").await.as_bytes())
            }
            Algorithm::EdDSA => EncodingKey::from_ed_der(&self.active_private_key().await),
            Algorithm::ES256 => EncodingKey::from_ec_der(&self.active_private_key().await),
            other => panic!("no server key for {other:?}"),
        };
        jsonwebtoken::encode(&header, claims, &key).expect("encode")
    }

    /// The active signing key pair's PKCS#8 DER, from the data dir's key ring.
    pub async fn active_private_key(&self) -> Vec<u8> {
        use base64::Engine;
        let ring: Value =
            serde_json::from_str(&self.stored_secret("signing_keys.json").await).expect("ring");
        let active = ring["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .rev()
            .find(|key| key["retired_at"].is_null())
            .expect("an active key");
        base64::engine::general_purpose::STANDARD
            .decode(active["pkcs8"].as_str().expect("pkcs8"))
            .expect("base64")
    }

    /// The kinds of every audit event so far, oldest first.
    pub async fn audit_kinds(&self) -> Vec<String> {
        self.core
            .audit_events(0, None, usize::MAX)
            .await
            .expect("audit")
            .iter()
            .map(|event| event.kind.as_str().to_owned())
            .collect()
    }

    /// The audit log as JSON objects (`kind`, `detail`, `ip`…), oldest first.
    pub async fn audit_events(&self) -> Vec<Value> {
        self.core
            .audit_events(0, None, usize::MAX)
            .await
            .expect("audit")
            .iter()
            .map(|event| serde_json::to_value(event).expect("json"))
            .collect()
    }

    /// Signs refresh-token `claims` with the server's refresh secret under `kid`.
    pub async fn mint_refresh(&self, kid: &str, claims: &Value) -> String {
        let header = token_header(Algorithm::HS256, "refresh+jwt", Some(kid));
        let key =
            EncodingKey::from_secret(self.stored_secret("refresh_token_secret").await.as_bytes());
        jsonwebtoken::encode(&header, claims, &key).expect("encode")
    }
}

/// A JWT header with this algorithm, `typ` and `kid`, as an attacker (or a
/// test minting a token by hand) builds it.
pub fn token_header(alg: Algorithm, typ: &str, kid: Option<&str>) -> Header {
    let mut header = Header::new(alg);
    header.typ = Some(typ.to_owned());
    header.kid = kid.map(str::to_owned);
    header
}

/// What a login or refresh handed out.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub refresh_token: String,
    /// The refresh cookie's whole `Set-Cookie` value.
    pub set_cookie: String,
    /// The device token a login sets (`latchkey_device`), if any.
    pub device_token: Option<String>,
    pub body: Value,
}

impl Session {
    pub async fn from_token_response(response: Response) -> Session {
        assert_eq!(response.status(), StatusCode::OK);
        let set_cookie = set_cookie(&response, "refresh_token").expect("refresh cookie");
        let device_token = set_cookie_value(&response, "latchkey_device");
        let body: Value = response.json().await.expect("json");
        let mut session = Session {
            user_id: String::new(),
            access_token: body["accessToken"]
                .as_str()
                .expect("accessToken")
                .to_owned(),
            refresh_token: cookie_value(&set_cookie, "refresh_token").expect("refresh cookie"),
            set_cookie,
            device_token,
            body,
        };
        session.user_id = session.access_claims()["sub"]
            .as_str()
            .expect("sub")
            .to_owned();
        session
    }

    /// The access token's claims (read without verifying: latchkey made it).
    pub fn access_claims(&self) -> Value {
        jwt_part(&self.access_token, 1)
    }

    /// The access token's header.
    pub fn access_header(&self) -> Value {
        jwt_part(&self.access_token, 0)
    }

    /// The `kid` of the access token.
    pub fn access_kid(&self) -> String {
        self.access_header()["kid"]
            .as_str()
            .expect("kid")
            .to_owned()
    }

    /// The `kid` of the refresh token.
    pub fn refresh_kid(&self) -> String {
        jwt_part(&self.refresh_token, 0)["kid"]
            .as_str()
            .expect("kid")
            .to_owned()
    }

    /// The session (refresh-token family) id, the access token's `sid`.
    pub fn session_id(&self) -> String {
        self.access_claims()["sid"]
            .as_str()
            .expect("sid")
            .to_owned()
    }
}

/// Part `index` (0 header, 1 claims) of a compact JWT, decoded.
pub fn jwt_part(token: &str, index: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("json")
}

/// Options for a server that signs access tokens with HS256 and a generated
/// secret (the HMAC attacks need one).
pub fn hs256() -> Options {
    Options {
        tweak: |config| config.signing_alg = Some(latchkey::config::SigningAlg::Hs256),
        ..Options::default()
    }
}

/// The whole `Set-Cookie` header of a response that sets cookie `name`.
pub fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| cookie_value(value, name).is_some())
        .map(str::to_owned)
}

/// The value a response sets for cookie `name`.
pub fn set_cookie_value(response: &Response, name: &str) -> Option<String> {
    set_cookie(response, name).and_then(|header| cookie_value(&header, name))
}

/// The value of cookie `name` in a `Set-Cookie` header.
pub fn cookie_value(set_cookie: &str, name: &str) -> Option<String> {
    let first = set_cookie.split(';').next()?;
    let (key, value) = first.split_once('=')?;
    (key.trim() == name).then(|| value.trim().to_owned())
}

/// Asserts the status and the `{"code","message"}` body of an error.
pub async fn assert_error(
    response: Response,
    status: StatusCode,
    code: &str,
    message: Option<&str>,
) {
    assert_eq!(response.status(), status, "status of a {code} error");
    let content_type = header(&response, "content-type");
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    if status == StatusCode::UNAUTHORIZED {
        let challenge = header(&response, "www-authenticate");
        assert!(
            challenge.starts_with("Bearer"),
            "401 carries WWW-Authenticate: Bearer"
        );
    }
    let body: Value = response.json().await.expect("json error body");
    assert_eq!(body["code"], code, "code in {body}");
    match message {
        Some(message) => assert_eq!(body["message"], message, "message in {body}"),
        None => assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message in {body}"
        ),
    }
}

/// A response header as text, empty when absent.
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A self-signed certificate for 127.0.0.1 written to `dir` as `cert.pem` and
/// `key.pem`: (the certificate for a client to trust, cert path, key path).
pub fn self_signed(dir: &Path) -> (reqwest::Certificate, String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write key");
    let trusted = reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).expect("pem");
    (
        trusted,
        cert.display().to_string(),
        key.display().to_string(),
    )
}
