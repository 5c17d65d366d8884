//! Device tokens (OWASP's "device cookie"): after a successful login a
//! client gets a token that names the account and a random device id,
//! signed with a key derived from the refresh secret. Presented with a later
//! login for the same account, it lets the attempt count against that
//! device's own rate limit instead of the account's shared one, so strangers
//! guessing the password cannot throttle the owner's known devices. It
//! grants nothing else, so it is stateless.
//!
//! Form: base64url of `device id (16 bytes) ‖ expiry (8 bytes, big-endian) ‖
//! blake3 keyed hash (32 bytes)` of `email ‖ 0 ‖ device id ‖ expiry`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;

use crate::model::{Secret, UnixTime};

/// How long a device token is honoured after its login.
pub const DEVICE_TOKEN_TTL: u64 = 180 * 86_400;

const ID_BYTES: usize = 16;
const TOKEN_BYTES: usize = ID_BYTES + 8 + 32;

/// Signs and checks device tokens.
pub(crate) struct DeviceTokens {
    key: [u8; 32],
}

impl DeviceTokens {
    /// Keys derived from the refresh secret (rotating it forgets every device).
    pub(crate) fn new(refresh_secret: &Secret) -> Self {
        DeviceTokens {
            key: blake3::derive_key(
                "latchkey 2026 device token",
                refresh_secret.expose().as_bytes(),
            ),
        }
    }

    /// A token for a new device that logged in to `email` at `now`.
    pub(crate) fn issue(&self, email: &str, now: UnixTime) -> Secret {
        let mut id = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut id);
        let expires_at = now.saturating_add(DEVICE_TOKEN_TTL);
        let mut token = Vec::with_capacity(TOKEN_BYTES);
        token.extend_from_slice(&id);
        token.extend_from_slice(&expires_at.to_be_bytes());
        token.extend_from_slice(self.mac(email, &id, expires_at).as_bytes());
        Secret::new(URL_SAFE_NO_PAD.encode(token))
    }

    /// The device id of `token` if it is ours, names `email` and has not
    /// expired at `now`.
    pub(crate) fn verify(&self, token: &str, email: &str, now: UnixTime) -> Option<String> {
        if token.len() > 2 * TOKEN_BYTES {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != TOKEN_BYTES {
            return None;
        }
        let (id, rest) = bytes.split_at(ID_BYTES);
        let (expiry, mac) = rest.split_at(8);
        let expires_at = u64::from_be_bytes(expiry.try_into().ok()?);
        let mac: [u8; 32] = mac.try_into().ok()?;
        // blake3::Hash compares in constant time.
        let genuine = self.mac(email, id, expires_at) == blake3::Hash::from(mac);
        (genuine && now < expires_at).then(|| id.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    fn mac(&self, email: &str, id: &[u8], expires_at: UnixTime) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(email.as_bytes());
        hasher.update(&[0]);
        hasher.update(id);
        hasher.update(&expires_at.to_be_bytes());
        hasher.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_token_is_honoured_only_for_its_account_until_it_expires() {
        let devices = DeviceTokens::new(&Secret::new("r".repeat(32)));
        let token = devices.issue("alice@example.com", 1_000);
        let id = devices
            .verify(token.expose(), "alice@example.com", 1_001)
            .expect("valid");
        assert_eq!(id.len(), 32);
        assert!(
            devices
                .verify(token.expose(), "bob@example.com", 1_001)
                .is_none()
        );
        assert!(
            devices
                .verify(
                    token.expose(),
                    "alice@example.com",
                    1_000 + DEVICE_TOKEN_TTL
                )
                .is_none()
        );
        let other_secret = DeviceTokens::new(&Secret::new("s".repeat(32)));
        assert!(
            other_secret
                .verify(token.expose(), "alice@example.com", 1_001)
                .is_none()
        );
        let mut forged = URL_SAFE_NO_PAD.decode(token.expose()).expect("base64");
        forged[0] ^= 1;
        assert!(
            devices
                .verify(&URL_SAFE_NO_PAD.encode(forged), "alice@example.com", 1_001)
                .is_none()
        );
        assert!(
            devices
                .verify("garbage", "alice@example.com", 1_001)
                .is_none()
        );
        assert_ne!(
            devices.issue("alice@example.com", 1_000).expose(),
            token.expose(),
            "every device gets its own id"
        );
    }
}
