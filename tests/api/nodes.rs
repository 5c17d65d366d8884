//! Two latchkey processes on one PostgreSQL database, behind no balancer
//! but the test itself, which sends each request to the node it chooses:
//! sessions, revocations, reuse detection, the refresh race, key rotation
//! and a node killed under load, seen from the other node. These need a
//! database: they run when `LATCHKEY_TEST_DATABASE_URL` is set (as
//! `.ci/run` sets it) and otherwise return at once, saying so.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::binary::{Server, assert_fails_with_one_line, command, start_command};
use crate::helpers::{
    Api, PASSWORD, Session, TEST_MASTER_KEY, set_cookie_value, test_database_url,
};

/// The database URL two nodes share, or `None` (the test is skipped).
fn shared_database(dir: &Path, test: &str) -> Option<String> {
    let url = test_database_url(dir);
    if url.is_none() {
        eprintln!("{test}: skipped, LATCHKEY_TEST_DATABASE_URL is not set");
    }
    url
}

/// A node on `url`, with its own data directory under `dir`.
fn node(dir: &Path, name: &str, url: &str) -> Server {
    node_with(dir, name, url, &[])
}

/// [`node`] with more flags.
fn node_with(dir: &Path, name: &str, url: &str, more: &[&str]) -> Server {
    let data_dir = dir.join(name);
    std::fs::create_dir_all(&data_dir).expect("node dir");
    let mut command = node_command(&data_dir, url);
    command
        .args([
            "--port",
            "0",
            "--reuse-grace",
            "0s",
            "--rate-limits",
            "off",
            "--hash-concurrency",
            "1",
        ])
        .args(more);
    start_command(command)
}

/// Whether `server` has logged taking the lead of `role`.
fn leads(server: &Server, role: &str) -> bool {
    server
        .log_lines()
        .iter()
        .any(|line| line.contains("this node took the lead") && line.contains(role))
}

#[tokio::test]
async fn the_sweeper_and_the_mail_sender_run_on_one_node_and_move_when_it_dies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(url) = shared_database(dir.path(), "the_sweeper_and_the_mail_sender") else {
        return;
    };
    let fast = ["--sweep-interval", "300ms"];
    let a = node_with(dir.path(), "a", &url, &fast);
    let b = node_with(dir.path(), "b", &url, &fast);
    let deadline = Instant::now() + Duration::from_secs(20);
    let led = |role: &str| usize::from(leads(&a, role)) + usize::from(leads(&b, role));
    while led("Sweeper") == 0 || led("Sender") == 0 {
        assert!(Instant::now() < deadline, "no node took the lead");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several rounds later, still one node each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(led("Sweeper"), 1, "one sweeper");
    assert_eq!(led("Sender"), 1, "one mail sender");

    // The sweeping node dies; the other takes the sweeper over.
    let (leader, other) = match leads(&a, "Sweeper") {
        true => (a, b),
        false => (b, a),
    };
    let had_sender = leads(&other, "Sender");
    drop(leader);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(leads(&other, "Sweeper") && leads(&other, "Sender")) {
        assert!(
            Instant::now() < deadline,
            "the other node never took over (it had the sender: {had_sender})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The binary, run against the shared database (with a data directory
/// of its own, for what is not shared: mail files).
fn node_command(data_dir: &Path, url: &str) -> std::process::Command {
    let mut command = command(data_dir);
    command
        .env("DATABASE_URL", url)
        .env("LATCHKEY_MASTER_KEY", TEST_MASTER_KEY)
        .env("LATCHKEY_DATA_DIR", data_dir);
    command
}

#[tokio::test]
async fn a_node_started_with_another_master_key_stops_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(url) = shared_database(dir.path(), "another_master_key") else {
        return;
    };
    let first = node(dir.path(), "a", &url);
    let data_dir = dir.path().join("b");
    std::fs::create_dir_all(&data_dir).expect("node dir");
    let output = node_command(&data_dir, &url)
        .env(
            "LATCHKEY_MASTER_KEY",
            "another master key, also thirty-two bytes long",
        )
        .args(["--port", "0"])
        .output()
        .expect("run latchkey");
    assert_fails_with_one_line(&output, "LATCHKEY_MASTER_KEY does not open");
    drop(first);
}

#[tokio::test]
async fn two_nodes_share_sessions_revocations_reuse_detection_and_the_refresh_race() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(url) = shared_database(dir.path(), "two_nodes_share") else {
        return;
    };
    let (a, b) = (node(dir.path(), "a", &url), node(dir.path(), "b", &url));
    let (a, b) = (a.api(), b.api());

    // Logged in on A: B knows the session, and refreshes it.
    let session = a.logged_in("alice", "alice@example.com").await;
    assert_eq!(b.me(&session.access_token).await.status(), StatusCode::OK);
    let rotated = b.refresh_with(&session.refresh_token).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated = Session::from_token_response(rotated).await;
    assert_eq!(a.me(&rotated.access_token).await.status(), StatusCode::OK);

    // The token B rotated out, replayed on A: reuse, and the whole family ends.
    let replayed = a.refresh_with(&session.refresh_token).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        b.refresh_with(&rotated.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED,
        "the family is revoked on every node"
    );
    assert_eq!(
        b.me(&rotated.access_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Logged out on B: A refuses the access token at once.
    let session = Session::from_token_response(a.login("alice@example.com", PASSWORD).await).await;
    assert_eq!(a.me(&session.access_token).await.status(), StatusCode::OK);
    let out = b.logout_with(Some(&session.refresh_token)).await;
    assert!(out.status().is_success(), "{}", out.status());
    let refused = a.me(&session.access_token).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    // Twenty refreshes of one token, half on each node: one winner.
    let session = Session::from_token_response(a.login("alice@example.com", PASSWORD).await).await;
    let racers = (0..20).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        node.refresh_with(&session.refresh_token)
    });
    let statuses: Vec<StatusCode> = join_all(racers)
        .await
        .iter()
        .map(reqwest::Response::status)
        .collect();
    let winners = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(winners, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
}

/// The `kid` of an access token.
fn kid_of(token: &str) -> String {
    crate::helpers::jwt_part(token, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_owned()
}

async fn jwks_kids(api: &Api) -> Vec<String> {
    let jwks: Value = api
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("jwks");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test]
async fn a_key_rotated_from_the_command_line_signs_on_one_node_and_verifies_on_the_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(url) = shared_database(dir.path(), "a_key_rotated") else {
        return;
    };
    let (a, b) = (node(dir.path(), "a", &url), node(dir.path(), "b", &url));
    let (a, b) = (a.api(), b.api());
    let before = a.logged_in("bob", "bob@example.com").await;
    let old_kid = kid_of(&before.access_token);
    assert_eq!(jwks_kids(&a).await, jwks_kids(&b).await);

    // `keys rotate` while both nodes run, from a third process.
    let tool_dir = dir.path().join("tool");
    std::fs::create_dir_all(&tool_dir).expect("dir");
    let rotated = node_command(&tool_dir, &url)
        .args(["keys", "rotate"])
        .output()
        .expect("keys rotate");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );

    // Within the reload interval, A signs with the new key and B verifies it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let fresh = loop {
        let session =
            Session::from_token_response(a.login("bob@example.com", PASSWORD).await).await;
        if kid_of(&session.access_token) != old_kid {
            break session;
        }
        assert!(
            Instant::now() < deadline,
            "node A never took up the new key"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.me(&fresh.access_token).await.status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "node B never took up the new key"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The old key still verifies its tokens on both, and both publish both keys.
    assert_eq!(b.me(&before.access_token).await.status(), StatusCode::OK);
    assert_eq!(a.me(&before.access_token).await.status(), StatusCode::OK);
    let (kids_a, kids_b) = (jwks_kids(&a).await, jwks_kids(&b).await);
    assert_eq!(kids_a.len(), 2, "{kids_a:?}");
    let mut sorted = (kids_a.clone(), kids_b.clone());
    sorted.0.sort();
    sorted.1.sort();
    assert_eq!(sorted.0, sorted.1, "the JWKS is the same from every node");
}

#[tokio::test]
async fn a_node_killed_under_load_loses_no_acknowledged_write_seen_from_the_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(url) = shared_database(dir.path(), "a_node_killed") else {
        return;
    };
    let (node_a, node_b) = (node(dir.path(), "a", &url), node(dir.path(), "b", &url));
    let (a, b) = (node_a.api(), node_b.api());

    // Eight refresh chains rotated on A as fast as it answers (until just
    // before the kill: a rotation cut off by it may have committed
    // unacknowledged, and its old token would then rightly read as reused),
    // and registrations beside them, cut off by the kill (SIGKILL).
    let mut chains = Vec::new();
    for i in 0..8 {
        let session = a
            .logged_in(&format!("chain{i}"), &format!("chain{i}@example.com"))
            .await;
        chains.push(session.refresh_token);
    }
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let rotate = |mut token: String| {
        let a = a.clone();
        async move {
            // The last token whose rotation A acknowledged.
            while Instant::now() + Duration::from_millis(300) < stop_at {
                let Ok(response) = a.try_refresh_with(&token).await else {
                    return token;
                };
                if response.status() != StatusCode::OK {
                    return token;
                }
                match set_cookie_value(&response, "refresh_token") {
                    Some(next) => token = next,
                    None => return token,
                }
            }
            token
        }
    };
    let registering = {
        let a = a.clone();
        async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let email = format!("new{i}@example.com");
                match a.try_register(&format!("new{i}"), &email, PASSWORD).await {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        acknowledged.push(email);
                    }
                    _ => return acknowledged,
                }
            }
            acknowledged
        }
    };
    let killer = async move {
        tokio::time::sleep_until(stop_at.into()).await;
        drop(node_a);
    };
    let (last_tokens, registered, ()) = tokio::join!(
        join_all(chains.into_iter().map(rotate)),
        registering,
        killer
    );

    // From B: every acknowledged rotation holds (its token refreshes once
    // more), and every acknowledged registration logs in.
    for token in &last_tokens {
        let response = b.refresh_with(token).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "an acknowledged rotation was lost"
        );
    }
    assert!(!registered.is_empty(), "no registration was acknowledged");
    for email in &registered {
        let login = b.login(email, PASSWORD).await;
        assert_eq!(
            login.status(),
            StatusCode::OK,
            "{email}: an acknowledged registration was lost"
        );
    }
}
