//! latchkey: a self-hosted authentication server.
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
//! [`Latchkey`] is the core (the library API); [`http::app`] is the poem
//! endpoint over it; [`run`] serves it with the sweeper until shutdown.
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let core = latchkey::Latchkey::open(latchkey::Config::with_data_dir("./auth-data"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! latchkey::run(listener, core, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//! To guard your own poem-openapi operations, nest [`http::app`] in your
//! route and take an [`http::AuthUser`] parameter, or an
//! [`http::RequireRole`] to also require a role.

#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod limits;
pub mod model;
pub mod password;
pub mod secrets;
pub mod service;
pub mod storage;
pub mod sweeper;
pub mod tokens;

use std::future::Future;

pub use config::Config;
pub use error::{Error, Result};
pub use service::Latchkey;

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
