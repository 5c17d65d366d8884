//! Account recovery by email: verifying an address, resetting a forgotten
//! password, changing the address; and the outbox that delivers their mail.
//!
//! Every mail is queued in the database (with the token it carries, in one
//! transaction) before the request answers, and delivered by the outbox
//! sender ([`Latchkey::deliver_outbox`], run in the background), with
//! retries and backoff: an SMTP outage or a crash loses no mail and slows
//! no request. A request that must not reveal whether an account exists
//! (a password reset, a verification resend) queues only the request; the
//! sender looks the account up, so the answer takes the same time either
//! way. Tokens are 32 random bytes, stored only as their digest,
//! single-use, bound to one user, one purpose and one address.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::mail::{Delivered, Failure};
use crate::metrics::MailOutcome;
use crate::model::{
    AuditEvent, AuditKind, ClientInfo, Email, Mail, MailKind, MailPurpose, MailToken, OutboxEntry,
    OutboxJob, Password, RevokeReason, User,
};
use crate::password::{self, Lane};
use crate::storage::{Ending, OutboxKey, Redeemed};
use crate::tokens::{new_id, new_mail_token};

use super::{Authenticated, Durability, Latchkey};

/// Delivery attempts before a mail is given up on.
const MAX_ATTEMPTS: u32 = 16;
/// The pause after the first failed attempt; it doubles with each failure.
const FIRST_RETRY: u64 = 2;
/// The longest pause between two attempts.
const LONGEST_RETRY: u64 = 3600;
/// How long a mail given up on stays in the outbox, for the operator.
pub(super) const FAILED_MAIL_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// Outbox entries handled per pass.
pub(crate) const OUTBOX_BATCH: usize = 32;

/// The latchkey pages the links in mails open (under `<public-url>/account`
/// unless `--email-link-base` names the app's own).
pub const VERIFY_PAGE: &str = "/verify-email";
/// The page that sets a new password with a reset token.
pub const RESET_PAGE: &str = "/reset-password";
/// The page that confirms a new address.
pub const CONFIRM_EMAIL_PAGE: &str = "/confirm-email";

impl Latchkey {
    /// Marks the address of a verification token's user verified.
    ///
    /// # Errors
    /// [`Error::VerificationTokenInvalid`] (unknown, used, for another
    /// purpose, or for an address the account no longer has),
    /// [`Error::VerificationTokenExpired`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn verify_email(&self, token: &str, client: ClientInfo) -> Result<User> {
        let now = self.now();
        let (user, _) = self
            .inner
            .store
            .redeem_mail_token(
                &crate::model::TokenDigest::of(token),
                &self.ending(now, RevokeReason::PasswordChange),
                |token, user| {
                    let (token, mut user) = usable(
                        token,
                        user,
                        MailPurpose::VerifyEmail,
                        now,
                        Error::VerificationTokenInvalid,
                        Error::VerificationTokenExpired,
                    )?;
                    if token.email != user.email || user.disabled {
                        return Err(Error::VerificationTokenInvalid);
                    }
                    user.email_verified = true;
                    Ok(Redeemed {
                        user,
                        mails: Vec::new(),
                    })
                },
            )
            .await?;
        let event = self.event(AuditKind::EmailVerified, &client).user(&user.id);
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, "email verified");
        Ok(user)
    }

    /// Queues the verification mail again, if `email` belongs to an
    /// account whose address is not verified yet. Answers the same whether
    /// or not it does (the account is looked up by the outbox sender), and
    /// the same when a rate limit holds the mail back.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed address, [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn resend_verification(&self, email: &str, client: ClientInfo) -> Result<()> {
        self.request_mail(MailPurpose::VerifyEmail, email, client)
            .await
    }

    /// Queues a password-reset mail, if `email` belongs to an enabled
    /// account. Answers the same, in the same time, whether or not it does
    /// (the account is looked up by the outbox sender), and the same when a
    /// rate limit holds the mail back.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed address, [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn request_password_reset(&self, email: &str, client: ClientInfo) -> Result<()> {
        self.request_mail(MailPurpose::ResetPassword, email, client)
            .await
    }

    /// Sets a new password with a reset token: under the password policy;
    /// every session of the user ends, the address counts as verified (the
    /// mailbox was just proven), and a notice goes to it. Returns how many
    /// sessions ended.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::WeakPassword`],
    /// [`Error::ResetTokenInvalid`] (unknown, used, for another purpose,
    /// the password changed since, or the account disabled),
    /// [`Error::ResetTokenExpired`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        client: ClientInfo,
    ) -> Result<usize> {
        let new_password = Password::parse(new_password).map_err(|err| match err {
            Error::InvalidInput(reason) => {
                Error::InvalidInput(reason.replacen("password:", "newPassword:", 1))
            }
            other => other,
        })?;
        let digest = crate::model::TokenDigest::of(token);
        // The policy needs the user's names: look before hashing, decide in
        // the transaction.
        let Some(found) = self.inner.store.mail_token(&digest).await? else {
            return Err(Error::ResetTokenInvalid);
        };
        let user = self.user(&found.user_id).await.map_err(|err| match err {
            Error::UserNotFound => Error::ResetTokenInvalid,
            other => other,
        })?;
        password::check_policy(&new_password, &user.username, &user.email)?;
        let hash = self
            .inner
            .passwords
            .hash(&new_password, Lane::Stranger)
            .await?;
        let now = self.now();
        let (user, ended) = self
            .inner
            .store
            .redeem_mail_token(
                &digest,
                &self.ending(now, RevokeReason::PasswordChange),
                |token, user| {
                    let (token, mut user) = usable(
                        token,
                        user,
                        MailPurpose::ResetPassword,
                        now,
                        Error::ResetTokenInvalid,
                        Error::ResetTokenExpired,
                    )?;
                    if user.disabled
                        || token.email != user.email
                        || token.security_stamp != user.security_stamp
                    {
                        return Err(Error::ResetTokenInvalid);
                    }
                    user.set_password(hash.clone(), token.password_version)
                        .map_err(|_| Error::ResetTokenInvalid)?;
                    user.email_verified = true;
                    // Proof of the mailbox: a locked second factor opens again.
                    user.password_resets = user.password_resets.wrapping_add(1);
                    let notice = self.notice(&user, MailKind::PasswordChangedNotice, now);
                    Ok(Redeemed {
                        user,
                        mails: vec![notice],
                    })
                },
            )
            .await?;
        self.inner.metrics.sessions_ended(ended);
        let event = self
            .event(AuditKind::PasswordReset, &client)
            .user(&user.id)
            .detail(format!("revoked={ended}"));
        self.record(event, Durability::Wait).await?;
        self.wake_outbox();
        tracing::info!(user_id = %user.id, revoked = ended, "password reset");
        Ok(ended)
    }

    /// Asks to move the caller's account to `new_email`: checks the
    /// password (rate-limited like a login), then queues a confirmation
    /// link to the new address and a notice to the current one. Nothing
    /// changes until the link is used.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::RateLimited`],
    /// [`Error::InvalidCredentials`], [`Error::UserExists`] (the address
    /// has an account), [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn request_email_change(
        &self,
        caller: &Authenticated,
        new_email: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<()> {
        let new_email = Email::parse(new_email)?;
        let password = Password::presented(password)?;
        let user = self
            .verified_user(&caller.claims.sub, &password, &client)
            .await?;
        if new_email.as_str() == user.email {
            return Err(Error::InvalidInput(
                "newEmail: that is already the account's address".into(),
            ));
        }
        if self.inner.store.email_taken(new_email.as_str()).await? {
            return Err(Error::UserExists);
        }
        if self.mail_allowed(MailPurpose::ChangeEmail, new_email.as_str(), &client) {
            let now = self.now();
            let notice = self.notice(&user, MailKind::EmailChangeNotice, now);
            self.issue(
                &user,
                MailPurpose::ChangeEmail,
                new_email.as_str(),
                vec![notice],
                None,
            )
            .await?;
            let event = self
                .event(AuditKind::EmailChangeRequested, &client)
                .user(&user.id)
                .detail(format!("from={}; to={}", user.email, new_email.as_str()));
            self.record(event, Durability::Wait).await?;
            self.wake_outbox();
            tracing::info!(user_id = %user.id, "email change requested");
        }
        Ok(())
    }

    /// Moves an account to the address its email-change token was sent
    /// to, verified; the email index changes in the same transaction.
    ///
    /// # Errors
    /// [`Error::EmailChangeTokenInvalid`] (unknown, used, for another
    /// purpose, or another change went through since),
    /// [`Error::EmailChangeTokenExpired`], [`Error::UserExists`] (the
    /// address was taken meanwhile), [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn confirm_email_change(&self, token: &str, client: ClientInfo) -> Result<User> {
        let now = self.now();
        let before = self
            .inner
            .store
            .mail_token(&crate::model::TokenDigest::of(token))
            .await?
            .map(|token| token.current_email);
        let (user, _) = self
            .inner
            .store
            .redeem_mail_token(
                &crate::model::TokenDigest::of(token),
                &self.ending(now, RevokeReason::PasswordChange),
                |token, user| {
                    let (token, mut user) = usable(
                        token,
                        user,
                        MailPurpose::ChangeEmail,
                        now,
                        Error::EmailChangeTokenInvalid,
                        Error::EmailChangeTokenExpired,
                    )?;
                    // A password change or reset, a log-out-everywhere or a
                    // disable since the request voids it: the owner's remedies
                    // when the notice says someone else asked.
                    if token.current_email != user.email
                        || user.disabled
                        || token.security_stamp != user.security_stamp
                    {
                        return Err(Error::EmailChangeTokenInvalid);
                    }
                    user.email = token.email;
                    user.email_verified = true;
                    Ok(Redeemed {
                        user,
                        mails: Vec::new(),
                    })
                },
            )
            .await?;
        let from = before.unwrap_or_default();
        let event = self
            .event(AuditKind::EmailChanged, &client)
            .user(&user.id)
            .detail(format!("from={from}; to={}", user.email));
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, "email changed");
        Ok(user)
    }

    /// Queues the verification mail of a new account.
    pub(super) async fn send_verification(&self, user: &User, client: &ClientInfo) -> Result<()> {
        self.issue(
            user,
            MailPurpose::VerifyEmail,
            &user.email,
            Vec::new(),
            None,
        )
        .await?;
        let event = self
            .event(AuditKind::VerificationSent, client)
            .user(&user.id);
        self.record(event, Durability::Wait).await?;
        self.wake_outbox();
        Ok(())
    }

    /// One pass over the outbox: resolves the requests that are due into
    /// mails (or nothing, for an address without an account), and delivers
    /// the mails that are due, retrying failures with a doubling pause and
    /// giving up after a while (logged, and in the audit log). Returns how
    /// many entries it handled. The background sender calls it whenever a
    /// mail is queued and every second.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn deliver_outbox(&self) -> Result<usize> {
        let now = self.now();
        let due = self.inner.store.outbox_due(now, OUTBOX_BATCH).await?;
        let handled = due.len();
        // Mails written as files leave the outbox once the batch is durable.
        let mut written = Vec::new();
        for (key, entry) in due {
            match &entry.job {
                OutboxJob::Deliver(mail) => {
                    if let Some(file) = self.deliver(&key, entry.clone(), mail).await? {
                        written.push(file);
                    }
                }
                OutboxJob::Requested {
                    purpose,
                    email,
                    client,
                } => {
                    let asked = Asked {
                        client,
                        at: entry.created_at,
                    };
                    self.resolve(&key, email, *purpose, &asked).await?;
                }
            }
        }
        if !written.is_empty() {
            match self.inner.mailer.sync_files().await {
                Ok(()) => {
                    for key in &written {
                        self.inner.store.outbox_remove(key).await?;
                    }
                }
                // Left in the outbox: written again next time.
                Err(failure) => {
                    tracing::warn!(error = %failure.reason, "mail files not durable; they will be written again");
                }
            }
        }
        if handled > 0 {
            self.inner.store.durable().await?;
        }
        Ok(handled)
    }

    /// The outbox as stored (mails waiting or given up on, requests not yet
    /// looked at), oldest first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        self.inner.store.outbox().await
    }

    /// Waits until something is queued (or `timeout` passes).
    pub(crate) async fn outbox_queued(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.outbox_wake.notified()).await;
    }

    /// Where mail goes, for the log (never credentials).
    pub(crate) fn mail_destination(&self) -> String {
        self.inner.mailer.describe()
    }

    fn wake_outbox(&self) {
        self.inner.outbox_wake.notify_one();
    }

    fn ending(&self, now: u64, reason: RevokeReason) -> Ending {
        Ending {
            now,
            reason,
            keep: None,
        }
    }

    /// Whether the mail rate limits let a mail to `address` go; a refusal
    /// is counted and logged, never answered differently.
    fn mail_allowed(&self, purpose: MailPurpose, address: &str, client: &ClientInfo) -> bool {
        let limits = &self.inner.limits;
        let outcome = limits
            .mail_request(client.ip)
            .and_then(|()| limits.mail_to(purpose_name(purpose), address));
        match outcome {
            Ok(()) => true,
            Err(limited) => {
                tracing::info!(rule = limited.rule, "mail held back by a rate limit");
                self.inner.metrics.rate_limited(limited.rule);
                false
            }
        }
    }

    /// Queues a request for a mail of `purpose` to `email`, for the outbox
    /// sender to look at, unless a mail limit holds it back; the answer is
    /// the same either way.
    async fn request_mail(
        &self,
        purpose: MailPurpose,
        email: &str,
        client: ClientInfo,
    ) -> Result<()> {
        let email = Email::parse(email)?;
        if !self.mail_allowed(purpose, email.as_str(), &client) {
            return Ok(());
        }
        let job = OutboxJob::Requested {
            purpose,
            email: email.as_str().to_owned(),
            client,
        };
        let entry = OutboxEntry::new(new_id(), job, self.now());
        self.inner.store.queue(&[entry], None).await?;
        self.inner.store.durable().await?;
        self.wake_outbox();
        Ok(())
    }

    /// Stores a new token for `user` with its mail to `to` (and `more`
    /// mails), replacing the outbox entry `done`, in one transaction.
    async fn issue(
        &self,
        user: &User,
        purpose: MailPurpose,
        to: &str,
        more: Vec<OutboxEntry>,
        done: Option<&OutboxKey>,
    ) -> Result<()> {
        let now = self.now();
        let config = &self.inner.config;
        let ttl = match purpose {
            MailPurpose::VerifyEmail | MailPurpose::ChangeEmail => config.verify_ttl,
            MailPurpose::ResetPassword => config.reset_ttl,
        };
        let (token, digest) = new_mail_token();
        let record = MailToken {
            purpose,
            user_id: user.id.clone(),
            email: to.to_owned(),
            current_email: user.email.clone(),
            password_version: user.password_version,
            security_stamp: user.security_stamp,
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs()),
        };
        let (kind, page) = match purpose {
            MailPurpose::VerifyEmail => (MailKind::Verification, VERIFY_PAGE),
            MailPurpose::ResetPassword => (MailKind::PasswordReset, RESET_PAGE),
            MailPurpose::ChangeEmail => (MailKind::EmailChange, CONFIRM_EMAIL_PAGE),
        };
        let link = format!("{}{page}?token={}", self.link_base(), token.expose());
        let mail = compose(kind, user, to, Some((&link, ttl)));
        let mut mails = vec![OutboxEntry::new(new_id(), OutboxJob::Deliver(mail), now)];
        mails.extend(more);
        self.inner
            .store
            .issue_mail_token(&digest, &record, &mails, done)
            .await
    }

    /// A notice (no link, no token) to `user`'s current address.
    fn notice(&self, user: &User, kind: MailKind, now: u64) -> OutboxEntry {
        let mail = compose(kind, user, &user.email, None);
        OutboxEntry::new(new_id(), OutboxJob::Deliver(mail), now)
    }

    /// Where the links in mails point: `--email-link-base`, else
    /// `<public-url>/account`.
    fn link_base(&self) -> String {
        let config = &self.inner.config;
        match (&config.email_link_base, &config.public_url) {
            (Some(base), _) => base.trim_end_matches('/').to_owned(),
            (None, Some(public)) => format!("{}/account", public.trim_end_matches('/')),
            (None, None) => "http://127.0.0.1:5000/account".to_owned(),
        }
    }

    /// Turns a queued request into a token and its mail, for an account
    /// that should get one; drops it otherwise.
    async fn resolve(
        &self,
        key: &OutboxKey,
        email: &str,
        purpose: MailPurpose,
        asked: &Asked<'_>,
    ) -> Result<()> {
        let user = self.inner.store.user_by_email(email).await?;
        let wanted = match (&user, purpose) {
            (Some(user), MailPurpose::ResetPassword) => !user.disabled,
            (Some(user), MailPurpose::VerifyEmail) => !user.disabled && !user.email_verified,
            _ => false,
        };
        let Some(user) = user.filter(|_| wanted) else {
            self.inner.store.queue(&[], Some(key)).await?;
            return Ok(());
        };
        self.issue(&user, purpose, &user.email, Vec::new(), Some(key))
            .await?;
        let kind = match purpose {
            MailPurpose::ResetPassword => AuditKind::PasswordResetRequested,
            _ => AuditKind::VerificationSent,
        };
        // Audited as of the request, from its client, not as of the sender's turn.
        let event = AuditEvent::new(kind, asked.at, asked.client).user(&user.id);
        self.inner.store.append_audit(&event).await?;
        Ok(())
    }

    /// Delivers one mail; on failure, schedules the next attempt or gives
    /// up. Returns the entry of a mail written as a file, which leaves the
    /// outbox once the file is durable.
    async fn deliver(
        &self,
        key: &OutboxKey,
        mut entry: OutboxEntry,
        mail: &Mail,
    ) -> Result<Option<OutboxKey>> {
        match self.inner.mailer.deliver(mail, &entry.id).await {
            Ok(delivered) => {
                self.inner.metrics.mail(MailOutcome::Delivered);
                match delivered {
                    Delivered::Relay => {
                        self.inner.store.outbox_remove(key).await?;
                        tracing::info!(mail_id = %entry.id, kind = mail.kind.as_str(), user_id = %mail.user_id, "mail handed to the SMTP relay");
                    }
                    Delivered::File(path) => {
                        tracing::info!(mail_id = %entry.id, kind = mail.kind.as_str(), user_id = %mail.user_id, file = %path.display(), "mail written to the file outbox");
                        return Ok(Some(key.clone()));
                    }
                }
            }
            Err(Failure { permanent, reason }) => {
                let now = self.now();
                entry.attempts += 1;
                entry.last_error = Some(reason.clone());
                let give_up = permanent || entry.attempts >= MAX_ATTEMPTS;
                self.inner.metrics.mail(match give_up {
                    true => MailOutcome::GivenUp,
                    false => MailOutcome::Retried,
                });
                if give_up {
                    entry.failed_at = Some(now);
                    tracing::error!(mail_id = %entry.id, kind = mail.kind.as_str(), user_id = %mail.user_id, attempts = entry.attempts, error = %reason, "mail given up on");
                } else {
                    let pause = FIRST_RETRY
                        .saturating_mul(1 << (entry.attempts - 1).min(20))
                        .min(LONGEST_RETRY);
                    entry.next_attempt_at = now.saturating_add(pause);
                    tracing::warn!(mail_id = %entry.id, kind = mail.kind.as_str(), user_id = %mail.user_id, attempts = entry.attempts, retry_in_s = pause, error = %reason, "mail not delivered; will retry");
                }
                self.inner.store.outbox_update(key, &entry).await?;
                // The first failure and the last go to the audit log, not
                // every retry of an outage.
                if entry.attempts == 1 || give_up {
                    let outcome = match give_up {
                        true => "given up",
                        false => "will retry",
                    };
                    let event = self
                        .event(AuditKind::MailFailed, &ClientInfo::default())
                        .user(&mail.user_id)
                        .detail(format!(
                            "mail={}; kind={}; attempts={}; {outcome}: {reason}",
                            entry.id,
                            mail.kind.as_str(),
                            entry.attempts
                        ));
                    self.inner.store.append_audit(&event).await?;
                }
            }
        }
        Ok(None)
    }
}

/// The name of a purpose, which keys its own per-address mail budget: a
/// stranger spending an address's verification budget (which sends nothing
/// to a verified account) cannot hold back its reset mails.
fn purpose_name(purpose: MailPurpose) -> &'static str {
    match purpose {
        MailPurpose::VerifyEmail => "verify",
        MailPurpose::ResetPassword => "reset",
        MailPurpose::ChangeEmail => "change",
    }
}

/// A lifetime as a person reads it: `24 hours`, `30 minutes`, `2 days`.
fn lifetime(ttl: Duration) -> String {
    let seconds = ttl.as_secs();
    let (count, unit) = match seconds {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s => (s.div_ceil(60), "minute"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

/// Who asked for a mail, and when.
struct Asked<'a> {
    client: &'a ClientInfo,
    at: u64,
}

/// The token and its user, if the token can be used for `purpose` at `now`.
fn usable(
    token: Option<MailToken>,
    user: Option<User>,
    purpose: MailPurpose,
    now: u64,
    invalid: Error,
    expired: Error,
) -> Result<(MailToken, User)> {
    let token = token.filter(|token| token.purpose == purpose);
    let (Some(token), Some(user)) = (token, user) else {
        return Err(invalid);
    };
    if token.user_id != user.id {
        return Err(invalid);
    }
    if now >= token.expires_at {
        return Err(expired);
    }
    Ok((token, user))
}

/// The text of a mail: `link` (with the time it works) for the mails that
/// carry one.
fn compose(kind: MailKind, user: &User, to: &str, link: Option<(&str, Duration)>) -> Mail {
    let name = &user.username;
    let (subject, body) = match (kind, link) {
        (MailKind::Verification, Some((link, ttl))) => (
            "Verify your email address",
            format!(
                "Hello {name},\n\nConfirm that this address is yours by opening this link (it works for {}):\n\n{link}\n\nIf you did not create an account, ignore this mail.\n",
                lifetime(ttl)
            ),
        ),
        (MailKind::PasswordReset, Some((link, ttl))) => (
            "Reset your password",
            format!(
                "Hello {name},\n\nSomeone asked to reset the password of your account. To choose a new one, open this link (it works for {}, once):\n\n{link}\n\nIf it was not you, ignore this mail: your password stays as it is.\n",
                lifetime(ttl)
            ),
        ),
        (MailKind::EmailChange, Some((link, ttl))) => (
            "Confirm your new email address",
            format!(
                "Hello {name},\n\nTo make this the address of your account, open this link (it works for {}):\n\n{link}\n\nIf you did not ask for this, ignore this mail.\n",
                lifetime(ttl)
            ),
        ),
        (MailKind::EmailChangeNotice, _) => (
            "Your email address is being changed",
            format!(
                "Hello {name},\n\nSomeone who knows your password asked to move your account to another address. It moves once that address confirms.\n\nIf it was not you, change your password now.\n"
            ),
        ),
        (MailKind::PasswordChangedNotice, _) => (
            "Your password was changed",
            format!(
                "Hello {name},\n\nThe password of your account was just reset, and every device was logged out.\n\nIf it was not you, reset it again at once and tell your administrator.\n"
            ),
        ),
        // A link mail without its link cannot happen; send the notice text.
        _ => (
            "About your account",
            format!("Hello {name},\n\nSomething changed on your account.\n"),
        ),
    };
    Mail {
        kind,
        user_id: user.id.clone(),
        to: to.to_owned(),
        subject: subject.to_owned(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_a_person_says_them() {
        let said = |seconds| lifetime(Duration::from_secs(seconds));
        assert_eq!(said(86_400), "1 day");
        assert_eq!(said(7 * 86_400), "7 days");
        assert_eq!(said(3600), "1 hour");
        assert_eq!(said(36 * 3600), "36 hours");
        assert_eq!(said(30 * 60), "30 minutes");
        assert_eq!(said(90), "2 minutes");
    }
}
