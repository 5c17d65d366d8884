//! The Profile tag, `GET /api/profile/me`: who the caller is.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::AuthUser;
use super::error::error_responses;
use super::views::UserView;

/// The Profile operations.
#[derive(Default)]
pub(super) struct ProfileApi;

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
    /// `missing_token`, `token_expired`, `invalid_token` or
    /// `session_revoked` (also when the account was disabled or deleted).
    401 => Unauthorized,
});

#[OpenApi(prefix_path = "/api/profile", tag = "ApiTags::Profile")]
impl ProfileApi {
    /// Who am I
    ///
    /// Returns the user of the access token, sent as `Authorization: Bearer
    /// <token>` or, when no header is sent, as an `access_token` cookie.
    #[oai(path = "/me", method = "get")]
    async fn me(&self, auth: AuthUser) -> Result<MeResponse, MeError> {
        Ok(MeResponse::Ok(Json(MeBody {
            user: UserView::from(&auth.user),
        })))
    }
}
