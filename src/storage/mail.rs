//! Mailed tokens and the durable outbox: a token is stored with the mail
//! that carries it in one transaction; redeeming a token changes its user
//! (and the email index, and their sessions) in one transaction and queues
//! the notices that follow.

use super::users::mark_ended;
use super::{Ending, Store, TreeId, Tx, TxResult, abort, decode, time_key};
use crate::error::{Error, Result};
use crate::model::{MailToken, OutboxEntry, TokenDigest, UnixTime, User};

/// Where an outbox entry is stored (its time ‖ id key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutboxKey(Vec<u8>);

impl OutboxKey {
    /// The key of `entry`.
    pub(crate) fn of(entry: &OutboxEntry) -> OutboxKey {
        OutboxKey(time_key(entry.created_at, entry.id.as_bytes()))
    }
}

/// What redeeming a token does: the user as they are to be stored, and the
/// mails that follow.
#[derive(Debug, Clone)]
pub(crate) struct Redeemed {
    /// The user, changed.
    pub user: User,
    /// Mails to queue in the same transaction.
    pub mails: Vec<OutboxEntry>,
}

/// The trees that issuing a token with its mail touches.
const ISSUE: &[TreeId] = &[TreeId::MailTokens, TreeId::MailTokenExpiry, TreeId::Outbox];

/// The trees that redeeming a token touches.
const REDEEM: &[TreeId] = &[
    TreeId::Users,
    TreeId::UsersByEmail,
    TreeId::Sessions,
    TreeId::MailTokens,
    TreeId::MailTokenExpiry,
    TreeId::Outbox,
];

impl Store {
    /// Queues outbox entries (and, with `done`, removes the entry they
    /// replace), in one transaction.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn queue(
        &self,
        entries: &[OutboxEntry],
        done: Option<&OutboxKey>,
    ) -> Result<()> {
        self.transaction(&[TreeId::Outbox], |tx| {
            if let Some(done) = done {
                tx.remove(TreeId::Outbox, &done.0)?;
            }
            put_entries(tx, entries)
        })
        .await
    }

    /// Stores a mailed token under `digest` with the mail that carries it
    /// (and removes the outbox entry `done` that asked for it), in one
    /// transaction.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn issue_mail_token(
        &self,
        digest: &TokenDigest,
        token: &MailToken,
        mails: &[OutboxEntry],
        done: Option<&OutboxKey>,
    ) -> Result<()> {
        self.transaction(ISSUE, |tx| {
            tx.put(TreeId::MailTokens, &digest.0, token)?;
            tx.insert(
                TreeId::MailTokenExpiry,
                &time_key(token.expires_at, &digest.0),
                super::EMPTY,
            )?;
            if let Some(done) = done {
                tx.remove(TreeId::Outbox, &done.0)?;
            }
            put_entries(tx, mails)
        })
        .await
    }

    /// Redeems the token `digest` in one transaction: `decide` sees the
    /// token and its user as stored now and returns the changed user and
    /// the mails to queue, or an error that aborts with nothing written.
    /// The token is deleted; the email index follows a changed address
    /// ([`Error::UserExists`] if the new one is taken); a moved security
    /// stamp ends the user's live sessions as `ending` says. Returns the
    /// stored user and how many sessions ended.
    ///
    /// # Errors
    /// Whatever `decide` returns, [`Error::UserExists`], [`Error::Storage`].
    pub(crate) async fn redeem_mail_token(
        &self,
        digest: &TokenDigest,
        ending: &Ending,
        decide: impl Fn(Option<MailToken>, Option<User>) -> Result<Redeemed>,
    ) -> Result<(User, usize)> {
        let token: Option<MailToken> = self.get(TreeId::MailTokens, &digest.0).await?;
        // Listed before the transaction, as every change that ends sessions
        // does: one started in between carries the old stamp, dead anyway.
        let session_ids = match &token {
            Some(token) => self.session_ids_of(&token.user_id).await?,
            None => Vec::new(),
        };
        let mut reads = vec![(TreeId::MailTokens, digest.0.to_vec())];
        if let Some(token) = &token {
            reads.push((TreeId::Users, token.user_id.as_bytes().to_vec()));
        }
        reads.extend(
            session_ids
                .iter()
                .map(|id| (TreeId::Sessions, id.as_bytes().to_vec())),
        );
        self.transaction_locking(REDEEM, &reads, |tx| {
            let token = tx.get::<MailToken>(TreeId::MailTokens, &digest.0)?;
            let before = match &token {
                Some(token) => tx.get::<User>(TreeId::Users, token.user_id.as_bytes())?,
                None => None,
            };
            let redeemed = decide(token.clone(), before.clone()).map_err(abort)?;
            let (Some(token), Some(before)) = (token, before) else {
                return Err(abort(Error::Internal(
                    "a mailed token was redeemed without its user".into(),
                )));
            };
            let user = redeemed.user;
            if user.email != before.email {
                if tx.contains(TreeId::UsersByEmail, user.email.as_bytes())? {
                    return Err(abort(Error::UserExists));
                }
                tx.remove(TreeId::UsersByEmail, before.email.as_bytes())?;
                tx.insert(
                    TreeId::UsersByEmail,
                    user.email.as_bytes(),
                    user.id.as_bytes(),
                )?;
            }
            let mut ended = 0;
            if user.security_stamp != before.security_stamp {
                for id in &session_ids {
                    ended += usize::from(mark_ended(tx, id, &before, &user, ending)?);
                }
            }
            tx.put(TreeId::Users, user.id.as_bytes(), &user)?;
            tx.remove(TreeId::MailTokens, &digest.0)?;
            tx.remove(
                TreeId::MailTokenExpiry,
                &time_key(token.expires_at, &digest.0),
            )?;
            put_entries(tx, &redeemed.mails)?;
            Ok((user, ended))
        })
        .await
    }

    /// The mailed token stored under `digest`, if any.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn mail_token(&self, digest: &TokenDigest) -> Result<Option<MailToken>> {
        self.get(TreeId::MailTokens, &digest.0).await
    }

    /// Up to `limit` outbox entries due at `now` (not given up on), oldest
    /// first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn outbox_due(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> Result<Vec<(OutboxKey, OutboxEntry)>> {
        let mut due = Vec::new();
        self.each(TreeId::Outbox, |key, value| {
            let entry: OutboxEntry = decode(value)?;
            if due.len() < limit && entry.failed_at.is_none() && entry.next_attempt_at <= now {
                due.push((OutboxKey(key.to_vec()), entry));
            }
            Ok(())
        })
        .await?;
        Ok(due)
    }

    /// Every outbox entry (for tests and the operator), oldest first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        let mut entries = Vec::new();
        self.each(TreeId::Outbox, |_, value| {
            entries.push(decode(value)?);
            Ok(())
        })
        .await?;
        Ok(entries)
    }

    /// How many entries the outbox holds.
    pub(crate) async fn outbox_len(&self) -> usize {
        self.count(TreeId::Outbox).await.unwrap_or(0)
    }

    /// Rewrites an outbox entry (after a failed attempt).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn outbox_update(&self, key: &OutboxKey, entry: &OutboxEntry) -> Result<()> {
        self.transaction(&[TreeId::Outbox], |tx| {
            tx.put(TreeId::Outbox, &key.0, entry)
        })
        .await
    }

    /// Removes an outbox entry (delivered).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn outbox_remove(&self, key: &OutboxKey) -> Result<()> {
        self.write_one(TreeId::Outbox, &key.0, None).await
    }

    /// Deletes up to `limit` mailed tokens expired at `now`; returns how many.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn sweep_mail_tokens(&self, now: UnixTime, limit: usize) -> Result<usize> {
        self.sweep_index(TreeId::MailTokenExpiry, TreeId::MailTokens, now, limit)
            .await
    }

    /// Deletes the outbox entries given up on before `before`; returns how many.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn sweep_failed_mail(&self, before: UnixTime) -> Result<usize> {
        let mut gone = Vec::new();
        self.each(TreeId::Outbox, |key, value| {
            let entry: OutboxEntry = decode(value)?;
            if entry.failed_at.is_some_and(|failed| failed < before) {
                gone.push(key.to_vec());
            }
            Ok(())
        })
        .await?;
        for key in &gone {
            self.write_one(TreeId::Outbox, key, None).await?;
        }
        Ok(gone.len())
    }
}

pub(super) fn put_entries(tx: &Tx<'_>, entries: &[OutboxEntry]) -> TxResult<()> {
    for entry in entries {
        tx.put(TreeId::Outbox, &OutboxKey::of(entry).0, entry)?;
    }
    Ok(())
}
