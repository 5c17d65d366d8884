//! The signing secrets: taken from the configuration when set, otherwise
//! generated once with the OS-seeded CSPRNG and kept in the data directory as
//! owner-only (0600) files, so latchkey starts with zero configuration and its
//! tokens survive a restart. Also the owner-only file handling other private
//! files (the signing key ring) use. Depends on `model` and `error` only.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::Rng;

use crate::error::{Error, Result};
use crate::model::Secret;

/// Shortest secret accepted: HS256 keys shorter than the hash output weaken it (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;
/// Random bytes in a generated secret (stored hex-encoded).
const GENERATED_SECRET_BYTES: usize = 64;

/// Returns the configured secret, or the one kept at `data_dir/file_name`,
/// generating and storing it on first use.
///
/// `env_name` only names the variable in error messages.
///
/// # Errors
/// [`Error::Config`] when a configured or stored secret is shorter than
/// [`MIN_SECRET_BYTES`], or when the stored file is readable by group or others;
/// [`Error::Storage`] when the file cannot be read or written.
pub fn load_or_create(
    data_dir: &Path,
    file_name: &str,
    env_name: &str,
    configured: Option<&Secret>,
) -> Result<Secret> {
    if let Some(secret) = configured {
        return check_length(secret.clone(), env_name);
    }
    let path = data_dir.join(file_name);
    match read_private(&path)? {
        Some(text) => check_length(
            Secret::new(text.expose().trim()),
            &path.display().to_string(),
        ),
        None => {
            let secret = generate();
            write_owner_only(&path, secret.expose())?;
            tracing::info!(file = %path.display(), "generated a new {env_name} and stored it in the data directory");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_stored_owner_only_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path(), "k", "K", None).expect("generated");
        let mode = fs::metadata(dir.path().join("k"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path(), "k", "K", None).expect("loaded");
        assert_eq!(first, second);
        assert!(first.expose().len() >= MIN_SECRET_BYTES);
    }

    #[test]
    fn a_short_configured_secret_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_or_create(dir.path(), "k", "JWT_SECRET", Some(&Secret::new("short")))
            .expect_err("too short");
        assert!(
            err.to_string()
                .contains("JWT_SECRET must be at least 32 bytes")
        );
    }

    #[test]
    fn a_world_readable_secret_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path(), "k", "K", None).expect("generated");
        fs::set_permissions(dir.path().join("k"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = load_or_create(dir.path(), "k", "K", None).expect_err("refused");
        assert!(err.to_string().contains("readable by group or others"));
    }
}
