//! Refresh-token rotation and reuse detection: a rotated token comes back
//! within the grace (a client retrying: it gets the same successor) or after
//! it, or once its successor was used (theft: the whole family is revoked).

use std::time::Duration;

use latchkey::AuditKind;
use reqwest::StatusCode;

use crate::helpers::{Options, PASSWORD, Session, assert_error, header, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_rotated_token_within_the_grace_gets_its_unused_successor_again() {
    let app = spawn_app().await;
    let first = app.logged_in_user().await;
    let second = Session::from_token_response(app.refresh_with(&first.refresh_token).await).await;
    app.clock.advance(Duration::from_secs(9));
    // A client retrying a refresh whose answer it lost (or another tab
    // sending the same cookie): the same successor, never a second branch.
    let retried = app.refresh_with(&first.refresh_token).await;
    let cookie = header(&retried, "set-cookie");
    let retried = Session::from_token_response(retried).await;
    assert_eq!(retried.refresh_token, second.refresh_token);
    assert_eq!(retried.session_id(), first.session_id());
    assert!(
        cookie.contains("Max-Age="),
        "the cookie is set again: {cookie}"
    );
    assert_eq!(app.me(&retried.access_token).await.status(), StatusCode::OK);
    assert!(
        app.audit_kinds()
            .await
            .contains(&"refresh_raced".to_owned()),
        "the race is audited"
    );
    assert_eq!(
        app.core.refresh_record_count().await,
        2,
        "nothing new stored"
    );
    // The successor goes on as usual.
    Session::from_token_response(app.refresh_with(&second.refresh_token).await).await;
}

#[tokio::test]
async fn a_rotated_token_whose_successor_was_used_is_theft_even_within_the_grace() {
    let app = spawn_app().await;
    let stolen = app.logged_in_user().await;
    let second = Session::from_token_response(app.refresh_with(&stolen.refresh_token).await).await;
    let third = Session::from_token_response(app.refresh_with(&second.refresh_token).await).await;
    // Within the grace of the first rotation, but its successor has been
    // used since: two holders of one token.
    assert_error(
        app.refresh_with(&stolen.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
        None,
    )
    .await;
    app.assert_session_revoked(&third.access_token).await;
    assert_error(
        app.refresh_with(&third.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
        None,
    )
    .await;
}

#[tokio::test]
async fn a_rotated_token_after_the_grace_revokes_the_whole_family() {
    let app = spawn_app().await;
    let stolen = app.logged_in_user().await;
    let other_device = app.login("alice@example.com", PASSWORD).await;
    let other_device = Session::from_token_response(other_device).await;
    let current = Session::from_token_response(app.refresh_with(&stolen.refresh_token).await).await;
    let retried = Session::from_token_response(app.refresh_with(&stolen.refresh_token).await).await;
    app.clock.advance(Duration::from_secs(10));

    assert_error(
        app.refresh_with(&stolen.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
        Some("Refresh token reuse detected"),
    )
    .await;
    // Every live token of the family died with it, refresh and access alike.
    for dead in [&current, &retried] {
        assert_error(
            app.refresh_with(&dead.refresh_token).await,
            StatusCode::UNAUTHORIZED,
            "refresh_token_revoked",
            None,
        )
        .await;
        app.assert_session_revoked(&dead.access_token).await;
    }
    // The user's other session is untouched.
    assert_eq!(
        app.me(&other_device.access_token).await.status(),
        StatusCode::OK
    );
    Session::from_token_response(app.refresh_with(&other_device.refresh_token).await).await;

    let events = app
        .core
        .audit_events(0, Some(&stolen.user_id), 100)
        .await
        .expect("audit");
    let reuse = events
        .iter()
        .find(|event| event.kind == AuditKind::ReuseDetected)
        .expect("a reuse_detected event");
    assert_eq!(
        reuse.session_id.as_deref(),
        Some(stolen.session_id().as_str())
    );
    assert_eq!(reuse.ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn without_a_grace_of_twenty_concurrent_refreshes_exactly_one_succeeds() {
    let app = spawn_app_with(Options {
        tweak: |config| config.reuse_grace = Duration::ZERO,
        ..Options::default()
    })
    .await;
    let session = app.logged_in_user().await;
    let attempts = (0..20).map(|_| app.refresh_with(&session.refresh_token));
    let responses = futures_util::future::join_all(attempts).await;
    let mut winners = Vec::new();
    for response in responses {
        match response.status() {
            StatusCode::OK => winners.push(Session::from_token_response(response).await),
            StatusCode::UNAUTHORIZED => {
                let body: serde_json::Value = response.json().await.expect("json");
                assert_eq!(body["code"], "refresh_token_reused");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    // Reuse is theft without a grace: the family, the winner included, is gone.
    assert_error(
        app.refresh_with(&winners[0].refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
        None,
    )
    .await;
}

#[tokio::test]
async fn with_the_default_grace_twenty_concurrent_refreshes_all_stay_in_one_session() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    let attempts = (0..20).map(|_| app.refresh_with(&session.refresh_token));
    let responses = futures_util::future::join_all(attempts).await;
    for response in responses {
        let pair = Session::from_token_response(response).await;
        assert_eq!(pair.session_id(), session.session_id());
    }
    assert_eq!(app.core.session_count().await, 1);
}

#[tokio::test]
async fn a_logged_out_token_is_revoked_and_revokes_nothing_else() {
    let app = spawn_app().await;
    let ended = app.logged_in_user().await;
    let kept = Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
    assert_eq!(
        app.logout_with(Some(&ended.refresh_token)).await.status(),
        StatusCode::OK
    );
    app.clock.advance(Duration::from_secs(60));
    assert_error(
        app.refresh_with(&ended.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
        Some("Refresh token revoked"),
    )
    .await;
    app.assert_session_revoked(&ended.access_token).await;
    Session::from_token_response(app.refresh_with(&kept.refresh_token).await).await;
    assert!(
        !app.audit_kinds()
            .await
            .contains(&"reuse_detected".to_owned())
    );
}

#[tokio::test]
async fn logout_with_an_already_rotated_token_still_ends_the_session() {
    let app = spawn_app().await;
    let first = app.logged_in_user().await;
    let second = Session::from_token_response(app.refresh_with(&first.refresh_token).await).await;
    assert_eq!(
        app.logout_with(Some(&first.refresh_token)).await.status(),
        StatusCode::OK
    );
    assert_error(
        app.refresh_with(&second.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_revoked",
        None,
    )
    .await;
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
        .await
        .expect("read")
        .expect("stored");
    assert!(record.revoked_at.is_none() && record.replaced_by.is_none());
    assert_eq!(record.expires_at, record.created_at + 7 * 86_400);
    assert_eq!(record.client.ip, Some([127, 0, 0, 1].into()));
    assert_eq!(
        record.client.user_agent.as_deref(),
        Some("latchkey-test/1.0")
    );

    let rotated =
        Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    let old = app
        .core
        .refresh_record(&session.refresh_token)
        .await
        .expect("read")
        .expect("kept");
    let new = app
        .core
        .refresh_record(&rotated.refresh_token)
        .await
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
    // Everything stored, as an export writes it (either backend)...
    let mut dump = String::new();
    app.core
        .export(|line| {
            dump.push_str(line);
            Ok(())
        })
        .await
        .expect("export");
    for needle in needles {
        let signature = std::str::from_utf8(&needle[needle.len() - 43..]).expect("text");
        assert!(!dump.contains(signature), "the store holds a refresh token");
    }
    // ...and every file of the data directory (sled's database, raw).
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
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.is_file() {
            // (Not the export socket.)
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn a_session_ends_at_its_max_age_however_often_it_is_refreshed() {
    let app = spawn_app_with(Options {
        refresh_ttl: Duration::from_secs(1800),
        tweak: |config| config.session_max_age = Duration::from_secs(3600),
        ..Options::default()
    })
    .await;
    let mut session = app.logged_in_user().await;
    for _ in 0..2 {
        app.clock.advance(Duration::from_secs(1500));
        session =
            Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    }
    // 50 minutes in: the new refresh token lives only to the hour's end.
    assert!(
        session.set_cookie.contains("Max-Age=600"),
        "{}",
        session.set_cookie
    );
    app.clock.advance(Duration::from_secs(601));
    assert_error(
        app.refresh_with(&session.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_expired",
        None,
    )
    .await;
    // A new login starts a new session.
    Session::from_token_response(app.login("alice@example.com", PASSWORD).await).await;
}
