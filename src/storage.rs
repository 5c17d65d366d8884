//! Persistent state on sled: the only importer of `sled`.
//!
//! Trees:
//! - `users`: user id → [`User`] (JSON)
//! - `users_by_email`: normalized email → user id
//! - `users_by_username`: lower-cased username → user id
//! - `refresh_tokens`: blake3 digest of a refresh token → [`RefreshRecord`] (JSON)
//! - `refresh_expiry`: `expires_at` (big-endian u64) ‖ digest → empty; the
//!   sweeper walks it in time order, so its cost follows the expired records only.
//!
//! Writes that belong together happen in one sled transaction. Durability is
//! grouped: [`Store::durable`] asks a single flusher thread to `flush()` once
//! for every writer waiting at that moment (sled 0.34's `flush_async`
//! deadlocks under concurrency, and one flush per request wastes the disk).
//! Note what sled's flush is: it writes the log with `sync_file_range`, which
//! survives a killed process but is weaker than `fdatasync` against power loss.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::{RefreshRecord, UnixTime, User};
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
    flusher: Flusher,
}

/// What the service decides when a refresh token is exchanged: the old
/// record as it should be stored now, and the new record (if any) to add.
pub struct Exchange {
    /// The presented token's record, updated (e.g. revoked and linked to its successor).
    pub old: RefreshRecord,
    /// The successor's digest and record.
    pub new: Option<(TokenDigest, RefreshRecord)>,
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

    /// Stores a new refresh-token record and its expiry index entry.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn insert_refresh(&self, digest: &TokenDigest, record: &RefreshRecord) -> Result<()> {
        let value = encode(record)?;
        let StoreInner {
            refresh_tokens,
            refresh_expiry,
            ..
        } = &*self.inner;
        (refresh_tokens, refresh_expiry)
            .transaction(|(tokens, expiry)| {
                tokens.insert(&digest.0, value.as_slice())?;
                expiry.insert(expiry_key(record.expires_at, digest).as_slice(), EMPTY)?;
                Ok(())
            })
            .map_err(transaction_error)
    }

    /// The record of the refresh token with this digest.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn refresh_record(&self, digest: &TokenDigest) -> Result<Option<RefreshRecord>> {
        get(&self.inner.refresh_tokens, &digest.0)
    }

    /// Reads the record of `digest` and applies `decide` to it in one
    /// transaction: `decide` sees the current record (`None` if unknown) and
    /// returns the [`Exchange`] to write, or an error that aborts with nothing
    /// written. Two concurrent exchanges of one token are serialized, so
    /// `decide` of the second sees what the first wrote. `decide` may run more
    /// than once (on a conflict) and must not have side effects.
    ///
    /// # Errors
    /// Whatever `decide` returns, or [`Error::Storage`].
    pub fn exchange_refresh<F>(&self, digest: &TokenDigest, decide: F) -> Result<Exchange>
    where
        F: Fn(Option<RefreshRecord>) -> Result<Exchange>,
    {
        let StoreInner {
            refresh_tokens,
            refresh_expiry,
            ..
        } = &*self.inner;
        (refresh_tokens, refresh_expiry)
            .transaction(|(tokens, expiry)| {
                let current = match tokens.get(digest.0)? {
                    Some(bytes) => Some(
                        decode::<RefreshRecord>(&bytes)
                            .map_err(ConflictableTransactionError::Abort)?,
                    ),
                    None => None,
                };
                let exchange = decide(current).map_err(ConflictableTransactionError::Abort)?;
                let old = encode(&exchange.old).map_err(ConflictableTransactionError::Abort)?;
                tokens.insert(&digest.0, old)?;
                if let Some((new_digest, new_record)) = &exchange.new {
                    let new = encode(new_record).map_err(ConflictableTransactionError::Abort)?;
                    tokens.insert(&new_digest.0, new)?;
                    expiry.insert(
                        expiry_key(new_record.expires_at, new_digest).as_slice(),
                        EMPTY,
                    )?;
                }
                Ok(exchange)
            })
            .map_err(transaction_error)
    }

    /// Deletes up to `limit` refresh records whose expiry is at or before
    /// `now`, oldest first, walking only the expired end of the expiry index.
    /// Returns how many were deleted; call again while it returns `limit`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sweep_expired(&self, now: UnixTime, limit: usize) -> Result<usize> {
        let StoreInner {
            refresh_tokens,
            refresh_expiry,
            ..
        } = &*self.inner;
        let upper = (now.saturating_add(1)).to_be_bytes();
        let mut expired = Vec::new();
        for entry in refresh_expiry.range(..upper.as_slice()).keys().take(limit) {
            expired.push(entry.map_err(storage_error)?);
        }
        if expired.is_empty() {
            return Ok(0);
        }
        (refresh_tokens, refresh_expiry)
            .transaction(|(tokens, expiry)| {
                for key in &expired {
                    if let Some(digest) = key.get(8..) {
                        tokens.remove(digest)?;
                    }
                    expiry.remove(key)?;
                }
                Ok(())
            })
            .map_err(transaction_error)?;
        Ok(expired.len())
    }

    /// How many refresh records are stored, live or not (for tests and metrics).
    pub fn refresh_record_count(&self) -> usize {
        self.inner.refresh_tokens.len()
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

fn expiry_key(expires_at: UnixTime, digest: &TokenDigest) -> [u8; 40] {
    let mut key = [0u8; 40];
    key[..8].copy_from_slice(&expires_at.to_be_bytes());
    key[8..].copy_from_slice(&digest.0);
    key
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
