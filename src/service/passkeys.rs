//! Passkeys: registering one (two steps, the server-side state kept as a
//! challenge), listing and removing them, and signing in with one (two
//! steps; with an email the options name that account's passkeys, without
//! one any discoverable passkey answers). A passkey is a whole login: the
//! session's `amr` says `hwk` or `swk`, and `mfa`. The ceremony checks
//! belong to `passkeys`; here the steps only load, judge inside one
//! transaction (a challenge is used once, whatever the outcome), and store.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{
    AuditKind, Challenge, ChallengeKind, ClientInfo, Email, PasskeyRecord, Secret, TokenDigest,
    UnixTime, User,
};
use crate::passkeys::{Assertion, CEREMONY_SECONDS, SignedIn};
use crate::storage::{Judged, Settle};
use crate::tokens::new_mail_token;

use super::factors::{FactorChange, notice};
use super::{Durability, Latchkey, TokenPair};

/// Passkeys an account may have.
pub const MAX_PASSKEYS: usize = 20;
/// Characters of a passkey's name.
pub const MAX_PASSKEY_NAME: usize = 64;
/// How recent a sign-in must be to remove a passkey.
pub const RECENT_SIGN_IN_SECONDS: u64 = 10 * 60;

/// The first step of a ceremony: what the browser needs, and the id to
/// finish it with.
#[derive(Debug)]
pub struct Ceremony {
    /// Sent back with the browser's response (single-use, 5 minutes).
    pub challenge_id: Secret,
    /// The options for `navigator.credentials` (`{"publicKey": …}`, binary
    /// fields base64url).
    pub options: Value,
}

impl Latchkey {
    /// Starts registering a passkey for the signed-in `user_id`, to be
    /// called `name` (default: "Passkey N"). The session `session_id` must
    /// have signed in within the last 10 minutes: a stolen access token
    /// alone cannot add a way into the account.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`], [`Error::RateLimited`],
    /// [`Error::InvalidInput`] for a name too long or with control
    /// characters,
    /// [`Error::PasskeyLimitReached`], [`Error::PasskeysUnavailable`],
    /// [`Error::UserNotFound`], [`Error::Storage`].
    pub async fn start_passkey_registration(
        &self,
        user_id: &str,
        session_id: &str,
        name: Option<&str>,
        client: ClientInfo,
    ) -> Result<Ceremony> {
        self.recent_sign_in(user_id, session_id).await?;
        // Each start stores a challenge: the per-IP login limit bounds them.
        self.limited(self.inner.limits.passkey(client.ip), Some(user_id), &client)
            .await?;
        let user = self
            .inner
            .store
            .user(user_id)
            .await?
            .ok_or(Error::UserNotFound)?;
        let factors = self.inner.store.factors(user_id).await?;
        if factors.passkeys.len() >= MAX_PASSKEYS {
            return Err(Error::PasskeyLimitReached);
        }
        let name = match name.map(str::trim).filter(|name| !name.is_empty()) {
            Some(name) => passkey_name(name)?,
            None => format!("Passkey {}", factors.passkeys.len() + 1),
        };
        let (options, state) = self
            .inner
            .passkeys
            .start_registration(&user, &factors.passkeys)?;
        let kind = ChallengeKind::PasskeyRegistration { state, name };
        let challenge_id = self.put_ceremony(kind, Some(user_id)).await?;
        Ok(Ceremony {
            challenge_id,
            options,
        })
    }

    /// Finishes a registration with the browser's `response`; the passkey
    /// can sign in from now on.
    ///
    /// # Errors
    /// [`Error::PasskeyRegistrationInvalid`] (a failed check, an unknown,
    /// used, expired or someone else's challenge, a passkey already
    /// registered), [`Error::PasskeyLimitReached`], [`Error::Storage`].
    pub async fn finish_passkey_registration(
        &self,
        user_id: &str,
        challenge_id: &str,
        response: &Value,
        client: ClientInfo,
    ) -> Result<PasskeyRecord> {
        self.inner.passkeys.available()?;
        let now = self.now();
        let passkeys = &self.inner.passkeys;
        let digest = TokenDigest::of(challenge_id);
        let (user, record) = self
            .inner
            .store
            .settle_challenge(&digest, user_id, |challenge, user, factors| {
                let used_up = |error| Judged {
                    settle: Settle::Remove,
                    answer: Err(error),
                    notice: None,
                };
                let invalid = |why: &str| Error::PasskeyRegistrationInvalid(why.to_owned());
                let Some(challenge) = challenge.filter(|challenge| {
                    now < challenge.expires_at && challenge.user_id.as_deref() == Some(user_id)
                }) else {
                    // Someone else's challenge is left alone for its owner.
                    let settle = match challenge {
                        Some(challenge) if challenge.user_id.as_deref() != Some(user_id) => {
                            Settle::Keep(challenge.clone())
                        }
                        _ => Settle::Remove,
                    };
                    return Judged {
                        settle,
                        answer: Err(invalid("unknown, used or expired challengeId")),
                        notice: None,
                    };
                };
                let ChallengeKind::PasskeyRegistration { state, name } = &challenge.kind else {
                    return used_up(invalid("challengeId is not a registration's"));
                };
                let Some(user) = user else {
                    return used_up(Error::UserNotFound);
                };
                if factors.passkeys.len() >= MAX_PASSKEYS {
                    return used_up(Error::PasskeyLimitReached);
                }
                let record = match passkeys.finish_registration(response, state, name, now) {
                    Ok(record) => record,
                    Err(error) => return used_up(error),
                };
                if factors.passkeys.iter().any(|known| known.id == record.id) {
                    return used_up(invalid("this passkey is already registered"));
                }
                factors.passkeys.push(record.clone());
                let added = notice(user, FactorChange::PasskeyAdded(record.name.clone()), now);
                Judged {
                    settle: Settle::Remove,
                    answer: Ok(record),
                    notice: Some(added),
                }
            })
            .await?;
        let user = user.ok_or(Error::UserNotFound)?;
        self.factor_changed(
            &user,
            AuditKind::PasskeyAdded,
            Some(format!("passkey={}", record.id)),
            &client,
        )
        .await?;
        Ok(record)
    }

    /// The passkeys of `user_id`, oldest first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        Ok(self.inner.store.factors(user_id).await?.passkeys)
    }

    /// Removes the passkey `passkey_id` of `user_id`, whose session
    /// `session_id` must have signed in within the last 10 minutes.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`], [`Error::PasskeyNotFound`],
    /// [`Error::Storage`].
    pub async fn remove_passkey(
        &self,
        user_id: &str,
        session_id: &str,
        passkey_id: &str,
        client: ClientInfo,
    ) -> Result<()> {
        self.recent_sign_in(user_id, session_id).await?;
        let now = self.now();
        let (user, ()) = self
            .inner
            .store
            .change_factors(user_id, |user, factors| {
                let at = factors
                    .passkeys
                    .iter()
                    .position(|record| record.id == passkey_id)
                    .ok_or(Error::PasskeyNotFound)?;
                let removed = factors.passkeys.remove(at);
                let notice = notice(user, FactorChange::PasskeyRemoved(removed.name), now);
                Ok(((), Some(notice)))
            })
            .await?;
        self.factor_changed(
            &user,
            AuditKind::PasskeyRemoved,
            Some(format!("passkey={passkey_id}")),
            &client,
        )
        .await
    }

    /// Starts a passkey sign-in. With `email`, the options list that
    /// account's passkeys (none when it has none, or no account has that
    /// address: the answer looks the same); without, any discoverable
    /// passkey may answer.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (a malformed email),
    /// [`Error::RateLimited`], [`Error::PasskeysUnavailable`],
    /// [`Error::Storage`].
    pub async fn start_passkey_sign_in(
        &self,
        email: Option<&str>,
        client: ClientInfo,
    ) -> Result<Ceremony> {
        // Each start stores a challenge: a stranger's budget is the
        // per-IP login limit.
        self.limited(self.inner.limits.passkey(client.ip), None, &client)
            .await?;
        let user = match email {
            Some(email) => {
                let email = Email::parse(email)?;
                self.inner.store.user_by_email(email.as_str()).await?
            }
            None => None,
        };
        let allowed = match &user {
            Some(user) => self.inner.store.factors(&user.id).await?.passkeys,
            None => Vec::new(),
        };
        let (options, state) = self.inner.passkeys.start_sign_in(&allowed)?;
        let user_id = user.as_ref().map(|user| user.id.as_str());
        let challenge_id = self
            .put_ceremony(ChallengeKind::PasskeySignIn { state }, user_id)
            .await?;
        Ok(Ceremony {
            challenge_id,
            options,
        })
    }

    /// Finishes a passkey sign-in with the browser's `response`: a session
    /// starts exactly as at [`Latchkey::login`]. The challenge is used up
    /// whatever the outcome.
    ///
    /// # Errors
    /// [`Error::PasskeyInvalid`] (a failed check, an unknown credential, a
    /// used or expired challenge, a cloned authenticator),
    /// [`Error::AccountDisabled`], [`Error::EmailNotVerified`] (with
    /// `--require-verified-email`), [`Error::RateLimited`],
    /// [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn finish_passkey_sign_in(
        &self,
        challenge_id: &str,
        response: &Value,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let answered = self.passkey_sign_in(challenge_id, response, client).await;
        self.inner.metrics.login(match &answered {
            Ok(_) => crate::metrics::LoginOutcome::Succeeded,
            Err(Error::PasskeyInvalid | Error::PasskeyCounterRegressed) => {
                crate::metrics::LoginOutcome::WrongCode
            }
            Err(Error::RateLimited { .. }) => crate::metrics::LoginOutcome::Throttled,
            Err(_) => crate::metrics::LoginOutcome::Refused,
        });
        answered
    }

    async fn passkey_sign_in(
        &self,
        challenge_id: &str,
        response: &Value,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        self.inner.passkeys.available()?;
        self.limited(self.inner.limits.passkey(client.ip), None, &client)
            .await?;
        let now = self.now();
        let digest = TokenDigest::of(challenge_id);
        let store = &self.inner.store;
        let challenge = store
            .challenge(&digest)
            .await?
            .ok_or(Error::PasskeyInvalid)?;
        let assertion = self.inner.passkeys.read_assertion(response)?;
        // The account: the one the sign-in started for, else the one the
        // authenticator names; they must agree when both are there.
        let user_id = match (&challenge.user_id, &assertion.user_id) {
            (Some(started), Some(named)) if started != named => return Err(Error::PasskeyInvalid),
            (Some(started), _) => started.clone(),
            (None, Some(named)) => named.clone(),
            (None, None) => return Err(Error::PasskeyInvalid),
        };
        let passkeys = &self.inner.passkeys;
        let settled = store
            .settle_challenge(&digest, &user_id, |challenge, user, factors| {
                let answer = judge_sign_in(challenge, user, &assertion, now, |state, record| {
                    let at = factors
                        .passkeys
                        .iter()
                        .position(|known| known.id == record)
                        .ok_or(Error::PasskeyInvalid)?;
                    let mut updated = factors.passkeys[at].clone();
                    let signed_in =
                        passkeys.finish_sign_in(&assertion, state, &mut updated, now)?;
                    factors.passkeys[at] = updated;
                    Ok(signed_in)
                });
                Judged {
                    settle: Settle::Remove,
                    answer,
                    notice: None,
                }
            })
            .await;
        let (user, signed_in) = match settled {
            Ok((Some(user), signed_in)) => (user, signed_in),
            Ok((None, _)) => return Err(Error::PasskeyInvalid),
            Err(error @ (Error::PasskeyInvalid | Error::PasskeyCounterRegressed)) => {
                let known = store.user(&user_id).await?;
                if error == Error::PasskeyCounterRegressed {
                    let event = self
                        .event(AuditKind::PasskeyCounterRegressed, &client)
                        .user(&user_id)
                        .detail(format!("passkey={}", assertion.credential_id));
                    self.record(event, Durability::NextFlush).await?;
                    tracing::warn!(user_id = %user_id, "a passkey's sign counter went backwards: it may be cloned");
                }
                return Err(self
                    .refuse_login(
                        known.as_ref(),
                        Error::PasskeyInvalid,
                        crate::model::AuditKind::LoginFailed,
                        "passkey_failed",
                        &client,
                    )
                    .await?);
            }
            Err(error) => return Err(error),
        };
        if user.disabled {
            return Err(self
                .refuse_login(
                    Some(&user),
                    Error::AccountDisabled,
                    AuditKind::LoginRefused,
                    "account_disabled",
                    &client,
                )
                .await?);
        }
        self.require_verified(&user, &client).await?;
        let stamp = user.security_stamp;
        let (user, mut pair) = self
            .begin_session(&user, &signed_in.amr, &client, Some("passkey"), |stored| {
                let user = stored.ok_or(Error::PasskeyInvalid)?;
                if user.disabled {
                    return Err(Error::AccountDisabled);
                }
                if user.security_stamp != stamp {
                    return Err(Error::InvalidCredentials);
                }
                Ok(user)
            })
            .await
            .map_err(|error| match error {
                // The account ended its sessions meanwhile.
                Error::InvalidCredentials => Error::PasskeyInvalid,
                other => other,
            })?;
        pair.device_token = Some(self.tokens().devices().issue(&user.email, now));
        Ok(pair)
    }

    /// Refuses unless the session `session_id` of `user_id` signed in
    /// (not merely refreshed) within the last 10 minutes.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`], [`Error::Storage`].
    pub(super) async fn recent_sign_in(&self, user_id: &str, session_id: &str) -> Result<()> {
        let now = self.now();
        let recent = self
            .inner
            .store
            .session(session_id)
            .await?
            .is_some_and(|session| {
                session.user_id == user_id
                    && now.saturating_sub(session.created_at) <= RECENT_SIGN_IN_SECONDS
            });
        match recent {
            true => Ok(()),
            false => Err(Error::ReauthenticationRequired),
        }
    }

    /// Stores a ceremony's challenge (on disk before it is handed out).
    async fn put_ceremony(&self, kind: ChallengeKind, user_id: Option<&str>) -> Result<Secret> {
        let (id, digest) = new_mail_token();
        let now = self.now();
        let challenge = Challenge {
            kind,
            user_id: user_id.map(str::to_owned),
            created_at: now,
            expires_at: now.saturating_add(CEREMONY_SECONDS),
        };
        self.inner.store.put_challenge(&digest, &challenge).await?;
        self.inner.store.durable().await?;
        Ok(id)
    }
}

/// Judges a passkey sign-in inside its transaction: the challenge must be
/// a live sign-in challenge, of this account if it names one, and the
/// credential one of the account's; `finish` then runs the ceremony's
/// checks against the state and the stored credential (`finish(state,
/// credential id)`).
fn judge_sign_in(
    challenge: Option<&Challenge>,
    user: Option<&User>,
    assertion: &Assertion,
    now: UnixTime,
    finish: impl FnOnce(&str, &str) -> Result<SignedIn>,
) -> Result<SignedIn> {
    let challenge = challenge
        .filter(|challenge| now < challenge.expires_at)
        .ok_or(Error::PasskeyInvalid)?;
    let ChallengeKind::PasskeySignIn { state } = &challenge.kind else {
        return Err(Error::PasskeyInvalid);
    };
    let user = user.ok_or(Error::PasskeyInvalid)?;
    if challenge
        .user_id
        .as_ref()
        .is_some_and(|started| *started != user.id)
    {
        return Err(Error::PasskeyInvalid);
    }
    finish(state, &assertion.credential_id)
}

/// A passkey's name as typed: trimmed, at most [`MAX_PASSKEY_NAME`]
/// characters of what reads as it is (a name shown in mails and lists):
/// letters and digits of any script, spaces, punctuation and the common
/// symbols and emoji; never a control, format, direction, separator or
/// blank-looking character.
fn passkey_name(name: &str) -> Result<String> {
    let readable = |c: char| {
        let blank = matches!(
            c,
            '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}'
        );
        let allowed = c.is_alphanumeric()
            || c == ' '
            || c.is_ascii_punctuation()
            || matches!(c,
                '\u{A1}'..='\u{AC}' | '\u{AE}'..='\u{BF}' | '\u{D7}' | '\u{F7}'
                | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
                | '\u{20A0}'..='\u{20C0}' | '\u{2100}'..='\u{214F}'
                | '\u{2190}'..='\u{23FF}' | '\u{25A0}'..='\u{27BF}'
                | '\u{3000}'..='\u{303F}' | '\u{FF01}'..='\u{FF65}'
                | '\u{1F300}'..='\u{1FAFF}');
        allowed && !blank && c != '\u{3000}'
    };
    if name.chars().count() > MAX_PASSKEY_NAME || !name.chars().all(readable) {
        return Err(Error::InvalidInput(format!(
            "name: at most {MAX_PASSKEY_NAME} characters of letters, digits, spaces, punctuation and symbols (no control, invisible or direction characters)"
        )));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passkey_name_reads_as_it_is() {
        for good in [
            "Laptop",
            "Téléphone de Zoé",
            "鍵 2",
            "YubiKey 5C (work)",
            "🔑 backup",
            "Pixel – 2026",
        ] {
            assert_eq!(passkey_name(good).as_deref(), Ok(good), "{good:?}");
        }
        let long = "x".repeat(MAX_PASSKEY_NAME + 1);
        let bad = [
            long.as_str(),
            "tab\there",
            "evil\u{202E}gpj.exe",
            "a\u{200B}b",
            "a\u{061C}b",
            "soft\u{AD}hyphen",
            "tag\u{E0041}",
            "line\u{2028}break",
            "blank\u{3164}",
            "braille\u{2800}",
            "joiner\u{034F}",
            "private\u{E000}",
            "non\u{FFFE}char",
            "annot\u{FFF9}",
        ];
        for name in bad {
            assert!(passkey_name(name).is_err(), "{name:?}");
        }
    }
}
