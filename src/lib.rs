//! latchkey: a self-hosted authentication server, and a library to embed it.
//!
//! Register and log in with argon2id-hashed passwords, call protected routes
//! with a short-lived access JWT, stay logged in with a refresh token that
//! lives in an HttpOnly cookie, is stored only as its blake3 digest, rotates
//! on every use and is revoked on logout. Sessions (refresh-token families)
//! can be listed and revoked, reuse of a rotated token revokes its session,
//! users have roles, and access tokens are signed with EdDSA by default and
//! verifiable elsewhere through the published JWKS. Data lives in an
//! embedded sled database; the API is documented live as OpenAPI with
//! Swagger UI.
//!
//! # Run it
//! ```text
//! cargo run --release            # serves on 127.0.0.1:5000 with ./data
//! ```
//!
//! # Embed it
//! The library API is small:
//! - [`Latchkey`], the core: register, log in, refresh, log out,
//!   authenticate, sessions, accounts and administration. Every method that
//!   changes state returns once the change is on disk.
//! - [`Config`] and the rest of [`config`]: every setting, with defaults.
//! - [`http`]: the poem endpoint over the core ([`http::app`]), the
//!   extractors that guard your own operations ([`http::AuthUser`],
//!   [`http::RequireRole`]) and the OpenAPI document ([`http::spec`]).
//! - [`run`]: serves the app with the background sweeper until a shutdown
//!   signal.
//! - [`Error`], what can go wrong, in authentication terms.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let core = latchkey::Latchkey::open(latchkey::Config::with_data_dir("./auth-data"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! latchkey::run(listener, core, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod background;
pub mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod limits;
mod metrics;
mod model;
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
    ADMIN_ROLE, AuditEvent, AuditKind, ClientInfo, Clock, DEFAULT_ROLE, RefreshRecord,
    RevokeReason, Secret, Session, UnixTime, User,
};
pub use service::{
    AuditPage, Authenticated, Latchkey, MAX_PAGE, RotatedKey, Swept, TokenPair, UserChange,
    UsersPage,
};
pub use tokens::keys::SigningKeyInfo;
pub use tokens::{AccessClaims, Audience, PublicJwk};

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
    let sweeper = tokio::spawn(sweeper::run(
        core.clone(),
        core.config().sweep_interval,
        async move {
            // A dropped sender stops the sweeper as surely as a sent signal.
            let _ = sweeper_stopped.await;
        },
    ));
    let served = http::serve(listener, core.clone(), shutdown).await;
    let _ = stop_sweeper.send(());
    let _ = sweeper.await;
    let flushing = core.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .map_err(|err| Error::Internal(format!("final flush task failed: {err}")))??;
    served.map_err(|err| Error::Internal(format!("server failed: {err}")))
}
