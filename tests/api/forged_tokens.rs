//! Access tokens an attacker might craft: the verifier pins algorithm, type
//! and time, and refuses headers that point at other keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Options, Session, TestApp, assert_error, header, hs256, spawn_app_with, token_header,
};

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Claims of a well-formed access token for `session`'s user and session.
fn claims(app: &TestApp, session: &Session) -> Value {
    let now = app.clock.now();
    json!({"iss": "latchkey", "sub": session.user_id, "email": "alice@example.com",
           "sid": session.session_id(), "iat": now, "exp": now + 600, "jti": "j"})
}

/// The header of a well-formed HS256 access token with the server's kid.
fn access_header(session: &Session) -> Header {
    token_header(Algorithm::HS256, "at+jwt", Some(&session.access_kid()))
}

async fn assert_invalid(app: &TestApp, token: &str, case: &str) {
    let response = app.me(token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
    assert_error(
        response,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        Some("Invalid token"),
    )
    .await;
}

#[tokio::test]
async fn a_correctly_minted_token_is_accepted_so_the_forgeries_below_are_meaningful() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    let token = app
        .mint_access(access_header(&session), &claims(&app, &session))
        .await;
    assert_eq!(app.me(&token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn alg_none_in_any_case_is_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    let payload = b64(&claims(&app, &session));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(&json!({"alg": alg, "typ": "at+jwt"}));
        assert_invalid(&app, &format!("{header}.{payload}."), alg).await;
        // With the real signature of another token glued on, too.
        let real = session.access_token.rsplit('.').next().expect("signature");
        assert_invalid(&app, &format!("{header}.{payload}.{real}"), alg).await;
    }
}

#[tokio::test]
async fn another_hmac_algorithm_with_the_right_secret_is_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let mut header = access_header(&session);
        header.alg = alg;
        let token = app.mint_access(header, &claims(&app, &session)).await;
        assert_invalid(&app, &token, &format!("{alg:?}")).await;
    }
}

#[tokio::test]
async fn a_wrong_or_missing_type_is_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    for typ in [None, Some("JWT"), Some("refresh+jwt")] {
        let mut header = access_header(&session);
        header.typ = typ.map(str::to_owned);
        let token = app.mint_access(header, &claims(&app, &session)).await;
        assert_invalid(&app, &token, &format!("typ {typ:?}")).await;
    }
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    assert_invalid(&app, &session.refresh_token, "refresh token").await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    let parts: Vec<&str> = session.access_token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64")).expect("json");
    payload["sub"] = json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_invalid(&app, &tampered, "tampered").await;
}

#[tokio::test]
async fn a_token_dated_in_the_future_is_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    let now = app.clock.now();
    let mut future_iat = claims(&app, &session);
    future_iat["iat"] = json!(now + 3600);
    future_iat["exp"] = json!(now + 7200);
    assert_invalid(
        &app,
        &app.mint_access(access_header(&session), &future_iat).await,
        "future iat",
    )
    .await;
    let mut future_nbf = claims(&app, &session);
    future_nbf["nbf"] = json!(now + 3600);
    assert_invalid(
        &app,
        &app.mint_access(access_header(&session), &future_nbf).await,
        "future nbf",
    )
    .await;
}

#[tokio::test]
async fn headers_pointing_at_other_keys_are_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    let body = claims(&app, &session);
    let mut with_kid = access_header(&session);
    with_kid.kid = Some("../../etc/passwd".into());
    let mut without_kid = access_header(&session);
    without_kid.kid = None;
    let mut with_jku = access_header(&session);
    with_jku.jku = Some("https://attacker.example/jwks.json".into());
    let mut with_x5u = access_header(&session);
    with_x5u.x5u = Some("https://attacker.example/cert.pem".into());
    let mut with_crit = access_header(&session);
    with_crit.crit = Some(vec!["exp".into()]);
    for (case, header) in [
        ("unknown kid", with_kid),
        ("no kid", without_kid),
        ("jku", with_jku),
        ("x5u", with_x5u),
        ("crit", with_crit),
    ] {
        assert_invalid(&app, &app.mint_access(header, &body).await, case).await;
    }
}

#[tokio::test]
async fn an_oversized_token_is_refused_without_a_server_error() {
    let app = spawn_app_with(hs256()).await;
    let token = format!("{}.{}.sig", "a".repeat(6000), "b".repeat(6000));
    assert_invalid(&app, &token, "oversized").await;
}

#[tokio::test]
async fn a_token_too_large_for_a_request_head_is_refused_in_header_or_cookie() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    // 24 KiB: within the 32 KiB request head, refused by the verifier.
    let large = format!("{}.{}.sig", "a".repeat(12 * 1024), "b".repeat(12 * 1024));
    assert_invalid(&app, &large, "24 KiB bearer").await;
    assert_error(
        app.refresh_with(&large).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
        None,
    )
    .await;
    // 64 KiB: over the head limit, refused before any handler runs, still
    // with the security headers.
    let huge = format!("{}.{}.sig", "a".repeat(32 * 1024), "b".repeat(32 * 1024));
    for response in [app.me(&huge).await, app.refresh_with(&huge).await] {
        assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
    }
    // The server is unharmed.
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token_even_when_both_secrets_are_equal() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            let shared = latchkey::Secret::new("one-secret-for-both-kinds-of-token-0123456789");
            config.jwt_secret = Some(shared.clone());
            config.refresh_secret = Some(shared);
        },
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
    assert_invalid(&app, &session.refresh_token, "refresh token, equal secrets").await;
    // And the other way round: an access token is no refresh token.
    assert_error(
        app.refresh_with(&session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
        None,
    )
    .await;
}

#[tokio::test]
async fn with_an_audience_a_token_for_another_audience_or_none_is_refused() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            config.audience = Some("https://api.example".into());
            config.signing_alg = Some(latchkey::config::SigningAlg::Hs256);
        },
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    assert_eq!(session.access_claims()["aud"], "https://api.example");
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
    let mut other = claims(&app, &session);
    other["aud"] = json!("https://other.example");
    assert_invalid(
        &app,
        &app.mint_access(access_header(&session), &other).await,
        "other aud",
    )
    .await;
    let missing = claims(&app, &session);
    assert_invalid(
        &app,
        &app.mint_access(access_header(&session), &missing).await,
        "no aud",
    )
    .await;
    let mut listed = claims(&app, &session);
    listed["aud"] = json!(["https://other.example", "https://api.example"]);
    assert_eq!(
        app.me(&app.mint_access(access_header(&session), &listed).await)
            .await
            .status(),
        StatusCode::OK,
        "an audience list that names us is accepted"
    );
}

#[tokio::test]
async fn a_token_without_or_with_another_issuer_is_refused() {
    let app = spawn_app_with(hs256()).await;
    let session = app.logged_in_user().await;
    let mut other = claims(&app, &session);
    other["iss"] = json!("https://elsewhere.example");
    assert_invalid(
        &app,
        &app.mint_access(access_header(&session), &other).await,
        "other iss",
    )
    .await;
    let mut missing = claims(&app, &session);
    missing.as_object_mut().expect("object").remove("iss");
    assert_invalid(
        &app,
        &app.mint_access(access_header(&session), &missing).await,
        "no iss",
    )
    .await;
}
