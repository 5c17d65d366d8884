//! The background tasks: the sweeper, which every `sweep_interval` deletes
//! expired refresh records, sessions and mailed tokens through their expiry
//! indexes, audit events past their retention and mails given up on; and
//! the outbox sender, which delivers queued mail. Both stop when the
//! shutdown signal fires. Depends on `service` only.

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
            mail_tokens = swept.mail_tokens,
            challenges = swept.challenges,
            failed_mails = swept.failed_mails,
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

/// How often the outbox sender looks for mail due a retry, when nothing
/// wakes it sooner.
const OUTBOX_POLL: Duration = Duration::from_secs(1);

/// Delivers queued mail until `shutdown` completes: whenever a request
/// queues some, and every second for retries.
pub async fn send_mail(core: Latchkey, shutdown: impl Future<Output = ()>) {
    tracing::info!(destination = %core.mail_destination(), "mail goes to");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = core.outbox_queued(OUTBOX_POLL) => {}
        }
        let deliveries = async {
            loop {
                match core.deliver_outbox().await {
                    // A full batch: more may be due.
                    Ok(handled) if handled == crate::service::OUTBOX_BATCH => continue,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::error!(error = %err, "the outbox sender failed; retrying");
                        break;
                    }
                }
            }
        };
        // Shutting down does not wait for a slow relay: a mail cut off
        // mid-conversation is still in the outbox, and goes after the restart.
        tokio::select! {
            () = &mut shutdown => break,
            () = deliveries => {}
        }
    }
    tracing::debug!("outbox sender stopped");
}
