//! What administrators do: check a role, page through users, change roles,
//! disable accounts (which ends their sessions at once) and revoke sessions.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::model::{
    ADMIN_ROLE, AuditEvent, AuditKind, ClientInfo, Email, RevokeReason, UnixTime, User, parse_roles,
};
use crate::storage::Ending;

use super::{Authenticated, Durability, Latchkey};

/// Base64url without padding, taking any trailing bits (a cursor is only a
/// position, so every well-formed one is accepted).
const LENIENT_BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Most users one list request returns, and the default page size's ceiling.
pub const MAX_PAGE: usize = 100;
/// Index entries one list request may read while filtering.
const PAGE_SCAN_BUDGET: usize = 10_000;

/// One page of the admin user list.
#[derive(Debug)]
pub struct UsersPage {
    /// The users on this page, in email order.
    pub users: Vec<User>,
    /// Pass as `cursor` to get the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// One page of the audit log.
#[derive(Debug)]
pub struct AuditPage {
    /// The events on this page, oldest first.
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` to get the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// What an administrator changes about a user; `None` leaves it as it is.
#[derive(Debug, Default)]
pub struct UserChange {
    /// The new roles.
    pub roles: Option<Vec<String>>,
    /// Disable (and end every session) or re-enable.
    pub disabled: Option<bool>,
}

impl Latchkey {
    /// The caller's account if it holds `role`. The user was read when the
    /// caller was authenticated, so a role taken away counts at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`].
    pub fn require_role<'a>(&self, caller: &'a Authenticated, role: &str) -> Result<&'a User> {
        match caller.user.has_role(role) && !caller.user.disabled {
            true => Ok(&caller.user),
            false => Err(Error::Forbidden),
        }
    }

    /// A page of users for the admin list: `query` matches a part of the
    /// email or username (case-insensitive), `cursor` continues a previous
    /// page, `limit` (1 to [`MAX_PAGE`]) caps the page.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit out of range or a cursor that is
    /// not base64url, [`Error::Storage`].
    pub async fn list_users(
        &self,
        query: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<UsersPage> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::InvalidInput(format!(
                "limit: expected a whole number from 1 to {MAX_PAGE}"
            )));
        }
        let query = query.map(str::trim).filter(|query| !query.is_empty());
        // The cursor is the last email read, base64url-encoded: opaque to
        // clients and safe in a query string whatever the email holds. Any
        // base64url text is a position in the email order, so any decodes.
        let after = cursor
            .map(|cursor| {
                LENIENT_BASE64URL
                    .decode(cursor)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .map_err(|_| Error::InvalidInput("cursor: not base64url".into()))
            })
            .transpose()?;
        let (users, next) = self
            .inner
            .store
            .users_page(after.as_deref(), query, limit, PAGE_SCAN_BUDGET)
            .await?;
        let next_cursor = next.map(|email| URL_SAFE_NO_PAD.encode(email));
        Ok(UsersPage { users, next_cursor })
    }

    /// A page of the audit log: events at or after `since`, oldest first,
    /// optionally of one user, at most `limit`; `cursor` continues a
    /// previous page. One request reads at most 10,000 entries, so a page
    /// filtered by user may come back short (even empty) with a
    /// `next_cursor`: follow it until it is absent.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a cursor that is not base64url,
    /// [`Error::Storage`].
    pub async fn audit_page(
        &self,
        since: UnixTime,
        user_id: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<AuditPage> {
        // The cursor is the key of the last entry read (time and sequence),
        // base64url-encoded; like the user list's, any base64url text is a
        // position in the log.
        let after = cursor
            .map(|cursor| {
                LENIENT_BASE64URL
                    .decode(cursor)
                    .map_err(|_| Error::InvalidInput("cursor: not base64url".into()))
            })
            .transpose()?;
        let (events, next) = self
            .inner
            .store
            .audit_page(since, after.as_deref(), user_id, limit, PAGE_SCAN_BUDGET)
            .await?;
        let next_cursor = next.map(|key| URL_SAFE_NO_PAD.encode(key));
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }

    /// Changes a user's roles and/or disabled flag on an administrator's
    /// behalf. Disabling ends every session at once. An administrator
    /// cannot disable themselves or take away their own admin role (so the
    /// last admin cannot lock everyone out by accident).
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::InvalidInput`] (bad roles, or
    /// acting on oneself), [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn change_user(
        &self,
        admin_id: &str,
        user_id: &str,
        change: UserChange,
        client: ClientInfo,
    ) -> Result<User> {
        let extra = &self.inner.config.extra_roles;
        let roles = change
            .roles
            .as_deref()
            .map(|roles| parse_roles(roles, extra))
            .transpose()?;
        if admin_id == user_id {
            if roles
                .as_ref()
                .is_some_and(|roles| !roles.iter().any(|role| role == ADMIN_ROLE))
            {
                return Err(Error::InvalidInput(
                    "roles: you cannot take away your own admin role".into(),
                ));
            }
            if change.disabled == Some(true) {
                return Err(Error::InvalidInput(
                    "disabled: you cannot disable your own account".into(),
                ));
            }
        }
        let ending = Ending {
            now: self.now(),
            reason: RevokeReason::Admin,
            keep: None,
        };
        let (user, ended) = self
            .inner
            .store
            .update_user(user_id, &ending, |user| {
                if let Some(roles) = &roles {
                    user.roles = roles.clone();
                }
                if let Some(disabled) = change.disabled {
                    if disabled && !user.disabled {
                        user.end_sessions();
                    }
                    user.disabled = disabled;
                }
                Ok(())
            })
            .await?;
        self.inner.metrics.sessions_ended(ended);
        let mut details = vec![format!("by={admin_id}")];
        if let Some(roles) = &roles {
            details.push(format!("roles={}", roles.join(",")));
        }
        if let Some(disabled) = change.disabled {
            details.push(format!("disabled={disabled}"));
            if disabled {
                details.push(format!("revoked={ended}"));
            }
        }
        let event = self
            .event(AuditKind::AccountChanged, &client)
            .user(&user.id)
            .detail(details.join("; "));
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, admin_id, "account changed by an administrator");
        Ok(user)
    }

    /// Revokes every session of a user on an administrator's behalf;
    /// returns how many were live.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn admin_revoke_sessions(&self, user_id: &str, client: ClientInfo) -> Result<usize> {
        self.end_all_sessions(user_id, RevokeReason::Admin, &client)
            .await
    }

    /// Finds a user by email (for the command line).
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::UserNotFound`], [`Error::Storage`].
    pub async fn user_by_email(&self, email: &str) -> Result<User> {
        let email = Email::parse(email)?;
        self.inner
            .store
            .user_by_email(email.as_str())
            .await?
            .ok_or(Error::UserNotFound)
    }
}
