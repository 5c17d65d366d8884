//! Response views shared by several API files: the user as clients see it,
//! and a plain confirmation.

use poem_openapi::Object;
use poem_openapi::types::Example;

use crate::model::{PasskeyRecord, User, format_time};

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
    /// What guards the account besides its password.
    mfa: MfaView,
}

/// An account's second factors and passkeys.
#[derive(Object)]
pub(super) struct MfaView {
    /// Whether a login with the password also asks for an authenticator code.
    totp: bool,
    /// How many passkeys can sign in to the account.
    passkeys: u32,
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
            mfa: MfaView {
                totp: user.mfa.totp,
                passkeys: user.mfa.passkeys,
            },
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
            mfa: MfaView {
                totp: false,
                passkeys: 0,
            },
        }
    }
}

/// A passkey as its owner sees it.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub(super) struct PasskeyView {
    /// The credential id (base64url); use it to remove the passkey.
    id: String,
    /// Its name.
    name: String,
    /// When it was registered (RFC 3339).
    created_at: String,
    /// When it last signed in (RFC 3339), if it has.
    last_used_at: Option<String>,
    /// Whether it is synced to other devices (a backed-up passkey).
    backed_up: bool,
}

impl From<&PasskeyRecord> for PasskeyView {
    fn from(record: &PasskeyRecord) -> Self {
        PasskeyView {
            id: record.id.clone(),
            name: record.name.clone(),
            created_at: format_time(record.created_at),
            last_used_at: record.last_used_at.map(format_time),
            backed_up: record.backup_state,
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
