//! The one status table: how every domain [`Error`] becomes an HTTP status
//! and a `{"code","message"}` body, plus the per-operation error enums that
//! document those statuses in the OpenAPI spec.
//!
//! Internal errors are logged here with their cause and answered with a
//! generic 500 body; the cause never reaches the client.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::Object;
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};

use crate::error::Error;

/// The body of every error response.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ErrorBody {
    /// Stable snake_case error code to match on.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// For 429: seconds until a retry can succeed, sent as `Retry-After`.
    #[oai(skip)]
    pub retry_after: Option<u64>,
    /// Only with `mfa_required`: the single-use token (5 minutes) to send
    /// with a code to `POST /api/auth/mfa/verify`.
    #[oai(rename = "mfaToken", skip_serializing_if_is_none)]
    pub mfa_token: Option<String>,
    /// Only with `mfa_required`: the kinds of code that step takes
    /// (`totp`, `recovery_code`).
    #[oai(skip_serializing_if_is_none)]
    pub methods: Option<Vec<String>>,
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        ErrorBody::new("invalid_credentials", "Invalid credentials")
    }
}

impl ErrorBody {
    /// A body with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
            mfa_token: None,
            methods: None,
        }
    }
}

/// An error response payload: the JSON [`ErrorBody`], plus `Retry-After`
/// when the body carries one. Every error latchkey sends goes through it.
#[derive(Debug)]
pub struct ErrorJson(pub ErrorBody);

impl Payload for ErrorJson {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        ErrorBody::schema_ref()
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

impl IntoResponse for ErrorJson {
    fn into_response(self) -> Response {
        let text = self.0.to_json_string();
        let mut response = Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(text);
        if self.0.mfa_token.is_some() {
            // It carries a credential (the second step's token).
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let Some(seconds) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// A whole error response with this status.
pub fn error_json(status: StatusCode, body: ErrorBody) -> Response {
    let mut response = ErrorJson(body).into_response();
    response.set_status(status);
    response
}

/// The status of each domain error, and the body to send.
pub fn describe(err: &Error) -> (StatusCode, ErrorBody) {
    let status = match err {
        Error::InvalidInput(_)
        | Error::WeakPassword(_)
        | Error::VerificationTokenInvalid
        | Error::VerificationTokenExpired
        | Error::ResetTokenInvalid
        | Error::ResetTokenExpired
        | Error::EmailChangeTokenInvalid
        | Error::EmailChangeTokenExpired
        | Error::MfaCodeInvalid
        | Error::PasskeyRegistrationInvalid(_) => StatusCode::BAD_REQUEST,
        Error::CsrfRejected
        | Error::Forbidden
        | Error::AccountDisabled
        | Error::EmailNotVerified
        | Error::ReauthenticationRequired
        | Error::MfaLocked => StatusCode::FORBIDDEN,
        Error::MfaAlreadyEnabled | Error::MfaNotEnabled | Error::PasskeyLimitReached => {
            StatusCode::CONFLICT
        }
        Error::PasskeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::UserExists | Error::UsernameTaken => StatusCode::CONFLICT,
        Error::InvalidCredentials
        | Error::MissingToken
        | Error::TokenExpired
        | Error::InvalidToken
        | Error::MissingRefreshToken
        | Error::InvalidRefreshToken
        | Error::RefreshTokenNotRecognized
        | Error::RefreshTokenRevoked
        | Error::RefreshTokenExpired
        | Error::RefreshTokenReused
        | Error::SessionRevoked
        | Error::MfaRequired { .. }
        | Error::MfaLoginCodeInvalid
        | Error::MfaTokenInvalid
        | Error::PasskeyInvalid
        | Error::PasskeyCounterRegressed => StatusCode::UNAUTHORIZED,
        Error::UserNotFound | Error::SessionNotFound | Error::PasskeyNotFound => {
            StatusCode::NOT_FOUND
        }
        Error::Storage(_) => {
            // A full or failing disk, or a database out of reach: nothing
            // was acknowledged; the client may retry.
            tracing::error!(error = %err, "request failed: storage unavailable");
            let mut body = ErrorBody::new(
                "storage_unavailable",
                "Storage is unavailable (a full or failing disk, or a database out of reach); nothing was changed. Retry later",
            );
            body.retry_after = Some(STORAGE_RETRY_AFTER);
            return (StatusCode::SERVICE_UNAVAILABLE, body);
        }
        Error::DataDirLocked(_) | Error::Config(_) | Error::Internal(_) => {
            tracing::error!(error = %err, "request failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, internal_body());
        }
    };
    let mut body = ErrorBody::new(err.code(), err.to_string());
    if let Error::RateLimited { retry_after } | Error::Overloaded { retry_after } = err {
        body.retry_after = Some(*retry_after);
    }
    if let Error::MfaRequired { token, methods } = err {
        body.mfa_token = Some(token.expose().to_owned());
        body.methods = Some(methods.iter().map(|method| (*method).to_owned()).collect());
    }
    (status, body)
}

/// Seconds a client should wait before retrying after a storage failure.
pub(super) const STORAGE_RETRY_AFTER: u64 = 5;

/// The body of every 500: no detail leaves the server.
pub fn internal_body() -> ErrorBody {
    ErrorBody::new("internal_error", "Internal server error")
}

/// Declares an error-response enum for one operation: one variant per listed
/// status (each documented in the spec with an [`ErrorBody`]) plus the two
/// every operation can answer, 500 and 503, and a conversion from the domain
/// [`Error`] through [`describe`]. A domain error whose status the operation
/// does not list is a bug and becomes a 500.
macro_rules! error_responses {
    // An operation with a JSON body can also be refused before its handler
    // runs: the body is too slow, too large, or not JSON.
    ($(#[$meta:meta])* $name:ident with body { $($listed:tt)* }) => {
        $crate::http::error::error_responses!($(#[$meta])* $name {
            $($listed)*
            /// `request_timeout`: the body did not arrive within `--body-timeout`.
            408 => RequestTimeout,
            /// `payload_too_large`: the body is over 16 KiB.
            413 => PayloadTooLarge,
            /// `unsupported_media_type`: the body is not `application/json`.
            415 => UnsupportedMediaType,
        });
    };
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $status:literal => $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, poem_openapi::ApiResponse)]
        pub enum $name {
            $(
                $(#[$variant_meta])*
                #[oai(status = $status)]
                $variant($crate::http::error::ErrorJson),
            )*
            /// Internal error (a bug); details are only in the server log.
            #[oai(status = 500)]
            Internal($crate::http::error::ErrorJson),
            /// `storage_unavailable` (a full or failing disk, or a database
            /// out of reach; nothing was changed) or `overloaded` (too many password
            /// checks waiting); `Retry-After` says when to retry.
            #[oai(status = 503)]
            Unavailable($crate::http::error::ErrorJson),
        }

        impl From<$crate::error::Error> for $name {
            fn from(err: $crate::error::Error) -> Self {
                let (status, body) = $crate::http::error::describe(&err);
                match status.as_u16() {
                    $($status => $name::$variant($crate::http::error::ErrorJson(body)),)*
                    500 => $name::Internal($crate::http::error::ErrorJson(body)),
                    503 => $name::Unavailable($crate::http::error::ErrorJson(body)),
                    other => {
                        tracing::error!(status = other, code = body.code, operation = stringify!($name), "error status not declared for this operation");
                        $name::Internal($crate::http::error::ErrorJson($crate::http::error::internal_body()))
                    }
                }
            }
        }
    };
}
pub(crate) use error_responses;

/// The code for a poem-level error (no route, bad payload, wrong method…).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_input",
        StatusCode::UNAUTHORIZED => "missing_token",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        status if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}
