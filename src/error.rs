//! The domain error: what went wrong, in authentication terms.
//!
//! Nothing here knows about HTTP; `http::error` maps each variant to a status
//! code. Foreign errors (sled, jsonwebtoken, argon2, I/O) are converted into
//! these variants inside the module that owns the foreign crate, so no foreign
//! type leaks through the library API. Messages never contain a password, a
//! token or a secret.

/// Everything that can go wrong in latchkey.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request field failed validation; the message names the field.
    #[error("{0}")]
    InvalidInput(String),
    /// Registration with an email address that already has an account.
    #[error("User already exists")]
    UserExists,
    /// Registration with a username (compared case-insensitively) that is taken.
    #[error("Username already taken")]
    UsernameTaken,
    /// Unknown email or wrong password: deliberately indistinguishable.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// No access token in the `Authorization` header or the `access_token` cookie.
    #[error("Missing or invalid Authorization header")]
    MissingToken,
    /// The access token was valid but its `exp` has passed.
    #[error("Access token expired")]
    TokenExpired,
    /// The access token is malformed, forged, of the wrong type or algorithm.
    #[error("Invalid token")]
    InvalidToken,
    /// The token names a user that no longer exists.
    #[error("User not found")]
    UserNotFound,
    /// A refresh was asked for without a refresh token.
    #[error("No refresh token")]
    MissingRefreshToken,
    /// The refresh token is malformed, forged or of the wrong type.
    #[error("Invalid or expired refresh token")]
    InvalidRefreshToken,
    /// The refresh token is well signed but latchkey holds no record of it.
    #[error("Refresh token not recognized")]
    RefreshTokenNotRecognized,
    /// The refresh token was rotated or logged out.
    #[error("Refresh token revoked")]
    RefreshTokenRevoked,
    /// The refresh token's lifetime has passed.
    #[error("Refresh token expired")]
    RefreshTokenExpired,
    /// A refresh token that was already rotated was presented after the
    /// reuse grace: presumed stolen, so its whole session was revoked.
    #[error("Refresh token reuse detected")]
    RefreshTokenReused,
    /// The access token is valid but its session has been revoked (logout,
    /// reuse detection, revocation by the user or an admin).
    #[error("Session revoked")]
    SessionRevoked,
    /// A password that breaks the policy; the message says why.
    #[error("{0}")]
    WeakPassword(String),
    /// Too many requests from this client or for this account.
    #[error("Too many requests; retry in {retry_after} seconds")]
    RateLimited {
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// Too many password hashes are waiting: the request was not served.
    #[error("The server is busy; retry in {retry_after} seconds")]
    Overloaded {
        /// Seconds after which a retry may succeed.
        retry_after: u64,
    },
    /// A cookie-authenticated state-changing request from a foreign origin.
    #[error("Cross-site request rejected")]
    CsrfRejected,
    /// The caller lacks the role an operation requires.
    #[error("Insufficient role")]
    Forbidden,
    /// The account is disabled by an administrator.
    #[error("Account disabled")]
    AccountDisabled,
    /// No session with this id belongs to the caller.
    #[error("Session not found")]
    SessionNotFound,
    /// A verification token that is unknown, used, or for something else.
    #[error("Invalid or used verification link")]
    VerificationTokenInvalid,
    /// A verification token past its lifetime.
    #[error("Verification link expired; ask for a new one")]
    VerificationTokenExpired,
    /// A reset token that is unknown, used, for something else, or whose
    /// account is disabled or has changed its password since.
    #[error("Invalid or used password-reset link")]
    ResetTokenInvalid,
    /// A reset token past its lifetime.
    #[error("Password-reset link expired; ask for a new one")]
    ResetTokenExpired,
    /// An email-change token that is unknown, used or for something else.
    #[error("Invalid or used email-change link")]
    EmailChangeTokenInvalid,
    /// An email-change token past its lifetime.
    #[error("Email-change link expired; ask again")]
    EmailChangeTokenExpired,
    /// `--require-verified-email` and the account's address is not verified.
    #[error("Verify your email address first")]
    EmailNotVerified,
    /// The password was right and the account has a second factor: the
    /// login goes on at `POST /api/auth/mfa/verify` with this token.
    #[error("A second factor is required: send a code with mfaToken to /api/auth/mfa/verify")]
    MfaRequired {
        /// The single-use token of the second step (never logged).
        token: crate::model::Secret,
        /// The kinds of code the second step takes.
        methods: Vec<&'static str>,
    },
    /// A wrong code at the second step of a login.
    #[error("Wrong code, or one already used (an app code works once: wait for the next)")]
    MfaLoginCodeInvalid,
    /// A wrong code where a signed-in user proves they hold their factor
    /// (confirming, removing it, renewing recovery codes).
    #[error("Wrong code, or one already used (an app code works once: wait for the next)")]
    MfaCodeInvalid,
    /// Too many wrong codes in a row: the factor refuses every code until
    /// the password is reset by email or an administrator resets it.
    #[error(
        "Too many wrong codes in a row: reset your password by email (or ask an administrator) to use this factor again"
    )]
    MfaLocked,
    /// An unknown, used or expired second-step token.
    #[error("Invalid or expired mfaToken; log in again")]
    MfaTokenInvalid,
    /// TOTP is already on: remove it before setting up another.
    #[error("TOTP is already enabled; remove it first")]
    MfaAlreadyEnabled,
    /// There is no TOTP factor (or no pending one to confirm).
    #[error("TOTP is not set up")]
    MfaNotEnabled,
    /// A passkey sign-in failed: a bad response, an unknown credential,
    /// another origin, a used or expired challenge.
    #[error("Passkey sign-in failed")]
    PasskeyInvalid,
    /// A passkey's sign counter did not move forward: presumed cloned.
    /// Answered like [`Error::PasskeyInvalid`].
    #[error("Passkey sign-in failed")]
    PasskeyCounterRegressed,
    /// A passkey registration response failed; the message says why.
    #[error("Passkey registration failed: {0}")]
    PasskeyRegistrationInvalid(String),
    /// No passkey with this id belongs to the caller.
    #[error("Passkey not found")]
    PasskeyNotFound,
    /// The account has as many passkeys as it may.
    #[error("This account has the most passkeys it may have; remove one first")]
    PasskeyLimitReached,
    /// Passkeys cannot work with this configuration; the message says why.
    #[error("Passkeys are unavailable: {0}")]
    PasskeysUnavailable(String),
    /// The operation needs a sign-in from the last few minutes.
    #[error("This needs a recent sign-in; log in again first")]
    ReauthenticationRequired,
    /// Another process holds the data directory's lock.
    #[error("data directory {0} is in use by another latchkey process")]
    DataDirLocked(String),
    /// A configuration value is unusable (for example a secret that is too short).
    #[error("configuration error: {0}")]
    Config(String),
    /// The storage layer failed: I/O error, corruption, full disk.
    #[error("storage error: {0}")]
    Storage(String),
    /// A bug or an unexpected failure of a dependency.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable snake_case code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::UserExists => "user_exists",
            Error::UsernameTaken => "username_taken",
            Error::InvalidCredentials => "invalid_credentials",
            Error::MissingToken => "missing_token",
            Error::TokenExpired => "token_expired",
            Error::InvalidToken => "invalid_token",
            Error::UserNotFound => "user_not_found",
            Error::MissingRefreshToken => "missing_refresh_token",
            Error::InvalidRefreshToken => "invalid_refresh_token",
            Error::RefreshTokenNotRecognized => "refresh_token_not_recognized",
            Error::RefreshTokenRevoked => "refresh_token_revoked",
            Error::RefreshTokenExpired => "refresh_token_expired",
            Error::RefreshTokenReused => "refresh_token_reused",
            Error::SessionRevoked => "session_revoked",
            Error::WeakPassword(_) => "weak_password",
            Error::RateLimited { .. } => "rate_limited",
            Error::Overloaded { .. } => "overloaded",
            Error::CsrfRejected => "csrf_rejected",
            Error::Forbidden => "forbidden",
            Error::AccountDisabled => "account_disabled",
            Error::SessionNotFound => "session_not_found",
            Error::VerificationTokenInvalid => "verification_token_invalid",
            Error::VerificationTokenExpired => "verification_token_expired",
            Error::ResetTokenInvalid => "reset_token_invalid",
            Error::ResetTokenExpired => "reset_token_expired",
            Error::EmailChangeTokenInvalid => "email_change_token_invalid",
            Error::EmailChangeTokenExpired => "email_change_token_expired",
            Error::EmailNotVerified => "email_not_verified",
            Error::MfaRequired { .. } => "mfa_required",
            Error::MfaLoginCodeInvalid | Error::MfaCodeInvalid => "mfa_invalid_code",
            Error::MfaTokenInvalid => "mfa_token_invalid",
            Error::MfaLocked => "mfa_locked",
            Error::MfaAlreadyEnabled => "mfa_already_enabled",
            Error::MfaNotEnabled => "mfa_not_enabled",
            Error::PasskeyInvalid | Error::PasskeyCounterRegressed => "passkey_invalid",
            Error::PasskeyRegistrationInvalid(_) => "passkey_registration_invalid",
            Error::PasskeyNotFound => "passkey_not_found",
            Error::PasskeyLimitReached => "passkey_limit_reached",
            Error::PasskeysUnavailable(_) => "passkeys_unavailable",
            Error::ReauthenticationRequired => "reauthentication_required",
            Error::DataDirLocked(_) => "data_dir_locked",
            Error::Config(_) => "config_error",
            Error::Storage(_) => "storage_error",
            Error::Internal(_) => "internal_error",
        }
    }

    /// Whether this error is latchkey's fault rather than the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::DataDirLocked(_) | Error::Config(_) | Error::Storage(_) | Error::Internal(_)
        )
    }
}

/// `Result` with latchkey's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
