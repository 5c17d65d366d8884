//! The SecondFactors tag, `/api/auth/mfa/…`: setting up TOTP, removing
//! it, renewing recovery codes, and the second step of a login.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::{AuthUser, client_of};
use super::auth_api::TokenResponse;
use super::error::error_responses;
use super::fields;
use crate::model::Secret;
use crate::service::Latchkey;

const NO_STORE: &str = "no-store";

/// The SecondFactors operations.
#[derive(Default)]
pub(super) struct MfaApi;

/// A code that proves the caller holds their second factor.
#[derive(Object)]
#[oai(example)]
pub(super) struct CodeRequest {
    /// A 6-digit code from the authenticator app, or (where the operation
    /// says so) an unused recovery code (`xxxxx-xxxxx`).
    code: fields::Code,
}

impl Example for CodeRequest {
    fn example() -> Self {
        CodeRequest {
            code: fields::Code("123456".into()),
        }
    }
}

/// The second step of a login.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct VerifyRequest {
    /// The `mfaToken` of the `mfa_required` answer to the password.
    mfa_token: fields::MfaToken,
    /// A 6-digit code from the authenticator app, or an unused recovery code.
    code: fields::Code,
}

impl Example for VerifyRequest {
    fn example() -> Self {
        VerifyRequest {
            mfa_token: fields::MfaToken("Zk3uG0hX7Q3hJpVw1m2yQe8tR5aB9cD0eF1gH2iJ3kL".into()),
            code: fields::Code("123456".into()),
        }
    }
}

/// A new TOTP factor, pending until its first code is confirmed.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct TotpSetupBody {
    /// The key, base32, to type into an authenticator app.
    secret: String,
    /// The `otpauth://totp/…` URI apps import (the QR code's content).
    otpauth_uri: String,
    /// The URI as a QR code: an SVG document, for
    /// `<img src="data:image/svg+xml;utf8,…">`.
    qr_svg: String,
}

/// Recovery codes, shown this once.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
struct RecoveryCodesBody {
    /// Ten single-use codes that stand in for an authenticator code. Only
    /// their digests are kept: store them now.
    recovery_codes: Vec<String>,
}

impl Example for RecoveryCodesBody {
    fn example() -> Self {
        RecoveryCodesBody {
            recovery_codes: vec!["k7dnq-4rxw2".into(), "pz3ha-m9tcv".into()],
        }
    }
}

impl RecoveryCodesBody {
    fn of(codes: Vec<Secret>) -> Self {
        RecoveryCodesBody {
            recovery_codes: codes
                .into_iter()
                .map(|code| code.expose().to_owned())
                .collect(),
        }
    }
}

#[derive(ApiResponse)]
enum SetupResponse {
    /// The pending factor: show the QR code, then confirm a code.
    #[oai(status = 200)]
    Ok(
        Json<TotpSetupBody>,
        /// Always `no-store`: the key must not be cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

error_responses!(SetupError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `reauthentication_required`: the session signed in more than 10
    /// minutes ago; log in again, then retry.
    403 => Forbidden,
    /// `mfa_already_enabled`: remove the confirmed factor first.
    409 => Conflict,
});

#[derive(ApiResponse)]
enum CodesResponse {
    /// The recovery codes, shown this once.
    #[oai(status = 200)]
    Ok(
        Json<RecoveryCodesBody>,
        /// Always `no-store`: the codes must not be cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

impl CodesResponse {
    fn of(codes: Vec<Secret>) -> Self {
        CodesResponse::Ok(Json(RecoveryCodesBody::of(codes)), NO_STORE.into())
    }
}

error_responses!(CodeError with body {
    /// `invalid_input` (`code` missing or not a string) or
    /// `mfa_invalid_code` (wrong, or already used).
    400 => BadRequest,
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `mfa_locked`: 100 wrong codes in a row; a password reset by email
    /// or an administrator's reset unlocks it.
    403 => Forbidden,
    /// `mfa_not_enabled` (nothing to confirm or remove) or
    /// `mfa_already_enabled` (already confirmed).
    409 => Conflict,
    /// `rate_limited`: too many codes tried; `Retry-After` says when to retry.
    429 => TooManyRequests,
});

#[derive(ApiResponse)]
enum RemovedResponse {
    /// The factor and its recovery codes are gone.
    #[oai(status = 204)]
    Removed,
}

error_responses!(VerifyError with body {
    /// `invalid_input`: a field is missing or not a string.
    400 => BadRequest,
    /// `mfa_invalid_code` (a wrong, used or replayed code; the fifth ends
    /// the token) or `mfa_token_invalid` (unknown, used or expired, or the
    /// account changed its password since: log in again).
    401 => Unauthorized,
    /// `account_disabled`, or `mfa_locked` (100 wrong codes in a row: a
    /// password reset by email or an administrator's reset unlocks it).
    403 => Forbidden,
    /// `rate_limited`: the login's limits count each code; see `Retry-After`.
    429 => TooManyRequests,
});

#[OpenApi(prefix_path = "/api/auth/mfa", tag = "ApiTags::SecondFactors")]
impl MfaApi {
    /// Set up TOTP
    ///
    /// Makes a new authenticator-app key for the caller: add it to the app
    /// (the QR code or the key), then confirm one code. Until then logins
    /// do not ask for it; a pending key is replaced by a new setup. Needs a
    /// session that signed in within the last 10 minutes.
    #[oai(path = "/totp/setup", method = "post")]
    async fn set_up(
        &self,
        core: Data<&Latchkey>,
        auth: AuthUser,
    ) -> Result<SetupResponse, SetupError> {
        let setup = core.set_up_totp(auth.user_id(), auth.session_id()).await?;
        Ok(SetupResponse::Ok(
            Json(TotpSetupBody {
                secret: setup.secret.expose().to_owned(),
                otpauth_uri: setup.otpauth_uri.expose().to_owned(),
                qr_svg: setup.qr_svg,
            }),
            NO_STORE.into(),
        ))
    }

    /// Confirm TOTP
    ///
    /// Confirms the pending key with a code from the app. From now on a
    /// login with the password answers `mfa_required` and asks for a code.
    /// Returns ten recovery codes, shown this once. A notice is mailed.
    #[oai(path = "/totp/confirm", method = "post")]
    async fn confirm(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<CodeRequest>,
    ) -> Result<CodesResponse, CodeError> {
        let codes = core
            .confirm_totp(auth.user_id(), &body.code, client_of(request, &core))
            .await?;
        Ok(CodesResponse::of(codes))
    }

    /// Remove TOTP
    ///
    /// Removes the authenticator-app factor and the recovery codes; `code`
    /// may be an app code or a recovery code. A notice is mailed.
    #[oai(path = "/totp", method = "delete")]
    async fn remove(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<CodeRequest>,
    ) -> Result<RemovedResponse, CodeError> {
        core.remove_totp(auth.user_id(), &body.code, client_of(request, &core))
            .await?;
        Ok(RemovedResponse::Removed)
    }

    /// Renew recovery codes
    ///
    /// Replaces the recovery codes with ten new ones; the old ones stop
    /// working. `code` may be an app code or a recovery code.
    #[oai(path = "/recovery-codes", method = "post")]
    async fn renew(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<CodeRequest>,
    ) -> Result<CodesResponse, CodeError> {
        let codes = core
            .renew_recovery_codes(auth.user_id(), &body.code, client_of(request, &core))
            .await?;
        Ok(CodesResponse::of(codes))
    }

    /// Finish a login with a code
    ///
    /// The second step of a login whose password step answered
    /// `mfa_required`: its `mfaToken` (single-use, 5 minutes) and a code
    /// from the app or a recovery code. Answers exactly as a login: an
    /// access token and the `refresh_token` cookie; the access token's
    /// `amr` is `["pwd","otp","mfa"]`. A code is accepted once.
    #[oai(path = "/verify", method = "post")]
    async fn verify(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<VerifyRequest>,
    ) -> Result<TokenResponse, VerifyError> {
        let pair = core
            .verify_second_factor(&body.mfa_token, &body.code, client_of(request, &core))
            .await?;
        Ok(TokenResponse::logged_in(
            request,
            &core,
            "/api/auth/mfa/verify",
            pair,
        ))
    }
}
