//! Sessions (refresh-token families) and refresh records: starting a
//! session, exchanging a refresh token, revoking one session, and reading
//! them back.

use super::{EMPTY, Store, TreeId, Tx, TxResult, abort, child_key, child_prefix, decode, time_key};
use crate::error::{Error, Result};
use crate::model::{
    AuditEvent, ClientInfo, RefreshRecord, RevokeReason, Session, TokenDigest, UnixTime, User,
};

/// What the core decides when a refresh token is exchanged: what to write
/// back (each part optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Exchange {
    /// The presented token's record, updated (rotated out, or ended).
    pub old: Option<RefreshRecord>,
    /// The successor's digest and record.
    pub new: Option<(TokenDigest, RefreshRecord)>,
    /// The session, updated (touched, or revoked).
    pub session: Option<Session>,
}

/// What a refresh exchange finds stored (`None`: unknown, deleted or swept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The presented token's record.
    pub record: Option<RefreshRecord>,
    /// The record of the token that replaced it, when it was rotated.
    pub successor: Option<RefreshRecord>,
    /// Its session.
    pub session: Option<Session>,
    /// Its user.
    pub user: Option<User>,
}

/// A session to start at login, with its first refresh token.
pub(crate) struct NewSession<'a> {
    /// The session id (the refresh tokens' `fam`).
    pub id: &'a str,
    /// When the login happens.
    pub now: UnixTime,
    /// When the first refresh token (and so the session, until refreshed) expires.
    pub expires_at: UnixTime,
    /// Who logged in from where.
    pub client: &'a ClientInfo,
    /// The first refresh token's digest.
    pub digest: &'a TokenDigest,
    /// The first refresh token's `jti`.
    pub jti: &'a str,
    /// How the login proved who it was (RFC 8176 `amr`).
    pub amr: &'a [String],
}

/// The trees a refresh exchange reads and writes.
const EXCHANGE: &[TreeId] = &[
    TreeId::Audit,
    TreeId::Users,
    TreeId::RefreshTokens,
    TreeId::RefreshExpiry,
    TreeId::SessionTokens,
    TreeId::Sessions,
    TreeId::SessionExpiry,
];

/// The trees a new session writes (and the user it reads).
const START: &[TreeId] = &[
    TreeId::Users,
    TreeId::RefreshTokens,
    TreeId::RefreshExpiry,
    TreeId::SessionTokens,
    TreeId::Sessions,
    TreeId::SessionExpiry,
    TreeId::UserSessions,
];

impl Store {
    /// Starts a session for `user_id` with its first refresh token, in one
    /// transaction that first lets `admit` judge (and update, e.g. with a
    /// re-hashed password) the user as stored at that moment. So a login
    /// whose password was changed, or whose account was disabled or
    /// deleted, while its hash was being verified stores nothing. Returns
    /// the user as stored.
    ///
    /// # Errors
    /// Whatever `admit` returns, [`Error::Storage`].
    pub(crate) async fn start_session(
        &self,
        user_id: &str,
        new: &NewSession<'_>,
        admit: impl Fn(Option<User>) -> Result<User>,
    ) -> Result<User> {
        self.transaction(START, |tx| {
            let stored = tx.get::<User>(TreeId::Users, user_id.as_bytes())?;
            let user = admit(stored.clone()).map_err(abort)?;
            if stored.as_ref() != Some(&user) {
                tx.put(TreeId::Users, user.id.as_bytes(), &user)?;
            }
            put_new_session(tx, &user, new)?;
            Ok(user)
        })
        .await
    }

    /// Starts many sessions of `user_id` at once, in one transaction, with
    /// no judgement: only for filling a database to measure it.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[cfg(feature = "bench")]
    pub(crate) async fn seed_sessions(
        &self,
        user_id: &str,
        sessions: &[NewSession<'_>],
    ) -> Result<()> {
        self.transaction(START, |tx| {
            let user = tx
                .get::<User>(TreeId::Users, user_id.as_bytes())?
                .ok_or_else(|| abort(Error::UserNotFound))?;
            for new in sessions {
                put_new_session(tx, &user, new)?;
            }
            Ok(())
        })
        .await
    }

    /// Reads the record of `digest` (and of its successor, if it was
    /// rotated), the session `session_id` and the user `user_id`, and
    /// applies `decide` to them in one transaction: `decide` sees the
    /// current values and returns the [`Exchange`] to write plus a value for
    /// the caller, or an error that aborts with nothing written. Two
    /// exchanges of one token are serialized, so the second `decide` sees
    /// what the first wrote. `decide` must not have side effects. The
    /// event `audit` makes of the outcome is written in the same
    /// transaction (one commit per refresh, on either backend).
    ///
    /// # Errors
    /// Whatever `decide` returns, [`Error::Storage`].
    pub(crate) async fn exchange_refresh<T>(
        &self,
        digest: &TokenDigest,
        session_id: &str,
        user_id: &str,
        decide: impl Fn(Stored) -> Result<(Exchange, T)>,
        audit: impl Fn(&T) -> Option<AuditEvent>,
    ) -> Result<T> {
        let audit_id = self.audit_id()?;
        // Read (and on PostgreSQL locked) in the order every change to a
        // user and their sessions takes them: user, session, records.
        let reads = [
            (TreeId::Users, user_id.as_bytes().to_vec()),
            (TreeId::Sessions, session_id.as_bytes().to_vec()),
            (TreeId::RefreshTokens, digest.0.to_vec()),
        ];
        // The user is only read: refreshes of one user's sessions run side
        // by side, and a change to the user (which locks it exclusively)
        // waits for them, or they for it.
        self.transaction_sharing(EXCHANGE, &reads, &[TreeId::Users], |tx| {
            let user = tx.get::<User>(TreeId::Users, user_id.as_bytes())?;
            let session = tx.get::<Session>(TreeId::Sessions, session_id.as_bytes())?;
            let record = tx.get::<RefreshRecord>(TreeId::RefreshTokens, &digest.0)?;
            let successor = match record.as_ref().and_then(|record| record.successor) {
                Some(next) => tx.get::<RefreshRecord>(TreeId::RefreshTokens, &next.0)?,
                None => None,
            };
            let stored = Stored {
                record,
                successor,
                session: session.clone(),
                user,
            };
            let (exchange, outcome) = decide(stored).map_err(abort)?;
            if let Some(old) = &exchange.old {
                tx.put(TreeId::RefreshTokens, &digest.0, old)?;
            }
            if let Some((new_digest, new_record)) = &exchange.new {
                put_new_refresh(tx, new_digest, new_record)?;
            }
            if let Some(updated) = &exchange.session {
                put_session(tx, session.as_ref(), updated)?;
            }
            if let Some(event) = audit(&outcome) {
                tx.put(TreeId::Audit, &time_key(event.at, &audit_id), &event)?;
            }
            Ok(outcome)
        })
        .await
    }

    /// Revokes session `session_id` of `user_id` if it is live. Returns
    /// whether it was revoked now.
    ///
    /// # Errors
    /// [`Error::SessionNotFound`] for an unknown session or another user's
    /// (indistinguishable), [`Error::Storage`].
    pub(crate) async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        now: UnixTime,
        reason: RevokeReason,
    ) -> Result<bool> {
        self.transaction(&[TreeId::Sessions], |tx| {
            let mut session = tx
                .get::<Session>(TreeId::Sessions, session_id.as_bytes())?
                .filter(|session| session.user_id == user_id)
                .ok_or_else(|| abort(Error::SessionNotFound))?;
            if session.revoked_at.is_some() {
                return Ok(false);
            }
            session.revoke(now, reason);
            tx.put(TreeId::Sessions, session_id.as_bytes(), &session)?;
            Ok(true)
        })
        .await
    }

    /// The record of the refresh token with this digest.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn refresh_record(
        &self,
        digest: &TokenDigest,
    ) -> Result<Option<RefreshRecord>> {
        self.get(TreeId::RefreshTokens, &digest.0).await
    }

    /// A session and a user, read together (one round trip on PostgreSQL):
    /// what every authenticated request looks at.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn session_and_user(
        &self,
        session_id: &str,
        user_id: &str,
    ) -> Result<(Option<Session>, Option<User>)> {
        let rows = [
            (TreeId::Sessions, session_id.as_bytes()),
            (TreeId::Users, user_id.as_bytes()),
        ];
        let mut found = self.read_many(&rows).await?.into_iter();
        let session = found.next().flatten().map(|bytes| decode(&bytes));
        let user = found.next().flatten().map(|bytes| decode(&bytes));
        Ok((session.transpose()?, user.transpose()?))
    }

    /// The session with this id (live, revoked or expired-but-unswept).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn session(&self, id: &str) -> Result<Option<Session>> {
        self.get(TreeId::Sessions, id.as_bytes()).await
    }

    /// Every stored session of a user (live or not).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn sessions_of(&self, user_id: &str) -> Result<Vec<Session>> {
        let mut sessions = Vec::new();
        for id in self.session_ids_of(user_id).await? {
            if let Some(session) = self.session(&id).await? {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    /// How many refresh records are stored, live or not.
    pub(crate) async fn refresh_record_count(&self) -> usize {
        self.count(TreeId::RefreshTokens).await.unwrap_or(0)
    }

    /// How many sessions are stored, live or not.
    pub(crate) async fn session_count(&self) -> usize {
        self.count(TreeId::Sessions).await.unwrap_or(0)
    }

    /// How many stored sessions are live at `now`: neither revoked nor
    /// expired. Reads every session (outside any transaction, so no request
    /// waits for it): for the sweeper, not for requests.
    pub(crate) async fn live_session_count(&self, now: UnixTime) -> Result<usize> {
        let mut live = 0;
        self.each(TreeId::Sessions, |_, bytes| {
            live += usize::from(decode::<Session>(bytes)?.is_live(now));
            Ok(())
        })
        .await?;
        Ok(live)
    }

    /// Everything stored under a user's sessions, listed now (outside any
    /// transaction).
    pub(super) async fn owned_by(&self, user_id: &str) -> Result<Owned> {
        let sessions = self.session_ids_of(user_id).await?;
        let mut tokens = Vec::new();
        for id in &sessions {
            for digest in self
                .suffixes(TreeId::SessionTokens, &child_prefix(id))
                .await?
            {
                tokens.push((id.clone(), digest));
            }
        }
        Ok(Owned {
            user_id: user_id.to_owned(),
            sessions,
            tokens,
        })
    }
}

/// A user's sessions and refresh records, as listed by [`Store::owned_by`].
pub(super) struct Owned {
    user_id: String,
    sessions: Vec<String>,
    /// (session id, token digest).
    tokens: Vec<(String, Vec<u8>)>,
}

impl Owned {
    pub(super) fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.tokens.is_empty()
    }

    /// The rows [`Owned::remove`] reads, for PostgreSQL to fetch at once.
    pub(super) fn reads(&self) -> Vec<super::Row> {
        let sessions = self
            .sessions
            .iter()
            .map(|id| (TreeId::Sessions, id.as_bytes().to_vec()));
        let records = self
            .tokens
            .iter()
            .map(|(_, digest)| (TreeId::RefreshTokens, digest.clone()));
        sessions.chain(records).collect()
    }

    /// Removes all of it, with every index entry, inside `tx` (which must
    /// hold every tree).
    pub(super) fn remove(&self, tx: &Tx<'_>) -> TxResult<()> {
        for id in &self.sessions {
            if let Some(session) = tx.get::<Session>(TreeId::Sessions, id.as_bytes())? {
                tx.remove(
                    TreeId::SessionExpiry,
                    &time_key(session.expires_at, id.as_bytes()),
                )?;
            }
            tx.remove(TreeId::Sessions, id.as_bytes())?;
            tx.remove(
                TreeId::UserSessions,
                &child_key(&self.user_id, id.as_bytes()),
            )?;
        }
        for (session_id, digest) in &self.tokens {
            if let Some(record) = tx.get::<RefreshRecord>(TreeId::RefreshTokens, digest)? {
                tx.remove(TreeId::RefreshExpiry, &time_key(record.expires_at, digest))?;
            }
            tx.remove(TreeId::RefreshTokens, digest)?;
            tx.remove(TreeId::SessionTokens, &child_key(session_id, digest))?;
        }
        Ok(())
    }
}

/// Stores a new session of `user` and its first refresh record.
fn put_new_session(tx: &Tx<'_>, user: &User, new: &NewSession<'_>) -> TxResult<()> {
    let session = Session::start(
        new.id.to_owned(),
        user,
        new.now,
        new.expires_at,
        new.client,
        new.amr.to_vec(),
    );
    put_session(tx, None, &session)?;
    let record = RefreshRecord::issued(
        &user.id,
        new.jti,
        new.id,
        new.now,
        new.expires_at,
        new.client,
    );
    put_new_refresh(tx, new.digest, &record)
}

/// Stores a new refresh record with its expiry and session index entries.
fn put_new_refresh(tx: &Tx<'_>, digest: &TokenDigest, record: &RefreshRecord) -> TxResult<()> {
    tx.put(TreeId::RefreshTokens, &digest.0, record)?;
    tx.insert(
        TreeId::RefreshExpiry,
        &time_key(record.expires_at, &digest.0),
        EMPTY,
    )?;
    tx.insert(
        TreeId::SessionTokens,
        &child_key(&record.family_id, &digest.0),
        EMPTY,
    )
}

/// Writes `session`, keeping its expiry and per-user index entries in step
/// with `previous` (what was stored before, if anything).
fn put_session(tx: &Tx<'_>, previous: Option<&Session>, session: &Session) -> TxResult<()> {
    let id = session.id.as_bytes();
    match previous {
        Some(previous) if previous.expires_at == session.expires_at => {}
        Some(previous) => {
            tx.remove(TreeId::SessionExpiry, &time_key(previous.expires_at, id))?;
            tx.insert(
                TreeId::SessionExpiry,
                &time_key(session.expires_at, id),
                EMPTY,
            )?;
        }
        None => {
            tx.insert(
                TreeId::SessionExpiry,
                &time_key(session.expires_at, id),
                EMPTY,
            )?;
            tx.insert(
                TreeId::UserSessions,
                &child_key(&session.user_id, id),
                EMPTY,
            )?;
        }
    }
    tx.put(TreeId::Sessions, id, session)
}
