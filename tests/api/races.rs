//! Revocations that cannot be raced: logins (and refreshes) in flight while
//! a password change, a disable or a revoke-all commits. Whatever was
//! created with the old password, or before the change, is dead once the
//! change has answered; nothing answers 200 and stays alive.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use tokio::sync::Notify;

use crate::helpers::{Options, PASSWORD, Session, TestApp, assert_error, spawn_app_with};

/// Logins per round, started `STAGGER` apart, and rounds.
const LOGINS: usize = 20;
const STAGGER: Duration = Duration::from_millis(10);
const ROUNDS: usize = 5;

/// A server without rate limits (the races are many logins for one account)
/// and hashing one password at a time, so the logins queue in order.
async fn racing_app() -> TestApp {
    spawn_app_with(Options {
        tweak: |config| {
            config.limits = latchkey::config::RateLimits::off();
            config.hash_concurrency = Some(1);
        },
        ..Options::default()
    })
    .await
}

/// `LOGINS` logins of alice with `password`, started `STAGGER` apart;
/// `answered` is notified as each one answers.
async fn staggered_logins(
    app: &TestApp,
    password: &str,
    answered: &Notify,
) -> Vec<reqwest::Response> {
    let logins = (0..LOGINS).map(|n| async move {
        tokio::time::sleep(STAGGER * n as u32).await;
        let response = app.login("alice@example.com", password).await;
        answered.notify_one();
        response
    });
    join_all(logins).await
}

/// How many logins were refused inside their session's transaction because
/// the account changed while their hash was being checked (`detail`).
async fn refused_meanwhile(app: &TestApp, detail: &str) -> usize {
    app.core
        .audit_events(0, None, usize::MAX)
        .await
        .expect("audit")
        .iter()
        .filter(|event| event.detail.as_deref() == Some(detail))
        .count()
}

/// Splits login answers into the sessions they started and the refusals,
/// asserting each refusal carries `refused`.
async fn sessions_of(
    responses: Vec<reqwest::Response>,
    refused: (StatusCode, &str),
) -> Vec<Session> {
    let mut sessions = Vec::new();
    for response in responses {
        if response.status() == StatusCode::OK {
            sessions.push(Session::from_token_response(response).await);
        } else {
            assert_error(response, refused.0, refused.1, None).await;
        }
    }
    sessions
}

#[tokio::test]
async fn no_login_with_the_old_password_survives_a_password_change() {
    let app = racing_app().await;
    let owner = app.logged_in_user().await;
    let mut current = PASSWORD.to_owned();
    let mut started = 0;
    for round in 0..ROUNDS {
        let new = format!("a fresh passphrase for round {round}");
        let answered = Notify::new();
        // Hashing is one at a time, in order: logins that ask before the
        // change's second hash (the new password) commit before it; those
        // that read the account before the change commits but hash after it
        // are refused in their transaction; later ones meet the new password.
        let change = async {
            tokio::time::sleep(STAGGER / 2).await;
            app.change_password(&owner.access_token, &current, &new)
                .await
        };
        let (logins, changed) = tokio::join!(staggered_logins(&app, &current, &answered), change);
        assert_eq!(changed.status(), StatusCode::OK, "round {round}");
        let sessions = sessions_of(logins, (StatusCode::UNAUTHORIZED, "invalid_credentials")).await;
        started += sessions.len();
        for session in &sessions {
            app.assert_session_dead(session, "refresh_token_revoked")
                .await;
        }
        // The session that changed the password stays.
        assert_eq!(app.me(&owner.access_token).await.status(), StatusCode::OK);
        current = new;
    }
    assert!(
        started > 0,
        "some logins started sessions before the changes"
    );
    assert!(
        refused_meanwhile(&app, "password_changed_meanwhile").await > 0,
        "some logins verified the old password while it was being changed"
    );
    assert_eq!(
        app.login("alice@example.com", &current).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_login_survives_a_disable_that_has_answered() {
    let app = racing_app().await;
    let root = app
        .logged_in_with_roles("root", "root@example.com", &["user", "admin"])
        .await;
    let alice = app.logged_in_user().await;
    let mut started = 0;
    for round in 0..ROUNDS {
        let answered = Notify::new();
        let disable = async {
            answered.notified().await;
            app.set_disabled(&root.access_token, &alice.user_id, true)
                .await
        };
        let (logins, disabled) = tokio::join!(staggered_logins(&app, PASSWORD, &answered), disable);
        assert_eq!(disabled.status(), StatusCode::OK, "round {round}");
        let sessions = sessions_of(logins, (StatusCode::FORBIDDEN, "account_disabled")).await;
        started += sessions.len();
        for session in &sessions {
            app.assert_session_dead(session, "account_disabled").await;
        }
        // Enabled again, the sessions from before the disable stay dead.
        let enabled = app
            .set_disabled(&root.access_token, &alice.user_id, false)
            .await;
        assert_eq!(enabled.status(), StatusCode::OK);
        for session in &sessions {
            app.assert_session_dead(session, "refresh_token_revoked")
                .await;
        }
    }
    assert!(
        started > 0,
        "some logins started sessions before the disables"
    );
    assert!(
        refused_meanwhile(&app, "disabled_meanwhile").await > 0,
        "some logins were being checked while the account was disabled"
    );
    app.assert_session_revoked(&alice.access_token).await;
}

#[tokio::test]
async fn no_refresh_in_flight_survives_a_revoke_all() {
    let app = racing_app().await;
    app.logged_in_user().await;
    for round in 0..ROUNDS {
        let alice = app.login_as_device("alice@example.com", "Laptop/1.0").await;
        let other = app.login_as_device("alice@example.com", "Phone/1.0").await;
        // One token sent many times inside the reuse grace: each gets a pair
        // (the same refresh token).
        let refreshes = (0..LOGINS).map(|n| {
            let token = other.refresh_token.clone();
            let app = &app;
            async move {
                tokio::time::sleep(Duration::from_millis(n as u64)).await;
                app.refresh_with(&token).await
            }
        });
        let revoke = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            app.call(
                Method::POST,
                "/api/auth/logout-all",
                &alice.access_token,
                None,
            )
            .await
        };
        let (answers, revoked) = tokio::join!(join_all(refreshes), revoke);
        assert_eq!(revoked.status(), StatusCode::OK, "round {round}");
        let pairs = sessions_of(answers, (StatusCode::UNAUTHORIZED, "refresh_token_revoked")).await;
        for pair in &pairs {
            app.assert_session_dead(pair, "refresh_token_revoked").await;
        }
    }
}
