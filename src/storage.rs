//! Persistent state on sled: the only importer of `sled`.
//!
//! Trees:
//! - `users`: user id → [`User`] (JSON)
//! - `users_by_email`: normalized email → user id
//! - `users_by_username`: lower-cased username → user id
//! - `refresh_tokens`: blake3 digest of a refresh token → [`RefreshRecord`] (JSON)
//! - `refresh_expiry`: `expires_at` (big-endian u64) ‖ digest → empty; the
//!   sweeper walks it in time order, so its cost follows the expired records only.
//! - `sessions`: session (refresh-token family) id → [`Session`] (JSON)
//! - `session_expiry`: `expires_at` ‖ session id → empty (for the sweeper)
//! - `user_sessions`: user id ‖ `/` ‖ session id → empty (a user's sessions)
//! - `audit`: time (big-endian u64) ‖ sled-generated id → [`AuditEvent`] (JSON)
//!
//! Writes that belong together happen in one sled transaction. Durability is
//! grouped: [`Store::durable`] asks a single flusher thread to `flush()` once
//! for every writer waiting at that moment (sled 0.34's `flush_async`
//! deadlocks under concurrency, and one flush per request wastes the disk).
//! Note what sled's flush is: it writes the log with `sync_file_range`, which
//! survives a killed process but is weaker than `fdatasync` against power loss.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::{AuditEvent, RefreshRecord, RevokeReason, Session, UnixTime, User};
use crate::tokens::TokenDigest;

/// A cheap-to-clone handle on latchkey's database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    db: sled::Db,
    users: sled::Tree,
    users_by_email: sled::Tree,
    users_by_username: sled::Tree,
    refresh_tokens: sled::Tree,
    refresh_expiry: sled::Tree,
    sessions: sled::Tree,
    session_expiry: sled::Tree,
    user_sessions: sled::Tree,
    audit: sled::Tree,
    flusher: Flusher,
}

/// What the service decides when a refresh token is exchanged: what to write
/// back (each part optional).
#[derive(Default)]
pub struct Exchange {
    /// The presented token's record, updated (e.g. revoked and linked to its successor).
    pub old: Option<RefreshRecord>,
    /// The successor's digest and record.
    pub new: Option<(TokenDigest, RefreshRecord)>,
    /// The session, updated (slid forward, or revoked).
    pub session: Option<Session>,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process has it open, otherwise
    /// [`Error::Storage`] (unwritable directory, corrupt files).
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|err| {
            Error::Storage(format!(
                "cannot create data directory {}: {err}",
                dir.display()
            ))
        })?;
        let existed = dir.join("db").exists();
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|err| match err {
                sled::Error::Corruption { .. } => Error::Storage(format!(
                    "the database in {} is corrupt; restore the directory from a backup",
                    dir.display()
                )),
                err if err.to_string().contains("could not acquire lock") => {
                    Error::DataDirLocked(dir.display().to_string())
                }
                err => Error::Storage(format!(
                    "cannot open data directory {}: {err}",
                    dir.display()
                )),
            })?;
        check_format(&db, existed, dir)?;
        let tree = |name: &str| db.open_tree(name).map_err(storage_error);
        let inner = StoreInner {
            users: tree("users")?,
            users_by_email: tree("users_by_email")?,
            users_by_username: tree("users_by_username")?,
            refresh_tokens: tree("refresh_tokens")?,
            refresh_expiry: tree("refresh_expiry")?,
            sessions: tree("sessions")?,
            session_expiry: tree("session_expiry")?,
            user_sessions: tree("user_sessions")?,
            audit: tree("audit")?,
            flusher: Flusher::spawn(db.clone())?,
            db,
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// Waits until every write made before this call is on disk. Concurrent
    /// callers share one flush.
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush fails.
    pub async fn durable(&self) -> Result<()> {
        self.inner.flusher.flush().await
    }

    /// Flushes on the calling thread (for shutdown).
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush fails.
    pub fn flush_blocking(&self) -> Result<()> {
        self.inner.db.flush().map(drop).map_err(storage_error)
    }

    /// Adds a user and its two unique index entries in one transaction.
    ///
    /// # Errors
    /// [`Error::UserExists`] if the email is taken, [`Error::UsernameTaken`] if
    /// the username key is, [`Error::Storage`] otherwise.
    pub fn insert_user(&self, user: &User, username_key: &str) -> Result<()> {
        let value = encode(user)?;
        let StoreInner {
            users,
            users_by_email,
            users_by_username,
            ..
        } = &*self.inner;
        (users, users_by_email, users_by_username)
            .transaction(|(users, by_email, by_username)| {
                if by_email.get(user.email.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Error::UserExists));
                }
                if by_username.get(username_key.as_bytes())?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Error::UsernameTaken));
                }
                users.insert(user.id.as_bytes(), value.as_slice())?;
                by_email.insert(user.email.as_bytes(), user.id.as_bytes())?;
                by_username.insert(username_key.as_bytes(), user.id.as_bytes())?;
                Ok(())
            })
            .map_err(transaction_error)
    }

    /// Whether an account uses this normalized email.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn email_taken(&self, email: &str) -> Result<bool> {
        self.inner
            .users_by_email
            .contains_key(email.as_bytes())
            .map_err(storage_error)
    }

    /// Whether an account uses this lower-cased username.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn username_taken(&self, username_key: &str) -> Result<bool> {
        self.inner
            .users_by_username
            .contains_key(username_key.as_bytes())
            .map_err(storage_error)
    }

    /// The user with this id.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn user(&self, id: &str) -> Result<Option<User>> {
        get(&self.inner.users, id.as_bytes())
    }

    /// The user with this normalized email.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        match self
            .inner
            .users_by_email
            .get(email.as_bytes())
            .map_err(storage_error)?
        {
            Some(id) => get(&self.inner.users, &id),
            None => Ok(None),
        }
    }

    /// Replaces a stored user (same id, same email and username keys).
    ///
    /// # Errors
    /// [`Error::UserNotFound`] if the user is gone, [`Error::Storage`].
    pub fn update_user(&self, user: &User) -> Result<()> {
        let value = encode(user)?;
        self.inner
            .users
            .transaction(|users| {
                if users.get(user.id.as_bytes())?.is_none() {
                    return Err(ConflictableTransactionError::Abort(Error::UserNotFound));
                }
                users.insert(user.id.as_bytes(), value.as_slice())?;
                Ok(())
            })
            .map_err(transaction_error)
    }

    /// Starts a session with its first refresh token, in one transaction.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn start_session(
        &self,
        session: &Session,
        digest: &TokenDigest,
        record: &RefreshRecord,
    ) -> Result<()> {
        self.transaction(|trees| {
            trees.put_session(None, session)?;
            trees.put_new_refresh(digest, record)?;
            Ok(())
        })
    }

    /// The record of the refresh token with this digest.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn refresh_record(&self, digest: &TokenDigest) -> Result<Option<RefreshRecord>> {
        get(&self.inner.refresh_tokens, &digest.0)
    }

    /// The session with this id (live, revoked or expired-but-unswept).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn session(&self, id: &str) -> Result<Option<Session>> {
        get(&self.inner.sessions, id.as_bytes())
    }

    /// Every stored session of a user (live or not), read through the
    /// per-user index.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sessions_of(&self, user_id: &str) -> Result<Vec<Session>> {
        let mut sessions = Vec::new();
        for id in self.session_ids_of(user_id)? {
            if let Some(session) = get::<Session>(&self.inner.sessions, id.as_bytes())? {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    /// Reads the record of `digest` and the session `session_id` and applies
    /// `decide` to them in one transaction: `decide` sees the current values
    /// (`None` if unknown) and returns the [`Exchange`] to write plus a value
    /// handed back to the caller, or an error that aborts with nothing
    /// written. Two concurrent exchanges of one token are serialized, so
    /// `decide` of the second sees what the first wrote. `decide` may run
    /// more than once (on a conflict) and must not have side effects.
    ///
    /// # Errors
    /// Whatever `decide` returns, or [`Error::Storage`].
    pub fn exchange_refresh<T, F>(
        &self,
        digest: &TokenDigest,
        session_id: &str,
        decide: F,
    ) -> Result<T>
    where
        F: Fn(Option<RefreshRecord>, Option<Session>) -> Result<(Exchange, T)>,
    {
        self.transaction(|trees| {
            let record = tx_get::<RefreshRecord>(trees.refresh_tokens, &digest.0)?;
            let session = tx_get::<Session>(trees.sessions, session_id.as_bytes())?;
            let (exchange, outcome) =
                decide(record, session.clone()).map_err(ConflictableTransactionError::Abort)?;
            if let Some(old) = &exchange.old {
                trees
                    .refresh_tokens
                    .insert(&digest.0, encode(old).map_err(abort)?)?;
            }
            if let Some((new_digest, new_record)) = &exchange.new {
                trees.put_new_refresh(new_digest, new_record)?;
            }
            if let Some(updated) = &exchange.session {
                trees.put_session(session.as_ref(), updated)?;
            }
            Ok(outcome)
        })
    }

    /// Applies `change` to each listed session of `user_id` in one
    /// transaction; `change` returns the session to store, or `None` to leave
    /// it as it is. Returns how many sessions were changed.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn update_sessions<F>(&self, user_id: &str, ids: &[String], change: F) -> Result<usize>
    where
        F: Fn(Session) -> Option<Session>,
    {
        self.transaction(|trees| {
            let mut changed = 0;
            for id in ids {
                let Some(current) = tx_get::<Session>(trees.sessions, id.as_bytes())? else {
                    continue;
                };
                if current.user_id != user_id {
                    continue;
                }
                if let Some(updated) = change(current.clone()) {
                    trees.put_session(Some(&current), &updated)?;
                    changed += 1;
                }
            }
            Ok(changed)
        })
    }

    /// Runs `body` as one sled transaction over every tree that holds
    /// users, sessions and refresh tokens.
    fn transaction<T>(
        &self,
        body: impl Fn(&Trees<'_>) -> Result<T, ConflictableTransactionError<Error>>,
    ) -> Result<T> {
        let StoreInner {
            users,
            users_by_email,
            users_by_username,
            refresh_tokens,
            refresh_expiry,
            sessions,
            session_expiry,
            user_sessions,
            ..
        } = &*self.inner;
        (
            users,
            users_by_email,
            users_by_username,
            refresh_tokens,
            refresh_expiry,
            sessions,
            session_expiry,
            user_sessions,
        )
            .transaction(
                |(
                    users,
                    users_by_email,
                    users_by_username,
                    refresh_tokens,
                    refresh_expiry,
                    sessions,
                    session_expiry,
                    user_sessions,
                )| {
                    body(&Trees {
                        users,
                        users_by_email,
                        users_by_username,
                        refresh_tokens,
                        refresh_expiry,
                        sessions,
                        session_expiry,
                        user_sessions,
                    })
                },
            )
            .map_err(transaction_error)
    }

    /// Stores a changed user and, when `revoke` is given, revokes every live
    /// session of theirs except `keep`, in one transaction. Returns how many
    /// sessions were revoked.
    ///
    /// # Errors
    /// [`Error::UserNotFound`] if the user is gone, [`Error::Storage`].
    pub fn update_user_revoking(
        &self,
        user: &User,
        keep: Option<&str>,
        revoke: Option<(UnixTime, RevokeReason)>,
    ) -> Result<usize> {
        let value = encode(user)?;
        let session_ids = self.session_ids_of(&user.id)?;
        self.transaction(|trees| {
            if trees.users.get(user.id.as_bytes())?.is_none() {
                return Err(abort(Error::UserNotFound));
            }
            trees.users.insert(user.id.as_bytes(), value.as_slice())?;
            let Some((now, reason)) = revoke else {
                return Ok(0);
            };
            let mut revoked = 0;
            for id in session_ids.iter().filter(|id| Some(id.as_str()) != keep) {
                let Some(current) = tx_get::<Session>(trees.sessions, id.as_bytes())? else {
                    continue;
                };
                if current.revoked_at.is_none() {
                    let mut updated = current.clone();
                    updated.revoke(now, reason);
                    trees.put_session(Some(&current), &updated)?;
                    revoked += 1;
                }
            }
            Ok(revoked)
        })
    }

    /// Deletes a user with their email and username index entries, their
    /// sessions and their refresh-token records, in one transaction.
    ///
    /// # Errors
    /// [`Error::UserNotFound`] if the user is gone, [`Error::Storage`].
    pub fn delete_user(&self, user: &User, username_key: &str) -> Result<()> {
        let session_ids = self.session_ids_of(&user.id)?;
        // Records are keyed by token digest; finding a user's means a scan,
        // which is fine for a rare operation and keeps rotation cheap.
        let mut records = Vec::new();
        for entry in self.inner.refresh_tokens.iter() {
            let (digest, value) = entry.map_err(storage_error)?;
            let record: RefreshRecord = decode(&value)?;
            if record.user_id == user.id {
                records.push((digest, record.expires_at));
            }
        }
        self.transaction(|trees| {
            if trees.users.remove(user.id.as_bytes())?.is_none() {
                return Err(abort(Error::UserNotFound));
            }
            trees.users_by_email.remove(user.email.as_bytes())?;
            trees.users_by_username.remove(username_key.as_bytes())?;
            for id in &session_ids {
                if let Some(session) = tx_get::<Session>(trees.sessions, id.as_bytes())? {
                    trees
                        .session_expiry
                        .remove(expiry_key(session.expires_at, id.as_bytes()))?;
                }
                trees.sessions.remove(id.as_bytes())?;
                trees.user_sessions.remove(user_session_key(&user.id, id))?;
            }
            for (digest, expires_at) in &records {
                trees.refresh_tokens.remove(digest)?;
                trees
                    .refresh_expiry
                    .remove(expiry_key(*expires_at, digest))?;
            }
            Ok(())
        })
    }

    /// A page of users in email order: up to `limit` users after the email
    /// `after` whose email or username contains `query` (case-insensitive).
    /// Reads at most `budget` index entries, so a rare query cannot make one
    /// request walk every user; returns the users and the cursor to continue
    /// from (`None` at the end).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn users_page(
        &self,
        after: Option<&str>,
        query: Option<&str>,
        limit: usize,
        budget: usize,
    ) -> Result<(Vec<User>, Option<String>)> {
        let start = match after {
            Some(email) => Bound::Excluded(email.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let query = query.map(str::to_lowercase);
        let mut users = Vec::new();
        let mut last = None;
        let entries = self
            .inner
            .users_by_email
            .range::<Vec<u8>, _>((start, Bound::Unbounded));
        for (read, entry) in entries.enumerate() {
            if users.len() >= limit || read >= budget {
                return Ok((users, last));
            }
            let (email, id) = entry.map_err(storage_error)?;
            last = Some(String::from_utf8_lossy(&email).into_owned());
            let Some(user) = get::<User>(&self.inner.users, &id)? else {
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

    fn session_ids_of(&self, user_id: &str) -> Result<Vec<String>> {
        let prefix = user_prefix(user_id);
        self.inner
            .user_sessions
            .scan_prefix(&prefix)
            .keys()
            .map(|key| {
                key.map(|key| String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
                    .map_err(storage_error)
            })
            .collect()
    }

    /// Deletes up to `limit` refresh records whose expiry is at or before
    /// `now`, oldest first, walking only the expired end of the expiry index.
    /// Returns how many were deleted; call again while it returns `limit`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sweep_expired_refresh(&self, now: UnixTime, limit: usize) -> Result<usize> {
        let expired = expired_keys(&self.inner.refresh_expiry, now, limit)?;
        if expired.is_empty() {
            return Ok(0);
        }
        self.transaction(|trees| {
            for key in &expired {
                trees.refresh_tokens.remove(&key[8..])?;
                trees.refresh_expiry.remove(key.as_ref())?;
            }
            Ok(())
        })?;
        Ok(expired.len())
    }

    /// Deletes up to `limit` sessions whose expiry is at or before `now`,
    /// with their per-user index entries. Returns how many were deleted.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sweep_expired_sessions(&self, now: UnixTime, limit: usize) -> Result<usize> {
        let expired = expired_keys(&self.inner.session_expiry, now, limit)?;
        if expired.is_empty() {
            return Ok(0);
        }
        self.transaction(|trees| {
            for key in &expired {
                let id = &key[8..];
                trees.session_expiry.remove(key.as_ref())?;
                // A session whose expiry slid forward has a newer index entry;
                // only the entry matching the stored expiry deletes it.
                if let Some(session) = tx_get::<Session>(trees.sessions, id)?
                    && expiry_key(session.expires_at, id) == key.as_ref()
                {
                    trees.sessions.remove(id)?;
                    trees
                        .user_sessions
                        .remove(user_session_key(&session.user_id, &session.id))?;
                }
            }
            Ok(())
        })?;
        Ok(expired.len())
    }

    /// How many refresh records are stored, live or not (for tests and metrics).
    pub fn refresh_record_count(&self) -> usize {
        self.inner.refresh_tokens.len()
    }

    /// How many sessions are stored, live or not (for tests and metrics).
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Appends an event to the audit log (durable with the next flush).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        let id = self.inner.db.generate_id().map_err(storage_error)?;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&event.at.to_be_bytes());
        key[8..].copy_from_slice(&id.to_be_bytes());
        self.inner
            .audit
            .insert(key, encode(event)?)
            .map(drop)
            .map_err(storage_error)
    }

    /// Audit events at or after `since`, oldest first, optionally of one
    /// user only, at most `limit` of them.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn audit_events(
        &self,
        since: UnixTime,
        user_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let mut events = Vec::new();
        for value in self.inner.audit.range(since.to_be_bytes()..).values() {
            if events.len() >= limit {
                break;
            }
            let event: AuditEvent = decode(&value.map_err(storage_error)?)?;
            if user_id.is_none_or(|user| event.user_id.as_deref() == Some(user)) {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Deletes up to `limit` audit events older than `before`; returns how many.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sweep_audit(&self, before: UnixTime, limit: usize) -> Result<usize> {
        let old = expired_keys(&self.inner.audit, before.saturating_sub(1), limit)?;
        let mut batch = sled::Batch::default();
        for key in &old {
            batch.remove(key.as_ref());
        }
        self.inner.audit.apply_batch(batch).map_err(storage_error)?;
        Ok(old.len())
    }
}

/// The trees of one transaction.
struct Trees<'a> {
    users: &'a TransactionalTree,
    users_by_email: &'a TransactionalTree,
    users_by_username: &'a TransactionalTree,
    refresh_tokens: &'a TransactionalTree,
    refresh_expiry: &'a TransactionalTree,
    sessions: &'a TransactionalTree,
    session_expiry: &'a TransactionalTree,
    user_sessions: &'a TransactionalTree,
}

type TxResult<T> = Result<T, ConflictableTransactionError<Error>>;

impl Trees<'_> {
    fn put_new_refresh(&self, digest: &TokenDigest, record: &RefreshRecord) -> TxResult<()> {
        self.refresh_tokens
            .insert(&digest.0, encode(record).map_err(abort)?)?;
        self.refresh_expiry
            .insert(expiry_key(record.expires_at, &digest.0).as_slice(), EMPTY)?;
        Ok(())
    }

    /// Writes `session`, keeping its expiry and per-user index entries in step
    /// with `previous` (what was stored before, if anything).
    fn put_session(&self, previous: Option<&Session>, session: &Session) -> TxResult<()> {
        let id = session.id.as_bytes();
        match previous {
            Some(previous) if previous.expires_at == session.expires_at => {}
            Some(previous) => {
                self.session_expiry
                    .remove(expiry_key(previous.expires_at, id).as_slice())?;
                self.session_expiry
                    .insert(expiry_key(session.expires_at, id).as_slice(), EMPTY)?;
            }
            None => {
                self.session_expiry
                    .insert(expiry_key(session.expires_at, id).as_slice(), EMPTY)?;
                self.user_sessions
                    .insert(user_session_key(&session.user_id, &session.id), EMPTY)?;
            }
        }
        self.sessions.insert(id, encode(session).map_err(abort)?)?;
        Ok(())
    }
}

/// Key (in sled's default tree) of the format marker written when a data
/// directory is created.
const FORMAT_KEY: &[u8] = b"latchkey.format";
const FORMAT_VERSION: &[u8] = b"1";

/// sled recovers a damaged log by truncating it, which can silently turn a
/// corrupt database into an empty one. A marker written at creation tells
/// "new" from "lost everything": an existing database without it is refused.
fn check_format(db: &sled::Db, existed: bool, dir: &Path) -> Result<()> {
    match db.get(FORMAT_KEY).map_err(storage_error)? {
        Some(version) if version.as_ref() == FORMAT_VERSION => Ok(()),
        Some(version) => Err(Error::Storage(format!(
            "the database in {} has format {:?}, this latchkey reads format 1",
            dir.display(),
            String::from_utf8_lossy(&version)
        ))),
        None if existed => Err(Error::Storage(format!(
            "the database in {} is corrupt or truncated (its format marker is gone); \
             restore the directory from a backup",
            dir.display()
        ))),
        None => {
            db.insert(FORMAT_KEY, FORMAT_VERSION)
                .map_err(storage_error)?;
            db.flush().map(drop).map_err(storage_error)
        }
    }
}

/// The value of index entries, which carry everything in their key.
const EMPTY: &[u8] = &[];

/// `expires_at` (big-endian, so keys sort by time) ‖ id.
fn expiry_key(expires_at: UnixTime, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&expires_at.to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// Keys of the per-user session index: user id ‖ `/` ‖ session id.
fn user_session_key(user_id: &str, session_id: &str) -> Vec<u8> {
    let mut key = user_prefix(user_id);
    key.extend_from_slice(session_id.as_bytes());
    key
}

fn user_prefix(user_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(user_id.len() + 37);
    key.extend_from_slice(user_id.as_bytes());
    key.push(b'/');
    key
}

/// Up to `limit` keys of a time-ordered tree whose time is at or before `now`.
fn expired_keys(tree: &sled::Tree, now: UnixTime, limit: usize) -> Result<Vec<sled::IVec>> {
    let upper = now.saturating_add(1).to_be_bytes();
    tree.range(..upper.as_slice())
        .keys()
        .take(limit)
        .map(|key| key.map_err(storage_error))
        .collect()
}

fn tx_get<T: DeserializeOwned>(tree: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(abort),
        None => Ok(None),
    }
}

fn abort(err: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(err)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|err| Error::Internal(format!("cannot encode a record: {err}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| Error::Storage(format!("unreadable record: {err}")))
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>> {
    match tree.get(key).map_err(storage_error)? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

fn storage_error(err: sled::Error) -> Error {
    Error::Storage(err.to_string())
}

fn transaction_error(err: TransactionError<Error>) -> Error {
    match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(err) => storage_error(err),
    }
}

type FlushReply = oneshot::Sender<Result<(), String>>;

/// The group-commit thread: each round drains every waiting request, flushes
/// once, and answers them all.
struct Flusher {
    requests: Option<mpsc::Sender<FlushReply>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn spawn(db: sled::Db) -> Result<Flusher> {
        let (sender, receiver) = mpsc::channel::<FlushReply>();
        let thread = std::thread::Builder::new()
            .name("latchkey-flush".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(receiver.try_iter());
                    let outcome = db.flush().map(drop).map_err(|err| err.to_string());
                    for reply in waiting {
                        // A waiter that gave up (its request was cancelled) is fine to skip.
                        let _ = reply.send(outcome.clone());
                    }
                }
            })
            .map_err(|err| Error::Internal(format!("cannot start the flush thread: {err}")))?;
        Ok(Flusher {
            requests: Some(sender),
            thread: Some(thread),
        })
    }

    async fn flush(&self) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| Error::Internal("store is closed".into()))?
            .send(reply)
            .map_err(|_| Error::Internal("flush thread stopped".into()))?;
        outcome
            .await
            .map_err(|_| Error::Internal("flush thread stopped".into()))?
            .map_err(Error::Storage)
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the queue ends the thread; joining it releases its handle on
        // the database, so the directory lock is free once the store is dropped.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
