//! Deleting what has expired, in batches, walking only the expired end of
//! each time-ordered index: the sweeper's cost follows the number of expired
//! records, not the number stored.

use super::{Store, TreeId, child_key, storage_error};
use crate::error::Result;
use crate::model::{RefreshRecord, Session, UnixTime};

impl Store {
    /// Deletes up to `limit` refresh records whose expiry is at or before
    /// `now`, oldest first. Returns how many were deleted; call again while
    /// it returns `limit`.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) fn sweep_expired_refresh(&self, now: UnixTime, limit: usize) -> Result<usize> {
        let expired = expired_keys(&*self.tree(TreeId::RefreshExpiry)?, now, limit)?;
        if expired.is_empty() {
            return Ok(0);
        }
        prefetch(&*self.tree(TreeId::RefreshTokens)?, &expired);
        let trees = &[
            TreeId::RefreshTokens,
            TreeId::RefreshExpiry,
            TreeId::SessionTokens,
        ];
        self.transaction(trees, |tx| {
            for key in &expired {
                let digest = &key[8..];
                if let Some(record) = tx.get::<RefreshRecord>(TreeId::RefreshTokens, digest)? {
                    tx.remove(TreeId::SessionTokens, &child_key(&record.family_id, digest))?;
                }
                tx.remove(TreeId::RefreshTokens, digest)?;
                tx.remove(TreeId::RefreshExpiry, key)?;
            }
            Ok(())
        })?;
        Ok(expired.len())
    }

    /// Deletes up to `limit` sessions whose expiry is at or before `now`,
    /// with their per-user index entries. Returns how many were deleted.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) fn sweep_expired_sessions(&self, now: UnixTime, limit: usize) -> Result<usize> {
        let expired = expired_keys(&*self.tree(TreeId::SessionExpiry)?, now, limit)?;
        if expired.is_empty() {
            return Ok(0);
        }
        prefetch(&*self.tree(TreeId::Sessions)?, &expired);
        let trees = &[
            TreeId::Sessions,
            TreeId::SessionExpiry,
            TreeId::UserSessions,
        ];
        self.transaction(trees, |tx| {
            for key in &expired {
                let id = &key[8..];
                tx.remove(TreeId::SessionExpiry, key)?;
                // A session whose expiry slid forward has a newer index entry;
                // only the entry matching the stored expiry deletes it.
                if let Some(session) = tx.get::<Session>(TreeId::Sessions, id)?
                    && session.expires_at.to_be_bytes() == key[..8]
                {
                    tx.remove(TreeId::Sessions, id)?;
                    tx.remove(
                        TreeId::UserSessions,
                        &child_key(&session.user_id, session.id.as_bytes()),
                    )?;
                }
            }
            Ok(())
        })?;
        Ok(expired.len())
    }

    /// Deletes up to `limit` audit events older than `before`; returns how many.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) fn sweep_audit(&self, before: UnixTime, limit: usize) -> Result<usize> {
        let audit = self.tree(TreeId::Audit)?;
        let old = expired_keys(&audit, before.saturating_sub(1), limit)?;
        let mut batch = sled::Batch::default();
        for key in &old {
            batch.remove(key.as_ref());
        }
        audit.apply_batch(batch).map_err(|err| self.failed(err))?;
        Ok(old.len())
    }
}

/// Reads the records an expiry index's `keys` (time, then id) point to, so
/// that the transaction that deletes them finds them in the cache: a
/// transaction holds every other reader of the database back while it runs,
/// and must not wait for the disk meanwhile.
fn prefetch(records: &sled::Tree, keys: &[sled::IVec]) {
    for key in keys {
        let _ = records.get(&key[8..]);
    }
}

/// Up to `limit` keys of a time-ordered tree whose time is at or before `now`.
pub(super) fn expired_keys(
    tree: &sled::Tree,
    now: UnixTime,
    limit: usize,
) -> Result<Vec<sled::IVec>> {
    let upper = now.saturating_add(1).to_be_bytes();
    tree.range(..upper.as_slice())
        .keys()
        .take(limit)
        .map(|key| key.map_err(storage_error))
        .collect()
}
