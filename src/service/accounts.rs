//! What a signed-in user does with their own account: list and revoke
//! sessions, log out everywhere, change the password, delete the account.
//! Ending sessions goes through the user's security stamp, inside the same
//! transaction as the change that ends them, so a session started while the
//! change was under way cannot survive it.

use crate::error::{Error, Result};
use crate::limits::Attempt;
use crate::model::{AuditKind, ClientInfo, Password, RevokeReason, Session, User};
use crate::password::{self, Lane};
use crate::storage::Ending;

use super::{Authenticated, Durability, Latchkey};

impl Latchkey {
    /// The user's live sessions, newest first.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    pub async fn sessions(&self, user_id: &str) -> Result<Vec<Session>> {
        let user = self.user(user_id).await?;
        let now = self.now();
        let mut sessions: Vec<Session> = self
            .inner
            .store
            .sessions_of(user_id)
            .await?
            .into_iter()
            .filter(|session| session.is_live_for(&user, now))
            .collect();
        sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(sessions)
    }

    /// How many live sessions a user has.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    pub async fn live_session_count(&self, user_id: &str) -> Result<usize> {
        Ok(self.sessions(user_id).await?.len())
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
        let revoked = self
            .inner
            .store
            .revoke_session(user_id, session_id, self.now(), RevokeReason::User)
            .await?;
        if revoked {
            self.inner.metrics.sessions_ended(1);
            let event = self
                .event(AuditKind::SessionsRevoked, &client)
                .user(user_id)
                .session(session_id)
                .detail("revoked=1");
            self.record(event, Durability::Wait).await?;
            tracing::info!(user_id, session_id, "session revoked");
        }
        Ok(())
    }

    /// Revokes every session of the user; returns how many were live.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn logout_all(&self, user_id: &str, client: ClientInfo) -> Result<usize> {
        self.end_all_sessions(user_id, RevokeReason::User, &client)
            .await
    }

    /// Changes the caller's password: checks the current one (rate-limited
    /// like a login), applies the password policy to the new one, and ends
    /// every other session; the caller's session (`sid`) stays. Returns how
    /// many sessions ended.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::RateLimited`],
    /// [`Error::InvalidCredentials`] for a wrong current password (or one
    /// another change replaced meanwhile), [`Error::WeakPassword`],
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        caller: &Authenticated,
        current: &str,
        new: &str,
        client: ClientInfo,
    ) -> Result<usize> {
        let current = Password::presented(current)?;
        let new = Password::parse(new)?;
        let user = self
            .verified_user(&caller.claims.sub, &current, &client)
            .await?;
        password::check_policy(&new, &user.username, &user.email)?;
        let hash = self.inner.passwords.hash(&new, Lane::Known).await?;
        let ending = Ending {
            now: self.now(),
            reason: RevokeReason::PasswordChange,
            keep: Some(caller.claims.sid.clone()),
        };
        let (_, ended) = self
            .inner
            .store
            .update_user(&user.id, &ending, |stored| {
                stored.set_password(hash.clone(), user.password_version)
            })
            .await?;
        self.inner.metrics.sessions_ended(ended);
        let event = self
            .event(AuditKind::PasswordChanged, &client)
            .user(&user.id)
            .session(&caller.claims.sid)
            .detail(format!("revoked={ended}"));
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, revoked = ended, "password changed");
        Ok(ended)
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
        let live = self.live_session_count(user_id).await?;
        self.inner
            .store
            .delete_user(user_id, |stored| {
                match stored.password_version == user.password_version {
                    true => Ok(()),
                    false => Err(Error::InvalidCredentials),
                }
            })
            .await?;
        self.inner.metrics.sessions_ended(live);
        let event = self
            .event(AuditKind::AccountDeleted, &client)
            .user(&user.id);
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, "account deleted");
        Ok(())
    }

    /// Ends every session of a user by moving their security stamp; returns
    /// how many were live.
    pub(super) async fn end_all_sessions(
        &self,
        user_id: &str,
        reason: RevokeReason,
        client: &ClientInfo,
    ) -> Result<usize> {
        let ending = Ending {
            now: self.now(),
            reason,
            keep: None,
        };
        let (user, ended) = self
            .inner
            .store
            .update_user(user_id, &ending, |user| {
                user.end_sessions();
                Ok(())
            })
            .await?;
        self.inner.metrics.sessions_ended(ended);
        let event = self
            .event(AuditKind::SessionsRevoked, client)
            .user(&user.id)
            .detail(format!("revoked={ended}"));
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, revoked = ended, "sessions revoked");
        Ok(ended)
    }

    /// The user, after checking `password` with the login rate limits (a
    /// stolen access token must not become a password-guessing oracle): per
    /// IP and the user's own tiers, which strangers guessing at the login
    /// cannot exhaust.
    pub(super) async fn verified_user(
        &self,
        user_id: &str,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<User> {
        let user = self.user(user_id).await?;
        self.limited(
            self.inner
                .limits
                .login(client.ip, Attempt::Holder(&user.id)),
            Some(&user.id),
            client,
        )
        .await?;
        let verified = self
            .inner
            .passwords
            .verify(password, Some(&user.password_hash), Lane::Known)
            .await?;
        if !verified.is_right() {
            let event = self
                .event(AuditKind::LoginFailed, client)
                .user(&user.id)
                .detail("wrong_current_password");
            self.record(event, Durability::NextFlush).await?;
            return Err(Error::InvalidCredentials);
        }
        Ok(user)
    }
}
