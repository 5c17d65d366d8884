//! The HTTP layer: the only importer of poem. Builds the routes, Swagger UI
//! and the OpenAPI spec, and serves them.
//!
//! - [`app`] is the whole endpoint (API + `/docs` + `/openapi.json` + the
//!   error, header and body-size middleware), for embedding or testing.
//! - [`serve`] runs [`app`] on an already-bound listener until a shutdown
//!   future completes, then finishes in-flight requests.
//! - [`spec`] is the OpenAPI document (`latchkey openapi` prints it).
//! - [`AuthUser`] and [`RequireRole`] guard an embedding app's own operations.
//!
//! One file per OpenAPI tag (`auth_api`, `profile_api`, `sessions_api`,
//! `account_api`, `admin_api`, `discovery_api`, `meta_api`); shared pieces
//! in `views` (response views), `fields` (body field parsers), `cookies`,
//! `auth` (extractors, client address) and `error` (the status table).

mod account_api;
mod admin_api;
mod auth;
mod auth_api;
mod cookies;
mod discovery_api;
mod error;
mod fields;
mod meta_api;
mod profile_api;
mod sessions_api;
mod tls;
mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use poem::endpoint::make_sync;
use poem::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use poem::listener::{Acceptor, AcceptorExt, TcpAcceptor};
use poem::middleware::Cors;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::registry::{MetaApi, MetaPath, Registry};
use poem_openapi::{OpenApi, OpenApiService, Tags};

use crate::error::Error as CoreError;
use crate::service::Latchkey;

pub use auth::{ACCESS_TOKEN_COOKIE, Admin, AuthUser, RequireRole, RoleName};
pub use cookies::REFRESH_TOKEN_COOKIE;
pub use error::ErrorBody;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long shutdown waits for in-flight requests.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(30);

/// The spec's tags, in the order people use them (and Swagger UI lists them).
#[derive(Tags, Clone, Copy)]
enum ApiTags {
    /// Register, log in, refresh and log out.
    Auth,
    /// The authenticated user.
    Profile,
    /// The caller's sessions (devices): list, revoke one, revoke all.
    Sessions,
    /// The caller's account: password and deletion.
    Account,
    /// User management and the audit log (role `admin`).
    Admin,
    /// Public keys and discovery, for services that verify access tokens.
    Discovery,
    /// Service status.
    Meta,
}

/// Every tag, in declaration order.
const TAG_ORDER: [ApiTags; 7] = [
    ApiTags::Auth,
    ApiTags::Profile,
    ApiTags::Sessions,
    ApiTags::Account,
    ApiTags::Admin,
    ApiTags::Discovery,
    ApiTags::Meta,
];

type Apis = MergedPaths<(
    auth_api::AuthApi,
    profile_api::ProfileApi,
    sessions_api::SessionsApi,
    account_api::AccountApi,
    admin_api::AdminApi,
    discovery_api::DiscoveryApi,
    meta_api::MetaApi,
)>;

/// An API whose operations on one path may come from several impls (Profile
/// reads `/api/profile/me`, Account deletes it). poem-openapi routes them
/// all but writes one spec entry per impl and path, and a JSON reader keeps
/// only the last; this merges them into one entry per path.
#[derive(Default)]
struct MergedPaths<T>(T);

impl<T: OpenApi> OpenApi for MergedPaths<T> {
    fn meta() -> Vec<MetaApi> {
        let mut merged: Vec<MetaPath> = Vec::new();
        for path in T::meta().into_iter().flat_map(|api| api.paths) {
            match merged.iter_mut().find(|seen| seen.path == path.path) {
                Some(seen) => seen.operations.extend(path.operations),
                None => merged.push(path),
            }
        }
        vec![MetaApi { paths: merged }]
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn add_routes(
        self,
        route_table: &mut std::collections::HashMap<
            String,
            std::collections::HashMap<Method, poem::endpoint::BoxEndpoint<'static>>,
        >,
    ) {
        self.0.add_routes(route_table);
    }
}

fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        Apis::default(),
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
    with_tag_order(&api_service().spec())
}

/// The document with its tags in [`TAG_ORDER`]: poem-openapi sorts them by
/// name, and Swagger UI shows them in the document's order.
fn with_tag_order(spec: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(spec) else {
        return spec.to_owned();
    };
    if let Some(tags) = document
        .get_mut("tags")
        .and_then(serde_json::Value::as_array_mut)
    {
        let rank = |tag: &serde_json::Value| {
            TAG_ORDER
                .iter()
                .position(|known| tag["name"] == known.name())
                .unwrap_or(TAG_ORDER.len())
        };
        tags.sort_by_key(rank);
    }
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| spec.to_owned())
}

/// The whole latchkey endpoint: the API, Swagger UI at `/docs`, the spec at
/// `/openapi.json`, JSON errors for everything (unknown routes, bad bodies),
/// a 16 KiB body limit and the security headers.
pub fn app(core: Latchkey) -> impl Endpoint + 'static {
    let service = api_service();
    let generated = service.spec();
    let ordered = with_tag_order(&generated);
    // Swagger UI embeds the document it shows: give it the ordered one.
    let docs_html = service.swagger_ui_html().replacen(&generated, &ordered, 1);
    let docs = make_sync(move |_| Html(docs_html.clone()));
    let spec = make_sync(move |_| {
        Response::builder()
            .content_type("application/json")
            .body(ordered.clone())
    });
    let config = core.config();
    let settings = Arc::new(GuardSettings {
        cors_origins: config.cors_origins.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        hsts: config.serves_tls(),
    });
    let cors = Cors::new()
        .allow_origins(config.cors_origins.iter().map(String::as_str))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
        .max_age(600);
    Route::new()
        .nest("/docs", Route::new().at("/", docs))
        .at("/openapi.json", spec)
        .nest("/", service)
        .data(core.clone())
        .with_if(!config.cors_origins.is_empty(), cors)
        .around(move |next, req| {
            let settings = Arc::clone(&settings);
            async move { guard(next, req, &settings).await }
        })
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
    let tls = tls::config(core.config())?;
    for address in acceptor.local_addr() {
        if let Some(address) = address.as_socket_addr() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(%address, scheme, "latchkey listening");
        }
    }
    let endpoint = app(core);
    match tls {
        Some(tls) => {
            let acceptor =
                tls::ConfigFirst::new(acceptor).rustls(futures_util::stream::iter([tls]));
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(endpoint, shutdown, Some(GRACEFUL_SHUTDOWN))
                .await
        }
        None => {
            Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(endpoint, shutdown, Some(GRACEFUL_SHUTDOWN))
                .await
        }
    }
}

/// What the outermost middleware needs from the configuration.
struct GuardSettings {
    cors_origins: Vec<String>,
    trusted_proxies: Vec<IpNet>,
    hsts: bool,
}

/// Whether a request that carries cookies and changes state comes from an
/// origin we do not trust (CSRF, OWASP ASVS 4.0 §13.2.3): its `Origin`
/// (or, without one, its `Referer`) is present and is neither this server
/// nor an allowed `--cors-origins` entry. Requests without either header
/// (curl, server-to-server) are not browsers acting for someone else.
fn cross_site(req: &Request, settings: &GuardSettings) -> bool {
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !unsafe_method || !req.headers().contains_key(header::COOKIE) {
        return false;
    }
    let text = |name| {
        req.headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let origin = match text(header::ORIGIN) {
        Some(origin) => origin.to_ascii_lowercase(),
        None => match text(header::REFERER).and_then(origin_of) {
            Some(origin) => origin,
            None => return false,
        },
    };
    if settings.cors_origins.contains(&origin) {
        return false;
    }
    // Same origin: the origin's authority is the host the request was sent
    // to (as a trusted proxy reports it, else the Host header).
    let Some((_, authority)) = origin.split_once("://") else {
        return true;
    };
    let peer_trusted = match req.remote_addr().as_socket_addr() {
        Some(peer) => settings
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip().to_canonical())),
        None => false,
    };
    let forwarded_host = text(X_FORWARDED_HOST).filter(|_| peer_trusted);
    let host = forwarded_host.or_else(|| text(header::HOST));
    !host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
}

/// `scheme://authority` of a URL (a `Referer`), lower-cased.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Sent over TLS: browsers then refuse plain HTTP to this host for a year.
const HSTS: &str = "max-age=31536000";

/// A domain error as a poem error whose response is the JSON body.
pub(crate) fn error_response(err: &CoreError) -> poem::Error {
    let (status, body) = error::describe(err);
    poem::Error::from_response(error::error_json(status, body))
}

/// The outermost middleware: body limit in, JSON errors and headers out.
async fn guard<E: Endpoint>(
    next: E,
    mut req: Request,
    settings: &GuardSettings,
) -> poem::Result<Response> {
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
    let mut response = if cross_site(&req, settings) {
        error_response(&CoreError::CsrfRejected).into_response()
    } else if too_large {
        error::error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorBody::new(
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
                        Some(payload) => fields::body_error(&payload.reason),
                        None => err.to_string(),
                    },
                };
                error::error_json(
                    status,
                    ErrorBody::new(error::code_for_status(status), message),
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
    if settings.hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    Ok(response)
}
