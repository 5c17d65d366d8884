//! The latchkey core: register, log in, refresh, log out, authenticate. This
//! is the library API under the HTTP layer; it never touches poem.
//!
//! [`Latchkey`] is a cheap-clone handle (an `Arc` inside) over the store, the
//! token signer and the password hasher. Every method that changes state
//! returns only after the change is on disk.

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{
    ClientInfo, Clock, Email, Password, RefreshRecord, Secret, UnixTime, User, Username,
};
use crate::password::Passwords;
use crate::secrets;
use crate::storage::{Exchange, Store};
use crate::tokens::{AccessClaims, TokenDigest, Tokens, new_id};

/// File names of the generated secrets inside the data directory.
const ACCESS_SECRET_FILE: &str = "jwt_secret";
const REFRESH_SECRET_FILE: &str = "refresh_token_secret";
/// Expired refresh records deleted per sweep transaction.
const SWEEP_BATCH: usize = 1024;

/// What a successful login or refresh hands to the client.
#[derive(Debug)]
pub struct TokenPair {
    /// The access JWT.
    pub access_token: Secret,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The new refresh JWT (for the cookie).
    pub refresh_token: Secret,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
    /// The session (refresh-token family) the pair belongs to.
    pub session_id: String,
}

/// The latchkey core. Clone it freely: clones share one database.
#[derive(Clone)]
pub struct Latchkey {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    clock: Clock,
    store: Store,
    tokens: Tokens,
    passwords: Passwords,
}

impl Latchkey {
    /// Opens the data directory named by `config`, loading or generating the
    /// signing secrets, with the system clock.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`], [`Error::Storage`] or [`Error::Config`]: see
    /// [`Store::open`] and [`secrets::load_or_create`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> latchkey::Result<()> {
    /// let core = latchkey::Latchkey::open(latchkey::Config::with_data_dir("/var/lib/latchkey"))?;
    /// let user = core.register("alice", "alice@example.com", "correct horse battery").await?;
    /// # Ok(()) }
    /// ```
    pub fn open(config: Config) -> Result<Latchkey> {
        Latchkey::open_with_clock(config, Clock::system())
    }

    /// Like [`Latchkey::open`] with an injected clock (tests mint tokens in the past).
    ///
    /// # Errors
    /// As [`Latchkey::open`].
    pub fn open_with_clock(config: Config, clock: Clock) -> Result<Latchkey> {
        // The store first: its lock keeps a second instance from racing us to
        // create the secret files.
        let store = Store::open(&config.data_dir)?;
        let access_secret = secrets::load_or_create(
            &config.data_dir,
            ACCESS_SECRET_FILE,
            "JWT_SECRET",
            config.jwt_secret.as_ref(),
        )?;
        let refresh_secret = secrets::load_or_create(
            &config.data_dir,
            REFRESH_SECRET_FILE,
            "REFRESH_TOKEN_SECRET",
            config.refresh_secret.as_ref(),
        )?;
        let tokens = Tokens::new(&access_secret, &refresh_secret, &config);
        let concurrency = config
            .hash_concurrency
            .map_or_else(Passwords::default_concurrency, usize::from);
        let passwords = Passwords::new(concurrency)?;
        Ok(Latchkey {
            inner: Arc::new(Inner {
                config,
                clock,
                store,
                tokens,
                passwords,
            }),
        })
    }

    /// The settings this core runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The clock this core reads.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Access-token lifetime in seconds.
    pub fn access_ttl(&self) -> u64 {
        self.inner.tokens.access_ttl()
    }

    /// Refresh-token lifetime in seconds.
    pub fn refresh_ttl(&self) -> u64 {
        self.inner.tokens.refresh_ttl()
    }

    fn now(&self) -> UnixTime {
        self.inner.clock.now()
    }

    /// Creates an account. The email is trimmed and lower-cased; email and
    /// username (case-insensitively) must be unused.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the bad field, [`Error::UserExists`],
    /// [`Error::UsernameTaken`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn register(&self, username: &str, email: &str, password: &str) -> Result<User> {
        let username = Username::parse(username)?;
        let email = Email::parse(email)?;
        let password = Password::parse(password)?;
        let store = &self.inner.store;
        // Cheap checks before the expensive hash; the transaction re-checks.
        if store.email_taken(email.as_str())? {
            return Err(Error::UserExists);
        }
        if store.username_taken(&username.key())? {
            return Err(Error::UsernameTaken);
        }
        let password_hash = self.inner.passwords.hash(&password).await?;
        let user = User {
            id: new_id(),
            username: username.as_str().to_owned(),
            email: email.as_str().to_owned(),
            password_hash,
            created_at: self.now(),
        };
        store.insert_user(&user, &username.key())?;
        store.durable().await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Checks credentials and starts a session: a new refresh-token family.
    /// An unknown email and a wrong password take the same time and give the
    /// same error.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::InvalidCredentials`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let email = Email::parse(email)?;
        let password = Password::presented(password)?;
        let user = self.inner.store.user_by_email(email.as_str())?;
        let stored_hash = user.as_ref().map(|user| user.password_hash.as_str());
        let verified = self.inner.passwords.verify(&password, stored_hash).await?;
        let user = match user {
            Some(user) if verified => user,
            _ => {
                tracing::info!(known_user = stored_hash.is_some(), "login failed");
                return Err(Error::InvalidCredentials);
            }
        };
        let now = self.now();
        let family_id = new_id();
        let refresh = self.inner.tokens.issue_refresh(&user.id, &family_id, now)?;
        let record = RefreshRecord {
            user_id: user.id.clone(),
            jti: refresh.jti.clone(),
            family_id: family_id.clone(),
            created_at: now,
            expires_at: refresh.expires_at,
            revoked_at: None,
            replaced_by: None,
            client,
        };
        self.inner.store.insert_refresh(&refresh.digest, &record)?;
        let pair = self.token_pair(&user, family_id, refresh.token, now)?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, session_id = %pair.session_id, "login succeeded");
        Ok(pair)
    }

    /// Exchanges a refresh token for a new pair. The presented token is
    /// revoked and its successor stored in one transaction, so of two
    /// concurrent refreshes with one token exactly one succeeds.
    ///
    /// # Errors
    /// [`Error::MissingRefreshToken`], [`Error::InvalidRefreshToken`],
    /// [`Error::RefreshTokenNotRecognized`], [`Error::RefreshTokenRevoked`],
    /// [`Error::RefreshTokenExpired`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        refresh_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let token = refresh_token
            .filter(|token| !token.is_empty())
            .ok_or(Error::MissingRefreshToken)?;
        let now = self.now();
        let claims = self.inner.tokens.verify_refresh(token, now)?;
        let user = self
            .inner
            .store
            .user(&claims.sub)?
            .ok_or(Error::RefreshTokenNotRecognized)?;
        let next = self
            .inner
            .tokens
            .issue_refresh(&user.id, &claims.fam, now)?;
        let exchange = self
            .inner
            .store
            .exchange_refresh(&TokenDigest::of(token), |current| {
                let mut old = current.ok_or(Error::RefreshTokenNotRecognized)?;
                if old.user_id != claims.sub || old.family_id != claims.fam {
                    return Err(Error::RefreshTokenNotRecognized);
                }
                if old.revoked_at.is_some() {
                    return Err(Error::RefreshTokenRevoked);
                }
                if now >= old.expires_at {
                    return Err(Error::RefreshTokenExpired);
                }
                old.revoked_at = Some(now);
                old.replaced_by = Some(next.jti.clone());
                let new = RefreshRecord {
                    user_id: old.user_id.clone(),
                    jti: next.jti.clone(),
                    family_id: old.family_id.clone(),
                    created_at: now,
                    expires_at: next.expires_at,
                    revoked_at: None,
                    replaced_by: None,
                    client: client.clone(),
                };
                Ok(Exchange {
                    old,
                    new: Some((next.digest, new)),
                })
            });
        let exchange = match exchange {
            Ok(exchange) => exchange,
            Err(err) => {
                tracing::info!(user_id = %claims.sub, session_id = %claims.fam, jti = %claims.jti, code = err.code(), "refresh refused");
                return Err(err);
            }
        };
        let pair = self.token_pair(&user, exchange.old.family_id, next.token, now)?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, session_id = %pair.session_id, jti = %next.jti, "refresh token rotated");
        Ok(pair)
    }

    /// Revokes the session of a refresh token. Idempotent: no token, an
    /// invalid, unknown, expired or already revoked token all succeed.
    ///
    /// # Errors
    /// [`Error::Storage`] only.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, refresh_token: Option<&str>) -> Result<()> {
        let Some(token) = refresh_token.filter(|token| !token.is_empty()) else {
            return Ok(());
        };
        let now = self.now();
        let Ok(claims) = self.inner.tokens.verify_refresh(token, now) else {
            return Ok(());
        };
        let revoked = self
            .inner
            .store
            .exchange_refresh(&TokenDigest::of(token), |current| {
                let mut record = current.ok_or(Error::RefreshTokenNotRecognized)?;
                if record.revoked_at.is_some() {
                    return Err(Error::RefreshTokenRevoked);
                }
                record.revoked_at = Some(now);
                Ok(Exchange {
                    old: record,
                    new: None,
                })
            });
        match revoked {
            Ok(_) => {
                self.inner.store.durable().await?;
                tracing::info!(user_id = %claims.sub, session_id = %claims.fam, "logged out");
                Ok(())
            }
            Err(err) if err.is_internal() => Err(err),
            Err(_) => Ok(()),
        }
    }

    /// Verifies an access token and returns its claims. Pure computation: no
    /// store access.
    ///
    /// # Errors
    /// [`Error::MissingToken`] for an empty token, [`Error::TokenExpired`],
    /// [`Error::InvalidToken`].
    pub fn authenticate(&self, access_token: &str) -> Result<AccessClaims> {
        if access_token.is_empty() {
            return Err(Error::MissingToken);
        }
        self.inner.tokens.verify_access(access_token, self.now())
    }

    /// The user with this id.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    pub fn user(&self, id: &str) -> Result<User> {
        self.inner.store.user(id)?.ok_or(Error::UserNotFound)
    }

    /// The stored record of a refresh token, looked up by the token itself.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn refresh_record(&self, refresh_token: &str) -> Result<Option<RefreshRecord>> {
        self.inner
            .store
            .refresh_record(&TokenDigest::of(refresh_token))
    }

    /// How many refresh records (live, revoked or expired-but-unswept) are stored.
    pub fn refresh_record_count(&self) -> usize {
        self.inner.store.refresh_record_count()
    }

    /// Deletes every refresh record that has expired; returns how many.
    /// Blocking: call it from a blocking context (the sweeper does).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sweep_expired(&self) -> Result<usize> {
        let now = self.now();
        let mut removed = 0;
        loop {
            let batch = self.inner.store.sweep_expired(now, SWEEP_BATCH)?;
            removed += batch;
            if batch < SWEEP_BATCH {
                return Ok(removed);
            }
        }
    }

    /// Flushes the database on the calling thread (used at shutdown).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn flush(&self) -> Result<()> {
        self.inner.store.flush_blocking()
    }

    fn token_pair(
        &self,
        user: &User,
        session_id: String,
        refresh_token: Secret,
        now: UnixTime,
    ) -> Result<TokenPair> {
        let access = self.inner.tokens.issue_access(user, &session_id, now)?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
            refresh_expires_in: self.refresh_ttl(),
            session_id,
        })
    }
}
