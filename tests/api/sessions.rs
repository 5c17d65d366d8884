//! A user's sessions (devices) and account: list, revoke one or all, change
//! the password, delete the account. Revocation must reach both the refresh
//! token and, on latchkey's routes, the session's live access token.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{PASSWORD, Session, TestApp, assert_error, header, spawn_app};

async fn assert_dead(app: &TestApp, session: &Session) {
    app.assert_session_dead(session, "refresh_token_revoked")
        .await;
}

async fn assert_alive(app: &TestApp, session: &Session) -> Session {
    assert_eq!(app.me(&session.access_token).await.status(), StatusCode::OK);
    Session::from_token_response(app.refresh_with(&session.refresh_token).await).await
}

#[tokio::test]
async fn my_sessions_are_listed_newest_first_with_the_current_one_marked() {
    let app = spawn_app().await;
    let laptop = app.logged_in_user().await;
    app.clock.advance(std::time::Duration::from_secs(60));
    let phone = app.login_as_device("alice@example.com", "Phone/1.0").await;
    let body = app
        .call_json(
            Method::GET,
            "/api/auth/sessions",
            &phone.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    let sessions = body["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["id"], phone.session_id());
    assert_eq!(sessions[0]["current"], true);
    assert_eq!(sessions[0]["userAgent"], "Phone/1.0");
    assert_eq!(sessions[0]["ip"], "127.0.0.1");
    assert_eq!(sessions[1]["id"], laptop.session_id());
    assert_eq!(sessions[1]["current"], false);
    for field in ["createdAt", "lastUsedAt", "expiresAt"] {
        assert!(
            sessions[0][field]
                .as_str()
                .is_some_and(|time| time.ends_with('Z')),
            "{field}"
        );
    }
    // A logged-out session is no longer listed.
    app.logout_with(Some(&laptop.refresh_token)).await;
    let body = app
        .call_json(
            Method::GET,
            "/api/auth/sessions",
            &phone.access_token,
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(body["sessions"].as_array().expect("sessions").len(), 1);
}

#[tokio::test]
async fn revoking_a_session_kills_its_refresh_token_and_its_live_access_token() {
    let app = spawn_app().await;
    let lost_phone = app.logged_in_user().await;
    let laptop = app.login_as_device("alice@example.com", "Laptop/1.0").await;
    let path = format!("/api/auth/sessions/{}", lost_phone.session_id());
    let response = app
        .call(Method::DELETE, &path, &laptop.access_token, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_dead(&app, &lost_phone).await;
    assert_alive(&app, &laptop).await;
    // Revoking it again is still a success.
    let again = app
        .call(Method::DELETE, &path, &laptop.access_token, None)
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn another_users_or_an_unknown_session_id_is_session_not_found() {
    let app = spawn_app().await;
    let alice = app.logged_in_user().await;
    let bob = app.logged_in("bob", "bob@example.com").await;
    for id in [bob.session_id(), "no-such-session".to_owned()] {
        let path = format!("/api/auth/sessions/{id}");
        assert_error(
            app.call(Method::DELETE, &path, &alice.access_token, None)
                .await,
            StatusCode::NOT_FOUND,
            "session_not_found",
            Some("Session not found"),
        )
        .await;
    }
    assert_alive(&app, &bob).await;
}

#[tokio::test]
async fn logout_all_revokes_every_session_including_this_one() {
    let app = spawn_app().await;
    let first = app.logged_in_user().await;
    let second = app.login_as_device("alice@example.com", "B").await;
    let third = app.login_as_device("alice@example.com", "C").await;
    let other_user = app.logged_in("bob", "bob@example.com").await;
    let response = app
        .call(
            Method::POST,
            "/api/auth/logout-all",
            &second.access_token,
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = header(&response, "set-cookie");
    assert!(
        cookie.starts_with("refresh_token=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"message": "Logged out from all sessions", "revoked": 3})
    );
    for session in [&first, &second, &third] {
        assert_dead(&app, session).await;
    }
    assert_alive(&app, &other_user).await;
}

#[tokio::test]
async fn a_password_change_leaves_only_the_current_session() {
    let app = spawn_app().await;
    let first = app.logged_in_user().await;
    let current = app.login_as_device("alice@example.com", "B").await;
    let third = app.login_as_device("alice@example.com", "C").await;
    let new_password = "a brand new passphrase 2026";
    let changed = app
        .change_password(&current.access_token, PASSWORD, new_password)
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let body: serde_json::Value = changed.json().await.expect("json");
    assert_eq!(
        body["message"],
        "Password changed; 2 other sessions revoked"
    );
    assert_dead(&app, &first).await;
    assert_dead(&app, &third).await;
    assert_alive(&app, &current).await;
    assert_error(
        app.login("alice@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    )
    .await;
    assert_eq!(
        app.login("alice@example.com", new_password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_current_password_or_a_weak_new_one_changes_nothing() {
    let app = spawn_app().await;
    let other = app.logged_in_user().await;
    let current = app.login_as_device("alice@example.com", "B").await;
    assert_error(
        app.change_password(
            &current.access_token,
            "not my password",
            "a brand new passphrase 2026",
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    )
    .await;
    assert_error(
        app.change_password(&current.access_token, PASSWORD, "password1")
            .await,
        StatusCode::BAD_REQUEST,
        "weak_password",
        None,
    )
    .await;
    let missing = json!({"currentPassword": PASSWORD});
    let response = app
        .call(
            Method::POST,
            "/api/auth/password",
            &current.access_token,
            Some(&missing),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("newPassword")),
        "{body}"
    );
    assert_alive(&app, &other).await;
    assert_eq!(
        app.login("alice@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn deleting_my_account_removes_it_its_sessions_and_its_tokens() {
    let app = spawn_app().await;
    let alice = app.logged_in_user().await;
    let rotated = Session::from_token_response(app.refresh_with(&alice.refresh_token).await).await;
    let bob = app.logged_in("bob", "bob@example.com").await;
    let bobs_records = 1;
    assert_error(
        app.call(
            Method::DELETE,
            "/api/profile/me",
            &rotated.access_token,
            Some(&json!({"password": "not my password"})),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    )
    .await;
    let deleted = app
        .call(
            Method::DELETE,
            "/api/profile/me",
            &rotated.access_token,
            Some(&json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(header(&deleted, "set-cookie").contains("Max-Age=0"));
    app.assert_session_revoked(&rotated.access_token).await;
    assert_error(
        app.refresh_with(&rotated.refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_not_recognized",
        None,
    )
    .await;
    assert_error(
        app.login("alice@example.com", PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        None,
    )
    .await;
    assert_eq!(
        app.core.refresh_record_count().await,
        bobs_records,
        "alice's records are gone"
    );
    assert_eq!(
        app.core.session_count().await,
        1,
        "only bob's session is left"
    );
    assert_alive(&app, &bob).await;
    // The email and username are free again.
    assert_eq!(
        app.register("alice", "alice@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn my_profile_and_my_token_carry_my_roles() {
    let app = spawn_app().await;
    let session = app.logged_in_user().await;
    assert_eq!(session.access_claims()["roles"], json!(["user"]));
    let me: serde_json::Value = app
        .me(&session.access_token)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["user"]["roles"], json!(["user"]));
}
