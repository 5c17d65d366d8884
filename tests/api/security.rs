//! Attacks on the edges of the flow: brute force and floods (rate limits),
//! spoofed client addresses, weak passwords, cross-site requests, plain
//! HTTP where TLS belongs, and the audit trail those attacks leave.

use std::time::Duration;

use latchkey::AuditKind;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Options, PASSWORD, Session, TestApp, assert_error, header, spawn_app, spawn_app_with,
};

async fn assert_rate_limited(response: reqwest::Response) {
    let retry_after = header(&response, "retry-after");
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is whole seconds"));
    assert!(seconds >= 1, "Retry-After {seconds}");
    assert_error(
        response,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        None,
    )
    .await;
}

#[tokio::test]
async fn login_attempts_from_one_ip_beyond_the_limit_get_429_with_retry_after() {
    let app = spawn_app_with(Options {
        tweak: |config| config.limits.login_ip = "3/1h".parse().expect("rate"),
        ..Options::default()
    })
    .await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    for n in 0..3 {
        let email = format!("nobody{n}@example.com");
        assert_eq!(
            app.login(&email, PASSWORD).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Even the right password waits: the limit is on attempts, not failures.
    assert_rate_limited(app.login("alice@example.com", PASSWORD).await).await;
    assert!(app.audit_kinds().await.contains(&"rate_limited".to_owned()));
}

#[tokio::test]
async fn failed_logins_for_one_account_are_throttled_without_locking_out_others() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            config.limits.login_account =
                vec!["2/1m".parse().expect("rate"), "4/1h".parse().expect("rate")];
        },
        ..Options::default()
    })
    .await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    app.register("bob", "bob@example.com", PASSWORD).await;
    for _ in 0..2 {
        assert_eq!(
            app.login("alice@example.com", "guess guess guess")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_rate_limited(app.login("alice@example.com", "guess guess guess").await).await;
    // Case and spacing do not make a new account key.
    assert_rate_limited(app.login(" ALICE@example.com", "guess guess guess").await).await;
    assert_eq!(
        app.login("bob@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn strangers_guessing_a_password_cannot_throttle_the_owner_on_a_known_device() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            config.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
            config.limits.login_account =
                vec!["3/1m".parse().expect("rate"), "5/1h".parse().expect("rate")];
        },
        ..Options::default()
    })
    .await;
    let owner = app.logged_in_user().await;
    let device = owner
        .device_token
        .clone()
        .expect("a login sets a device cookie");
    assert!(
        owner.set_cookie.contains("refresh_token="),
        "the refresh cookie is still set"
    );
    // Twenty addresses guess alice's password until the account is throttled.
    let mut refused = 0;
    for n in 0..20 {
        for _ in 0..2 {
            let guess = app
                .login_from(
                    "alice@example.com",
                    "guess guess guess",
                    None,
                    &format!("203.0.113.{n}"),
                )
                .await;
            if guess.status() == StatusCode::TOO_MANY_REQUESTS {
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 30,
        "the account's shared tiers throttle strangers ({refused})"
    );
    // A client the account has never seen is throttled with them…
    assert_rate_limited(
        app.login_from("alice@example.com", PASSWORD, None, "198.51.100.1")
            .await,
    )
    .await;
    // …but the owner's known device logs in, again and again.
    for _ in 0..3 {
        let login = app
            .login_from("alice@example.com", PASSWORD, Some(&device), "198.51.100.2")
            .await;
        Session::from_token_response(login).await;
    }
    // A device token is bound to its account.
    app.register("bob", "bob@example.com", PASSWORD).await;
    let bob = Session::from_token_response(app.login("bob@example.com", PASSWORD).await).await;
    assert_rate_limited(
        app.login_from(
            "alice@example.com",
            PASSWORD,
            bob.device_token.as_deref(),
            "198.51.100.3",
        )
        .await,
    )
    .await;
    // The owner, holding a token, can still change the password.
    let changed = app
        .change_password(&owner.access_token, PASSWORD, "a fresh passphrase 2027")
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
}

#[tokio::test]
async fn registrations_and_refreshes_are_limited_per_ip() {
    let app = spawn_app_with(Options {
        tweak: |config| {
            config.limits.register_ip = "2/1h".parse().expect("rate");
            config.limits.refresh_ip = "1/1h".parse().expect("rate");
        },
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    app.register("bob", "bob@example.com", PASSWORD).await;
    assert_rate_limited(app.register("carol", "carol@example.com", PASSWORD).await).await;
    let rotated =
        Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    assert_rate_limited(app.refresh_with(&rotated.refresh_token).await).await;
}

#[tokio::test]
async fn with_rate_limits_off_many_failed_logins_are_all_answered() {
    let app = spawn_app_with(Options {
        tweak: |config| config.limits = latchkey::config::RateLimits::off(),
        ..Options::default()
    })
    .await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    for _ in 0..40 {
        assert_eq!(
            app.login("alice@example.com", "guess guess guess")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

async fn login_from(app: &TestApp, forwarded_for: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/login"))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("request")
}

async fn last_login_ip(app: &TestApp) -> Option<String> {
    app.core
        .audit_events(0, None, usize::MAX)
        .await
        .expect("audit")
        .into_iter()
        .rev()
        .find(|event| event.kind == AuditKind::LoginSucceeded)
        .and_then(|event| event.ip)
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(Options {
        tweak: |config| config.limits.login_ip = "2/1h".parse().expect("rate"),
        ..Options::default()
    })
    .await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    assert_eq!(
        login_from(&app, "203.0.113.7").await.status(),
        StatusCode::OK
    );
    assert_eq!(last_login_ip(&app).await.as_deref(), Some("127.0.0.1"));
    // A new made-up address per attempt does not escape the per-IP limit.
    assert_eq!(
        login_from(&app, "203.0.113.8").await.status(),
        StatusCode::OK
    );
    assert_rate_limited(login_from(&app, "203.0.113.9").await).await;
}

#[tokio::test]
async fn a_trusted_proxy_is_believed_about_the_client_address() {
    let app = spawn_app_with(Options {
        tweak: |config| config.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")],
        ..Options::default()
    })
    .await;
    app.register("alice", "alice@example.com", PASSWORD).await;
    let login = login_from(&app, "6.6.6.6, 203.0.113.7").await;
    let session = Session::from_token_response(login).await;
    assert_eq!(last_login_ip(&app).await.as_deref(), Some("203.0.113.7"));
    let record = app
        .core
        .refresh_record(&session.refresh_token)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(record.client.ip, Some([203, 0, 113, 7].into()));
}

#[tokio::test]
async fn common_and_personal_passwords_are_refused_as_weak_password() {
    let app = spawn_app().await;
    let cases = [
        ("password", "too common"),
        ("12345678", "too common"),
        ("iloveyou", "too common"),
        ("zyxwvutsrqpo", "pattern"),
        ("my white RABBIT 42", "username"),
        ("wonderland.alice.w 1", "email"),
    ];
    for (password, reason) in cases {
        let response = app
            .register("rabbit", "wonderland.alice.w@example.com", password)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{password}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["code"], "weak_password", "{password}");
        let message = body["message"].as_str().expect("message");
        assert!(message.contains(reason), "{password}: {message}");
    }
    assert_eq!(
        app.register("rabbit", "wonderland.alice.w@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED,
        "nothing was half-created by the refusals"
    );
}

async fn refresh_from(
    app: &TestApp,
    token: &str,
    header_name: &str,
    value: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/api/auth/refresh"))
        .header("Cookie", format!("refresh_token={token}"))
        .header(header_name, value)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn cookie_requests_from_a_foreign_origin_are_rejected_and_lose_nothing() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let other_scheme = format!("https://{}", app.address);
    for (name, value) in [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Referer", "https://evil.example/page"),
        // Same host and port, another scheme: another origin (RFC 6454).
        ("Origin", other_scheme.as_str()),
    ] {
        assert_error(
            refresh_from(&app, &session.refresh_token, name, value).await,
            StatusCode::FORBIDDEN,
            "csrf_rejected",
            Some("Cross-site request rejected"),
        )
        .await;
    }
    let logout = app
        .client
        .post(app.url("/api/auth/logout"))
        .header("Cookie", format!("refresh_token={}", session.refresh_token))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_error(logout, StatusCode::FORBIDDEN, "csrf_rejected", None).await;
    // The session survived both attempts; the same origin (Swagger UI) works.
    let same_origin = format!("http://{}", app.address);
    let refreshed = refresh_from(&app, &session.refresh_token, "Origin", &same_origin).await;
    Session::from_token_response(refreshed).await;
}

#[tokio::test]
async fn an_allowed_spa_origin_gets_cors_with_credentials_and_passes_csrf() {
    let app = spawn_app_with(Options {
        tweak: |config| config.cors_origins = vec!["https://app.example".into()],
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/api/auth/refresh"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("request");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        header(&preflight, "access-control-allow-origin"),
        "https://app.example"
    );
    assert_eq!(
        header(&preflight, "access-control-allow-credentials"),
        "true"
    );

    let refreshed = refresh_from(
        &app,
        &session.refresh_token,
        "Origin",
        "https://app.example",
    )
    .await;
    assert_eq!(
        header(&refreshed, "access-control-allow-origin"),
        "https://app.example"
    );
    let rotated = Session::from_token_response(refreshed).await;
    let foreign = refresh_from(
        &app,
        &rotated.refresh_token,
        "Origin",
        "https://evil.example",
    )
    .await;
    assert_eq!(header(&foreign, "access-control-allow-origin"), "");
    assert_error(foreign, StatusCode::FORBIDDEN, "csrf_rejected", None).await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_no_hsts_over_plain_http() {
    let app = spawn_app().await;
    for response in [
        app.get("/").await,
        app.get("/nowhere").await,
        app.me("x").await,
    ] {
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "referrer-policy"), "no-referrer");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
        assert_eq!(header(&response, "strict-transport-security"), "");
    }
}

#[tokio::test]
async fn the_sweeper_deletes_audit_events_past_the_retention() {
    let app = spawn_app_with(Options {
        tweak: |config| config.audit_retention = Duration::from_secs(3600),
        ..Options::default()
    })
    .await;
    app.logged_in_user().await;
    let before = app.audit_kinds().await;
    assert_eq!(before, ["register", "verification_sent", "login_succeeded"]);
    app.clock.advance(Duration::from_secs(1800));
    assert_eq!(
        app.core.sweep_expired().await.expect("sweep").audit_events,
        0
    );
    app.clock.advance(Duration::from_secs(1801));
    assert_eq!(
        app.core.sweep_expired().await.expect("sweep").audit_events,
        3
    );
    assert!(app.audit_kinds().await.is_empty());
}

#[tokio::test]
async fn audit_events_record_who_where_and_why_but_never_a_password() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    app.login("alice@example.com", "not the password").await;
    app.login("nobody@example.com", "not the password").await;
    let events = app.core.audit_events(0, None, 100).await.expect("audit");
    let failures: Vec<_> = events
        .iter()
        .filter(|event| event.kind == AuditKind::LoginFailed)
        .collect();
    assert_eq!(failures.len(), 2);
    assert_eq!(
        failures[0].user_id.as_deref(),
        Some(session.user_id.as_str())
    );
    assert_eq!(failures[0].detail.as_deref(), Some("wrong_password"));
    assert_eq!(failures[1].user_id, None);
    assert_eq!(failures[1].detail.as_deref(), Some("unknown_email"));
    let text = serde_json::to_string(&events).expect("json");
    assert!(!text.contains("not the password") && !text.contains(PASSWORD));
    let only_alice = app
        .core
        .audit_events(0, Some(&session.user_id), 100)
        .await
        .expect("audit");
    assert!(
        only_alice
            .iter()
            .all(|event| event.user_id.as_deref() == Some(session.user_id.as_str()))
    );
}
