//! Second factors a signed-in user manages: setting up TOTP (pending
//! until its first code is confirmed), removing it, renewing recovery
//! codes; an administrator's reset of every factor. Each change is one
//! transaction with the account (see `storage::factors`) that also queues
//! a notice mail, and is audited. The code check is a pure function.

use crate::error::{Error, Result};
use crate::limits::Attempt;
use crate::mfa::{self, TotpKey};
use crate::model::{
    AuditKind, CODE_FAILURES_LOCK, CODE_FAILURES_NOTICE, ClientInfo, Factors, Mail, MailKind,
    MfaSummary, OutboxEntry, OutboxJob, RevokeReason, Secret, TotpFactor, UnixTime, User,
};
use crate::secrets::Sealer;
use crate::tokens::new_id;

use super::{Durability, Latchkey};

/// What a new TOTP factor hands the user, once.
#[derive(Debug)]
pub struct TotpSetup {
    /// The key, base32, for typing into an authenticator app.
    pub secret: Secret,
    /// The `otpauth://totp/…` URI (the QR code's content).
    pub otpauth_uri: Secret,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// What an account has besides its password, as its owner and
/// administrators see it (no secret).
#[derive(Debug, Clone)]
pub struct FactorDetails {
    /// Whether a confirmed TOTP factor guards the password login.
    pub totp: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: usize,
    /// The passkeys, oldest first.
    pub passkeys: Vec<crate::model::PasskeyRecord>,
    /// Wrong codes in a row (100 lock the factor).
    pub wrong_codes_in_a_row: u32,
}

/// How a presented code matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CodeCheck {
    /// A TOTP code of a step not accepted before.
    Totp,
    /// An unused recovery code (now removed).
    RecoveryCode,
    /// Neither.
    Wrong,
}

/// A code presented to prove the factor, judged: how it matched, and the
/// notice a run of wrong codes earns.
#[derive(Debug)]
pub(super) struct Proof {
    /// How the code matched.
    pub check: CodeCheck,
    /// A mail to the account when wrong codes reach a threshold.
    pub notice: Option<OutboxEntry>,
}

/// Judges `code` as proof that `user` holds their factor: refused while
/// the factor is locked by wrong codes in a row; a wrong one is counted
/// (the account is told at [`CODE_FAILURES_NOTICE`] and when the lock
/// falls at [`CODE_FAILURES_LOCK`]); a right one starts the count again.
///
/// # Errors
/// [`Error::MfaLocked`], [`Error::Storage`].
pub(super) fn prove(
    factors: &mut Factors,
    user: &User,
    sealer: &Sealer,
    code: &str,
    now: UnixTime,
) -> Result<Proof> {
    if factors.locked(user) {
        return Err(Error::MfaLocked);
    }
    let check = check_code(factors, &user.id, sealer, code, now)?;
    let notice = match check {
        CodeCheck::Wrong => match factors.count_failure(user) {
            CODE_FAILURES_NOTICE => Some(notice(user, FactorChange::CodesGuessed, now)),
            CODE_FAILURES_LOCK => Some(notice(user, FactorChange::Locked, now)),
            _ => None,
        },
        CodeCheck::Totp | CodeCheck::RecoveryCode => {
            factors.clear_failures();
            None
        }
    };
    Ok(Proof { check, notice })
}

/// Checks `code` against `owner`'s factors at `now`: a TOTP code (of a
/// step after the last one accepted: no replay) or an unused recovery
/// code. A match is marked used in `factors` (the accepted step is kept;
/// the recovery code removed). `sealer` opens the stored TOTP key.
///
/// # Errors
/// [`Error::Storage`] when the stored key does not open.
pub(super) fn check_code(
    factors: &mut Factors,
    owner: &str,
    sealer: &Sealer,
    code: &str,
    now: UnixTime,
) -> Result<CodeCheck> {
    if let Some(totp) = factors.totp.as_mut() {
        let key = TotpKey::from_bytes(sealer.open_sealed(&totp.sealed_key, owner)?)?;
        if let Some(step) = key.check(code, now) {
            if step <= totp.last_step {
                return Ok(CodeCheck::Wrong);
            }
            totp.last_step = step;
            return Ok(CodeCheck::Totp);
        }
    }
    if let Some(digest) = mfa::recovery_digest(code)
        && let Some(at) = factors
            .recovery_codes
            .iter()
            .position(|stored| *stored == digest)
    {
        factors.recovery_codes.remove(at);
        return Ok(CodeCheck::RecoveryCode);
    }
    Ok(CodeCheck::Wrong)
}

impl Latchkey {
    /// Sets up a TOTP factor for `user_id`, pending until
    /// [`Latchkey::confirm_totp`]: login does not ask for it before. A
    /// pending one is replaced. The session `session_id` must have signed
    /// in within the last 10 minutes: a stolen access token alone cannot
    /// put a factor of the thief's on the account.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`], [`Error::MfaAlreadyEnabled`]
    /// when a confirmed one exists, [`Error::UserNotFound`],
    /// [`Error::Storage`].
    pub async fn set_up_totp(&self, user_id: &str, session_id: &str) -> Result<TotpSetup> {
        self.recent_sign_in(user_id, session_id).await?;
        let key = TotpKey::generate();
        let now = self.now();
        let sealed = self.inner.sealer.seal(key.as_bytes(), user_id);
        let (user, ()) = self
            .inner
            .store
            .change_factors(user_id, |_, factors| {
                if factors.totp_confirmed() {
                    return Err(Error::MfaAlreadyEnabled);
                }
                factors.totp = Some(TotpFactor {
                    sealed_key: sealed.clone(),
                    created_at: now,
                    confirmed_at: None,
                    last_step: 0,
                });
                Ok(((), None))
            })
            .await?;
        self.inner.store.durable().await?;
        let uri = key.otpauth_uri(&self.totp_issuer(), &user.email)?;
        Ok(TotpSetup {
            secret: key.base32(),
            qr_svg: mfa::qr_svg(&uri)?,
            otpauth_uri: Secret::new(uri),
        })
    }

    /// Confirms the pending TOTP factor with its first `code`: from now
    /// on a password login asks for a code. Returns the recovery codes,
    /// shown this once (only their digests are kept).
    ///
    /// # Errors
    /// [`Error::MfaCodeInvalid`], [`Error::MfaNotEnabled`] (nothing
    /// pending), [`Error::MfaAlreadyEnabled`], [`Error::RateLimited`],
    /// [`Error::Storage`].
    pub async fn confirm_totp(
        &self,
        user_id: &str,
        code: &str,
        client: ClientInfo,
    ) -> Result<Vec<Secret>> {
        self.holder_attempt(user_id, &client).await?;
        let now = self.now();
        let codes = mfa::new_recovery_codes();
        let sealer = &self.inner.sealer;
        let (user, ()) = self
            .inner
            .store
            .change_factors(user_id, |user, factors| {
                match &factors.totp {
                    None => return Err(Error::MfaNotEnabled),
                    Some(totp) if totp.confirmed_at.is_some() => {
                        return Err(Error::MfaAlreadyEnabled);
                    }
                    Some(_) => {}
                }
                // Only the pending key counts here, not a recovery code.
                factors.recovery_codes.clear();
                if check_code(factors, &user.id, sealer, code, now)? != CodeCheck::Totp {
                    return Err(Error::MfaCodeInvalid);
                }
                if let Some(totp) = factors.totp.as_mut() {
                    totp.confirmed_at = Some(now);
                }
                factors.recovery_codes = codes.iter().map(|(_, digest)| *digest).collect();
                Ok(((), Some(notice(user, FactorChange::TotpOn, now))))
            })
            .await?;
        self.factor_changed(&user, AuditKind::TotpEnabled, None, &client)
            .await?;
        Ok(codes.into_iter().map(|(code, _)| code).collect())
    }

    /// Removes the TOTP factor (confirmed or pending) and the recovery
    /// codes, proven by a TOTP or recovery `code`.
    ///
    /// # Errors
    /// [`Error::MfaCodeInvalid`], [`Error::MfaLocked`],
    /// [`Error::MfaNotEnabled`], [`Error::RateLimited`], [`Error::Storage`].
    pub async fn remove_totp(&self, user_id: &str, code: &str, client: ClientInfo) -> Result<()> {
        let change = ProvenChange {
            has_factor: |factors: &Factors| factors.totp.is_some(),
            apply: |factors: &mut Factors| {
                factors.totp = None;
                factors.recovery_codes.clear();
            },
            notice: FactorChange::TotpOff,
            audit: AuditKind::TotpDisabled,
        };
        self.change_with_code(user_id, code, &client, change).await
    }

    /// Replaces the recovery codes with a new set, proven by a TOTP or
    /// recovery `code`; the old set stops working. Returns the new codes,
    /// shown this once.
    ///
    /// # Errors
    /// [`Error::MfaCodeInvalid`], [`Error::MfaLocked`],
    /// [`Error::MfaNotEnabled`] (no confirmed TOTP),
    /// [`Error::RateLimited`], [`Error::Storage`].
    pub async fn renew_recovery_codes(
        &self,
        user_id: &str,
        code: &str,
        client: ClientInfo,
    ) -> Result<Vec<Secret>> {
        let codes = mfa::new_recovery_codes();
        let change = ProvenChange {
            has_factor: Factors::totp_confirmed,
            apply: |factors: &mut Factors| {
                factors.recovery_codes = codes.iter().map(|(_, digest)| *digest).collect();
            },
            notice: FactorChange::CodesRenewed,
            audit: AuditKind::RecoveryCodesRenewed,
        };
        self.change_with_code(user_id, code, &client, change)
            .await?;
        Ok(codes.into_iter().map(|(code, _)| code).collect())
    }

    /// A change a signed-in user proves with a code (rate-limited as their
    /// own attempts): refused without the factor, counted when the code is
    /// wrong (the count is committed, with its notice), applied with its
    /// notice and audited when it is right.
    async fn change_with_code(
        &self,
        user_id: &str,
        code: &str,
        client: &ClientInfo,
        change: ProvenChange<impl Fn(&Factors) -> bool, impl Fn(&mut Factors)>,
    ) -> Result<()> {
        self.holder_attempt(user_id, client).await?;
        let now = self.now();
        let sealer = &self.inner.sealer;
        let (user, proven) = self
            .inner
            .store
            .change_factors(user_id, |user, factors| {
                if !(change.has_factor)(factors) {
                    return Err(Error::MfaNotEnabled);
                }
                let proof = prove(factors, user, sealer, code, now)?;
                if proof.check == CodeCheck::Wrong {
                    // Committed: the wrong code counts.
                    return Ok((Err(Error::MfaCodeInvalid), proof.notice));
                }
                (change.apply)(factors);
                Ok((Ok(()), Some(notice(user, change.notice.clone(), now))))
            })
            .await?;
        self.wake_on_failure(&proven);
        proven?;
        self.factor_changed(&user, change.audit, None, client).await
    }

    /// Removes every second factor and passkey of `user_id` (an
    /// administrator's help for a user who lost them, or whose factors are
    /// locked by wrong codes), and ends the account's sessions (those of a
    /// lost device too); the password stays. `actor` (an administrator's id,
    /// or the command line) is named in the audit event, and the user is
    /// told by mail. Returns what was removed; with nothing to remove,
    /// nothing changes and nothing is sent.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    pub async fn reset_factors(
        &self,
        actor: &str,
        user_id: &str,
        client: ClientInfo,
    ) -> Result<MfaSummary> {
        let now = self.now();
        let (user, removed) = self
            .inner
            .store
            .change_factors(user_id, |user, factors| {
                let removed = factors.summary();
                let had_any = *factors != Factors::default();
                *factors = Factors::default();
                let notice = had_any.then(|| notice(user, FactorChange::Reset, now));
                Ok((removed, notice))
            })
            .await?;
        if removed == MfaSummary::default() {
            return Ok(removed);
        }
        let revoked = self
            .end_all_sessions(user_id, RevokeReason::Admin, &client)
            .await?;
        let detail = format!(
            "by={actor}; totp={}; passkeys={}; revoked={revoked}",
            removed.totp, removed.passkeys
        );
        self.factor_changed(&user, AuditKind::MfaReset, Some(detail), &client)
            .await?;
        Ok(removed)
    }

    /// The second factors and passkeys of `user`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn factor_details(&self, user: &User) -> Result<FactorDetails> {
        let factors = self.inner.store.factors(&user.id).await?;
        Ok(FactorDetails {
            totp: factors.totp_confirmed(),
            recovery_codes_left: factors.recovery_codes.len(),
            wrong_codes_in_a_row: factors.failures(user),
            passkeys: factors.passkeys,
        })
    }

    /// Audits a factor change (its notice was queued with it) and wakes
    /// the mail sender; returns once both are on disk.
    pub(super) async fn factor_changed(
        &self,
        user: &User,
        kind: AuditKind,
        detail: Option<String>,
        client: &ClientInfo,
    ) -> Result<()> {
        let mut event = self.event(kind, client).user(&user.id);
        if let Some(detail) = detail {
            event = event.detail(detail);
        }
        self.record(event, Durability::Wait).await?;
        self.inner.outbox_wake.notify_one();
        tracing::info!(user_id = %user.id, change = kind.as_str(), "factors changed");
        Ok(())
    }

    /// A wrong code may have queued a notice (a run of them): the mail
    /// sender is woken for it.
    pub(super) fn wake_on_failure<T>(&self, outcome: &Result<T>) {
        if outcome.is_err() {
            self.inner.outbox_wake.notify_one();
        }
    }

    /// Counts a code attempt by a signed-in user against their own limit
    /// (the one re-entered passwords count against).
    async fn holder_attempt(&self, user_id: &str, client: &ClientInfo) -> Result<()> {
        self.limited(
            self.inner.limits.login(client.ip, Attempt::Holder(user_id)),
            Some(user_id),
            client,
        )
        .await
    }

    /// The service name authenticator apps show: the public URL's host.
    fn totp_issuer(&self) -> String {
        let public = self
            .inner
            .config
            .public_url
            .as_deref()
            .unwrap_or("latchkey");
        let host = public
            .split_once("://")
            .map_or(public, |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or("latchkey");
        match host.is_empty() {
            true => "latchkey".to_owned(),
            false => host.to_owned(),
        }
    }
}

/// A factor change proven by a code (see `Latchkey::change_with_code`).
struct ProvenChange<H, A> {
    /// Whether the account has the factor the code proves.
    has_factor: H,
    /// The change, once the code is right.
    apply: A,
    /// The notice it mails.
    notice: FactorChange,
    /// The audit event it writes.
    audit: AuditKind,
}

/// Which change a factor notice tells of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FactorChange {
    /// Wrong codes in a row reached [`CODE_FAILURES_NOTICE`].
    CodesGuessed,
    /// Wrong codes in a row reached [`CODE_FAILURES_LOCK`]: locked.
    Locked,
    /// TOTP was turned on.
    TotpOn,
    /// TOTP was removed.
    TotpOff,
    /// New recovery codes replaced the old ones.
    CodesRenewed,
    /// A passkey was added (its name).
    PasskeyAdded(String),
    /// A passkey was removed (its name).
    PasskeyRemoved(String),
    /// An administrator removed every factor.
    Reset,
}

/// The notice mail of a factor change, to the account's address.
pub(super) fn notice(user: &User, change: FactorChange, now: UnixTime) -> OutboxEntry {
    let mut advice = "If it was not you, change your password now and tell your administrator.";
    let (subject, what) = match change {
        FactorChange::CodesGuessed => (
            "Someone is trying codes on your account",
            format!(
                "{CODE_FAILURES_NOTICE} wrong authenticator codes were entered in a row on your account: someone who knows your password may be guessing codes."
            ),
        ),
        FactorChange::Locked => (
            "Two-step login is locked",
            format!(
                "{CODE_FAILURES_LOCK} wrong authenticator codes were entered in a row, so your account refuses every code until the password is reset (use \"forgot password\") or an administrator resets your second factors."
            ),
        ),
        FactorChange::TotpOn => (
            "Two-step login is on",
            "Your account now asks for a code from your authenticator app after the password. Keep your recovery codes somewhere safe.".to_owned(),
        ),
        FactorChange::TotpOff => (
            "Two-step login was turned off",
            "Your account no longer asks for a code after the password.".to_owned(),
        ),
        FactorChange::CodesRenewed => (
            "New recovery codes",
            "New recovery codes were made for your account; the old ones no longer work.".to_owned(),
        ),
        FactorChange::PasskeyAdded(name) => {
            // A passkey signs in without the password: changing the
            // password does not lock it out, removing it does.
            advice = "If it was not you, remove that passkey at once (it signs in without your password, so changing the password does not stop it), then change your password and tell your administrator.";
            (
                "A passkey was added",
                format!("A new passkey, \"{name}\", can now sign in to your account."),
            )
        }
        FactorChange::PasskeyRemoved(name) => (
            "A passkey was removed",
            format!(
                "The passkey \"{name}\" was removed from your account and can no longer sign in."
            ),
        ),
        FactorChange::Reset => (
            "Your second factors were reset",
            "An administrator removed the authenticator app and the passkeys of your account and ended its sessions; only the password signs in now.".to_owned(),
        ),
    };
    let mail = Mail {
        kind: MailKind::FactorNotice,
        user_id: user.id.clone(),
        to: user.email.clone(),
        subject: subject.to_owned(),
        body: format!("Hello {},\n\n{what}\n\n{advice}\n", user.username),
    };
    OutboxEntry::new(new_id(), OutboxJob::Deliver(mail), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_800_000_000;

    fn sealer() -> Sealer {
        Sealer::from_secret(&Secret::new("k".repeat(64)))
    }

    fn with_totp(key: &TotpKey, last_step: u64) -> Factors {
        Factors {
            totp: Some(TotpFactor {
                sealed_key: sealer().seal(key.as_bytes(), "u1"),
                created_at: 0,
                confirmed_at: Some(1),
                last_step,
            }),
            recovery_codes: Vec::new(),
            passkeys: Vec::new(),
            code_failures: Default::default(),
        }
    }

    #[test]
    fn a_code_is_judged_by_step_replay_and_recovery_codes() {
        let key = TotpKey::generate();
        let step = NOW / mfa::STEP_SECONDS;
        let codes = mfa::new_recovery_codes();
        let recovery = codes[0].0.expose().to_owned();
        let cases: Vec<(&str, Factors, String, CodeCheck)> = vec![
            (
                "current code",
                with_totp(&key, 0),
                key.code_at(NOW),
                CodeCheck::Totp,
            ),
            (
                "previous step's code",
                with_totp(&key, 0),
                key.code_at(NOW - 30),
                CodeCheck::Totp,
            ),
            (
                "replay of the step accepted",
                with_totp(&key, step),
                key.code_at(NOW),
                CodeCheck::Wrong,
            ),
            (
                "an older step after a newer was accepted",
                with_totp(&key, step),
                key.code_at(NOW - 30),
                CodeCheck::Wrong,
            ),
            (
                "wrong digits",
                with_totp(&key, 0),
                "000000".into(),
                CodeCheck::Wrong,
            ),
            (
                "recovery code",
                Factors {
                    recovery_codes: codes.iter().map(|(_, d)| *d).collect(),
                    ..with_totp(&key, 0)
                },
                recovery.clone(),
                CodeCheck::RecoveryCode,
            ),
            (
                "recovery code already used",
                Factors {
                    recovery_codes: codes[1..].iter().map(|(_, d)| *d).collect(),
                    ..with_totp(&key, 0)
                },
                recovery.clone(),
                CodeCheck::Wrong,
            ),
            (
                "no factor at all",
                Factors::default(),
                key.code_at(NOW),
                CodeCheck::Wrong,
            ),
        ];
        for (case, mut factors, code, expected) in cases {
            let before = factors.clone();
            let checked = check_code(&mut factors, "u1", &sealer(), &code, NOW).expect("checked");
            assert_eq!(checked, expected, "{case}");
            match checked {
                CodeCheck::Wrong => assert_eq!(factors, before, "{case}: nothing used"),
                CodeCheck::Totp => assert!(
                    factors
                        .totp
                        .as_ref()
                        .is_some_and(|t| t.last_step >= step - 1),
                    "{case}: step kept"
                ),
                CodeCheck::RecoveryCode => assert_eq!(
                    factors.recovery_codes.len(),
                    before.recovery_codes.len() - 1,
                    "{case}: code used up"
                ),
            }
        }
    }
}
