//! `/api/profile/*` (the authenticated user: read, delete) and `/` (status).

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::{AuthUser, client_of};
use super::auth_api::{clear_refresh_cookie, password_field};
use super::error::error_responses;
use crate::model::{User, format_time};
use crate::service::Latchkey;

/// The `/api/profile` operations.
#[derive(Default)]
pub struct ProfileApi;

/// The `/` status operation.
#[derive(Default)]
pub struct MetaApi;

/// A user as clients see it (never the password hash).
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub struct UserView {
    /// The user id (UUID), the `sub` of their tokens.
    id: String,
    /// The username as registered.
    username: String,
    /// The normalized email.
    email: String,
    /// When the account was created (RFC 3339, UTC).
    created_at: String,
    /// The user's roles (`user` for every account; `admin` for administrators).
    roles: Vec<String>,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        UserView {
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            created_at: format_time(user.created_at),
            roles: user.roles.clone(),
        }
    }
}

impl Example for UserView {
    fn example() -> Self {
        UserView {
            id: "5f0c6f3e-3c55-4a43-9d1e-0f6c2b7d9a11".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            created_at: "2026-11-27T08:00:00Z".into(),
            roles: vec!["user".into()],
        }
    }
}

/// The authenticated user.
#[derive(Object)]
struct MeBody {
    /// The user the access token belongs to.
    user: UserView,
}

#[derive(ApiResponse)]
enum MeResponse {
    /// The caller's account.
    #[oai(status = 200)]
    Ok(Json<MeBody>),
}

error_responses!(MeError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `user_not_found`: the token is valid but its user no longer exists.
    404 => NotFound,
});

/// The password that confirms an account deletion.
#[derive(Object)]
#[oai(example)]
struct DeleteAccount {
    /// The account's current password.
    #[oai(deserialize_with = "delete_password_field")]
    password: String,
}

impl Example for DeleteAccount {
    fn example() -> Self {
        DeleteAccount {
            password: "correct horse battery staple".into(),
        }
    }
}

fn delete_password_field(
    value: Option<serde_json::Value>,
) -> Result<String, poem_openapi::types::ParseError<String>> {
    password_field(value, "password")
}

#[derive(ApiResponse)]
enum DeleteResponse {
    /// The account, its sessions and its refresh tokens are gone; the
    /// refresh cookie is cleared.
    #[oai(status = 204)]
    Deleted(
        /// Clears the refresh cookie (`Path=/api/auth`, `Max-Age=0`).
        #[oai(header = "Set-Cookie")]
        String,
    ),
}

error_responses!(DeleteError {
    /// `invalid_input`: the password is missing.
    400 => BadRequest,
    /// `invalid_credentials` (wrong password), or the token errors:
    /// `missing_token`, `token_expired`, `invalid_token`, `session_revoked`.
    401 => Unauthorized,
    /// `csrf_rejected`: a cookie-carrying request from a foreign origin.
    403 => Forbidden,
    /// `user_not_found`: the account is already gone.
    404 => NotFound,
    /// `rate_limited`: too many wrong passwords; see `Retry-After`.
    429 => TooManyRequests,
});

// Tags per operation: an impl-level tag would list the deletion under
// Profile as well as Account.
#[OpenApi(prefix_path = "/api/profile")]
impl ProfileApi {
    /// Who am I
    ///
    /// Returns the user of the access token, sent as `Authorization: Bearer
    /// <token>` or, when no header is sent, as an `access_token` cookie.
    #[oai(path = "/me", method = "get", tag = "ApiTags::Profile")]
    async fn me(&self, core: Data<&Latchkey>, auth: AuthUser) -> Result<MeResponse, MeError> {
        let user = core.user(auth.user_id())?;
        Ok(MeResponse::Ok(Json(MeBody {
            user: UserView::from(&user),
        })))
    }

    /// Delete my account
    ///
    /// Confirms with the password, then deletes the account, every session
    /// and every refresh token of it in one transaction.
    #[oai(path = "/me", method = "delete", tag = "ApiTags::Account")]
    async fn delete_me(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<DeleteAccount>,
    ) -> Result<DeleteResponse, DeleteError> {
        core.delete_account(auth.user_id(), &body.password, client_of(request, &core))
            .await?;
        Ok(DeleteResponse::Deleted(clear_refresh_cookie(
            core.config().cookies_secure(),
        )))
    }
}

#[OpenApi(tag = "ApiTags::Meta")]
impl MetaApi {
    /// Is it running
    ///
    /// Always `JWT Auth API running`.
    #[oai(path = "/", method = "get")]
    async fn index(&self) -> PlainText<&'static str> {
        PlainText("JWT Auth API running")
    }
}
