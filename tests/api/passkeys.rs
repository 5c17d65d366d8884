//! Passkeys against webauthn-authenticator-rs's software authenticators:
//! register, sign in with and without an email, a replayed challenge, a
//! wrong origin, a cloned authenticator (its counter goes backwards), a
//! passkey presented for another account, and removal (which needs a
//! recent sign-in). The real browser flow is `.ci/browser/passkeys.mjs`.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;

use crate::helpers::{PASSWORD, Session, TestApp, assert_error, spawn_configured};

/// Where the browser page of these tests would be.
const ORIGIN: &str = "http://localhost:5000";

async fn passkey_app() -> TestApp {
    spawn_configured(|config| config.public_url = Some(ORIGIN.into())).await
}

fn origin(text: &str) -> Url {
    Url::parse(text).expect("origin")
}

/// Registers a passkey of `key` for `session`; returns its view.
async fn register(app: &TestApp, session: &Session, key: &mut impl WebauthnAuthenticator) -> Value {
    let start = app
        .call_json(
            Method::POST,
            "/api/auth/passkeys/register/start",
            &session.access_token,
            Some(&json!({"name": "Laptop"})),
            StatusCode::OK,
        )
        .await;
    let options =
        serde_json::from_value(json!({"publicKey": start["publicKey"]})).expect("creation options");
    let credential = key
        .do_registration(origin(ORIGIN), options)
        .expect("the authenticator registers");
    app.call_json(
        Method::POST,
        "/api/auth/passkeys/register/finish",
        &session.access_token,
        Some(&json!({
            "challengeId": start["challengeId"],
            "credential": serde_json::to_value(&credential).expect("json"),
        })),
        StatusCode::CREATED,
    )
    .await
}

/// A sign-in's first step; with `email` (or `{}`).
async fn start_sign_in(app: &TestApp, email: Option<&str>) -> Value {
    let body = match email {
        Some(email) => json!({"email": email}),
        None => json!({}),
    };
    let start = app.post_json("/api/auth/passkeys/login/start", &body).await;
    assert_eq!(start.status(), StatusCode::OK);
    start.json().await.expect("json")
}

/// The authenticator's answer to a sign-in's options, from `page_origin`.
/// `usernameless`: the software authenticator keeps no discoverable
/// credentials, so it is told which one to use (`allow`) and its answer
/// gets the user handle a discoverable credential would carry.
fn answer(
    start: &Value,
    key: &mut impl WebauthnAuthenticator,
    page_origin: &str,
    usernameless: Option<(&str, &str)>,
) -> Value {
    let mut public_key = start["publicKey"].clone();
    if let Some((credential_id, _)) = usernameless {
        assert_eq!(public_key["allowCredentials"], json!([]));
        public_key["allowCredentials"] = json!([{"type": "public-key", "id": credential_id}]);
    }
    let options =
        serde_json::from_value(json!({"publicKey": public_key})).expect("request options");
    let credential = key
        .do_authentication(origin(page_origin), options)
        .expect("the authenticator answers");
    let mut credential = serde_json::to_value(&credential).expect("json");
    if let Some((_, user_id)) = usernameless {
        let handle = uuid::Uuid::parse_str(user_id).expect("uuid");
        credential["response"]["userHandle"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(handle.as_bytes()));
    }
    credential
}

async fn finish(app: &TestApp, start: &Value, credential: &Value) -> reqwest::Response {
    app.post_json(
        "/api/auth/passkeys/login/finish",
        &json!({"challengeId": start["challengeId"], "credential": credential}),
    )
    .await
}

#[tokio::test]
async fn a_registered_passkey_signs_in_with_an_email_and_without_one() {
    let app = passkey_app().await;
    let session = app.logged_in_user().await;
    let mut key = SoftPasskey::new(true);
    let view = register(&app, &session, &mut key).await;
    assert_eq!(view["name"], "Laptop");
    let id = view["id"].as_str().expect("id").to_owned();
    let listed = app
        .call_json(
            Method::GET,
            "/api/auth/passkeys",
            &session.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(listed["passkeys"][0]["id"], id.as_str());
    let me: Value = app
        .me(&session.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["mfa"], json!({"totp": false, "passkeys": 1}));

    let start = start_sign_in(&app, Some("alice@example.com")).await;
    let listed_ids: Vec<&str> = start["publicKey"]["allowCredentials"]
        .as_array()
        .expect("allowCredentials")
        .iter()
        .filter_map(|entry| entry["id"].as_str())
        .collect();
    assert_eq!(listed_ids, [id.as_str()]);
    let credential = answer(&start, &mut key, ORIGIN, None);
    let signed_in = Session::from_token_response(finish(&app, &start, &credential).await).await;
    assert_eq!(signed_in.user_id, session.user_id);
    assert_eq!(signed_in.access_claims()["amr"], json!(["hwk", "mfa"]));

    // The same answer again: the challenge is used up.
    assert_error(
        finish(&app, &start, &credential).await,
        StatusCode::UNAUTHORIZED,
        "passkey_invalid",
        Some("Passkey sign-in failed"),
    )
    .await;

    let start = start_sign_in(&app, None).await;
    let credential = answer(&start, &mut key, ORIGIN, Some((&id, &session.user_id)));
    let usernameless = Session::from_token_response(finish(&app, &start, &credential).await).await;
    assert_eq!(usernameless.user_id, session.user_id);
    let listed = app
        .call_json(
            Method::GET,
            "/api/auth/passkeys",
            &session.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert!(listed["passkeys"][0]["lastUsedAt"].is_string());
    let kinds = app.audit_kinds().await;
    assert!(
        kinds.iter().any(|kind| kind == "passkey_added"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn of_many_racing_uses_of_one_sign_in_answer_exactly_one_wins() {
    let app = passkey_app().await;
    let session = app.logged_in_user().await;
    let mut key = SoftPasskey::new(true);
    register(&app, &session, &mut key).await;
    let start = start_sign_in(&app, Some("alice@example.com")).await;
    let credential = answer(&start, &mut key, ORIGIN, None);
    let racing = (0..12).map(|_| finish(&app, &start, &credential));
    let answers = futures_util::future::join_all(racing).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|answer| answer.status()).collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == StatusCode::OK)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::OK || *status == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_answer_from_another_origin_is_refused() {
    let app = passkey_app().await;
    let session = app.logged_in_user().await;
    let mut key = SoftPasskey::new(true);
    register(&app, &session, &mut key).await;
    let start = start_sign_in(&app, Some("alice@example.com")).await;
    let credential = answer(&start, &mut key, "http://localhost:6666", None);
    assert_error(
        finish(&app, &start, &credential).await,
        StatusCode::UNAUTHORIZED,
        "passkey_invalid",
        None,
    )
    .await;
    // The challenge died with the failed answer.
    let credential = answer(&start, &mut key, ORIGIN, None);
    assert_error(
        finish(&app, &start, &credential).await,
        StatusCode::UNAUTHORIZED,
        "passkey_invalid",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_cloned_authenticator_is_refused_once_its_counter_falls_behind() {
    let app = passkey_app().await;
    let session = app.logged_in_user().await;
    let (mut key, _) = SoftToken::new(true).expect("soft token");
    register(&app, &session, &mut key).await;
    let snapshot = key.to_cbor().expect("snapshot");
    let start = start_sign_in(&app, Some("alice@example.com")).await;
    let credential = answer(&start, &mut key, ORIGIN, None);
    assert_eq!(
        finish(&app, &start, &credential).await.status(),
        StatusCode::OK
    );
    // The clone has the counter of before that sign-in.
    let mut clone = SoftToken::from_cbor(&snapshot).expect("clone");
    let start = start_sign_in(&app, Some("alice@example.com")).await;
    let credential = answer(&start, &mut clone, ORIGIN, None);
    assert_error(
        finish(&app, &start, &credential).await,
        StatusCode::UNAUTHORIZED,
        "passkey_invalid",
        None,
    )
    .await;
    assert!(
        app.audit_kinds()
            .await
            .iter()
            .any(|kind| kind == "passkey_counter_regressed")
    );
    // The original goes on.
    let start = start_sign_in(&app, Some("alice@example.com")).await;
    let credential = answer(&start, &mut key, ORIGIN, None);
    assert_eq!(
        finish(&app, &start, &credential).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_passkey_signs_in_to_its_own_account_only() {
    let app = passkey_app().await;
    let alice = app.logged_in_user().await;
    let bob = app.logged_in("bob", "bob@example.com").await;
    let mut key = SoftPasskey::new(true);
    let view = register(&app, &alice, &mut key).await;
    let id = view["id"].as_str().expect("id").to_owned();
    // Started for bob: alice's passkey is not his.
    let start = start_sign_in(&app, Some("bob@example.com")).await;
    assert_eq!(start["publicKey"]["allowCredentials"], json!([]));
    let credential = answer(&start, &mut key, ORIGIN, Some((&id, &alice.user_id)));
    assert_error(
        finish(&app, &start, &credential).await,
        StatusCode::UNAUTHORIZED,
        "passkey_invalid",
        None,
    )
    .await;
    // Usernameless, but the answer names bob.
    let start = start_sign_in(&app, None).await;
    let credential = answer(&start, &mut key, ORIGIN, Some((&id, &bob.user_id)));
    assert_error(
        finish(&app, &start, &credential).await,
        StatusCode::UNAUTHORIZED,
        "passkey_invalid",
        None,
    )
    .await;
    // An unknown email looks like an account without passkeys.
    let start = start_sign_in(&app, Some("nobody@example.com")).await;
    assert_eq!(start["publicKey"]["allowCredentials"], json!([]));
}

#[tokio::test]
async fn removing_a_passkey_needs_a_recent_sign_in() {
    let app = passkey_app().await;
    let session = app.logged_in_user().await;
    let mut key = SoftPasskey::new(true);
    let view = register(&app, &session, &mut key).await;
    let id = view["id"].as_str().expect("id").to_owned();
    let path = format!("/api/auth/passkeys/{id}");
    app.clock.advance(Duration::from_secs(11 * 60));
    let refreshed =
        Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    let stale = app
        .call(Method::DELETE, &path, &refreshed.access_token, None)
        .await;
    assert_error(
        stale,
        StatusCode::FORBIDDEN,
        "reauthentication_required",
        None,
    )
    .await;
    let fresh = Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
    let removed = app
        .call(Method::DELETE, &path, &fresh.access_token, None)
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let again = app
        .call(Method::DELETE, &path, &fresh.access_token, None)
        .await;
    assert_error(again, StatusCode::NOT_FOUND, "passkey_not_found", None).await;
    let start = start_sign_in(&app, Some("alice@example.com")).await;
    assert_eq!(start["publicKey"]["allowCredentials"], json!([]));
}

#[tokio::test]
async fn a_registration_answer_is_checked_and_used_once() {
    let app = passkey_app().await;
    let session = app.logged_in_user().await;
    let start = app
        .call_json(
            Method::POST,
            "/api/auth/passkeys/register/start",
            &session.access_token,
            Some(&json!({})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        start["publicKey"]["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    let options =
        serde_json::from_value(json!({"publicKey": start["publicKey"]})).expect("options");
    let mut key = SoftPasskey::new(true);
    let credential = key
        .do_registration(origin("http://localhost:6666"), options)
        .expect("registers");
    let body = json!({
        "challengeId": start["challengeId"],
        "credential": serde_json::to_value(&credential).expect("json"),
    });
    let refused = app
        .call(
            Method::POST,
            "/api/auth/passkeys/register/finish",
            &session.access_token,
            Some(&body),
        )
        .await;
    assert_error(
        refused,
        StatusCode::BAD_REQUEST,
        "passkey_registration_invalid",
        Some("Passkey registration failed: the ceremony ran on another origin"),
    )
    .await;
    let junk = app
        .call(
            Method::POST,
            "/api/auth/passkeys/register/finish",
            &session.access_token,
            Some(&json!({"challengeId": start["challengeId"], "credential": "x"})),
        )
        .await;
    assert_error(
        junk,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        Some("credential: expected an object"),
    )
    .await;
    let me: Value = app
        .me(&session.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["mfa"]["passkeys"], 0);
    // A name must read as it is: no direction overrides, no invisible marks.
    for name in ["evil\u{202E}gpj.exe", "a\u{200B}b", "tab\there"] {
        let refused = app
            .call(
                Method::POST,
                "/api/auth/passkeys/register/start",
                &session.access_token,
                Some(&json!({ "name": name })),
            )
            .await;
        assert_error(refused, StatusCode::BAD_REQUEST, "invalid_input", None).await;
    }
}

#[tokio::test]
async fn without_a_domain_passkeys_say_why_they_are_off() {
    let app =
        spawn_configured(|config| config.public_url = Some("http://10.0.0.5:5000".into())).await;
    let start = app
        .post_json("/api/auth/passkeys/login/start", &json!({}))
        .await;
    assert_eq!(start.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = start.json().await.expect("json");
    assert_eq!(body["code"], "passkeys_unavailable");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("domain name"),
        "{body}"
    );
    // The second steps say so too, whatever they are sent.
    let finish = app
        .post_json(
            "/api/auth/passkeys/login/finish",
            &json!({"challengeId": "x", "credential": {}}),
        )
        .await;
    assert_eq!(finish.status(), StatusCode::SERVICE_UNAVAILABLE);
}
