//! The whole happy path, as a client would walk it.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, Session, assert_error, spawn_app};

#[tokio::test]
async fn the_root_says_the_api_is_running() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("text"), "JWT Auth API running");
}

#[tokio::test]
async fn register_login_me_refresh_me_logout_then_refresh_fails() {
    let app = spawn_app().await;

    let registered = app
        .register("Alice", "  Alice@Example.COM ", PASSWORD)
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let body: Value = registered.json().await.expect("json");
    assert_eq!(body["message"], "User created successfully");
    let user = &body["user"];
    assert_eq!(user["username"], "Alice");
    assert_eq!(user["email"], "alice@example.com");
    assert!(user["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(
        user["createdAt"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
    assert!(user.get("password").is_none() && user.get("passwordHash").is_none());

    let login = app.login("ALICE@example.com", PASSWORD).await;
    assert_eq!(login.headers()["cache-control"], "no-store");
    let first = Session::from_token_response(login).await;
    assert_eq!(first.body["tokenType"], "Bearer");
    assert_eq!(first.body["expiresIn"], 900);

    let me = app.me(&first.access_token).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"], *user);

    let refreshed = app.refresh_with(&first.refresh_token).await;
    assert_eq!(refreshed.headers()["cache-control"], "no-store");
    let second = Session::from_token_response(refreshed).await;
    assert_ne!(
        second.refresh_token, first.refresh_token,
        "the refresh token rotates"
    );
    assert_ne!(second.access_token, first.access_token);

    let me = app.me(&second.access_token).await;
    assert_eq!(me.status(), StatusCode::OK);

    let logout = app.logout_with(Some(&second.refresh_token)).await;
    assert_eq!(logout.status(), StatusCode::OK);
    let cleared = logout.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(cleared.starts_with("refresh_token=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0") && cleared.contains("Path=/api/auth"));
    let body: Value = logout.json().await.expect("json");
    assert_eq!(body["message"], "Logged out");

    assert_error(
        app.refresh_with(&second.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
        Some("Refresh token revoked"),
    )
    .await;
}

#[tokio::test]
async fn the_refresh_cookie_is_http_only_strict_and_scoped_to_auth() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let cookie = &session.set_cookie;
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=604800",
    ] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains("Secure"),
        "no Secure without TLS or --secure-cookies"
    );
}

#[tokio::test]
async fn secure_cookies_mark_the_refresh_cookie_secure() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        secure_cookies: true,
        ..Default::default()
    })
    .await;
    let session = app.logged_in_user().await;
    assert!(
        session.set_cookie.contains("Secure"),
        "{}",
        session.set_cookie
    );
    let logout = app.logout_with(Some(&session.refresh_token)).await;
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .contains("Secure")
    );
}

#[tokio::test]
async fn me_accepts_the_access_token_from_a_cookie_when_no_header_is_sent() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let response = app
        .client
        .get(app.url("/api/profile/me"))
        .header("Cookie", format!("access_token={}", session.access_token))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
}
