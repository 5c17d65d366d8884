//! The audit log: appended in time order, read by time and user, swept by age.

use std::ops::Bound;

use super::{Backend, Store, TreeId, decode, encode, time_key};
use crate::error::Result;
use crate::model::{AuditEvent, UnixTime};

impl Store {
    /// Appends an event to the audit log (durable with the next flush).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) async fn append_audit(&self, event: &AuditEvent) -> Result<()> {
        let key = time_key(event.at, &self.audit_id()?);
        self.write_one(TreeId::Audit, &key, Some(&encode(event)?))
            .await
    }

    /// A new id for an audit event, after its time in its key: on sled, a
    /// counter; on PostgreSQL (several nodes, no round trip), the
    /// microsecond and 64 random bits.
    pub(super) fn audit_id(&self) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::Sled(sled) => {
                sled.has_room()?;
                let opened = sled.opened()?;
                let id = opened.db.generate_id().map_err(|err| sled.failed(err))?;
                Ok(id.to_be_bytes().to_vec())
            }
            Backend::Pg(_) => {
                let micros = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| since.as_micros());
                let mut id = u64::try_from(micros)
                    .unwrap_or(u64::MAX)
                    .to_be_bytes()
                    .to_vec();
                id.extend_from_slice(&rand::random::<u64>().to_be_bytes());
                Ok(id)
            }
        }
    }

    /// Audit events at or after `since` and after the position `after` (a
    /// key a previous page returned), oldest first, optionally of one user
    /// only: at most `limit` of them, reading at most `budget` entries.
    /// Returns the events and, when more may follow, the position to go on
    /// from.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::error::Error::Storage).
    pub(crate) async fn audit_page(
        &self,
        since: UnixTime,
        after: Option<&[u8]>,
        user_id: Option<&str>,
        limit: usize,
        mut budget: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>)> {
        let since = since.to_be_bytes();
        let start = match after {
            Some(after) if after >= &since[..] => Bound::Excluded(after),
            _ => Bound::Included(&since[..]),
        };
        let mut events = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        // Read in pages: `budget` may be unbounded.
        let mut from = start.map(<[u8]>::to_vec);
        loop {
            let page_size = budget.clamp(1, super::PAGE);
            let page = self
                .scan(
                    TreeId::Audit,
                    from.as_ref().map(Vec::as_slice),
                    Bound::Unbounded,
                    page_size.saturating_add(1),
                )
                .await?;
            let complete = page.len() <= page_size;
            for (key, value) in page.into_iter().take(page_size) {
                if events.len() >= limit || budget == 0 {
                    return Ok((events, last));
                }
                budget -= 1;
                let event: AuditEvent = decode(&value)?;
                if user_id.is_none_or(|user| event.user_id.as_deref() == Some(user)) {
                    events.push(event);
                }
                last = Some(key);
            }
            if complete {
                break;
            }
            from = Bound::Excluded(last.clone().unwrap_or_default());
        }
        Ok((events, None))
    }
}
