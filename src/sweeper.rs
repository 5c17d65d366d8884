//! The background sweeper: every `sweep_interval` it deletes expired refresh
//! records and sessions through their expiry indexes and audit events past
//! their retention, and stops when the shutdown signal fires.
//! Depends on `service` only.

use std::future::Future;
use std::time::Duration;

use crate::service::Latchkey;

/// Runs sweeps every `interval` until `shutdown` completes. The first sweep
/// runs one interval after start.
pub async fn run(core: Latchkey, interval: Duration, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(interval) => {}
        }
        let sweeping = core.clone();
        match tokio::task::spawn_blocking(move || sweeping.sweep_expired()).await {
            Ok(Ok(swept)) => tracing::info!(
                refresh_tokens = swept.refresh_tokens,
                sessions = swept.sessions,
                audit_events = swept.audit_events,
                "swept expired records"
            ),
            Ok(Err(err)) => tracing::error!(error = %err, "sweep failed"),
            Err(err) => tracing::error!(error = %err, "sweep task failed"),
        }
    }
    tracing::debug!("sweeper stopped");
}
