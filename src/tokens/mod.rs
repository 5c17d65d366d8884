//! Issuing and verifying latchkey's two kinds of JWT, publishing the public
//! keys (JWKS), and digesting refresh tokens for storage. The only importer
//! of `jsonwebtoken` and `blake3`; `keys` holds the key pairs.
//!
//! Access tokens: header `typ: at+jwt` (RFC 9068), signed with EdDSA or
//! ES256 (a key from the key ring) or HS256 (the access secret). Refresh
//! tokens: header `typ: refresh+jwt`, HS256 with the separate refresh secret
//! (only latchkey reads them). Every token names its key in `kid`. The
//! verifier looks the `kid` up among its own keys and pins that key's
//! algorithm (no algorithm confusion), checks the type, refuses header
//! parameters that point at other keys (`jku`, `jwk`, `x5u`, `x5c`) or demand
//! extensions (`crit`), and judges time against the injected clock, not
//! jsonwebtoken's own (RFC 8725 §3.1, §3.11).

pub mod device;
pub mod keys;

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{Config, SigningAlg};
use crate::error::{Error, Result};
use crate::model::{RefreshRecord, Secret, TokenDigest, UnixTime, User};
use crate::secrets::{self, SecretHome};
use device::DeviceTokens;
use keys::KeyRing;

/// Header `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Header `typ` of refresh tokens; never accepted where an access token is expected.
pub const REFRESH_TOKEN_TYPE: &str = "refresh+jwt";
/// Longest token the verifier will look at; ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// How far in the future `iat`/`nbf` may lie before a token counts as forged.
const CLOCK_LEEWAY_SECONDS: u64 = 5;

/// An `aud` claim: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is among these.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|one| one == audience),
        }
    }
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// The issuer (`--issuer`).
    pub iss: String,
    /// The audience (`--audience`), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// The user id.
    pub sub: String,
    /// The user's email at issue time.
    pub email: String,
    /// The session (refresh-token family) the token was issued in.
    pub sid: String,
    /// The user's roles at issue time.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How the session's login proved who it was (RFC 8176): `["pwd"]`,
    /// `["pwd","otp","mfa"]`, or a passkey's `["hwk","mfa"]` /
    /// `["swk","mfa"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// Issued at (seconds since the epoch).
    pub iat: UnixTime,
    /// Expires at (seconds since the epoch).
    pub exp: UnixTime,
    /// Unique token id.
    pub jti: String,
    /// Not before; latchkey never sets it but honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<UnixTime>,
}

/// Claims of a refresh token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefreshClaims {
    /// The issuer (`--issuer`).
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The family (session) id.
    pub fam: String,
    /// Issued at.
    pub iat: UnixTime,
    /// Expires at.
    pub exp: UnixTime,
    /// Unique token id.
    pub jti: String,
    /// Not before; latchkey never sets it but honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<UnixTime>,
    /// When the session ends however often it is refreshed
    /// (`--session-max-age` after its login); every rotation keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sxp: Option<UnixTime>,
}

impl TokenDigest {
    /// Digests a token.
    pub fn of(token: &str) -> Self {
        TokenDigest(*blake3::hash(token.as_bytes()).as_bytes())
    }
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedAccess {
    /// The compact JWT.
    pub token: Secret,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// A freshly signed refresh token and what to store about it.
#[derive(Debug)]
pub struct IssuedRefresh {
    /// The compact JWT, handed to the client and never stored.
    pub token: Secret,
    /// The digest stored in its place.
    pub digest: TokenDigest,
    /// Its `jti`.
    pub jti: String,
    /// When it expires.
    pub expires_at: UnixTime,
}

/// What signs access tokens.
#[derive(Debug)]
pub enum AccessSigner {
    /// HS256 with a shared secret.
    Secret(Secret),
    /// EdDSA or ES256 with the active key of the ring; retired keys still verify.
    Keys(KeyRing),
}

/// File name of the generated HS256 access secret in the data directory.
pub const ACCESS_SECRET_FILE: &str = "jwt_secret";

impl AccessSigner {
    /// The signer `config` asks for, loading or creating its key material in
    /// `config.data_dir`. The algorithm is `--signing-alg`, else `HS256`
    /// when `JWT_SECRET` is set, else that of the existing key ring, else
    /// `EdDSA`.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::Storage`] from the key files.
    pub fn load(config: &Config, home: &SecretHome, now: UnixTime) -> Result<AccessSigner> {
        let existing = || {
            KeyRing::load(home).map(|ring| ring.and_then(|ring| ring.active().map(|key| key.alg)))
        };
        let alg = match (config.signing_alg, &config.jwt_secret) {
            (Some(alg), _) => alg,
            (None, Some(_)) => SigningAlg::Hs256,
            (None, None) => existing()?.unwrap_or(SigningAlg::EdDsa),
        };
        if alg == SigningAlg::Hs256 {
            let secret = secrets::load_or_create(
                home,
                ACCESS_SECRET_FILE,
                "JWT_SECRET",
                config.jwt_secret.as_ref(),
            )?;
            return Ok(AccessSigner::Secret(secret));
        }
        let keep_retired_for = access_ttl(config).saturating_add(CLOCK_LEEWAY_SECONDS);
        KeyRing::open(home, alg, now, keep_retired_for).map(AccessSigner::Keys)
    }
}

/// A public signing key as published in the JWKS (RFC 7517).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicJwk {
    /// `OKP` (Ed25519) or `EC` (P-256).
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// The public key (x coordinate), base64url.
    pub x: String,
    /// The y coordinate for `EC` keys, base64url.
    pub y: Option<String>,
    /// The key id tokens name in their `kid` header.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
}

/// A key that signs.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

/// A key that verifies tokens naming its `kid`.
struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
    /// For a retired key: when the last token it signed has expired.
    until: Option<UnixTime>,
    /// The public JWK, for asymmetric keys.
    public: Option<PublicJwk>,
}

/// How many verified access tokens are remembered (a few MiB): the
/// active tokens of that many recent callers skip the signature check.
const VERIFIED_CACHE_ENTRIES: usize = 16_384;

/// Signs and verifies latchkey's tokens. Cheap to share behind an `Arc`.
pub struct Tokens {
    access_signer: Signer,
    access_verifiers: HashMap<String, Verifier>,
    /// Access tokens whose signature, type, issuer and audience were checked,
    /// by the digest of the whole token: an EdDSA or ES256 signature check
    /// costs tens of microseconds, a lookup well under one. Only what passed
    /// the full check gets in, so a stranger cannot fill it; a hit is still
    /// judged against the clock (expiry), and the caller still looks at the
    /// session (revocation). The verifiers never change while it lives.
    verified: quick_cache::sync::Cache<[u8; 32], AccessClaims>,
    refresh_signer: Signer,
    refresh_verifiers: HashMap<String, Verifier>,
    devices: DeviceTokens,
    access_ttl: u64,
    refresh_ttl: u64,
    issuer: String,
    audience: Option<String>,
}

impl Tokens {
    /// Builds the signer/verifier from the access signer, the refresh secret
    /// and the lifetimes, issuer and audience of `config`.
    ///
    /// # Errors
    /// [`Error::Config`] when a stored key is unusable.
    pub fn new(access: &AccessSigner, refresh_secret: &Secret, config: &Config) -> Result<Self> {
        let access_ttl = access_ttl(config);
        let (access_signer, access_verifiers) = match access {
            AccessSigner::Secret(secret) => hmac_keys("a", secret),
            AccessSigner::Keys(ring) => {
                let active = ring
                    .active()
                    .ok_or_else(|| Error::Config("the key ring has no active key".into()))?;
                let mut verifiers = HashMap::new();
                for key in &ring.keys {
                    let until = key
                        .retired_at
                        .map(|retired| retired + access_ttl + CLOCK_LEEWAY_SECONDS);
                    let (kid, verifier) = asymmetric_verifier(key, until)?;
                    verifiers.insert(kid, verifier);
                }
                let signer = Signer {
                    kid: active.kid.clone(),
                    alg: jose_alg(active.alg),
                    key: active.encoding_key()?,
                };
                (signer, verifiers)
            }
        };
        let (refresh_signer, refresh_verifiers) = hmac_keys("r", refresh_secret);
        Ok(Tokens {
            access_signer,
            access_verifiers,
            verified: quick_cache::sync::Cache::new(VERIFIED_CACHE_ENTRIES),
            refresh_signer,
            refresh_verifiers,
            devices: DeviceTokens::new(refresh_secret),
            access_ttl,
            refresh_ttl: config.refresh_ttl.as_secs().max(1),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    /// The public keys that verify access tokens now (the active one and
    /// retired ones whose tokens may still be alive); none for HS256.
    pub fn public_keys(&self, now: UnixTime) -> Vec<PublicJwk> {
        let mut keys: Vec<PublicJwk> = self
            .access_verifiers
            .values()
            .filter(|verifier| verifier.until.is_none_or(|until| now < until))
            .filter_map(|verifier| verifier.public.clone())
            .collect();
        // The active key first, then by kid, so the document is stable.
        keys.sort_by_key(|key| (key.kid != self.access_signer.kid, key.kid.clone()));
        keys
    }

    /// The device tokens (see [`device`]).
    pub(crate) fn devices(&self) -> &DeviceTokens {
        &self.devices
    }

    /// Lifetime of access tokens in seconds.
    pub fn access_ttl(&self) -> u64 {
        self.access_ttl
    }

    /// Lifetime of refresh tokens in seconds.
    pub fn refresh_ttl(&self) -> u64 {
        self.refresh_ttl
    }

    /// Signs an access token for `user` in session `session_id`.
    ///
    /// # Errors
    /// [`Error::Internal`] if signing fails (it does not with an HMAC key).
    pub fn issue_access(
        &self,
        user: &User,
        session_id: &str,
        amr: &[String],
        now: UnixTime,
    ) -> Result<IssuedAccess> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            sub: user.id.clone(),
            email: user.email.clone(),
            sid: session_id.to_owned(),
            roles: user.roles.clone(),
            amr: amr.to_vec(),
            iat: now,
            exp: now.saturating_add(self.access_ttl),
            jti: new_id(),
            nbf: None,
        };
        let token = sign(ACCESS_TOKEN_TYPE, &claims, &self.access_signer)?;
        Ok(IssuedAccess {
            token,
            expires_in: self.access_ttl,
        })
    }

    /// Verifies an access token: signature, algorithm, type, and times.
    ///
    /// # Errors
    /// [`Error::TokenExpired`] when only the expiry is wrong, otherwise [`Error::InvalidToken`].
    pub fn verify_access(&self, token: &str, now: UnixTime) -> Result<AccessClaims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken);
        }
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        if let Some(claims) = self.verified.get(&digest) {
            check_times(claims.iat, claims.nbf, now).ok_or(Error::InvalidToken)?;
            if now >= claims.exp {
                return Err(Error::TokenExpired);
            }
            return Ok(claims);
        }
        let claims = self.verify_access_fully(token, now)?;
        self.verified.insert(digest, claims.clone());
        Ok(claims)
    }

    /// [`Tokens::verify_access`] without the cache.
    fn verify_access_fully(&self, token: &str, now: UnixTime) -> Result<AccessClaims> {
        let claims: AccessClaims = verify(token, ACCESS_TOKEN_TYPE, &self.access_verifiers, now)
            .ok_or(Error::InvalidToken)?;
        check_times(claims.iat, claims.nbf, now).ok_or(Error::InvalidToken)?;
        let audience_matches = match (&self.audience, &claims.aud) {
            (Some(expected), Some(audience)) => audience.contains(expected),
            (Some(_), None) => false,
            (None, _) => true,
        };
        if claims.iss != self.issuer || !audience_matches {
            return Err(Error::InvalidToken);
        }
        if now >= claims.exp {
            return Err(Error::TokenExpired);
        }
        Ok(claims)
    }

    /// Signs a refresh token for `user_id` in family `family_id`, whose
    /// session ends at `session_ends` whatever the refresh lifetime.
    ///
    /// # Errors
    /// [`Error::Internal`] if signing fails.
    pub fn issue_refresh(
        &self,
        user_id: &str,
        family_id: &str,
        now: UnixTime,
        session_ends: UnixTime,
    ) -> Result<IssuedRefresh> {
        self.sign_refresh(RefreshClaims {
            iss: self.issuer.clone(),
            sub: user_id.to_owned(),
            fam: family_id.to_owned(),
            iat: now,
            exp: now.saturating_add(self.refresh_ttl).min(session_ends),
            jti: new_id(),
            nbf: None,
            sxp: Some(session_ends),
        })
    }

    /// Signs again the refresh token `record` was stored for, in a session
    /// that ends at `session_ends` (the presented token's `sxp`): the same
    /// bytes as when it was first issued, since signing is deterministic.
    /// The caller compares the digest with the one stored.
    ///
    /// # Errors
    /// [`Error::Internal`] if signing fails.
    pub(crate) fn reissue_refresh(
        &self,
        record: &RefreshRecord,
        session_ends: Option<UnixTime>,
    ) -> Result<IssuedRefresh> {
        self.sign_refresh(RefreshClaims {
            iss: self.issuer.clone(),
            sub: record.user_id.clone(),
            fam: record.family_id.clone(),
            iat: record.created_at,
            exp: record.expires_at,
            jti: record.jti.clone(),
            nbf: None,
            sxp: session_ends,
        })
    }

    fn sign_refresh(&self, claims: RefreshClaims) -> Result<IssuedRefresh> {
        let token = sign(REFRESH_TOKEN_TYPE, &claims, &self.refresh_signer)?;
        Ok(IssuedRefresh {
            digest: TokenDigest::of(token.expose()),
            token,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }

    /// Verifies a refresh token's signature, algorithm, type and times.
    ///
    /// # Errors
    /// [`Error::RefreshTokenExpired`] when only the expiry is wrong, otherwise
    /// [`Error::InvalidRefreshToken`].
    pub fn verify_refresh(&self, token: &str, now: UnixTime) -> Result<RefreshClaims> {
        let claims: RefreshClaims = verify(token, REFRESH_TOKEN_TYPE, &self.refresh_verifiers, now)
            .ok_or(Error::InvalidRefreshToken)?;
        check_times(claims.iat, claims.nbf, now).ok_or(Error::InvalidRefreshToken)?;
        if claims.iss != self.issuer {
            return Err(Error::InvalidRefreshToken);
        }
        if now >= claims.exp {
            return Err(Error::RefreshTokenExpired);
        }
        Ok(claims)
    }
}

/// Signature by one of our keys (found by `kid`, with that key's algorithm
/// pinned), exact type, no key-pointing header. `None` for any failure: the
/// caller only says "invalid".
fn verify<C: DeserializeOwned>(
    token: &str,
    typ: &str,
    verifiers: &HashMap<String, Verifier>,
    now: UnixTime,
) -> Option<C> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    let typ_matches = header
        .typ
        .as_deref()
        .is_some_and(|found| found.eq_ignore_ascii_case(typ));
    let points_elsewhere = header.jku.is_some()
        || header.jwk.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
        || header.crit.is_some();
    if !typ_matches || points_elsewhere {
        return None;
    }
    let verifier = verifiers.get(header.kid.as_deref()?)?;
    if header.alg != verifier.alg || verifier.until.is_some_and(|until| now >= until) {
        return None;
    }
    jsonwebtoken::decode::<C>(token, &verifier.key, &verifier.validation)
        .ok()
        .map(|data| data.claims)
}

/// Validation for one algorithm. Time is judged against latchkey's clock in
/// `check_times`; the claim structs make every claim we need mandatory.
fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    validation
}

/// The HS256 signer and verifier of a secret; its kid is derived from the
/// secret (a keyed hash: it names the secret without revealing it).
fn hmac_keys(prefix: &str, secret: &Secret) -> (Signer, HashMap<String, Verifier>) {
    let digest = blake3::derive_key("latchkey 2026 HS256 key id", secret.expose().as_bytes());
    let hex: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let kid = format!("{prefix}-{hex}");
    let bytes = secret.expose().as_bytes();
    let verifier = Verifier {
        alg: Algorithm::HS256,
        key: DecodingKey::from_secret(bytes),
        validation: validation(Algorithm::HS256),
        until: None,
        public: None,
    };
    let signer = Signer {
        kid: kid.clone(),
        alg: Algorithm::HS256,
        key: EncodingKey::from_secret(bytes),
    };
    (signer, HashMap::from([(kid, verifier)]))
}

/// The verifier of a stored key pair, from its public JWK.
fn asymmetric_verifier(
    key: &keys::StoredKey,
    until: Option<UnixTime>,
) -> Result<(String, Verifier)> {
    let alg = jose_alg(key.alg);
    let unusable = |err: jsonwebtoken::errors::Error| {
        Error::Config(format!("signing key {} is unusable: {err}", key.kid))
    };
    let mut jwk = Jwk::from_encoding_key(&key.encoding_key()?, alg).map_err(unusable)?;
    jwk.common.key_id = Some(key.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let public = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(params) => PublicJwk {
            kty: "OKP".into(),
            crv: curve_name(&params.curve).into(),
            x: params.x.clone(),
            y: None,
            kid: key.kid.clone(),
            alg: key.alg.as_str().into(),
        },
        AlgorithmParameters::EllipticCurve(params) => PublicJwk {
            kty: "EC".into(),
            crv: curve_name(&params.curve).into(),
            x: params.x.clone(),
            y: Some(params.y.clone()),
            kid: key.kid.clone(),
            alg: key.alg.as_str().into(),
        },
        _ => {
            return Err(Error::Config(format!(
                "signing key {} is not EdDSA or ES256",
                key.kid
            )));
        }
    };
    let verifier = Verifier {
        alg,
        key: DecodingKey::from_jwk(&jwk).map_err(unusable)?,
        validation: validation(alg),
        until,
        public: Some(public),
    };
    Ok((key.kid.clone(), verifier))
}

fn curve_name(curve: &EllipticCurve) -> &'static str {
    match curve {
        EllipticCurve::Ed25519 => "Ed25519",
        EllipticCurve::P256 => "P-256",
        // latchkey only makes Ed25519 and P-256 keys.
        _ => "unsupported",
    }
}

/// jsonwebtoken's name of a signing algorithm.
pub(crate) fn jose_alg(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::EdDsa => Algorithm::EdDSA,
        SigningAlg::Es256 => Algorithm::ES256,
        SigningAlg::Hs256 => Algorithm::HS256,
    }
}

fn access_ttl(config: &Config) -> u64 {
    config.access_ttl.as_secs().max(1)
}

/// `Some(())` when neither `iat` nor `nbf` lies in the future.
fn check_times(iat: UnixTime, nbf: Option<UnixTime>, now: UnixTime) -> Option<()> {
    let latest = now + CLOCK_LEEWAY_SECONDS;
    (iat <= latest && nbf.is_none_or(|nbf| nbf <= latest)).then_some(())
}

fn sign<C: Serialize>(typ: &str, claims: &C, signer: &Signer) -> Result<Secret> {
    let mut header = Header::new(signer.alg);
    header.typ = Some(typ.to_owned());
    header.kid = Some(signer.kid.clone());
    jsonwebtoken::encode(&header, claims, &signer.key)
        .map(Secret::new)
        .map_err(|err| Error::Internal(format!("cannot sign a token: {err}")))
}

/// A token to send by mail: 32 random bytes, base64url, and the digest it
/// is stored under.
pub fn new_mail_token() -> (Secret, TokenDigest) {
    use base64::Engine as _;
    use rand::Rng as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let digest = TokenDigest::of(&token);
    (Secret::new(token), digest)
}

/// A new random identifier (UUID v4, 122 random bits).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Email, Username};

    const NOW: UnixTime = 1_800_000_000;

    fn config() -> Config {
        Config {
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(3600),
            ..Config::default()
        }
    }

    fn hmac(access: &Secret, refresh: &Secret, config: &Config) -> Tokens {
        Tokens::new(&AccessSigner::Secret(access.clone()), refresh, config).expect("tokens")
    }

    fn tokens() -> Tokens {
        hmac(
            &Secret::new("a".repeat(32)),
            &Secret::new("b".repeat(32)),
            &config(),
        )
    }

    fn user() -> User {
        User::new(
            "u1".into(),
            &Username::parse("alice").expect("valid"),
            &Email::parse("alice@example.com").expect("valid"),
            String::new(),
            vec!["user".into()],
            NOW,
        )
    }

    #[test]
    fn an_access_token_verifies_until_it_expires() {
        let tokens = tokens();
        let issued = tokens
            .issue_access(&user(), "s1", &["pwd".to_owned()], NOW)
            .expect("issued");
        let claims = tokens
            .verify_access(issued.token.expose(), NOW + 59)
            .expect("valid");
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        assert!(matches!(
            tokens.verify_access(issued.token.expose(), NOW + 60),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_tampered_copy_is_checked_in_full() {
        let tokens = tokens();
        let issued = tokens
            .issue_access(&user(), "s1", &["pwd".to_owned()], NOW)
            .expect("issued");
        let token = issued.token.expose();
        for _ in 0..3 {
            tokens
                .verify_access(token, NOW)
                .expect("valid, then remembered");
        }
        // The same claims under another signature: not the remembered token.
        let (signed, signature) = token.rsplit_once('.').expect("three parts");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{signed}.{flipped}{}", &signature[1..]);
        assert!(matches!(
            tokens.verify_access(&forged, NOW),
            Err(Error::InvalidToken)
        ));
        assert!(matches!(
            tokens.verify_access(token, NOW + 60),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn a_token_from_the_future_is_invalid() {
        let tokens = tokens();
        let issued = tokens
            .issue_access(&user(), "s1", &[], NOW + 3600)
            .expect("issued");
        assert!(matches!(
            tokens.verify_access(issued.token.expose(), NOW),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn a_refresh_token_is_not_an_access_token_even_with_equal_secrets() {
        let secret = Secret::new("same-secret-same-secret-same-secret");
        let tokens = hmac(&secret, &secret, &config());
        let refresh = tokens
            .issue_refresh("u1", "f1", NOW, NOW + 86_400)
            .expect("issued");
        assert!(matches!(
            tokens.verify_access(refresh.token.expose(), NOW),
            Err(Error::InvalidToken)
        ));
        let access = tokens
            .issue_access(&user(), "s1", &["pwd".to_owned()], NOW)
            .expect("issued");
        assert!(matches!(
            tokens.verify_refresh(access.token.expose(), NOW),
            Err(Error::InvalidRefreshToken)
        ));
    }

    #[test]
    fn a_token_of_another_issuer_or_audience_is_invalid() {
        let secret = Secret::new("a".repeat(32));
        let for_api = Config {
            audience: Some("api".into()),
            ..config()
        };
        let api = hmac(&secret, &secret, &for_api);
        let other_issuer = hmac(
            &secret,
            &secret,
            &Config {
                issuer: "elsewhere".into(),
                ..for_api.clone()
            },
        );
        let other_audience = hmac(
            &secret,
            &secret,
            &Config {
                audience: Some("billing".into()),
                ..for_api.clone()
            },
        );
        let no_audience = hmac(&secret, &secret, &config());
        let own = api
            .issue_access(&user(), "s1", &["pwd".to_owned()], NOW)
            .expect("issued");
        let claims = api.verify_access(own.token.expose(), NOW).expect("valid");
        assert_eq!(
            (claims.iss.as_str(), claims.aud),
            ("latchkey", Some(Audience::One("api".into())))
        );
        for stranger in [&other_issuer, &other_audience, &no_audience] {
            let token = stranger
                .issue_access(&user(), "s1", &["pwd".to_owned()], NOW)
                .expect("issued");
            assert!(matches!(
                api.verify_access(token.token.expose(), NOW),
                Err(Error::InvalidToken)
            ));
        }
        let refresh = other_issuer
            .issue_refresh("u1", "f1", NOW, NOW + 86_400)
            .expect("issued");
        assert!(matches!(
            api.verify_refresh(refresh.token.expose(), NOW),
            Err(Error::InvalidRefreshToken)
        ));
    }

    #[test]
    fn the_digest_is_blake3_of_the_token() {
        let issued = tokens()
            .issue_refresh("u1", "f1", NOW, NOW + 86_400)
            .expect("issued");
        assert_eq!(issued.digest, TokenDigest::of(issued.token.expose()));
        assert_ne!(issued.digest, TokenDigest::of("something else"));
    }
}
