//! The Auth tag, `/api/auth/{register,login,refresh,logout}`: getting in,
//! staying in and getting out.

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Cookie as CookieParam;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::client_of;
use super::cookies::{self, Scope, clear_refresh_cookie, device_cookie, refresh_cookie};
use super::error::error_responses;
use super::fields;
use super::views::{MessageBody, UserView};
use crate::service::{Latchkey, TokenPair};

const NO_STORE: &str = "no-store";

/// The Auth operations.
#[derive(Default)]
pub(super) struct AuthApi;

/// A new account.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct RegisterRequest {
    /// 3 to 32 characters of ASCII letters, digits, `_`, `.` and `-`; unique regardless of case.
    username: fields::Username,
    /// A mailbox of at most 254 characters (a plain `name@host.example`: no
    /// quoted names, no IP addresses); stored in one canonical form.
    email: fields::EmailAddress,
    /// 8 to 128 characters, not common, not containing the username or email.
    password: fields::NewPassword,
}

impl Example for RegisterRequest {
    fn example() -> Self {
        RegisterRequest {
            username: fields::Username("alice".into()),
            email: fields::EmailAddress("alice@example.com".into()),
            password: fields::NewPassword("correct horse battery staple".into()),
        }
    }
}

/// Credentials.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct LoginRequest {
    /// The account's email (case does not matter).
    email: fields::EmailAddress,
    /// The account's password.
    password: fields::Password,
}

impl Example for LoginRequest {
    fn example() -> Self {
        LoginRequest {
            email: fields::EmailAddress("alice@example.com".into()),
            password: fields::Password("correct horse battery staple".into()),
        }
    }
}

/// The account that was created.
#[derive(Object)]
#[oai(rename_all = "camelCase")]
struct RegisterBody {
    /// Always "User created successfully".
    message: String,
    /// The new user.
    user: UserView,
}

/// An access token; the refresh token travels in the `refresh_token` cookie.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct TokenBody {
    /// The access JWT, for `Authorization: Bearer <accessToken>`.
    access_token: String,
    /// Always "Bearer".
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: u64,
}

impl Example for TokenBody {
    fn example() -> Self {
        TokenBody {
            access_token:
                "eyJ0eXAiOiJhdCtqd3QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
        }
    }
}

#[derive(ApiResponse)]
enum RegisterResponse {
    /// The account was created.
    #[oai(status = 201)]
    Created(Json<RegisterBody>),
}

error_responses!(RegisterError with body {
    /// `invalid_input` (a field is missing or invalid; the message names it)
    /// or `weak_password` (common, a pattern, or containing the username or
    /// email; the message says which).
    400 => BadRequest,
    /// `user_exists` (the email has an account) or `username_taken`.
    409 => Conflict,
    /// `rate_limited`: too many registrations from this client; `Retry-After` says when to retry.
    429 => TooManyRequests,
});

#[derive(ApiResponse)]
pub(super) enum TokenResponse {
    /// Tokens issued: the access token in the body, the refresh token in an
    /// HttpOnly `refresh_token` cookie (`SameSite=Strict; Path=/api/auth`).
    /// A login also sets the `latchkey_device` cookie (`Path=/api/auth/login`).
    #[oai(status = 200)]
    Ok(
        Json<TokenBody>,
        /// `refresh_token=<token>; HttpOnly; SameSite=Strict; Path=/api/auth; Max-Age=<refresh ttl>` (plus `Secure` over TLS); after a login also `latchkey_device=<token>; HttpOnly; SameSite=Strict; Path=/api/auth/login; Max-Age=15552000`.
        #[oai(header = "Set-Cookie")]
        String,
        /// Always `no-store`: tokens must not be cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

impl TokenResponse {
    /// The answer to a finished login (a password, its second step, a
    /// passkey) at the operation `own`: the device cookie (scoped to the
    /// login path, where it is read) and the tokens.
    pub(super) fn logged_in(
        request: &Request,
        core: &Latchkey,
        own: &str,
        pair: TokenPair,
    ) -> Self {
        let scope = Scope::of(request, own, core.config().cookies_secure());
        if let Some(token) = &pair.device_token {
            request.cookie().add(device_cookie(token.expose(), &scope));
        }
        TokenResponse::issued(pair, &scope)
    }

    fn issued(pair: TokenPair, scope: &Scope<'_>) -> Self {
        let cookie = refresh_cookie(pair.refresh_token.expose(), pair.refresh_expires_in, scope);
        TokenResponse::Ok(
            Json(TokenBody {
                access_token: pair.access_token.expose().to_owned(),
                token_type: "Bearer".into(),
                expires_in: pair.expires_in,
            }),
            cookie,
            NO_STORE.into(),
        )
    }
}

error_responses!(LoginError with body {
    /// A field is missing or invalid.
    400 => BadRequest,
    /// `invalid_credentials`: unknown email or wrong password
    /// (indistinguishable); or `mfa_required`: the password is right and
    /// the account has a second factor; the body's `mfaToken` (single-use,
    /// 5 minutes) and a code go to `POST /api/auth/mfa/verify`, `methods`
    /// says which codes it takes. No token or cookie is set then.
    401 => Unauthorized,
    /// `account_disabled`: the password is right but an administrator
    /// disabled the account; `email_not_verified`: the password is right
    /// but, with `--require-verified-email`, the address is not verified
    /// yet; or `mfa_locked`: the password is right but 100 wrong codes in a
    /// row locked the second factor (a password reset by email or an
    /// administrator's reset unlocks it).
    403 => Forbidden,
    /// `rate_limited`: too many attempts from this client or for this
    /// account; `Retry-After` (seconds) says when to retry.
    429 => TooManyRequests,
});

error_responses!(RefreshError {
    /// `invalid_input`: two `refresh_token` cookies were sent.
    400 => BadRequest,
    /// `missing_refresh_token`, `invalid_refresh_token`, `refresh_token_not_recognized`,
    /// `refresh_token_revoked`, `refresh_token_expired`, or
    /// `refresh_token_reused` (a rotated token came back after the reuse
    /// grace, or after its successor was used: the whole session is now
    /// revoked).
    401 => Unauthorized,
    /// `csrf_rejected`: the request carries cookies and comes from an origin
    /// that is neither this server nor one of `--cors-origins`;
    /// `account_disabled`: an administrator disabled the account; or
    /// `email_not_verified` (with `--require-verified-email`).
    403 => Forbidden,
    /// `rate_limited`: too many refreshes from this client; see `Retry-After`.
    429 => TooManyRequests,
});

#[derive(ApiResponse)]
enum LogoutResponse {
    /// The session is revoked (or there was none) and the cookie is cleared.
    #[oai(status = 200)]
    Ok(
        Json<MessageBody>,
        /// Clears the refresh cookie: same attributes, `Max-Age=0`.
        #[oai(header = "Set-Cookie")]
        String,
    ),
}

// Logout with a bad or missing cookie still succeeds: only a cross-site
// request or a storage failure (a 500) can make it fail.
error_responses!(LogoutError {
    /// `invalid_input`: two `refresh_token` cookies were sent.
    400 => BadRequest,
    /// `csrf_rejected`: the request carries cookies and comes from an origin
    /// that is neither this server nor one of `--cors-origins`.
    403 => Forbidden,
});

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// The password is hashed with argon2id and never returned. The email is
    /// trimmed and lower-cased; email and username (ignoring case) must be unused.
    #[oai(path = "/register", method = "post")]
    async fn register(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<RegisterRequest>,
    ) -> Result<RegisterResponse, RegisterError> {
        let user = core
            .register(
                &body.username,
                &body.email,
                &body.password,
                client_of(request, &core),
            )
            .await?;
        Ok(RegisterResponse::Created(Json(RegisterBody {
            message: "User created successfully".into(),
            user: UserView::from(&user),
        })))
    }

    /// Log in
    ///
    /// Returns an access token and sets the `refresh_token` cookie, starting a
    /// new session. An unknown email and a wrong password give the same answer
    /// in the same time. Also sets a `latchkey_device` cookie: sent with this
    /// account's next login, it keeps this device out of the throttle that
    /// strangers' failed guesses put on the account.
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        /// The device token of an earlier login of this account.
        #[oai(name = "latchkey_device")]
        device: CookieParam<Option<String>>,
        body: Json<LoginRequest>,
    ) -> Result<TokenResponse, LoginError> {
        let pair = core
            .login(
                &body.email,
                &body.password,
                device.0.as_deref(),
                client_of(request, &core),
            )
            .await?;
        Ok(TokenResponse::logged_in(
            request,
            &core,
            "/api/auth/login",
            pair,
        ))
    }

    /// Refresh the tokens
    ///
    /// Exchanges the `refresh_token` cookie for a new access token and a new
    /// refresh cookie in the same session. The presented refresh token is
    /// rotated out. Presented again within the reuse grace while its
    /// successor is unused (a retry after a lost answer, two tabs refreshing
    /// at once), it gets that same successor again with a new access token.
    /// Presented after the grace, or once its successor has been used, it is
    /// treated as stolen: the whole session is revoked and the answer is
    /// `refresh_token_reused`.
    #[oai(path = "/refresh", method = "post")]
    async fn refresh(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        /// The refresh token set by login or the previous refresh.
        #[oai(name = "refresh_token")]
        _refresh_token: CookieParam<Option<String>>,
    ) -> Result<TokenResponse, RefreshError> {
        let token = cookies::single(request, cookies::REFRESH_TOKEN_COOKIE)?;
        let pair = core
            .refresh(token.as_deref(), client_of(request, &core))
            .await?;
        let scope = Scope::of(request, "/api/auth/refresh", core.config().cookies_secure());
        Ok(TokenResponse::issued(pair, &scope))
    }

    /// Log out
    ///
    /// Revokes the session of the `refresh_token` cookie and clears the cookie.
    /// Idempotent: succeeds without a cookie too.
    #[oai(path = "/logout", method = "post")]
    async fn logout(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        /// The refresh token of the session to end.
        #[oai(name = "refresh_token")]
        _refresh_token: CookieParam<Option<String>>,
    ) -> Result<LogoutResponse, LogoutError> {
        let token = cookies::single(request, cookies::REFRESH_TOKEN_COOKIE)?;
        core.logout(token.as_deref(), client_of(request, &core))
            .await?;
        Ok(LogoutResponse::Ok(
            Json(MessageBody::new("Logged out")),
            clear_refresh_cookie(&Scope::of(
                request,
                "/api/auth/logout",
                core.config().cookies_secure(),
            )),
        ))
    }
}
