//! The Passkeys tag, `/api/auth/passkeys/…`: registering, listing and
//! removing passkeys, and signing in with one.

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde_json::Value;

use super::ApiTags;
use super::auth::{AuthUser, client_of};
use super::auth_api::TokenResponse;
use super::error::error_responses;
use super::fields;
use super::views::PasskeyView;
use crate::service::{Ceremony, Latchkey};

/// The Passkeys operations.
#[derive(Default)]
pub(super) struct PasskeysApi;

/// A passkey registration's first step.
#[derive(Object)]
#[oai(example)]
pub(super) struct RegisterStart {
    /// What to call the passkey (at most 64 characters); default "Passkey N".
    #[oai(
        deserialize_with = "fields::optional_passkey_name",
        skip_serializing_if_is_none
    )]
    name: Option<fields::PasskeyName>,
}

impl Example for RegisterStart {
    fn example() -> Self {
        RegisterStart {
            name: Some(fields::PasskeyName("Laptop".into())),
        }
    }
}

/// A sign-in's first step.
#[derive(Object)]
#[oai(example)]
pub(super) struct SignInStart {
    /// The account's email: the options then name its passkeys. Without
    /// it, any discoverable passkey may answer (a usernameless sign-in).
    #[oai(
        deserialize_with = "fields::optional_email",
        skip_serializing_if_is_none
    )]
    email: Option<fields::EmailAddress>,
}

impl Example for SignInStart {
    fn example() -> Self {
        SignInStart { email: None }
    }
}

/// A ceremony's second step: the browser's answer to the options.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
pub(super) struct Finish {
    /// The `challengeId` of the first step (single-use, 5 minutes).
    challenge_id: fields::ChallengeId,
    /// What `navigator.credentials.create()` or `.get()` resolved to,
    /// serialized with its `toJSON()`.
    credential: fields::Credential,
}

/// The options for the browser, and the id to finish with.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct CeremonyBody {
    /// Send it back with the browser's answer (single-use, 5 minutes).
    challenge_id: String,
    /// The options for `navigator.credentials.create({publicKey})` or
    /// `.get({publicKey})`, binary fields base64url (as
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` and
    /// `parseRequestOptionsFromJSON` take them).
    public_key: Value,
}

impl CeremonyBody {
    fn of(ceremony: Ceremony) -> Self {
        let public_key = match ceremony.options {
            Value::Object(mut object) => object.remove("publicKey").unwrap_or_default(),
            other => other,
        };
        CeremonyBody {
            challenge_id: ceremony.challenge_id.expose().to_owned(),
            public_key,
        }
    }
}

/// The caller's passkeys.
#[derive(Object)]
struct PasskeysBody {
    /// Oldest first.
    passkeys: Vec<PasskeyView>,
}

#[derive(ApiResponse)]
enum CeremonyResponse {
    /// The options for the browser.
    #[oai(status = 200)]
    Ok(
        Json<CeremonyBody>,
        /// Always `no-store`.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

impl CeremonyResponse {
    fn of(ceremony: Ceremony) -> Self {
        CeremonyResponse::Ok(Json(CeremonyBody::of(ceremony)), "no-store".into())
    }
}

error_responses!(RegisterStartError with body {
    /// `invalid_input`: a name too long or with control characters.
    400 => BadRequest,
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `reauthentication_required`: the session signed in more than 10
    /// minutes ago; log in again, then retry.
    403 => Forbidden,
    /// `passkey_limit_reached`: 20 passkeys; remove one first.
    409 => Conflict,
    /// `rate_limited`: too many ceremonies from this client; see `Retry-After`.
    429 => TooManyRequests,
});

#[derive(ApiResponse)]
enum RegisteredResponse {
    /// The passkey can sign in from now on.
    #[oai(status = 201)]
    Created(Json<PasskeyView>),
}

error_responses!(RegisterFinishError with body {
    /// `invalid_input` (a field missing or of the wrong type) or
    /// `passkey_registration_invalid` (the browser's answer failed a check,
    /// the `challengeId` is unknown, used or expired, or the passkey is
    /// already registered; the message says which).
    400 => BadRequest,
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `passkey_limit_reached`.
    409 => Conflict,
});

#[derive(ApiResponse)]
enum ListResponse {
    /// The caller's passkeys.
    #[oai(status = 200)]
    Ok(Json<PasskeysBody>),
}

error_responses!(ListError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
});

#[derive(ApiResponse)]
enum RemovedResponse {
    /// The passkey can no longer sign in.
    #[oai(status = 204)]
    Removed,
}

error_responses!(RemoveError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `reauthentication_required`: the session signed in more than 10
    /// minutes ago; log in again, then retry.
    403 => Forbidden,
    /// `passkey_not_found`.
    404 => NotFound,
});

error_responses!(SignInStartError with body {
    /// `invalid_input`: a malformed email.
    400 => BadRequest,
    /// `rate_limited`: too many sign-ins from this client; see `Retry-After`.
    429 => TooManyRequests,
});

error_responses!(SignInFinishError with body {
    /// `invalid_input`: a field missing or of the wrong type.
    400 => BadRequest,
    /// `passkey_invalid`: the answer failed a check, the passkey is not
    /// registered (or not to the account the sign-in started for), the
    /// `challengeId` is unknown, used or expired, or the authenticator's
    /// counter went backwards (a cloned authenticator).
    401 => Unauthorized,
    /// `account_disabled`, or `email_not_verified` (with
    /// `--require-verified-email`).
    403 => Forbidden,
    /// `rate_limited`; see `Retry-After`.
    429 => TooManyRequests,
});

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Passkeys")]
impl PasskeysApi {
    /// Start registering a passkey
    ///
    /// Returns the options for `navigator.credentials.create({publicKey})`
    /// and a `challengeId` to finish with. The passkey is bound to
    /// `--webauthn-rp-id`, and the browser page must be on
    /// `--webauthn-origin` (both default from `--public-url`). Needs a
    /// session that signed in within the last 10 minutes.
    #[oai(path = "/passkeys/register/start", method = "post")]
    async fn register_start(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<RegisterStart>,
    ) -> Result<CeremonyResponse, RegisterStartError> {
        let name = body.name.as_ref().map(|name| name.0.as_str());
        let ceremony = core
            .start_passkey_registration(
                auth.user_id(),
                auth.session_id(),
                name,
                client_of(request, &core),
            )
            .await?;
        Ok(CeremonyResponse::of(ceremony))
    }

    /// Finish registering a passkey
    ///
    /// Checks the browser's answer (origin, challenge, user verification,
    /// attestation) and keeps the passkey. A notice is mailed.
    #[oai(path = "/passkeys/register/finish", method = "post")]
    async fn register_finish(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<Finish>,
    ) -> Result<RegisteredResponse, RegisterFinishError> {
        let record = core
            .finish_passkey_registration(
                auth.user_id(),
                &body.challenge_id,
                &body.credential.0,
                client_of(request, &core),
            )
            .await?;
        Ok(RegisteredResponse::Created(Json(PasskeyView::from(
            &record,
        ))))
    }

    /// List passkeys
    #[oai(path = "/passkeys", method = "get")]
    async fn list(&self, core: Data<&Latchkey>, auth: AuthUser) -> Result<ListResponse, ListError> {
        let passkeys = core.passkeys(auth.user_id()).await?;
        Ok(ListResponse::Ok(Json(PasskeysBody {
            passkeys: passkeys.iter().map(PasskeyView::from).collect(),
        })))
    }

    /// Remove a passkey
    ///
    /// Needs a session that signed in within the last 10 minutes. A notice
    /// is mailed.
    #[oai(path = "/passkeys/:id", method = "delete")]
    async fn remove(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        /// The passkey's `id`.
        id: Path<String>,
    ) -> Result<RemovedResponse, RemoveError> {
        core.remove_passkey(
            auth.user_id(),
            auth.session_id(),
            &id,
            client_of(request, &core),
        )
        .await?;
        Ok(RemovedResponse::Removed)
    }

    /// Start a passkey sign-in
    ///
    /// Returns the options for `navigator.credentials.get({publicKey})`
    /// and a `challengeId`. With `email`, the options list that account's
    /// passkeys; without, the browser offers any passkey it holds for this
    /// site (a usernameless sign-in).
    #[oai(path = "/passkeys/login/start", method = "post")]
    async fn login_start(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<SignInStart>,
    ) -> Result<CeremonyResponse, SignInStartError> {
        let email = body.email.as_ref().map(|email| email.0.as_str());
        let ceremony = core
            .start_passkey_sign_in(email, client_of(request, &core))
            .await?;
        Ok(CeremonyResponse::of(ceremony))
    }

    /// Sign in with a passkey
    ///
    /// Checks the browser's answer and starts a session: answers exactly as
    /// a login (an access token and the `refresh_token` cookie), with `amr`
    /// `["hwk","mfa"]` (a device-bound passkey) or `["swk","mfa"]` (a
    /// synced one). No password and no second step.
    #[oai(path = "/passkeys/login/finish", method = "post")]
    async fn login_finish(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<Finish>,
    ) -> Result<TokenResponse, SignInFinishError> {
        let pair = core
            .finish_passkey_sign_in(
                &body.challenge_id,
                &body.credential.0,
                client_of(request, &core),
            )
            .await?;
        Ok(TokenResponse::logged_in(
            request,
            &core,
            "/api/auth/passkeys/login/finish",
            pair,
        ))
    }
}
