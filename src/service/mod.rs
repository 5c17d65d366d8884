//! The latchkey core: register, log in, refresh, log out, authenticate
//! (here), and sessions, accounts and administration (`accounts`). This is
//! the library API under the HTTP layer; it never touches poem.
//!
//! [`Latchkey`] is a cheap-clone handle (an `Arc` inside) over the store, the
//! token signer, the password hasher and the rate limits. Every method that
//! changes state returns only after the change is on disk.

mod accounts;

use std::sync::Arc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::limits::{self, Limited, Limits};
use crate::model::{
    AuditEvent, AuditKind, ClientInfo, Clock, DEFAULT_ROLE, Email, Password, RefreshRecord,
    RevokeReason, Secret, Session, UnixTime, User, Username, parse_roles,
};
use crate::password::{self, Passwords};
use crate::secrets;
use crate::storage::{Exchange, Store};
use crate::tokens::{AccessClaims, AccessSigner, PublicJwk, TokenDigest, Tokens, new_id};

/// File name of the generated refresh-token secret inside the data directory.
const REFRESH_SECRET_FILE: &str = "refresh_token_secret";
/// Expired records deleted per sweep transaction.
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

pub use accounts::{MAX_PAGE, UserChange, UsersPage};

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Expired refresh-token records.
    pub refresh_tokens: usize,
    /// Expired sessions.
    pub sessions: usize,
    /// Audit events older than the retention.
    pub audit_events: usize,
}

/// How a refresh exchange went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    /// A live token was rotated.
    Rotated,
    /// A just-rotated token came back within the grace: a fresh pair, nothing revoked.
    Raced,
    /// A rotated token came back after the grace: the session is revoked
    /// (`revoked_now` unless an earlier event had revoked it already).
    Reused {
        /// Whether this exchange revoked the session.
        revoked_now: bool,
    },
}

/// Runs a batched delete until a batch comes back short; returns the total.
fn drain(mut batch: impl FnMut() -> Result<usize>) -> Result<usize> {
    let mut total = 0;
    loop {
        let removed = batch()?;
        total += removed;
        if removed < SWEEP_BATCH {
            return Ok(total);
        }
    }
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
    limits: Limits,
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
    /// let user = core
    ///     .register("alice", "alice@example.com", "correct horse battery", Default::default())
    ///     .await?;
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
        let tokens = if config.offline {
            // Offline commands manage users and read the log; they never
            // issue tokens, so they neither read nor create key material.
            let throwaway = || Secret::new(new_id() + &new_id());
            Tokens::new(&AccessSigner::Secret(throwaway()), &throwaway(), &config)?
        } else {
            let access = AccessSigner::load(&config, clock.now())?;
            let refresh_secret = secrets::load_or_create(
                &config.data_dir,
                REFRESH_SECRET_FILE,
                "REFRESH_TOKEN_SECRET",
                config.refresh_secret.as_ref(),
            )?;
            Tokens::new(&access, &refresh_secret, &config)?
        };
        let concurrency = config
            .hash_concurrency
            .map_or_else(Passwords::default_concurrency, usize::from);
        let passwords = Passwords::new(concurrency)?;
        let limits = Limits::new(&config.limits, limits::DEFAULT_MAX_KEYS);
        Ok(Latchkey {
            inner: Arc::new(Inner {
                config,
                clock,
                store,
                tokens,
                passwords,
                limits,
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

    /// The public keys that verify access tokens now, for the JWKS (none
    /// with HS256).
    pub fn public_keys(&self) -> Vec<PublicJwk> {
        self.inner.tokens.public_keys(self.now())
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

    /// Creates an account with the default role. The email is trimmed and
    /// lower-cased; email and username (case-insensitively) must be unused;
    /// the password must pass the policy (see [`password::check_policy`]).
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::InvalidInput`] naming the bad field,
    /// [`Error::WeakPassword`], [`Error::UserExists`],
    /// [`Error::UsernameTaken`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<User> {
        self.limited(self.inner.limits.register(client.ip), None, &client)?;
        self.create_user(username, email, password, &[DEFAULT_ROLE], client)
            .await
    }

    /// Creates an account with these roles (the command line's way to make
    /// the first admin). Same rules as [`Latchkey::register`], no rate limit.
    ///
    /// # Errors
    /// As [`Latchkey::register`], and [`Error::InvalidInput`] for bad roles.
    #[tracing::instrument(skip_all)]
    pub async fn create_user<S: AsRef<str>>(
        &self,
        username: &str,
        email: &str,
        password: &str,
        roles: &[S],
        client: ClientInfo,
    ) -> Result<User> {
        let username = Username::parse(username)?;
        let email = Email::parse(email)?;
        let password = Password::parse(password)?;
        let roles = parse_roles(roles)?;
        password::check_policy(&password, username.as_str(), email.as_str())?;
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
            roles,
            disabled: false,
        };
        store.insert_user(&user, &username.key())?;
        self.audit(AuditKind::Register, Some(&user.id), None, &client, None)?;
        store.durable().await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Checks credentials and starts a session: a new refresh-token family.
    /// An unknown email and a wrong password take the same time and give the
    /// same error. A stored hash made with weaker argon2 settings than the
    /// current ones is replaced by a fresh hash.
    ///
    /// # Errors
    /// [`Error::InvalidInput`], [`Error::RateLimited`],
    /// [`Error::InvalidCredentials`], [`Error::AccountDisabled`] (only
    /// after the right password), [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let email = Email::parse(email)?;
        let password = Password::presented(password)?;
        self.limited(
            self.inner.limits.login(client.ip, email.as_str()),
            None,
            &client,
        )?;
        let user = self.inner.store.user_by_email(email.as_str())?;
        let stored_hash = user.as_ref().map(|user| user.password_hash.as_str());
        let verified = self.inner.passwords.verify(&password, stored_hash).await?;
        let mut user = match user {
            Some(user) if verified => user,
            user => {
                let reason = if user.is_some() {
                    "wrong_password"
                } else {
                    "unknown_email"
                };
                tracing::info!(reason, "login failed");
                let user_id = user.as_ref().map(|user| user.id.as_str());
                self.audit(
                    AuditKind::LoginFailed,
                    user_id,
                    None,
                    &client,
                    Some(reason.into()),
                )?;
                return Err(Error::InvalidCredentials);
            }
        };
        if user.disabled {
            self.audit(
                AuditKind::LoginRefused,
                Some(&user.id),
                None,
                &client,
                Some("account_disabled".into()),
            )?;
            return Err(Error::AccountDisabled);
        }
        if password::needs_rehash(&user.password_hash) {
            user.password_hash = self.inner.passwords.hash(&password).await?;
            self.inner.store.update_user(&user)?;
            tracing::info!(user_id = %user.id, "password re-hashed with current parameters");
        }
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
            client: client.clone(),
        };
        let session = Session {
            id: family_id.clone(),
            user_id: user.id.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: refresh.expires_at,
            client: client.clone(),
            revoked_at: None,
            revoked_reason: None,
        };
        self.inner
            .store
            .start_session(&session, &refresh.digest, &record)?;
        let pair = self.token_pair(&user, family_id, refresh.token, now)?;
        self.audit(
            AuditKind::LoginSucceeded,
            Some(&user.id),
            Some(&pair.session_id),
            &client,
            None,
        )?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, session_id = %pair.session_id, "login succeeded");
        Ok(pair)
    }

    /// Exchanges a refresh token for a new pair in the same session. The
    /// presented token is marked rotated and its successor stored in one
    /// transaction. A rotated token presented again:
    /// - within `reuse_grace` of its rotation (a client racing itself, two
    ///   tabs refreshing at once) gets a fresh pair in the same session;
    /// - later, counts as theft: the whole session is revoked, with every
    ///   token in it, and the answer is [`Error::RefreshTokenReused`].
    ///
    /// # Errors
    /// [`Error::MissingRefreshToken`], [`Error::RateLimited`],
    /// [`Error::InvalidRefreshToken`], [`Error::RefreshTokenNotRecognized`],
    /// [`Error::RefreshTokenRevoked`], [`Error::RefreshTokenExpired`],
    /// [`Error::RefreshTokenReused`], [`Error::AccountDisabled`], [`Error::Storage`].
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        &self,
        refresh_token: Option<&str>,
        client: ClientInfo,
    ) -> Result<TokenPair> {
        let token = refresh_token
            .filter(|token| !token.is_empty())
            .ok_or(Error::MissingRefreshToken)?;
        self.limited(self.inner.limits.refresh(client.ip), None, &client)?;
        let now = self.now();
        let claims = self.inner.tokens.verify_refresh(token, now)?;
        let user = self
            .inner
            .store
            .user(&claims.sub)?
            .ok_or(Error::RefreshTokenNotRecognized)?;
        if user.disabled {
            return Err(Error::AccountDisabled);
        }
        let next = self
            .inner
            .tokens
            .issue_refresh(&user.id, &claims.fam, now)?;
        let grace = self.inner.config.reuse_grace.as_secs();
        let outcome = self.inner.store.exchange_refresh(
            &TokenDigest::of(token),
            &claims.fam,
            |record, session| {
                let mut record = record.ok_or(Error::RefreshTokenNotRecognized)?;
                if record.user_id != claims.sub || record.family_id != claims.fam {
                    return Err(Error::RefreshTokenNotRecognized);
                }
                if now >= record.expires_at {
                    return Err(Error::RefreshTokenExpired);
                }
                let rotated_at = match (record.revoked_at, &record.replaced_by) {
                    (None, _) => None,
                    (Some(rotated_at), Some(_)) => Some(rotated_at),
                    // Logged out, not rotated: dead, and no sign of theft.
                    (Some(_), None) => return Err(Error::RefreshTokenRevoked),
                };
                // A swept session ended long ago; a revoked one ends its tokens.
                let session = session.filter(|session| session.user_id == record.user_id);
                let within_grace =
                    rotated_at.is_some_and(|rotated_at| now < rotated_at.saturating_add(grace));
                if rotated_at.is_some() && !within_grace {
                    // Theft: revoke the family (if it is not already) and say so.
                    let exchange = Exchange {
                        session: session.filter(|session| session.revoked_at.is_none()).map(
                            |mut session| {
                                session.revoke(now, RevokeReason::Reuse);
                                session
                            },
                        ),
                        ..Exchange::default()
                    };
                    let revoked_now = exchange.session.is_some();
                    return Ok((exchange, Rotation::Reused { revoked_now }));
                }
                let mut session = session
                    .filter(|session| session.revoked_at.is_none())
                    .ok_or(Error::RefreshTokenRevoked)?;
                let successor = RefreshRecord {
                    user_id: record.user_id.clone(),
                    jti: next.jti.clone(),
                    family_id: record.family_id.clone(),
                    created_at: now,
                    expires_at: next.expires_at,
                    revoked_at: None,
                    replaced_by: None,
                    client: client.clone(),
                };
                session.last_used_at = now;
                session.expires_at = session.expires_at.max(next.expires_at);
                session.client = client.clone();
                if within_grace {
                    let exchange = Exchange {
                        old: None,
                        new: Some((next.digest, successor)),
                        session: Some(session),
                    };
                    return Ok((exchange, Rotation::Raced));
                }
                record.revoked_at = Some(now);
                record.replaced_by = Some(next.jti.clone());
                let exchange = Exchange {
                    old: Some(record),
                    new: Some((next.digest, successor)),
                    session: Some(session),
                };
                Ok((exchange, Rotation::Rotated))
            },
        );
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::info!(user_id = %claims.sub, session_id = %claims.fam, jti = %claims.jti, code = err.code(), "refresh refused");
                return Err(err);
            }
        };
        if let Rotation::Reused { revoked_now } = outcome {
            tracing::warn!(user_id = %claims.sub, session_id = %claims.fam, jti = %claims.jti, revoked_now, "refresh token reuse detected: session revoked");
            let detail = if revoked_now {
                format!("jti={}; session revoked", claims.jti)
            } else {
                format!("jti={}; session already revoked", claims.jti)
            };
            self.audit(
                AuditKind::ReuseDetected,
                Some(&claims.sub),
                Some(&claims.fam),
                &client,
                Some(detail),
            )?;
            self.inner.store.durable().await?;
            return Err(Error::RefreshTokenReused);
        }
        let pair = self.token_pair(&user, claims.fam.clone(), next.token, now)?;
        let kind = match outcome {
            Rotation::Raced => AuditKind::RefreshRaced,
            _ => AuditKind::Refresh,
        };
        self.audit(kind, Some(&user.id), Some(&pair.session_id), &client, None)?;
        self.inner.store.durable().await?;
        tracing::info!(user_id = %user.id, session_id = %pair.session_id, jti = %next.jti, raced = (outcome == Rotation::Raced), "refresh token rotated");
        Ok(pair)
    }

    /// Ends the session of a refresh token: the session is revoked, so every
    /// token of it (including rotated siblings and the access tokens on
    /// latchkey's routes) stops working. Idempotent: no token, an invalid,
    /// unknown, expired or already revoked token all succeed.
    ///
    /// # Errors
    /// [`Error::Storage`] only.
    #[tracing::instrument(skip_all)]
    pub async fn logout(&self, refresh_token: Option<&str>, client: ClientInfo) -> Result<()> {
        let Some(token) = refresh_token.filter(|token| !token.is_empty()) else {
            return Ok(());
        };
        let now = self.now();
        let Ok(claims) = self.inner.tokens.verify_refresh(token, now) else {
            return Ok(());
        };
        let ended = self.inner.store.exchange_refresh(
            &TokenDigest::of(token),
            &claims.fam,
            |record, session| {
                let Some(mut record) = record.filter(|record| {
                    record.user_id == claims.sub && record.family_id == claims.fam
                }) else {
                    return Ok((Exchange::default(), false));
                };
                let mut exchange = Exchange::default();
                if let Some(mut session) = session.filter(|session| session.revoked_at.is_none()) {
                    session.revoke(now, RevokeReason::Logout);
                    exchange.session = Some(session);
                }
                if record.revoked_at.is_none() {
                    record.revoked_at = Some(now);
                    exchange.old = Some(record);
                }
                let changed = exchange.session.is_some() || exchange.old.is_some();
                Ok((exchange, changed))
            },
        )?;
        if ended {
            self.audit(
                AuditKind::Logout,
                Some(&claims.sub),
                Some(&claims.fam),
                &client,
                None,
            )?;
            self.inner.store.durable().await?;
            tracing::info!(user_id = %claims.sub, session_id = %claims.fam, "logged out");
        }
        Ok(())
    }

    /// Verifies an access token and checks that its session is still live
    /// (one store read), returning its claims.
    ///
    /// # Errors
    /// [`Error::MissingToken`] for an empty token, [`Error::TokenExpired`],
    /// [`Error::InvalidToken`], [`Error::SessionRevoked`], [`Error::Storage`].
    pub fn authenticate(&self, access_token: &str) -> Result<AccessClaims> {
        if access_token.is_empty() {
            return Err(Error::MissingToken);
        }
        let claims = self.inner.tokens.verify_access(access_token, self.now())?;
        match self.inner.store.session(&claims.sid)? {
            Some(session) if session.user_id == claims.sub && session.revoked_at.is_none() => {
                Ok(claims)
            }
            _ => Err(Error::SessionRevoked),
        }
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

    /// Deletes every expired refresh record and session, and every audit
    /// event older than the retention. Blocking: call it from a blocking
    /// context (the sweeper does).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn sweep_expired(&self) -> Result<Swept> {
        let now = self.now();
        let store = &self.inner.store;
        let audit_cutoff = now.saturating_sub(self.inner.config.audit_retention.as_secs());
        Ok(Swept {
            refresh_tokens: drain(|| store.sweep_expired_refresh(now, SWEEP_BATCH))?,
            sessions: drain(|| store.sweep_expired_sessions(now, SWEEP_BATCH))?,
            audit_events: drain(|| store.sweep_audit(audit_cutoff, SWEEP_BATCH))?,
        })
    }

    /// How many sessions (live, revoked or expired-but-unswept) are stored.
    pub fn session_count(&self) -> usize {
        self.inner.store.session_count()
    }

    /// Audit events at or after `since`, oldest first, optionally of one
    /// user, at most `limit`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn audit_events(
        &self,
        since: UnixTime,
        user_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        self.inner.store.audit_events(since, user_id, limit)
    }

    fn audit(
        &self,
        kind: AuditKind,
        user_id: Option<&str>,
        session_id: Option<&str>,
        client: &ClientInfo,
        detail: Option<String>,
    ) -> Result<()> {
        self.inner.store.append_audit(&AuditEvent {
            at: self.now(),
            kind,
            user_id: user_id.map(str::to_owned),
            session_id: session_id.map(str::to_owned),
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
            detail,
        })
    }

    /// Turns a rate-limit refusal into [`Error::RateLimited`], auditing it
    /// (at most once a minute per rule and client, so a flood cannot fill the log).
    fn limited(
        &self,
        outcome: std::result::Result<(), Limited>,
        user_id: Option<&str>,
        client: &ClientInfo,
    ) -> Result<()> {
        let Err(limited) = outcome else {
            return Ok(());
        };
        tracing::info!(
            rule = limited.rule,
            retry_after = limited.retry_after,
            "rate limited"
        );
        if self.inner.limits.worth_auditing(&limited, client.ip) {
            self.audit(
                AuditKind::RateLimited,
                user_id,
                None,
                client,
                Some(limited.rule.to_owned()),
            )?;
        }
        Err(Error::RateLimited {
            retry_after: limited.retry_after,
        })
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
