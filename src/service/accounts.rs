//! What a signed-in user does with their account (sessions, password,
//! deletion) and what an administrator does with everyone's (list, roles,
//! disable, revoke). Every session operation acts on the one session model:
//! a session is a refresh-token family, revoking it ends its refresh tokens
//! and, on latchkey's routes, its access tokens.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::model::{
    ADMIN_ROLE, AuditKind, ClientInfo, Email, Password, RevokeReason, Session, User, Username,
    parse_roles,
};
use crate::password;
use crate::tokens::AccessClaims;

use super::Latchkey;

/// Most users one admin list request returns.
pub const MAX_PAGE: usize = 100;
/// Index entries one admin list request may read while filtering.
const PAGE_SCAN_BUDGET: usize = 10_000;

/// One page of the admin user list.
#[derive(Debug)]
pub struct UsersPage {
    /// The users on this page, in email order.
    pub users: Vec<User>,
    /// Pass as `cursor` to get the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// What an administrator changes about a user; `None` leaves it as it is.
#[derive(Debug, Default)]
pub struct UserChange {
    /// The new roles.
    pub roles: Option<Vec<String>>,
    /// Disable (and revoke every session) or re-enable.
    pub disabled: Option<bool>,
}

impl Latchkey {
    /// The caller's live sessions, newest first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sessions(&self, user_id: &str) -> Result<Vec<Session>> {
        let now = self.now();
        let mut sessions: Vec<Session> = self
            .inner
            .store
            .sessions_of(user_id)?
            .into_iter()
            .filter(|session| session.is_live(now))
            .collect();
        sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(sessions)
    }

    /// Revokes one of the user's own sessions. Revoking one that is already
    /// revoked succeeds again.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`] for an unknown id or another user's
    /// session (indistinguishable), [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        client: ClientInfo,
    ) -> Result<()> {
        let now = self.now();
        let owned = self
            .inner
            .store
            .session(session_id)?
            .is_some_and(|session| session.user_id == user_id);
        if !owned {
            return Err(Error::SessionNotFound);
        }
        let revoked = self.inner.store.update_sessions(
            user_id,
            &[session_id.to_owned()],
            |mut session| {
                session.revoked_at.is_none().then(|| {
                    session.revoke(now, RevokeReason::User);
                    session
                })
            },
        )?;
        if revoked > 0 {
            self.audit(
                AuditKind::SessionsRevoked,
                Some(user_id),
                Some(session_id),
                &client,
                Some("revoked=1".into()),
            )?;
            self.inner.store.durable().await?;
            tracing::info!(user_id, session_id, "session revoked");
        }
        Ok(())
    }

    /// Revokes every live session of the user; returns how many.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn logout_all(&self, user_id: &str, client: ClientInfo) -> Result<usize> {
        let user = self.user(user_id)?;
        self.revoke_all(&user, None, RevokeReason::User, &client)
            .await
    }

    /// Changes the caller's password: checks the current one (rate-limited
    /// like a login), applies the password policy to the new one, and
    /// revokes every other session; the caller's session (`sid`) stays.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::RateLimited`],
    /// [`Error::InvalidCredentials`] for a wrong current password,
    /// [`Error::WeakPassword`], [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        claims: &AccessClaims,
        current: &str,
        new: &str,
        client: ClientInfo,
    ) -> Result<usize> {
        let current = Password::presented(current)?;
        let new = Password::parse(new)?;
        let mut user = self.verified_user(&claims.sub, &current, &client).await?;
        password::check_policy(&new, &user.username, &user.email)?;
        user.password_hash = self.inner.passwords.hash(&new).await?;
        let revoked = self.inner.store.update_user_revoking(
            &user,
            Some(&claims.sid),
            Some((self.now(), RevokeReason::PasswordChange)),
        )?;
        self.audit(
            AuditKind::PasswordChanged,
            Some(&user.id),
            Some(&claims.sid),
            &client,
            Some(format!("revoked={revoked}")),
        )?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, revoked, "password changed");
        Ok(revoked)
    }

    /// Deletes the caller's account after checking their password: the
    /// user, their email and username index entries, their sessions and
    /// their refresh-token records go in one transaction. Audit events about
    /// them stay until the retention ends.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::RateLimited`],
    /// [`Error::InvalidCredentials`], [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn delete_account(
        &self,
        user_id: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<()> {
        let password = Password::presented(password)?;
        let user = self.verified_user(user_id, &password, &client).await?;
        let username_key = Username::parse(&user.username)?.key();
        self.inner.store.delete_user(&user, &username_key)?;
        self.audit(
            AuditKind::AccountDeleted,
            Some(&user.id),
            None,
            &client,
            None,
        )?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, "account deleted");
        Ok(())
    }

    /// The stored user of an access token if they hold `role` and are not
    /// disabled. Reads the user, so a role taken away counts at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Storage`].
    pub fn require_role(&self, claims: &AccessClaims, role: &str) -> Result<User> {
        match self.inner.store.user(&claims.sub)? {
            Some(user) if user.has_role(role) && !user.disabled => Ok(user),
            _ => Err(Error::Forbidden),
        }
    }

    /// A page of users for the admin list: `query` matches a part of the
    /// email or username (case-insensitive), `cursor` continues a previous
    /// page, `limit` is capped at [`MAX_PAGE`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a cursor latchkey did not hand out,
    /// [`Error::Storage`].
    pub fn list_users(
        &self,
        query: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<UsersPage> {
        let query = query.map(str::trim).filter(|query| !query.is_empty());
        let limit = limit.clamp(1, MAX_PAGE);
        // The cursor is the last email read, base64url-encoded: opaque to
        // clients and safe in a query string whatever the email holds.
        let after = cursor
            .map(|cursor| {
                URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        Error::InvalidInput("cursor is not one latchkey handed out".into())
                    })
            })
            .transpose()?;
        let (users, next) =
            self.inner
                .store
                .users_page(after.as_deref(), query, limit, PAGE_SCAN_BUDGET)?;
        let next_cursor = next.map(|email| URL_SAFE_NO_PAD.encode(email));
        Ok(UsersPage { users, next_cursor })
    }

    /// How many live sessions a user has.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn live_session_count(&self, user_id: &str) -> Result<usize> {
        Ok(self.sessions(user_id)?.len())
    }

    /// Changes a user's roles and/or disabled flag on an administrator's
    /// behalf. Disabling revokes every session at once. An administrator
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
        let mut user = self.user(user_id)?;
        let mut details = Vec::new();
        if let Some(roles) = &change.roles {
            let roles = parse_roles(roles)?;
            if admin_id == user_id && !roles.iter().any(|role| role == ADMIN_ROLE) {
                return Err(Error::InvalidInput(
                    "roles: you cannot take away your own admin role".into(),
                ));
            }
            details.push(format!("roles={}", roles.join(",")));
            user.roles = roles;
        }
        let disable = change.disabled == Some(true) && !user.disabled;
        if let Some(disabled) = change.disabled {
            if admin_id == user_id && disabled {
                return Err(Error::InvalidInput(
                    "disabled: you cannot disable your own account".into(),
                ));
            }
            details.push(format!("disabled={disabled}"));
            user.disabled = disabled;
        }
        let revoke = disable.then(|| (self.now(), RevokeReason::Admin));
        let revoked = self.inner.store.update_user_revoking(&user, None, revoke)?;
        if disable {
            details.push(format!("revoked={revoked}"));
        }
        self.audit(
            AuditKind::AccountChanged,
            Some(&user.id),
            None,
            &client,
            Some(format!("by={admin_id}; {}", details.join("; "))),
        )?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, admin_id, "account changed by an administrator");
        Ok(user)
    }

    /// Revokes every live session of a user on an administrator's behalf.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn admin_revoke_sessions(&self, user_id: &str, client: ClientInfo) -> Result<usize> {
        let user = self.user(user_id)?;
        self.revoke_all(&user, None, RevokeReason::Admin, &client)
            .await
    }

    /// Finds a user by email (for the command line).
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::UserNotFound`], [`Error::Storage`].
    pub fn user_by_email(&self, email: &str) -> Result<User> {
        let email = Email::parse(email)?;
        self.inner
            .store
            .user_by_email(email.as_str())?
            .ok_or(Error::UserNotFound)
    }

    async fn revoke_all(
        &self,
        user: &User,
        keep: Option<&str>,
        reason: RevokeReason,
        client: &ClientInfo,
    ) -> Result<usize> {
        let revoked =
            self.inner
                .store
                .update_user_revoking(user, keep, Some((self.now(), reason)))?;
        self.audit(
            AuditKind::SessionsRevoked,
            Some(&user.id),
            None,
            client,
            Some(format!("revoked={revoked}")),
        )?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, revoked, "sessions revoked");
        Ok(revoked)
    }

    /// The user, after checking `password` with the login rate limits (a
    /// stolen access token must not become a password-guessing oracle).
    async fn verified_user(
        &self,
        user_id: &str,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<User> {
        let user = self.user(user_id)?;
        self.limited(
            self.inner.limits.login(client.ip, &user.email),
            Some(&user.id),
            client,
        )?;
        if !self
            .inner
            .passwords
            .verify(password, Some(&user.password_hash))
            .await?
        {
            self.audit(
                AuditKind::LoginFailed,
                Some(&user.id),
                None,
                client,
                Some("wrong_current_password".into()),
            )?;
            return Err(Error::InvalidCredentials);
        }
        Ok(user)
    }
}
