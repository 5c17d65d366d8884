//! Deleting what has expired, in batches, walking only the expired end of
//! each time-ordered index: the sweeper's cost follows the number of expired
//! records, not the number stored.

use std::ops::Bound;

use super::{Backend, Store, TreeId, child_key};
use crate::error::Result;
use crate::model::{RefreshRecord, Session, UnixTime};

impl Store {
    /// Deletes up to `limit` refresh records whose expiry is at or before
    /// `now`, oldest first. Returns how many were deleted; call again while
    /// it returns `limit`.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) async fn sweep_expired_refresh(&self, now: UnixTime, limit: usize) -> Result<usize> {
        let expired = self.expired_keys(TreeId::RefreshExpiry, now, limit).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let reads = self.prefetch(TreeId::RefreshTokens, &expired).await;
        let trees = &[
            TreeId::RefreshTokens,
            TreeId::RefreshExpiry,
            TreeId::SessionTokens,
        ];
        self.transaction_locking(trees, &reads, |tx| {
            for key in &expired {
                let digest = &key[8..];
                if let Some(record) = tx.get::<RefreshRecord>(TreeId::RefreshTokens, digest)? {
                    tx.remove(TreeId::SessionTokens, &child_key(&record.family_id, digest))?;
                }
                tx.remove(TreeId::RefreshTokens, digest)?;
                tx.remove(TreeId::RefreshExpiry, key)?;
            }
            Ok(())
        })
        .await?;
        Ok(expired.len())
    }

    /// Deletes up to `limit` sessions whose expiry is at or before `now`,
    /// with their per-user index entries. Returns how many were deleted.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) async fn sweep_expired_sessions(
        &self,
        now: UnixTime,
        limit: usize,
    ) -> Result<usize> {
        let expired = self.expired_keys(TreeId::SessionExpiry, now, limit).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        let reads = self.prefetch(TreeId::Sessions, &expired).await;
        let trees = &[
            TreeId::Sessions,
            TreeId::SessionExpiry,
            TreeId::UserSessions,
        ];
        self.transaction_locking(trees, &reads, |tx| {
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
        })
        .await?;
        Ok(expired.len())
    }

    /// Deletes up to `limit` audit events older than `before`; returns how many.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) async fn sweep_audit(&self, before: UnixTime, limit: usize) -> Result<usize> {
        let old = self
            .expired_keys(TreeId::Audit, before.saturating_sub(1), limit)
            .await?;
        if old.is_empty() {
            return Ok(0);
        }
        self.transaction(&[TreeId::Audit], |tx| {
            for key in &old {
                tx.remove(TreeId::Audit, key)?;
            }
            Ok(())
        })
        .await?;
        Ok(old.len())
    }

    /// Deletes up to `limit` entries of `index` (expiry ‖ key) that have
    /// expired at `now`, with the records of `records` they point to.
    /// Returns how many.
    pub(super) async fn sweep_index(
        &self,
        index: TreeId,
        records: TreeId,
        now: UnixTime,
        limit: usize,
    ) -> Result<usize> {
        let expired = self.expired_keys(index, now, limit).await?;
        if expired.is_empty() {
            return Ok(0);
        }
        self.transaction(&[records, index], |tx| {
            for key in &expired {
                tx.remove(records, &key[8..])?;
                tx.remove(index, key)?;
            }
            Ok(())
        })
        .await?;
        Ok(expired.len())
    }

    /// Up to `limit` keys of a time-ordered tree whose time is at or before `now`.
    async fn expired_keys(
        &self,
        index: TreeId,
        now: UnixTime,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let upper = now.saturating_add(1).to_be_bytes();
        Ok(self
            .scan(index, Bound::Unbounded, Bound::Excluded(&upper), limit)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// The records an expiry index's `keys` (time, then id) point to. On
    /// PostgreSQL, the rows the sweeping transaction reads, to fetch and
    /// lock at once; on sled, read now, so that the transaction finds them
    /// in the cache (a sled transaction holds every other reader back while
    /// it runs, and must not wait for the disk meanwhile).
    async fn prefetch(&self, records: TreeId, keys: &[Vec<u8>]) -> Vec<super::Row> {
        match &self.backend {
            Backend::Sled(sled) => {
                if let Ok(tree) = sled.tree(records) {
                    for key in keys {
                        let _ = tree.get(&key[8..]);
                    }
                }
                Vec::new()
            }
            Backend::Pg(_) => keys
                .iter()
                .map(|key| (records, key[8..].to_vec()))
                .collect(),
        }
    }
}
