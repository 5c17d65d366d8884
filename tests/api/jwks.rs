//! Public-key access tokens as another service sees them: it fetches the
//! discovery document and the JWKS over HTTP and verifies latchkey's tokens
//! with an independent JOSE implementation (jwt-compact, not jsonwebtoken).
//! Also: key rotation, and attacks on the key selection.

use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey};
use jwt_compact::alg::{Ed25519, Es256};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{AlgorithmExt, TimeOptions, UntrustedToken};
use latchkey::config::SigningAlg;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    Options, Session, TestApp, assert_error, spawn_app, spawn_app_with, spawn_on, test_config,
    token_header,
};

/// What a separate service does: discovery, then the JWKS, by URL.
async fn fetch_jwks(app: &TestApp) -> Value {
    let discovery: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .expect("discovery json");
    assert_eq!(discovery["issuer"], "latchkey");
    let jwks_uri = discovery["jwks_uri"].as_str().expect("jwks_uri");
    assert_eq!(jwks_uri, app.url("/.well-known/jwks.json"));
    let response = app.client.get(jwks_uri).send().await.expect("jwks");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("jwks json")
}

/// The JWK whose `kid` the token names.
fn key_for(jwks: &Value, token: &str) -> Value {
    let kid = crate::helpers::jwt_part(token, 0)["kid"].clone();
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["kid"] == kid)
        .cloned()
        .unwrap_or_else(|| panic!("no key {kid} in {jwks}"))
}

/// Time options on the test server's clock.
fn on_clock(app: &TestApp) -> TimeOptions<impl Fn() -> chrono::DateTime<chrono::Utc>> {
    let now = app.clock.now() as i64;
    TimeOptions::new(chrono::Duration::seconds(0), move || {
        chrono::DateTime::from_timestamp(now, 0).expect("time")
    })
}

/// Verifies an EdDSA access token with jwt-compact and the JWK alone.
fn verify_eddsa(app: &TestApp, jwk: &Value, token: &str) -> Result<Value, String> {
    let jwk: JsonWebKey<'_> = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
    let key = ed25519_dalek::VerifyingKey::try_from(&jwk).map_err(|e| e.to_string())?;
    let untrusted = UntrustedToken::new(token).map_err(|e| e.to_string())?;
    let verified = Ed25519
        .validator::<Value>(&key)
        .validate(&untrusted)
        .map_err(|e| e.to_string())?;
    verified
        .claims()
        .validate_expiration(&on_clock(app))
        .map_err(|e| e.to_string())?;
    Ok(verified.claims().custom.clone())
}

#[tokio::test]
async fn another_service_verifies_an_eddsa_token_with_only_the_jwks() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let header = session.access_header();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    let jwks = fetch_jwks(&app).await;
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);
    let jwk = key_for(&jwks, &session.access_token);
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(
        (jwk["alg"].as_str(), jwk["use"].as_str()),
        (Some("EdDSA"), Some("sig"))
    );
    assert!(jwk.get("d").is_none(), "no private part is published");

    let claims = verify_eddsa(&app, &jwk, &session.access_token).expect("verified");
    assert_eq!(claims["sub"], session.user_id);
    assert_eq!(claims["iss"], "latchkey");
    assert_eq!(claims["roles"], json!(["user"]));

    // A changed claim breaks the signature for the other library too.
    let parts: Vec<&str> = session.access_token.split('.').collect();
    let mut forged_claims = claims.clone();
    forged_claims["roles"] = json!(["admin"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged_claims.to_string()
        ),
        parts[2]
    );
    assert!(verify_eddsa(&app, &jwk, &forged).is_err());
}

#[tokio::test]
async fn another_service_verifies_an_es256_token_with_only_the_jwks() {
    let app = spawn_app_with(Options {
        tweak: |config| config.signing_alg = Some(SigningAlg::Es256),
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    assert_eq!(session.access_header()["alg"], "ES256");
    let jwks = fetch_jwks(&app).await;
    let jwk = key_for(&jwks, &session.access_token);
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert!(jwk["y"].is_string());
    let jwk: JsonWebKey<'_> = serde_json::from_value(jwk).expect("jwk");
    let key = p256::ecdsa::VerifyingKey::try_from(&jwk).expect("P-256 key");
    let untrusted = UntrustedToken::new(&session.access_token).expect("token");
    let verified = Es256
        .validator::<Value>(&key)
        .validate(&untrusted)
        .expect("verified");
    verified
        .claims()
        .validate_expiration(&on_clock(&app))
        .expect("not expired");
    assert_eq!(verified.claims().custom["sub"], session.user_id);
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_a_jwt_secret_tokens_stay_hs256_and_the_jwks_is_empty() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            config.jwt_secret = Some(latchkey::Secret::new(
                "a-shared-secret-of-at-least-32-bytes!",
            ));
        },
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    let header = session.access_header();
    assert_eq!(header["alg"], "HS256");
    assert!(header["kid"].is_string(), "every token carries a kid");
    assert_eq!(fetch_jwks(&app).await, json!({"keys": []}));
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_kid() {
    let app = spawn_app().await;
    let before = app.logged_in_user().await;
    let old_kid = before.access_kid();
    let (dir, clock) = (app.data_dir.clone(), app.clock.clone());
    let temp = app.stop().await;
    let offline = latchkey::Latchkey::open_offline_with_clock(
        test_config(&dir, &Options::default()),
        clock.clone(),
    )
    .await
    .expect("offline");
    let rotated = offline
        .rotate_signing_key(Some(SigningAlg::EdDsa))
        .await
        .expect("rotate");
    assert_eq!(rotated.retired.map(|key| key.kid), Some(old_kid.clone()));
    drop(offline);

    let app = spawn_on(&dir, &Options::default(), clock.clone()).await;
    assert_eq!(
        app.me(&before.access_token).await.status(),
        StatusCode::OK,
        "old token still valid"
    );
    let after = Session::from_token_response(
        app.login("alice@example.com", crate::helpers::PASSWORD)
            .await,
    )
    .await;
    assert_ne!(after.access_kid(), old_kid);
    let jwks = fetch_jwks(&app).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(
        kids,
        [after.access_kid().as_str(), old_kid.as_str()],
        "active key first"
    );
    verify_eddsa(
        &app,
        &key_for(&jwks, &before.access_token),
        &before.access_token,
    )
    .expect("old verifies");
    verify_eddsa(
        &app,
        &key_for(&jwks, &after.access_token),
        &after.access_token,
    )
    .expect("new verifies");

    // Once every token of the old key has expired, it is no longer published…
    app.clock.advance(Duration::from_secs(900 + 6));
    let jwks = fetch_jwks(&app).await;
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);
    // …and the next start prunes it from the key file.
    app.stop().await;
    let app = spawn_on(&dir, &Options::default(), clock).await;
    app.stop().await;
    let offline = latchkey::Latchkey::open_offline(test_config(&dir, &Options::default()))
        .await
        .expect("offline");
    assert_eq!(offline.signing_keys().await.expect("keys").len(), 1);
    drop(temp);
}

#[tokio::test]
async fn key_confusion_and_foreign_keys_are_refused() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let kid = session.access_kid();
    let claims = session.access_claims();
    let jwks = fetch_jwks(&app).await;
    let public_x = key_for(&jwks, &session.access_token)["x"]
        .as_str()
        .expect("x")
        .to_owned();

    // HS256 keyed with the published public key, under the real kid.
    let hmac = token_header(Algorithm::HS256, "at+jwt", Some(&kid));
    for secret in [public_x.as_bytes().to_vec(), base64_url(&public_x)] {
        let token =
            jsonwebtoken::encode(&hmac, &claims, &EncodingKey::from_secret(&secret)).expect("sign");
        assert_error(
            app.me(&token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            None,
        )
        .await;
    }

    // A well-formed EdDSA token from someone else's key, claiming our kid.
    let stranger = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: [7u8; 32],
        public_key: None,
    }
    .to_pkcs8_der()
    .expect("der");
    let eddsa = token_header(Algorithm::EdDSA, "at+jwt", Some(&kid));
    let token = jsonwebtoken::encode(
        &eddsa,
        &claims,
        &EncodingKey::from_ed_der(stranger.as_bytes()),
    )
    .expect("sign");
    assert_error(
        app.me(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        None,
    )
    .await;

    // The real key still works, so the refusals above are meaningful.
    let genuine = app.mint_access(eddsa, &claims).await;
    assert_eq!(app.me(&genuine).await.status(), StatusCode::OK);
}

fn base64_url(text: &str) -> Vec<u8> {
    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text).expect("base64")
}
