//! The audit log: appended in time order, read by time and user, swept by age.

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

    /// Audit events at or after `since`, oldest first, optionally of one
    /// user only, at most `limit` of them.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) fn audit_events(
        &self,
        since: UnixTime,
        user_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let mut events = Vec::new();
        for value in self
            .tree(TreeId::Audit)?
            .range(since.to_be_bytes()..)
            .values()
        {
            if events.len() >= limit {
                break;
            }
            let event: AuditEvent = decode(&value.map_err(storage_error)?)?;
            if user_id.is_none_or(|user| event.user_id.as_deref() == Some(user)) {
                events.push(event);
            }
        }
        Ok(events)
    }
}
