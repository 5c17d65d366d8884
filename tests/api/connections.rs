//! What one socket can cost: the request-body limit for every protocol,
//! timeouts on silent, slow and idle connections, the per-address cap, and
//! the same-origin check over HTTP/2 and with CORS configured.

use std::time::{Duration, Instant};

use futures_util::stream;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    Api, Options, PASSWORD, Session, TestApp, assert_error, header, spawn_app_with,
};

const HEADER_TIMEOUT: Duration = Duration::from_millis(400);
const IDLE_TIMEOUT: Duration = Duration::from_millis(600);

/// A server with short timeouts and a per-address cap of 4.
async fn strict_app() -> TestApp {
    spawn_app_with(Options {
        tweak: |config| {
            config.connections.header_timeout = HEADER_TIMEOUT;
            config.connections.body_timeout = HEADER_TIMEOUT;
            config.connections.idle_timeout = IDLE_TIMEOUT;
            config.connections.max_connections_per_ip = 4;
        },
        ..Options::default()
    })
    .await
}

/// Reads until the server closes `stream`; returns what it sent and when it
/// closed, or panics after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Instant::now()),
            Ok(Ok(read)) => received.extend_from_slice(&buf[..read]),
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
        }
    }
}

/// An HTTP/2 client that speaks h2 without TLS from the first byte (h2c).
fn h2c(app: &TestApp) -> Api {
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    Api::with_client(app.base.clone(), client)
}

#[tokio::test]
async fn over_http2_too_every_answer_carries_its_own_request_id() {
    let app = crate::helpers::spawn_app().await;
    let h2 = h2c(&app);
    let mut ids = std::collections::HashSet::new();
    for path in ["/healthz", "/readyz", "/api/profile/me", "/nowhere"] {
        let response = h2.get(path).await;
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        let id = response.headers()["x-request-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(ids.insert(id), "ids are not reused");
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let app = strict_app().await;
    let opened = Instant::now();
    let mut silent = TcpStream::connect(app.address).await.expect("connect");
    let (_, closed) = until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed - opened >= HEADER_TIMEOUT / 2, "closed too early");
}

#[tokio::test]
async fn half_a_request_head_sent_slowly_is_closed_after_the_header_timeout() {
    let app = strict_app().await;
    let mut slow = TcpStream::connect(app.address).await.expect("connect");
    let started = Instant::now();
    slow.write_all(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // One more byte of the head every 50 ms, until the server hangs up.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if slow.write_all(b"x").await.is_err() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a trickled head kept the connection open"
        );
    }
    assert!(started.elapsed() >= HEADER_TIMEOUT / 2, "closed too early");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = strict_app().await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let (received, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408() {
    let app = strict_app().await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    stream
        .write_all(
            b"POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .expect("write");
    let (received, _) = until_closed(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
}

#[tokio::test]
async fn an_http2_body_without_a_length_is_cut_off_at_16_kib() {
    let app = strict_app().await;
    let api = h2c(&app);
    // An endless body: the server must answer without reading it all.
    let chunk = bytes::Bytes::from(vec![b' '; 8 * 1024]);
    let endless = stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    let response = api
        .client
        .post(api.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(endless))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_error(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
    // The connection is still good for the next request.
    assert_eq!(api.get("/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let app = strict_app().await;
    let mut stream = TcpStream::connect(app.address).await.expect("connect");
    // The client preface and an empty SETTINGS frame, then nothing.
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&preface).await.expect("write");
    let opened = Instant::now();
    let (_, closed) = until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed - opened >= HEADER_TIMEOUT / 2, "closed too early");
}

#[tokio::test]
async fn connections_from_one_address_beyond_its_cap_are_closed_at_once() {
    let app = strict_app().await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.address).await.expect("connect"));
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fifth = TcpStream::connect(app.address).await.expect("connect");
    let opened = Instant::now();
    let (_, closed) = until_closed(&mut fifth, Duration::from_secs(5)).await;
    assert!(
        closed - opened < HEADER_TIMEOUT / 2,
        "refused without waiting"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        app.get("/").await.status(),
        StatusCode::OK,
        "slots come back"
    );
}

#[tokio::test]
async fn at_the_global_cap_silent_connections_make_room_for_a_client_that_talks() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            // Silent sockets would otherwise hold their places for a minute.
            config.connections.header_timeout = Duration::from_secs(60);
            config.connections.max_connections = 8;
            config.connections.max_connections_per_ip = 8;
        },
        ..Options::default()
    })
    .await;
    // From another address than the client's (each address may hold 8).
    let mut silent = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("address"))
            .expect("bind");
        silent.push(socket.connect(app.address).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A client that sends its request at once is served, well before any
    // silent socket's header timeout.
    let answered = app
        .client
        .get(app.url("/"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("served at the cap");
    assert_eq!(answered.status(), StatusCode::OK);
    // The oldest silent socket gave its place up.
    let (sent, _) = until_closed(&mut silent[0], Duration::from_secs(5)).await;
    assert!(sent.is_empty(), "closed without an answer");
}

#[tokio::test]
async fn same_origin_cookie_requests_over_http2_pass_the_csrf_check() {
    let app = strict_app().await;
    let api = h2c(&app);
    let session = app.logged_in_user().await;
    let own_origin = app.base.clone();
    let refreshed = api
        .client
        .post(api.url("/api/auth/refresh"))
        .header("Origin", &own_origin)
        .header("Cookie", format!("refresh_token={}", session.refresh_token))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.version(), reqwest::Version::HTTP_2);
    let rotated = Session::from_token_response(refreshed).await;
    // The cookie's path comes from the request's path, which HTTP/2 has too.
    assert!(
        rotated.set_cookie.contains("Path=/api/auth;"),
        "{}",
        rotated.set_cookie
    );
    let foreign = api
        .client
        .post(api.url("/api/auth/refresh"))
        .header("Origin", "https://evil.example")
        .header("Cookie", format!("refresh_token={}", rotated.refresh_token))
        .send()
        .await
        .expect("refresh");
    assert_error(foreign, StatusCode::FORBIDDEN, "csrf_rejected", None).await;
    // The discovery document names the authority the request was sent to.
    let discovery: serde_json::Value = api
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        discovery["jwks_uri"],
        format!("{own_origin}/.well-known/jwks.json")
    );
}

#[tokio::test]
async fn with_cors_origins_same_origin_requests_pass_untouched() {
    let app = spawn_app_with(Options {
        tweak: |config| config.cors_origins = vec!["https://app.example".into()],
        ..Options::default()
    })
    .await;
    let own_origin = app.base.clone();
    app.register("alice", "alice@example.com", PASSWORD).await;
    let login = app
        .client
        .post(app.url("/api/auth/login"))
        .header("Origin", &own_origin)
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(header(&login, "access-control-allow-origin"), "");
    let session = Session::from_token_response(login).await;
    let refreshed = app
        .client
        .post(app.url("/api/auth/refresh"))
        .header("Origin", &own_origin)
        .header("Cookie", format!("refresh_token={}", session.refresh_token))
        .send()
        .await
        .expect("refresh");
    Session::from_token_response(refreshed).await;
    let docs = app
        .client
        .get(app.url("/docs"))
        .header("Origin", &own_origin)
        .send()
        .await
        .expect("docs");
    assert_eq!(docs.status(), StatusCode::OK);
    // A preflight from an origin nobody listed gets latchkey's own answer.
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/auth/login"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_error(preflight, StatusCode::FORBIDDEN, "csrf_rejected", None).await;
    // A foreign page cannot post a login either (login CSRF), cookie or not.
    let foreign = app
        .client
        .post(app.url("/api/auth/login"))
        .header("Origin", "https://evil.example")
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_error(foreign, StatusCode::FORBIDDEN, "csrf_rejected", None).await;
}

#[tokio::test]
async fn logins_whose_clients_hung_up_are_not_hashed_and_a_full_queue_answers_503() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            config.limits = latchkey::config::RateLimits::off();
            config.hash_concurrency = Some(1);
            config.hash_queue = 4;
        },
        ..Options::default()
    })
    .await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    let body = r#"{"email":"alice@example.com","password":"not her password"}"#;
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..30 {
        let mut socket = TcpStream::connect(app.address).await.expect("connect");
        socket.write_all(request.as_bytes()).await.expect("write");
        // Hang up without waiting for the answer.
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hashed = app
        .audit_kinds()
        .await
        .iter()
        .filter(|kind| *kind == "login_failed")
        .count();
    assert!(
        hashed <= 5,
        "{hashed} of 30 abandoned logins were still hashed"
    );
    // A storm beyond the queue: some are told to come back later.
    let storm = (0..12).map(|_| app.login("alice@example.com", "not her password"));
    let mut overloaded = 0;
    for response in futures_util::future::join_all(storm).await {
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(!header(&response, "retry-after").is_empty());
                assert_error(
                    response,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    None,
                )
                .await;
                overloaded += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        overloaded >= 5,
        "{overloaded} of 12 refused with 1 running and 4 waiting"
    );
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}
