//! Password hashing with argon2id (the only importer of `argon2`) and the
//! password policy (the only importer of `zxcvbn`).
//!
//! Hashing and verifying take ~20–30 ms of CPU and ~19 MiB of memory each, so
//! they run on tokio's blocking pool behind a semaphore: a login storm queues
//! here instead of starving the async workers that serve token checks. An
//! unknown user is "verified" against a dummy hash so that the response time
//! does not reveal whether an email has an account.
//!
//! The policy follows NIST SP 800-63B §3.1.1.2: length only (8 to 128
//! characters, checked in `model`), no composition rules, and a refusal of
//! passwords that are common (zxcvbn's embedded list of ~30 000 passwords
//! from breach corpora, matched whole, also reversed, capitalized or in l33t),
//! a single repeated, sequential or keyboard pattern, or that contain the
//! username or the email's local part.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version, password_hash::phc::PasswordHash};
use tokio::sync::Semaphore;
use zxcvbn::matching::patterns::MatchPattern;

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

/// Checks a new password against the policy for the account it will protect.
///
/// # Errors
/// [`Error::WeakPassword`] saying which rule it breaks.
pub fn check_policy(password: &Password, username: &str, email: &str) -> Result<()> {
    let lowered = password.expose().to_lowercase();
    let local_part = email.split('@').next().unwrap_or_default().to_lowercase();
    if lowered.contains(&username.to_lowercase()) {
        return Err(weak("password must not contain the username"));
    }
    if local_part.chars().count() >= 3 && lowered.contains(&local_part) {
        return Err(weak("password must not contain the email address"));
    }
    let entropy = zxcvbn::zxcvbn(password.expose(), &[]);
    if let [only] = entropy.sequence() {
        match &only.pattern {
            // zxcvbn does not export its dictionary enum; its default
            // variant is the passwords list (a unit test pins this).
            MatchPattern::Dictionary(word) if word.dictionary_name == Default::default() => {
                return Err(weak(
                    "password is too common: it appears in lists of breached passwords",
                ));
            }
            MatchPattern::Repeat(_) | MatchPattern::Sequence(_) | MatchPattern::Spatial(_) => {
                return Err(weak(
                    "password is a repeated, sequential or keyboard pattern",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn weak(message: &str) -> Error {
    Error::WeakPassword(message.to_owned())
}

/// Whether a stored hash was made with weaker settings than latchkey's
/// current ones (another algorithm or version, or lower memory, time or
/// parallelism cost), so it should be re-hashed at the next login.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let current = Params::DEFAULT;
    let algorithm_current = parsed.algorithm.as_str() == Algorithm::Argon2id.as_str()
        && parsed.version == Some(Version::V0x13.into());
    match Params::try_from(&parsed) {
        Ok(params) => {
            !algorithm_current
                || params.m_cost() < current.m_cost()
                || params.t_cost() < current.t_cost()
                || params.p_cost() < current.p_cost()
        }
        Err(_) => false,
    }
}

/// A hash made with older, weaker settings, as an account from those days has.
#[cfg(test)]
pub(crate) fn weak_hash(password: &str) -> String {
    let params = Params::new(4096, 1, 1, None).expect("params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .expect("hash")
        .to_string()
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

    fn policy(password: &str) -> Result<()> {
        check_policy(
            &Password::parse(password).expect("valid length"),
            "alice_w",
            "alice.wonder@example.com",
        )
    }

    #[test]
    fn common_and_pattern_passwords_are_weak() {
        for common in [
            "password",
            "12345678",
            "iloveyou",
            "Password",
            "drowssap",
            "P@ssw0rd",
            "qwertyuiop",
            "aaaaaaaaaa",
            "abcdefghij",
        ] {
            assert!(
                matches!(policy(common), Err(Error::WeakPassword(_))),
                "{common} should be refused"
            );
        }
    }

    #[test]
    fn passwords_containing_the_username_or_email_are_weak() {
        let Err(Error::WeakPassword(message)) = policy("my ALICE_W rocks 42") else {
            panic!("username should be refused");
        };
        assert!(message.contains("username"));
        let Err(Error::WeakPassword(message)) = policy("alice.wonder 2026!") else {
            panic!("email local part should be refused");
        };
        assert!(message.contains("email"));
    }

    #[test]
    fn ordinary_passphrases_pass() {
        for good in [
            "correct horse battery staple",
            "tr0ub4dor&3x!",
            "blue-kettle-sings-at-noon",
        ] {
            policy(good).unwrap_or_else(|err| panic!("{good}: {err}"));
        }
    }

    #[test]
    fn weaker_parameters_need_a_rehash_and_current_ones_do_not() {
        let current = hash_now("correct horse battery").expect("hash");
        assert!(!needs_rehash(&current));
        assert!(needs_rehash(&weak_hash("correct horse battery")));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::DEFAULT)
            .hash_password(b"correct horse battery")
            .expect("hash")
            .to_string();
        assert!(needs_rehash(&argon2i));
    }
}
