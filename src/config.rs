//! Every setting of the latchkey core, with its default, readable from
//! flags and the environment (clap derives them; the binary's command line
//! flattens [`Config`] into `latchkey serve`). Depends only on `model` (for
//! the redacting [`Secret`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use clap::Args;

use crate::model::Secret;

/// Default access-token lifetime.
pub const DEFAULT_ACCESS_TTL: &str = "15m";
/// Default refresh-token (session) lifetime.
pub const DEFAULT_REFRESH_TTL: &str = "7d";
/// Default absolute lifetime of a session: after it, log in again.
pub const DEFAULT_SESSION_MAX_AGE: &str = "30d";
/// Default pause between two sweeps of expired refresh tokens.
pub const DEFAULT_SWEEP_INTERVAL: &str = "10m";
/// Default `iss` claim.
pub const DEFAULT_ISSUER: &str = "latchkey";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default window in which a rotated refresh token may be presented again
/// (two tabs refreshing at once) without counting as theft.
pub const DEFAULT_REUSE_GRACE: &str = "10s";
/// Default age after which audit events are deleted.
pub const DEFAULT_AUDIT_RETENTION: &str = "30d";
/// Default login attempts per client IP.
pub const DEFAULT_LOGIN_IP_RATE: &str = "30/1m";
/// Default login attempts per account: a fast tier then a slow one, so
/// repeated failures slow down progressively instead of locking anyone out.
pub const DEFAULT_LOGIN_ACCOUNT_RATE: &str = "10/1m,100/1h";
/// Default registrations per client IP.
pub const DEFAULT_REGISTER_IP_RATE: &str = "20/1h";
/// Default refreshes per client IP.
pub const DEFAULT_REFRESH_IP_RATE: &str = "120/1m";
/// Default number of requests that may wait for a password hash.
pub const DEFAULT_HASH_QUEUE: u32 = 64;
/// Default longest wait for a password hash.
pub const DEFAULT_HASH_QUEUE_TIMEOUT: &str = "3s";
/// Default bound of the database's page cache, in MiB.
pub const DEFAULT_DB_CACHE_MIB: u32 = 64;
/// Default connections per node to PostgreSQL.
pub const DEFAULT_DB_POOL_SIZE: u32 = 16;
/// Default lifetime of an email-verification link.
pub const DEFAULT_VERIFY_TTL: &str = "24h";
/// Default lifetime of a password-reset link.
pub const DEFAULT_RESET_TTL: &str = "30m";
/// Default sender of latchkey's mail.
pub const DEFAULT_MAIL_FROM: &str = "latchkey <latchkey@localhost>";
/// Default mail requests (resets, verifications, email changes) per client IP.
pub const DEFAULT_MAIL_IP_RATE: &str = "10/1h";
/// Default mails per target address.
pub const DEFAULT_MAIL_ACCOUNT_RATE: &str = "3/1h";
/// Default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default cap on open connections from one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 64;
/// Default time a client has to send a request head (and, over HTTP/1.1,
/// the longest an idle keep-alive connection waits for the next one).
pub const DEFAULT_HEADER_TIMEOUT: &str = "10s";
/// Default time a client has to send a request body.
pub const DEFAULT_BODY_TIMEOUT: &str = "10s";
/// Default time a connection may sit without a request before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";

/// The settings the latchkey core runs with.
///
/// `Config::default()` is what `latchkey serve` uses with no flags and no
/// environment: data in `./data`, 15-minute access tokens, 7-day refresh
/// tokens, a sweep every 10 minutes, no `Secure` cookie attribute, secrets
/// generated on first start and kept in the data directory.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Directory of the database and generated secrets. (On the command line
    /// it is the global `--data-dir`, which every subcommand shares.)
    #[arg(skip = PathBuf::from(DEFAULT_DATA_DIR))]
    pub data_dir: PathBuf,
    /// Access-token lifetime (humantime: 30s, 15m, 1h).
    #[arg(long, env = "LATCHKEY_ACCESS_TTL", default_value = DEFAULT_ACCESS_TTL, value_parser = humantime::parse_duration)]
    pub access_ttl: Duration,
    /// Refresh-token lifetime, the longest a session lives without a login (humantime: 12h, 7d).
    #[arg(long, env = "LATCHKEY_REFRESH_TTL", default_value = DEFAULT_REFRESH_TTL, value_parser = humantime::parse_duration)]
    pub refresh_ttl: Duration,
    /// The longest a session lives, however often it is refreshed; then the
    /// user logs in again (OWASP ASVS 3.3).
    #[arg(long, env = "LATCHKEY_SESSION_MAX_AGE", default_value = DEFAULT_SESSION_MAX_AGE, value_parser = humantime::parse_duration)]
    pub session_max_age: Duration,
    /// Pause between two sweeps of expired refresh tokens (humantime).
    #[arg(long, env = "LATCHKEY_SWEEP_INTERVAL", default_value = DEFAULT_SWEEP_INTERVAL, value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// Mark cookies `Secure` (always on when latchkey serves TLS itself).
    #[arg(long, env = "LATCHKEY_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// The `iss` claim of every token latchkey issues; tokens with another issuer are refused.
    #[arg(long, env = "LATCHKEY_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// The `aud` claim of access tokens; when set, access tokens for another audience are refused.
    #[arg(long, env = "LATCHKEY_AUDIENCE")]
    pub audience: Option<String>,
    /// How many password hashes may run at once, 1 to 64 (default: the
    /// number of cores; the hashing threads run at the lowest priority, so
    /// token checks keep the CPU they need). Each thread keeps 19 MiB of
    /// argon2 memory once it has hashed, and more threads than cores only
    /// make each login slower.
    #[arg(long, env = "LATCHKEY_HASH_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub hash_concurrency: Option<u16>,
    /// How many requests may wait for a password hash in each lane (known
    /// devices and password changes; everyone else), 1 to 100000; more get
    /// 503 `overloaded`.
    #[arg(long, env = "LATCHKEY_HASH_QUEUE", default_value_t = DEFAULT_HASH_QUEUE)]
    pub hash_queue: u32,
    /// The longest a request waits for its password hash before it gets 503
    /// `overloaded` (humantime).
    #[arg(long, env = "LATCHKEY_HASH_QUEUE_TIMEOUT", default_value = DEFAULT_HASH_QUEUE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub hash_queue_timeout: Duration,
    /// MiB of memory the database may keep as its page cache, 8 to 65536;
    /// records beyond it are read from disk (the operating system's cache)
    /// when needed.
    #[arg(long, env = "LATCHKEY_DB_CACHE_MIB", default_value_t = DEFAULT_DB_CACHE_MIB)]
    pub db_cache_mib: u32,
    /// How long after a rotation the old refresh token is still answered
    /// with the same successor (while that is unused) before reuse counts as
    /// theft and revokes the session; `0s` makes every reuse theft.
    #[arg(long, env = "LATCHKEY_REUSE_GRACE", default_value = DEFAULT_REUSE_GRACE, value_parser = humantime::parse_duration)]
    pub reuse_grace: Duration,
    /// Age after which the sweeper deletes audit events (humantime).
    #[arg(long, env = "LATCHKEY_AUDIT_RETENTION", default_value = DEFAULT_AUDIT_RETENTION, value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,
    /// Where latchkey is reached from outside (`https://auth.example.com`),
    /// for the links in its mails. Default: `http://HOST:PORT` of `serve`.
    #[arg(long, env = "LATCHKEY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Base of the links in mails, when the app serves its own pages:
    /// links are `<base>/verify-email?token=…`, `<base>/reset-password?token=…`
    /// and `<base>/confirm-email?token=…`. Default: `<public-url>/account`,
    /// latchkey's own pages.
    #[arg(long, env = "LATCHKEY_EMAIL_LINK_BASE")]
    pub email_link_base: Option<String>,
    /// The origin browsers run passkey ceremonies from
    /// (`https://app.example.com`: the page that calls
    /// `navigator.credentials`). Default: the origin of `--public-url`, with
    /// a loopback IP as `localhost` (browsers refuse passkeys on IP
    /// addresses).
    #[arg(long, env = "LATCHKEY_WEBAUTHN_ORIGIN")]
    pub webauthn_origin: Option<String>,
    /// The WebAuthn relying-party id passkeys are bound to: the origin's
    /// host or a parent domain of it (`example.com` lets every
    /// `*.example.com` page use them). Default: the origin's host.
    #[arg(long, env = "LATCHKEY_WEBAUTHN_RP_ID")]
    pub webauthn_rp_id: Option<String>,
    /// The sender of latchkey's mail (`Name <address>` or an address).
    #[arg(long, env = "LATCHKEY_MAIL_FROM", default_value = DEFAULT_MAIL_FROM)]
    pub mail_from: String,
    /// How long an email-verification link works (humantime).
    #[arg(long, env = "LATCHKEY_VERIFY_TTL", default_value = DEFAULT_VERIFY_TTL, value_parser = humantime::parse_duration)]
    pub verify_ttl: Duration,
    /// How long a password-reset link works (humantime).
    #[arg(long, env = "LATCHKEY_RESET_TTL", default_value = DEFAULT_RESET_TTL, value_parser = humantime::parse_duration)]
    pub reset_ttl: Duration,
    /// Refuse login and refresh (403 `email_not_verified`, only after the
    /// right password) until the account's address is verified.
    #[arg(long, env = "LATCHKEY_REQUIRE_VERIFIED_EMAIL")]
    pub require_verified_email: bool,
    /// The SMTP relay, from `SMTP_URL` (never a flag: it may hold a
    /// password): `smtp://host:port`, `smtp://user:pass@host:587?tls=required`
    /// or `smtps://…`. Without it, mails are written to
    /// `<data-dir>/outbox-files/`.
    #[arg(skip)]
    pub smtp_url: Option<Secret>,
    /// Rate limits.
    #[command(flatten)]
    pub limits: RateLimits,
    /// Connection caps and timeouts.
    #[command(flatten)]
    pub connections: ConnectionLimits,
    /// Serve Prometheus metrics at `GET /metrics` (`on`, the default, or
    /// `off`). They hold counts, never a token or an address; still, keep
    /// the path off the public internet (see the README).
    #[arg(long, env = "LATCHKEY_METRICS", value_enum, default_value = "on")]
    pub metrics: Switch,
    /// Role names accounts may hold besides `user` and `admin` (for an
    /// embedding app's own `RequireRole` guards). On the command line it is
    /// the global `--extra-roles`, which the user commands share.
    #[arg(skip)]
    pub extra_roles: Vec<String>,
    /// Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For`,
    /// `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Request-Id` headers
    /// are believed (default: none, the socket address is the client).
    /// `Forwarded` is never read: make the proxy set the `X-Forwarded-*`
    /// headers itself.
    #[arg(long, env = "LATCHKEY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
    /// Comma-separated origins (`https://app.example.com`) of browser apps
    /// allowed to call latchkey with credentials (CORS); also the CSRF
    /// allow-list for cookie-authenticated requests. Same-origin always works.
    #[arg(long, env = "LATCHKEY_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key). Cookies are then
    /// `Secure` and responses carry `Strict-Transport-Security`.
    #[arg(long, env = "LATCHKEY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "LATCHKEY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Algorithm of access tokens: `EdDSA` (Ed25519) or `ES256` sign with a
    /// key pair kept in the data dir and published at
    /// `/.well-known/jwks.json`; `HS256` signs with `JWT_SECRET` (or a
    /// generated secret). Default: `HS256` when `JWT_SECRET` is set, else `EdDSA`.
    #[arg(long, env = "LATCHKEY_SIGNING_ALG", value_enum)]
    pub signing_alg: Option<SigningAlg>,
    /// HMAC secret of access tokens; from `JWT_SECRET`, else generated and kept in the data dir.
    #[arg(skip)]
    pub jwt_secret: Option<Secret>,
    /// HMAC secret of refresh tokens; from `REFRESH_TOKEN_SECRET`, else generated and kept in the data dir.
    #[arg(skip)]
    pub refresh_secret: Option<Secret>,
    /// PostgreSQL instead of sled, from `DATABASE_URL` (never a flag: it
    /// may hold a password): `postgres://user:pass@host:5432/db`. Several
    /// nodes may share one database.
    #[arg(skip)]
    pub database_url: Option<Secret>,
    /// The key that seals the secrets kept in PostgreSQL, from
    /// `LATCHKEY_MASTER_KEY` (at least 32 bytes; required with
    /// `DATABASE_URL`, the same on every node).
    #[arg(skip)]
    pub master_key: Option<Secret>,
    /// Connections each node keeps to PostgreSQL (with `DATABASE_URL`).
    #[arg(long, env = "LATCHKEY_DB_POOL_SIZE", default_value_t = DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: u32,
}

impl Config {
    /// Reads `JWT_SECRET`, `REFRESH_TOKEN_SECRET` and `SMTP_URL` from the environment
    /// (after a `.env` file, if the binary loaded one). Secrets are never flags:
    /// a flag would show in `ps`.
    pub fn with_secrets_from_env(mut self) -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        self.jwt_secret = read("JWT_SECRET").map(Secret::new);
        self.refresh_secret = read("REFRESH_TOKEN_SECRET").map(Secret::new);
        self.smtp_url = read("SMTP_URL").map(Secret::new);
        self.database_url = read("DATABASE_URL").map(Secret::new);
        self.master_key = read("LATCHKEY_MASTER_KEY").map(Secret::new);
        self
    }

    /// The database's page-cache bound in bytes.
    pub(crate) fn db_cache_bytes(&self) -> u64 {
        u64::from(self.db_cache_mib) << 20
    }

    /// Refuses settings that make no sense or would break latchkey's
    /// guarantees (an access token outliving a day, theft detection turned
    /// off by an endless reuse grace, a sweep every few milliseconds,
    /// lifetimes that overflow…), naming the flag and its allowed range.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) with one line saying what is wrong.
    pub fn validate(&self) -> Result<(), crate::error::Error> {
        const SECOND: Duration = Duration::from_secs(1);
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let within = |flag: &str, value: Duration, low: Duration, high: Duration| {
            if value < low || value > high {
                return Err(crate::error::Error::Config(format!(
                    "{flag} must be between {} and {} (got {})",
                    humantime::format_duration(low),
                    humantime::format_duration(high),
                    humantime::format_duration(value)
                )));
            }
            Ok(())
        };
        let count = |flag: &str, value: u64, low: u64, high: u64| {
            if value < low || value > high {
                return Err(crate::error::Error::Config(format!(
                    "{flag} must be between {low} and {high} (got {value})"
                )));
            }
            Ok(())
        };
        count("--db-pool-size", u64::from(self.db_pool_size), 2, 1_000)?;
        if self.database_url.is_some() {
            let master = self.master_key.as_ref().map_or(0, |key| key.expose().len());
            if master < crate::secrets::MIN_SECRET_BYTES {
                return Err(crate::error::Error::Config(format!(
                    "DATABASE_URL needs LATCHKEY_MASTER_KEY, at least {} bytes, the same on every node \
                     (generate one with `openssl rand -hex 32`)",
                    crate::secrets::MIN_SECRET_BYTES
                )));
            }
        }
        within("--access-ttl", self.access_ttl, SECOND, DAY)?;
        within(
            "--refresh-ttl",
            self.refresh_ttl,
            self.access_ttl,
            400 * DAY,
        )?;
        within(
            "--session-max-age",
            self.session_max_age,
            self.refresh_ttl,
            400 * DAY,
        )?;
        within("--reuse-grace", self.reuse_grace, Duration::ZERO, MINUTE)?;
        within(
            "--sweep-interval",
            self.sweep_interval,
            Duration::from_millis(100),
            DAY,
        )?;
        within("--audit-retention", self.audit_retention, HOUR, 3650 * DAY)?;
        // Checked here, not by clap, so a bad one gets latchkey's one line.
        for (flag, url) in [
            ("--public-url", &self.public_url),
            ("--email-link-base", &self.email_link_base),
        ] {
            if let Some(url) = url {
                parse_public_url(url)
                    .map_err(|err| crate::error::Error::Config(format!("{flag}: {err}")))?;
            }
        }
        if let Some(origin) = &self.webauthn_origin {
            parse_origin(origin)
                .map_err(|err| crate::error::Error::Config(format!("--webauthn-origin: {err}")))?;
        }
        if let Some(id) = &self.webauthn_rp_id {
            let domain_like = !id.is_empty()
                && id.len() <= 253
                && id
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
            if !domain_like {
                return Err(crate::error::Error::Config(format!(
                    "--webauthn-rp-id: {id:?} is not a domain name like example.com"
                )));
            }
        }
        within("--verify-ttl", self.verify_ttl, MINUTE, 30 * DAY)?;
        within("--reset-ttl", self.reset_ttl, MINUTE, DAY)?;
        within(
            "--hash-queue-timeout",
            self.hash_queue_timeout,
            Duration::from_millis(100),
            MINUTE,
        )?;
        count(
            "--hash-concurrency",
            self.hash_concurrency.map_or(1, u64::from),
            1,
            64,
        )?;
        count("--hash-queue", u64::from(self.hash_queue), 1, 100_000)?;
        count("--db-cache-mib", u64::from(self.db_cache_mib), 8, 65_536)?;
        let connections = &self.connections;
        count(
            "--max-connections",
            u64::from(connections.max_connections),
            1,
            1_000_000,
        )?;
        count(
            "--max-connections-per-ip",
            u64::from(connections.max_connections_per_ip),
            1,
            u64::from(connections.max_connections),
        )?;
        let tenth = Duration::from_millis(100);
        within(
            "--header-timeout",
            connections.header_timeout,
            tenth,
            5 * MINUTE,
        )?;
        within(
            "--body-timeout",
            connections.body_timeout,
            tenth,
            5 * MINUTE,
        )?;
        within("--idle-timeout", connections.idle_timeout, tenth, HOUR)?;
        let limits = &self.limits;
        let rates = [
            ("--rate-login-ip", &limits.login_ip),
            ("--rate-register-ip", &limits.register_ip),
            ("--rate-refresh-ip", &limits.refresh_ip),
        ];
        for (flag, rate) in rates.into_iter().chain(
            limits
                .login_account
                .iter()
                .map(|rate| ("--rate-login-account", rate)),
        ) {
            count(flag, u64::from(rate.count), 1, 1_000_000)?;
            within(flag, rate.per, SECOND, 30 * DAY)?;
        }
        if let Some(bad) = self
            .extra_roles
            .iter()
            .find(|role| !crate::model::is_role_name(role))
        {
            return Err(crate::error::Error::Config(format!(
                "--extra-roles: {bad:?} is not a role name (1 to 32 of a-z, 0-9, '_', '.', '-')"
            )));
        }
        if self.issuer.trim().is_empty() {
            return Err(crate::error::Error::Config(
                "--issuer must not be empty".into(),
            ));
        }
        if self
            .audience
            .as_deref()
            .is_some_and(|audience| audience.trim().is_empty())
        {
            return Err(crate::error::Error::Config(
                "--audience must not be empty".into(),
            ));
        }
        Ok(())
    }

    /// Whether latchkey serves HTTPS itself (`--tls-cert` and `--tls-key`).
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// Whether cookies get the `Secure` attribute: asked for, or served over TLS.
    pub fn cookies_secure(&self) -> bool {
        self.secure_cookies || self.serves_tls()
    }

    /// A [`ConfigBuilder`] from the defaults with `data_dir`.
    pub fn builder(data_dir: impl Into<PathBuf>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config::with_data_dir(data_dir),
            origins: Vec::new(),
            public_url: None,
        }
    }

    /// The default settings with another data directory.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }
}

impl Switch {
    /// Whether it is on.
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// How access tokens are signed.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum SigningAlg {
    /// Ed25519 signatures (RFC 8037); the default without `JWT_SECRET`.
    #[value(name = "EdDSA")]
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// ECDSA with P-256 and SHA-256.
    #[value(name = "ES256")]
    #[serde(rename = "ES256")]
    Es256,
    /// HMAC with SHA-256 and a shared secret; the default with `JWT_SECRET`.
    #[value(name = "HS256")]
    #[serde(rename = "HS256")]
    Hs256,
}

impl SigningAlg {
    /// The JOSE name (`EdDSA`, `ES256`, `HS256`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDsa => "EdDSA",
            SigningAlg::Es256 => "ES256",
            SigningAlg::Hs256 => "HS256",
        }
    }
}

/// `N/DURATION`: at most N requests per DURATION, N of them in a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (and the burst size).
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, per) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a rate like 5/1m"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{count:?} is not a positive whole number"))?;
        let per = humantime::parse_duration(per.trim()).map_err(|err| format!("{per:?}: {err}"))?;
        if count == 0 || per.is_zero() {
            return Err(format!("{text:?}: count and period must be above zero"));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// Builds a [`Config`] in code, for an app that embeds latchkey (no command
/// line needed): start from the defaults with a data directory, change what
/// you need, and [`build`](ConfigBuilder::build) checks the result.
///
/// ```
/// use std::time::Duration;
///
/// let config = latchkey::Config::builder("./auth-data")
///     .access_ttl(Duration::from_secs(5 * 60))
///     .extra_roles(["editor"])
///     .cors_origins(["https://app.example.com"])
///     .build()
///     .expect("valid settings");
/// assert_eq!(config.access_ttl, Duration::from_secs(300));
///
/// // Nonsense is refused with the setting's name.
/// let refused = latchkey::Config::builder("./auth-data")
///     .access_ttl(Duration::from_secs(7 * 86_400))
///     .build();
/// assert!(refused.unwrap_err().to_string().contains("--access-ttl"));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
    origins: Vec<String>,
    public_url: Option<String>,
}

impl ConfigBuilder {
    /// Access-token lifetime (default 15 minutes).
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.config.access_ttl = ttl;
        self
    }

    /// Refresh-token lifetime: the longest a session lives unused (default 7 days).
    pub fn refresh_ttl(mut self, ttl: Duration) -> Self {
        self.config.refresh_ttl = ttl;
        self
    }

    /// The longest a session lives however often it is refreshed (default 30 days).
    pub fn session_max_age(mut self, age: Duration) -> Self {
        self.config.session_max_age = age;
        self
    }

    /// Pause between two sweeps of expired records (default 10 minutes).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.config.sweep_interval = interval;
        self
    }

    /// Mark cookies `Secure` (do, whenever the app is reached over HTTPS).
    pub fn secure_cookies(mut self, secure: bool) -> Self {
        self.config.secure_cookies = secure;
        self
    }

    /// The `iss` claim of every token (default `latchkey`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.config.issuer = issuer.into();
        self
    }

    /// The `aud` claim of access tokens; others are then refused.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.config.audience = Some(audience.into());
        self
    }

    /// Roles accounts may hold besides `user` and `admin`, for the app's own
    /// [`RequireRole`](crate::http::RequireRole) guards.
    pub fn extra_roles<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Self {
        self.config.extra_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Origins of browser apps allowed to call with credentials (CORS and
    /// the CSRF allow-list); checked by [`build`](ConfigBuilder::build).
    pub fn cors_origins<S: Into<String>>(mut self, origins: impl IntoIterator<Item = S>) -> Self {
        self.origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Reverse proxies whose forwarding headers are believed.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        self.config.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// How access tokens are signed (default: EdDSA, or HS256 with a JWT secret).
    pub fn signing_alg(mut self, alg: SigningAlg) -> Self {
        self.config.signing_alg = Some(alg);
        self
    }

    /// The HMAC secret of access tokens (else generated and kept in the data dir).
    pub fn jwt_secret(mut self, secret: Secret) -> Self {
        self.config.jwt_secret = Some(secret);
        self
    }

    /// The HMAC secret of refresh tokens (else generated and kept in the data dir).
    pub fn refresh_secret(mut self, secret: Secret) -> Self {
        self.config.refresh_secret = Some(secret);
        self
    }

    /// How many password hashes run at once (default: the number of cores).
    pub fn hash_concurrency(mut self, threads: u16) -> Self {
        self.config.hash_concurrency = Some(threads);
        self
    }

    /// Serve `GET /metrics` from [`http::app`](crate::http::app) (default on).
    pub fn metrics(mut self, metrics: Switch) -> Self {
        self.config.metrics = metrics;
        self
    }

    /// Rate limits on or off (default on; off only for tests).
    pub fn rate_limits(mut self, limits: Switch) -> Self {
        self.config.limits.enabled = limits;
        self
    }

    /// Where latchkey is reached from outside, for the links in its mails.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// PostgreSQL instead of sled (`postgres://…`), with the master key
    /// that seals the secrets kept there (at least 32 bytes, the same for
    /// every node).
    pub fn database(mut self, url: Secret, master_key: Secret) -> Self {
        self.config.database_url = Some(url);
        self.config.master_key = Some(master_key);
        self
    }

    /// The SMTP relay (`smtp://…`, `smtps://…`); without it, mails are
    /// written to `<data-dir>/outbox-files/`.
    pub fn smtp_url(mut self, url: Secret) -> Self {
        self.config.smtp_url = Some(url);
        self
    }

    /// The sender of latchkey's mail.
    pub fn mail_from(mut self, from: impl Into<String>) -> Self {
        self.config.mail_from = from.into();
        self
    }

    /// Any other setting, on the [`Config`] itself.
    pub fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// The configuration, once every setting makes sense.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the first setting
    /// that does not (see [`Config::validate`]).
    pub fn build(self) -> Result<Config, crate::error::Error> {
        let mut config = self.config;
        for origin in self.origins {
            let origin = parse_origin(&origin)
                .map_err(|err| crate::error::Error::Config(format!("--cors-origins: {err}")))?;
            config.cors_origins.push(origin);
        }
        if let Some(url) = self.public_url {
            config.public_url = Some(
                parse_public_url(&url)
                    .map_err(|err| crate::error::Error::Config(format!("--public-url: {err}")))?,
            );
        }
        config.validate()?;
        Ok(config)
    }
}

/// A feature turned on or off (rate limits, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

/// The rate limits (per client IP and per account), all with sane defaults.
#[derive(Debug, Clone, Args)]
pub struct RateLimits {
    /// `on` or `off`: `off` disables every limit below.
    #[arg(
        long = "rate-limits",
        env = "LATCHKEY_RATE_LIMITS",
        value_enum,
        default_value = "on"
    )]
    pub enabled: Switch,
    /// Login attempts per client IP.
    #[arg(long = "rate-login-ip", env = "LATCHKEY_RATE_LOGIN_IP", default_value = DEFAULT_LOGIN_IP_RATE)]
    pub login_ip: Rate,
    /// Login attempts per account (email), as comma-separated tiers: every
    /// tier must allow the attempt, so failures slow down progressively.
    #[arg(long = "rate-login-account", env = "LATCHKEY_RATE_LOGIN_ACCOUNT", value_delimiter = ',', default_value = DEFAULT_LOGIN_ACCOUNT_RATE)]
    pub login_account: Vec<Rate>,
    /// Registrations per client IP.
    #[arg(long = "rate-register-ip", env = "LATCHKEY_RATE_REGISTER_IP", default_value = DEFAULT_REGISTER_IP_RATE)]
    pub register_ip: Rate,
    /// Refreshes per client IP.
    #[arg(long = "rate-refresh-ip", env = "LATCHKEY_RATE_REFRESH_IP", default_value = DEFAULT_REFRESH_IP_RATE)]
    pub refresh_ip: Rate,
    /// Mail requests (password resets, verification resends, email
    /// changes) per client IP; over it the answer is the same, no mail goes.
    #[arg(long = "rate-mail-ip", env = "LATCHKEY_RATE_MAIL_IP", default_value = DEFAULT_MAIL_IP_RATE)]
    pub mail_ip: Rate,
    /// Mails per target address; over it the answer is the same, no mail goes.
    #[arg(long = "rate-mail-account", env = "LATCHKEY_RATE_MAIL_ACCOUNT", default_value = DEFAULT_MAIL_ACCOUNT_RATE)]
    pub mail_account: Rate,
}

impl RateLimits {
    /// Every limit off.
    pub fn off() -> Self {
        RateLimits {
            enabled: Switch::Off,
            ..RateLimits::default()
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        let rate = |text: &str| Rate::from_str(text).expect("invariant: default rates parse");
        RateLimits {
            enabled: Switch::On,
            login_ip: rate(DEFAULT_LOGIN_IP_RATE),
            login_account: DEFAULT_LOGIN_ACCOUNT_RATE.split(',').map(rate).collect(),
            register_ip: rate(DEFAULT_REGISTER_IP_RATE),
            refresh_ip: rate(DEFAULT_REFRESH_IP_RATE),
            mail_ip: rate(DEFAULT_MAIL_IP_RATE),
            mail_account: rate(DEFAULT_MAIL_ACCOUNT_RATE),
        }
    }
}

/// What one client's sockets may cost: caps on open connections and the
/// time each part of a request may take.
#[derive(Debug, Clone, Args)]
pub struct ConnectionLimits {
    /// Open connections at most; at the cap a new one takes the place of
    /// the one that waited longest without a request (or idled longest), and
    /// waits in the kernel's backlog only while every one is busy. Lowered at
    /// start to what the open-file limit allows.
    #[arg(long = "max-connections", env = "LATCHKEY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,
    /// Open connections from one client address at most (trusted proxies
    /// are exempt); beyond it new ones are closed at once.
    #[arg(long = "max-connections-per-ip", env = "LATCHKEY_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: u32,
    /// Time to send a whole request head (and the TLS handshake); a new
    /// connection (HTTP/2 included) that sends no request, and an idle
    /// HTTP/1.1 keep-alive connection, are closed after it.
    #[arg(long = "header-timeout", env = "LATCHKEY_HEADER_TIMEOUT", default_value = DEFAULT_HEADER_TIMEOUT, value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Time to send a whole request body; a slower one gets 408.
    #[arg(long = "body-timeout", env = "LATCHKEY_BODY_TIMEOUT", default_value = DEFAULT_BODY_TIMEOUT, value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Time a connection (HTTP/2 included) may sit with no request after
    /// its last one before it is closed.
    #[arg(long = "idle-timeout", env = "LATCHKEY_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        let duration = |text: &str| {
            humantime::parse_duration(text).expect("invariant: default durations parse")
        };
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            header_timeout: duration(DEFAULT_HEADER_TIMEOUT),
            body_timeout: duration(DEFAULT_BODY_TIMEOUT),
            idle_timeout: duration(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// An allowed browser origin: `scheme://host[:port]`, no path, never `*`
/// (credentials must never be allowed for every origin).
/// A public URL: `http(s)://host[:port][/path]`, without a trailing slash,
/// query or fragment.
fn parse_public_url(text: &str) -> Result<String, String> {
    let url = text.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || rest.contains(['?', '#', ' ', '"', '<', '>', '\\'])
        || rest.chars().any(char::is_control)
    {
        return Err(format!(
            "{text:?} must be http(s)://host[:port][/path], without a query"
        ));
    }
    Ok(url.to_owned())
}

fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim().trim_end_matches('/');
    if origin == "*" {
        return Err(
            "`*` cannot be allowed: latchkey's cookies are credentials; list the origins".into(),
        );
    }
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| format!("{origin:?} is not an origin like https://app.example.com"))?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '*', '?', '#'])
    {
        return Err(format!(
            "{origin:?} is not an origin like https://app.example.com"
        ));
    }
    Ok(origin.to_ascii_lowercase())
}

impl Default for Config {
    fn default() -> Self {
        let duration = |text: &str| {
            humantime::parse_duration(text).expect("invariant: default durations parse")
        };
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            access_ttl: duration(DEFAULT_ACCESS_TTL),
            refresh_ttl: duration(DEFAULT_REFRESH_TTL),
            session_max_age: duration(DEFAULT_SESSION_MAX_AGE),
            sweep_interval: duration(DEFAULT_SWEEP_INTERVAL),
            secure_cookies: false,
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: None,
            hash_concurrency: None,
            hash_queue: DEFAULT_HASH_QUEUE,
            hash_queue_timeout: duration(DEFAULT_HASH_QUEUE_TIMEOUT),
            db_cache_mib: DEFAULT_DB_CACHE_MIB,
            reuse_grace: duration(DEFAULT_REUSE_GRACE),
            audit_retention: duration(DEFAULT_AUDIT_RETENTION),
            limits: RateLimits::default(),
            connections: ConnectionLimits::default(),
            metrics: Switch::On,
            public_url: None,
            email_link_base: None,
            webauthn_origin: None,
            webauthn_rp_id: None,
            mail_from: DEFAULT_MAIL_FROM.to_owned(),
            verify_ttl: duration(DEFAULT_VERIFY_TTL),
            reset_ttl: duration(DEFAULT_RESET_TTL),
            require_verified_email: false,
            smtp_url: None,
            extra_roles: Vec::new(),
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            signing_alg: None,
            jwt_secret: None,
            refresh_secret: None,
            database_url: None,
            master_key: None,
            db_pool_size: DEFAULT_DB_POOL_SIZE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused_naming_the_flag() {
        Config::default().validate().expect("defaults are valid");
        let huge = Duration::from_secs(18_446_744_073_709_551_000);
        let cases: Vec<(&str, Config)> = vec![
            (
                "--access-ttl",
                Config {
                    access_ttl: huge,
                    ..Config::default()
                },
            ),
            (
                "--access-ttl",
                Config {
                    access_ttl: Duration::ZERO,
                    ..Config::default()
                },
            ),
            (
                "--refresh-ttl",
                Config {
                    refresh_ttl: Duration::from_secs(60),
                    ..Config::default()
                },
            ),
            (
                "--refresh-ttl",
                Config {
                    refresh_ttl: huge,
                    ..Config::default()
                },
            ),
            (
                "--reuse-grace",
                Config {
                    reuse_grace: Duration::from_secs(100 * 365 * 86_400),
                    ..Config::default()
                },
            ),
            (
                "--sweep-interval",
                Config {
                    sweep_interval: Duration::ZERO,
                    ..Config::default()
                },
            ),
            (
                "--session-max-age",
                Config {
                    session_max_age: Duration::from_secs(3600),
                    ..Config::default()
                },
            ),
            (
                "--hash-concurrency",
                Config {
                    hash_concurrency: Some(1000),
                    ..Config::default()
                },
            ),
            (
                "--reset-ttl",
                Config {
                    reset_ttl: Duration::ZERO,
                    ..Config::default()
                },
            ),
            (
                "--verify-ttl",
                Config {
                    verify_ttl: huge,
                    ..Config::default()
                },
            ),
            (
                "--public-url",
                Config {
                    public_url: Some("javascript:alert(1)".into()),
                    ..Config::default()
                },
            ),
            (
                "--email-link-base",
                Config {
                    email_link_base: Some("https://app.example/x?next=evil".into()),
                    ..Config::default()
                },
            ),
        ];
        for (flag, config) in cases {
            let refused = config.validate().expect_err(flag).to_string();
            assert!(refused.contains(flag), "{refused}");
            assert_eq!(refused.lines().count(), 1, "{refused}");
        }
    }

    #[test]
    fn rates_parse_and_bad_ones_are_refused() {
        let rate: Rate = "5/1m".parse().expect("parses");
        assert_eq!(
            rate,
            Rate {
                count: 5,
                per: Duration::from_secs(60)
            }
        );
        for bad in ["5", "0/1m", "5/0s", "x/1m", "5/soon"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn cors_origins_must_be_origins_and_never_a_wildcard() {
        assert_eq!(
            parse_origin("https://App.example.com/").as_deref(),
            Ok("https://app.example.com")
        );
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://*.example.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} should be refused");
        }
    }
}
