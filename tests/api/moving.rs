//! Moving a live sled data directory to PostgreSQL and back with
//! `latchkey export` and `latchkey import`: every session and password
//! still works after each move. Needs a database: runs when
//! `LATCHKEY_TEST_DATABASE_URL` is set, otherwise returns at once, saying so.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;

use crate::binary::{command, start_command};
use crate::helpers::{Api, PASSWORD, Session, TEST_MASTER_KEY, test_database_url};

/// `latchkey <args>` with `env` set, asserting success; returns stdout.
fn run(data_dir: &Path, database: Option<&str>, args: &[&str]) -> String {
    let mut command = tool(data_dir, database);
    let output = command.args(args).output().expect("run latchkey");
    assert!(
        output.status.success(),
        "latchkey {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn tool(data_dir: &Path, database: Option<&str>) -> Command {
    let mut command = command(data_dir);
    command.env("LATCHKEY_DATA_DIR", data_dir);
    match database {
        Some(url) => command
            .env("DATABASE_URL", url)
            .env("LATCHKEY_MASTER_KEY", TEST_MASTER_KEY),
        None => command
            .env_remove("DATABASE_URL")
            .env_remove("LATCHKEY_MASTER_KEY"),
    };
    command
}

fn serve(data_dir: &Path, database: Option<&str>) -> crate::binary::Server {
    let mut command = tool(data_dir, database);
    command.args(["--port", "0", "--rate-limits", "off"]);
    start_command(command)
}

/// Each session refreshes (returning its successor) and each password logs in.
async fn all_work(api: &Api, sessions: &mut [(String, Session)]) {
    for (email, session) in sessions.iter_mut() {
        assert_eq!(
            api.me(&session.access_token).await.status(),
            StatusCode::OK,
            "{email}: the access token still verifies"
        );
        let refreshed = api.refresh_with(&session.refresh_token).await;
        assert_eq!(
            refreshed.status(),
            StatusCode::OK,
            "{email}: the session moved"
        );
        *session = Session::from_token_response(refreshed).await;
        let login = api.login(email, PASSWORD).await;
        assert_eq!(
            login.status(),
            StatusCode::OK,
            "{email}: the password moved"
        );
    }
}

#[tokio::test]
async fn a_live_sled_directory_moves_to_postgresql_and_back_with_every_session_and_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(url) = test_database_url(dir.path()) else {
        eprintln!("a_live_sled_directory_moves: skipped, LATCHKEY_TEST_DATABASE_URL is not set");
        return;
    };
    let sled_dir = dir.path().join("sled");
    std::fs::create_dir_all(&sled_dir).expect("dir");
    let sled = serve(&sled_dir, None);
    let api = sled.api();
    let mut sessions = Vec::new();
    for i in 0..3 {
        let email = format!("mover{i}@example.com");
        let session = api.logged_in(&format!("mover{i}"), &email).await;
        sessions.push((email, session));
    }

    // Exported while the sled server runs (it answers on its socket).
    let dump = dir.path().join("sled.dump");
    run(&sled_dir, None, &["export", &dump.display().to_string()]);
    let text = std::fs::read_to_string(&dump).expect("dump");
    assert!(
        text.starts_with(r#"{"format":"latchkey-dump","version":1"#),
        "{text:.200}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dump).expect("dump").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the dump is owner-only");
    drop(sled);

    // Into PostgreSQL: an empty database takes it; a second import is refused.
    let pg_dir = dir.path().join("pg");
    std::fs::create_dir_all(&pg_dir).expect("dir");
    let said = run(
        &pg_dir,
        Some(&url),
        &["import", &dump.display().to_string()],
    );
    assert!(said.contains("3 users"), "{said}");
    let again = tool(&pg_dir, Some(&url))
        .args(["import", &dump.display().to_string()])
        .output()
        .expect("run");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let node = serve(&pg_dir, Some(&url));
    all_work(&node.api(), &mut sessions).await;

    // And back, exported from the database while the node runs, read from
    // standard input into a new sled directory.
    let back = run(&pg_dir, Some(&url), &["export"]);
    let sled_again = dir.path().join("sled-again");
    std::fs::create_dir_all(&sled_again).expect("dir");
    let mut import = tool(&sled_again, None)
        .arg("import")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn import");
    {
        use std::io::Write;
        let mut stdin = import.stdin.take().expect("stdin");
        stdin.write_all(back.as_bytes()).expect("write dump");
    }
    let output = import.wait_with_output().expect("import");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(node);
    let sled = serve(&sled_again, None);
    all_work(&sled.api(), &mut sessions).await;
}
