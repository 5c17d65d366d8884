//! Logging in: check the password, then start a session (a new refresh-token
//! family) in one transaction that re-checks the account as stored at that
//! moment. The decisions are pure functions: [`judge_login`] after the hash
//! is verified, [`admit_login`] inside the transaction.

use crate::error::{Error, Result};
use crate::limits::Attempt;
use crate::metrics::LoginOutcome;
use crate::model::{
    Amr, AuditKind, Challenge, ChallengeKind, ClientInfo, Email, Factors, Password, RevokeReason,
    TokenDigest, UnixTime, User,
};
use crate::password::{self, Lane, Verified};
use crate::secrets::Sealer;
use crate::storage::{Ending, Judged, NewSession, Settle};
use crate::tokens::{new_id, new_mail_token};

use super::factors::{CodeCheck, Proof, prove};
use super::{Durability, Latchkey, TokenPair};

/// Seconds the second step of a login may take (the `mfaToken`'s life).
pub const SECOND_FACTOR_SECONDS: u64 = 300;
/// Wrong codes after which an `mfaToken` is dead.
pub const SECOND_FACTOR_TRIES: u32 = 5;

/// Which factor passed the second step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecondFactor {
    /// A TOTP code.
    Totp,
    /// A recovery code; `left` remain.
    RecoveryCode {
        /// Unused recovery codes after this one.
        left: usize,
    },
}

/// Judges the second step of a login, inside its transaction: the
/// challenge as stored, its account and factors as stored now, the
/// `sealer` of the TOTP key, and the `code` presented at `now`. A wrong code
/// is counted on the challenge (which dies at the fifth) and on the
/// account's run of wrong codes (see `factors::prove`: a notice at ten, a
/// lock at a hundred); a right one uses the challenge up and marks the
/// code used (a TOTP step is never accepted twice; a recovery code is
/// removed).
fn judge_second_step(
    challenge: Option<&Challenge>,
    user: Option<&User>,
    factors: &mut Factors,
    sealer: &Sealer,
    code: &str,
    now: UnixTime,
) -> Judged<SecondFactor> {
    let refuse = |error| Judged {
        settle: Settle::Remove,
        answer: Err(error),
        notice: None,
    };
    let Some(challenge) = challenge.filter(|challenge| now < challenge.expires_at) else {
        return refuse(Error::MfaTokenInvalid);
    };
    let ChallengeKind::SecondFactor {
        password_version,
        security_stamp,
        failures,
        ..
    } = &challenge.kind
    else {
        return refuse(Error::MfaTokenInvalid);
    };
    let Some(user) = user.filter(|user| Some(&user.id) == challenge.user_id.as_ref()) else {
        return refuse(Error::MfaTokenInvalid);
    };
    if user.password_version != *password_version || user.security_stamp != *security_stamp {
        return refuse(Error::MfaTokenInvalid);
    }
    if user.disabled {
        return refuse(Error::AccountDisabled);
    }
    if !factors.totp_confirmed() {
        // The factor was removed meanwhile: this step can no longer pass.
        return refuse(Error::MfaTokenInvalid);
    }
    let Proof { check, notice } = match prove(factors, user, sealer, code, now) {
        Ok(proof) => proof,
        Err(error) => return refuse(error),
    };
    match check {
        CodeCheck::Wrong => {
            let failures = failures.saturating_add(1);
            let settle = match failures >= SECOND_FACTOR_TRIES {
                true => Settle::Remove,
                false => {
                    let mut kept = challenge.clone();
                    if let ChallengeKind::SecondFactor {
                        failures: count, ..
                    } = &mut kept.kind
                    {
                        *count = failures;
                    }
                    Settle::Keep(kept)
                }
            };
            Judged {
                settle,
                answer: Err(Error::MfaLoginCodeInvalid),
                notice,
            }
        }
        CodeCheck::Totp => Judged {
            settle: Settle::Remove,
            answer: Ok(SecondFactor::Totp),
            notice: None,
        },
        CodeCheck::RecoveryCode => Judged {
            settle: Settle::Remove,
            answer: Ok(SecondFactor::RecoveryCode {
                left: factors.recovery_codes.len(),
            }),
            notice: None,
        },
    }
}

/// What a login attempt comes to once its password has been checked.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Refused: the error to answer and the audit record to keep.
    Refused {
        /// What the client is told.
        error: Error,
        /// The audit event's kind.
        kind: AuditKind,
        /// The audit event's detail.
        reason: &'static str,
    },
    /// The password is right and the account may log in; `rehash` when its
    /// hash was made with weaker settings than the current ones.
    Admitted {
        /// Whether to store a fresh hash of the password.
        rehash: bool,
    },
}

/// Judges a login from the account found (if any) and how the password
/// verified. An unknown email and a wrong password are the same refusal;
/// a disabled account is told so only after the right password.
fn judge_login(user: Option<&User>, verified: Verified) -> Verdict {
    let refused = |error, kind, reason| Verdict::Refused {
        error,
        kind,
        reason,
    };
    match user {
        None => refused(
            Error::InvalidCredentials,
            AuditKind::LoginFailed,
            "unknown_email",
        ),
        Some(_) if !verified.is_right() => refused(
            Error::InvalidCredentials,
            AuditKind::LoginFailed,
            "wrong_password",
        ),
        Some(user) if user.disabled => refused(
            Error::AccountDisabled,
            AuditKind::LoginRefused,
            "account_disabled",
        ),
        Some(user) => Verdict::Admitted {
            rehash: verified == Verified::RightAsTyped
                || password::needs_rehash(&user.password_hash),
        },
    }
}

/// Inside the session's transaction: admits the login only if the account
/// as stored now still has the password that was verified (`verified` is
/// the account as read before hashing) and is enabled. A change of password,
/// a disable or a deletion that committed while the hash was being checked
/// refuses the login, so it cannot start a session after the change. A
/// fresh hash (`rehashed`) replaces the stored one only if that is still
/// the hash that was verified.
fn admit_login(stored: Option<User>, verified: &User, rehashed: Option<&str>) -> Result<User> {
    let mut user = stored.ok_or(Error::InvalidCredentials)?;
    if user.password_version != verified.password_version {
        return Err(Error::InvalidCredentials);
    }
    if user.disabled {
        return Err(Error::AccountDisabled);
    }
    if let Some(hash) = rehashed
        && user.password_hash == verified.password_hash
    {
        user.password_hash = hash.to_owned();
    }
    Ok(user)
}

impl Latchkey {
    /// Checks credentials and starts a session: a new refresh-token family.
    /// An unknown email and a wrong password take the same time and give the
    /// same error. A stored hash made with weaker argon2 settings than the
    /// current ones is replaced by a fresh hash.
    ///
    /// `device_token` is the device token a previous login of this account
    /// handed this client ([`TokenPair::device_token`]): with it, the attempt
    /// counts against this device's own rate limit, not the account's, so
    /// strangers guessing the password cannot throttle the owner.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::RateLimited`],
    /// [`Error::InvalidCredentials`], [`Error::AccountDisabled`] (only
    /// after the right password), [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        device_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let answered = self.log_in(email, password, device_token, client).await;
        let metrics = &self.inner.metrics;
        metrics.login(match &answered {
            Ok(_) => LoginOutcome::Succeeded,
            Err(Error::InvalidCredentials) => LoginOutcome::WrongCredentials,
            Err(Error::RateLimited { .. }) => LoginOutcome::Throttled,
            Err(Error::Overloaded { .. }) => LoginOutcome::Overloaded,
            Err(Error::MfaRequired { .. }) => LoginOutcome::SecondFactorRequired,
            Err(_) => LoginOutcome::Refused,
        });
        answered
    }

    async fn log_in(
        &self,
        email: &str,
        password: &str,
        device_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let email = Email::parse(email)?;
        let password = Password::presented(password)?;
        let tokens = self.tokens();
        let devices = tokens.devices();
        let device =
            device_token.and_then(|token| devices.verify(token, email.as_str(), self.now()));
        let attempt = match &device {
            Some(device) => Attempt::KnownDevice(device),
            None => Attempt::Account(email.as_str()),
        };
        self.limited(self.inner.limits.login(client.ip, attempt), None, &client)
            .await?;
        let found = self.inner.store.user_by_email(email.as_str()).await?;
        let stored_hash = found.as_ref().map(|user| user.password_hash.as_str());
        // The owner's known devices go before strangers in the hash queue.
        let lane = match device {
            Some(_) => Lane::Known,
            None => Lane::Stranger,
        };
        let verified = self
            .inner
            .passwords
            .verify(&password, stored_hash, lane)
            .await?;
        let rehash = match judge_login(found.as_ref(), verified) {
            Verdict::Refused {
                error,
                kind,
                reason,
            } => {
                return Err(self
                    .refuse_login(found.as_ref(), error, kind, reason, &client)
                    .await?);
            }
            Verdict::Admitted { rehash } => rehash,
        };
        let Some(user) = found else {
            return Err(Error::Internal(
                "a login was admitted without an account".into(),
            ));
        };
        // Only now, after the right password: the answer says nothing about
        // an address to someone who does not know the password.
        self.require_verified(&user, &client).await?;
        if user.mfa.totp {
            if rehash {
                // The session waits for the code; the stronger hash need not.
                let hash = self.inner.passwords.hash(&password, lane).await?;
                let ending = Ending {
                    now: self.now(),
                    reason: RevokeReason::Admin,
                    keep: None,
                };
                self.inner
                    .store
                    .update_user(&user.id, &ending, |stored| {
                        if stored.password_hash == user.password_hash {
                            stored.password_hash = hash.clone();
                        }
                        Ok(())
                    })
                    .await?;
            }
            return Err(self
                .ask_second_factor(&user, device.as_deref(), &client)
                .await?);
        }
        let rehashed = match rehash {
            true => Some(self.inner.passwords.hash(&password, lane).await?),
            false => None,
        };
        let (user, mut pair) = self
            .begin_session(&user, &Amr::list(&[Amr::Pwd]), &client, None, |stored| {
                admit_login(stored, &user, rehashed.as_deref())
            })
            .await?;
        if rehashed.is_some() {
            tracing::info!(user_id = %user.id, "password re-hashed with current parameters");
        }
        pair.device_token = Some(devices.issue(&user.email, self.now()));
        Ok(pair)
    }

    /// Starts a session of `user` (as read before the login's slow part)
    /// with `amr`, in one transaction with `admit`, which re-checks the
    /// account as stored now; audits the login (`how` says with what,
    /// when not a password alone) and answers its tokens.
    pub(super) async fn begin_session(
        &self,
        user: &User,
        amr: &[String],
        client: &ClientInfo,
        how: Option<&str>,
        admit: impl Fn(Option<User>) -> Result<User>,
    ) -> Result<(User, TokenPair)> {
        let now = self.now();
        let session_id = new_id();
        let session_ends = now.saturating_add(self.inner.config.session_max_age.as_secs());
        let refresh = self
            .tokens()
            .issue_refresh(&user.id, &session_id, now, session_ends)?;
        let new = NewSession {
            id: &session_id,
            now,
            expires_at: refresh.expires_at,
            client,
            digest: &refresh.digest,
            jti: &refresh.jti,
            amr,
        };
        let user = match self.inner.store.start_session(&user.id, &new, admit).await {
            Ok(user) => user,
            Err(error @ (Error::InvalidCredentials | Error::AccountDisabled)) => {
                // The account changed while the login was under way.
                let (kind, reason) = match error {
                    Error::AccountDisabled => (AuditKind::LoginRefused, "disabled_meanwhile"),
                    _ => (AuditKind::LoginFailed, "password_changed_meanwhile"),
                };
                return Err(self
                    .refuse_login(Some(user), error, kind, reason, client)
                    .await?);
            }
            Err(other) => return Err(other),
        };
        self.inner.metrics.sessions_started(1);
        let pair = self.token_pair(&user, &session_id, amr, &refresh, now)?;
        let mut event = self
            .event(AuditKind::LoginSucceeded, client)
            .user(&user.id)
            .session(&session_id);
        if let Some(how) = how {
            event = event.detail(how);
        }
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, session_id = %session_id, amr = ?amr, "login succeeded");
        Ok((user, pair))
    }

    /// The answer to the right password of an account with a second
    /// factor: a single-use token for the code step, stored (and on disk)
    /// before it is handed out.
    async fn ask_second_factor(
        &self,
        user: &User,
        device: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Error> {
        let (token, digest) = new_mail_token();
        let now = self.now();
        let challenge = Challenge {
            kind: ChallengeKind::SecondFactor {
                password_version: user.password_version,
                security_stamp: user.security_stamp,
                device: device.map(str::to_owned),
                failures: 0,
            },
            user_id: Some(user.id.clone()),
            created_at: now,
            expires_at: now.saturating_add(SECOND_FACTOR_SECONDS),
        };
        let factors = self.inner.store.factors(&user.id).await?;
        if factors.locked(user) {
            return self
                .refuse_login(
                    Some(user),
                    Error::MfaLocked,
                    AuditKind::LoginRefused,
                    "second_factor_locked",
                    client,
                )
                .await;
        }
        self.inner.store.put_challenge(&digest, &challenge).await?;
        let mut methods = vec!["totp"];
        if !factors.recovery_codes.is_empty() {
            methods.push("recovery_code");
        }
        let event = self.event(AuditKind::MfaChallenged, client).user(&user.id);
        self.record(event, Durability::Wait).await?;
        tracing::info!(user_id = %user.id, "password right; second factor asked for");
        Ok(Error::MfaRequired { token, methods })
    }

    /// The second step of a login with TOTP: `code` (a TOTP code or a
    /// recovery code) for the `mfa_token` the password step answered.
    /// Starts the session exactly as [`Latchkey::login`] does, with `amr`
    /// `["pwd","otp","mfa"]`. A TOTP code is accepted once (a replay in
    /// its window is wrong), a recovery code once; five wrong codes end the
    /// token, and each counts against the login's rate limit.
    ///
    /// # Errors
    /// [`Error::MfaTokenInvalid`] (unknown, used, expired, or the account
    /// changed its password or ended its sessions since),
    /// [`Error::MfaLoginCodeInvalid`], [`Error::RateLimited`],
    /// [`Error::AccountDisabled`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn verify_second_factor(
        &self,
        mfa_token: &str,
        code: &str,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let answered = self.second_step(mfa_token, code, client).await;
        self.inner.metrics.login(match &answered {
            Ok(_) => LoginOutcome::Succeeded,
            Err(Error::MfaLoginCodeInvalid) => LoginOutcome::WrongCode,
            Err(Error::RateLimited { .. }) => LoginOutcome::Throttled,
            Err(_) => LoginOutcome::Refused,
        });
        answered
    }

    async fn second_step(
        &self,
        mfa_token: &str,
        code: &str,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let digest = TokenDigest::of(mfa_token);
        let now = self.now();
        let store = &self.inner.store;
        let Some(challenge) = store.challenge(&digest).await? else {
            // Guessing tokens costs a stranger the per-IP login budget.
            self.limited(self.inner.limits.passkey(client.ip), None, &client)
                .await?;
            return Err(Error::MfaTokenInvalid);
        };
        let (Some(user_id), ChallengeKind::SecondFactor { device, .. }) =
            (&challenge.user_id, &challenge.kind)
        else {
            return Err(Error::MfaTokenInvalid);
        };
        let Some(user) = store.user(user_id).await? else {
            return Err(Error::MfaTokenInvalid);
        };
        let attempt = match device {
            Some(device) => Attempt::KnownDevice(device),
            None => Attempt::Account(&user.email),
        };
        self.limited(self.inner.limits.login(client.ip, attempt), None, &client)
            .await?;
        let sealer = &self.inner.sealer;
        let settled = store
            .settle_challenge(&digest, user_id, |challenge, user, factors| {
                judge_second_step(challenge, user, factors, sealer, code, now)
            })
            .await;
        self.wake_on_failure(&settled);
        let passed = match settled {
            Ok((_, passed)) => passed,
            Err(
                error @ (Error::MfaLoginCodeInvalid
                | Error::AccountDisabled
                | Error::MfaTokenInvalid
                | Error::MfaLocked),
            ) => {
                let reason = match error {
                    Error::MfaLoginCodeInvalid => "wrong_code",
                    Error::AccountDisabled => "account_disabled",
                    Error::MfaLocked => "second_factor_locked",
                    _ => "second_step_void",
                };
                return Err(self
                    .refuse_login(Some(&user), error, AuditKind::LoginFailed, reason, &client)
                    .await?);
            }
            Err(other) => return Err(other),
        };
        if let SecondFactor::RecoveryCode { left } = passed {
            let event = self
                .event(AuditKind::RecoveryCodeUsed, &client)
                .user(&user.id)
                .detail(format!("left={left}"));
            self.record(event, Durability::NextFlush).await?;
        }
        let ChallengeKind::SecondFactor {
            password_version,
            security_stamp,
            ..
        } = challenge.kind
        else {
            return Err(Error::MfaTokenInvalid);
        };
        let how = match passed {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode { .. } => "recovery_code",
        };
        let amr = Amr::list(&[Amr::Pwd, Amr::Otp, Amr::Mfa]);
        let (user, mut pair) = self
            .begin_session(&user, &amr, &client, Some(how), |stored| {
                let user = stored.ok_or(Error::MfaTokenInvalid)?;
                if user.password_version != password_version
                    || user.security_stamp != security_stamp
                {
                    return Err(Error::InvalidCredentials);
                }
                if user.disabled {
                    return Err(Error::AccountDisabled);
                }
                Ok(user)
            })
            .await
            .map_err(|error| match error {
                // The password changed between the two steps: this
                // step is void, as its token says.
                Error::InvalidCredentials => Error::MfaTokenInvalid,
                other => other,
            })?;
        pair.device_token = Some(self.tokens().devices().issue(&user.email, now));
        Ok(pair)
    }

    /// With `--require-verified-email`, refuses (and audits) the login of
    /// an account whose address is not verified. Only for a caller who
    /// has proven who they are.
    ///
    /// # Errors
    /// [`Error::EmailNotVerified`], [`Error::Storage`].
    pub(super) async fn require_verified(&self, user: &User, client: &ClientInfo) -> Result<()> {
        if !self.inner.config.require_verified_email || user.email_verified {
            return Ok(());
        }
        Err(self
            .refuse_login(
                Some(user),
                Error::EmailNotVerified,
                AuditKind::LoginRefused,
                "email_not_verified",
                client,
            )
            .await?)
    }

    /// Logs and audits a refused login; returns the error to answer with.
    pub(super) async fn refuse_login(
        &self,
        user: Option<&User>,
        error: Error,
        kind: AuditKind,
        reason: &'static str,
        client: &ClientInfo,
    ) -> Result<Error> {
        tracing::info!(reason, "login refused");
        let mut event = self.event(kind, client).detail(reason);
        if let Some(user) = user {
            event = event.user(&user.id);
        }
        self.record(event, Durability::NextFlush).await?;
        Ok(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RateLimits};
    use crate::model::{Email, Username};

    fn user() -> User {
        User::new(
            "u1".into(),
            &Username::parse("alice").expect("valid"),
            &Email::parse("alice@example.com").expect("valid"),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            vec!["user".into()],
            1_000,
        )
    }

    fn disabled() -> User {
        User {
            disabled: true,
            ..user()
        }
    }

    fn refused(error: Error, kind: AuditKind, reason: &'static str) -> Verdict {
        Verdict::Refused {
            error,
            kind,
            reason,
        }
    }

    #[test]
    fn a_login_is_judged_by_account_password_and_state() {
        let weak = User {
            password_hash: "$argon2id$v=19$m=4096,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                .into(),
            ..user()
        };
        use Verified::{Right, RightAsTyped, Wrong};
        let failed = |reason| refused(Error::InvalidCredentials, AuditKind::LoginFailed, reason);
        let cases = [
            (None, Wrong, failed("unknown_email")),
            (Some(user()), Wrong, failed("wrong_password")),
            (Some(disabled()), Wrong, failed("wrong_password")),
            (
                Some(disabled()),
                Right,
                refused(
                    Error::AccountDisabled,
                    AuditKind::LoginRefused,
                    "account_disabled",
                ),
            ),
            (Some(user()), Right, Verdict::Admitted { rehash: false }),
            (Some(weak), Right, Verdict::Admitted { rehash: true }),
            (
                Some(user()),
                RightAsTyped,
                Verdict::Admitted { rehash: true },
            ),
        ];
        for (account, verified, expected) in cases {
            let case = format!(
                "{:?} verified={verified:?}",
                account.as_ref().map(|u| u.disabled)
            );
            assert_eq!(judge_login(account.as_ref(), verified), expected, "{case}");
        }
    }

    #[test]
    fn a_login_is_admitted_only_if_the_verified_password_is_still_current() {
        let verified = user();
        let mut changed = user();
        changed
            .set_password("$argon2id$new".into(), verified.password_version)
            .expect("set");
        let mut revoked_all = user();
        revoked_all.end_sessions();
        let cases: [(&str, Option<User>, Result<()>); 5] = [
            ("unchanged", Some(user()), Ok(())),
            (
                "password changed meanwhile",
                Some(changed),
                Err(Error::InvalidCredentials),
            ),
            (
                "disabled meanwhile",
                Some(disabled()),
                Err(Error::AccountDisabled),
            ),
            ("deleted meanwhile", None, Err(Error::InvalidCredentials)),
            // Ending sessions is not a new password: the login is a new session.
            ("sessions ended meanwhile", Some(revoked_all), Ok(())),
        ];
        for (case, stored, expected) in cases {
            let admitted = admit_login(stored, &verified, None).map(drop);
            assert_eq!(
                admitted.map_err(|err| err.code()),
                expected.map_err(|err| err.code()),
                "{case}"
            );
        }
    }

    #[test]
    fn a_fresh_hash_replaces_only_the_hash_that_was_verified() {
        let verified = user();
        let admitted = admit_login(Some(user()), &verified, Some("$fresh")).expect("admitted");
        assert_eq!(admitted.password_hash, "$fresh");
        // Another login re-hashed first: its hash stays, the login still counts.
        let rehashed_by_another = User {
            password_hash: "$other".into(),
            ..user()
        };
        let admitted =
            admit_login(Some(rehashed_by_another), &verified, Some("$fresh")).expect("admitted");
        assert_eq!(admitted.password_hash, "$other");
    }

    /// A case of the second step: name, challenge, account, factors, code,
    /// and what becomes of the challenge and the answer.
    type Case<'a> = (
        &'a str,
        Option<Challenge>,
        Option<User>,
        Factors,
        &'a str,
        Settle,
        Result<()>,
    );

    #[test]
    fn a_second_step_is_judged_by_its_challenge_account_and_code() {
        use crate::mfa::TotpKey;
        use crate::model::TotpFactor;
        const NOW: UnixTime = 1_800_000_000;
        let sealer = Sealer::from_secret(&crate::model::Secret::new("s".repeat(64)));
        let key = TotpKey::generate();
        let factors = || Factors {
            totp: Some(TotpFactor {
                sealed_key: sealer.seal(key.as_bytes(), "u1"),
                created_at: 0,
                confirmed_at: Some(1),
                last_step: 0,
            }),
            recovery_codes: Vec::new(),
            passkeys: Vec::new(),
            code_failures: Default::default(),
        };
        let challenge = |failures| Challenge {
            kind: ChallengeKind::SecondFactor {
                password_version: 0,
                security_stamp: 0,
                device: None,
                failures,
            },
            user_id: Some("u1".into()),
            created_at: NOW - 10,
            expires_at: NOW + 290,
        };
        let expired = Challenge {
            expires_at: NOW,
            ..challenge(0)
        };
        let foreign = Challenge {
            user_id: Some("u2".into()),
            ..challenge(0)
        };
        let passkey = Challenge {
            kind: ChallengeKind::PasskeySignIn { state: "{}".into() },
            ..challenge(0)
        };
        let mut changed = user();
        changed.password_version += 1;
        let mut ended = user();
        ended.end_sessions();
        let right = key.code_at(NOW);
        let counted = |failures| Settle::Keep(challenge(failures));
        let cases: Vec<Case<'_>> = vec![
            (
                "right code",
                Some(challenge(0)),
                Some(user()),
                factors(),
                &right,
                Settle::Remove,
                Ok(()),
            ),
            (
                "no challenge",
                None,
                Some(user()),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "expired",
                Some(expired),
                Some(user()),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "another user's",
                Some(foreign),
                Some(user()),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "not a second step",
                Some(passkey),
                Some(user()),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "account deleted",
                Some(challenge(0)),
                None,
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "password changed",
                Some(challenge(0)),
                Some(changed),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "sessions ended",
                Some(challenge(0)),
                Some(ended),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "disabled",
                Some(challenge(0)),
                Some(disabled()),
                factors(),
                &right,
                Settle::Remove,
                Err(Error::AccountDisabled),
            ),
            (
                "factor removed",
                Some(challenge(0)),
                Some(user()),
                Factors::default(),
                &right,
                Settle::Remove,
                Err(Error::MfaTokenInvalid),
            ),
            (
                "first wrong code",
                Some(challenge(0)),
                Some(user()),
                factors(),
                "000000",
                counted(1),
                Err(Error::MfaLoginCodeInvalid),
            ),
            (
                "fifth wrong code",
                Some(challenge(4)),
                Some(user()),
                factors(),
                "000000",
                Settle::Remove,
                Err(Error::MfaLoginCodeInvalid),
            ),
        ];
        for (case, stored, account, mut factors, code, settle, answer) in cases {
            let mut account = account;
            if let Some(account) = account.as_mut() {
                account.id = "u1".into();
            }
            let judged = judge_second_step(
                stored.as_ref(),
                account.as_ref(),
                &mut factors,
                &sealer,
                code,
                NOW,
            );
            assert_eq!(judged.settle, settle, "{case}");
            assert_eq!(judged.answer.map(drop), answer, "{case}");
        }
    }

    #[tokio::test]
    async fn a_login_upgrades_a_hash_made_with_weaker_settings() {
        const PASSWORD: &str = "correct horse battery staple";
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            limits: RateLimits::off(),
            hash_concurrency: Some(1),
            ..Config::with_data_dir(dir.path())
        };
        let core = Latchkey::open(config).await.expect("core");
        let user = core
            .create_user(
                "alice",
                "alice@example.com",
                PASSWORD,
                &["user"],
                Default::default(),
            )
            .await
            .expect("user");
        let weak = password::weak_hash(PASSWORD);
        let ending = Ending {
            now: core.now(),
            reason: RevokeReason::Admin,
            keep: None,
        };
        core.inner
            .store
            .update_user(&user.id, &ending, |stored| {
                stored.password_hash = weak.clone();
                Ok(())
            })
            .await
            .expect("downgraded");
        for _ in 0..2 {
            core.login("alice@example.com", PASSWORD, None, Default::default())
                .await
                .expect("login");
            let stored = core.user(&user.id).await.expect("user").password_hash;
            assert!(
                stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                "{stored}"
            );
        }

        // With TOTP on, the password step upgrades it too, though the
        // session waits for the code.
        let sealed = core
            .inner
            .sealer
            .seal(crate::mfa::TotpKey::generate().as_bytes(), &user.id);
        core.inner
            .store
            .change_factors(&user.id, |_, factors| {
                factors.totp = Some(crate::model::TotpFactor {
                    sealed_key: sealed.clone(),
                    created_at: 0,
                    confirmed_at: Some(1),
                    last_step: 0,
                });
                Ok(((), None))
            })
            .await
            .expect("totp on");
        core.inner
            .store
            .update_user(&user.id, &ending, |stored| {
                stored.password_hash = weak.clone();
                Ok(())
            })
            .await
            .expect("downgraded");
        let asked = core
            .login("alice@example.com", PASSWORD, None, Default::default())
            .await;
        assert!(matches!(asked, Err(Error::MfaRequired { .. })), "{asked:?}");
        let stored = core.user(&user.id).await.expect("user").password_hash;
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
    }
}
