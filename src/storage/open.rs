//! Opening the database (with its format marker and migrations) and making
//! writes durable: the grouped flusher.

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{EMPTY, Store, StoreInner, TreeId, child_key, decode, storage_error};
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
    /// Opens (or creates) the database in `dir`, migrating an older format.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] when another process has it open, otherwise
    /// [`Error::Storage`] (unwritable directory, corrupt files, a newer format).
    pub(crate) fn open(dir: &Path) -> Result<Store> {
        create_private_dir(dir)?;
        let existed = dir.join("db").exists();
        let db = open_db(dir)?;
        let trees = TreeId::ALL
            .iter()
            .map(|id| db.open_tree(id.name()).map_err(storage_error))
            .collect::<Result<Vec<_>>>()?;
        let store = Store {
            inner: Arc::new(StoreInner {
                flusher: Flusher::spawn(db.clone())?,
                db,
                trees,
            }),
        };
        store.check_format(existed, dir)?;
        keep_private(dir);
        Ok(store)
    }

    /// sled recovers a damaged log by truncating it, which can silently turn
    /// a corrupt database into an empty one. A marker written at creation
    /// tells "new" from "lost everything": an existing database without it
    /// is refused. An older format is migrated, a newer one refused.
    fn check_format(&self, existed: bool, dir: &Path) -> Result<()> {
        let db = &self.inner.db;
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
        let index = self.tree(TreeId::SessionTokens);
        for entry in self.tree(TreeId::RefreshTokens).iter() {
            let (digest, value) = entry.map_err(storage_error)?;
            let record: RefreshRecord = decode(&value)?;
            index
                .insert(child_key(&record.family_id, &digest), EMPTY)
                .map_err(storage_error)?;
        }
        Ok(())
    }

    /// Waits until every write made before this call is on disk. Concurrent
    /// callers share one flush.
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush fails.
    pub(crate) async fn durable(&self) -> Result<()> {
        self.inner.flusher.flush().await
    }

    /// Flushes on the calling thread (for shutdown).
    ///
    /// # Errors
    /// [`Error::Storage`] if the flush fails.
    pub(crate) fn flush_blocking(&self) -> Result<()> {
        self.inner.db.flush().map(drop).map_err(storage_error)
    }
}

/// Opens sled in `dir`. sled's I/O threads can hold the directory's lock a
/// moment after the previous owner in this process closed it (a restart in
/// tests, an embedding app reopening): a held lock is retried for a second
/// before it counts as another process's.
fn open_db(dir: &Path) -> Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match sled::Config::new().path(dir).open() {
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
/// holds every email and password hash. Best effort: a file that cannot be
/// changed is logged, not fatal.
fn keep_private(dir: &Path) {
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
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let private = if path.is_dir() {
                pending.push(path.clone());
                0o700
            } else {
                0o600
            };
            if mode(&path).is_some_and(|found| found & 0o077 != 0)
                && let Err(err) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))
            {
                tracing::warn!(file = %path.display(), error = %err, "cannot make a data file private");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClientInfo;

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
        let store = Store::open(dir.path()).expect("opens");
        let marker = store
            .inner
            .db
            .get(FORMAT_KEY)
            .expect("read")
            .expect("marker");
        assert_eq!(marker.as_ref(), b"2");
        let indexed = store
            .tree(TreeId::SessionTokens)
            .contains_key(child_key("s1", &[9u8; 32]))
            .expect("read");
        assert!(indexed, "the record is indexed under its session");
    }

    #[test]
    fn a_new_data_directory_and_its_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().expect("temp dir");
        let dir = parent.path().join("data");
        let store = Store::open(&dir).expect("opens");
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
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let db = sled::Config::new().path(dir.path()).open().expect("db");
            db.insert(FORMAT_KEY, b"99").expect("marker");
            db.flush().expect("flush");
        }
        let refused = Store::open(dir.path()).err().map(|err| err.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|err| err.contains("format 99")),
            "{refused:?}"
        );
    }
}
