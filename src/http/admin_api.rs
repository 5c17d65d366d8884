//! The Admin tag, `/api/admin/*`: user management and the audit log, for
//! callers with the `admin` role (every operation takes a
//! [`RequireRole<Admin>`]).

use std::time::{Duration, UNIX_EPOCH};

use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::{Admin, RequireRole, client_of};
use super::error::error_responses;
use super::fields;
use super::views::{PasskeyView, UserView};
use crate::error::Error;
use crate::model::{AuditEvent, User, format_time};
use crate::service::{Latchkey, UserChange};

/// The Admin operations.
#[derive(Default)]
pub(super) struct AdminApi;

/// A user as an administrator sees them: the user view and their state.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
struct AdminUserView {
    #[oai(flatten)]
    user: UserView,
    /// Whether the account is disabled (no login, no refresh).
    disabled: bool,
    /// How many live sessions the user has.
    live_sessions: u64,
    /// Unused recovery codes (with TOTP on).
    recovery_codes_left: u64,
    /// Wrong second-factor codes in a row; at 100 the factor is locked
    /// until a password reset by email or a reset of the factors.
    wrong_codes_in_a_row: u32,
    /// The user's passkeys, oldest first.
    passkeys: Vec<PasskeyView>,
}

impl AdminUserView {
    async fn of(core: &Latchkey, user: &User) -> Result<Self, Error> {
        let factors = core.factor_details(user).await?;
        Ok(AdminUserView {
            user: UserView::from(user),
            disabled: user.disabled,
            live_sessions: core.live_session_count(&user.id).await? as u64,
            recovery_codes_left: factors.recovery_codes_left as u64,
            wrong_codes_in_a_row: factors.wrong_codes_in_a_row,
            passkeys: factors.passkeys.iter().map(PasskeyView::from).collect(),
        })
    }
}

impl Example for AdminUserView {
    fn example() -> Self {
        AdminUserView {
            user: UserView::example(),
            disabled: false,
            live_sessions: 2,
            recovery_codes_left: 0,
            wrong_codes_in_a_row: 0,
            passkeys: Vec::new(),
        }
    }
}

/// One page of users.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct UsersBody {
    /// Users in email order.
    users: Vec<AdminUserView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    next_cursor: Option<String>,
}

/// What to change about a user; absent fields stay as they are.
#[derive(Object)]
#[oai(example)]
pub(super) struct UserPatch {
    /// The new roles (1 to 16 of `[a-z0-9_.-]`, e.g. `["user","admin"]`).
    #[oai(deserialize_with = "fields::roles", skip_serializing_if_is_none)]
    roles: Option<fields::Roles>,
    /// `true` disables the account and revokes every session at once;
    /// `false` enables it again.
    #[oai(deserialize_with = "fields::disabled", skip_serializing_if_is_none)]
    disabled: Option<bool>,
}

impl Example for UserPatch {
    fn example() -> Self {
        UserPatch {
            roles: Some(fields::Roles(vec!["user".into(), "admin".into()])),
            disabled: None,
        }
    }
}

/// How many sessions were revoked.
#[derive(Object)]
struct RevokedBody {
    /// The number of live sessions revoked.
    revoked: u64,
}

/// A security event.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct AuditView {
    /// When it happened (RFC 3339, UTC).
    time: String,
    /// What happened: `register`, `login_succeeded`, `login_failed`,
    /// `login_refused`, `refresh`, `refresh_raced`, `reuse_detected`,
    /// `logout`, `sessions_revoked`, `rate_limited`, `password_changed`,
    /// `account_deleted`, `account_changed`.
    kind: String,
    /// The user concerned.
    #[oai(skip_serializing_if_is_none)]
    user_id: Option<String>,
    /// The session concerned.
    #[oai(skip_serializing_if_is_none)]
    session_id: Option<String>,
    /// The client's IP address.
    #[oai(skip_serializing_if_is_none)]
    ip: Option<String>,
    /// The client's user agent.
    #[oai(skip_serializing_if_is_none)]
    user_agent: Option<String>,
    /// Why, or what changed.
    #[oai(skip_serializing_if_is_none)]
    detail: Option<String>,
}

impl From<AuditEvent> for AuditView {
    fn from(event: AuditEvent) -> Self {
        AuditView {
            time: format_time(event.at),
            kind: event.kind.as_str().to_owned(),
            user_id: event.user_id,
            session_id: event.session_id,
            ip: event.ip,
            user_agent: event.user_agent,
            detail: event.detail,
        }
    }
}

/// Audit events, oldest first.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct AuditBody {
    /// The events.
    events: Vec<AuditView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    next_cursor: Option<String>,
}

#[derive(ApiResponse)]
enum UsersResponse {
    /// A page of users.
    #[oai(status = 200)]
    Ok(Json<UsersBody>),
}

#[derive(ApiResponse)]
enum UserResponse {
    /// The user.
    #[oai(status = 200)]
    Ok(Json<AdminUserView>),
}

#[derive(ApiResponse)]
enum RevokedResponse {
    /// The user's sessions are revoked.
    #[oai(status = 200)]
    Ok(Json<RevokedBody>),
}

#[derive(ApiResponse)]
enum AuditResponse {
    /// Matching events.
    #[oai(status = 200)]
    Ok(Json<AuditBody>),
}

#[derive(ApiResponse)]
enum ResetResponse {
    /// Every second factor and passkey of the user is gone.
    #[oai(status = 204)]
    Reset,
}

error_responses!(AdminError {
    /// `invalid_input`: a parameter or field is invalid (the message names it).
    400 => BadRequest,
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `forbidden` ("Insufficient role"): the caller is not an admin; or
    /// `csrf_rejected` for a cookie-carrying request from a foreign origin.
    403 => Forbidden,
    /// `user_not_found`.
    404 => NotFound,
});

error_responses!(AdminPatchError with body {
    /// `invalid_input`: a parameter or field is invalid (the message names it).
    400 => BadRequest,
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `forbidden` ("Insufficient role"): the caller is not an admin; or
    /// `csrf_rejected` for a cookie-carrying request from a foreign origin.
    403 => Forbidden,
    /// `user_not_found`.
    404 => NotFound,
});

/// Default page size of the user list.
const DEFAULT_LIMIT: usize = 50;
/// Most audit events one request returns.
const MAX_AUDIT_EVENTS: usize = 1000;

/// `since` as a duration back from now (`24h`) or an RFC 3339 time.
/// Exactly the two forms the spec declares: digits and a unit (`s`, `m`,
/// `h`, `d`, `w`), or an RFC 3339 UTC time to the second naming a real
/// instant (`2026-11-27T08:00:00Z`).
fn parse_since(text: &str, now: u64) -> Result<u64, Error> {
    let refused =
        || Error::InvalidInput("since: must be a duration (24h, 7d) or an RFC 3339 time".into());
    // The last character, not byte: `since` is whatever the client sent.
    let cut = text.char_indices().last().map_or(0, |(at, _)| at);
    let (digits, unit) = text.split_at(cut);
    let is_duration = (1..=9).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && matches!(unit, "s" | "m" | "h" | "d" | "w");
    if is_duration {
        let window = humantime::parse_duration(text).map_err(|_| refused())?;
        return Ok(now.saturating_sub(window.as_secs()));
    }
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 20
        && bytes.iter().enumerate().all(|(at, byte)| match at {
            4 | 7 => *byte == b'-',
            10 => *byte == b'T',
            13 | 16 => *byte == b':',
            19 => *byte == b'Z',
            _ => byte.is_ascii_digit(),
        });
    if !shaped {
        return Err(refused());
    }
    humantime::parse_rfc3339(text)
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .as_ref()
        .map(Duration::as_secs)
        .ok_or_else(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_the_two_declared_forms_and_nothing_else() {
        let now = 1_800_000_000;
        assert_eq!(parse_since("24h", now).ok(), Some(now - 86_400));
        assert_eq!(parse_since("0s", now).ok(), Some(now));
        assert_eq!(
            parse_since("2027-01-15T08:00:00Z", now).ok(),
            Some(1_800_000_000)
        );
        // Found by schemathesis: a multi-byte last character panicked.
        for bad in [
            "\u{80}",
            "0",
            "1 h",
            "2026-13-45T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "",
            "é",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
    }
}

#[OpenApi(prefix_path = "/api/admin", tag = "ApiTags::Admin")]
impl AdminApi {
    /// List users
    ///
    /// Users in email order, one page at a time: pass the `nextCursor` of a
    /// page as `cursor` to get the next. `query` keeps users whose email or
    /// username contains it (case-insensitive); a page may come back short
    /// while more match further on, so follow `nextCursor` until it is absent.
    #[oai(path = "/users", method = "get")]
    async fn users(
        &self,
        core: Data<&Latchkey>,
        _admin: RequireRole<Admin>,
        /// Part of an email or username to look for.
        query: Query<Option<String>>,
        /// Users per page, 1 to 100 (default 50).
        limit: Query<Option<fields::PageLimit>>,
        /// The `nextCursor` of the previous page.
        cursor: Query<Option<fields::Cursor>>,
    ) -> Result<UsersResponse, AdminError> {
        let limit = limit.0.map_or(DEFAULT_LIMIT, |limit| limit.0 as usize);
        let cursor = cursor.0.map(|cursor| cursor.0);
        let page = core
            .list_users(query.0.as_deref(), limit, cursor.as_deref())
            .await?;
        let mut users = Vec::with_capacity(page.users.len());
        for user in &page.users {
            users.push(AdminUserView::of(&core, user).await?);
        }
        Ok(UsersResponse::Ok(Json(UsersBody {
            users,
            next_cursor: page.next_cursor,
        })))
    }

    /// Get a user
    #[oai(path = "/users/:id", method = "get")]
    async fn user(
        &self,
        core: Data<&Latchkey>,
        _admin: RequireRole<Admin>,
        /// The user id.
        id: Path<String>,
    ) -> Result<UserResponse, AdminError> {
        let user = core.user(&id).await?;
        Ok(UserResponse::Ok(Json(
            AdminUserView::of(&core, &user).await?,
        )))
    }

    /// Change a user's roles or disable them
    ///
    /// Disabling revokes every session of the user at once; a disabled user
    /// cannot log in (403 `account_disabled`) or refresh. Administrators
    /// cannot disable themselves or drop their own `admin` role.
    #[oai(path = "/users/:id", method = "patch")]
    async fn change_user(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        admin: RequireRole<Admin>,
        /// The user id.
        id: Path<String>,
        body: Json<UserPatch>,
    ) -> Result<UserResponse, AdminPatchError> {
        let change = UserChange {
            roles: body.0.roles.map(|roles| roles.0),
            disabled: body.0.disabled,
        };
        let user = core
            .change_user(&admin.user.id, &id, change, client_of(request, &core))
            .await?;
        Ok(UserResponse::Ok(Json(
            AdminUserView::of(&core, &user).await?,
        )))
    }

    /// Revoke all of a user's sessions
    #[oai(path = "/users/:id/revoke-sessions", method = "post")]
    async fn revoke_sessions(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        _admin: RequireRole<Admin>,
        /// The user id.
        id: Path<String>,
    ) -> Result<RevokedResponse, AdminError> {
        let revoked = core
            .admin_revoke_sessions(&id, client_of(request, &core))
            .await?;
        Ok(RevokedResponse::Ok(Json(RevokedBody {
            revoked: revoked as u64,
        })))
    }

    /// Reset a user's second factors
    ///
    /// Removes the user's authenticator-app factor, recovery codes and
    /// passkeys (for a user who lost them, or whose factor is locked by
    /// wrong codes) and ends the user's sessions; the password stays and
    /// signs in alone. Audited as `mfa_reset` (naming the administrator);
    /// the user is told by mail. With nothing to remove, nothing changes.
    #[oai(path = "/users/:id/mfa", method = "delete")]
    async fn reset_mfa(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        admin: RequireRole<Admin>,
        /// The user id.
        id: Path<String>,
    ) -> Result<ResetResponse, AdminError> {
        core.reset_factors(&admin.user.id, &id, client_of(request, &core))
            .await?;
        Ok(ResetResponse::Reset)
    }

    /// Read the audit log
    ///
    /// Security events, oldest first: registrations, logins (with the
    /// reason of failures), refreshes, reuse detections, logouts, revocations,
    /// rate limiting, account changes. One page at a time: pass the
    /// `nextCursor` of a page as `cursor` to get the next. A request reads at
    /// most 10,000 events, so a page filtered by `user` may be short (even
    /// empty) while more match further on: follow `nextCursor` until it is
    /// absent.
    #[oai(path = "/audit", method = "get")]
    async fn audit(
        &self,
        core: Data<&Latchkey>,
        _admin: RequireRole<Admin>,
        /// Only events of this user id.
        user: Query<Option<String>>,
        /// Only events newer than this: a duration back from now (`24h`) or an RFC 3339 time.
        since: Query<Option<fields::Since>>,
        /// At most this many events, 1 to 1000 (default 100).
        limit: Query<Option<fields::EventLimit>>,
        /// The `nextCursor` of the previous page.
        cursor: Query<Option<fields::Cursor>>,
    ) -> Result<AuditResponse, AdminError> {
        let since = match &since.0 {
            Some(text) => parse_since(&text.0, core.clock().now())?,
            None => 0,
        };
        let limit = limit.0.map_or(100, |limit| limit.0 as usize);
        if !(1..=MAX_AUDIT_EVENTS).contains(&limit) {
            return Err(Error::InvalidInput(format!(
                "limit: expected a whole number from 1 to {MAX_AUDIT_EVENTS}"
            ))
            .into());
        }
        let cursor = cursor.0.map(|cursor| cursor.0);
        let page = core
            .audit_page(since, user.0.as_deref(), limit, cursor.as_deref())
            .await?;
        Ok(AuditResponse::Ok(Json(AuditBody {
            events: page.events.into_iter().map(AuditView::from).collect(),
            next_cursor: page.next_cursor,
        })))
    }
}
