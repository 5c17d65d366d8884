//! Persistent state: the only importer of `sled` and of `sqlx`. Typed
//! records in, typed records out; every write that belongs together happens
//! in one transaction.
//!
//! Two backends keep the same trees: sled, embedded in the data directory
//! (the default), and PostgreSQL (`DATABASE_URL`, for several nodes on one
//! database; see `pg`), where each tree is a table of `key bytea primary
//! key, value bytea`. The operations of [`Store`] are written once, against
//! the small key-value contract of this module: point reads, ordered range
//! scans and transactions over point reads and writes ([`Tx`]).
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
//! Files by concern: `open` (opening sled, the format marker, grouped
//! flushes), `pg` (the PostgreSQL backend, its migrations, shared secrets
//! and leader locks), `dump` (export and import), `users`, `sessions`
//! (sessions and refresh records), `audit`, `mail`, `factors` (second
//! factors, passkeys and their challenges), `sweep`.
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
mod dump;
mod factors;
mod mail;
mod open;
mod pg;
mod sessions;
mod sweep;
mod users;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, TransactionError, TransactionalTree, UnabortableTransactionError,
};

use crate::error::{Error, Result};

pub(crate) use dump::{DUMP_FORMAT, DUMP_VERSION, DumpLine};
pub(crate) use factors::{Judged, Settle};
pub(crate) use mail::{OutboxKey, Redeemed};
pub(crate) use pg::{Leader, PgOptions, Role};
pub(crate) use sessions::{Exchange, NewSession, Stored};
pub(crate) use users::Ending;

/// Declares every tree once: the [`TreeId`] variants, their names and the
/// list [`Store`] opens. Adding a tree is one line here, a row in the module
/// doc's table, and a PostgreSQL migration creating its table.
macro_rules! trees {
    ($($(#[doc = $doc:literal])* $id:ident = $name:literal,)+) => {
        /// One of latchkey's trees.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub(crate) enum TreeId {
            $($(#[doc = $doc])* $id,)+
        }

        impl TreeId {
            /// Every tree, in declaration order (the order [`Store`] holds them in).
            pub(crate) const ALL: &'static [TreeId] = &[$(TreeId::$id,)+];

            /// The tree's name (in sled; PostgreSQL's table is `latchkey_` ‖ name).
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(TreeId::$id => $name,)+
                }
            }

            /// The tree with this name.
            pub(crate) fn named(name: &str) -> Option<TreeId> {
                TreeId::ALL.iter().copied().find(|id| id.name() == name)
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

/// A cheap-to-clone handle on latchkey's database, on either backend.
#[derive(Clone)]
pub(crate) struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled(Sled),
    Pg(Arc<pg::Pg>),
}

/// Told of each grouped flush: how many writers it made durable, and how
/// long it took.
pub(crate) type OnFlush = Box<dyn Fn(usize, std::time::Duration) + Send + Sync>;

/// The sled backend: a handle on what every clone shares.
#[derive(Clone)]
struct Sled {
    inner: Arc<Shared>,
}

/// What every clone of a sled store shares: the open database, swapped for
/// a fresh one when a failed write has left sled unusable (see `open`).
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
    /// Every write holds it shared; an export holds it alone, so that what
    /// it reads is one consistent state (sled has no snapshots).
    gate: RwLock<()>,
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

/// Keys and values read by a scan, in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A row: its tree and key.
type Row = (TreeId, Vec<u8>);

/// Rows fetched for a transaction body (`None`: absent).
type Fetched = HashMap<Row, Option<Vec<u8>>>;

/// Rows written by a transaction body (`None`: removed), in order.
type Writes = BTreeMap<Row, Option<Vec<u8>>>;

/// An entry of any tree: tree, key, value (as an export hands them out).
pub(crate) type TreeEntry = (TreeId, Vec<u8>, Vec<u8>);

impl Sled {
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

    fn tree(&self, id: TreeId) -> Result<sled::Tree> {
        Ok(self.opened()?.trees[id as usize].clone())
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

    fn ready(&self) -> Result<()> {
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

    /// Holds the write gate shared for the time of one write.
    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.inner
            .gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn transaction<T>(&self, ids: &[TreeId], body: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T> {
        self.has_room()?;
        let opened = self.opened()?;
        let _writing = self.writing();
        let trees: Vec<&sled::Tree> = ids.iter().map(|id| &opened.trees[*id as usize]).collect();
        trees
            .as_slice()
            .transaction(|view| {
                body(&Tx {
                    ids,
                    view: View::Sled(view),
                })
                .map_err(|err| match err {
                    TxError::Abort(err) => ConflictableTransactionError::Abort(err),
                    TxError::Sled(err) => err.into(),
                    TxError::Unread => ConflictableTransactionError::Abort(Error::Internal(
                        "a sled transaction asked for a prefetch".into(),
                    )),
                })
            })
            .map_err(|err| match err {
                TransactionError::Abort(err) => err,
                TransactionError::Storage(err) => self.failed(err),
            })
    }

    fn scan(
        &self,
        id: TreeId,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries> {
        let tree = self.tree(id)?;
        let owned = |bound: Bound<&[u8]>| bound.map(<[u8]>::to_vec);
        tree.range::<Vec<u8>, _>((owned(start), owned(end)))
            .take(limit)
            .map(|entry| {
                entry
                    .map(|(key, value)| (key.to_vec(), value.to_vec()))
                    .map_err(storage_error)
            })
            .collect()
    }
}

impl Store {
    /// Opens the PostgreSQL database at `url`, applying its migrations.
    ///
    /// # Errors
    /// [`Error::Storage`] when it cannot be reached or migrated (or was
    /// migrated by a newer latchkey).
    pub(crate) async fn connect(url: &str, options: &PgOptions) -> Result<Store> {
        let pg = pg::Pg::connect(url, options).await?;
        Ok(Store {
            backend: Backend::Pg(Arc::new(pg)),
        })
    }

    /// Which backend this is, for logs: `sled` or `postgres`.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.backend {
            Backend::Sled(_) => "sled",
            Backend::Pg(_) => "postgres",
        }
    }

    /// Whether the store takes writes now: for sled, open, not waiting to
    /// recover from a failed write, and with room on its disk; for
    /// PostgreSQL, answering.
    ///
    /// # Errors
    /// [`Error::Storage`] saying why not.
    pub(crate) async fn ready(&self) -> Result<()> {
        match &self.backend {
            Backend::Sled(sled) => sled.ready(),
            Backend::Pg(pg) => pg.ready().await,
        }
    }

    /// The stored bytes under `key` in tree `id`.
    async fn read(&self, id: TreeId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Sled(sled) => Ok(sled
                .tree(id)?
                .get(key)
                .map_err(storage_error)?
                .map(|value| value.to_vec())),
            Backend::Pg(pg) => pg.read(id, key).await,
        }
    }

    /// The stored bytes under each of `rows`, in order: one round trip on
    /// PostgreSQL.
    async fn read_many(&self, rows: &[(TreeId, &[u8])]) -> Result<Vec<Option<Vec<u8>>>> {
        match &self.backend {
            Backend::Sled(sled) => rows
                .iter()
                .map(|(id, key)| {
                    Ok(sled
                        .tree(*id)?
                        .get(key)
                        .map_err(storage_error)?
                        .map(|value| value.to_vec()))
                })
                .collect(),
            Backend::Pg(pg) => pg.read_many(rows).await,
        }
    }

    /// The record under `key` in tree `id`.
    async fn get<T: DeserializeOwned>(&self, id: TreeId, key: &[u8]) -> Result<Option<T>> {
        match self.read(id, key).await? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` entries of tree `id` between `start` and `end`, in key order.
    async fn scan(
        &self,
        id: TreeId,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Entries> {
        match &self.backend {
            Backend::Sled(sled) => sled.scan(id, start, end, limit),
            Backend::Pg(pg) => pg.scan(id, start, end, limit).await,
        }
    }

    /// The parts after `prefix` of every key in tree `id` that starts with it.
    async fn suffixes(&self, id: TreeId, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let end = prefix_end(prefix);
        let end = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .scan(id, Bound::Included(prefix), end, usize::MAX)
            .await?
            .into_iter()
            .map(|(key, _)| key[prefix.len()..].to_vec())
            .collect())
    }

    /// Every entry of tree `id`, read in pages of [`PAGE`] (no snapshot:
    /// each page is current when read), handed to `visit` in key order.
    async fn each(
        &self,
        id: TreeId,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let page = self.scan(id, start, Bound::Unbounded, PAGE).await?;
            for (key, value) in &page {
                visit(key, value)?;
            }
            if page.len() < PAGE {
                return Ok(());
            }
            after = page.last().map(|(key, _)| key.clone());
        }
    }

    /// How many entries tree `id` holds.
    async fn count(&self, id: TreeId) -> Result<usize> {
        match &self.backend {
            Backend::Sled(sled) => Ok(sled.tree(id)?.len()),
            Backend::Pg(pg) => pg.count(id).await,
        }
    }

    /// Runs `body` as one transaction over the trees `ids`; inside,
    /// [`Tx`] reads and writes each of them by id. `body` may run more than
    /// once (sled retries on conflict; PostgreSQL runs it again after each
    /// read it had to fetch), so it must not have side effects; only the
    /// writes of its last run are committed.
    async fn transaction<T>(
        &self,
        ids: &[TreeId],
        body: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T> {
        self.transaction_locking(ids, &[], body).await
    }

    /// Like [`Store::transaction`], telling the backend which keys `body`
    /// will read, so PostgreSQL fetches (and locks) them in one round trip
    /// instead of one each.
    async fn transaction_locking<T>(
        &self,
        ids: &[TreeId],
        reads: &[Row],
        body: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T> {
        self.transaction_sharing(ids, reads, &[], body).await
    }

    /// Like [`Store::transaction_locking`], where the rows `body` reads from
    /// the trees `shared` (and never writes) are locked shared on
    /// PostgreSQL: transactions that only read them run side by side, and
    /// one that writes them waits for all of them (and they for it).
    async fn transaction_sharing<T>(
        &self,
        ids: &[TreeId],
        reads: &[Row],
        shared: &[TreeId],
        body: impl Fn(&Tx<'_>) -> TxResult<T>,
    ) -> Result<T> {
        match &self.backend {
            Backend::Sled(sled) => sled.transaction(ids, body),
            Backend::Pg(pg) => pg.transaction(ids, reads, shared, body).await,
        }
    }

    /// Writes (or with `None` removes) one entry outside any other transaction.
    async fn write_one(&self, id: TreeId, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.transaction(&[id], |tx| match value {
            Some(value) => tx.insert(id, key, value),
            None => tx.remove(id, key),
        })
        .await
    }
}

/// The trees of one transaction, as its backend sees them.
pub(super) struct Tx<'a> {
    ids: &'a [TreeId],
    view: View<'a>,
}

enum View<'a> {
    Sled(&'a [TransactionalTree]),
    Pg(&'a Staged<'a>),
}

/// One run of a transaction body on PostgreSQL: the rows fetched (and
/// locked) so far, and the writes of this run, applied at commit.
pub(super) struct Staged<'a> {
    fetched: &'a Fetched,
    writes: RefCell<Writes>,
    /// The first key this run wanted and had not fetched.
    unread: RefCell<Option<Row>>,
}

impl Tx<'_> {
    /// The position of tree `id` in the transaction; a tree the transaction
    /// did not ask for is a bug, reported as an internal error.
    fn position(&self, id: TreeId) -> TxResult<usize> {
        self.ids.iter().position(|held| *held == id).ok_or_else(|| {
            abort(Error::Internal(format!(
                "transaction without the {} tree",
                id.name()
            )))
        })
    }

    fn read(&self, id: TreeId, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
        let index = self.position(id)?;
        match self.view {
            View::Sled(trees) => Ok(trees[index].get(key)?.map(|value| value.to_vec())),
            View::Pg(staged) => {
                let wanted = (id, key.to_vec());
                if let Some(written) = staged.writes.borrow().get(&wanted) {
                    return Ok(written.clone());
                }
                match staged.fetched.get(&wanted) {
                    Some(value) => Ok(value.clone()),
                    None => {
                        *staged.unread.borrow_mut() = Some(wanted);
                        Err(TxError::Unread)
                    }
                }
            }
        }
    }

    fn contains(&self, id: TreeId, key: &[u8]) -> TxResult<bool> {
        Ok(self.read(id, key)?.is_some())
    }

    fn get<T: DeserializeOwned>(&self, id: TreeId, key: &[u8]) -> TxResult<Option<T>> {
        match self.read(id, key)? {
            Some(bytes) => decode(&bytes).map(Some).map_err(abort),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, id: TreeId, key: &[u8], value: &T) -> TxResult<()> {
        self.insert(id, key, &encode(value).map_err(abort)?)
    }

    fn insert(&self, id: TreeId, key: &[u8], value: &[u8]) -> TxResult<()> {
        self.write(id, key, Some(value))
    }

    fn remove(&self, id: TreeId, key: &[u8]) -> TxResult<()> {
        self.write(id, key, None)
    }

    fn write(&self, id: TreeId, key: &[u8], value: Option<&[u8]>) -> TxResult<()> {
        let index = self.position(id)?;
        match self.view {
            View::Sled(trees) => {
                match value {
                    Some(value) => trees[index].insert(key, value)?,
                    None => trees[index].remove(key)?,
                };
            }
            View::Pg(staged) => {
                staged
                    .writes
                    .borrow_mut()
                    .insert((id, key.to_vec()), value.map(<[u8]>::to_vec));
            }
        }
        Ok(())
    }
}

/// Why a transaction body stopped.
pub(super) enum TxError {
    /// It decided to write nothing, with this error.
    Abort(Error),
    /// sled failed or saw a conflict (and will run the body again).
    Sled(UnabortableTransactionError),
    /// It needs a row PostgreSQL has not fetched yet (see [`Staged`]).
    Unread,
}

impl From<UnabortableTransactionError> for TxError {
    fn from(err: UnabortableTransactionError) -> Self {
        TxError::Sled(err)
    }
}

type TxResult<T> = Result<T, TxError>;

/// Free bytes the data directory's disk must keep for writes to be accepted.
const DISK_RESERVE: u64 = 8 << 20;

/// Entries read per page when a whole tree is walked.
const PAGE: usize = 1_000;

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

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, the prefix being all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn abort(err: Error) -> TxError {
    TxError::Abort(err)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|err| Error::Internal(format!("cannot encode a record: {err}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| Error::Storage(format!("unreadable record: {err}")))
}

fn storage_error(err: sled::Error) -> Error {
    Error::Storage(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_end_of_a_prefix_is_the_first_key_after_all_its_keys() {
        assert_eq!(prefix_end(b"ab/"), Some(b"ab0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
