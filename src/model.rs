//! Latchkey's vocabulary: users, refresh-token records, validated input
//! newtypes, the redacting [`Secret`] wrapper and the injectable [`Clock`].
//!
//! No I/O lives here and nothing here depends on another latchkey module
//! except `error`.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// Seconds since the Unix epoch; the unit of every timestamp latchkey stores.
pub type UnixTime = u64;

/// Formats a [`UnixTime`] as an RFC 3339 UTC timestamp (`2026-11-27T08:10:25Z`).
pub fn format_time(time: UnixTime) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(time)).to_string()
}

/// Where latchkey reads the time. By default the system clock; tests use a
/// manual clock to mint tokens "in the past" instead of sleeping.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: UnixTime) -> Self {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(start))),
        }
    }

    /// The current time in seconds since the Unix epoch.
    pub fn now(&self) -> UnixTime {
        match &self.manual {
            Some(time) => time.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0),
        }
    }

    /// Moves a manual clock forward; does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(time) = &self.manual {
            time.fetch_add(by.as_secs(), Ordering::SeqCst);
        }
    }
}

/// A string that must never be printed: a password, a token or a key.
/// `Debug` shows `Secret([redacted])`; read it only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive string.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The sensitive value; call it only where the value is used, never to log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A mailbox address in its one canonical form, so that addresses that look
/// alike are one account: trimmed, NFKC-normalized (fullwidth `ａ` is `a`),
/// lower-cased, the domain in ASCII (an internationalized domain as its
/// `xn--` form, so a Cyrillic look-alike is a visibly different string).
/// Only plain mailboxes: an ASCII dot-atom local part (no quoted strings, no
/// invisible characters) at a DNS name of two labels or more (no IP
/// literals); at most 254 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Longest address SMTP can carry (RFC 5321 path limit minus the brackets).
    pub const MAX_LEN: usize = 254;

    /// Validates and normalizes an email address.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the `email` field.
    pub fn parse(raw: &str) -> Result<Email> {
        let folded: String = raw.trim().nfkc().collect::<String>().to_lowercase();
        if folded.is_empty() {
            return Err(invalid("email: required"));
        }
        if folded.chars().count() > Self::MAX_LEN {
            return Err(invalid("email: must be at most 254 characters"));
        }
        let (local, domain) = folded
            .rsplit_once('@')
            .ok_or_else(|| invalid("email: not an address like name@example.com"))?;
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        let dot_atom = !local.is_empty()
            && local.len() <= 64
            && local
                .split('.')
                .all(|atom| !atom.is_empty() && atom.chars().all(atext));
        if !dot_atom {
            return Err(invalid(
                "email: the part before @ may hold only ASCII letters, digits, dots and !#$%&'*+/=?^_`{|}~- (no quotes, spaces or invisible characters)",
            ));
        }
        let domain = idna::domain_to_ascii_strict(domain)
            .map_err(|_| invalid("email: the domain is not a valid host name"))?;
        let labels: Vec<&str> = domain.split('.').collect();
        let top = labels.last().copied().unwrap_or_default();
        if labels.len() < 2 || top.is_empty() || top.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid(
                "email: the domain must be a host name like example.com (no IP addresses)",
            ));
        }
        let email = format!("{local}@{domain}");
        if email.len() > Self::MAX_LEN {
            return Err(invalid("email: must be at most 254 characters"));
        }
        Ok(Email(email))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A username: 3 to 32 characters of `[A-Za-z0-9_.-]`, case kept for display,
/// unique case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Validates a username.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the `username` field.
    pub fn parse(raw: &str) -> Result<Username> {
        // NFKC first, so a fullwidth `ａｌｉｃｅ` is `alice` (and taken if she is).
        let name: String = raw.trim().nfkc().collect();
        let length = name.chars().count();
        if !(3..=32).contains(&length) {
            return Err(invalid("username: must be 3 to 32 characters"));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if !name.chars().all(allowed) {
            return Err(invalid(
                "username: may contain only ASCII letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Username(name))
    }

    /// The username as the user typed it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which uniqueness is enforced (lower-cased).
    pub fn key(&self) -> String {
        username_key(&self.0)
    }
}

/// The uniqueness key of a username: usernames differing only in case clash.
fn username_key(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// A candidate password: 8 to 128 characters (Unicode scalar values, as
/// typed), no composition rules (NIST 800-63B). It is hashed and checked in
/// NFKC form (NIST 800-63B §5.1.1.2), so the same password typed as composed
/// or decomposed characters, or in fullwidth, is the same password.
#[derive(Clone)]
pub struct Password {
    normalized: Secret,
    /// The password as typed, when NFKC changed it: a hash made before
    /// passwords were normalized is checked against it too.
    as_typed: Option<Secret>,
}

impl Password {
    /// Shortest accepted password.
    pub const MIN_CHARS: usize = 8;
    /// Longest accepted password; bounds the hashing work one request can ask for.
    pub const MAX_CHARS: usize = 128;

    /// Validates a password's length (field `password`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the `password` field.
    pub fn parse(raw: &str) -> Result<Password> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(invalid("password: must be at least 8 characters"));
        }
        Password::presented(raw)
    }

    /// Accepts any password a user might have set, for checking at login:
    /// 1 to 128 characters. The length policy is applied when a password is
    /// set, not when one is presented.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the `password` field.
    pub fn presented(raw: &str) -> Result<Password> {
        if raw.is_empty() {
            return Err(invalid("password: required"));
        }
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(invalid("password: must be at most 128 characters"));
        }
        let normalized: String = raw.nfkc().collect();
        let as_typed = (normalized != raw).then(|| Secret::new(raw));
        Ok(Password {
            normalized: Secret::new(normalized),
            as_typed,
        })
    }

    /// The password in NFKC form: what is hashed and checked.
    pub fn expose(&self) -> &str {
        self.normalized.expose()
    }

    /// The password as typed, if NFKC changed it (for hashes made before
    /// normalization).
    pub fn as_typed(&self) -> Option<&str> {
        self.as_typed.as_ref().map(Secret::expose)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

fn invalid(message: &str) -> Error {
    Error::InvalidInput(message.to_owned())
}

/// A registered user as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Random UUID, the `sub` of every token.
    pub id: String,
    /// Display form of the username.
    pub username: String,
    /// Normalized (lower-case) email address.
    pub email: String,
    /// The argon2id PHC string; never returned or logged.
    pub password_hash: String,
    /// When the account was created.
    pub created_at: UnixTime,
    /// The user's roles (carried in access tokens as `roles`).
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    /// A disabled user cannot log in or refresh.
    #[serde(default)]
    pub disabled: bool,
    /// Copied into every session at its start. Bumping it ends, at once and
    /// without a race, every session started before: a session whose stamp
    /// differs from its user's is dead (password change, disable, revoke-all).
    #[serde(default)]
    pub security_stamp: u64,
    /// Bumped whenever the password is set (not when it is re-hashed). A
    /// login checks, when it stores its session, that the password it
    /// verified is still the current one.
    #[serde(default)]
    pub password_version: u64,
    /// Whether the user has proven they read mail at `email` (a
    /// verification link, a password reset, a confirmed email change).
    #[serde(default)]
    pub email_verified: bool,
    /// Which second factors and passkeys the account has (kept in step
    /// with its second factors in the same transaction).
    #[serde(default)]
    pub mfa: MfaSummary,
    /// Bumped by each password reset by email (not by a change made while
    /// signed in): a run of wrong second-factor codes counts within one.
    #[serde(default)]
    pub password_resets: u64,
}

/// What an account has besides its password: the summary on [`User`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaSummary {
    /// Whether a confirmed TOTP factor guards the password login.
    pub totp: bool,
    /// How many passkeys can sign in to the account.
    pub passkeys: u32,
}

impl User {
    /// A new, enabled account.
    pub fn new(
        id: String,
        username: &Username,
        email: &Email,
        password_hash: String,
        roles: Vec<String>,
        now: UnixTime,
    ) -> User {
        User {
            id,
            username: username.as_str().to_owned(),
            email: email.as_str().to_owned(),
            password_hash,
            created_at: now,
            roles,
            disabled: false,
            security_stamp: 0,
            password_version: 0,
            email_verified: false,
            mfa: MfaSummary::default(),
            password_resets: 0,
        }
    }

    /// The key under which the username's uniqueness is enforced.
    pub fn username_key(&self) -> String {
        username_key(&self.username)
    }

    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// Ends every session of the user started before now (they keep the
    /// old stamp).
    pub fn end_sessions(&mut self) {
        self.security_stamp = self.security_stamp.wrapping_add(1);
    }

    /// Replaces the password hash, provided the password is still the one
    /// verified at `seen_version`; ends every session.
    ///
    /// # Errors
    /// [`Error::InvalidCredentials`] when the password changed since it was
    /// verified (two changes raced: the later one presented a stale password).
    pub fn set_password(&mut self, password_hash: String, seen_version: u64) -> Result<()> {
        if self.password_version != seen_version {
            return Err(Error::InvalidCredentials);
        }
        self.password_hash = password_hash;
        self.password_version = self.password_version.wrapping_add(1);
        self.end_sessions();
        Ok(())
    }
}

/// The role every new account gets.
pub const DEFAULT_ROLE: &str = "user";
/// The role of the admin API.
pub const ADMIN_ROLE: &str = "admin";

fn default_roles() -> Vec<String> {
    vec![DEFAULT_ROLE.to_owned()]
}

/// Whether `role` is a well-formed role name: 1 to 32 characters of `[a-z0-9_.-]`.
pub fn is_role_name(role: &str) -> bool {
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
    !role.is_empty() && role.len() <= 32 && role.chars().all(allowed)
}

/// Validates an account's roles: 1 to 16 known roles (`user`, `admin` and
/// the deployment's `extra` ones), `user` among them (every account keeps
/// it); duplicates are dropped, order kept.
///
/// # Errors
/// [`Error::InvalidInput`] naming the `roles` field.
pub fn parse_roles<S: AsRef<str>>(raw: &[S], extra: &[String]) -> Result<Vec<String>> {
    if raw.len() > 16 {
        return Err(invalid("roles: must list 1 to 16 roles"));
    }
    let mut roles: Vec<String> = Vec::new();
    for role in raw {
        let role = role.as_ref().trim();
        let known = role == DEFAULT_ROLE || role == ADMIN_ROLE || extra.iter().any(|e| e == role);
        if !known {
            let mut names = vec![DEFAULT_ROLE.to_owned(), ADMIN_ROLE.to_owned()];
            names.extend(extra.iter().cloned());
            return Err(Error::InvalidInput(format!(
                "roles: {role:?} is not a known role (known: {}; add more with --extra-roles)",
                names.join(", ")
            )));
        }
        if !roles.iter().any(|held| held == role) {
            roles.push(role.to_owned());
        }
    }
    if roles.is_empty() || roles.len() > 16 {
        return Err(invalid("roles: must list 1 to 16 roles"));
    }
    if !roles.iter().any(|role| role == DEFAULT_ROLE) {
        return Err(invalid("roles: every account keeps the user role"));
    }
    Ok(roles)
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("email", &self.email)
            .field("created_at", &self.created_at)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("security_stamp", &self.security_stamp)
            .field("password_version", &self.password_version)
            .finish_non_exhaustive()
    }
}

/// Where a request came from, recorded with each session.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's IP address (the socket peer, or the forwarded client
    /// when the peer is a trusted proxy).
    pub ip: Option<IpAddr>,
    /// The client's `User-Agent` header, truncated.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// Longest user agent kept; the rest is dropped so one client cannot bloat the store.
    pub const MAX_USER_AGENT: usize = 256;

    /// Builds client info, truncating an overlong user agent.
    pub fn new(ip: Option<IpAddr>, user_agent: Option<&str>) -> Self {
        ClientInfo {
            ip,
            user_agent: user_agent.map(|agent| agent.chars().take(Self::MAX_USER_AGENT).collect()),
        }
    }
}

/// The blake3 digest under which a refresh token is stored (computed by
/// `tokens`, the only importer of blake3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

/// Stored as 64 hex digits.
impl Serialize for TokenDigest {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        serializer.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for TokenDigest {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        let mut digest = [0u8; 32];
        let pairs = hex.as_bytes().chunks(2);
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(serde::de::Error::custom("a token digest is 64 hex digits"));
        }
        for (byte, pair) in digest.iter_mut().zip(pairs) {
            let pair = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            *byte = u8::from_str_radix(pair, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(TokenDigest(digest))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not secret, but eight bytes are enough to correlate logs.
        let short: String = self.0[..8].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "TokenDigest({short}…)")
    }
}

/// What latchkey stores for one refresh token, keyed by the token's blake3
/// digest (the token itself is never stored).
///
/// A login starts a family (`family_id`); every rotation adds a record to the
/// same family. A record is live while `revoked_at` is `None` and
/// `expires_at` is in the future.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshRecord {
    /// The user the token was issued to.
    pub user_id: String,
    /// The token's `jti` claim.
    pub jti: String,
    /// The session this token belongs to (one family per login).
    pub family_id: String,
    /// When the token was issued.
    pub created_at: UnixTime,
    /// When the token stops being accepted.
    pub expires_at: UnixTime,
    /// When the token was rotated or logged out, if it was.
    pub revoked_at: Option<UnixTime>,
    /// The `jti` of the token that replaced this one at rotation.
    pub replaced_by: Option<String>,
    /// The digest of the token that replaced this one, so that a client
    /// retrying within the reuse grace is handed that same token again
    /// (records rotated by versions before it lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<TokenDigest>,
    /// The client that obtained the token.
    pub client: ClientInfo,
}

impl RefreshRecord {
    /// The record of a freshly issued token.
    pub fn issued(
        user_id: &str,
        jti: &str,
        family_id: &str,
        now: UnixTime,
        expires_at: UnixTime,
        client: &ClientInfo,
    ) -> RefreshRecord {
        RefreshRecord {
            user_id: user_id.to_owned(),
            jti: jti.to_owned(),
            family_id: family_id.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
            replaced_by: None,
            successor: None,
            client: client.clone(),
        }
    }

    /// Whether the token may still be exchanged at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    /// When the token was rotated out (revoked with a successor), if it was.
    pub fn rotated_at(&self) -> Option<UnixTime> {
        self.revoked_at.filter(|_| self.replaced_by.is_some())
    }

    /// Marks the token rotated out in favour of the token `successor_jti`
    /// whose digest is `successor`.
    pub fn rotate(&mut self, now: UnixTime, successor_jti: &str, successor: TokenDigest) {
        self.revoked_at = Some(now);
        self.replaced_by = Some(successor_jti.to_owned());
        self.successor = Some(successor);
    }
}

/// A session: one refresh-token family, started by a login and continued by
/// every rotation. It is the authority on whether the family is alive: a
/// refresh token is accepted only while its own record *and* its session are
/// live, and access tokens carry the session id (`sid`) so latchkey's own
/// routes refuse them once the session is revoked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The family id (`fam` of refresh tokens, `sid` of access tokens).
    pub id: String,
    /// The user who logged in.
    pub user_id: String,
    /// When the login happened.
    pub created_at: UnixTime,
    /// When a refresh token of the family was last exchanged.
    pub last_used_at: UnixTime,
    /// When the family's newest refresh token expires (slides with each rotation).
    pub expires_at: UnixTime,
    /// The client of the most recent login or refresh.
    pub client: ClientInfo,
    /// When the session was revoked, if it was.
    pub revoked_at: Option<UnixTime>,
    /// Why it was revoked.
    pub revoked_reason: Option<RevokeReason>,
    /// The user's security stamp when the session started; once the user's
    /// stamp moves on, the session is dead (see [`User::security_stamp`]).
    #[serde(default)]
    pub stamp: u64,
    /// How the login proved who it was (RFC 8176 `amr` values), carried in
    /// every access token of the session. Sessions stored before second
    /// factors existed were password logins.
    #[serde(default = "password_only")]
    pub amr: Vec<String>,
}

fn password_only() -> Vec<String> {
    vec![Amr::Pwd.as_str().to_owned()]
}

/// An authentication method reference (RFC 8176) as latchkey uses them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amr {
    /// A password.
    Pwd,
    /// A one-time code (TOTP or a recovery code).
    Otp,
    /// More than one factor.
    Mfa,
    /// A key held in hardware (a device-bound passkey).
    Hwk,
    /// A key held in software (a synced passkey).
    Swk,
}

impl Amr {
    /// The RFC 8176 value.
    pub fn as_str(self) -> &'static str {
        match self {
            Amr::Pwd => "pwd",
            Amr::Otp => "otp",
            Amr::Mfa => "mfa",
            Amr::Hwk => "hwk",
            Amr::Swk => "swk",
        }
    }

    /// A list of methods as stored and carried in tokens.
    pub fn list(methods: &[Amr]) -> Vec<String> {
        methods
            .iter()
            .map(|method| method.as_str().to_owned())
            .collect()
    }
}

impl Session {
    /// A session starting now for `user`, until `expires_at` (its first
    /// refresh token's expiry).
    pub fn start(
        id: String,
        user: &User,
        now: UnixTime,
        expires_at: UnixTime,
        client: &ClientInfo,
        amr: Vec<String>,
    ) -> Session {
        Session {
            id,
            user_id: user.id.clone(),
            created_at: now,
            last_used_at: now,
            expires_at,
            client: client.clone(),
            revoked_at: None,
            revoked_reason: None,
            stamp: user.security_stamp,
            amr,
        }
    }

    /// Whether the session is neither revoked nor expired at `now`.
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }

    /// Whether the session is live at `now` for `user` as stored now: it is
    /// theirs, the user is enabled and has not ended their sessions since
    /// this one started.
    pub fn is_live_for(&self, user: &User, now: UnixTime) -> bool {
        self.user_id == user.id
            && self.stamp == user.security_stamp
            && !user.disabled
            && self.is_live(now)
    }

    /// Records a use of the session's refresh token at `now` by `client`;
    /// the session now lives at least until `expires_at`.
    pub fn touch(&mut self, now: UnixTime, expires_at: UnixTime, client: &ClientInfo) {
        self.last_used_at = now;
        self.expires_at = self.expires_at.max(expires_at);
        self.client = client.clone();
    }

    /// Marks the session revoked (keeps the first revocation if already revoked).
    pub fn revoke(&mut self, now: UnixTime, reason: RevokeReason) {
        if self.revoked_at.is_none() {
            self.revoked_at = Some(now);
            self.revoked_reason = Some(reason);
        }
    }
}

/// Why a session ended early.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// A rotated refresh token was presented after the reuse grace: presumed theft.
    Reuse,
    /// The user revoked it (one session, or all of them).
    User,
    /// The user changed their password.
    PasswordChange,
    /// An administrator revoked it or disabled the account.
    Admin,
}

/// What kind of security event an [`AuditEvent`] records.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// An account was created.
    Register,
    /// A login succeeded (a session started).
    LoginSucceeded,
    /// A login failed; `detail` says why (never the password).
    LoginFailed,
    /// A refresh token was rotated.
    Refresh,
    /// A rotated refresh token was presented again inside the reuse grace and
    /// answered with a fresh pair.
    RefreshRaced,
    /// A rotated refresh token was presented after the grace: the family was revoked.
    ReuseDetected,
    /// A session was ended by logout.
    Logout,
    /// Sessions were revoked by the user or an administrator.
    SessionsRevoked,
    /// A request was refused by a rate limit.
    RateLimited,
    /// A password was changed.
    PasswordChanged,
    /// An account was deleted.
    AccountDeleted,
    /// An administrator changed an account (roles, disabled).
    AccountChanged,
    /// A disabled account presented the right password.
    LoginRefused,
    /// A verification mail was queued.
    VerificationSent,
    /// An address was verified.
    EmailVerified,
    /// A password reset was asked for an existing account (the mail is queued).
    PasswordResetRequested,
    /// A password was reset with a mailed token.
    PasswordReset,
    /// An email change was asked for (a confirmation mail is queued).
    EmailChangeRequested,
    /// An email change was confirmed.
    EmailChanged,
    /// A mail could not be delivered; `detail` says why and whether it
    /// will be retried.
    MailFailed,
    /// A password login was answered with a second-factor challenge.
    MfaChallenged,
    /// A TOTP factor was confirmed (second factors are now required).
    TotpEnabled,
    /// The TOTP factor was removed by its user.
    TotpDisabled,
    /// A new set of recovery codes replaced the old one.
    RecoveryCodesRenewed,
    /// A recovery code was used (`detail` says how many are left).
    RecoveryCodeUsed,
    /// A passkey was registered.
    PasskeyAdded,
    /// A passkey was removed.
    PasskeyRemoved,
    /// A passkey was presented with a sign counter that did not move
    /// forward: it may have been cloned.
    PasskeyCounterRegressed,
    /// An administrator removed every second factor and passkey.
    MfaReset,
}

impl AuditKind {
    /// The snake_case name used in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Register => "register",
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::Refresh => "refresh",
            AuditKind::RefreshRaced => "refresh_raced",
            AuditKind::ReuseDetected => "reuse_detected",
            AuditKind::Logout => "logout",
            AuditKind::SessionsRevoked => "sessions_revoked",
            AuditKind::RateLimited => "rate_limited",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::AccountDeleted => "account_deleted",
            AuditKind::AccountChanged => "account_changed",
            AuditKind::LoginRefused => "login_refused",
            AuditKind::VerificationSent => "verification_sent",
            AuditKind::EmailVerified => "email_verified",
            AuditKind::PasswordResetRequested => "password_reset_requested",
            AuditKind::PasswordReset => "password_reset",
            AuditKind::EmailChangeRequested => "email_change_requested",
            AuditKind::EmailChanged => "email_changed",
            AuditKind::MailFailed => "mail_failed",
            AuditKind::MfaChallenged => "mfa_challenged",
            AuditKind::TotpEnabled => "totp_enabled",
            AuditKind::TotpDisabled => "totp_disabled",
            AuditKind::RecoveryCodesRenewed => "recovery_codes_renewed",
            AuditKind::RecoveryCodeUsed => "recovery_code_used",
            AuditKind::PasskeyAdded => "passkey_added",
            AuditKind::PasskeyRemoved => "passkey_removed",
            AuditKind::PasskeyCounterRegressed => "passkey_counter_regressed",
            AuditKind::MfaReset => "mfa_reset",
        }
    }
}

/// One entry of the audit log. Never holds a password, token or secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened.
    pub at: UnixTime,
    /// What happened.
    pub kind: AuditKind,
    /// The user concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session (refresh-token family) concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A short reason or detail (`wrong_password`, `login/ip`, `revoked=3`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` at `at`, caused by `client`; name the user, the
    /// session and a detail with the builder methods.
    pub fn new(kind: AuditKind, at: UnixTime, client: &ClientInfo) -> AuditEvent {
        AuditEvent {
            at,
            kind,
            user_id: None,
            session_id: None,
            ip: client.ip.map(|ip| ip.to_string()),
            user_agent: client.user_agent.clone(),
            detail: None,
        }
    }

    /// The user concerned.
    pub fn user(mut self, user_id: &str) -> Self {
        self.user_id = Some(user_id.to_owned());
        self
    }

    /// The session concerned.
    pub fn session(mut self, session_id: &str) -> Self {
        self.session_id = Some(session_id.to_owned());
        self
    }

    /// A short reason or detail; never a credential.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let email = Email::parse("  Alice@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "alice@example.com");
    }

    #[test]
    fn email_without_at_or_with_display_text_is_refused() {
        for raw in [
            "alice",
            "alice@",
            "@example.com",
            "Alice <alice@example.com>",
            "",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be refused");
        }
    }

    #[test]
    fn look_alike_and_odd_addresses_are_folded_or_refused() {
        // Folded into the plain form (so they clash with it).
        for (raw, canonical) in [
            ("\u{ff41}lice@example.com", "alice@example.com"),
            ("ALICE@EXAMPLE.COM", "alice@example.com"),
            ("alice@b\u{fc}cher.example", "alice@xn--bcher-kva.example"),
            ("alice@exam\u{00ad}ple.com", "alice@example.com"),
        ] {
            assert_eq!(
                Email::parse(raw).map(|e| e.0).ok().as_deref(),
                Some(canonical),
                "{raw:?}"
            );
        }
        // A Cyrillic look-alike domain is kept apart as its xn-- form.
        let cyrillic = Email::parse("alice@\u{0435}xample.com").expect("an IDN domain");
        assert!(cyrillic.as_str().contains("xn--"), "{cyrillic:?}");
        for raw in [
            "\u{0430}lice@example.com",
            "carol\u{200b}@example.com",
            "\"x@evil.com\"@example.com",
            "hank@127.0.0.1",
            "hank@[127.0.0.1]",
            "hank@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a b@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be refused");
        }
    }

    #[test]
    fn a_password_is_the_same_however_its_characters_are_composed() {
        let composed = Password::parse("caf\u{e9} au lait").expect("valid");
        let decomposed = Password::parse("cafe\u{301} au lait").expect("valid");
        assert_eq!(composed.expose(), decomposed.expose());
        assert_eq!(composed.as_typed(), None);
        assert_eq!(decomposed.as_typed(), Some("cafe\u{301} au lait"));
        let fullwidth = Username::parse("\u{ff41}lice").expect("folded");
        assert_eq!(fullwidth.as_str(), "alice");
    }

    #[test]
    fn email_longer_than_254_is_refused() {
        let raw = format!("{}@example.com", "a".repeat(250));
        assert!(matches!(Email::parse(&raw), Err(Error::InvalidInput(m)) if m.contains("254")));
    }

    #[test]
    fn username_rules_hold() {
        assert!(Username::parse("al").is_err());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("ålice").is_err());
        let name = Username::parse("Alice.B-c_9").expect("valid");
        assert_eq!(name.key(), "alice.b-c_9");
    }

    #[test]
    fn password_length_counts_characters_not_bytes() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("ééééééé").is_err());
        assert!(Password::parse("éééééééé").is_ok());
        assert!(Password::parse(&"x".repeat(129)).is_err());
        assert!(Password::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn secrets_and_passwords_are_redacted_in_debug() {
        let secret = Secret::new("hunter2hunter2");
        let password = Password::parse("hunter2hunter2").expect("valid");
        assert!(!format!("{secret:?}{password:?}").contains("hunter2"));
    }

    #[test]
    fn roles_are_validated_and_deduplicated() {
        let extra = ["auditor".to_owned()];
        assert_eq!(
            parse_roles(&["admin", "user", "admin"], &extra).expect("valid"),
            ["admin", "user"]
        );
        assert_eq!(
            parse_roles(&["user", "auditor"], &extra).expect("valid"),
            ["user", "auditor"]
        );
        for bad in [
            vec![],
            vec!["Admin"],
            vec!["a b"],
            vec![""],
            vec!["false", "true"],
            vec!["admin"],
            vec!["user", "superuser"],
            vec!["user"; 17],
        ] {
            assert!(parse_roles(&bad, &extra).is_err(), "{bad:?}");
        }
        let old: User = serde_json::from_str(
            r#"{"id":"i","username":"u","email":"e@x.io","password_hash":"h","created_at":1}"#,
        )
        .expect("a record from before roles");
        assert_eq!(old.roles, ["user"]);
        assert!(!old.disabled);
    }

    #[test]
    fn a_session_lives_only_while_its_user_keeps_the_stamp_it_started_with() {
        let mut user = User::new(
            "u1".into(),
            &Username::parse("alice").expect("valid"),
            &Email::parse("alice@example.com").expect("valid"),
            "$argon2id$hash".into(),
            vec![DEFAULT_ROLE.into()],
            1_000,
        );
        let session = Session::start(
            "s1".into(),
            &user,
            1_000,
            2_000,
            &ClientInfo::default(),
            Vec::new(),
        );
        assert!(session.is_live_for(&user, 1_500));
        assert!(!session.is_live_for(&user, 2_000), "expired");
        let other = User {
            id: "u2".into(),
            ..user.clone()
        };
        assert!(!session.is_live_for(&other, 1_500), "another user's");
        let disabled = User {
            disabled: true,
            ..user.clone()
        };
        assert!(!session.is_live_for(&disabled, 1_500), "account disabled");
        user.end_sessions();
        assert!(!session.is_live_for(&user, 1_500), "sessions ended");
        let after = Session::start(
            "s2".into(),
            &user,
            1_500,
            2_000,
            &ClientInfo::default(),
            Vec::new(),
        );
        assert!(after.is_live_for(&user, 1_600), "a later session lives");
        assert_eq!(
            user.set_password("$new".into(), 1),
            Err(Error::InvalidCredentials),
            "a stale password version is refused"
        );
        user.set_password("$new".into(), 0)
            .expect("current version");
        assert!(
            !after.is_live_for(&user, 1_600),
            "a password change ends it"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(1_000);
        assert_eq!(clock.now(), 1_000);
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), 1_005);
    }
}

/// What a mailed token is for; a token works only for its purpose.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailPurpose {
    /// Proves the user reads mail at their address.
    VerifyEmail,
    /// Sets a new password without the old one.
    ResetPassword,
    /// Moves the account to a new address.
    ChangeEmail,
}

/// A token sent by mail, stored under its digest until it is used or
/// expires: single-use, bound to one user, one purpose and one address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailToken {
    /// What it is for.
    pub purpose: MailPurpose,
    /// Whose it is.
    pub user_id: String,
    /// The address it was sent to: the user's (verification, reset) or the
    /// new one (email change). A verification is void once the account has
    /// moved to another address.
    pub email: String,
    /// The user's address when it was issued (an email change is void once
    /// another change has gone through).
    pub current_email: String,
    /// The user's password version when it was issued (a reset is void once
    /// the password has changed).
    pub password_version: u64,
    /// The user's security stamp when it was issued: a reset or an email
    /// change is void once the stamp has moved (a password change or reset,
    /// a log-out-everywhere, a disable — re-enabling does not revive it).
    #[serde(default)]
    pub security_stamp: u64,
    /// When it was issued.
    pub created_at: UnixTime,
    /// When it stops working.
    pub expires_at: UnixTime,
}

/// Which mail a queued mail is (for logs and the audit log; never its content).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// A verification link.
    Verification,
    /// A password-reset link.
    PasswordReset,
    /// A link confirming a new address, sent to it.
    EmailChange,
    /// A notice to the old address that a change was asked for.
    EmailChangeNotice,
    /// A notice that the password was changed.
    PasswordChangedNotice,
    /// A notice that a second factor or passkey was added or removed.
    FactorNotice,
}

impl MailKind {
    /// The snake_case name used in logs and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Verification => "verification",
            MailKind::PasswordReset => "password_reset",
            MailKind::EmailChange => "email_change",
            MailKind::EmailChangeNotice => "email_change_notice",
            MailKind::PasswordChangedNotice => "password_changed_notice",
            MailKind::FactorNotice => "factor_notice",
        }
    }
}

/// A mail ready to go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mail {
    /// Which mail it is.
    pub kind: MailKind,
    /// Whom it concerns.
    pub user_id: String,
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// Work for the outbox: a mail to deliver, or a request to look at first
/// (whether the account exists is decided there, not while the client
/// waits, so that the answer takes the same time either way).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutboxJob {
    /// Deliver this mail.
    Deliver(Mail),
    /// Someone asked for a mail of `purpose` (a password reset, the
    /// verification link again) to this (normalized) address.
    Requested {
        /// What for.
        purpose: MailPurpose,
        /// The address.
        email: String,
        /// Who asked (for the audit log).
        #[serde(default)]
        client: ClientInfo,
    },
}

/// One entry of the durable outbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its id (also in its key).
    pub id: String,
    /// When it was queued.
    pub created_at: UnixTime,
    /// The work.
    pub job: OutboxJob,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// When to try next.
    pub next_attempt_at: UnixTime,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was given up on (kept a while for the operator, then swept).
    #[serde(default)]
    pub failed_at: Option<UnixTime>,
}

impl OutboxEntry {
    /// A new entry, due now.
    pub fn new(id: String, job: OutboxJob, now: UnixTime) -> OutboxEntry {
        OutboxEntry {
            id,
            created_at: now,
            job,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            failed_at: None,
        }
    }
}

/// An account's second factors and passkeys, stored beside the account
/// (not in it: the account is read on every refresh, these only at sign-in).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Factors {
    /// The TOTP factor, pending until its first code is confirmed.
    #[serde(default)]
    pub totp: Option<TotpFactor>,
    /// Digests of the unused recovery codes.
    #[serde(default)]
    pub recovery_codes: Vec<TokenDigest>,
    /// The passkeys, oldest first.
    #[serde(default)]
    pub passkeys: Vec<PasskeyRecord>,
    /// Wrong codes in a row (at a login's second step, or proving the
    /// factor to remove it or renew the codes) since the last right one.
    #[serde(default)]
    pub code_failures: CodeFailures,
}

/// Wrong codes in a row, counted between two password resets by email: a
/// reset (proof of the mailbox) starts the count again; a password change
/// made while signed in does not.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodeFailures {
    /// How many.
    pub count: u32,
    /// The account's [`User::password_resets`] they were counted under.
    #[serde(default)]
    pub password_resets: u64,
}

/// Wrong codes in a row after which the account is told by mail.
pub const CODE_FAILURES_NOTICE: u32 = 10;
/// Wrong codes in a row after which the factor refuses every code until
/// the password is reset by email or an administrator resets the factors
/// (NIST 800-63B §5.2.2: at most 100 consecutive failures).
pub const CODE_FAILURES_LOCK: u32 = 100;

impl Factors {
    /// Wrong codes in a row that count for `user` now.
    pub fn failures(&self, user: &User) -> u32 {
        match self.code_failures.password_resets == user.password_resets {
            true => self.code_failures.count,
            false => 0,
        }
    }

    /// Whether the factor refuses every code (see [`CODE_FAILURES_LOCK`]).
    pub fn locked(&self, user: &User) -> bool {
        self.failures(user) >= CODE_FAILURES_LOCK
    }

    /// Counts a wrong code of `user`; returns the count.
    pub fn count_failure(&mut self, user: &User) -> u32 {
        let count = self.failures(user).saturating_add(1);
        self.code_failures = CodeFailures {
            count,
            password_resets: user.password_resets,
        };
        count
    }

    /// A right code: the count starts again.
    pub fn clear_failures(&mut self) {
        self.code_failures = CodeFailures::default();
    }

    /// What [`User::mfa`] says about these factors.
    pub fn summary(&self) -> MfaSummary {
        MfaSummary {
            totp: self.totp_confirmed(),
            passkeys: u32::try_from(self.passkeys.len()).unwrap_or(u32::MAX),
        }
    }

    /// Whether a confirmed TOTP factor guards the password login.
    pub fn totp_confirmed(&self) -> bool {
        self.totp
            .as_ref()
            .is_some_and(|totp| totp.confirmed_at.is_some())
    }
}

/// A TOTP factor as stored: its key sealed (see `secrets::Sealer`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TotpFactor {
    /// The key, sealed for the user.
    pub sealed_key: String,
    /// When it was set up.
    pub created_at: UnixTime,
    /// When its first code was confirmed; `None` while pending.
    pub confirmed_at: Option<UnixTime>,
    /// The newest step whose code was accepted: a code of that step or an
    /// earlier one is refused (RFC 6238 §5.2: no replay).
    #[serde(default)]
    pub last_step: u64,
}

/// A passkey as stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// The credential id, base64url (also its id in the API).
    pub id: String,
    /// A name the user can tell it by.
    pub name: String,
    /// When it was registered.
    pub created_at: UnixTime,
    /// When it last signed in.
    #[serde(default)]
    pub last_used_at: Option<UnixTime>,
    /// The authenticator's signature counter as last seen (0: it keeps none).
    #[serde(default)]
    pub counter: u32,
    /// Whether the credential may be synced to other devices.
    #[serde(default)]
    pub backup_eligible: bool,
    /// Whether it was backed up (synced) when last seen.
    #[serde(default)]
    pub backup_state: bool,
    /// The credential (public key and state) as the WebAuthn library keeps
    /// it, opaque outside `passkeys`.
    pub credential: String,
}

/// A short-lived server-side challenge of a sign-in or registration step,
/// stored under the digest of the token or id the client holds; used once.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Challenge {
    /// What it is for.
    pub kind: ChallengeKind,
    /// Whose it is (`None` for a passkey sign-in that has not named an account).
    pub user_id: Option<String>,
    /// When it was made.
    pub created_at: UnixTime,
    /// When it stops working.
    pub expires_at: UnixTime,
}

/// What a [`Challenge`] is for, with what its next step needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeKind {
    /// A password login waiting for its second factor.
    SecondFactor {
        /// The user's password version at the password step: the step is
        /// void once the password changes.
        password_version: u64,
        /// The user's security stamp then: void once it moves.
        security_stamp: u64,
        /// The rate-limit key of the password step (a known device, or the
        /// account), which the code step counts against too.
        device: Option<String>,
        /// Wrong codes so far; the challenge dies at the fifth.
        failures: u32,
    },
    /// A passkey registration: the WebAuthn state and the name to give it.
    PasskeyRegistration {
        /// The WebAuthn library's registration state (opaque).
        state: String,
        /// The name the passkey will get.
        name: String,
    },
    /// A passkey sign-in: the WebAuthn library's state (opaque).
    PasskeySignIn {
        /// The WebAuthn library's authentication state (opaque).
        state: String,
    },
}
