//! latchkey: a self-hosted authentication server, and a library to embed it.
//!
//! # Embed it
//! A todo app (this is `examples/embedded.rs`, which a test runs over HTTP):
//! latchkey's routes under `/auth`, the app's own poem-openapi operations
//! and poem handlers guarded by [`http::AuthUser`], [`http::RequireRole`]
//! and [`http::SignedIn`], one OpenAPI document and one Swagger UI for
//! both ([`http::Api`] under a [`http::Mount`]), latchkey's middleware
//! around it all ([`http::Guard`]), and the sweeper stopped with the server
//! ([`run_background`]). The configuration comes from [`Config::builder`].
//!
//! ```no_run
#![doc = include_str!("../examples/embedded.rs")]
//! ```
//!
//! # What it does
//! Register and log in with argon2id-hashed passwords, call protected routes
//! with a short-lived access JWT, stay logged in with a refresh token that
//! lives in an HttpOnly cookie, is stored only as its blake3 digest, rotates
//! on every use and is revoked on logout. Sessions (refresh-token families)
//! can be listed and revoked, reuse of a rotated token revokes its session,
//! users have roles, accounts can add a second factor (TOTP with recovery
//! codes) and sign in with passkeys (WebAuthn), accounts are recovered by
//! email, and access tokens are signed with EdDSA by default and
//! verifiable elsewhere through the published JWKS. Data lives in an
//! embedded sled database, or in PostgreSQL for several nodes
//! ([`Config::database_url`]); the API is documented live as OpenAPI with
//! Swagger UI.
//!
//! # The library
//! - [`Latchkey`], the core: register, log in, refresh, log out,
//!   authenticate, sessions, accounts and administration. Every method that
//!   changes state returns once the change is on disk.
//! - [`Config`] (and [`Config::builder`]) and the rest of [`config`]: every
//!   setting, with defaults.
//! - [`http`]: the whole endpoint ([`http::app`], for an app that nests it
//!   as it is, e.g. `Route::new().nest("/auth", latchkey::http::app(core))`),
//!   or latchkey's operations for your own OpenAPI service ([`http::Api`])
//!   with the middleware they need ([`http::Guard`]); the extractors; the
//!   OpenAPI document ([`http::spec`]).
//! - [`run`]: serves the app with the background sweeper until a shutdown
//!   signal; [`run_background`], the sweeper and the mail sender alone.
//! - [`Error`], what can go wrong, in authentication terms.
//!
//! # Run it
//! ```text
//! cargo run --release            # serves on 127.0.0.1:5000 with ./data
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let core = latchkey::Latchkey::open(latchkey::Config::builder("./auth-data").build()?).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! latchkey::run(listener, core, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod background;
pub mod config;
pub mod control;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod limits;
mod mail;
mod metrics;
mod mfa;
mod model;
mod passkeys;
mod password;
mod secrets;
mod service;
mod storage;
mod sweeper;
mod tokens;

use std::future::Future;

pub use config::Config;
pub use error::{Error, Result};
pub use model::{
    ADMIN_ROLE, Amr, AuditEvent, AuditKind, ClientInfo, Clock, DEFAULT_ROLE, Mail, MailKind,
    MailPurpose, MfaSummary, OutboxEntry, OutboxJob, PasskeyRecord, RefreshRecord, RevokeReason,
    Secret, Session, UnixTime, User,
};
pub use service::{
    AuditPage, Authenticated, Ceremony, FactorDetails, Imported, Latchkey, MAX_PAGE, RotatedKey,
    Swept, TokenPair, TotpSetup, UserChange, UsersPage,
};
pub use tokens::keys::SigningKeyInfo;
pub use tokens::{AccessClaims, Audience, PublicJwk};

/// Runs latchkey's background tasks until `shutdown` completes: the
/// sweeper (every `--sweep-interval` it deletes expired refresh tokens,
/// sessions and mailed tokens and audit events past their retention, and
/// keeps the live-session metric counted) and the outbox sender (it
/// delivers queued mail, with retries), each on one node at a time with
/// PostgreSQL; the reload of a key ring rotated by another node
/// (PostgreSQL); and, on sled, the socket `latchkey export` asks for a dump
/// while the server runs ([`control`]). [`run`] starts them; an app that
/// serves latchkey's routes itself spawns this next to its server.
pub async fn run_background(core: Latchkey, shutdown: impl Future<Output = ()>) {
    let interval = core.config().sweep_interval;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let sweeper = sweeper::run(core.clone(), interval, until_stopped(stopped.clone()));
    let sender = sweeper::send_mail(core.clone(), until_stopped(stopped.clone()));
    let keys = sweeper::reload_keys(core.clone(), until_stopped(stopped.clone()));
    let exports = control::serve_exports(core, until_stopped(stopped));
    let stopper = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(sweeper, sender, keys, exports, stopper);
}

/// Serves latchkey on `listener` with the background sweeper until `shutdown`
/// completes; then finishes in-flight requests, stops the sweeper and
/// flushes the database.
///
/// # Errors
/// [`Error::Internal`] if the listener fails, [`Error::Storage`] if the final flush does.
pub async fn run(
    listener: tokio::net::TcpListener,
    core: Latchkey,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (stop_sweeper, sweeper_stopped) = tokio::sync::oneshot::channel::<()>();
    let sweeper = tokio::spawn(run_background(core.clone(), async move {
        // A dropped sender stops the sweeper as surely as a sent signal.
        let _ = sweeper_stopped.await;
    }));
    let served = http::serve(listener, core.clone(), shutdown).await;
    let _ = stop_sweeper.send(());
    let _ = sweeper.await;
    let flushing = core.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .map_err(|err| Error::Internal(format!("final flush task failed: {err}")))??;
    served.map_err(|err| Error::Internal(format!("server failed: {err}")))
}
