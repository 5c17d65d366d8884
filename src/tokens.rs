//! Issuing and verifying latchkey's two kinds of JWT, and digesting refresh
//! tokens for storage. The only importer of `jsonwebtoken` and `blake3`.
//!
//! Access tokens: header `typ: at+jwt` (RFC 9068), HS256 with the access
//! secret. Refresh tokens: header `typ: refresh+jwt`, HS256 with the separate
//! refresh secret. The verifier pins the algorithm and the type, refuses
//! header parameters that point at other keys (`jku`, `jwk`, `x5u`, `x5c`,
//! `kid`) or demand extensions (`crit`), and judges time against the injected
//! clock, not jsonwebtoken's own (RFC 8725 §3.1, §3.11).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Secret, UnixTime, User};

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
}

/// The blake3 digest under which a refresh token is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// Digests a token.
    pub fn of(token: &str) -> Self {
        TokenDigest(*blake3::hash(token.as_bytes()).as_bytes())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest is not secret, but eight bytes are enough to correlate logs.
        let short: String = self.0[..8].iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "TokenDigest({short}…)")
    }
}

/// A freshly signed access token.
#[derive(Debug)]
pub struct IssuedAccess {
    /// The compact JWT.
    pub token: Secret,
    /// Its `jti`.
    pub jti: String,
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

/// Signs and verifies latchkey's tokens. Cheap to share behind an `Arc`.
pub struct Tokens {
    access_encoding: EncodingKey,
    access_decoding: DecodingKey,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    validation: Validation,
    access_ttl: u64,
    refresh_ttl: u64,
    issuer: String,
    audience: Option<String>,
}

impl Tokens {
    /// Builds the signer/verifier from the two secrets and the lifetimes,
    /// issuer and audience of `config`.
    pub fn new(access_secret: &Secret, refresh_secret: &Secret, config: &Config) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is judged against latchkey's clock in `check_times`; the claim
        // structs make every claim we need mandatory.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Tokens {
            access_encoding: EncodingKey::from_secret(access_secret.expose().as_bytes()),
            access_decoding: DecodingKey::from_secret(access_secret.expose().as_bytes()),
            refresh_encoding: EncodingKey::from_secret(refresh_secret.expose().as_bytes()),
            refresh_decoding: DecodingKey::from_secret(refresh_secret.expose().as_bytes()),
            validation,
            access_ttl: config.access_ttl.as_secs().max(1),
            refresh_ttl: config.refresh_ttl.as_secs().max(1),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        }
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
        now: UnixTime,
    ) -> Result<IssuedAccess> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            sub: user.id.clone(),
            email: user.email.clone(),
            sid: session_id.to_owned(),
            roles: user.roles.clone(),
            iat: now,
            exp: now + self.access_ttl,
            jti: new_id(),
            nbf: None,
        };
        let token = sign(ACCESS_TOKEN_TYPE, &claims, &self.access_encoding)?;
        Ok(IssuedAccess {
            token,
            jti: claims.jti,
            expires_in: self.access_ttl,
        })
    }

    /// Verifies an access token: signature, algorithm, type, and times.
    ///
    /// # Errors
    /// [`Error::TokenExpired`] when only the expiry is wrong, otherwise [`Error::InvalidToken`].
    pub fn verify_access(&self, token: &str, now: UnixTime) -> Result<AccessClaims> {
        let claims: AccessClaims = self
            .verify(token, ACCESS_TOKEN_TYPE, &self.access_decoding)
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

    /// Signs a refresh token for `user_id` in family `family_id`.
    ///
    /// # Errors
    /// [`Error::Internal`] if signing fails.
    pub fn issue_refresh(
        &self,
        user_id: &str,
        family_id: &str,
        now: UnixTime,
    ) -> Result<IssuedRefresh> {
        let claims = RefreshClaims {
            iss: self.issuer.clone(),
            sub: user_id.to_owned(),
            fam: family_id.to_owned(),
            iat: now,
            exp: now + self.refresh_ttl,
            jti: new_id(),
            nbf: None,
        };
        let token = sign(REFRESH_TOKEN_TYPE, &claims, &self.refresh_encoding)?;
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
        let claims: RefreshClaims = self
            .verify(token, REFRESH_TOKEN_TYPE, &self.refresh_decoding)
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

    /// Signature, pinned algorithm, exact type and no key-pointing header.
    /// `None` for any failure: the caller only says "invalid".
    fn verify<C: DeserializeOwned>(&self, token: &str, typ: &str, key: &DecodingKey) -> Option<C> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let data = jsonwebtoken::decode::<C>(token, key, &self.validation).ok()?;
        let header = &data.header;
        let typ_matches = header
            .typ
            .as_deref()
            .is_some_and(|found| found.eq_ignore_ascii_case(typ));
        let points_elsewhere = header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
            || header.kid.is_some()
            || header.crit.is_some();
        (header.alg == Algorithm::HS256 && typ_matches && !points_elsewhere).then_some(data.claims)
    }
}

/// `Some(())` when neither `iat` nor `nbf` lies in the future.
fn check_times(iat: UnixTime, nbf: Option<UnixTime>, now: UnixTime) -> Option<()> {
    let latest = now + CLOCK_LEEWAY_SECONDS;
    (iat <= latest && nbf.is_none_or(|nbf| nbf <= latest)).then_some(())
}

fn sign<C: Serialize>(typ: &str, claims: &C, key: &EncodingKey) -> Result<Secret> {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(typ.to_owned());
    jsonwebtoken::encode(&header, claims, key)
        .map(Secret::new)
        .map_err(|err| Error::Internal(format!("cannot sign a token: {err}")))
}

/// A new random identifier (UUID v4, 122 random bits).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: UnixTime = 1_800_000_000;

    fn config() -> Config {
        Config {
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(3600),
            ..Config::default()
        }
    }

    fn tokens() -> Tokens {
        Tokens::new(
            &Secret::new("a".repeat(32)),
            &Secret::new("b".repeat(32)),
            &config(),
        )
    }

    fn user() -> User {
        User {
            id: "u1".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            password_hash: String::new(),
            created_at: NOW,
            roles: vec!["user".into()],
            disabled: false,
        }
    }

    #[test]
    fn an_access_token_verifies_until_it_expires() {
        let tokens = tokens();
        let issued = tokens.issue_access(&user(), "s1", NOW).expect("issued");
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
    fn a_token_from_the_future_is_invalid() {
        let tokens = tokens();
        let issued = tokens
            .issue_access(&user(), "s1", NOW + 3600)
            .expect("issued");
        assert!(matches!(
            tokens.verify_access(issued.token.expose(), NOW),
            Err(Error::InvalidToken)
        ));
    }

    #[test]
    fn a_refresh_token_is_not_an_access_token_even_with_equal_secrets() {
        let secret = Secret::new("same-secret-same-secret-same-secret");
        let tokens = Tokens::new(&secret, &secret, &config());
        let refresh = tokens.issue_refresh("u1", "f1", NOW).expect("issued");
        assert!(matches!(
            tokens.verify_access(refresh.token.expose(), NOW),
            Err(Error::InvalidToken)
        ));
        let access = tokens.issue_access(&user(), "s1", NOW).expect("issued");
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
        let api = Tokens::new(&secret, &secret, &for_api);
        let other_issuer = Tokens::new(
            &secret,
            &secret,
            &Config {
                issuer: "elsewhere".into(),
                ..for_api.clone()
            },
        );
        let other_audience = Tokens::new(
            &secret,
            &secret,
            &Config {
                audience: Some("billing".into()),
                ..for_api.clone()
            },
        );
        let no_audience = Tokens::new(&secret, &secret, &config());
        let own = api.issue_access(&user(), "s1", NOW).expect("issued");
        let claims = api.verify_access(own.token.expose(), NOW).expect("valid");
        assert_eq!(
            (claims.iss.as_str(), claims.aud),
            ("latchkey", Some(Audience::One("api".into())))
        );
        for stranger in [&other_issuer, &other_audience, &no_audience] {
            let token = stranger.issue_access(&user(), "s1", NOW).expect("issued");
            assert!(matches!(
                api.verify_access(token.token.expose(), NOW),
                Err(Error::InvalidToken)
            ));
        }
        let refresh = other_issuer.issue_refresh("u1", "f1", NOW).expect("issued");
        assert!(matches!(
            api.verify_refresh(refresh.token.expose(), NOW),
            Err(Error::InvalidRefreshToken)
        ));
    }

    #[test]
    fn the_digest_is_blake3_of_the_token() {
        let issued = tokens().issue_refresh("u1", "f1", NOW).expect("issued");
        assert_eq!(issued.digest, TokenDigest::of(issued.token.expose()));
        assert_ne!(issued.digest, TokenDigest::of("something else"));
    }
}
