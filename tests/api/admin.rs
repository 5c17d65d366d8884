//! The admin API: only callers with the `admin` role get in; they page
//! through users, change roles, disable accounts (which ends their sessions
//! at once), revoke sessions and read the audit log.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Session, TestApp, assert_error, spawn_app};

async fn admin(app: &TestApp) -> Session {
    app.logged_in_with_roles("root", "root@example.com", &["user", "admin"])
        .await
}

#[tokio::test]
async fn a_non_admin_gets_403_on_every_admin_route_and_no_token_gets_401() {
    let app = spawn_app().await;
    let alice = app.logged_in_user().await;
    let id = alice.user_id.clone();
    let routes = [
        (Method::GET, "/api/admin/users".to_owned(), None),
        (Method::GET, format!("/api/admin/users/{id}"), None),
        (
            Method::PATCH,
            format!("/api/admin/users/{id}"),
            Some(json!({"roles": ["user", "admin"]})),
        ),
        (
            Method::POST,
            format!("/api/admin/users/{id}/revoke-sessions"),
            None,
        ),
        (Method::GET, "/api/admin/audit".to_owned(), None),
    ];
    for (method, path, body) in routes {
        assert_error(
            app.call(method.clone(), &path, &alice.access_token, body.as_ref())
                .await,
            StatusCode::FORBIDDEN,
            "forbidden",
            Some("Insufficient role"),
        )
        .await;
        let anonymous = app
            .client
            .request(method, app.url(&path))
            .send()
            .await
            .expect("request");
        assert_error(anonymous, StatusCode::UNAUTHORIZED, "missing_token", None).await;
    }
    // Nothing changed: alice is still a plain user with her session.
    let me: Value = app
        .me(&alice.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["roles"], json!(["user"]));
}

#[tokio::test]
async fn users_are_paged_by_cursor_in_email_order_and_filtered_by_query() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    // "a+b" makes sure cursors survive characters a query string mangles.
    for name in ["dora", "bob", "erin", "carol", "alice", "a+b"] {
        app.core
            .create_user(
                &name.replace('+', "_"),
                &format!("{name}@example.com"),
                PASSWORD,
                &["user"],
                Default::default(),
            )
            .await
            .expect("user");
    }
    let mut seen = Vec::new();
    let mut path = "/api/admin/users?limit=1".to_owned();
    // Bounded, so a cursor that repeats fails the test instead of hanging it.
    for _ in 0..20 {
        let page = app
            .call_json(Method::GET, &path, &root.access_token, None, StatusCode::OK)
            .await;
        let users = page["users"].as_array().expect("users");
        assert!(users.len() <= 1);
        seen.extend(
            users
                .iter()
                .map(|user| user["email"].as_str().expect("email").to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/admin/users?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = ["a+b", "alice", "bob", "carol", "dora", "erin", "root"]
        .iter()
        .map(|name| format!("{name}@example.com"))
        .collect();
    assert_eq!(seen, expected);

    let found = app
        .call_json(
            Method::GET,
            "/api/admin/users?query=CAR",
            &root.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    let users = found["users"].as_array().expect("users");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["username"], "carol");
    assert_eq!(users[0]["roles"], json!(["user"]));
    assert_eq!(users[0]["disabled"], false);
    assert_eq!(users[0]["liveSessions"], 0);

    for limit in ["1000", "-1", "x"] {
        let bad = app
            .call(
                Method::GET,
                &format!("/api/admin/users?limit={limit}"),
                &root.access_token,
                None,
            )
            .await;
        assert_error(
            bad,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            Some("limit: expected a whole number from 1 to 100"),
        )
        .await;
    }

    // A cursor longer than the spec's 400 characters, or not base64url, is
    // refused on both paged lists, as the spec declares (schemathesis found
    // the long one accepted).
    let long = "G".repeat(404);
    for list in ["users", "audit"] {
        for cursor in [long.as_str(), "a!b", "abcde"] {
            let bad = app
                .call(
                    Method::GET,
                    &format!("/api/admin/{list}?cursor={cursor}"),
                    &root.access_token,
                    None,
                )
                .await;
            assert_error(bad, StatusCode::BAD_REQUEST, "invalid_input", None).await;
        }
    }
}

#[tokio::test]
async fn one_user_is_shown_and_an_unknown_id_is_user_not_found() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.logged_in_user().await;
    let user = app
        .call_json(
            Method::GET,
            &format!("/api/admin/users/{}", alice.user_id),
            &root.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["liveSessions"], 1);
    assert_error(
        app.call(
            Method::GET,
            "/api/admin/users/nobody",
            &root.access_token,
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "user_not_found",
        None,
    )
    .await;
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions_at_once_and_blocks_login_and_refresh() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.logged_in_user().await;
    let disabled = app
        .set_disabled(&root.access_token, &alice.user_id, true)
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let user: Value = disabled.json().await.expect("json");
    assert_eq!(user["disabled"], true);
    assert_eq!(user["liveSessions"], 0);
    app.assert_session_revoked(&alice.access_token).await;
    assert_error(
        app.refresh_with(&alice.refresh_token).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
        Some("Account disabled"),
    )
    .await;
    assert_error(
        app.login("alice@example.com", PASSWORD).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
        None,
    )
    .await;
    // A wrong password still says only "invalid credentials".
    assert_error(
        app.login("alice@example.com", "not her password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    )
    .await;
    let enabled = app
        .set_disabled(&root.access_token, &alice.user_id, false)
        .await;
    assert_eq!(enabled.status(), StatusCode::OK);
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn role_changes_count_at_once_and_an_admin_cannot_lock_themselves_out() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let bob = app.logged_in("bob", "bob@example.com").await;
    let bob_path = format!("/api/admin/users/{}", bob.user_id);
    let promoted = app
        .call_json(
            Method::PATCH,
            &bob_path,
            &root.access_token,
            Some(&json!({"roles": ["user", "admin"]})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(promoted["roles"], json!(["user", "admin"]));
    // Bob's existing token works on admin routes: the guard reads the stored roles.
    app.call_json(
        Method::GET,
        "/api/admin/users",
        &bob.access_token,
        None,
        StatusCode::OK,
    )
    .await;
    app.call_json(
        Method::PATCH,
        &bob_path,
        &root.access_token,
        Some(&json!({"roles": ["user"]})),
        StatusCode::OK,
    )
    .await;
    assert_error(
        app.call(Method::GET, "/api/admin/users", &bob.access_token, None)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    )
    .await;

    let root_path = format!("/api/admin/users/{}", root.user_id);
    for body in [json!({"roles": ["user"]}), json!({"disabled": true})] {
        assert_error(
            app.call(Method::PATCH, &root_path, &root.access_token, Some(&body))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            None,
        )
        .await;
    }
    for bad in [
        json!({"roles": []}),
        json!({"roles": ["Admin!"]}),
        json!({"roles": [false, true]}),
        json!({"roles": ["false", "true"]}),
        json!({"roles": ["user", "superuser"]}),
        json!({"roles": ["admin"]}),
        json!({"disabled": "yes"}),
    ] {
        assert_error(
            app.call(Method::PATCH, &bob_path, &root.access_token, Some(&bad))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_input",
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn an_admin_revokes_every_session_of_a_user() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.logged_in_user().await;
    let second = app.login_as_device("alice@example.com", "B").await;
    let body = app
        .call_json(
            Method::POST,
            &format!("/api/admin/users/{}/revoke-sessions", alice.user_id),
            &root.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(body, json!({"revoked": 2}));
    for session in [&alice, &second] {
        app.assert_session_revoked(&session.access_token).await;
    }
    assert_eq!(app.me(&root.access_token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_audit_log_is_readable_by_user_and_time() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let alice = app.logged_in_user().await;
    app.login("alice@example.com", "not her password").await;
    let path = format!("/api/admin/audit?user={}&since=1h", alice.user_id);
    let body = app
        .call_json(Method::GET, &path, &root.access_token, None, StatusCode::OK)
        .await;
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["kind"].as_str().expect("kind"))
        .collect();
    // Registering also queues the verification mail.
    assert_eq!(
        kinds,
        [
            "register",
            "verification_sent",
            "login_succeeded",
            "login_failed"
        ]
    );
    assert_eq!(body["events"][3]["detail"], "wrong_password");
    assert_eq!(body["events"][3]["ip"], "127.0.0.1");

    app.clock.advance(std::time::Duration::from_secs(7200));
    let root = app.login_as_device("root@example.com", "later").await;
    let later = app
        .call_json(Method::GET, &path, &root.access_token, None, StatusCode::OK)
        .await;
    assert_eq!(later["events"], json!([]));
    let since_start = app
        .call_json(
            Method::GET,
            "/api/admin/audit?since=2020-01-01T00:00:00Z&limit=2",
            &root.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(since_start["events"].as_array().expect("events").len(), 2);
    // Following nextCursor two at a time reads the whole log, in order.
    let whole = app
        .core
        .audit_events(0, None, usize::MAX)
        .await
        .expect("audit");
    let mut paged = Vec::new();
    let mut path = "/api/admin/audit?since=2020-01-01T00:00:00Z&limit=2".to_owned();
    loop {
        let page = app
            .call_json(Method::GET, &path, &root.access_token, None, StatusCode::OK)
            .await;
        for event in page["events"].as_array().expect("events") {
            paged.push(event["kind"].as_str().expect("kind").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                path =
                    format!("/api/admin/audit?since=2020-01-01T00:00:00Z&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    let kinds: Vec<String> = whole
        .iter()
        .map(|event| event.kind.as_str().to_owned())
        .collect();
    assert!(kinds.len() > 2);
    assert_eq!(paged, kinds);
    assert_error(
        app.call(
            Method::GET,
            "/api/admin/audit?since=yesterday",
            &root.access_token,
            None,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        None,
    )
    .await;
}
