//! The audit log: appended in time order, read by time and user, swept by age.

use std::ops::Bound;

use super::{Store, TreeId, decode, encode, storage_error, time_key};
use crate::error::Result;
use crate::model::{AuditEvent, UnixTime};

impl Store {
    /// Appends an event to the audit log (durable with the next flush).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        self.has_room()?;
        let opened = self.opened()?;
        let id = opened.db.generate_id().map_err(|err| self.failed(err))?;
        self.tree(TreeId::Audit)?
            .insert(time_key(event.at, &id.to_be_bytes()), encode(event)?)
            .map(drop)
            .map_err(|err| self.failed(err))
    }

    /// Audit events at or after `since` and after the position `after` (a
    /// key a previous page returned), oldest first, optionally of one user
    /// only: at most `limit` of them, reading at most `budget` entries.
    /// Returns the events and, when more may follow, the position to go on
    /// from.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) fn audit_page(
        &self,
        since: UnixTime,
        after: Option<&[u8]>,
        user_id: Option<&str>,
        limit: usize,
        budget: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>)> {
        let since = since.to_be_bytes();
        let start = match after {
            Some(after) if after >= &since[..] => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(since.to_vec()),
        };
        let mut events = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for (read, entry) in self
            .tree(TreeId::Audit)?
            .range((start, Bound::Unbounded))
            .enumerate()
        {
            if events.len() >= limit || read >= budget {
                return Ok((events, last));
            }
            let (key, value) = entry.map_err(storage_error)?;
            let event: AuditEvent = decode(&value)?;
            if user_id.is_none_or(|user| event.user_id.as_deref() == Some(user)) {
                events.push(event);
            }
            last = Some(key.to_vec());
        }
        Ok((events, None))
    }
}
