//! The signing secrets: taken from the configuration when set, otherwise
//! generated once with the OS-seeded CSPRNG and kept in the data directory as
//! owner-only (0600) files, so latchkey starts with zero configuration and its
//! tokens survive a restart. Also the owner-only file handling other private
//! files (the signing key ring) use; and the [`Sealer`] that encrypts
//! second-factor secrets at rest (the only importer of `ring`). Depends on
//! `model` and `error` only.
//!
//! With PostgreSQL, secrets live in the database instead, sealed with
//! `LATCHKEY_MASTER_KEY`, so that every node signs and verifies alike: the
//! core loads them into a [`SecretHome::Memory`], lets the same code below
//! read and generate them, and saves what it generated.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng;

use crate::error::{Error, Result};
use crate::model::Secret;

/// Shortest secret accepted: HS256 keys shorter than the hash output weaken it (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// Random bytes in a generated secret (stored hex-encoded).
const GENERATED_SECRET_BYTES: usize = 64;

/// Where generated secrets are kept, by file name.
#[derive(Debug)]
pub enum SecretHome {
    /// Owner-only files in the data directory (sled).
    Dir(PathBuf),
    /// In memory, loaded from the database and saved back by the core
    /// (PostgreSQL): what was created and replaced is noted for saving.
    Memory(Mutex<MemorySecrets>),
}

/// The secrets of a [`SecretHome::Memory`].
#[derive(Debug, Default)]
pub struct MemorySecrets {
    /// Each secret's text, by name.
    pub texts: BTreeMap<String, String>,
    /// Names generated here (to be stored only if still absent).
    pub created: BTreeSet<String>,
    /// Names replaced here (to be stored over what is there).
    pub replaced: BTreeSet<String>,
}

impl SecretHome {
    /// A home in memory holding `texts`.
    pub fn memory(texts: BTreeMap<String, String>) -> SecretHome {
        SecretHome::Memory(Mutex::new(MemorySecrets {
            texts,
            ..MemorySecrets::default()
        }))
    }

    fn memory_lock(secrets: &Mutex<MemorySecrets>) -> std::sync::MutexGuard<'_, MemorySecrets> {
        secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How a secret is named in messages: its file, or its row.
    pub fn describe(&self, name: &str) -> String {
        match self {
            SecretHome::Dir(dir) => dir.join(name).display().to_string(),
            SecretHome::Memory(_) => format!("the database's secret {name}"),
        }
    }

    /// The secret `name`, if kept.
    ///
    /// # Errors
    /// As [`read_private`].
    pub fn read(&self, name: &str) -> Result<Option<Secret>> {
        match self {
            SecretHome::Dir(dir) => read_private(&dir.join(name)),
            SecretHome::Memory(secrets) => Ok(SecretHome::memory_lock(secrets)
                .texts
                .get(name)
                .map(Secret::new)),
        }
    }

    /// Keeps a new secret `name` (which must not exist yet).
    ///
    /// # Errors
    /// [`Error::Storage`] when the file cannot be written.
    pub fn create(&self, name: &str, contents: &str) -> Result<()> {
        match self {
            SecretHome::Dir(dir) => write_owner_only(&dir.join(name), contents),
            SecretHome::Memory(secrets) => {
                let mut secrets = SecretHome::memory_lock(secrets);
                secrets.texts.insert(name.to_owned(), contents.to_owned());
                secrets.created.insert(name.to_owned());
                Ok(())
            }
        }
    }

    /// Replaces (or creates) the secret `name`, atomically.
    ///
    /// # Errors
    /// As [`replace_private`].
    pub fn replace(&self, name: &str, contents: &str) -> Result<()> {
        match self {
            SecretHome::Dir(dir) => replace_private(&dir.join(name), contents),
            SecretHome::Memory(secrets) => {
                let mut secrets = SecretHome::memory_lock(secrets);
                secrets.texts.insert(name.to_owned(), contents.to_owned());
                secrets.replaced.insert(name.to_owned());
                Ok(())
            }
        }
    }

    /// What a memory home created and replaced, emptied (nothing for files).
    pub fn take_changes(&self) -> Vec<(String, String, bool)> {
        let SecretHome::Memory(secrets) = self else {
            return Vec::new();
        };
        let mut secrets = SecretHome::memory_lock(secrets);
        let created = std::mem::take(&mut secrets.created);
        let replaced = std::mem::take(&mut secrets.replaced);
        let text = |name: &String| secrets.texts.get(name).cloned().unwrap_or_default();
        created
            .iter()
            .filter(|name| !replaced.contains(*name))
            .map(|name| (name.clone(), text(name), false))
            .chain(replaced.iter().map(|name| (name.clone(), text(name), true)))
            .collect()
    }
}

/// Returns the configured secret, or the one kept in `home` as `file_name`,
/// generating and storing it on first use.
///
/// `env_name` only names the variable in error messages.
///
/// # Errors
/// [`Error::Config`] when a configured or stored secret is shorter than
/// [`MIN_SECRET_BYTES`], or when the stored file is readable by group or others;
/// [`Error::Storage`] when the file cannot be read or written.
pub fn load_or_create(
    home: &SecretHome,
    file_name: &str,
    env_name: &str,
    configured: Option<&Secret>,
) -> Result<Secret> {
    if let Some(secret) = configured {
        return check_length(secret.clone(), env_name);
    }
    match home.read(file_name)? {
        Some(text) => check_length(Secret::new(text.expose().trim()), &home.describe(file_name)),
        None => {
            let secret = generate();
            home.create(file_name, secret.expose())?;
            tracing::info!(file = %home.describe(file_name), "generated a new {env_name} and stored it");
            Ok(secret)
        }
    }
}

/// Reads an owner-only file; `None` if it does not exist.
///
/// # Errors
/// [`Error::Config`] when group or others may read it, [`Error::Storage`]
/// when it cannot be read.
pub fn read_private(path: &Path) -> Result<Option<Secret>> {
    match fs::metadata(path) {
        Ok(metadata) => {
            if metadata.permissions().mode() & 0o077 != 0 {
                return Err(Error::Config(format!(
                    "{} is readable by group or others; run `chmod 600 {}`",
                    path.display(),
                    path.display()
                )));
            }
            fs::read_to_string(path)
                .map(|text| Some(Secret::new(text)))
                .map_err(|err| Error::Storage(format!("cannot read {}: {err}", path.display())))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Storage(format!(
            "cannot inspect {}: {err}",
            path.display()
        ))),
    }
}

/// Replaces (or creates) an owner-only file atomically: the new contents go
/// to a temporary file that is synced, then renamed over the old one, so a
/// crash leaves either the old or the new file, never half of one.
///
/// # Errors
/// [`Error::Storage`] when a step fails.
pub fn replace_private(path: &Path, contents: &str) -> Result<()> {
    let temporary = path.with_extension("new");
    // A leftover from a crash would make `create_new` fail.
    let _ = fs::remove_file(&temporary);
    write_owner_only(&temporary, contents)?;
    fs::rename(&temporary, path)
        .map_err(|err| Error::Storage(format!("cannot replace {}: {err}", path.display())))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| Error::Storage(format!("cannot sync {}: {err}", dir.display())))?;
    }
    Ok(())
}

fn check_length(secret: Secret, source: &str) -> Result<Secret> {
    if secret.expose().len() < MIN_SECRET_BYTES {
        return Err(Error::Config(format!(
            "{source} must be at least {MIN_SECRET_BYTES} bytes long; \
             generate one with `openssl rand -hex 32` or unset it to let latchkey generate one"
        )));
    }
    Ok(secret)
}

fn generate() -> Secret {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    Secret::new(
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>(),
    )
}

fn write_owner_only(path: &Path, contents: &str) -> Result<()> {
    let storage_error =
        |err: std::io::Error| Error::Storage(format!("cannot write {}: {err}", path.display()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(storage_error)?;
    file.write_all(contents.as_bytes()).map_err(storage_error)?;
    file.sync_all().map_err(storage_error)
}

/// The file in the data directory holding the key of the [`Sealer`].
pub const FACTOR_KEY_FILE: &str = "factor.key";

/// Encrypts small secrets (TOTP keys) for storage with ChaCha20-Poly1305
/// under a key kept in the data directory (`factor.key`, 0600, generated
/// on first use like the other secrets), so a copy of the database alone
/// does not give away anyone's second factor. Each sealed value is bound
/// to its owner (the associated data): it does not open for anyone else.
pub struct Sealer {
    key: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

/// Bytes of a ChaCha20-Poly1305 nonce.
const NONCE_BYTES: usize = 12;

impl Sealer {
    /// The sealer whose key is kept in `data_dir`, made on first use.
    ///
    /// # Errors
    /// As [`load_or_create`].
    pub fn open(home: &SecretHome) -> Result<Sealer> {
        let secret = load_or_create(home, FACTOR_KEY_FILE, "factor key", None)?;
        Ok(Sealer::from_secret(&secret))
    }

    /// The sealer of the secrets kept in the database, keyed by
    /// `LATCHKEY_MASTER_KEY` (each bound to its name).
    pub fn master(master_key: &Secret) -> Sealer {
        Sealer::derived(b"latchkey 2026 shared secrets\0", master_key)
    }

    /// A sealer keyed by `secret` (at least 32 bytes of it).
    pub fn from_secret(secret: &Secret) -> Sealer {
        // The file holds 512 random bits as hex; a keyed digest of it, bound
        // to this one use, is the 256-bit key.
        Sealer::derived(b"latchkey 2026 second-factor secrets\0", secret)
    }

    fn derived(purpose: &[u8], secret: &Secret) -> Sealer {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(purpose);
        context.update(secret.expose().as_bytes());
        let key = context.finish();
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key.as_ref())
            .expect("invariant: a 32-byte key fits ChaCha20-Poly1305");
        Sealer {
            key: ring::aead::LessSafeKey::new(unbound),
        }
    }

    /// `plain`, encrypted and bound to `owner`: base64url of nonce ‖
    /// ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8], owner: &str) -> String {
        use base64::Engine as _;
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(owner.as_bytes()),
                &mut sealed,
            )
            .expect("invariant: a small value seals");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// The plain value of `sealed`, if it was sealed for `owner` with this key.
    ///
    /// # Errors
    /// [`Error::Storage`] when it does not open (another key, another
    /// owner, or damaged).
    pub fn open_sealed(&self, sealed: &str, owner: &str) -> Result<Vec<u8>> {
        use base64::Engine as _;
        let unreadable = || {
            Error::Storage(format!(
                "a sealed second-factor secret does not open with {FACTOR_KEY_FILE} (was the file replaced?)"
            ))
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| unreadable())?;
        if bytes.len() < NONCE_BYTES {
            return Err(unreadable());
        }
        let (nonce, body) = bytes.split_at(NONCE_BYTES);
        let nonce =
            ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(owner.as_bytes()), &mut body)
            .map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_owner_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = Sealer::open(&SecretHome::Dir(dir.path().to_path_buf())).expect("sealer");
        let sealed = sealer.seal(b"totp key bytes", "user-1");
        assert!(!sealed.contains("totp"));
        assert_eq!(
            sealer.open_sealed(&sealed, "user-1").expect("opens"),
            b"totp key bytes"
        );
        assert!(sealer.open_sealed(&sealed, "user-2").is_err());
        let again =
            Sealer::open(&SecretHome::Dir(dir.path().to_path_buf())).expect("same key file");
        assert!(again.open_sealed(&sealed, "user-1").is_ok());
        let other = tempfile::tempdir().expect("tempdir");
        let stranger =
            Sealer::open(&SecretHome::Dir(other.path().to_path_buf())).expect("other key");
        assert!(stranger.open_sealed(&sealed, "user-1").is_err());
        assert!(sealer.open_sealed("not base64!", "user-1").is_err());
        assert_ne!(
            sealer.seal(b"x", "u"),
            sealer.seal(b"x", "u"),
            "fresh nonces"
        );
    }

    #[test]
    fn a_generated_secret_is_stored_owner_only_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(&SecretHome::Dir(dir.path().to_path_buf()), "k", "K", None)
            .expect("generated");
        let mode = fs::metadata(dir.path().join("k"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(&SecretHome::Dir(dir.path().to_path_buf()), "k", "K", None)
            .expect("loaded");
        assert_eq!(first, second);
        assert!(first.expose().len() >= MIN_SECRET_BYTES);
    }

    #[test]
    fn a_short_configured_secret_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_or_create(
            &SecretHome::Dir(dir.path().to_path_buf()),
            "k",
            "JWT_SECRET",
            Some(&Secret::new("short")),
        )
        .expect_err("too short");
        assert!(
            err.to_string()
                .contains("JWT_SECRET must be at least 32 bytes")
        );
    }

    #[test]
    fn a_world_readable_secret_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(&SecretHome::Dir(dir.path().to_path_buf()), "k", "K", None)
            .expect("generated");
        fs::set_permissions(dir.path().join("k"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = load_or_create(&SecretHome::Dir(dir.path().to_path_buf()), "k", "K", None)
            .expect_err("refused");
        assert!(err.to_string().contains("readable by group or others"));
    }
}
