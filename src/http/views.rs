//! Response views shared by several API files: the user as clients see it,
//! and a plain confirmation.

use poem_openapi::Object;
use poem_openapi::types::Example;

use crate::model::{User, format_time};

/// A user as clients see it (never the password hash).
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct UserView {
    /// The user id (UUID), the `sub` of their tokens.
    id: String,
    /// The username as registered.
    username: String,
    /// The normalized email.
    email: String,
    /// When the account was created (RFC 3339, UTC).
    created_at: String,
    /// The user's roles (`user` for every account; `admin` for administrators).
    roles: Vec<String>,
    /// Whether the user has proven they read mail at `email` (a
    /// verification link, a password reset or a confirmed email change).
    email_verified: bool,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            created_at: format_time(user.created_at),
            roles: user.roles.clone(),
            email_verified: user.email_verified,
        }
    }
}

impl Example for UserView {
    fn example() -> Self {
        UserView {
            id: "5f0c6f3e-3c55-4a43-9d1e-0f6c2b7d9a11".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            created_at: "2026-11-27T08:00:00Z".into(),
            roles: vec!["user".into()],
            email_verified: true,
        }
    }
}

/// A confirmation.
#[derive(Object)]
pub(super) struct MessageBody {
    /// What happened.
    pub(super) message: String,
}

impl MessageBody {
    pub(super) fn new(message: impl Into<String>) -> Self {
        MessageBody {
            message: message.into(),
        }
    }
}
