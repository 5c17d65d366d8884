//! What is written stays written: restarts, the sweeper, uniqueness under
//! concurrency, and the data-dir lock.

use std::time::{Duration, Instant};

use latchkey::{Clock, Config, Error, Latchkey, Swept};
use reqwest::StatusCode;

use crate::helpers::{
    Options, PASSWORD, START, Session, assert_error, spawn_app, spawn_app_with, spawn_on,
};

#[tokio::test]
async fn users_sessions_and_secrets_survive_a_restart() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("data");
    let clock = Clock::manual(START);
    let options = Options::default();

    let app = spawn_on(&dir, &options, clock.clone()).await;
    let session = app.logged_in_user().await;
    app.stop().await;

    let app = spawn_on(&dir, &options, clock.clone()).await;
    assert_eq!(
        app.me(&session.access_token).await.status(),
        StatusCode::OK,
        "the access secret was kept"
    );
    let refreshed =
        Session::from_token_response(app.refresh_with(&session.refresh_token).await).await;
    assert_eq!(
        app.me(&refreshed.access_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_error(
        app.register("alice", "alice@example.com", PASSWORD).await,
        StatusCode::CONFLICT,
        "user_exists",
        None,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_sweeper_removes_expired_refresh_records_and_keeps_live_ones() {
    let app = spawn_app_with(Options {
        access_ttl: Duration::from_secs(30),
        refresh_ttl: Duration::from_secs(60),
        sweep_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let old = app.logged_in("alice", "alice@example.com").await;
    app.clock.advance(Duration::from_secs(30));
    let live = app.logged_in("bob", "bob@example.com").await;
    assert_eq!(app.core.refresh_record_count().await, 2);

    app.clock.advance(Duration::from_secs(40));
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.core.refresh_record_count().await > 1 {
        assert!(Instant::now() < deadline, "the sweeper did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        app.core
            .refresh_record(&old.refresh_token)
            .await
            .expect("read")
            .is_none()
    );
    assert!(
        app.core
            .refresh_record(&live.refresh_token)
            .await
            .expect("read")
            .is_some()
    );
    let refreshed = app.refresh_with(&live.refresh_token).await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_sweep_deletes_only_what_has_expired() {
    let app = spawn_app_with(Options {
        access_ttl: Duration::from_secs(30),
        refresh_ttl: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let first = app.logged_in_user().await;
    // Rotating leaves the old (revoked) record until it expires.
    let second = Session::from_token_response(app.refresh_with(&first.refresh_token).await).await;
    assert_eq!(
        app.core.sweep_expired().await.expect("sweep"),
        Swept::default()
    );
    assert_eq!(app.core.refresh_record_count().await, 2);
    assert_eq!(app.core.session_count().await, 1);
    app.clock.advance(Duration::from_secs(60));
    let swept = app.core.sweep_expired().await.expect("sweep");
    assert_eq!((swept.refresh_tokens, swept.sessions), (2, 1));
    assert_eq!(app.core.refresh_record_count().await, 0);
    assert_eq!(app.core.session_count().await, 0);
    assert_error(
        app.refresh_with(&second.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_expired",
        None,
    )
    .await;
}

/// Sends every `(username, email)` registration at once; asserts exactly one
/// succeeds and every other one is refused with `conflict_code`.
async fn register_concurrently(
    app: &crate::helpers::TestApp,
    accounts: &[(String, String)],
    conflict_code: &str,
) {
    let attempts = accounts
        .iter()
        .map(|(username, email)| app.register(username, email, PASSWORD));
    let mut created = 0;
    for response in futures_util::future::join_all(attempts).await {
        if response.status() == StatusCode::CREATED {
            created += 1;
        } else {
            assert_error(response, StatusCode::CONFLICT, conflict_code, None).await;
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_email_create_one_user() {
    let app = spawn_app().await;
    let accounts: Vec<(String, String)> = (0..8)
        .map(|i| (format!("user{i}"), "same@example.com".to_owned()))
        .collect();
    register_concurrently(&app, &accounts, "user_exists").await;
}

#[tokio::test]
async fn concurrent_registrations_of_one_username_create_one_user() {
    let app = spawn_app().await;
    let accounts: Vec<(String, String)> = (0..8)
        .map(|i| {
            let name = if i % 2 == 0 { "carol" } else { "CAROL" };
            (name.to_owned(), format!("c{i}@example.com"))
        })
        .collect();
    register_concurrently(&app, &accounts, "username_taken").await;
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_with_a_clear_error() {
    let app = spawn_app().await;
    if app.core.backend() != "sled" {
        // Only sled locks its data directory; PostgreSQL nodes share.
        return;
    }
    let second = Latchkey::open(Config::with_data_dir(&app.data_dir)).await;
    match second {
        Err(Error::DataDirLocked(path)) => assert!(path.contains("data")),
        Err(other) => panic!("expected DataDirLocked, got {other}"),
        Ok(_) => panic!("a second instance opened a locked data dir"),
    }
}

#[tokio::test]
async fn a_corrupt_database_is_refused_with_an_error_not_a_panic() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("data");
    {
        let core = Latchkey::open(Config::with_data_dir(&dir))
            .await
            .expect("fresh data dir opens");
        core.create_user(
            "alice",
            "alice@example.com",
            PASSWORD,
            &["user"],
            Default::default(),
        )
        .await
        .expect("user");
        core.flush().expect("flush");
    }
    // Deterministic noise (xorshift64), as a bad disk or a stray write leaves.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let garbage: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(dir.join("db"), garbage).expect("overwrite the database");
    match Latchkey::open(Config::with_data_dir(&dir)).await {
        Err(Error::Storage(message)) => assert!(message.contains("corrupt"), "{message}"),
        Err(other) => panic!("expected a storage error, got {other}"),
        Ok(_) => panic!("a corrupt database opened"),
    }
}

#[tokio::test]
async fn an_import_refuses_a_damaged_or_cut_short_dump_and_takes_back_what_it_wrote() {
    let source = spawn_app().await;
    for i in 0..3 {
        source
            .logged_in(&format!("mover{i}"), &format!("mover{i}@example.com"))
            .await;
    }
    let mut dump = Vec::new();
    source
        .core
        .export(|line| {
            dump.push(line.to_owned());
            Ok(())
        })
        .await
        .expect("export");
    let end = dump.last().expect("a last line").clone();
    assert!(end.starts_with(r#"{"end":"latchkey-dump""#), "{end}");

    let target = spawn_app().await;
    let entry = dump
        .iter()
        .position(|line| line.starts_with(r#"{"tree":"#))
        .expect("an entry line");
    let mut one_entry_less = dump.clone();
    one_entry_less.remove(entry);
    let mut trailing = dump.clone();
    trailing.push(dump[entry].clone());
    let mut damaged = dump.clone();
    damaged[entry + 1] = r#"{"tree":"users","key":"not base64!","bytes":""}"#.into();
    let cases = [
        (dump[..dump.len() - 1].to_vec(), "cut short"),
        (dump[..dump.len() / 2].to_vec(), "cut short"),
        (one_entry_less, "end line counts"),
        (trailing, "follows its end line"),
        (damaged, "bad key"),
    ];
    for (lines, said) in cases {
        let err = target
            .core
            .import(lines.into_iter().map(Ok))
            .await
            .expect_err("a broken dump is refused");
        assert!(
            matches!(&err, Error::Config(reason) if reason.contains(said)),
            "{err}"
        );
    }
    // Nothing of those stayed: the store is still empty, and the whole
    // dump goes in.
    let imported = target
        .core
        .import(dump.into_iter().map(Ok))
        .await
        .expect("the whole dump goes in");
    assert_eq!(imported.users, 3);
    assert_eq!(
        target.login("mover2@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}
