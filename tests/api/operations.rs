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

#[test]
fn a_core_opened_offline_is_not_ready_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let core = Latchkey::open_offline(Config::with_data_dir(dir.path())).expect("opens");
    let reason = core.ready().expect_err("offline").to_string();
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
