//! One-time codes: the only importer of `totp-rs` and `qrcode`. TOTP as
//! RFC 6238 fixes it for authenticator apps (HMAC-SHA-1, 6 digits, 30 s
//! steps, one step of skew either way), its `otpauth://` URI and QR code,
//! and recovery codes. Depends on `model`, `tokens` (digests) and `error`.

use rand::Rng;
use totp_rs::{Algorithm, Builder, Totp};

use crate::error::{Error, Result};
use crate::model::{Secret, TokenDigest, UnixTime};

/// Bytes in a TOTP key: 160 bits, as RFC 4226 recommends.
const KEY_BYTES: usize = 20;
/// Seconds in a TOTP step.
pub const STEP_SECONDS: u64 = 30;
/// How many recovery codes a set has.
pub const RECOVERY_CODES: usize = 10;
/// Letters of a recovery code: lower-case base32 without `0`, `1`, `l`,
/// `o` (read aloud or copied from paper, they are confused).
const RECOVERY_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Letters in each half of a recovery code (`xxxxx-xxxxx`: 50 bits).
const RECOVERY_HALF: usize = 5;

/// A TOTP key: the shared secret of an authenticator app. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpKey(Vec<u8>);

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpKey(<redacted>)")
    }
}

impl TotpKey {
    /// A new random key.
    pub fn generate() -> TotpKey {
        let mut bytes = vec![0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        TotpKey(bytes)
    }

    /// A key from its raw bytes (as unsealed from storage).
    ///
    /// # Errors
    /// [`Error::Storage`] when it is not a key latchkey made.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<TotpKey> {
        match bytes.len() == KEY_BYTES {
            true => Ok(TotpKey(bytes)),
            false => Err(Error::Storage(
                "a stored TOTP key has the wrong length".into(),
            )),
        }
    }

    /// The raw bytes (to seal for storage).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as authenticator apps take it when typed in: base32, no padding.
    pub fn base32(&self) -> Secret {
        Secret::new(self.totp("x").secret().to_base32())
    }

    /// Checks `code` at `now`, allowing one step of clock skew either way.
    /// Returns the step the code belongs to: a caller accepts each step
    /// once (RFC 6238 §5.2), so a code seen once cannot be replayed.
    /// Spaces in the code are ignored.
    pub fn check(&self, code: &str, now: UnixTime) -> Option<u64> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != 6 || !code.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        self.totp("x").check(&code, now)
    }

    /// The code an authenticator app shows at `time`.
    #[cfg(test)]
    pub fn code_at(&self, time: UnixTime) -> String {
        self.totp("x").generate(time).to_string()
    }

    /// The `otpauth://totp/…` URI authenticator apps import: `issuer`
    /// names the service and `account` the user (a `:` in either is
    /// dropped: the URI's label uses it as separator).
    ///
    /// # Errors
    /// [`Error::Internal`] if the URI cannot be formed.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> Result<String> {
        let issuer: String = issuer.chars().filter(|c| *c != ':').collect();
        let account: String = account.chars().filter(|c| *c != ':').collect();
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.0.clone())
            .with_issuer(Some(issuer))
            .with_account_name(account)
            .build()
            .map_err(|err| Error::Internal(format!("cannot form an otpauth URI: {err}")))?;
        totp.to_url()
            .map_err(|err| Error::Internal(format!("cannot form an otpauth URI: {err}")))
    }

    fn totp(&self, account: &str) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(6)
            .with_skew(1)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.0.clone())
            .with_account_name(account)
            .build_noncompliant()
    }
}

/// `text` (an `otpauth://` URI) as a QR code in a self-contained SVG
/// document, black on white, for an `<img src="data:image/svg+xml,…">`.
///
/// # Errors
/// [`Error::Internal`] if the text is too long for a QR code.
pub fn qr_svg(text: &str) -> Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|err| Error::Internal(format!("cannot draw a QR code: {err}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// A new set of recovery codes (`xxxxx-xxxxx`), each with the digest it is
/// stored under. 50 random bits each: far beyond what the rate limits let
/// anyone guess, so a fast digest is enough (as for refresh tokens).
pub fn new_recovery_codes() -> Vec<(Secret, TokenDigest)> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 2 * RECOVERY_HALF];
            rand::rng().fill_bytes(&mut bytes);
            let mut code = String::with_capacity(2 * RECOVERY_HALF + 1);
            for (at, byte) in bytes.iter().enumerate() {
                if at == RECOVERY_HALF {
                    code.push('-');
                }
                // 32 letters: the low five bits pick one without bias.
                code.push(char::from(RECOVERY_ALPHABET[usize::from(byte & 31)]));
            }
            let digest = recovery_digest(&code).expect("invariant: a generated code has its shape");
            (Secret::new(code), digest)
        })
        .collect()
}

/// The digest a typed recovery code is stored under, or `None` when the
/// text cannot be a recovery code. Case, spaces and the hyphen do not
/// matter (`ABCDE FGHIJ` is `abcde-fghij`).
pub fn recovery_digest(typed: &str) -> Option<TokenDigest> {
    let letters: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let shaped = letters.len() == 2 * RECOVERY_HALF
        && letters
            .bytes()
            .all(|byte| RECOVERY_ALPHABET.contains(&byte));
    shaped.then(|| TokenDigest::of(&format!("recovery:{letters}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 key, "12345678901234567890".
    fn rfc_key() -> TotpKey {
        TotpKey::from_bytes(b"12345678901234567890".to_vec()).expect("20 bytes")
    }

    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        // The RFC's 8-digit values, cut to the 6 digits apps show.
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(rfc_key().code_at(time), code, "at {time}");
            assert_eq!(rfc_key().check(code, time), Some(time / STEP_SECONDS));
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_early_or_late_and_no_further() {
        let key = TotpKey::generate();
        let now = 1_800_000_000;
        let step = now / STEP_SECONDS;
        assert_eq!(key.check(&key.code_at(now - 30), now), Some(step - 1));
        assert_eq!(key.check(&key.code_at(now + 30), now), Some(step + 1));
        assert_eq!(key.check(&key.code_at(now - 60), now), None);
        assert_eq!(key.check(&key.code_at(now + 60), now), None);
        let spaced = key.code_at(now);
        let spaced = format!("{} {}", &spaced[..3], &spaced[3..]);
        assert_eq!(key.check(&spaced, now), Some(step));
        let padded = format!(" {}\t", key.code_at(now));
        assert_eq!(key.check(&padded, now), Some(step));
        for junk in ["", "12345", "1234567", "12345a", "１２３４５６"] {
            assert_eq!(key.check(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_key() {
        let key = rfc_key();
        let uri = key
            .otpauth_uri("auth.example.com", "alice@example.com")
            .expect("uri");
        assert_eq!(
            uri,
            "otpauth://totp/auth.example.com:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=auth.example.com"
        );
        assert_eq!(key.base32().expose(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let svg = qr_svg(&uri).expect("svg");
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    }

    #[test]
    fn recovery_codes_are_distinct_and_match_however_typed() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut digests: Vec<_> = codes.iter().map(|(_, digest)| digest.0).collect();
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), RECOVERY_CODES);
        let (code, digest) = &codes[0];
        let shouted = code.expose().to_uppercase().replace('-', " ");
        assert_eq!(recovery_digest(&shouted), Some(*digest));
        for junk in ["", "abcde-fghi", "abcde-fghi0", "123456"] {
            assert_eq!(recovery_digest(junk), None, "{junk:?}");
        }
    }
}
