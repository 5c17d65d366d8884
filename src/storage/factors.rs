//! Second factors and passkeys (one [`Factors`] record per account, beside
//! the account), and the short-lived challenges of sign-in and
//! registration steps, each used once.
//!
//! Every change to an account's factors runs in one transaction with the
//! account, so the summary on [`User::mfa`] never disagrees with them, and
//! a challenge is settled (kept with a new count, or removed) in the same
//! transaction as the factor change it leads to: a code or a WebAuthn
//! assertion is accepted at most once however many requests race with it.

use super::{Store, TreeId, Tx, TxResult, abort, time_key};
use crate::error::{Error, Result};
use crate::model::{Challenge, Factors, OutboxEntry, TokenDigest, UnixTime, User};

/// The trees a change to an account's factors touches (with the notice it
/// queues).
const FACTORS: &[TreeId] = &[TreeId::Users, TreeId::Factors, TreeId::Outbox];
/// The trees a settled challenge touches.
const SETTLE: &[TreeId] = &[
    TreeId::Users,
    TreeId::Factors,
    TreeId::Challenges,
    TreeId::ChallengeExpiry,
    TreeId::Outbox,
];

/// A step as judged inside its transaction: what becomes of the challenge,
/// the answer, and a notice to queue with the change.
#[derive(Debug)]
pub(crate) struct Judged<T> {
    /// What becomes of the challenge.
    pub settle: Settle,
    /// The answer (an error still commits `settle`).
    pub answer: Result<T>,
    /// A mail to queue in the same transaction.
    pub notice: Option<OutboxEntry>,
}

/// What becomes of a challenge once a step has been judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settle {
    /// It stays, as given (a wrong code was counted).
    Keep(Challenge),
    /// It is used up (or was never there).
    Remove,
}

impl Store {
    /// The factors of `user_id` (none if it has never had any).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn factors(&self, user_id: &str) -> Result<Factors> {
        Ok(self
            .get(TreeId::Factors, user_id.as_bytes())
            .await?
            .unwrap_or_default())
    }

    /// Applies `change` to the factors of `user_id` as stored now, with the
    /// account as stored now, in one transaction, and queues the notice it
    /// returns; keeps the account's summary in step. Returns the account
    /// and what `change` returned.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], whatever `change` returns (nothing is
    /// written then), [`Error::Storage`].
    pub(crate) async fn change_factors<T>(
        &self,
        user_id: &str,
        change: impl Fn(&User, &mut Factors) -> Result<(T, Option<OutboxEntry>)>,
    ) -> Result<(User, T)> {
        self.transaction(FACTORS, |tx| {
            let user = tx
                .get::<User>(TreeId::Users, user_id.as_bytes())?
                .ok_or_else(|| abort(Error::UserNotFound))?;
            let mut factors = tx
                .get::<Factors>(TreeId::Factors, user_id.as_bytes())?
                .unwrap_or_default();
            let (value, notice) = change(&user, &mut factors).map_err(abort)?;
            let user = put_factors(tx, user, &factors)?;
            super::mail::put_entries(tx, notice.as_slice())?;
            Ok((user, value))
        })
        .await
    }

    /// Stores a new challenge under `digest`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn put_challenge(
        &self,
        digest: &TokenDigest,
        challenge: &Challenge,
    ) -> Result<()> {
        self.transaction(&[TreeId::Challenges, TreeId::ChallengeExpiry], |tx| {
            tx.put(TreeId::Challenges, &digest.0, challenge)?;
            tx.insert(
                TreeId::ChallengeExpiry,
                &time_key(challenge.expires_at, &digest.0),
                super::EMPTY,
            )
        })
        .await
    }

    /// The challenge stored under `digest`, if any (expired or not).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn challenge(&self, digest: &TokenDigest) -> Result<Option<Challenge>> {
        self.get(TreeId::Challenges, &digest.0).await
    }

    /// Judges a step in one transaction: `judge` sees the challenge under
    /// `digest`, the account `user_id` and its factors as stored now, may
    /// change the factors, and says what becomes of the challenge. Both are
    /// written, then `judge`'s answer is returned with the account as
    /// written: an error answer still commits what `judge` settled (a wrong
    /// code counts). `judge` must not have side effects.
    ///
    /// # Errors
    /// Whatever `judge` answers, [`Error::Storage`].
    pub(crate) async fn settle_challenge<T>(
        &self,
        digest: &TokenDigest,
        user_id: &str,
        judge: impl Fn(Option<&Challenge>, Option<&User>, &mut Factors) -> Judged<T>,
    ) -> Result<(Option<User>, T)> {
        let (user, answer) = self
            .transaction(SETTLE, |tx| {
                let challenge = tx.get::<Challenge>(TreeId::Challenges, &digest.0)?;
                let user = tx.get::<User>(TreeId::Users, user_id.as_bytes())?;
                let stored = tx
                    .get::<Factors>(TreeId::Factors, user_id.as_bytes())?
                    .unwrap_or_default();
                let mut factors = stored.clone();
                let Judged {
                    settle,
                    answer,
                    notice,
                } = judge(challenge.as_ref(), user.as_ref(), &mut factors);
                super::mail::put_entries(tx, notice.as_slice())?;
                match settle {
                    Settle::Keep(kept) => tx.put(TreeId::Challenges, &digest.0, &kept)?,
                    Settle::Remove => {
                        if let Some(challenge) = &challenge {
                            tx.remove(TreeId::Challenges, &digest.0)?;
                            tx.remove(
                                TreeId::ChallengeExpiry,
                                &time_key(challenge.expires_at, &digest.0),
                            )?;
                        }
                    }
                }
                let user = match user {
                    Some(user) if factors != stored => Some(put_factors(tx, user, &factors)?),
                    other => other,
                };
                Ok((user, answer))
            })
            .await?;
        Ok((user, answer?))
    }

    /// Deletes up to `limit` challenges whose expiry is at or before `now`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn sweep_challenges(&self, now: UnixTime, limit: usize) -> Result<usize> {
        self.sweep_index(TreeId::ChallengeExpiry, TreeId::Challenges, now, limit)
            .await
    }
}

/// Writes `factors` (or removes the record when there are none) and the
/// account with its summary brought in step; returns the account.
fn put_factors(tx: &Tx<'_>, mut user: User, factors: &Factors) -> TxResult<User> {
    if *factors == Factors::default() {
        tx.remove(TreeId::Factors, user.id.as_bytes())?;
    } else {
        tx.put(TreeId::Factors, user.id.as_bytes(), factors)?;
    }
    let summary = factors.summary();
    if user.mfa != summary {
        user.mfa = summary;
        tx.put(TreeId::Users, user.id.as_bytes(), &user)?;
    }
    Ok(user)
}
