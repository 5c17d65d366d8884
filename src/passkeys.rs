//! WebAuthn passkeys: the only importer of `webauthn-rs`. The relying
//! party (its id and the origin browsers run ceremonies from), the options
//! handed to `navigator.credentials`, and the checks of what comes back:
//! origin, challenge, signature, user verification, and the sign counter
//! (a counter that does not move forward means a cloned authenticator).
//!
//! Everything the library keeps between two steps, and each credential,
//! is stored as opaque JSON text: storage and the service never see a
//! webauthn-rs type. Depends on `model`, `error` and `config`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webauthn_rs::prelude::{
    Credential, DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Amr, PasskeyRecord, UnixTime, User};

/// Seconds a browser is given to finish a ceremony (and a challenge lives).
pub const CEREMONY_SECONDS: u64 = 300;

/// The relying party, or why there is none.
pub struct Passkeys {
    party: std::result::Result<Webauthn, String>,
    origin: Option<String>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys")
            .field("origin", &self.origin)
            .finish()
    }
}

/// What a finished sign-in proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The `amr` of the session: `hwk` (a device-bound key) or `swk` (a
    /// synced one), and `mfa` (the key and the user verification that
    /// unlocked it).
    pub amr: Vec<String>,
}

/// A sign-in assertion as presented, before it is checked.
pub struct Assertion {
    credential: PublicKeyCredential,
    /// The credential id, base64url.
    pub credential_id: String,
    /// The account the authenticator names (a discoverable sign-in), if it
    /// names a well-formed one.
    pub user_id: Option<String>,
}

/// The state kept between the two steps of a sign-in.
#[derive(Serialize, Deserialize)]
struct SignInState(DiscoverableAuthentication);

impl Passkeys {
    /// The relying party `config` describes: `--webauthn-rp-id` and
    /// `--webauthn-origin`, else both from `--public-url` (a loopback IP
    /// becomes `localhost`: browsers refuse passkeys on IP addresses).
    /// Without a usable origin, passkeys are unavailable (each passkey
    /// operation says why) and the rest of latchkey works.
    ///
    /// # Errors
    /// [`Error::Config`] when `--webauthn-rp-id` or `--webauthn-origin`
    /// is set and they do not fit together.
    pub fn new(config: &Config) -> Result<Passkeys> {
        let explicit = config.webauthn_origin.is_some() || config.webauthn_rp_id.is_some();
        let origin = match (&config.webauthn_origin, &config.public_url) {
            (Some(origin), _) => Some(origin.clone()),
            (None, Some(public)) => Some(origin_of(public)),
            (None, None) => None,
        };
        let Some(origin) = origin else {
            return Ok(Passkeys {
                party: Err("passkeys need --public-url or --webauthn-origin".into()),
                origin: None,
            });
        };
        let party = build_party(config.webauthn_rp_id.as_deref(), &origin);
        match party {
            Err(err) if explicit => Err(Error::Config(err)),
            party => {
                if let Err(reason) = &party {
                    tracing::warn!(%reason, "passkeys are off");
                }
                Ok(Passkeys {
                    party,
                    origin: Some(origin),
                })
            }
        }
    }

    /// The origin browsers must run ceremonies from, when passkeys work.
    pub fn origin(&self) -> Option<&str> {
        self.party.as_ref().ok().and(self.origin.as_deref())
    }

    /// Whether passkeys work with this configuration.
    ///
    /// # Errors
    /// [`Error::PasskeysUnavailable`], saying why not.
    pub fn available(&self) -> Result<()> {
        self.party().map(drop)
    }

    fn party(&self) -> Result<&Webauthn> {
        self.party
            .as_ref()
            .map_err(|reason| Error::PasskeysUnavailable(reason.clone()))
    }

    /// Starts registering a passkey for `user`, who already has `existing`
    /// (which the authenticator is asked not to register twice). Returns
    /// the creation options (`{"publicKey": …}`, base64url binary fields)
    /// and the state to keep for [`Passkeys::finish_registration`].
    ///
    /// # Errors
    /// [`Error::PasskeysUnavailable`], [`Error::Internal`].
    pub fn start_registration(
        &self,
        user: &User,
        existing: &[PasskeyRecord],
    ) -> Result<(Value, String)> {
        let party = self.party()?;
        let handle = user_handle(user)?;
        let exclude = existing
            .iter()
            .filter_map(|record| decode_id(&record.id))
            .collect::<Vec<_>>();
        let (options, state) = party
            .start_passkey_registration(handle, &user.email, &user.username, Some(exclude))
            .map_err(|err| {
                Error::Internal(format!("cannot start a passkey registration: {err}"))
            })?;
        let mut options = to_value(&options)?;
        // Ask for a discoverable credential where the authenticator can
        // make one, so the passkey also signs in without an email.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(Value::as_object_mut)
        {
            selection.insert("residentKey".into(), Value::from("preferred"));
            selection.insert("requireResidentKey".into(), Value::from(false));
        }
        Ok((options, to_text(&state)?))
    }

    /// Checks a registration response against the `state` of its start and
    /// turns it into a passkey record named `name`.
    ///
    /// # Errors
    /// [`Error::PasskeyRegistrationInvalid`] when the response does not
    /// parse or fails a check (origin, challenge, user verification…);
    /// [`Error::PasskeysUnavailable`].
    pub fn finish_registration(
        &self,
        response: &Value,
        state: &str,
        name: &str,
        now: UnixTime,
    ) -> Result<PasskeyRecord> {
        let party = self.party()?;
        let state: PasskeyRegistration = from_text(state)?;
        if response.get("type").and_then(Value::as_str) != Some("public-key") {
            return Err(Error::PasskeyRegistrationInvalid(
                "credential: type must be \"public-key\"".into(),
            ));
        }
        let response: RegisterPublicKeyCredential = serde_json::from_value(response.clone())
            .map_err(|err| {
                Error::PasskeyRegistrationInvalid(format!(
                    "credential: not a WebAuthn registration response ({err})"
                ))
            })?;
        let passkey = party
            .finish_passkey_registration(&response, &state)
            .map_err(|err| Error::PasskeyRegistrationInvalid(describe(&err)))?;
        let credential = Credential::from(passkey.clone());
        Ok(PasskeyRecord {
            id: encode_id(passkey.cred_id()),
            name: name.to_owned(),
            created_at: now,
            last_used_at: None,
            counter: credential.counter,
            backup_eligible: credential.backup_eligible,
            backup_state: credential.backup_state,
            credential: to_text(&passkey)?,
        })
    }

    /// Starts a sign-in. With `allowed` passkeys (of the account the client
    /// named) the options list them; without, any discoverable passkey of
    /// any account may answer. Returns the request options
    /// (`{"publicKey": …}`) and the state to keep.
    ///
    /// # Errors
    /// [`Error::PasskeysUnavailable`], [`Error::Internal`].
    pub fn start_sign_in(&self, allowed: &[PasskeyRecord]) -> Result<(Value, String)> {
        let party = self.party()?;
        let (options, state) = party
            .start_discoverable_authentication()
            .map_err(|err| Error::Internal(format!("cannot start a passkey sign-in: {err}")))?;
        let mut options = to_value(&options)?;
        if let Some(object) = options.as_object_mut() {
            // For a sign-in button, not the autofill of a username field.
            object.remove("mediation");
        }
        if !allowed.is_empty()
            && let Some(list) = options
                .pointer_mut("/publicKey/allowCredentials")
                .and_then(Value::as_array_mut)
        {
            for record in allowed {
                list.push(serde_json::json!({"type": "public-key", "id": record.id}));
            }
        }
        Ok((options, to_text(&SignInState(state))?))
    }

    /// Reads a sign-in response: which credential, and which account it
    /// names (if it names one).
    ///
    /// # Errors
    /// [`Error::PasskeyInvalid`] when it does not parse.
    pub fn read_assertion(&self, response: &Value) -> Result<Assertion> {
        let party = self.party()?;
        if response.get("type").and_then(Value::as_str) != Some("public-key") {
            return Err(Error::PasskeyInvalid);
        }
        let credential: PublicKeyCredential =
            serde_json::from_value(response.clone()).map_err(|_| Error::PasskeyInvalid)?;
        let user_id = party
            .identify_discoverable_authentication(&credential)
            .ok()
            .map(|(handle, _)| handle.to_string());
        Ok(Assertion {
            credential_id: encode_id(&credential.raw_id),
            credential,
            user_id,
        })
    }

    /// Checks a sign-in `assertion` against the `state` of its start and
    /// the stored `record` of its credential, and brings the record up to
    /// date (counter, backup state, last use).
    ///
    /// # Errors
    /// [`Error::PasskeyCounterRegressed`] when the sign counter did not
    /// move forward (a cloned authenticator); [`Error::PasskeyInvalid`]
    /// for any other failed check.
    pub fn finish_sign_in(
        &self,
        assertion: &Assertion,
        state: &str,
        record: &mut PasskeyRecord,
        now: UnixTime,
    ) -> Result<SignedIn> {
        let party = self.party()?;
        let SignInState(state) = from_text(state)?;
        let mut passkey: Passkey = from_text(&record.credential)?;
        let result = party
            .finish_discoverable_authentication_v2(&assertion.credential, state, &passkey)
            .map_err(|err| match err {
                WebauthnError::CredentialPossibleCompromise => Error::PasskeyCounterRegressed,
                other => {
                    tracing::info!(reason = %describe(&other), "passkey sign-in refused");
                    Error::PasskeyInvalid
                }
            })?;
        passkey.update_credential(&result);
        let credential = Credential::from(passkey.clone());
        record.counter = credential.counter;
        record.backup_eligible = credential.backup_eligible;
        record.backup_state = credential.backup_state;
        record.last_used_at = Some(now);
        record.credential = to_text(&passkey)?;
        let key = match record.backup_eligible {
            true => Amr::Swk,
            false => Amr::Hwk,
        };
        Ok(SignedIn {
            amr: Amr::list(&[key, Amr::Mfa]),
        })
    }
}

/// `scheme://host[:port]` of a public URL; a loopback IP host becomes
/// `localhost`.
fn origin_of(public: &str) -> String {
    let (scheme, rest) = public.split_once("://").unwrap_or(("http", public));
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, Some(port))
        }
        _ => (authority, None),
    };
    let host = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => "localhost",
        _ => host,
    };
    match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

fn build_party(rp_id: Option<&str>, origin: &str) -> std::result::Result<Webauthn, String> {
    let url = Url::parse(origin)
        .map_err(|err| format!("--webauthn-origin {origin:?} is not a URL: {err}"))?;
    let Some(domain) = url.domain() else {
        return Err(format!(
            "passkeys need an origin with a domain name, not {origin:?}: browsers refuse them on IP addresses; set --public-url or --webauthn-origin (http://localhost:PORT works on one machine)"
        ));
    };
    let rp_id = rp_id.unwrap_or(domain);
    let misfit = || {
        format!(
            "--webauthn-rp-id {rp_id:?} must be the origin's host {domain:?} or a parent domain of it"
        )
    };
    // Checked here too, so the library has nothing to log about it.
    if domain != rp_id && !domain.ends_with(&format!(".{rp_id}")) {
        return Err(misfit());
    }
    WebauthnBuilder::new(rp_id, &url)
        .and_then(|builder| {
            builder
                .rp_name("latchkey")
                .timeout(std::time::Duration::from_secs(CEREMONY_SECONDS))
                .build()
        })
        .map_err(|_| misfit())
}

/// The WebAuthn user handle of an account: its id (a UUID).
fn user_handle(user: &User) -> Result<Uuid> {
    Uuid::parse_str(&user.id)
        .map_err(|_| Error::Internal(format!("user id {} is not a UUID", user.id)))
}

fn encode_id(id: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

fn decode_id(id: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()
}

/// A failed ceremony, in words for the client (no secret is in it).
fn describe(err: &WebauthnError) -> String {
    match err {
        WebauthnError::InvalidRPOrigin => "the ceremony ran on another origin".into(),
        WebauthnError::MismatchedChallenge => "the response is for another challenge".into(),
        WebauthnError::UserNotVerified => "the authenticator did not verify the user".into(),
        WebauthnError::CredentialAlteredAlgFromRequest => {
            "this passkey is already registered".into()
        }
        other => format!("the response failed a check ({other})"),
    }
}

fn to_value<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|err| Error::Internal(format!("cannot encode WebAuthn options: {err}")))
}

fn to_text<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|err| Error::Internal(format!("cannot encode WebAuthn state: {err}")))
}

fn from_text<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|err| Error::Storage(format!("unreadable WebAuthn state: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_comes_from_the_public_url_with_loopback_as_localhost() {
        for (public, origin) in [
            ("http://127.0.0.1:5000", "http://localhost:5000"),
            ("http://[::1]:8080/auth", "http://localhost:8080"),
            ("https://auth.example.com/base", "https://auth.example.com"),
            (
                "https://auth.example.com:8443",
                "https://auth.example.com:8443",
            ),
            ("http://10.0.0.5:80", "http://10.0.0.5:80"),
        ] {
            assert_eq!(origin_of(public), origin, "{public}");
        }
    }

    #[test]
    fn a_relying_party_needs_a_domain_and_a_fitting_id() {
        assert!(build_party(None, "http://localhost:5000").is_ok());
        assert!(build_party(Some("example.com"), "https://auth.example.com").is_ok());
        let ip = build_party(None, "http://10.0.0.5:80").expect_err("IP");
        assert!(ip.contains("domain name"), "{ip}");
        let foreign =
            build_party(Some("evil.com"), "https://auth.example.com").expect_err("foreign");
        assert!(foreign.contains("--webauthn-rp-id"), "{foreign}");
    }
}
