//! The Sessions tag, `/api/auth/sessions` and `/api/auth/logout-all`: the
//! signed-in user's devices.

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::auth::{AuthUser, client_of};
use super::cookies::{Scope, clear_refresh_cookie};
use super::error::error_responses;
use crate::model::{Session, format_time};
use crate::service::Latchkey;

/// The Sessions operations.
#[derive(Default)]
pub(super) struct SessionsApi;

/// A live session: one login on one device, continued by its refreshes.
#[derive(Object)]
#[oai(rename_all = "camelCase", example)]
struct SessionView {
    /// The session id (the `sid` claim of its access tokens).
    id: String,
    /// When the login happened (RFC 3339, UTC).
    created_at: String,
    /// When its refresh token was last used.
    last_used_at: String,
    /// When it ends unless refreshed again.
    expires_at: String,
    /// The client's IP address at the last login or refresh.
    #[oai(skip_serializing_if_is_none)]
    ip: Option<String>,
    /// The client's user agent at the last login or refresh.
    #[oai(skip_serializing_if_is_none)]
    user_agent: Option<String>,
    /// Whether this is the session of the access token making the request.
    current: bool,
    /// How its login proved who it was (RFC 8176 `amr`): `["pwd"]`,
    /// `["pwd","otp","mfa"]`, `["hwk","mfa"]` or `["swk","mfa"]`.
    amr: Vec<String>,
}

impl SessionView {
    fn of(session: &Session, current_id: &str) -> Self {
        SessionView {
            id: session.id.clone(),
            created_at: format_time(session.created_at),
            last_used_at: format_time(session.last_used_at),
            expires_at: format_time(session.expires_at),
            ip: session.client.ip.map(|ip| ip.to_string()),
            user_agent: session.client.user_agent.clone(),
            current: session.id == current_id,
            amr: session.amr.clone(),
        }
    }
}

impl Example for SessionView {
    fn example() -> Self {
        SessionView {
            id: "0b6d9f5e-8f2a-4c1e-9a57-3c1f0d2e4b6a".into(),
            created_at: "2026-11-27T08:00:00Z".into(),
            last_used_at: "2026-11-27T09:30:00Z".into(),
            expires_at: "2026-12-04T09:30:00Z".into(),
            ip: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
            current: true,
            amr: vec!["pwd".into()],
        }
    }
}

/// The caller's live sessions.
#[derive(Object)]
struct SessionsBody {
    /// Newest first.
    sessions: Vec<SessionView>,
}

/// How many sessions ended.
#[derive(Object)]
struct LogoutAllBody {
    /// Always "Logged out from all sessions".
    message: String,
    /// How many live sessions were revoked.
    revoked: u64,
}

#[derive(ApiResponse)]
enum SessionsResponse {
    /// The caller's live sessions.
    #[oai(status = 200)]
    Ok(Json<SessionsBody>),
}

error_responses!(SessionsError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
});

#[derive(ApiResponse)]
enum RevokeResponse {
    /// The session is revoked: its refresh token no longer works, nor do its
    /// access tokens on latchkey's routes.
    #[oai(status = 204)]
    Revoked,
}

error_responses!(RevokeError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `csrf_rejected`: a cookie-carrying request from a foreign origin.
    403 => Forbidden,
    /// `session_not_found`: no session with this id belongs to the caller.
    404 => NotFound,
});

#[derive(ApiResponse)]
enum LogoutAllResponse {
    /// Every session of the caller is revoked, this one included; the
    /// refresh cookie is cleared.
    #[oai(status = 200)]
    Ok(
        Json<LogoutAllBody>,
        /// Clears the refresh cookie.
        #[oai(header = "Set-Cookie")]
        String,
    ),
}

error_responses!(LogoutAllError {
    /// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
    401 => Unauthorized,
    /// `csrf_rejected`: a cookie-carrying request from a foreign origin.
    403 => Forbidden,
});

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// List my sessions
    ///
    /// Every live session (one per login, continued by refreshes) of the
    /// caller, newest first; `current` marks the one making this request.
    #[oai(path = "/sessions", method = "get")]
    async fn sessions(
        &self,
        core: Data<&Latchkey>,
        auth: AuthUser,
    ) -> Result<SessionsResponse, SessionsError> {
        let sessions = core.sessions(auth.user_id()).await?;
        Ok(SessionsResponse::Ok(Json(SessionsBody {
            sessions: sessions
                .iter()
                .map(|session| SessionView::of(session, auth.session_id()))
                .collect(),
        })))
    }

    /// Revoke one of my sessions
    ///
    /// Ends a session of the caller (for example a lost phone): its refresh
    /// token stops working at once, and so do its access tokens on
    /// latchkey's routes.
    #[oai(path = "/sessions/:id", method = "delete")]
    async fn revoke_session(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
        /// The session id, from `GET /api/auth/sessions`.
        id: Path<String>,
    ) -> Result<RevokeResponse, RevokeError> {
        core.revoke_session(auth.user_id(), &id, client_of(request, &core))
            .await?;
        Ok(RevokeResponse::Revoked)
    }

    /// Log out everywhere
    ///
    /// Revokes every session of the caller, including this one.
    #[oai(path = "/logout-all", method = "post")]
    async fn logout_all(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
        auth: AuthUser,
    ) -> Result<LogoutAllResponse, LogoutAllError> {
        let revoked = core
            .logout_all(auth.user_id(), client_of(request, &core))
            .await?;
        Ok(LogoutAllResponse::Ok(
            Json(LogoutAllBody {
                message: "Logged out from all sessions".into(),
                revoked: revoked as u64,
            }),
            clear_refresh_cookie(&Scope::of(
                request,
                "/api/auth/logout-all",
                core.config().cookies_secure(),
            )),
        ))
    }
}
