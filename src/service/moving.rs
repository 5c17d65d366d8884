//! Moving data: an export of everything a store holds (users with their
//! hashes, sessions, refresh records, audit events, second factors, queued
//! mail, and the generated secrets: signing keys, refresh secret, factor
//! key) as a versioned dump of JSON lines, read as one consistent state
//! while the server runs; and its import into an empty store of either
//! kind. So a sled data directory moves to PostgreSQL and back, and a sled
//! user has an online backup.

use std::collections::BTreeMap;

use super::{Latchkey, REFRESH_SECRET_FILE};
use crate::error::{Error, Result};
use crate::secrets::FACTOR_KEY_FILE;
use crate::storage::{DUMP_FORMAT, DUMP_VERSION, DumpLine, TreeEntry, TreeId};
use crate::tokens::ACCESS_SECRET_FILE;
use crate::tokens::keys::KEY_FILE;

/// The generated secrets a dump carries, by name.
const SECRETS: &[&str] = &[
    KEY_FILE,
    ACCESS_SECRET_FILE,
    REFRESH_SECRET_FILE,
    FACTOR_KEY_FILE,
];

/// Entries written per transaction by an import.
const IMPORT_BATCH: usize = 500;

/// What an import loaded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Entries written, all trees together.
    pub entries: usize,
    /// Users among them.
    pub users: usize,
    /// Secrets written.
    pub secrets: usize,
}

impl Latchkey {
    /// Writes a dump of everything stored, one line at a time through
    /// `write` (each line without its newline). On sled, writes wait while
    /// the entries are read (they are gathered first, then written); on
    /// PostgreSQL the dump is one snapshot while nodes keep writing.
    /// Returns how many entries it wrote.
    ///
    /// # Errors
    /// [`Error::Storage`], or whatever `write` returns.
    pub async fn export(&self, mut write: impl FnMut(&str) -> Result<()>) -> Result<usize> {
        let encode = |line: &DumpLine| {
            serde_json::to_string(line)
                .map_err(|err| Error::Internal(format!("cannot encode a dump line: {err}")))
        };
        write(&encode(&DumpLine::Header {
            format: DUMP_FORMAT.to_owned(),
            version: DUMP_VERSION,
            backend: self.backend().to_owned(),
            created_at: self.now(),
        })?)?;
        for (name, value) in self.inner.vault.secrets(SECRETS).await? {
            write(&encode(&DumpLine::Secret {
                secret: name,
                value,
            })?)?;
        }
        let mut lines = Vec::new();
        self.inner
            .store
            .export(|id, key, value| {
                lines.push(encode(&DumpLine::entry(id, key, value))?);
                Ok(())
            })
            .await?;
        for line in &lines {
            write(line)?;
        }
        write(&encode(&DumpLine::End {
            end: DUMP_FORMAT.to_owned(),
            entries: lines.len(),
        })?)?;
        Ok(lines.len())
    }

    /// A generated secret (`signing_keys.json`, `jwt_secret`,
    /// `refresh_token_secret`, `factor.key`) as the store keeps it: for
    /// tests that play an attacker who stole it. Not part of the API.
    ///
    /// # Errors
    /// [`Error::Storage`].
    #[doc(hidden)]
    pub async fn stored_secret(&self, name: &str) -> Result<Option<String>> {
        Ok(self.inner.vault.secrets(&[name]).await?.remove(name))
    }

    /// Loads a dump (its lines, in order) into this core's store, which
    /// must be empty. Its secrets replace the ones this core generated:
    /// start the server (every node) after the import. A dump that turns
    /// out damaged or cut short (no end line) is refused, and what was
    /// written of it is taken back, so the store is empty again.
    ///
    /// # Errors
    /// [`Error::Config`] for a store that is not empty or a dump that is
    /// not one (or of a newer version, damaged, cut short),
    /// [`Error::Storage`].
    pub async fn import(
        &self,
        lines: impl IntoIterator<Item = std::io::Result<String>>,
    ) -> Result<Imported> {
        let store = &self.inner.store;
        if !store.is_empty().await? {
            return Err(Error::Config(
                "the store is not empty: import into a new data directory or an empty database"
                    .into(),
            ));
        }
        let mut written = Vec::new();
        let loaded = self.load(lines, &mut written).await;
        let (mut imported, secrets) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                if let Err(undo) = self.take_back(&written).await {
                    tracing::error!(error = %undo, "a failed import could not take back what it wrote: empty the store by hand");
                }
                return Err(err);
            }
        };
        self.inner.vault.replace_secrets(&secrets).await?;
        imported.secrets = secrets.len();
        Ok(imported)
    }

    /// Removes what a failed import wrote.
    async fn take_back(&self, written: &[(TreeId, Vec<u8>)]) -> Result<()> {
        for chunk in written.chunks(IMPORT_BATCH) {
            self.inner.store.remove_entries(chunk).await?;
        }
        self.inner.store.durable().await
    }

    /// Writes the entries of a dump, noting the key of each in `written`;
    /// returns what it wrote and the dump's secrets.
    async fn load(
        &self,
        lines: impl IntoIterator<Item = std::io::Result<String>>,
        written: &mut Vec<(TreeId, Vec<u8>)>,
    ) -> Result<(Imported, BTreeMap<String, String>)> {
        let store = &self.inner.store;
        let unreadable =
            |err: std::io::Error| Error::Config(format!("cannot read the dump: {err}"));
        let mut lines = lines
            .into_iter()
            .filter(|line| line.as_ref().map_or(true, |line| !line.trim().is_empty()));
        let header = lines
            .next()
            .ok_or_else(|| Error::Config("the dump is empty".into()))?
            .map_err(unreadable)?;
        match serde_json::from_str::<DumpLine>(&header) {
            Ok(DumpLine::Header {
                format, version, ..
            }) if format == DUMP_FORMAT && version <= DUMP_VERSION => {}
            Ok(DumpLine::Header { version, .. }) => {
                return Err(Error::Config(format!(
                    "the dump has version {version}; this latchkey reads versions up to {DUMP_VERSION}"
                )));
            }
            _ => {
                return Err(Error::Config(
                    "this is not a latchkey dump (its first line is not a dump header)".into(),
                ));
            }
        }
        let mut imported = Imported::default();
        let mut secrets = BTreeMap::new();
        let mut batch: Vec<TreeEntry> = Vec::with_capacity(IMPORT_BATCH);
        let mut counted = None;
        for (number, line) in lines.enumerate() {
            let line = line.map_err(unreadable)?;
            let at = number + 2;
            if counted.is_some() {
                return Err(Error::Config(format!(
                    "line {at} of the dump follows its end line"
                )));
            }
            let parsed: DumpLine = serde_json::from_str(&line).map_err(|err| {
                Error::Config(format!("line {at} of the dump is unreadable: {err}"))
            })?;
            match parsed {
                DumpLine::Secret { secret, value } => {
                    secrets.insert(secret, value);
                }
                DumpLine::Header { .. } => {
                    return Err(Error::Config(format!(
                        "line {at} of the dump is a second header"
                    )));
                }
                DumpLine::End { entries, .. } => counted = Some(entries),
                entry => {
                    if let Some(entry) = entry.into_entry()? {
                        imported.users += usize::from(entry.0 == TreeId::Users);
                        batch.push(entry);
                    }
                }
            }
            if batch.len() == IMPORT_BATCH || (counted.is_some() && !batch.is_empty()) {
                written.extend(batch.iter().map(|(id, key, _)| (*id, key.clone())));
                store.put_entries(&batch).await?;
                imported.entries += batch.len();
                batch.clear();
            }
        }
        match counted {
            None => Err(Error::Config(
                "the dump was cut short: it has no end line (export it again)".into(),
            )),
            Some(entries) if entries != imported.entries => Err(Error::Config(format!(
                "the dump's end line counts {entries} entries, but it holds {}",
                imported.entries
            ))),
            Some(_) => {
                store.durable().await?;
                Ok((imported, secrets))
            }
        }
    }
}

/// Whether `line` is a dump's end line (a dump read over the export socket
/// must end with one, or the server went away in the middle).
pub(crate) fn is_dump_end(line: &str) -> bool {
    matches!(
        serde_json::from_str::<DumpLine>(line),
        Ok(DumpLine::End { end, .. }) if end == DUMP_FORMAT
    )
}
