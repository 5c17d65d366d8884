//! The Recovery tag: verifying an address, resetting a forgotten password
//! and changing the address, each by a link sent by mail. The links open
//! latchkey's pages (`pages`), which POST the token here.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::{AuthUser, client_of};
use super::error::error_responses;
use super::fields;
use super::views::{MessageBody, UserView};
use crate::service::Latchkey;

/// The Recovery operations.
#[derive(Default)]
pub(super) struct RecoveryApi;

/// A token from a mailed link.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct TokenRequest {
    /// The `token` of the link.
    token: fields::MailedToken,
}

impl Example for TokenRequest {
    fn example() -> Self {
        TokenRequest {
            token: fields::MailedToken("q3Vx0mW9cE1bH5kT7nR2yL8pA4sD6fG0jZ9uI3oK1e".into()),
        }
    }
}

/// An address to send a mail to.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct EmailRequest {
    /// The account's address.
    email: fields::EmailAddress,
}

impl Example for EmailRequest {
    fn example() -> Self {
        EmailRequest {
            email: fields::EmailAddress("alice@example.com".into()),
        }
    }
}

/// A new password, with the token of a reset link.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct ResetRequest {
    /// The `token` of the reset link.
    token: fields::MailedToken,
    /// The new password: 8 to 128 characters, not common, not containing
    /// the username or email.
    new_password: fields::ChangedPassword,
}

impl Example for ResetRequest {
    fn example() -> Self {
        ResetRequest {
            token: fields::MailedToken("q3Vx0mW9cE1bH5kT7nR2yL8pA4sD6fG0jZ9uI3oK1e".into()),
            new_password: fields::ChangedPassword("a new and longer passphrase".into()),
        }
    }
}

/// A new address, confirmed with the password.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
pub(super) struct EmailChange {
    /// The address to move to.
    new_email: fields::NewEmailAddress,
    /// The password in use now.
    password: fields::Password,
}

impl Example for EmailChange {
    fn example() -> Self {
        EmailChange {
            new_email: fields::NewEmailAddress("alice@new.example".into()),
            password: fields::Password("correct horse battery staple".into()),
        }
    }
}

/// The account, under its new address.
#[derive(Object)]
struct ChangedBody {
    /// What happened.
    message: String,
    /// The account now.
    user: UserView,
}

#[derive(ApiResponse)]
enum DoneResponse {
    /// Done.
    #[oai(status = 200)]
    Ok(Json<MessageBody>),
}

#[derive(ApiResponse)]
enum AcceptedResponse {
    /// Accepted: the same answer whether or not a mail goes out.
    #[oai(status = 202)]
    Accepted(Json<MessageBody>),
}

#[derive(ApiResponse)]
enum ChangedResponse {
    /// The account, under its new, verified address.
    #[oai(status = 200)]
    Ok(Json<ChangedBody>),
}

error_responses!(VerifyError with body {
    /// `verification_token_invalid` (unknown, used, or for something
    /// else), `verification_token_expired`, or `invalid_input`.
    400 => BadRequest,
});

error_responses!(MailRequestError with body {
    /// `invalid_input`: the address is malformed.
    400 => BadRequest,
});

error_responses!(ResetError with body {
    /// `reset_token_invalid` (unknown, used, for something else, or the
    /// account was disabled or its password changed since),
    /// `reset_token_expired`, `weak_password` or `invalid_input`.
    400 => BadRequest,
});

error_responses!(EmailChangeError with body {
    /// `invalid_input` (a malformed address, or the account's own).
    400 => BadRequest,
    /// `invalid_credentials` (wrong password), or the access token's
    /// `missing_token`, `token_expired`, `invalid_token`, `session_revoked`.
    401 => Unauthorized,
    /// `user_exists`: the address has an account.
    409 => Conflict,
    /// `rate_limited`: too many password attempts; `Retry-After` says when to retry.
    429 => TooManyRequests,
});

error_responses!(ConfirmEmailError with body {
    /// `email_change_token_invalid` (unknown, used, for something else, or
    /// another change went through since), `email_change_token_expired`,
    /// or `invalid_input`.
    400 => BadRequest,
    /// `user_exists`: someone took the address meanwhile.
    409 => Conflict,
});

/// What a mail request answers, whatever happens.
const RESET_ACCEPTED: &str = "If an account exists for this address, a reset link has been sent";
/// What a verification resend answers, whatever happens.
const RESEND_ACCEPTED: &str =
    "If an account with this unverified address exists, a verification link has been sent";

#[OpenApi(tag = "ApiTags::Recovery")]
impl RecoveryApi {
    /// Verify an email address
    ///
    /// Uses the token of a verification link (sent at registration, or by
    /// `verify-email/resend`). Single-use.
    #[oai(path = "/api/auth/verify-email", method = "post")]
    async fn verify_email(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<TokenRequest>,
    ) -> Result<DoneResponse, VerifyError> {
        core.verify_email(&body.token, client_of(request, &core))
            .await?;
        Ok(DoneResponse::Ok(Json(MessageBody::new("Email verified"))))
    }

    /// Send the verification link again
    ///
    /// Answers 202 for any address; a mail goes out only to an existing
    /// account whose address is not verified yet (and within the mail rate
    /// limits).
    #[oai(path = "/api/auth/verify-email/resend", method = "post")]
    async fn resend_verification(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<EmailRequest>,
    ) -> Result<AcceptedResponse, MailRequestError> {
        core.resend_verification(&body.email, client_of(request, &core))
            .await?;
        Ok(AcceptedResponse::Accepted(Json(MessageBody::new(
            RESEND_ACCEPTED,
        ))))
    }

    /// Ask for a password reset
    ///
    /// Answers 202, in the same time, whether or not the address has an
    /// account: the account is looked up later, by the mail sender. An
    /// enabled account gets a link that works once, for `--reset-ttl`.
    #[oai(path = "/api/auth/password-reset", method = "post")]
    async fn request_reset(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<EmailRequest>,
    ) -> Result<AcceptedResponse, MailRequestError> {
        core.request_password_reset(&body.email, client_of(request, &core))
            .await?;
        Ok(AcceptedResponse::Accepted(Json(MessageBody::new(
            RESET_ACCEPTED,
        ))))
    }

    /// Reset the password
    ///
    /// Sets a new password with the token of a reset link. Every session of
    /// the account ends, the address counts as verified, and a notice goes
    /// to it.
    #[oai(path = "/api/auth/password-reset/confirm", method = "post")]
    async fn confirm_reset(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<ResetRequest>,
    ) -> Result<DoneResponse, ResetError> {
        core.reset_password(&body.token, &body.new_password, client_of(request, &core))
            .await?;
        Ok(DoneResponse::Ok(Json(MessageBody::new(
            "Password reset; log in with the new password",
        ))))
    }

    /// Change my email address
    ///
    /// Checks the password, then sends a confirmation link to the new
    /// address and a notice to the current one. Nothing changes until the
    /// link is used.
    #[oai(path = "/api/profile/email", method = "post")]
    async fn change_email(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        body: Json<EmailChange>,
    ) -> Result<AcceptedResponse, EmailChangeError> {
        core.request_email_change(
            &auth,
            &body.new_email,
            &body.password,
            client_of(request, &core),
        )
        .await?;
        Ok(AcceptedResponse::Accepted(Json(MessageBody::new(
            "A confirmation link has been sent to the new address",
        ))))
    }

    /// Confirm a new email address
    ///
    /// Uses the token of the confirmation link: the account moves to the
    /// new address, verified.
    #[oai(path = "/api/profile/email/confirm", method = "post")]
    async fn confirm_email(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        body: Json<TokenRequest>,
    ) -> Result<ChangedResponse, ConfirmEmailError> {
        let user = core
            .confirm_email_change(&body.token, client_of(request, &core))
            .await?;
        Ok(ChangedResponse::Ok(Json(ChangedBody {
            message: "Email changed".into(),
            user: UserView::from(&user),
        })))
    }
}
