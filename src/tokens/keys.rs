//! The key ring of access-token signing keys (EdDSA or ES256): generating
//! key pairs, naming them (`kid` = RFC 7638 thumbprint), keeping them in
//! `signing_keys.json` in the data directory (owner-only, replaced
//! atomically), rotating and pruning them. The only importer of
//! `ed25519-dalek` and `p256`.
//!
//! The newest key without `retired_at` signs. A retired key still verifies,
//! and is still published, until every token it signed has expired
//! (`retired_at` + the access-token lifetime + clock leeway); after that it
//! is dropped from the file at the next start or rotation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::config::SigningAlg;
use crate::error::{Error, Result};
use crate::model::UnixTime;
use crate::secrets::SecretHome;

/// The key ring's file in the data directory.
pub const KEY_FILE: &str = "signing_keys.json";

/// One signing key as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// The key id: the RFC 7638 SHA-256 thumbprint of its public JWK.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: SigningAlg,
    /// The private key, PKCS#8 DER, base64.
    pkcs8: String,
    /// When it was generated.
    pub created_at: UnixTime,
    /// When a newer key replaced it; `None` for the active key.
    pub retired_at: Option<UnixTime>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// The private key as jsonwebtoken takes it.
    pub(super) fn encoding_key(&self) -> Result<EncodingKey> {
        let der = STANDARD
            .decode(&self.pkcs8)
            .map_err(|_| Error::Config(format!("signing key {} is not base64", self.kid)))?;
        Ok(match self.alg {
            SigningAlg::EdDsa => EncodingKey::from_ed_der(&der),
            SigningAlg::Es256 => EncodingKey::from_ec_der(&der),
            SigningAlg::Hs256 => {
                return Err(Error::Config(format!(
                    "signing key {} claims HS256, which has no key pair",
                    self.kid
                )));
            }
        })
    }
}

/// What is public about a signing key: everything but the private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyInfo {
    /// The key id: the RFC 7638 SHA-256 thumbprint of its public JWK.
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: SigningAlg,
    /// When it was generated.
    pub created_at: UnixTime,
    /// When a newer key replaced it; `None` for the active key.
    pub retired_at: Option<UnixTime>,
}

impl From<&StoredKey> for SigningKeyInfo {
    fn from(key: &StoredKey) -> Self {
        SigningKeyInfo {
            kid: key.kid.clone(),
            alg: key.alg,
            created_at: key.created_at,
            retired_at: key.retired_at,
        }
    }
}

/// Every signing key latchkey holds, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyRing {
    /// The keys, oldest first; the last unretired one is active.
    pub keys: Vec<StoredKey>,
}

impl KeyRing {
    /// Loads the ring kept in `home` and makes sure its active key uses
    /// `alg`: generates the first key, or rotates to a key of `alg` when the
    /// configured algorithm changed. Drops retired keys older than
    /// `keep_retired_for` seconds. Writes the file when anything changed.
    ///
    /// # Errors
    /// [`Error::Config`] for a readable-by-others or unreadable file,
    /// [`Error::Storage`] when it cannot be written.
    pub fn open(
        home: &SecretHome,
        alg: SigningAlg,
        now: UnixTime,
        keep_retired_for: u64,
    ) -> Result<KeyRing> {
        let mut ring = KeyRing::load(home)?.unwrap_or_default();
        let mut changed = ring.prune(now, keep_retired_for);
        if ring.active().is_none_or(|active| active.alg != alg) {
            ring.rotate(alg, now)?;
            changed = true;
        }
        if changed {
            ring.save(home)?;
        }
        Ok(ring)
    }

    /// The ring kept in `home`, if there is one.
    ///
    /// # Errors
    /// As [`KeyRing::open`].
    pub fn load(home: &SecretHome) -> Result<Option<KeyRing>> {
        let Some(text) = home.read(KEY_FILE)? else {
            return Ok(None);
        };
        KeyRing::parse(text.expose(), home)
    }

    /// The ring in `text` (as kept in `home`, named in errors).
    ///
    /// # Errors
    /// [`Error::Config`] when it is unreadable.
    pub fn parse(text: &str, home: &SecretHome) -> Result<Option<KeyRing>> {
        serde_json::from_str(text).map(Some).map_err(|err| {
            Error::Config(format!("{} is unreadable: {err}", home.describe(KEY_FILE)))
        })
    }

    /// Writes the ring to `home` (owner-only, atomically).
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn save(&self, home: &SecretHome) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|err| Error::Internal(format!("cannot encode the key ring: {err}")))?;
        home.replace(KEY_FILE, &text)
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> Option<&StoredKey> {
        self.keys.iter().rev().find(|key| key.retired_at.is_none())
    }

    /// Retires the active key and makes a new key of `alg` active.
    ///
    /// # Errors
    /// [`Error::Config`] for `HS256` (it has no key pair), [`Error::Internal`]
    /// if key generation fails.
    pub fn rotate(&mut self, alg: SigningAlg, now: UnixTime) -> Result<&StoredKey> {
        let key = generate(alg, now)?;
        for old in self.keys.iter_mut().filter(|key| key.retired_at.is_none()) {
            old.retired_at = Some(now);
        }
        tracing::info!(kid = %key.kid, alg = alg.as_str(), "new signing key active");
        self.keys.push(key);
        self.keys
            .last()
            .ok_or_else(|| Error::Internal("the new key vanished".into()))
    }

    /// Drops retired keys whose tokens have all expired; returns whether
    /// any was dropped.
    pub fn prune(&mut self, now: UnixTime, keep_retired_for: u64) -> bool {
        let before = self.keys.len();
        self.keys.retain(|key| {
            key.retired_at
                .is_none_or(|retired| retired.saturating_add(keep_retired_for) > now)
        });
        self.keys.len() != before
    }
}

/// A fresh key pair of `alg` from the OS-seeded CSPRNG.
fn generate(alg: SigningAlg, now: UnixTime) -> Result<StoredKey> {
    let internal =
        |err: &dyn std::fmt::Display| Error::Internal(format!("cannot make a key: {err}"));
    let der = match alg {
        SigningAlg::EdDsa => {
            let mut seed = [0u8; 32];
            rand::rng().fill_bytes(&mut seed);
            // PKCS#8 v1 (seed only): the form jsonwebtoken derives the JWK from.
            let pair = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: seed,
                public_key: None,
            };
            pair.to_pkcs8_der()
                .map_err(|err| internal(&err))?
                .as_bytes()
                .to_vec()
        }
        SigningAlg::Es256 => {
            // A random 256-bit string is a valid P-256 scalar except with
            // negligible probability; draw again in that case.
            let secret = loop {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                    break secret;
                }
            };
            secret
                .to_pkcs8_der()
                .map_err(|err| internal(&err))?
                .as_bytes()
                .to_vec()
        }
        SigningAlg::Hs256 => {
            return Err(Error::Config(
                "HS256 signs with a shared secret, not a key pair".into(),
            ));
        }
    };
    let mut key = StoredKey {
        kid: String::new(),
        alg,
        pkcs8: STANDARD.encode(&der),
        created_at: now,
        retired_at: None,
    };
    let jwk = Jwk::from_encoding_key(&key.encoding_key()?, super::jose_alg(alg))
        .map_err(|err| internal(&err))?;
    key.kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|err| internal(&err))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_created_once_and_kept_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let ring = KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::EdDsa,
            1_000,
            900,
        )
        .expect("ring");
        let kid = ring.active().expect("active").kid.clone();
        assert_eq!(kid.len(), 43, "a base64url SHA-256 thumbprint");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::EdDsa,
            2_000,
            900,
        )
        .expect("ring");
        assert_eq!(again.keys.len(), 1);
        assert_eq!(again.active().expect("active").kid, kid);
        assert!(!format!("{again:?}").contains(&again.keys[0].pkcs8));
    }

    #[test]
    fn rotation_retires_the_old_key_until_its_tokens_expire() {
        let dir = tempfile::tempdir().expect("dir");
        let mut ring = KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::EdDsa,
            1_000,
            900,
        )
        .expect("ring");
        let old = ring.active().expect("active").kid.clone();
        ring.rotate(SigningAlg::Es256, 2_000).expect("rotate");
        ring.save(&SecretHome::Dir(dir.path().to_path_buf()))
            .expect("save");
        let ring = KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::Es256,
            2_899,
            900,
        )
        .expect("ring");
        assert_eq!(
            ring.keys.len(),
            2,
            "the old key is kept while its tokens live"
        );
        assert_eq!(ring.keys[0].kid, old);
        assert_eq!(ring.active().expect("active").alg, SigningAlg::Es256);
        let ring = KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::Es256,
            2_900,
            900,
        )
        .expect("ring");
        assert_eq!(ring.keys.len(), 1, "then it is pruned");
    }

    #[test]
    fn a_changed_algorithm_rotates_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::EdDsa,
            1_000,
            900,
        )
        .expect("ring");
        let ring = KeyRing::open(
            &SecretHome::Dir(dir.path().to_path_buf()),
            SigningAlg::Es256,
            1_100,
            900,
        )
        .expect("ring");
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(ring.keys[0].retired_at, Some(1_100));
        assert_eq!(ring.active().expect("active").alg, SigningAlg::Es256);
    }
}
