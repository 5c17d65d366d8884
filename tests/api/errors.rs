//! Every error row of the API contract, with its exact code and message.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Options, PASSWORD, assert_error, header, spawn_app, spawn_app_with, token_header,
};

#[tokio::test]
async fn register_names_the_invalid_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"username": "al", "email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "bad name!", "email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "alice", "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "alice", "email": format!("{}@example.com", "a".repeat(250)), "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "alice", "email": "a@example.com", "password": "x".repeat(129)}),
            "password",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (json!({"username": "alice", "password": PASSWORD}), "email"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/api/auth/register", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: serde_json::Value = response.json().await.expect("json");
        assert_eq!(error["code"], "invalid_input", "{body}");
        let message = error["message"].as_str().expect("message");
        assert!(message.contains(field), "message {message:?} names {field}");
    }
}

#[tokio::test]
async fn register_refuses_a_taken_email_and_a_taken_username() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("alice", "alice@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_error(
        app.register("alice2", "ALICE@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "user_exists",
        Some("User already exists"),
    )
    .await;
    assert_error(
        app.register("ALICE", "other@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "username_taken",
        Some("Username already taken"),
    )
    .await;
}

#[tokio::test]
async fn login_gives_the_same_answer_for_an_unknown_email_and_a_wrong_password() {
    let app = spawn_app().await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    let wrong = app.login("alice@example.com", "wrong password!").await;
    let unknown_headers = unknown.headers().clone();
    let wrong_headers = wrong.headers().clone();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        unknown_headers["www-authenticate"],
        wrong_headers["www-authenticate"]
    );
    let unknown = unknown.text().await.expect("body");
    let wrong = wrong.text().await.expect("body");
    assert_eq!(unknown, wrong);
    assert_eq!(
        unknown,
        r#"{"code":"invalid_credentials","message":"Invalid credentials"}"#
    );
}

#[tokio::test]
async fn login_refuses_invalid_input() {
    let app = spawn_app().await;
    for body in [
        json!({"email": "alice@example.com"}),
        json!({"password": PASSWORD}),
        json!({"email": "not an email", "password": PASSWORD}),
        json!({"email": "alice@example.com", "password": ""}),
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
async fn me_without_a_token_is_missing_token() {
    let app = spawn_app().await;
    let response = app.get("/api/profile/me").await;
    assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "missing_token",
        Some("Missing or invalid Authorization header"),
    )
    .await;
    let basic = app
        .client
        .get(app.url("/api/profile/me"))
        .header("Authorization", "Basic YWxpY2U6cGFzcw==")
        .send()
        .await
        .expect("request");
    assert_error(basic, StatusCode::UNAUTHORIZED, "missing_token", None).await;
}

#[tokio::test]
async fn me_with_an_expired_token_is_token_expired() {
    let app = spawn_app_with(Options {
        access_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let session = app.logged_in_user().await;
    assert_eq!(session.body["expiresIn"], 1);
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(2));
    assert_error(
        app.me(&session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
        Some("Access token expired"),
    )
    .await;
}

#[tokio::test]
async fn me_with_a_garbage_token_is_invalid_token() {
    let app = spawn_app().await;
    assert_error(
        app.me("not.a.jwt").await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        Some("Invalid token"),
    )
    .await;
}

// A validly signed token whose session latchkey never started (or has
// forgotten) is refused: latchkey's own routes honour revocation, so the
// session is checked before the user is read.
#[tokio::test]
async fn me_with_a_signed_token_for_an_unknown_session_is_session_revoked() {
    let app = spawn_app().await;
    let real = app.logged_in_user().await;
    let now = app.clock.now();
    let header = token_header(
        jsonwebtoken::Algorithm::EdDSA,
        "at+jwt",
        Some(&real.access_kid()),
    );
    let token = app.mint_access(
        header,
        &json!({"iss": "latchkey", "sub": "00000000-0000-4000-8000-000000000000", "email": "ghost@example.com",
                "sid": "s", "iat": now, "exp": now + 60, "jti": "j"}),
    ).await;
    app.assert_session_revoked(&token).await;
}

#[tokio::test]
async fn refresh_without_a_cookie_is_missing_refresh_token() {
    let app = spawn_app().await;
    let response = app.post("/api/auth/refresh").await;
    assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "missing_refresh_token",
        Some("No refresh token"),
    )
    .await;
}

#[tokio::test]
async fn refresh_with_a_garbage_or_access_token_is_invalid_refresh_token() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    for token in ["garbage", session.access_token.as_str()] {
        assert_error(
            app.refresh_with(token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
            Some("Invalid or expired refresh token"),
        )
        .await;
    }
}

#[tokio::test]
async fn refresh_with_a_well_signed_but_unknown_token_is_not_recognized() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let now = app.clock.now();
    let forged = app.mint_refresh(&session.refresh_kid(), &json!({"iss": "latchkey", "sub": session.user_id, "fam": "f", "iat": now, "exp": now + 60, "jti": "never-issued"})).await;
    assert_error(
        app.refresh_with(&forged).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_not_recognized",
        None,
    )
    .await;
}

#[tokio::test]
async fn refresh_after_the_refresh_ttl_is_refresh_token_expired() {
    let app = spawn_app_with(Options {
        access_ttl: Duration::from_secs(30),
        refresh_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let session = app.logged_in_user().await;
    app.clock.advance(Duration::from_secs(61));
    assert_error(
        app.refresh_with(&session.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_expired",
        None,
    )
    .await;
}

#[tokio::test]
async fn logout_without_a_cookie_or_twice_still_succeeds() {
    let app = spawn_app().await;
    assert_eq!(app.logout_with(None).await.status(), StatusCode::OK);
    assert_eq!(
        app.logout_with(Some("garbage")).await.status(),
        StatusCode::OK
    );
    let session = app.logged_in_user().await;
    assert_eq!(
        app.logout_with(Some(&session.refresh_token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.logout_with(Some(&session.refresh_token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let missing = app.get("/api/nothing-here").await;
    assert_error(missing, StatusCode::NOT_FOUND, "not_found", None).await;
    let wrong_method = app.get("/api/auth/login").await;
    assert_eq!(header(&wrong_method, "allow"), "POST");
    let put = app
        .client
        .put(app.url("/api/profile/me"))
        .send()
        .await
        .expect("request");
    assert_eq!(header(&put, "allow"), "GET, DELETE, HEAD");
    // What Allow promises holds: HEAD answers wherever GET does.
    let head = app
        .client
        .head(app.url("/api/profile/me"))
        .send()
        .await
        .expect("request");
    assert_eq!(head.status(), StatusCode::UNAUTHORIZED);
    let put_session = app
        .client
        .put(app.url("/api/auth/sessions/some-id"))
        .send()
        .await
        .expect("request");
    assert_eq!(header(&put_session, "allow"), "DELETE");
    for path in ["/docs", "/docs/", "/openapi.json"] {
        let posted = app
            .client
            .post(app.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(header(&posted, "allow"), "GET, HEAD", "{path}");
        assert_error(
            posted,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
        )
        .await;
    }
    assert_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    )
    .await;
}
