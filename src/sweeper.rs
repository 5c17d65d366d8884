//! The background tasks: the sweeper, which every `sweep_interval` deletes
//! expired refresh records, sessions and mailed tokens through their expiry
//! indexes, audit events past their retention and mails given up on; and
//! the outbox sender, which delivers queued mail. Both stop when the
//! shutdown signal fires. With several nodes on one PostgreSQL database,
//! each of the two runs on one node at a time (the one holding its lock;
//! the others stand by and take over when it goes), and every node reloads
//! the shared signing keys every [`KEY_RELOAD`]. Depends on `service` only.

use std::future::Future;
use std::time::Duration;

use crate::service::{Latchkey, Leader, Role};

/// One sweep, on a blocking thread (it paces itself: see
/// [`Latchkey::sweep_expired`]).
async fn sweep(core: &Latchkey) {
    let started = std::time::Instant::now();
    match core.sweep_expired().await {
        Ok(swept) => tracing::info!(
            refresh_tokens = swept.refresh_tokens,
            sessions = swept.sessions,
            audit_events = swept.audit_events,
            mail_tokens = swept.mail_tokens,
            challenges = swept.challenges,
            failed_mails = swept.failed_mails,
            elapsed_ms = started.elapsed().as_millis(),
            "swept expired records"
        ),
        Err(err) => tracing::error!(error = %err, "sweep failed"),
    }
}

/// Counts the live sessions for the metrics, on a blocking thread.
async fn count_sessions(core: &Latchkey) {
    match core.count_live_sessions().await {
        Ok(live) => tracing::debug!(live, "live sessions counted"),
        Err(err) => tracing::error!(error = %err, "counting the live sessions failed"),
    }
}

/// Whether this node plays `role` now: keeps the lead it has while its
/// lock holds, else tries to take it.
async fn leading(core: &Latchkey, role: Role, lead: &mut Option<Leader>) -> bool {
    if let Some(held) = lead {
        if held.holds().await {
            return true;
        }
        tracing::warn!(?role, "lost the lead (the database connection went)");
        *lead = None;
    }
    match core.lead(role).await {
        Ok(Some(taken)) => {
            if core.backend() == "postgres" {
                tracing::info!(?role, "this node took the lead");
            }
            *lead = Some(taken);
            true
        }
        Ok(None) => false,
        Err(err) => {
            tracing::warn!(?role, error = %err, "cannot take the lead");
            false
        }
    }
}

/// How often a node looks for a key ring rotated elsewhere (PostgreSQL).
pub const KEY_RELOAD: Duration = Duration::from_secs(5);

/// Reloads the shared signing keys every [`KEY_RELOAD`] until `shutdown`.
pub async fn reload_keys(core: Latchkey, shutdown: impl Future<Output = ()>) {
    if core.backend() != "postgres" {
        return;
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(KEY_RELOAD) => {}
        }
        if let Err(err) = core.reload_keys().await {
            tracing::error!(error = %err, "reloading the signing keys failed");
        }
    }
}

/// Counts the live sessions, then runs sweeps every `interval` (each
/// followed by a fresh count) until `shutdown` completes. The first sweep
/// runs one interval after start.
pub async fn run(core: Latchkey, interval: Duration, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut lead = None;
    tokio::select! {
        () = &mut shutdown => return,
        () = count_sessions(&core) => {}
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(interval) => {}
        }
        if !leading(&core, Role::Sweeper, &mut lead).await {
            continue;
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
    let mut lead = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = core.outbox_queued(OUTBOX_POLL) => {}
        }
        if !leading(&core, Role::Sender, &mut lead).await {
            continue;
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
