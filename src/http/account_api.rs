//! The Account tag: `POST /api/auth/password` and `DELETE /api/profile/me`,
//! the signed-in user's password and the account itself.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::{AuthUser, client_of};
use super::cookies::{Scope, clear_refresh_cookie};
use super::error::error_responses;
use super::fields;
use super::views::MessageBody;
use crate::service::Latchkey;

/// The Account operations.
#[derive(Default)]
pub(super) struct AccountApi;

/// A password change.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct PasswordChange {
    /// The password in use now.
    current_password: fields::CurrentPassword,
    /// The new password: 8 to 128 characters, not common, not containing
    /// the username or email.
    new_password: fields::ChangedPassword,
}

impl Example for PasswordChange {
    fn example() -> Self {
        PasswordChange {
            current_password: fields::CurrentPassword("correct horse battery staple".into()),
            new_password: fields::ChangedPassword("a new and longer passphrase".into()),
        }
    }
}

/// The password that confirms an account deletion.
#[derive(Object)]
#[oai(example)]
pub(super) struct DeleteAccount {
    /// The account's current password.
    password: fields::Password,
}

impl Example for DeleteAccount {
    fn example() -> Self {
        DeleteAccount {
            password: fields::Password("correct horse battery staple".into()),
        }
    }
}

#[derive(ApiResponse)]
enum PasswordResponse {
    /// The password is changed; every other session is revoked, this one stays.
    #[oai(status = 200)]
    Ok(Json<MessageBody>),
}

error_responses!(PasswordError with body {
    /// `invalid_input` or `weak_password` (the message says why).
    400 => BadRequest,
    /// `invalid_credentials` (wrong current password), or the token errors:
    /// `missing_token`, `token_expired`, `invalid_token`, `session_revoked`.
    401 => Unauthorized,
    /// `csrf_rejected`: a cookie-carrying request from a foreign origin.
    403 => Forbidden,
    /// `rate_limited`: too many wrong current passwords; see `Retry-After`.
    429 => TooManyRequests,
});

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

error_responses!(DeleteError with body {
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

#[OpenApi(tag = "ApiTags::Account")]
impl AccountApi {
    /// Change my password
    ///
    /// Checks the current password (attempts count against the login rate
    /// limits), applies the password policy to the new one, and revokes
    /// every other session; the session making the request stays logged in.
    #[oai(path = "/api/auth/password", method = "post")]
    async fn change_password(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<PasswordChange>,
    ) -> Result<PasswordResponse, PasswordError> {
        let revoked = core
            .change_password(
                &auth.0,
                &body.current_password,
                &body.new_password,
                client_of(request, &core),
            )
            .await?;
        Ok(PasswordResponse::Ok(Json(MessageBody::new(format!(
            "Password changed; {revoked} other sessions revoked"
        )))))
    }

    /// Delete my account
    ///
    /// Confirms with the password, then deletes the account, every session
    /// and every refresh token of it in one transaction.
    #[oai(path = "/api/profile/me", method = "delete")]
    async fn delete_me(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<DeleteAccount>,
    ) -> Result<DeleteResponse, DeleteError> {
        core.delete_account(auth.user_id(), &body.password, client_of(request, &core))
            .await?;
        Ok(DeleteResponse::Deleted(clear_refresh_cookie(&Scope::of(
            request,
            "/api/profile/me",
            core.config().cookies_secure(),
        ))))
    }
}
