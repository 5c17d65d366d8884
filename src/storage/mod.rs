//! Persistent state on sled: the only importer of `sled`. Typed records in,
//! typed records out; every write that belongs together happens in one
//! sled transaction.
//!
//! Trees (declared once, in [`trees!`] below) and their key layout:
//!
//! | tree | key | value |
//! |---|---|---|
//! | `users` | user id | [`User`] (JSON) |
//! | `users_by_email` | normalized email | user id |
//! | `users_by_username` | lower-cased username | user id |
//! | `refresh_tokens` | blake3 digest of a refresh token | [`RefreshRecord`] (JSON) |
//! | `refresh_expiry` | `expires_at` (big-endian u64) ‖ digest | empty |
//! | `session_tokens` | session id ‖ `/` ‖ digest | empty |
//! | `sessions` | session (refresh-token family) id | [`Session`] (JSON) |
//! | `session_expiry` | `expires_at` ‖ session id | empty |
//! | `user_sessions` | user id ‖ `/` ‖ session id | empty |
//! | `audit` | time (big-endian u64) ‖ sled-generated id | [`AuditEvent`] (JSON) |
//! | `mail_tokens` | blake3 digest of a mailed token | [`MailToken`] (JSON) |
//! | `mail_token_expiry` | `expires_at` ‖ digest | empty |
//! | `outbox` | time queued ‖ entry id | [`OutboxEntry`] (JSON) |
//! | `factors` | user id | [`Factors`] (JSON; TOTP key sealed) |
//! | `challenges` | blake3 digest of a challenge token or id | [`Challenge`] (JSON) |
//! | `challenge_expiry` | `expires_at` ‖ digest | empty |
//!
//! The expiry indexes let the sweeper walk only what has expired; the
//! per-session and per-user indexes let an account's data be found without
//! scanning everyone's.
//!
//! Files by concern: `open` (opening, the format marker, grouped flushes),
//! `users`, `sessions` (sessions and refresh records), `audit`, `mail`,
//! `factors` (second factors, passkeys and their challenges), `sweep`.
//!
//! sled runs every transaction under one global lock, so transactions are
//! serialized with each other: a value read inside one is current until it
//! commits. Durability is grouped: [`Store::durable`] asks one flusher thread
//! to `flush()` once for every writer waiting at that moment. sled's flush
//! writes its log with `sync_file_range`, which survives a killed process but
//! is weaker than `fdatasync` against power loss.
//!
//! sled fails for good when a write meets a full disk: it refuses every later
//! write, and sometimes reads too, until it is opened again. So writes are
//! refused (503) while the disk has less than 8 MiB free, and sled never
//! meets a full disk; reads go on, and writes resume by themselves once
//! there is room. Should a write fail anyway (the disk filled between two
//! looks, or turned read-only), a recovery thread waits until the data
//! directory takes writes again and opens the database afresh, so service
//! resumes without a restart (see `open`).
//!
//! [`User`]: crate::model::User
//! [`RefreshRecord`]: crate::model::RefreshRecord
//! [`Session`]: crate::model::Session
//! [`AuditEvent`]: crate::model::AuditEvent
//! [`MailToken`]: crate::model::MailToken
//! [`OutboxEntry`]: crate::model::OutboxEntry
//! [`Factors`]: crate::model::Factors
//! [`Challenge`]: crate::model::Challenge

mod audit;
mod factors;
mod mail;
mod open;
mod sessions;
mod sweep;
mod users;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::error::{Error, Result};

pub(crate) use factors::{Judged, Settle};
pub(crate) use mail::{OutboxKey, Redeemed};
pub(crate) use sessions::{Exchange, NewSession, Stored};
pub(crate) use users::Ending;

/// Declares every tree once: the [`TreeId`] variants, their sled names and
/// the list [`Store`] opens. Adding a tree is one line here (and a row in
/// the module doc's table).
macro_rules! trees {
    ($($(#[doc = $doc:literal])* $id:ident = $name:literal,)+) => {
        /// One of latchkey's sled trees.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum TreeId {
            $($(#[doc = $doc])* $id,)+
        }

        impl TreeId {
            /// Every tree, in declaration order (the order [`Store`] holds them in).
            pub(crate) const ALL: &'static [TreeId] = &[$(TreeId::$id,)+];

            /// The tree's name in sled.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(TreeId::$id => $name,)+
                }
            }
        }
    };
}

trees! {
    /// User id → user.
    Users = "users",
    /// Normalized email → user id.
    UsersByEmail = "users_by_email",
    /// Lower-cased username → user id.
    UsersByUsername = "users_by_username",
    /// Refresh-token digest → refresh record.
    RefreshTokens = "refresh_tokens",
    /// Expiry ‖ digest, for the sweeper.
    RefreshExpiry = "refresh_expiry",
    /// Session id ‖ `/` ‖ digest: a session's refresh records.
    SessionTokens = "session_tokens",
    /// Session id → session.
    Sessions = "sessions",
    /// Expiry ‖ session id, for the sweeper.
    SessionExpiry = "session_expiry",
    /// User id ‖ `/` ‖ session id: a user's sessions.
    UserSessions = "user_sessions",
    /// Time ‖ id → audit event.
    Audit = "audit",
    /// Mailed-token digest → mail token.
    MailTokens = "mail_tokens",
    /// Expiry ‖ digest, for the sweeper.
    MailTokenExpiry = "mail_token_expiry",
    /// Time queued ‖ id → outbox entry (mails to deliver, requests to look at).
    Outbox = "outbox",
    /// User id → second factors and passkeys.
    Factors = "factors",
    /// Challenge digest → challenge (second-factor and passkey steps).
    Challenges = "challenges",
    /// Expiry ‖ digest, for the sweeper.
    ChallengeExpiry = "challenge_expiry",
}

/// A cheap-to-clone handle on latchkey's database.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Shared>,
}

/// Told of each grouped flush: how many writers it made durable, and how
/// long it took.
pub(crate) type OnFlush = Box<dyn Fn(usize, std::time::Duration) + Send + Sync>;

/// What every clone of a [`Store`] shares: the open database, swapped for a
/// fresh one when a failed write has left sled unusable (see `open`).
struct Shared {
    dir: PathBuf,
    /// sled's page-cache bound, kept for reopening.
    cache_bytes: u64,
    /// Told of every grouped flush (kept for reopening).
    on_flush: Arc<std::sync::OnceLock<OnFlush>>,
    /// `None` only while the database is being reopened.
    slot: RwLock<Option<Arc<Opened>>>,
    /// Set when a write failed with an I/O error (a full or read-only disk):
    /// sled refuses every later write until it is opened again.
    faulted: AtomicBool,
    /// Dropping it stops the recovery thread.
    _stop: Mutex<mpsc::Sender<()>>,
}

/// One opening of the database: sled, its trees and the flusher.
pub(super) struct Opened {
    db: sled::Db,
    /// Indexed by `TreeId as usize`.
    trees: Vec<sled::Tree>,
    flusher: open::Flusher,
}

/// A tree of the database as opened now; dereferences to the sled tree.
pub(super) struct TreeHandle {
    opened: Arc<Opened>,
    index: usize,
}

impl std::ops::Deref for TreeHandle {
    type Target = sled::Tree;

    fn deref(&self) -> &sled::Tree {
        &self.opened.trees[self.index]
    }
}

impl Store {
    /// The database as opened now.
    fn opened(&self) -> Result<Arc<Opened>> {
        let slot = self
            .inner
            .slot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.clone()
            .ok_or_else(|| Error::Storage("the database is being reopened".into()))
    }

    fn tree(&self, id: TreeId) -> Result<TreeHandle> {
        Ok(TreeHandle {
            opened: self.opened()?,
            index: id as usize,
        })
    }

    /// Refuses a write while the data directory's disk has less than
    /// [`DISK_RESERVE`] free: sled fails for good once a write meets a full
    /// disk (reads included, until it is opened again), so it must never
    /// meet one. One `statvfs` per write (about a microsecond).
    fn has_room(&self) -> Result<()> {
        let free = rustix::fs::statvfs(&self.inner.dir)
            .map(|stats| stats.f_bavail.saturating_mul(stats.f_frsize))
            .unwrap_or(u64::MAX);
        match free >= DISK_RESERVE {
            true => Ok(()),
            false => Err(Error::Storage(format!(
                "the data directory's disk has less than {} MiB free; writes are refused until there is room",
                DISK_RESERVE >> 20
            ))),
        }
    }

    /// Whether the store takes writes now: open, not waiting to recover
    /// from a failed write, and with room on its disk.
    ///
    /// # Errors
    /// [`Error::Storage`] saying why not.
    pub(crate) fn ready(&self) -> Result<()> {
        self.opened()?;
        if self.inner.faulted.load(Ordering::SeqCst) {
            return Err(Error::Storage(
                "a write failed; the database is being reopened".into(),
            ));
        }
        self.has_room()
    }

    /// A sled error as latchkey's, noting an I/O failure for recovery.
    fn failed(&self, err: sled::Error) -> Error {
        if matches!(err, sled::Error::Io(_)) {
            self.inner.faulted.store(true, Ordering::SeqCst);
        }
        storage_error(err)
    }

    /// Runs `body` as one sled transaction over the trees `ids`; inside,
    /// [`Tx::tree`] reaches each of them by id.
    fn transaction<T>(&self, ids: &[TreeId], body: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.has_room()?;
        let opened = self.opened()?;
        let trees: Vec<&sled::Tree> = ids.iter().map(|id| &opened.trees[*id as usize]).collect();
        trees
            .as_slice()
            .transaction(|view| body(&Tx { ids, trees: view }))
            .map_err(|err| match err {
                TransactionError::Abort(err) => err,
                TransactionError::Storage(err) => self.failed(err),
            })
    }
}

/// The trees of one transaction.
struct Tx<'a> {
    ids: &'a [TreeId],
    trees: &'a [TransactionalTree],
}

impl Tx<'_> {
    /// The transactional view of tree `id`; a tree the transaction did not
    /// ask for is a bug, reported as an internal error.
    fn tree(&self, id: TreeId) -> TxResult<&TransactionalTree> {
        self.ids
            .iter()
            .position(|held| *held == id)
            .and_then(|index| self.trees.get(index))
            .ok_or_else(|| {
                abort(Error::Internal(format!(
                    "transaction without the {} tree",
                    id.name()
                )))
            })
    }

    fn get<T: DeserializeOwned>(&self, id: TreeId, key: &[u8]) -> TxResult<Option<T>> {
        match self.tree(id)?.get(key)? {
            Some(bytes) => decode(&bytes).map(Some).map_err(abort),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, id: TreeId, key: &[u8], value: &T) -> TxResult<()> {
        self.tree(id)?.insert(key, encode(value).map_err(abort)?)?;
        Ok(())
    }

    fn insert(&self, id: TreeId, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.tree(id)?.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, id: TreeId, key: &[u8]) -> TxResult<()> {
        self.tree(id)?.remove(key)?;
        Ok(())
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<Error>>;

/// Free bytes the data directory's disk must keep for writes to be accepted.
const DISK_RESERVE: u64 = 8 << 20;

/// The value of index entries, which carry everything in their key.
const EMPTY: &[u8] = &[];

/// `time` (big-endian, so keys sort by time) ‖ id.
fn time_key(time: u64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&time.to_be_bytes());
    key.extend_from_slice(id);
    key
}

/// `owner` ‖ `/` ‖ `item`: the key of a one-to-many index entry.
fn child_key(owner: &str, item: &[u8]) -> Vec<u8> {
    let mut key = child_prefix(owner);
    key.extend_from_slice(item);
    key
}

/// `owner` ‖ `/`: the prefix of `owner`'s index entries.
fn child_prefix(owner: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + 40);
    key.extend_from_slice(owner.as_bytes());
    key.push(b'/');
    key
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

/// The parts after `prefix` of every key in `tree` that starts with it.
fn suffixes(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
    tree.scan_prefix(prefix)
        .keys()
        .map(|key| {
            key.map(|key| key[prefix.len()..].to_vec())
                .map_err(storage_error)
        })
        .collect()
}

fn storage_error(err: sled::Error) -> Error {
    Error::Storage(err.to_string())
}
