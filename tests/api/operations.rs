//! What an operator watches: liveness and readiness, and the request id
//! every answer carries.

use latchkey::{Config, Latchkey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, spawn_app, spawn_app_with};

#[tokio::test]
async fn liveness_and_readiness_answer_json() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.expect("json"),
        json!({"status": "ok"})
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        ready.json::<Value>().await.expect("json"),
        json!({"status": "ready"})
    );
}

#[tokio::test]
async fn a_core_opened_offline_is_not_ready_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let core = Latchkey::open_offline(Config::with_data_dir(dir.path()))
        .await
        .expect("opens");
    let reason = core.ready().await.expect_err("offline").to_string();
    assert!(reason.contains("offline"), "{reason}");
}

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("every answer carries a request id")
        .to_str()
        .expect("ascii")
        .to_owned()
}

async fn get_with_id(url: &str, id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("x-request-id", id)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn every_answer_carries_a_new_request_id_unless_a_trusted_proxy_sent_one() {
    let app = spawn_app().await;
    // Not from a trusted proxy: the client's own id is not believed.
    let first = request_id(&get_with_id(&app.url("/api/profile/me"), "chosen-by-client").await);
    let second = request_id(&app.get("/nowhere").await);
    assert_ne!(first, "chosen-by-client");
    assert_ne!(first, second, "each request gets its own id");
    drop(app);

    let behind_proxy = spawn_app_with(Options {
        tweak: |config| config.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")],
        ..Options::default()
    })
    .await;
    let url = behind_proxy.url("/healthz");
    assert_eq!(
        request_id(&get_with_id(&url, "edge-42.7:a_b").await),
        "edge-42.7:a_b"
    );
    // An id the log could not hold safely is replaced.
    for odd in [
        "has space".to_owned(),
        "x".repeat(129),
        "new\u{2028}line".to_owned(),
    ] {
        if let Ok(response) = reqwest::Client::new()
            .get(&url)
            .header("x-request-id", odd.clone())
            .send()
            .await
        {
            assert_ne!(request_id(&response), odd);
        }
    }
}

/// The value of the sample `line_start` (a metric name with its labels) in
/// a scrape, if present.
fn sample(scrape: &str, line_start: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_logins_refreshes_and_sessions_and_hold_no_secret() {
    let app = spawn_app().await;
    let session = app.logged_in("metrics", "metrics@example.com").await;
    assert_eq!(
        app.login("metrics@example.com", "not the password")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let rotated = app.refresh_with(&session.refresh_token).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    // Presented again within the grace: the same successor (raced).
    assert_eq!(
        app.refresh_with(&session.refresh_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.refresh_with("not-a-token").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
    assert_eq!(
        app.get("/api/users/someone/x").await.status(),
        StatusCode::NOT_FOUND
    );

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/openmetrics-text"),
    );
    let scrape = response.text().await.expect("text");
    let expect = |line_start: &str, value: f64| {
        assert_eq!(
            sample(&scrape, line_start),
            Some(value),
            "{line_start} in\n{scrape}"
        );
    };
    expect(r#"latchkey_logins_total{outcome="succeeded"}"#, 1.0);
    expect(r#"latchkey_logins_total{outcome="wrong_credentials"}"#, 1.0);
    expect(r#"latchkey_refreshes_total{outcome="rotated"}"#, 1.0);
    expect(r#"latchkey_refreshes_total{outcome="raced"}"#, 1.0);
    expect(r#"latchkey_refreshes_total{outcome="refused"}"#, 1.0);
    expect("latchkey_sessions_live", 1.0);
    expect(
        r#"latchkey_http_requests_total{route="/api/profile/me",method="GET",status="200"}"#,
        1.0,
    );
    expect(
        r#"latchkey_http_requests_total{route="(none)",method="GET",status="404"}"#,
        1.0,
    );
    expect(
        r#"latchkey_http_request_duration_seconds_count{route="/api/auth/login"}"#,
        2.0,
    );
    assert!(
        sample(&scrape, "latchkey_password_hash_duration_seconds_count").is_some_and(|n| n >= 2.0)
    );
    if app.core.backend() == "sled" {
        // (PostgreSQL's commits are durable by themselves: no grouped flush.)
        assert!(sample(&scrape, "latchkey_db_flush_batch_size_count").is_some_and(|n| n >= 1.0));
    }
    assert!(scrape.contains("latchkey_build_info{version="), "{scrape}");
    for secret in [
        session.access_token.as_str(),
        session.refresh_token.as_str(),
        "metrics@example.com",
        "127.0.0.1",
        "/api/users/someone",
    ] {
        assert!(!scrape.contains(secret), "{secret} in the metrics");
    }

    // Logging out ends the one live session.
    assert_eq!(
        app.logout_with(Some(&session.refresh_token)).await.status(),
        StatusCode::OK
    );
    let scrape = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(
        sample(&scrape, "latchkey_sessions_live"),
        Some(0.0),
        "{scrape}"
    );
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_by_rule() {
    let app = spawn_app_with(Options {
        tweak: |config| config.limits.login_ip = "1/1h".parse().expect("rate"),
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        app.login("nobody@example.com", "whatever password").await;
    }
    let scrape = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(
        sample(&scrape, r#"latchkey_rate_limited_total{rule="login/ip"}"#),
        Some(2.0),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, r#"latchkey_logins_total{outcome="throttled"}"#),
        Some(2.0),
        "{scrape}"
    );
}

#[tokio::test]
async fn the_sweeper_counts_what_it_removes_and_recounts_live_sessions() {
    let app = spawn_app().await;
    app.logged_in("swept", "swept@example.com").await;
    // Past the refresh token's lifetime (7 days): the session has expired.
    app.clock
        .advance(std::time::Duration::from_secs(8 * 86_400));
    let core = app.core.clone();
    let swept = (
        core.sweep_expired().await.expect("sweeps"),
        core.count_live_sessions().await.expect("counts"),
    );
    assert_eq!(swept.0.sessions, 1);
    assert_eq!(swept.1, 0);
    let scrape = app.get("/metrics").await.text().await.expect("text");
    assert_eq!(
        sample(&scrape, "latchkey_sweeps_total"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, r#"latchkey_swept_records_total{kind="session"}"#),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "latchkey_sessions_live"),
        Some(0.0),
        "{scrape}"
    );
}

#[tokio::test]
async fn metrics_off_means_no_metrics_endpoint() {
    let app = spawn_app_with(Options {
        tweak: |config| config.metrics = latchkey::config::Switch::Off,
        ..Options::default()
    })
    .await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["code"], "not_found");
}
