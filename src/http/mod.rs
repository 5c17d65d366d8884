//! The HTTP layer: the only importer of poem. Builds the routes, Swagger UI
//! and the OpenAPI spec, and serves them.
//!
//! - [`app`] is the whole endpoint (API + `/docs` + `/openapi.json` + the
//!   error, header and body-size middleware), for embedding or testing.
//! - [`serve`] runs [`app`] on an already-bound listener until a shutdown
//!   future completes, then finishes in-flight requests.
//! - [`spec`] is the OpenAPI document (`latchkey openapi` prints it).

mod auth;
mod auth_api;
mod error;
mod profile_api;

use std::future::Future;
use std::time::Duration;

use poem::http::{HeaderValue, StatusCode, header};
use poem::listener::{Acceptor, TcpAcceptor};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::{OpenApiService, Tags};

use crate::error::Error as CoreError;
use crate::service::Latchkey;

pub use auth::{ACCESS_TOKEN_COOKIE, AuthUser};
pub use auth_api::REFRESH_TOKEN_COOKIE;
pub use error::ErrorBody;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long shutdown waits for in-flight requests.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(30);

/// The spec's tags.
#[derive(Tags)]
enum ApiTags {
    /// Register, log in, refresh and log out.
    Auth,
    /// The authenticated user.
    Profile,
    /// Service status.
    Meta,
}

fn api_service() -> OpenApiService<
    (
        auth_api::AuthApi,
        profile_api::ProfileApi,
        profile_api::MetaApi,
    ),
    (),
> {
    OpenApiService::new(
        (auth_api::AuthApi, profile_api::ProfileApi, profile_api::MetaApi),
        "latchkey",
        env!("CARGO_PKG_VERSION"),
    )
    .summary("Self-hosted authentication: argon2id passwords, short-lived access JWTs, rotating refresh tokens.")
    .description(
        "Log in to get a short-lived access token (send it as `Authorization: Bearer <token>`) \
         and a long-lived refresh token in an HttpOnly cookie (`refresh_token`, path `/api/auth`). \
         `POST /api/auth/refresh` rotates the refresh token and returns a new access token; \
         `POST /api/auth/logout` revokes the session. Every error body is `{\"code\", \"message\"}`.",
    )
}

/// The OpenAPI 3 document, as served at `/openapi.json`.
pub fn spec() -> String {
    api_service().spec()
}

/// The whole latchkey endpoint: the API, Swagger UI at `/docs`, the spec at
/// `/openapi.json`, JSON errors for everything (unknown routes, bad bodies),
/// a 16 KiB body limit and the security headers.
pub fn app(core: Latchkey) -> impl Endpoint + 'static {
    let service = api_service();
    let docs = service.swagger_ui();
    let spec = service.spec_endpoint();
    Route::new()
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .nest("/", service)
        .data(core)
        .around(guard)
}

/// Serves [`app`] on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (up to 30 s).
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    core: Latchkey,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    for address in acceptor.local_addr() {
        if let Some(address) = address.as_socket_addr() {
            tracing::info!(%address, "latchkey listening");
        }
    }
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app(core), shutdown, Some(GRACEFUL_SHUTDOWN))
        .await
}

/// A domain error as a poem error whose response is the JSON body.
pub(crate) fn error_response(err: &CoreError) -> poem::Error {
    let (status, body) = error::describe(err);
    poem::Error::from_response(json_error(status, &body))
}

fn json_error(status: StatusCode, body: &ErrorBody) -> Response {
    let text = serde_json::json!({ "code": body.code, "message": body.message }).to_string();
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(text)
}

/// The outermost middleware: body limit in, JSON errors and headers out.
async fn guard<E: Endpoint>(next: E, mut req: Request) -> poem::Result<Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large = match declared {
        Some(length) => length > MAX_BODY_BYTES as u64,
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            // A chunked body has no declared length: read it up to the limit.
            match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
                Ok(bytes) => {
                    req.set_body(bytes);
                    false
                }
                Err(_) => true,
            }
        }
        None => false,
    };
    let mut response = if too_large {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &ErrorBody::new(
                "payload_too_large",
                format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
            ),
        )
    } else {
        match next.call(req).await {
            Ok(response) => response.into_response(),
            Err(err) if err.is_from_response() => err.into_response(),
            Err(err) => {
                let status = err.status();
                let message = match status {
                    StatusCode::NOT_FOUND => "Not found".to_owned(),
                    StatusCode::METHOD_NOT_ALLOWED => "Method not allowed".to_owned(),
                    _ if status.is_server_error() => {
                        tracing::error!(error = %err, "request failed");
                        "Internal server error".to_owned()
                    }
                    _ => match err.downcast_ref::<ParseRequestPayloadError>() {
                        Some(payload) => format!("Invalid request body: {}", payload.reason),
                        None => err.to_string(),
                    },
                };
                json_error(
                    status,
                    &ErrorBody::new(error::code_for_status(status), message),
                )
            }
        }
    };
    let unauthorized = response.status() == StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    if unauthorized && !headers.contains_key(header::WWW_AUTHENTICATE) {
        // RFC 6750 §3: a 401 names the scheme the client should use.
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Ok(response)
}
