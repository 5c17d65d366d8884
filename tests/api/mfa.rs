//! TOTP as a second factor, with codes computed by totp-rs (independently
//! of latchkey's own wrapper) from the secret latchkey returns, at the
//! test server's manual clock: setup, confirmation, the login's second
//! step with each kind of code, replay, wrong codes, recovery codes,
//! removal, an administrator's reset, and what survives a password reset.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use latchkey::config::RateLimits;

use crate::helpers::{
    PASSWORD, Session, TestApp, assert_error, set_cookie, spawn_app, spawn_configured,
};
use crate::mail::Sink;

/// The authenticator app: codes of `secret` (base32) at any time.
struct App {
    totp: totp_rs::Totp,
}

impl App {
    fn new(secret: &str) -> App {
        let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
        let totp = totp_rs::Builder::new()
            .with_secret(bytes)
            .build()
            .expect("an RFC 6238 key");
        App { totp }
    }

    fn code(&self, time: u64) -> String {
        self.totp.generate(time).to_string()
    }
}

/// Sets up and confirms TOTP for `session`; returns the app and the
/// recovery codes.
async fn enrol(app: &TestApp, session: &Session) -> (App, Vec<String>) {
    let setup = app
        .call_json(
            Method::POST,
            "/api/auth/mfa/totp/setup",
            &session.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    let phone = App::new(setup["secret"].as_str().expect("secret"));
    let confirmed = app
        .call_json(
            Method::POST,
            "/api/auth/mfa/totp/confirm",
            &session.access_token,
            Some(&json!({"code": phone.code(app.clock.now())})),
            StatusCode::OK,
        )
        .await;
    let codes = confirmed["recoveryCodes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|code| code.as_str().expect("code").to_owned())
        .collect();
    (phone, codes)
}

/// The `mfaToken` of a password login that must answer `mfa_required`.
async fn password_step(app: &TestApp, email: &str) -> String {
    let response = app.login(email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        set_cookie(&response, "refresh_token").is_none(),
        "no refresh cookie before the second factor"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "mfa_required");
    assert!(body.get("accessToken").is_none());
    body["mfaToken"].as_str().expect("mfaToken").to_owned()
}

async fn verify(app: &TestApp, token: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/api/auth/mfa/verify",
        &json!({"mfaToken": token, "code": code}),
    )
    .await
}

async fn me(app: &TestApp, session: &Session) -> Value {
    app.me(&session.access_token)
        .await
        .json()
        .await
        .expect("json")
}

/// The token of the first password-reset mail to `address` (waiting up to
/// 10 s for it: notices may arrive before or after it).
async fn reset_token(sink: &Sink, address: &str) -> String {
    for _ in 0..200 {
        if let Some(token) = sink
            .to(address)
            .iter()
            .find(|mail| mail.subject() == "Reset your password")
            .and_then(|mail| mail.token())
        {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no reset mail to {address}: {:?}", sink.to(address));
}

/// Follows the reset link mailed to alice, sets a new password, and shows
/// that a login with it still asks for a code, which the app's next one
/// passes.
async fn reset_then_code(app: &TestApp, sink: &Sink, phone: &App) {
    let token = reset_token(sink, "alice@example.com").await;
    let done = app
        .post_json(
            "/api/auth/password-reset/confirm",
            &json!({"token": token, "newPassword": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let response = app
        .login("alice@example.com", "a brand new passphrase")
        .await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "mfa_required");
    next_step(app);
    let token = body["mfaToken"].as_str().expect("token");
    assert_eq!(
        verify(app, token, &phone.code(app.clock.now()))
            .await
            .status(),
        StatusCode::OK
    );
}

/// Moves the server's clock to the next TOTP step.
fn next_step(app: &TestApp) {
    app.clock.advance(Duration::from_secs(30));
}

#[tokio::test]
async fn totp_is_pending_until_confirmed_then_every_password_login_needs_a_code() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    assert_eq!(
        me(&app, &session).await["user"]["mfa"],
        json!({"totp": false, "passkeys": 0})
    );
    let setup = app
        .call(
            Method::POST,
            "/api/auth/mfa/totp/setup",
            &session.access_token,
            None,
        )
        .await;
    assert_eq!(setup.status(), StatusCode::OK);
    assert_eq!(setup.headers()["cache-control"], "no-store");
    let setup: Value = setup.json().await.expect("json");
    let secret = setup["secret"].as_str().expect("secret");
    let uri = setup["otpauthUri"].as_str().expect("uri");
    assert!(
        uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")),
        "{uri}"
    );
    assert!(uri.contains("alice%40example.com"), "{uri}");
    assert!(setup["qrSvg"].as_str().expect("svg").contains("<svg"));
    let phone = App::new(secret);

    // Pending: the password alone still logs in.
    Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
    let wrong = app
        .call(
            Method::POST,
            "/api/auth/mfa/totp/confirm",
            &session.access_token,
            Some(&json!({"code": "000000"})),
        )
        .await;
    assert_error(wrong, StatusCode::BAD_REQUEST, "mfa_invalid_code", None).await;
    let confirmed = app
        .call_json(
            Method::POST,
            "/api/auth/mfa/totp/confirm",
            &session.access_token,
            Some(&json!({"code": phone.code(app.clock.now())})),
            StatusCode::OK,
        )
        .await;
    let codes = confirmed["recoveryCodes"].as_array().expect("codes");
    assert_eq!(codes.len(), 10);
    assert_eq!(
        me(&app, &session).await["user"]["mfa"],
        json!({"totp": true, "passkeys": 0})
    );
    // A second setup is refused while one is on.
    let again = app
        .call(
            Method::POST,
            "/api/auth/mfa/totp/setup",
            &session.access_token,
            None,
        )
        .await;
    assert_error(again, StatusCode::CONFLICT, "mfa_already_enabled", None).await;

    let response = app.login("alice@example.com", PASSWORD).await;
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    let token = body["mfaToken"].as_str().expect("token").to_owned();
    // The code of the step the confirmation used is spent: the next one works.
    next_step(&app);
    let done = verify(&app, &token, &phone.code(app.clock.now())).await;
    let signed_in = Session::from_token_response(done).await;
    assert!(signed_in.device_token.is_some());
    assert_eq!(
        signed_in.access_claims()["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    // The session keeps its amr through a refresh, and lists it.
    let refreshed =
        Session::from_token_response(app.refresh_with(&signed_in.refresh_token).await).await;
    assert_eq!(
        refreshed.access_claims()["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    let sessions = app
        .call_json(
            Method::GET,
            "/api/auth/sessions",
            &refreshed.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    let current = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|listed| listed["current"] == true)
        .expect("current session")
        .clone();
    assert_eq!(current["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(session.access_claims()["amr"], json!(["pwd"]));

    let kinds = app.audit_kinds().await;
    for kind in ["totp_enabled", "mfa_challenged", "login_succeeded"] {
        assert!(kinds.iter().any(|seen| seen == kind), "{kind}: {kinds:?}");
    }
}

#[tokio::test]
async fn a_code_is_accepted_once_and_the_fifth_wrong_code_ends_the_mfa_token() {
    // Without rate limits: the token's own count is what stops the guessing.
    let app = spawn_configured(|config| config.limits = RateLimits::off()).await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    next_step(&app);
    let code = phone.code(app.clock.now());
    let first = password_step(&app, "alice@example.com").await;
    assert_eq!(verify(&app, &first, &code).await.status(), StatusCode::OK);
    // The same code again, in its window, on a new login: a replay.
    let second = password_step(&app, "alice@example.com").await;
    assert_error(
        verify(&app, &second, &code).await,
        StatusCode::UNAUTHORIZED,
        "mfa_invalid_code",
        Some("Wrong code, or one already used (an app code works once: wait for the next)"),
    )
    .await;
    // A used token is dead.
    assert_error(
        verify(&app, &first, &code).await,
        StatusCode::UNAUTHORIZED,
        "mfa_token_invalid",
        None,
    )
    .await;

    let third = password_step(&app, "alice@example.com").await;
    for _ in 0..5 {
        assert_error(
            verify(&app, &third, "123456").await,
            StatusCode::UNAUTHORIZED,
            "mfa_invalid_code",
            None,
        )
        .await;
    }
    next_step(&app);
    assert_error(
        verify(&app, &third, &phone.code(app.clock.now())).await,
        StatusCode::UNAUTHORIZED,
        "mfa_token_invalid",
        None,
    )
    .await;
    let unknown = verify(&app, "not-a-token", "123456").await;
    assert_error(unknown, StatusCode::UNAUTHORIZED, "mfa_token_invalid", None).await;
}

#[tokio::test]
async fn a_recovery_code_works_once_and_a_renewal_ends_the_old_set() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let (phone, codes) = enrol(&app, &session).await;
    let token = password_step(&app, "alice@example.com").await;
    // However it is typed.
    let shouted = codes[0].to_uppercase().replace('-', " ");
    let signed_in = Session::from_token_response(verify(&app, &token, &shouted).await).await;
    assert_eq!(
        signed_in.access_claims()["amr"],
        json!(["pwd", "otp", "mfa"])
    );
    let token = password_step(&app, "alice@example.com").await;
    assert_error(
        verify(&app, &token, &codes[0]).await,
        StatusCode::UNAUTHORIZED,
        "mfa_invalid_code",
        None,
    )
    .await;
    assert!(
        app.audit_events()
            .await
            .iter()
            .any(|event| event["kind"] == "recovery_code_used" && event["detail"] == "left=9")
    );

    next_step(&app);
    let renewed = app
        .call_json(
            Method::POST,
            "/api/auth/mfa/recovery-codes",
            &session.access_token,
            Some(&json!({"code": phone.code(app.clock.now())})),
            StatusCode::OK,
        )
        .await;
    let fresh = renewed["recoveryCodes"].as_array().expect("codes");
    assert_eq!(fresh.len(), 10);
    let token = password_step(&app, "alice@example.com").await;
    assert_error(
        verify(&app, &token, &codes[1]).await,
        StatusCode::UNAUTHORIZED,
        "mfa_invalid_code",
        None,
    )
    .await;
    let fresh_code = fresh[0].as_str().expect("code");
    assert_eq!(
        verify(&app, &token, fresh_code).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_mfa_token_dies_after_five_minutes_or_with_a_password_change() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    let token = password_step(&app, "alice@example.com").await;
    app.clock.advance(Duration::from_secs(301));
    assert_error(
        verify(&app, &token, &phone.code(app.clock.now())).await,
        StatusCode::UNAUTHORIZED,
        "mfa_token_invalid",
        None,
    )
    .await;

    let token = password_step(&app, "alice@example.com").await;
    let changed = app
        .change_password(&session.access_token, PASSWORD, "another long passphrase")
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    next_step(&app);
    assert_error(
        verify(&app, &token, &phone.code(app.clock.now())).await,
        StatusCode::UNAUTHORIZED,
        "mfa_token_invalid",
        None,
    )
    .await;
}

#[tokio::test]
async fn of_many_racing_uses_of_one_mfa_token_exactly_one_signs_in() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    next_step(&app);
    let token = password_step(&app, "alice@example.com").await;
    let code = phone.code(app.clock.now());
    let attempts = (0..12).map(|_| verify(&app, &token, &code));
    let answers = futures_util::future::join_all(attempts).await;
    let mut seen = Vec::new();
    for answer in answers {
        let status = answer.status();
        seen.push((status, answer.text().await.expect("body")));
    }
    let won = seen
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(won, 1, "{seen:?}");
    // The losers are refused: the token is used up (401), or, when they
    // overlap the winner long enough to be counted (on PostgreSQL they
    // do), the account's login limit of 10 a minute says so first (429).
    assert!(
        seen.iter().all(|(status, _)| *status == StatusCode::OK
            || *status == StatusCode::UNAUTHORIZED
            || *status == StatusCode::TOO_MANY_REQUESTS),
        "{seen:?}"
    );
}

#[tokio::test]
async fn removing_totp_takes_a_code_and_logins_are_password_only_again() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let (_, codes) = enrol(&app, &session).await;
    let wrong = app
        .call(
            Method::DELETE,
            "/api/auth/mfa/totp",
            &session.access_token,
            Some(&json!({"code": "000000"})),
        )
        .await;
    assert_error(wrong, StatusCode::BAD_REQUEST, "mfa_invalid_code", None).await;
    let removed = app
        .call(
            Method::DELETE,
            "/api/auth/mfa/totp",
            &session.access_token,
            Some(&json!({"code": codes[3]})),
        )
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&app, &session).await["user"]["mfa"]["totp"], false);
    let login = Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
    assert_eq!(login.access_claims()["amr"], json!(["pwd"]));
    let again = app
        .call(
            Method::DELETE,
            "/api/auth/mfa/totp",
            &session.access_token,
            Some(&json!({"code": codes[4]})),
        )
        .await;
    assert_error(again, StatusCode::CONFLICT, "mfa_not_enabled", None).await;
    assert!(
        app.audit_kinds()
            .await
            .iter()
            .any(|kind| kind == "totp_disabled")
    );
}

#[tokio::test]
async fn an_administrator_resets_a_users_factors_and_the_user_is_told() {
    let sink = Sink::start();
    let url = sink.url();
    let app = spawn_configured(move |config| config.smtp_url = Some(url)).await;
    let root = app
        .logged_in_with_roles("root", "root@example.com", &["admin", "user"])
        .await;
    let session = app.logged_in_user().await;
    enrol(&app, &session).await;
    let mails = sink.wait_for("alice@example.com", 2).await;
    assert!(
        mails
            .iter()
            .any(|mail| mail.subject() == "Two-step login is on"),
        "{mails:?}"
    );
    let shown = app
        .call_json(
            Method::GET,
            &format!("/api/admin/users/{}", session.user_id),
            &root.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(shown["mfa"], json!({"totp": true, "passkeys": 0}));
    assert_eq!(shown["recoveryCodesLeft"], 10);
    assert_eq!(shown["wrongCodesInARow"], 0);

    let reset = app
        .call(
            Method::DELETE,
            &format!("/api/admin/users/{}/mfa", session.user_id),
            &root.access_token,
            None,
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let mails = sink.wait_for("alice@example.com", 3).await;
    assert!(
        mails
            .iter()
            .any(|mail| mail.subject() == "Your second factors were reset"),
        "{mails:?}"
    );
    assert!(
        app.audit_kinds()
            .await
            .iter()
            .any(|kind| kind == "mfa_reset")
    );
    // The reset ended alice's sessions; and it is not for her to do.
    app.assert_session_revoked(&session.access_token).await;
    let alice = Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
    let refused = app
        .call(
            Method::DELETE,
            &format!("/api/admin/users/{}/mfa", root.user_id),
            &alice.access_token,
            None,
        )
        .await;
    assert_error(refused, StatusCode::FORBIDDEN, "forbidden", None).await;
}

#[tokio::test]
async fn a_password_reset_by_email_keeps_the_second_factor() {
    let sink = Sink::start();
    let url = sink.url();
    let app = spawn_configured(move |config| config.smtp_url = Some(url)).await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    let asked = app
        .post_json(
            "/api/auth/password-reset",
            &json!({"email": "alice@example.com"}),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    reset_then_code(&app, &sink, &phone).await;
}

#[tokio::test]
async fn wrong_codes_count_against_the_accounts_login_limit() {
    let app = spawn_configured(|config| {
        config.limits.login_account = vec!["3/1h".parse().expect("rate")];
    })
    .await;
    let session = app.logged_in_user().await;
    enrol(&app, &session).await;
    // The login above and the password step count too: the limit bites
    // within a few codes.
    let token = password_step(&app, "alice@example.com").await;
    let mut limited = false;
    for _ in 0..5 {
        let answer = verify(&app, &token, "123456").await;
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(limited, "the code step is rate-limited");
}

#[tokio::test]
async fn a_stolen_access_token_alone_cannot_add_a_factor() {
    let app = passkey_ready_app().await;
    let session = app.logged_in_user().await;
    // Eleven minutes on, refreshed: the token is fresh, the sign-in is not.
    app.clock.advance(Duration::from_secs(11 * 60));
    let refreshed =
        Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    for (path, body) in [
        ("/api/auth/mfa/totp/setup", None),
        ("/api/auth/passkeys/register/start", Some(json!({}))),
    ] {
        let refused = app
            .call(Method::POST, path, &refreshed.access_token, body.as_ref())
            .await;
        assert_error(
            refused,
            StatusCode::FORBIDDEN,
            "reauthentication_required",
            Some("This needs a recent sign-in; log in again first"),
        )
        .await;
    }
    let fresh = Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
    enrol(&app, &fresh).await;
}

/// A server whose passkeys work (its public URL has a domain name).
async fn passkey_ready_app() -> TestApp {
    spawn_configured(|config| config.public_url = Some("http://localhost:5000".into())).await
}

#[tokio::test]
async fn a_run_of_wrong_codes_is_told_then_locks_the_factor_until_a_reset() {
    let sink = Sink::start();
    let url = sink.url();
    let app = spawn_configured(move |config| {
        config.smtp_url = Some(url);
        config.limits = RateLimits::off();
    })
    .await;
    let root = app
        .logged_in_with_roles("root", "root@example.com", &["admin", "user"])
        .await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    for attempt in 1..=100 {
        let wrong = app
            .call(
                Method::DELETE,
                "/api/auth/mfa/totp",
                &session.access_token,
                Some(&json!({"code": "000000"})),
            )
            .await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST, "attempt {attempt}");
    }
    let mails = sink.wait_for("alice@example.com", 3).await;
    let subjects: Vec<String> = mails.iter().map(|mail| mail.subject()).collect();
    assert!(
        subjects
            .iter()
            .any(|subject| subject == "Someone is trying codes on your account"),
        "{subjects:?}"
    );
    // Locked: even the right code is refused, and so is the password step.
    next_step(&app);
    let right = app
        .call(
            Method::DELETE,
            "/api/auth/mfa/totp",
            &session.access_token,
            Some(&json!({"code": phone.code(app.clock.now())})),
        )
        .await;
    assert_error(right, StatusCode::FORBIDDEN, "mfa_locked", None).await;
    assert_error(
        app.login("alice@example.com", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "mfa_locked",
        None,
    )
    .await;
    let mails = sink.wait_for("alice@example.com", 4).await;
    assert!(
        mails
            .iter()
            .any(|mail| mail.subject() == "Two-step login is locked")
    );
    // A password change made while signed in does not open it: a stolen
    // session must not buy another hundred guesses.
    let changed = app
        .change_password(&session.access_token, PASSWORD, "another long passphrase")
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_error(
        app.login("alice@example.com", "another long passphrase")
            .await,
        StatusCode::FORBIDDEN,
        "mfa_locked",
        None,
    )
    .await;

    // An administrator's reset unlocks it (and ends the user's sessions).
    let reset = app
        .call(
            Method::DELETE,
            &format!("/api/admin/users/{}/mfa", session.user_id),
            &root.access_token,
            None,
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    app.assert_session_revoked(&session.access_token).await;
    let event = app
        .audit_events()
        .await
        .into_iter()
        .find(|event| event["kind"] == "mfa_reset")
        .expect("mfa_reset event");
    let detail = event["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with(&format!(
            "by={}; totp=true; passkeys=0; revoked=",
            root.user_id
        )),
        "{detail}"
    );
    Session::from_token_response(
        app.login("alice@example.com", "another long passphrase")
            .await,
    )
    .await;
}

#[tokio::test]
async fn a_password_reset_by_email_unlocks_a_locked_factor() {
    let sink = Sink::start();
    let url = sink.url();
    let app = spawn_configured(move |config| {
        config.smtp_url = Some(url);
        config.limits = RateLimits::off();
    })
    .await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    for _ in 0..100 {
        app.call(
            Method::POST,
            "/api/auth/mfa/recovery-codes",
            &session.access_token,
            Some(&json!({"code": "000000"})),
        )
        .await;
    }
    assert_error(
        app.login("alice@example.com", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "mfa_locked",
        None,
    )
    .await;
    app.post_json(
        "/api/auth/password-reset",
        &json!({"email": "alice@example.com"}),
    )
    .await;
    // The factor stays, unlocked: the new password asks for a code again.
    reset_then_code(&app, &sink, &phone).await;
}

#[tokio::test]
async fn over_http2_both_steps_of_a_login_work_with_streamed_bodies() {
    use futures_util::stream;

    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let (phone, _) = enrol(&app, &session).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    // Bodies in pieces, without Content-Length (and HTTP/2 has no Host).
    let streamed = |pieces: Vec<String>| {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = pieces
            .into_iter()
            .map(|piece| Ok(piece.into_bytes()))
            .collect();
        reqwest::Body::wrap_stream(stream::iter(pieces))
    };
    let asked = client
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(streamed(vec![
            r#"{"email":"alice@example.com","#.into(),
            format!(r#""password":"{PASSWORD}"}}"#),
        ]))
        .send()
        .await
        .expect("request");
    assert_eq!(asked.version(), reqwest::Version::HTTP_2);
    assert_eq!(asked.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(asked.headers()["cache-control"], "no-store");
    let body: Value = asked.json().await.expect("json");
    let token = body["mfaToken"].as_str().expect("mfaToken").to_owned();
    next_step(&app);
    let done = client
        .post(app.url("/api/auth/mfa/verify"))
        .header("content-type", "application/json")
        .body(streamed(vec![
            format!(r#"{{"mfaToken":"{token}","#),
            format!(r#""code":"{}"}}"#, phone.code(app.clock.now())),
        ]))
        .send()
        .await
        .expect("request");
    let signed_in = Session::from_token_response(done).await;
    assert_eq!(
        signed_in.access_claims()["amr"],
        json!(["pwd", "otp", "mfa"])
    );
}
