//! Malformed and hostile bodies get 4xx JSON errors, never a 500 or a hang.

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{PASSWORD, Session, TestApp, assert_error, spawn_app};

#[tokio::test]
async fn bodies_that_are_not_the_expected_json_get_400() {
    let app = spawn_app().await;
    let raw_bodies = [
        "",
        "not json",
        "{",
        "[]",
        "null",
        "42",
        "{\"email\": \"a@example.com\", \"password\": 12345678}",
    ];
    for body in raw_bodies {
        for path in ["/api/auth/register", "/api/auth/login"] {
            let response = app
                .client
                .post(app.url(path))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .expect("request");
            assert_error(response, StatusCode::BAD_REQUEST, "invalid_input", None).await;
        }
    }
}

/// POST /api/auth/login with `body` as JSON, sent as it is.
async fn login_with_raw_body(app: &TestApp, body: String) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/login"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn body_errors_are_sentences_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            r#"{"email": 5, "password": "x"}"#,
            "email: expected a string",
        ),
        (r#"{"password": "x"}"#, "email: required"),
        (
            r#"{"email": "a@example.com", "password": null}"#,
            "password: required",
        ),
        ("", "body: expected a JSON object"),
        ("[]", "body: expected a JSON object"),
    ];
    for (body, message) in cases {
        let response = login_with_raw_body(&app, body.to_owned()).await;
        assert_error(
            response,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            Some(message),
        )
        .await;
    }
    let response = login_with_raw_body(&app, "{".to_owned()).await;
    let body: serde_json::Value = response.json().await.expect("json");
    let message = body["message"].as_str().expect("message");
    assert!(message.starts_with("body: not valid JSON"), "{message}");
}

#[tokio::test]
async fn two_refresh_cookies_are_refused_instead_of_guessed() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    for path in ["/api/auth/refresh", "/api/auth/logout"] {
        let response = app
            .client
            .post(app.url(path))
            .header(
                "Cookie",
                format!(
                    "refresh_token=planted; refresh_token={}",
                    session.refresh_token
                ),
            )
            .send()
            .await
            .expect("request");
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_input", None).await;
    }
    // Nothing was rotated or ended.
    Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
}

#[tokio::test]
async fn operator_injection_objects_are_refused() {
    let app = spawn_app().await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    for body in [
        json!({"email": {"$gt": ""}, "password": PASSWORD}),
        json!({"email": "alice@example.com", "password": {"$ne": null}}),
        json!({"email": ["alice@example.com"], "password": PASSWORD}),
    ] {
        assert_error(
            app.post_json("/api/auth/login", &body).await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn a_key_sent_twice_is_refused_not_guessed_between() {
    let app = spawn_app().await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    let body = format!(
        r#"{{"email":"mallory@example.com","email":"alice@example.com","password":"{PASSWORD}"}}"#
    );
    let response = login_with_raw_body(&app, body).await;
    assert_error(
        response,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        Some(r#"body: the key "email" appears twice in one object"#),
    )
    .await;
}

#[tokio::test]
async fn a_body_over_16_kib_gets_413() {
    let app = spawn_app().await;
    let body = json!({"username": "alice", "email": "alice@example.com", "password": "x".repeat(17 * 1024)});
    assert_error(
        app.post_json("/api/auth/register", &body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_chunked_body_over_16_kib_gets_413() {
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.address)
        .await
        .expect("connect");
    let chunk = "x".repeat(8 * 1024);
    let mut request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.address
    );
    for _ in 0..3 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("\"code\":\"payload_too_large\""),
        "{response}"
    );
}

#[tokio::test]
async fn a_body_without_a_json_content_type_gets_a_json_4xx() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/api/auth/login"))
        .body("email=alice@example.com&password=x")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("request");
    assert!(response.status().is_client_error());
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_hostile_refresh_cookie_is_an_invalid_refresh_token() {
    let app = spawn_app().await;
    for cookie in [
        "a.b.c",
        "....",
        &"x".repeat(10_000),
        "eyJhbGciOiJub25lIn0.e30.",
    ] {
        assert_error(
            app.refresh_with(cookie).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn look_alike_identifiers_are_one_account_or_refused() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("alice", "alice@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    // Fullwidth letters fold into the same address and name.
    assert_error(
        app.register("alice2", "\u{ff41}lice@example.com", PASSWORD)
            .await,
        StatusCode::CONFLICT,
        "user_exists",
        None,
    )
    .await;
    assert_error(
        app.register("\u{ff41}lice", "other@example.com", PASSWORD)
            .await,
        StatusCode::CONFLICT,
        "username_taken",
        None,
    )
    .await;
    // A Cyrillic 'а', an invisible space, a quoted name, an IP address.
    for email in [
        "\u{0430}lice@example.com",
        "carol\u{200b}@example.com",
        "\"x@evil.com\"@example.com",
        "hank@127.0.0.1",
    ] {
        let response = app.register("someone", email, PASSWORD).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_input", None).await;
    }
    // A password set in one Unicode form logs in typed in the other.
    app.register("zoe", "zoe@example.com", "caf\u{e9} au lait le matin")
        .await;
    assert_eq!(
        app.login("zoe@example.com", "cafe\u{301} au lait le matin")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_request_hyper_cannot_parse_gets_400_with_the_security_headers() {
    let app = spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.address)
        .await
        .expect("connect");
    stream
        .write_all(b"GARBAGE REQUEST LINE\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    let lowered = response.to_ascii_lowercase();
    assert!(
        lowered.contains("x-content-type-options: nosniff"),
        "{response}"
    );
    assert!(lowered.contains("x-frame-options: deny"), "{response}");
}

/// What the server answers to `head` sent raw (HTTP/1.1).
async fn raw_answer(app: &crate::helpers::TestApp, head: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(app.address)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

#[tokio::test]
async fn an_http11_request_needs_one_host_that_is_a_host_and_port() {
    let app = spawn_app().await;
    let good = format!(
        "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.address
    );
    let answer = raw_answer(&app, &good).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "a document built from the Host is not cached: {answer}"
    );
    for head in [
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: evil.example/x?\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@example.com\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_answer(&app, head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        assert!(answer.contains("invalid_input"), "{answer}");
        assert!(
            !answer.contains("evil.example"),
            "nothing reflected: {answer}"
        );
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("x-frame-options: deny"),
            "{answer}"
        );
    }
    // HTTP/1.0 may leave Host out.
    let answer = raw_answer(&app, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}
