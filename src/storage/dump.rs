//! Export and import: every tree's entries, read as one consistent state,
//! as the lines of a dump (JSON lines, versioned), and loaded back into an
//! empty store of either backend. Also the secrets kept in PostgreSQL and
//! the leader locks, which only the core's background tasks use.
//!
//! A dump line is one of:
//! - `{"format":"latchkey-dump","version":1,"backend":…,"createdAt":…}`, first;
//! - `{"secret":<name>,"value":<text>}`: a generated secret (signing keys,
//!   refresh secret, factor key), in the clear: a dump is as sensitive as
//!   the data directory itself;
//! - `{"tree":<name>,"key":<base64url>,"value":<the record's JSON>}` for the
//!   trees of records, or `…,"bytes":<base64url>}` for the index trees;
//! - `{"end":"latchkey-dump","entries":<count>}`, last: a dump without it
//!   was cut short, and is refused.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::{Backend, Store, TreeEntry, TreeId};
use crate::error::{Error, Result};

/// The `format` of a dump's first line.
pub(crate) const DUMP_FORMAT: &str = "latchkey-dump";
/// The dump version this latchkey writes and reads.
pub(crate) const DUMP_VERSION: u32 = 1;

/// One line of a dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum DumpLine {
    /// The first line.
    #[serde(rename_all = "camelCase")]
    Header {
        /// Always [`DUMP_FORMAT`].
        format: String,
        /// [`DUMP_VERSION`] when written.
        version: u32,
        /// `sled` or `postgres`: where it came from.
        backend: String,
        /// When it was taken (Unix seconds).
        created_at: u64,
    },
    /// A generated secret, by name.
    Secret {
        /// Its name (the file name in a sled data directory).
        secret: String,
        /// Its text.
        value: String,
    },
    /// The last line: how many entries came before it.
    End {
        /// Always [`DUMP_FORMAT`].
        end: String,
        /// The number of entry lines.
        entries: usize,
    },
    /// An entry of a tree.
    Entry {
        /// The tree's name.
        tree: String,
        /// The key, base64url.
        key: String,
        /// The record, for trees of JSON records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
        /// The raw value, base64url, for index trees.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<String>,
    },
}

impl DumpLine {
    /// The line of one entry.
    pub(crate) fn entry(id: TreeId, key: &[u8], value: &[u8]) -> DumpLine {
        let record = match holds_records(id) {
            true => serde_json::from_slice(value).ok(),
            false => None,
        };
        DumpLine::Entry {
            tree: id.name().to_owned(),
            key: URL_SAFE_NO_PAD.encode(key),
            bytes: record.is_none().then(|| URL_SAFE_NO_PAD.encode(value)),
            value: record,
        }
    }

    /// The tree, key and value of an entry line.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown tree or bad base64 (a damaged dump).
    pub(crate) fn into_entry(self) -> Result<Option<TreeEntry>> {
        let DumpLine::Entry {
            tree,
            key,
            value,
            bytes,
        } = self
        else {
            return Ok(None);
        };
        let id = TreeId::named(&tree)
            .ok_or_else(|| Error::Config(format!("the dump names an unknown tree {tree:?}")))?;
        let bad = |what: &str| Error::Config(format!("the dump has a bad {what} in tree {tree}"));
        let key = URL_SAFE_NO_PAD.decode(key).map_err(|_| bad("key"))?;
        let value = match (value, bytes) {
            (Some(value), None) => serde_json::to_vec(&value).map_err(|_| bad("value"))?,
            (None, Some(bytes)) => URL_SAFE_NO_PAD.decode(bytes).map_err(|_| bad("value"))?,
            _ => return Err(bad("entry (it needs one of value and bytes)")),
        };
        Ok(Some((id, key, value)))
    }
}

/// Whether tree `id` holds JSON records (the others are indexes).
fn holds_records(id: TreeId) -> bool {
    matches!(
        id,
        TreeId::Users
            | TreeId::RefreshTokens
            | TreeId::Sessions
            | TreeId::Audit
            | TreeId::MailTokens
            | TreeId::Outbox
            | TreeId::Factors
            | TreeId::Challenges
    )
}

impl Store {
    /// Hands every stored entry (tree, key, value) to `visit`, as one
    /// consistent state: on PostgreSQL a read-only
    /// snapshot, which nodes keep writing past; on sled, writes wait while
    /// the entries are read.
    ///
    /// # Errors
    /// [`Error::Storage`], or whatever `visit` returns.
    pub(crate) async fn export(
        &self,
        mut visit: impl FnMut(TreeId, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        match &self.backend {
            Backend::Pg(pg) => pg.snapshot(visit).await,
            Backend::Sled(sled) => {
                let opened = sled.opened()?;
                let _alone = sled
                    .inner
                    .gate
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for id in TreeId::ALL {
                    for entry in opened.trees[*id as usize].iter() {
                        let (key, value) = entry.map_err(super::storage_error)?;
                        visit(*id, &key, &value)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Whether no tree holds anything.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn is_empty(&self) -> Result<bool> {
        for id in TreeId::ALL {
            if self.count(*id).await? > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes `entries` as they are, in one transaction (for an import).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn put_entries(&self, entries: &[TreeEntry]) -> Result<()> {
        self.transaction(TreeId::ALL, |tx| {
            for (id, key, value) in entries {
                tx.insert(*id, key, value)?;
            }
            Ok(())
        })
        .await
    }

    /// Removes the entries at `keys`, in one transaction (an import that
    /// failed takes back what it wrote).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn remove_entries(&self, keys: &[(TreeId, Vec<u8>)]) -> Result<()> {
        self.transaction(TreeId::ALL, |tx| {
            for (id, key) in keys {
                tx.remove(*id, key)?;
            }
            Ok(())
        })
        .await
    }

    /// The secrets kept in the database, sealed, by name (none on sled,
    /// which keeps them as files).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn sealed_secrets(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        match &self.backend {
            Backend::Pg(pg) => pg.secrets().await,
            Backend::Sled(_) => Ok(BTreeMap::new()),
        }
    }

    /// Keeps a sealed secret in the database: with `replace` over what is
    /// there, else only if absent. Returns whether it was stored.
    ///
    /// # Errors
    /// [`Error::Internal`] on sled, [`Error::Storage`].
    pub(crate) async fn put_sealed_secret(
        &self,
        name: &str,
        sealed: &[u8],
        replace: bool,
    ) -> Result<bool> {
        match &self.backend {
            Backend::Pg(pg) => pg.put_secret(name, sealed, replace).await,
            Backend::Sled(_) => Err(Error::Internal(
                "sled keeps its secrets as files in the data directory".into(),
            )),
        }
    }

    /// Takes the lead of `role` if no other node has it: always on sled
    /// (one node), on PostgreSQL through an advisory lock.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub(crate) async fn lead(&self, role: super::pg::Role) -> Result<Option<super::Leader>> {
        match &self.backend {
            Backend::Pg(pg) => pg.lead(role).await,
            Backend::Sled(_) => Ok(Some(super::Leader::alone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_line_gives_back_the_entry_it_was_made_of() {
        let record = br#"{"id":"u1","email":"a@example.com"}"#;
        for (id, key, value) in [
            (TreeId::Users, b"u1".to_vec(), record.to_vec()),
            (
                TreeId::UsersByEmail,
                b"a@example.com".to_vec(),
                b"u1".to_vec(),
            ),
            (TreeId::RefreshExpiry, vec![0, 0, 1, 255], Vec::new()),
        ] {
            let line = DumpLine::entry(id, &key, &value);
            let text = serde_json::to_string(&line).expect("json");
            let back: DumpLine = serde_json::from_str(&text).expect("parses");
            assert_eq!(back.into_entry().expect("entry"), Some((id, key, value)));
        }
        let header = DumpLine::Header {
            format: DUMP_FORMAT.into(),
            version: DUMP_VERSION,
            backend: "sled".into(),
            created_at: 1,
        };
        let text = serde_json::to_string(&header).expect("json");
        assert!(text.contains("\"createdAt\":1"));
        assert_eq!(
            serde_json::from_str::<DumpLine>(&text).expect("parses"),
            header
        );
        let unknown = r#"{"tree":"nope","key":"AA","bytes":""}"#;
        let line: DumpLine = serde_json::from_str(unknown).expect("parses");
        assert!(line.into_entry().is_err());
    }
}
