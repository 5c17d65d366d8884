//! Users and their unique email and username indexes; changes to a user
//! that end their sessions; account deletion.

use std::ops::Bound;

use super::{Store, TreeId, Tx, TxResult, abort, child_prefix};
use crate::error::{Error, Result};
use crate::model::{RevokeReason, Session, UnixTime, User};

/// How a change to a user treats the sessions it ends. A change ends them by
/// moving the user's security stamp; the store then also marks the
/// sessions that were live as revoked (with `reason`, at `now`), except
/// `keep`, which moves to the new stamp and stays alive.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    /// When the change happens.
    pub now: UnixTime,
    /// Why the sessions end.
    pub reason: RevokeReason,
    /// A session that survives (the caller's own, at a password change).
    pub keep: Option<String>,
}

/// The trees a change to a user and their sessions touches.
const USER_AND_SESSIONS: &[TreeId] = &[TreeId::Users, TreeId::Sessions];

impl Store {
    /// Adds a user and its two unique index entries in one transaction.
    ///
    /// # Errors
    /// [`Error::UserExists`] if the email is taken, [`Error::UsernameTaken`] if
    /// the username is (ignoring case), [`Error::Storage`] otherwise.
    pub(crate) async fn insert_user(&self, user: &User) -> Result<()> {
        let username_key = user.username_key();
        self.transaction(
            &[TreeId::Users, TreeId::UsersByEmail, TreeId::UsersByUsername],
            |tx| {
                if tx.contains(TreeId::UsersByEmail, user.email.as_bytes())? {
                    return Err(abort(Error::UserExists));
                }
                if tx.contains(TreeId::UsersByUsername, username_key.as_bytes())? {
                    return Err(abort(Error::UsernameTaken));
                }
                tx.put(TreeId::Users, user.id.as_bytes(), user)?;
                tx.insert(
                    TreeId::UsersByEmail,
                    user.email.as_bytes(),
                    user.id.as_bytes(),
                )?;
                tx.insert(
                    TreeId::UsersByUsername,
                    username_key.as_bytes(),
                    user.id.as_bytes(),
                )
            },
        )
        .await
    }

    /// Whether an account uses this normalized email.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn email_taken(&self, email: &str) -> Result<bool> {
        Ok(self
            .read(TreeId::UsersByEmail, email.as_bytes())
            .await?
            .is_some())
    }

    /// Whether an account uses this lower-cased username.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn username_taken(&self, username_key: &str) -> Result<bool> {
        Ok(self
            .read(TreeId::UsersByUsername, username_key.as_bytes())
            .await?
            .is_some())
    }

    /// The user with this id.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn user(&self, id: &str) -> Result<Option<User>> {
        self.get(TreeId::Users, id.as_bytes()).await
    }

    /// The user with this normalized email.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        match self.read(TreeId::UsersByEmail, email.as_bytes()).await? {
            Some(id) => self.get(TreeId::Users, &id).await,
            None => Ok(None),
        }
    }

    /// Applies `change` to the user as stored now, in one transaction. When
    /// the change moves the security stamp (which ends every session started
    /// before), the sessions that were live are also marked revoked as
    /// `ending` says. Returns the stored user and how many sessions ended.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], whatever `change` returns (nothing is
    /// written then), [`Error::Storage`].
    pub(crate) async fn update_user(
        &self,
        user_id: &str,
        ending: &Ending,
        change: impl Fn(&mut User) -> Result<()>,
    ) -> Result<(User, usize)> {
        // Listed before the transaction, so a session started in between is
        // not marked; it is dead all the same, because it carries the old
        // stamp (or, started after, the new one legitimately).
        let session_ids = self.session_ids_of(user_id).await?;
        let mut reads = vec![(TreeId::Users, user_id.as_bytes().to_vec())];
        reads.extend(
            session_ids
                .iter()
                .map(|id| (TreeId::Sessions, id.as_bytes().to_vec())),
        );
        self.transaction_locking(USER_AND_SESSIONS, &reads, |tx| {
            let before: User = tx
                .get(TreeId::Users, user_id.as_bytes())?
                .ok_or_else(|| abort(Error::UserNotFound))?;
            let mut user = before.clone();
            change(&mut user).map_err(abort)?;
            let mut ended = 0;
            if user.security_stamp != before.security_stamp {
                for id in &session_ids {
                    ended += usize::from(mark_ended(tx, id, &before, &user, ending)?);
                }
            }
            tx.put(TreeId::Users, user.id.as_bytes(), &user)?;
            Ok((user, ended))
        })
        .await
    }

    /// Deletes a user, with their email and username index entries, their
    /// sessions and their refresh records, once `check` accepts the user as
    /// stored at that moment. Returns the deleted user.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], whatever `check` returns, [`Error::Storage`].
    pub(crate) async fn delete_user(
        &self,
        user_id: &str,
        check: impl Fn(&User) -> Result<()>,
    ) -> Result<User> {
        let owned = self.owned_by(user_id).await?;
        let mut reads = vec![(TreeId::Users, user_id.as_bytes().to_vec())];
        reads.extend(owned.reads());
        let user = self
            .transaction_locking(TreeId::ALL, &reads, |tx| {
                let user: User = tx
                    .get(TreeId::Users, user_id.as_bytes())?
                    .ok_or_else(|| abort(Error::UserNotFound))?;
                check(&user).map_err(abort)?;
                tx.remove(TreeId::Users, user.id.as_bytes())?;
                tx.remove(TreeId::UsersByEmail, user.email.as_bytes())?;
                tx.remove(TreeId::UsersByUsername, user.username_key().as_bytes())?;
                owned.remove(tx)?;
                Ok(user)
            })
            .await?;
        // A session started, or a token rotated, between the listing and the
        // transaction escaped it; none can appear now that the user is gone.
        let stragglers = self.owned_by(user_id).await?;
        if !stragglers.is_empty() {
            self.transaction_locking(TreeId::ALL, &stragglers.reads(), |tx| stragglers.remove(tx))
                .await?;
        }
        Ok(user)
    }

    /// A page of users in email order: up to `limit` users after the email
    /// `after` whose email or username contains `query` (case-insensitive).
    /// Reads at most `budget` index entries, so a rare query cannot make one
    /// request walk every user; returns the users and the cursor to continue
    /// from (`None` at the end).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn users_page(
        &self,
        after: Option<&str>,
        query: Option<&str>,
        limit: usize,
        budget: usize,
    ) -> Result<(Vec<User>, Option<String>)> {
        let start = match after {
            Some(email) => Bound::Excluded(email.as_bytes()),
            None => Bound::Unbounded,
        };
        let query = query.map(str::to_lowercase);
        let mut users = Vec::new();
        let mut last = None;
        // One entry more than the budget tells whether the walk is complete.
        let entries = self
            .scan(
                TreeId::UsersByEmail,
                start,
                Bound::Unbounded,
                budget.saturating_add(1),
            )
            .await?;
        for (read, (email, id)) in entries.into_iter().enumerate() {
            if users.len() >= limit || read >= budget {
                return Ok((users, last));
            }
            last = Some(String::from_utf8_lossy(&email).into_owned());
            let Some(user) = self.get::<User>(TreeId::Users, &id).await? else {
                continue;
            };
            let matches = query.as_deref().is_none_or(|query| {
                user.email.contains(query) || user.username.to_lowercase().contains(query)
            });
            if matches {
                users.push(user);
            }
        }
        Ok((users, None))
    }

    /// The ids of every stored session of a user, through the per-user index.
    pub(super) async fn session_ids_of(&self, user_id: &str) -> Result<Vec<String>> {
        Ok(self
            .suffixes(TreeId::UserSessions, &child_prefix(user_id))
            .await?
            .into_iter()
            .map(|id| String::from_utf8_lossy(&id).into_owned())
            .collect())
    }
}

/// Inside a user change: ends session `id` if it was live for the user as
/// they were `before`; the kept session moves to the new stamp instead.
/// Returns whether a session was ended.
pub(super) fn mark_ended(
    tx: &Tx<'_>,
    id: &str,
    before: &User,
    after: &User,
    ending: &Ending,
) -> TxResult<bool> {
    let Some(mut session) = tx.get::<Session>(TreeId::Sessions, id.as_bytes())? else {
        return Ok(false);
    };
    if !session.is_live_for(before, ending.now) {
        return Ok(false);
    }
    let kept = ending.keep.as_deref() == Some(id);
    if kept {
        session.stamp = after.security_stamp;
    } else {
        session.revoke(ending.now, ending.reason);
    }
    // The expiry is unchanged, so only the record itself is rewritten.
    tx.put(TreeId::Sessions, id.as_bytes(), &session)?;
    Ok(!kept)
}
