//! Refresh-token rotation: one use per token, atomically.

use reqwest::StatusCode;

use crate::helpers::{Session, assert_error, spawn_app};

#[tokio::test]
async fn a_rotated_refresh_token_is_refused_and_its_successor_works() {
    let app = spawn_app().await;
    let first = app.logged_in_user().await;
    let second = Session::from_token_response(app.refresh_with(&first.refresh_token).await).await;
    assert_error(
        app.refresh_with(&first.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
        Some("Refresh token revoked"),
    )
    .await;
    let third = Session::from_token_response(app.refresh_with(&second.refresh_token).await).await;
    assert_eq!(app.me(&third.access_token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn twenty_concurrent_refreshes_with_one_token_yield_exactly_one_success() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let attempts = (0..20).map(|_| app.refresh_with(&session.refresh_token));
    let responses = futures_util::future::join_all(attempts).await;
    let mut successes = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => successes += 1,
            StatusCode::UNAUTHORIZED => {
                let body: serde_json::Value = response.json().await.expect("json");
                assert_eq!(body["code"], "refresh_token_revoked");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(successes, 1);
}

#[tokio::test]
async fn the_refresh_token_is_stored_only_as_its_blake3_digest_with_its_metadata() {
    let app = spawn_app().await;
    app.register("alice", "alice@example.com", crate::helpers::PASSWORD)
        .await;
    let login = app
        .client
        .post(app.url("/api/auth/login"))
        .header("User-Agent", "latchkey-test/1.0")
        .json(&serde_json::json!({"email": "alice@example.com", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .expect("request");
    let session = Session::from_token_response(login).await;

    let record = app
        .core
        .refresh_record(&session.refresh_token)
        .expect("read")
        .expect("stored");
    assert!(record.revoked_at.is_none() && record.replaced_by.is_none());
    assert_eq!(record.expires_at, record.created_at + 7 * 86_400);
    assert_eq!(record.client.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        record.client.user_agent.as_deref(),
        Some("latchkey-test/1.0")
    );

    let rotated =
        Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    let old = app
        .core
        .refresh_record(&session.refresh_token)
        .expect("read")
        .expect("kept");
    let new = app
        .core
        .refresh_record(&rotated.refresh_token)
        .expect("read")
        .expect("stored");
    assert!(old.revoked_at.is_some());
    assert_eq!(old.replaced_by.as_deref(), Some(new.jti.as_str()));
    assert_eq!(
        old.family_id, new.family_id,
        "rotation stays in the session's family"
    );

    app.core.flush().expect("flush");
    let needles = [
        session.refresh_token.as_bytes(),
        rotated.refresh_token.as_bytes(),
    ];
    for entry in walk(&app.data_dir) {
        let bytes = std::fs::read(&entry).expect("read file");
        for needle in needles {
            let signature = &needle[needle.len() - 43..];
            assert!(
                !bytes
                    .windows(signature.len())
                    .any(|window| window == signature),
                "{} contains a refresh token",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
