//! The latchkey core: the library API under the HTTP layer; it never
//! touches poem. [`Latchkey`] is a cheap-clone handle (an `Arc` inside) over
//! the store, the token signer, the password hasher and the rate limits.
//! Every method that changes state returns only after the change is on disk.
//!
//! Files: this one (opening, registration, authentication, the audit and
//! rate-limit helpers, sweeping); `login` (logging in); `rotation` (refresh
//! and logout: the rotation decision); `accounts` (a user's sessions,
//! password and deletion); `admin` (what administrators do). The security
//! decisions are pure functions there, table-tested; the methods around
//! them only load, decide inside one transaction, and store.

mod accounts;
mod admin;
mod factors;
mod login;
mod moving;
mod passkeys;
mod recovery;
mod rotation;
mod vault;

use std::sync::Arc;

use crate::config::{Config, SigningAlg};
use crate::error::{Error, Result};
use crate::limits::{self, Limited, Limits};
use crate::mail::Mailer;
use crate::metrics::{Metrics, SweptCounts};
use crate::model::TokenDigest;
use crate::model::{
    AuditEvent, AuditKind, ClientInfo, Clock, DEFAULT_ROLE, Email, Password, RefreshRecord, Secret,
    UnixTime, User, Username, parse_roles,
};
use crate::password::{self, HashQueue, Lane, Passwords};
use crate::secrets;
use crate::storage::Store;
use crate::tokens::keys::{KeyRing, SigningKeyInfo};
use crate::tokens::{AccessClaims, AccessSigner, IssuedRefresh, PublicJwk, Tokens, new_id};
use vault::{Keys, Vault};

pub use admin::{AuditPage, MAX_PAGE, UserChange, UsersPage};
pub use factors::{FactorDetails, TotpSetup};
pub use moving::Imported;
pub(crate) use moving::is_dump_end;
pub use passkeys::Ceremony;

pub(crate) use crate::storage::{Leader, Role};
pub(crate) use recovery::OUTBOX_BATCH;
pub use recovery::{CONFIRM_EMAIL_PAGE, RESET_PAGE, VERIFY_PAGE};

/// File name of the generated refresh-token secret inside the data directory.
const REFRESH_SECRET_FILE: &str = "refresh_token_secret";
/// Expired records deleted per sweep transaction. The database holds every
/// other reader and writer back for the whole of a transaction (sled takes
/// its global lock before running the closure), so a batch is kept small:
/// its lock must not show in a token check's latency.
const SWEEP_BATCH: usize = 16;
/// The sweeper's pause between two batches, which lets the requests that
/// waited for the lock through and leaves the cores to them.
const SWEEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

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
    /// After a login: the device token to hand back with this account's
    /// next login (see [`Latchkey::login`]); `None` after a refresh.
    pub device_token: Option<Secret>,
}

/// The verified caller of a protected operation: the access token's claims
/// and the user as stored now (so roles and state are current).
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The access token's verified claims.
    pub claims: AccessClaims,
    /// The user the token belongs to, as stored now.
    pub user: User,
}

/// The outcome of [`Latchkey::rotate_signing_key`].
#[derive(Debug, Clone)]
pub struct RotatedKey {
    /// The new active key.
    pub active: SigningKeyInfo,
    /// The key it replaced, if there was one.
    pub retired: Option<SigningKeyInfo>,
}

/// What one sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Expired refresh-token records.
    pub refresh_tokens: usize,
    /// Expired sessions.
    pub sessions: usize,
    /// Audit events older than the retention.
    pub audit_events: usize,
    /// Expired mailed tokens.
    pub mail_tokens: usize,
    /// Mails given up on longer ago than their retention (7 days).
    pub failed_mails: usize,
    /// Expired second-factor and passkey challenges.
    pub challenges: usize,
}

/// Whether recording an audit event waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Return once the event, and every write before it, is on disk: the
    /// caller is about to acknowledge those writes.
    Wait,
    /// Written now, on disk with the next flush (refusals, which acknowledge
    /// nothing).
    NextFlush,
}

/// The latchkey core. Clone it freely: clones share one database.
#[derive(Clone)]
pub struct Latchkey {
    inner: Arc<Inner>,
}

/// What [`Latchkey::assemble`] puts together besides the settings.
struct Parts {
    vault: Vault,
    tokens: Tokens,
    /// The signing material (`None` offline).
    keys: Option<Keys>,
    sealer: secrets::Sealer,
}

struct Inner {
    config: Config,
    clock: Clock,
    store: Store,
    vault: Vault,
    /// Swapped when another node rotates the key ring (PostgreSQL).
    tokens: std::sync::RwLock<Arc<Tokens>>,
    keys: std::sync::Mutex<Option<Keys>>,
    passwords: Passwords,
    limits: Limits,
    metrics: Arc<Metrics>,
    mailer: Mailer,
    /// Wakes the outbox sender when something is queued.
    outbox_wake: tokio::sync::Notify,
    /// Opened for offline work: the tokens are throwaway, nothing is served.
    offline: bool,
    /// Seals TOTP keys at rest.
    sealer: crate::secrets::Sealer,
    /// The WebAuthn relying party.
    passkeys: crate::passkeys::Passkeys,
}

impl Latchkey {
    /// Opens the store `config` names (the data directory, or PostgreSQL
    /// with [`Config::database_url`], migrating its schema) with the system
    /// clock, loading or generating the signing keys and secrets (kept in
    /// the data directory, or sealed in the database).
    ///
    /// # Errors
    /// [`Error::Config`] for settings that make no sense (see
    /// [`Config::validate`]), an unusable secret or key file, or a master
    /// key that does not open the database's secrets;
    /// [`Error::DataDirLocked`] when another process has the directory,
    /// [`Error::Storage`] when it cannot be opened, reached or is corrupt.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> latchkey::Result<()> {
    /// let core = latchkey::Latchkey::open(latchkey::Config::with_data_dir("/var/lib/latchkey")).await?;
    /// let user = core
    ///     .register("alice", "alice@example.com", "correct horse battery", Default::default())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(config: Config) -> Result<Latchkey> {
        Latchkey::open_with_clock(config, Clock::system()).await
    }

    /// Like [`Latchkey::open`] with an injected clock (tests mint tokens in the past).
    ///
    /// # Errors
    /// As [`Latchkey::open`].
    pub async fn open_with_clock(config: Config, clock: Clock) -> Result<Latchkey> {
        config.validate()?;
        // Before anything is created: a bad --mail-from or SMTP_URL stops
        // startup with the data directory untouched.
        let mailer = Mailer::new(&config)?;
        let passkeys = crate::passkeys::Passkeys::new(&config)?;
        // The store first: its lock keeps a second instance from racing us to
        // create the secret files.
        let vault = Vault::open(&config).await?;
        let now = clock.now();
        let (keys, sealer) = vault
            .with_secrets(|home| {
                let access = AccessSigner::load(&config, home, now)?;
                let refresh_secret = secrets::load_or_create(
                    home,
                    REFRESH_SECRET_FILE,
                    "REFRESH_TOKEN_SECRET",
                    config.refresh_secret.as_ref(),
                )?;
                let keys = Keys::new(access, refresh_secret, home)?;
                Ok((keys, secrets::Sealer::open(home)?))
            })
            .await?;
        let tokens = keys.tokens(&config)?;
        let parts = Parts {
            vault,
            tokens,
            keys: Some(keys),
            sealer,
        };
        Latchkey::assemble(config, clock, parts, (mailer, passkeys), false)
    }

    /// Opens the store for offline work (the command line's user, audit,
    /// key, export and import commands): users are managed and the audit log read,
    /// but no token is ever issued, so no signing key or secret is read or
    /// created. A core opened this way refuses every token it is shown.
    ///
    /// # Errors
    /// As [`Latchkey::open`].
    pub async fn open_offline(config: Config) -> Result<Latchkey> {
        Latchkey::open_offline_with_clock(config, Clock::system()).await
    }

    /// Like [`Latchkey::open_offline`] with an injected clock.
    ///
    /// # Errors
    /// As [`Latchkey::open`].
    pub async fn open_offline_with_clock(config: Config, clock: Clock) -> Result<Latchkey> {
        config.validate()?;
        let mailer = Mailer::new(&config)?;
        let passkeys = crate::passkeys::Passkeys::new(&config)?;
        let vault = Vault::open(&config).await?;
        let throwaway = || Secret::new(new_id() + &new_id());
        let tokens = Tokens::new(&AccessSigner::Secret(throwaway()), &throwaway(), &config)?;
        let sealer = vault.with_secrets(secrets::Sealer::open).await?;
        let parts = Parts {
            vault,
            tokens,
            keys: None,
            sealer,
        };
        Latchkey::assemble(config, clock, parts, (mailer, passkeys), true)
    }

    fn assemble(
        config: Config,
        clock: Clock,
        parts: Parts,
        (mailer, passkeys): (Mailer, crate::passkeys::Passkeys),
        offline: bool,
    ) -> Result<Latchkey> {
        let Parts {
            vault,
            tokens,
            keys,
            sealer,
        } = parts;
        let store = vault.store.clone();
        let passwords = Passwords::new(HashQueue {
            concurrency: config
                .hash_concurrency
                .map_or_else(Passwords::default_concurrency, usize::from),
            max_waiting: config.hash_queue as usize,
            max_wait: config.hash_queue_timeout,
        })?;
        let limits = Limits::new(&config.limits, limits::DEFAULT_MAX_KEYS);
        let metrics = Arc::new(Metrics::new());
        let observer = Arc::clone(&metrics);
        store.observe_flushes(Box::new(move |batch, took| observer.flushed(batch, took)));
        let observer = Arc::clone(&metrics);
        passwords.observe_hashes(Box::new(move |took| observer.hashed(took)));
        Ok(Latchkey {
            inner: Arc::new(Inner {
                config,
                clock,
                store,
                vault,
                tokens: std::sync::RwLock::new(Arc::new(tokens)),
                keys: std::sync::Mutex::new(keys),
                passwords,
                limits,
                metrics,
                mailer,
                outbox_wake: tokio::sync::Notify::new(),
                offline,
                sealer,
                passkeys,
            }),
        })
    }

    /// The origin browser pages must be on to use passkeys, or `None`
    /// when passkeys are off (see `--webauthn-origin`).
    pub fn passkey_origin(&self) -> Option<&str> {
        self.inner.passkeys.origin()
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
        self.tokens().public_keys(self.now())
    }

    /// Access-token lifetime in seconds.
    pub fn access_ttl(&self) -> u64 {
        self.tokens().access_ttl()
    }

    /// Refresh-token lifetime in seconds.
    pub fn refresh_ttl(&self) -> u64 {
        self.tokens().refresh_ttl()
    }

    /// The tokens signed and verified now.
    fn tokens(&self) -> Arc<Tokens> {
        Arc::clone(
            &self
                .inner
                .tokens
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Which store this core runs on: `sled` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.inner.store.kind()
    }

    /// Takes the lead of `role` (one node at a time with PostgreSQL; always
    /// with sled).
    pub(crate) async fn lead(&self, role: Role) -> Result<Option<Leader>> {
        self.inner.store.lead(role).await
    }

    /// Takes up a signing-key ring rotated by another node (PostgreSQL,
    /// where the ring is shared); the background tasks call it every few
    /// seconds. Returns whether the keys changed.
    ///
    /// # Errors
    /// [`Error::Storage`], or [`Error::Config`] for an unreadable ring.
    pub async fn reload_keys(&self) -> Result<bool> {
        if !self.inner.vault.shares_secrets() || self.inner.offline {
            return Ok(false);
        }
        let config = &self.inner.config;
        let fresh = self
            .inner
            .vault
            .with_secrets(|home| {
                let mut keys = self
                    .inner
                    .keys
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let Some(keys) = keys.as_mut() else {
                    return Ok(None);
                };
                match keys.reload(home)? {
                    true => keys.tokens(config).map(Some),
                    false => Ok(None),
                }
            })
            .await?;
        let Some(tokens) = fresh else {
            return Ok(false);
        };
        *self
            .inner
            .tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tokens);
        tracing::info!("signing keys reloaded: the key ring was rotated");
        Ok(true)
    }

    fn now(&self) -> UnixTime {
        self.inner.clock.now()
    }

    /// Creates an account with the default role. The email is trimmed and
    /// lower-cased; email and username (case-insensitively) must be unused;
    /// the password must pass the policy: 8 to 128 characters, not in the
    /// list of breached passwords, not a keyboard or repeated pattern, not
    /// containing the username or the email's local part.
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
        self.limited(self.inner.limits.register(client.ip), None, &client)
            .await?;
        let user = self
            .create_account(
                username,
                email,
                password,
                &[DEFAULT_ROLE],
                false,
                client.clone(),
            )
            .await?;
        self.send_verification(&user, &client).await?;
        Ok(user)
    }

    /// Creates an account with these roles (the command line's way to make
    /// the first admin). Same rules as [`Latchkey::register`], no rate
    /// limit, no verification mail: the operator who creates it vouches for
    /// the address, so it counts as verified (and `--require-verified-email`
    /// lets it log in).
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
        self.create_account(username, email, password, roles, true, client)
            .await
    }

    async fn create_account<S: AsRef<str>>(
        &self,
        username: &str,
        email: &str,
        password: &str,
        roles: &[S],
        verified: bool,
        client: ClientInfo,
    ) -> Result<User> {
        let username = Username::parse(username)?;
        let email = Email::parse(email)?;
        let password = Password::parse(password)?;
        let roles = parse_roles(roles, &self.inner.config.extra_roles)?;
        password::check_policy(&password, username.as_str(), email.as_str())?;
        let store = &self.inner.store;
        // Cheap checks before the expensive hash; the transaction re-checks.
        if store.email_taken(email.as_str()).await? {
            return Err(Error::UserExists);
        }
        if store.username_taken(&username.key()).await? {
            return Err(Error::UsernameTaken);
        }
        let password_hash = self.inner.passwords.hash(&password, Lane::Stranger).await?;
        let mut user = User::new(
            new_id(),
            &username,
            &email,
            password_hash,
            roles,
            self.now(),
        );
        user.email_verified = verified;
        store.insert_user(&user).await?;
        let event = self.event(AuditKind::Register, &client).user(&user.id);
        // A registration's verification mail follows, and its flush makes
        // both durable at once: one wait for the disk, not two.
        let durability = match verified {
            true => Durability::Wait,
            false => Durability::NextFlush,
        };
        self.record(event, durability).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(user)
    }

    /// Verifies an access token and checks that its session is still live
    /// for its user as stored now (revoked, ended by a password change or a
    /// revoke-all, or the account disabled or deleted: all refused). Two
    /// store reads: the session and the user.
    ///
    /// # Errors
    /// [`Error::MissingToken`] for an empty token, [`Error::TokenExpired`],
    /// [`Error::InvalidToken`], [`Error::SessionRevoked`], [`Error::Storage`].
    pub async fn authenticate(&self, access_token: &str) -> Result<Authenticated> {
        if access_token.is_empty() {
            return Err(Error::MissingToken);
        }
        let now = self.now();
        let claims = self.tokens().verify_access(access_token, now)?;
        let store = &self.inner.store;
        let (session, user) = store.session_and_user(&claims.sid, &claims.sub).await?;
        match (session, user) {
            (Some(session), Some(user)) if session.is_live_for(&user, now) => {
                Ok(Authenticated { claims, user })
            }
            _ => Err(Error::SessionRevoked),
        }
    }

    /// The user with this id.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    pub async fn user(&self, id: &str) -> Result<User> {
        self.inner.store.user(id).await?.ok_or(Error::UserNotFound)
    }

    /// The stored record of a refresh token, looked up by the token itself.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn refresh_record(&self, refresh_token: &str) -> Result<Option<RefreshRecord>> {
        self.inner
            .store
            .refresh_record(&TokenDigest::of(refresh_token))
            .await
    }

    /// How many refresh records (live, revoked or expired-but-unswept) are stored.
    pub async fn refresh_record_count(&self) -> usize {
        self.inner.store.refresh_record_count().await
    }

    /// How many sessions (live, revoked or expired-but-unswept) are stored.
    pub async fn session_count(&self) -> usize {
        self.inner.store.session_count().await
    }

    /// Counts the live sessions (neither revoked nor expired) for the
    /// `latchkey_sessions_live` metric, which logins and revocations then
    /// keep current until the next count. Reads every session: blocking,
    /// and for the background (the sweeper counts at start and after every
    /// sweep).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn count_live_sessions(&self) -> Result<usize> {
        let live = self.inner.store.live_session_count(self.now()).await?;
        self.inner.metrics.set_live_sessions(live);
        Ok(live)
    }

    /// Every metric in the Prometheus (OpenMetrics) text format, as
    /// `GET /metrics` serves it: for an embedding app that serves them
    /// elsewhere.
    pub async fn metrics_text(&self) -> String {
        let metrics = &self.inner.metrics;
        metrics.set_hash_waiting(self.inner.passwords.waiting());
        metrics.set_outbox_depth(self.inner.store.outbox_len().await);
        metrics.encode()
    }

    /// The metrics, for the HTTP layer to record requests.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Deletes every expired refresh record and session, and every audit
    /// event older than the retention, in small transactions with a short
    /// pause between them, so that requests keep their latency while a large
    /// backlog goes.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn sweep_expired(&self) -> Result<Swept> {
        let now = self.now();
        let store = &self.inner.store;
        let audit_cutoff = now.saturating_sub(self.inner.config.audit_retention.as_secs());
        let swept = Swept {
            refresh_tokens: drain(|| store.sweep_expired_refresh(now, SWEEP_BATCH)).await?,
            sessions: drain(|| store.sweep_expired_sessions(now, SWEEP_BATCH)).await?,
            audit_events: drain(|| store.sweep_audit(audit_cutoff, SWEEP_BATCH)).await?,
            mail_tokens: drain(|| store.sweep_mail_tokens(now, SWEEP_BATCH)).await?,
            failed_mails: store
                .sweep_failed_mail(now.saturating_sub(recovery::FAILED_MAIL_RETENTION.as_secs()))
                .await?,
            challenges: drain(|| store.sweep_challenges(now, SWEEP_BATCH)).await?,
        };
        self.inner.metrics.swept(SweptCounts {
            refresh_tokens: swept.refresh_tokens,
            sessions: swept.sessions,
            audit_events: swept.audit_events,
        });
        Ok(swept)
    }

    /// Audit events at or after `since`, oldest first, optionally of one
    /// user, at most `limit`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn audit_events(
        &self,
        since: UnixTime,
        user_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let (events, _) = self
            .inner
            .store
            .audit_page(since, None, user_id, limit, usize::MAX)
            .await?;
        Ok(events)
    }

    /// The access-token signing keys kept in the data directory (or the
    /// database), newest first: the active one, then retired ones still
    /// published.
    ///
    /// # Errors
    /// [`Error::Config`] when there is no key ring (latchkey signs with
    /// HS256 there, or has never served from it) or it is unusable.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyInfo>> {
        let ring = self
            .inner
            .vault
            .with_secrets(|home| self.key_ring(home))
            .await?;
        Ok(ring.keys.iter().rev().map(SigningKeyInfo::from).collect())
    }

    /// Makes a new signing key active in the data directory, of `alg` or, by
    /// default, of the active key's algorithm. The retired key stays
    /// published and valid until the access tokens it signed expire. On
    /// sled, a running server picks the new key up at its next start, so
    /// rotate with an offline core (`latchkey keys rotate`); on PostgreSQL,
    /// every node takes it up within seconds ([`Latchkey::reload_keys`]).
    ///
    /// # Errors
    /// As [`Latchkey::signing_keys`], [`Error::Storage`] when the ring
    /// cannot be written.
    pub async fn rotate_signing_key(&self, alg: Option<SigningAlg>) -> Result<RotatedKey> {
        let now = self.now();
        self.inner
            .vault
            .with_secrets(|home| {
                let mut ring = self.key_ring(home)?;
                let retired = ring.active().map(SigningKeyInfo::from);
                let alg = alg
                    .or(retired.as_ref().map(|key| key.alg))
                    .ok_or_else(|| Error::Config("the key ring has no active key".into()))?;
                let active = SigningKeyInfo::from(ring.rotate(alg, now)?);
                ring.save(home)?;
                Ok(RotatedKey { active, retired })
            })
            .await
    }

    fn key_ring(&self, home: &secrets::SecretHome) -> Result<KeyRing> {
        let place = match self.inner.vault.shares_secrets() {
            true => "the database".to_owned(),
            false => self.inner.config.data_dir.display().to_string(),
        };
        KeyRing::load(home)?.ok_or_else(|| {
            let hs256 = self.inner.config.jwt_secret.is_some()
                || matches!(home.read(crate::tokens::ACCESS_SECRET_FILE), Ok(Some(_)));
            Error::Config(match hs256 {
                true => format!(
                    "{place} has no signing keys: latchkey signs with HS256 there (JWT_SECRET), which has no key pair to rotate"
                ),
                false => format!(
                    "{place} has no signing keys yet: latchkey makes its first key pair when it first serves"
                ),
            })
        })
    }

    /// Whether this core can serve: the store takes writes and the keys
    /// are loaded (an offline core never is).
    ///
    /// # Errors
    /// The reason, in a sentence: [`Error::Storage`] or [`Error::Config`].
    pub async fn ready(&self) -> Result<()> {
        if self.inner.offline {
            return Err(Error::Config(
                "opened offline: no signing keys are loaded".into(),
            ));
        }
        self.inner.store.ready().await
    }

    /// Fills the store with `count` sessions of `user_id`, each with one
    /// refresh record, that end at `expires_at` — straight into storage, in
    /// large transactions, for the benchmark (`--features bench`): a million
    /// logins would take hours of hashing. Not part of the API.
    ///
    /// # Errors
    /// [`Error::UserNotFound`], [`Error::Storage`].
    #[cfg(feature = "bench")]
    #[doc(hidden)]
    pub async fn seed_sessions(
        &self,
        user_id: &str,
        count: usize,
        expires_at: UnixTime,
    ) -> Result<()> {
        const BATCH: usize = 2_000;
        let now = self.now();
        let client = ClientInfo::default();
        let mut left = count;
        while left > 0 {
            let size = left.min(BATCH);
            let ids: Vec<(String, TokenDigest, String)> = (0..size)
                .map(|_| (new_id(), TokenDigest::of(&new_id()), new_id()))
                .collect();
            let batch: Vec<crate::storage::NewSession<'_>> = ids
                .iter()
                .map(|(id, digest, jti)| crate::storage::NewSession {
                    id,
                    now,
                    expires_at,
                    client: &client,
                    digest,
                    jti,
                    amr: &[],
                })
                .collect();
            self.inner.store.seed_sessions(user_id, &batch).await?;
            left -= size;
        }
        self.flush()
    }

    /// Flushes the database on the calling thread (used at shutdown).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn flush(&self) -> Result<()> {
        self.inner.store.flush_blocking()
    }

    /// An audit event of `kind` now, from `client`.
    fn event(&self, kind: AuditKind, client: &ClientInfo) -> AuditEvent {
        AuditEvent::new(kind, self.now(), client)
    }

    /// Appends `event` to the audit log; with [`Durability::Wait`], returns
    /// once it and every write made before it are on disk.
    async fn record(&self, event: AuditEvent, durability: Durability) -> Result<()> {
        self.inner.store.append_audit(&event).await?;
        if durability == Durability::Wait {
            self.inner.store.durable().await?;
        }
        Ok(())
    }

    /// Turns a rate-limit refusal into [`Error::RateLimited`], auditing it
    /// (at most once a minute per rule and client, so a flood cannot fill the log).
    async fn limited(
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
        self.inner.metrics.rate_limited(limited.rule);
        if self.inner.limits.worth_auditing(&limited, client.ip) {
            let mut event = self
                .event(AuditKind::RateLimited, client)
                .detail(limited.rule);
            if let Some(user_id) = user_id {
                event = event.user(user_id);
            }
            self.record(event, Durability::NextFlush).await?;
        }
        Err(Error::RateLimited {
            retry_after: limited.retry_after,
        })
    }

    fn token_pair(
        &self,
        user: &User,
        session_id: &str,
        amr: &[String],
        refresh: &IssuedRefresh,
        now: UnixTime,
    ) -> Result<TokenPair> {
        let access = self.tokens().issue_access(user, session_id, amr, now)?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token: refresh.token.clone(),
            refresh_expires_in: refresh.expires_at.saturating_sub(now),
            session_id: session_id.to_owned(),
            device_token: None,
        })
    }
}

/// Runs a batched delete until a batch comes back short; returns the total.
/// Between batches it pauses ([`SWEEP_PAUSE`]), so a long sweep shares the
/// cores with the requests instead of taking its turn whole. (Not a
/// low-priority thread: preempted inside a commit, it would stall every
/// request waiting to read.)
async fn drain<F>(mut batch: impl FnMut() -> F) -> Result<usize>
where
    F: Future<Output = Result<usize>>,
{
    let mut total = 0;
    loop {
        let removed = batch().await?;
        total += removed;
        if removed < SWEEP_BATCH {
            return Ok(total);
        }
        tokio::time::sleep(SWEEP_PAUSE).await;
    }
}
