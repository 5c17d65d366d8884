//! Password hashing with argon2id: the only importer of `argon2`.
//!
//! Hashing and verifying take ~20–30 ms of CPU and ~19 MiB of memory each, so
//! they run on tokio's blocking pool behind a semaphore: a login storm queues
//! here instead of starving the async workers that serve token checks. An
//! unknown user is "verified" against a dummy hash so that the response time
//! does not reveal whether an email has an account.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, password_hash::phc::PasswordHash};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::model::Password;

/// Hashes and verifies passwords with bounded concurrency.
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// A hasher running at most `concurrency` (at least 1) hashes at once.
    /// Computes the dummy hash once, which takes one hash's time.
    ///
    /// # Errors
    /// [`Error::Internal`] if argon2 fails.
    pub fn new(concurrency: usize) -> Result<Self> {
        let dummy_hash = hash_now("latchkey dummy password, never matches")?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The default concurrency: one less than the cores, at least one.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism()
            .map(|cores| cores.get().saturating_sub(1))
            .unwrap_or(1)
            .max(1)
    }

    /// Hashes a password to an argon2id PHC string (OWASP minimum parameters:
    /// m=19456 KiB, t=2, p=1, random salt).
    ///
    /// # Errors
    /// [`Error::Internal`] if argon2 or the blocking pool fails.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let password = password.clone();
        self.run_blocking(move || hash_now(password.expose())).await
    }

    /// Checks `password` against a stored PHC string; with `None` (no such
    /// user) it spends the same time on a dummy hash and returns `false`.
    ///
    /// # Errors
    /// [`Error::Internal`] if the stored hash cannot be parsed or the pool fails.
    pub async fn verify(&self, password: &Password, stored: Option<&str>) -> Result<bool> {
        let password = password.clone();
        let known = stored.is_some();
        let phc: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let matches = self
            .run_blocking(move || {
                let parsed = PasswordHash::new(&phc).map_err(|err| {
                    Error::Internal(format!("stored password hash is unreadable: {err}"))
                })?;
                Ok(Argon2::default()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("password hasher is shut down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| Error::Internal(format!("password task failed: {err}")))?
    }
}

fn hash_now(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| Error::Internal(format!("cannot hash a password: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let passwords = Passwords::new(1).expect("hasher");
        let right = Password::parse("correct horse battery").expect("valid");
        let wrong = Password::parse("incorrect horse battery").expect("valid");
        let hash = passwords.hash(&right).await.expect("hashed");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            passwords
                .verify(&right, Some(&hash))
                .await
                .expect("verified")
        );
        assert!(
            !passwords
                .verify(&wrong, Some(&hash))
                .await
                .expect("verified")
        );
    }

    #[tokio::test]
    async fn an_unknown_user_never_verifies() {
        let passwords = Passwords::new(1).expect("hasher");
        let guess = Password::parse("latchkey dummy password, never matches").expect("valid");
        assert!(!passwords.verify(&guess, None).await.expect("verified"));
    }
}
