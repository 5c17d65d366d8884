//! Opening the database (with its format marker and migrations), making
//! writes durable (the grouped flusher), and opening it again after a
//! failed write once the disk takes writes again (the recovery thread).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{
    Backend, EMPTY, OnFlush, Opened, Shared, Sled, Store, TreeId, child_key, decode, storage_error,
};
use crate::error::{Error, Result};
use crate::model::RefreshRecord;

/// Key (in sled's default tree) of the format marker written when a data
/// directory is created.
const FORMAT_KEY: &[u8] = b"latchkey.format";
/// The format this latchkey writes. 1: the first release; 2: adds the
/// `session_tokens` index (built from the records when a format-1 directory
/// is opened).
const FORMAT_VERSION: u32 = 2;

impl Store {
    /// Opens (or creates) the database in `dir`, migrating an older format,
    /// and starts the thread that reopens it after a failed write.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process has it open, otherwise
    /// [`Error::Storage`] (unwritable directory, corrupt files, a newer format).
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        create_private_dir(dir)?;
        let existed = dir.join("db").exists();
        let on_flush = Arc::new(OnceLock::new());
        let opened = Opened::open(dir, cache_bytes, &on_flush)?;
        keep_private(dir, existed);
        let (stop, stopped) = mpsc::channel();
        let sled = Sled {
            inner: Arc::new(Shared {
                dir: dir.to_path_buf(),
                cache_bytes,
                on_flush,
                slot: RwLock::new(Some(Arc::new(opened))),
                faulted: AtomicBool::new(false),
                gate: RwLock::new(()),
                _stop: Mutex::new(stop),
            }),
        };
        let shared = Arc::downgrade(&sled.inner);
        std::thread::Builder::new()
            .name("latchkey-recover".into())
            .spawn(move || recover_when_possible(&shared, &stopped))
            .map_err(|err| Error::Internal(format!("cannot start the recovery thread: {err}")))?;
        Ok(Store {
            backend: Backend::Sled(sled),
        })
    }

    /// Has `observe` told of every flush of the durable writes: how many
    /// writers it served and how long it took. Only the first call counts.
    pub(crate) fn observe_flushes(&self, observe: OnFlush) {
        if let Backend::Sled(sled) = &self.backend {
            let _ = sled.inner.on_flush.set(observe);
        }
    }

    /// Waits until every write made before this call is on disk. Concurrent
    /// callers share one flush.
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush fails.
    pub(crate) async fn durable(&self) -> Result<()> {
        // PostgreSQL's commits are durable when they return.
        let Backend::Sled(sled) = &self.backend else {
            return Ok(());
        };
        let opened = sled.opened()?;
        let flushed = opened.flusher.flush().await;
        if flushed.is_err() {
            sled.inner.faulted.store(true, Ordering::SeqCst);
        }
        flushed
    }

    /// Flushes on the calling thread (for shutdown).
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush fails.
    pub(crate) fn flush_blocking(&self) -> Result<()> {
        let Backend::Sled(sled) = &self.backend else {
            return Ok(());
        };
        let opened = sled.opened()?;
        opened.db.flush().map(drop).map_err(|err| sled.failed(err))
    }
}

impl Sled {
    /// Opens the database afresh when a write has failed and the data
    /// directory takes writes again. Returns whether it did.
    fn recover(&self) -> bool {
        if !self.inner.faulted.load(Ordering::SeqCst) || !takes_writes(&self.inner.dir) {
            return false;
        }
        let old = {
            let mut slot = self
                .inner
                .slot
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.take()
        };
        // Requests in flight hold the old opening; sled's lock is free only
        // once the last of them lets go.
        if let Some(old) = old {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while Arc::strong_count(&old) > 1 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(old);
        }
        let reopened = Opened::open(
            &self.inner.dir,
            self.inner.cache_bytes,
            &self.inner.on_flush,
        );
        let recovered = reopened.is_ok();
        match reopened {
            Ok(opened) => {
                self.inner.faulted.store(false, Ordering::SeqCst);
                tracing::warn!(dir = %self.inner.dir.display(), "storage recovered: the database was opened again");
                *self
                    .inner
                    .slot
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(opened));
            }
            Err(err) => {
                tracing::error!(error = %err, "storage still unavailable; retrying");
            }
        }
        recovered
    }
}

/// The recovery thread: once a second, while the store lives, reopens the
/// database if a write failed and the disk takes writes again.
fn recover_when_possible(shared: &std::sync::Weak<Shared>, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(RECOVERY_CHECK) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The store was dropped.
            _ => return,
        }
        let Some(inner) = shared.upgrade() else {
            return;
        };
        Sled { inner }.recover();
    }
}

/// How often the recovery thread looks at a faulted store.
const RECOVERY_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes a probe writes to tell that the data directory has room again:
/// enough that reopening (which the old opening must release first, so
/// reads stop until it succeeds) will not fail for want of space.
const PROBE_BYTES: usize = 8 << 20;

/// Whether `dir` takes a synced write of [`PROBE_BYTES`] now (the disk has
/// room and is writable).
fn takes_writes(dir: &Path) -> bool {
    use std::io::Write;
    let probe = dir.join(".latchkey-probe");
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.is_ok()
}

impl Opened {
    /// Opens sled in `dir` with every tree, checks the format and migrates.
    fn open(dir: &Path, cache_bytes: u64, on_flush: &Arc<OnceLock<OnFlush>>) -> Result<Opened> {
        let existed = dir.join("db").exists();
        let db = open_db(dir, cache_bytes)?;
        let trees = TreeId::ALL
            .iter()
            .map(|id| db.open_tree(id.name()).map_err(storage_error))
            .collect::<Result<Vec<_>>>()?;
        let opened = Opened {
            flusher: Flusher::spawn(db.clone(), Arc::clone(on_flush))?,
            db,
            trees,
        };
        opened.check_format(existed, dir)?;
        Ok(opened)
    }

    /// sled recovers a damaged log by truncating it, which can silently turn
    /// a corrupt database into an empty one. A marker written at creation
    /// tells "new" from "lost everything": an existing database without it
    /// is refused. An older format is migrated, a newer one refused.
    fn check_format(&self, existed: bool, dir: &Path) -> Result<()> {
        let db = &self.db;
        let found = db.get(FORMAT_KEY).map_err(storage_error)?;
        let version = match found {
            Some(ref bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse::<u32>().ok())
                .ok_or_else(|| {
                    Error::Storage(format!(
                        "the database in {} has an unreadable format marker",
                        dir.display()
                    ))
                })?,
            None if existed => {
                return Err(Error::Storage(format!(
                    "the database in {} is corrupt or truncated (its format marker is gone); \
                     restore the directory from a backup",
                    dir.display()
                )));
            }
            None => FORMAT_VERSION,
        };
        if version > FORMAT_VERSION {
            return Err(Error::Storage(format!(
                "the database in {} has format {version}; this latchkey reads formats up to {FORMAT_VERSION}",
                dir.display()
            )));
        }
        if version < 2 {
            self.index_session_tokens()?;
            tracing::info!(dir = %dir.display(), "database migrated to format 2");
        }
        if found.is_none() || version < FORMAT_VERSION {
            db.insert(FORMAT_KEY, FORMAT_VERSION.to_string().as_bytes())
                .map_err(storage_error)?;
            db.flush().map_err(storage_error)?;
        }
        Ok(())
    }

    /// Format 1 → 2: indexes every refresh record under its session.
    fn index_session_tokens(&self) -> Result<()> {
        let index = &self.trees[TreeId::SessionTokens as usize];
        for entry in self.trees[TreeId::RefreshTokens as usize].iter() {
            let (digest, value) = entry.map_err(storage_error)?;
            let record: RefreshRecord = decode(&value)?;
            index
                .insert(child_key(&record.family_id, &digest), EMPTY)
                .map_err(storage_error)?;
        }
        Ok(())
    }
}

/// Opens sled in `dir`. sled's I/O threads can hold the directory's lock a
/// moment after the previous owner in this process closed it (a restart in
/// tests, an embedding app reopening): a held lock is retried for a second
/// before it counts as another process's. `cache_bytes` bounds sled's page
/// cache, which otherwise grows to 1 GiB as records are touched.
fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Corruption { .. }) => {
                return Err(Error::Storage(format!(
                    "the database in {} is corrupt; restore the directory from a backup",
                    dir.display()
                )));
            }
            Err(err) if err.to_string().contains("could not acquire lock") => {
                attempts += 1;
                if attempts >= 10 {
                    return Err(Error::DataDirLocked(dir.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(err) => {
                return Err(Error::Storage(format!(
                    "cannot open data directory {}: {err}",
                    dir.display()
                )));
            }
        }
    }
}

/// Creates `dir` (and missing parents) readable by the owner only.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| {
            Error::Storage(format!(
                "cannot create data directory {}: {err}",
                dir.display()
            ))
        })
}

/// Makes the database's files owner-only (sled creates them with the
/// process umask) and warns when the directory itself lets others in: it
/// holds every email and password hash. Only sled's own files: other files
/// in the directory (the secrets) are their owners' to judge, and a secret
/// someone made readable is refused, not quietly fixed. Best effort: a file
/// that cannot be changed is logged, not fatal. `existed`: the database was
/// there before this start (else its files are new, and fixed silently).
fn keep_private(dir: &Path, existed: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .map(|metadata| metadata.permissions().mode() & 0o777)
            .ok()
    };
    if let Some(found) = mode(dir)
        && found & 0o077 != 0
    {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{found:o}"),
            "the data directory can be read by other users: run `chmod 700` on it"
        );
    }
    let sleds = |name: &str| matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.");
    let mut pending: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| sleds(&entry.file_name().to_string_lossy()))
        .map(|entry| entry.path())
        .collect();
    while let Some(path) = pending.pop() {
        let private = if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|entry| entry.path()));
            }
            0o700
        } else {
            0o600
        };
        let Some(found) = mode(&path).filter(|found| found & 0o077 != 0) else {
            continue;
        };
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private)) {
            // Files sled has just created (with the process's umask) are
            // simply made private; only older ones are worth a warning.
            Ok(()) if !existed => {}
            Ok(()) => tracing::warn!(
                file = %path.display(),
                was = format!("{found:o}"),
                "a database file could be read by other users; made private"
            ),
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot make a data file private")
            }
        }
    }
}

type FlushReply = oneshot::Sender<Result<(), String>>;

/// The group-commit thread: each round drains every waiting request, flushes
/// once, and answers them all. (sled 0.34's `flush_async` deadlocks under
/// concurrency, and one flush per request wastes the disk.)
pub(super) struct Flusher {
    requests: Option<mpsc::Sender<FlushReply>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn spawn(db: sled::Db, on_flush: Arc<OnceLock<OnFlush>>) -> Result<Flusher> {
        let (sender, receiver) = mpsc::channel::<FlushReply>();
        let thread = std::thread::Builder::new()
            .name("latchkey-flush".into())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(receiver.try_iter());
                    let started = std::time::Instant::now();
                    let outcome = db.flush().map(drop).map_err(|err| err.to_string());
                    if let Some(observe) = on_flush.get() {
                        observe(waiting.len(), started.elapsed());
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sled(store: &Store) -> &Sled {
        match &store.backend {
            Backend::Sled(sled) => sled,
            Backend::Pg(_) => unreachable!("a sled store"),
        }
    }
    use crate::model::ClientInfo;

    const TEST_CACHE: u64 = 8 << 20;

    #[test]
    fn a_format_1_directory_is_migrated_and_its_records_indexed_by_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            // A directory as the first release left it: no session index.
            let db = sled::Config::new().path(dir.path()).open().expect("db");
            db.insert(FORMAT_KEY, b"1").expect("marker");
            let record = RefreshRecord::issued("u1", "j1", "s1", 1, 100, &ClientInfo::default());
            db.open_tree(TreeId::RefreshTokens.name())
                .expect("tree")
                .insert([9u8; 32], serde_json::to_vec(&record).expect("json"))
                .expect("record");
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path(), TEST_CACHE).expect("opens");
        let opened = sled(&store).opened().expect("open");
        let marker = opened.db.get(FORMAT_KEY).expect("read").expect("marker");
        assert_eq!(marker.as_ref(), b"2");
        let indexed = sled(&store)
            .tree(TreeId::SessionTokens)
            .expect("tree")
            .contains_key(child_key("s1", &[9u8; 32]))
            .expect("read");
        assert!(indexed, "the record is indexed under its session");
    }

    #[test]
    fn readable_database_files_are_made_private_and_other_files_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        drop(Store::open(dir.path(), TEST_CACHE).expect("opens"));
        let readable = std::fs::Permissions::from_mode(0o644);
        let secret = dir.path().join("refresh_token_secret");
        std::fs::write(&secret, b"x").expect("write");
        std::fs::set_permissions(&secret, readable.clone()).expect("chmod");
        std::fs::set_permissions(dir.path().join("db"), readable).expect("chmod");
        drop(Store::open(dir.path(), TEST_CACHE).expect("opens again"));
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("db"), 0o600);
        assert_eq!(
            mode("refresh_token_secret"),
            0o644,
            "a secret is refused by its loader, not fixed here"
        );
    }

    #[test]
    fn a_new_data_directory_and_its_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("data");
        let store = Store::open(&dir, TEST_CACHE).expect("opens");
        store.flush_blocking().expect("flush");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&dir), 0o700);
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            assert_eq!(mode(&path) & 0o077, 0, "{} is private", path.display());
        }
    }

    #[test]
    fn a_faulted_store_is_opened_again_and_keeps_what_was_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), TEST_CACHE).expect("opens");
        let record = RefreshRecord::issued("u1", "j1", "s1", 1, 100, &ClientInfo::default());
        sled(&store)
            .tree(TreeId::RefreshTokens)
            .expect("tree")
            .insert([1u8; 32], serde_json::to_vec(&record).expect("json"))
            .expect("insert");
        store.flush_blocking().expect("flush");
        assert!(!sled(&store).recover(), "a healthy store is left alone");
        // As after a write that met a full disk.
        sled(&store).inner.faulted.store(true, Ordering::SeqCst);
        let held = store.clone();
        assert!(
            sled(&store).recover(),
            "reopened once the directory takes writes"
        );
        assert!(!sled(&store).inner.faulted.load(Ordering::SeqCst));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let kept = runtime
            .block_on(held.refresh_record(&crate::model::TokenDigest([1u8; 32])))
            .expect("read");
        assert_eq!(kept, Some(record), "every clone sees the new opening");
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = sled::Config::new().path(dir.path()).open().expect("db");
            db.insert(FORMAT_KEY, b"99").expect("marker");
            db.flush().expect("flush");
        }
        let refused = Store::open(dir.path(), TEST_CACHE)
            .err()
            .map(|err| err.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|err| err.contains("format 99")),
            "{refused:?}"
        );
    }
}
