//! The background sweeper: every `sweep_interval` it deletes expired refresh
//! records and sessions through their expiry indexes and audit events past
//! their retention, and stops when the shutdown signal fires.
//! Depends on `service` only.

use std::future::Future;
use std::time::Duration;

use crate::service::Latchkey;

/// One sweep, on a blocking thread (it paces itself: see
/// [`Latchkey::sweep_expired`]).
async fn sweep(core: &Latchkey) {
    let sweeping = core.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || sweeping.sweep_expired()).await {
        Ok(Ok(swept)) => tracing::info!(
            refresh_tokens = swept.refresh_tokens,
            sessions = swept.sessions,
            audit_events = swept.audit_events,
            elapsed_ms = started.elapsed().as_millis(),
            "swept expired records"
        ),
        Ok(Err(err)) => tracing::error!(error = %err, "sweep failed"),
        Err(err) => tracing::error!(error = %err, "sweep task failed"),
    }
}

/// Counts the live sessions for the metrics, on a blocking thread.
async fn count_sessions(core: &Latchkey) {
    let counting = core.clone();
    match tokio::task::spawn_blocking(move || counting.count_live_sessions()).await {
        Ok(Ok(live)) => tracing::debug!(live, "live sessions counted"),
        Ok(Err(err)) => tracing::error!(error = %err, "counting the live sessions failed"),
        Err(err) => tracing::error!(error = %err, "session count task failed"),
    }
}

/// Counts the live sessions, then runs sweeps every `interval` (each
/// followed by a fresh count) until `shutdown` completes. The first sweep
/// runs one interval after start.
pub async fn run(core: Latchkey, interval: Duration, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => return,
        () = count_sessions(&core) => {}
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(interval) => {}
        }
        sweep(&core).await;
        count_sessions(&core).await;
    }
    tracing::debug!("sweeper stopped");
}
