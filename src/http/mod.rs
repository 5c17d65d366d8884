//! The HTTP layer: the only importer of poem. Builds the routes, Swagger UI
//! and the OpenAPI spec, and serves them.
//!
//! - [`app`] is the whole endpoint (API + `/docs` + `/openapi.json` + the
//!   error, header and body-size middleware), for embedding or testing.
//! - [`serve`] runs [`app`] on an already-bound listener until a shutdown
//!   future completes, then finishes in-flight requests; [`serve_endpoint`]
//!   serves any endpoint the same way.
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
mod mfa_api;
mod origin;
mod pages;
mod passkeys_api;
mod profile_api;
mod recovery_api;
mod server;
mod sessions_api;
mod tls;
mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ipnet::IpNet;
use poem::endpoint::make_sync;
use poem::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get};
use poem_openapi::error::{ParseParamError, ParseRequestPayloadError};
use poem_openapi::registry::{MetaApi, MetaPath, Registry};
use poem_openapi::{OpenApi, OpenApiService, Tags};
use tracing::Instrument;

use crate::error::Error as CoreError;
use crate::service::Latchkey;

pub use auth::{ACCESS_TOKEN_COOKIE, Admin, AuthUser, RequireRole, RoleName, SignedIn};
pub use cookies::REFRESH_TOKEN_COOKIE;
pub use error::ErrorBody;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The spec's tags, in the order people use them (and Swagger UI lists them).
#[derive(Tags, Clone, Copy)]
enum ApiTags {
    /// Register, log in, refresh and log out.
    Auth,
    /// An authenticator app (TOTP) and recovery codes as a second factor,
    /// and the second step of a login that needs one.
    SecondFactors,
    /// Passkeys (WebAuthn): register them, and sign in with one instead of
    /// a password.
    Passkeys,
    /// The authenticated user.
    Profile,
    /// The caller's sessions (devices): list, revoke one, revoke all.
    Sessions,
    /// The caller's account: password and deletion.
    Account,
    /// Verifying an address, resetting a forgotten password, changing the
    /// address: by links sent by mail.
    Recovery,
    /// User management and the audit log (role `admin`).
    Admin,
    /// Public keys and discovery, for services that verify access tokens.
    Discovery,
    /// Service status.
    Meta,
}

/// Every tag, in declaration order.
const TAG_ORDER: [ApiTags; 10] = [
    ApiTags::Auth,
    ApiTags::SecondFactors,
    ApiTags::Passkeys,
    ApiTags::Profile,
    ApiTags::Sessions,
    ApiTags::Account,
    ApiTags::Recovery,
    ApiTags::Admin,
    ApiTags::Discovery,
    ApiTags::Meta,
];

type Apis = MergedPaths<(
    auth_api::AuthApi,
    mfa_api::MfaApi,
    passkeys_api::PasskeysApi,
    profile_api::ProfileApi,
    sessions_api::SessionsApi,
    account_api::AccountApi,
    recovery_api::RecoveryApi,
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
    .description(
        "Self-hosted authentication: argon2id passwords, short-lived access JWTs, rotating refresh tokens.\n\n\
         Log in to get a short-lived access token (send it as `Authorization: Bearer <token>`) \
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

/// Swagger UI's page and the spec, built once (the page is 1.7 MB: a copy
/// per request would let a client that reads slowly, or not at all, pile
/// them up in memory), for the root and for the paths the app is nested
/// under, if any (where the spec names that path as its server, so that
/// Try it out calls the right URLs).
struct Documents {
    root: (Bytes, Bytes),
    /// Built on first use, for at most [`MAX_MOUNTS`] paths.
    mounted: std::sync::Mutex<Vec<(String, Bytes, Bytes)>>,
}

/// How many mount paths get their own documents; beyond, the root's are
/// served (an app does not nest latchkey under more).
const MAX_MOUNTS: usize = 4;

impl Documents {
    fn new() -> Documents {
        Documents {
            root: Documents::build(""),
            mounted: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The page and the spec for an app mounted at `mount`.
    fn build(mount: &str) -> (Bytes, Bytes) {
        let service = api_service();
        let generated = service.spec();
        let mut spec = with_tag_order(&generated);
        if !mount.is_empty()
            && let Ok(mut document) = serde_json::from_str::<serde_json::Value>(&spec)
        {
            document["servers"] = serde_json::json!([{ "url": mount }]);
            spec = serde_json::to_string_pretty(&document).unwrap_or(spec);
        }
        // Swagger UI embeds the document it shows: give it this one.
        let page = service.swagger_ui_html().replacen(&generated, &spec, 1);
        (Bytes::from(page), Bytes::from(spec))
    }

    /// The page and the spec served under `mount` (`""`: the root).
    fn at(&self, mount: &str) -> (Bytes, Bytes) {
        if mount.is_empty() {
            return self.root.clone();
        }
        let mut mounted = self
            .mounted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, page, spec)) = mounted.iter().find(|(path, _, _)| path == mount) {
            return (page.clone(), spec.clone());
        }
        if mounted.len() == MAX_MOUNTS {
            return self.root.clone();
        }
        let (page, spec) = Documents::build(mount);
        mounted.push((mount.to_owned(), page.clone(), spec.clone()));
        (page, spec)
    }
}

/// The whole latchkey endpoint: the API, Swagger UI at `/docs`, the spec at
/// `/openapi.json`, JSON errors for everything (unknown routes, bad bodies),
/// a 16 KiB body limit, CSRF and CORS checks, and the security headers.
pub fn app(core: Latchkey) -> impl Endpoint + 'static {
    let documents = Arc::new(Documents::new());
    let shown = Arc::clone(&documents);
    let docs = get(make_sync(move |req| {
        let (html, _) = shown.at(origin::mount(&req, "/docs"));
        Response::builder()
            .content_type("text/html; charset=utf-8")
            .body(Body::from_bytes(html))
    }));
    let spec = get(make_sync(move |req| {
        let (_, spec) = documents.at(origin::mount(&req, "/openapi.json"));
        Response::builder()
            .content_type("application/json")
            .body(Body::from_bytes(spec))
    }));
    let service = api_service();
    let metrics = core.config().metrics.is_on();
    let mut routes = Route::new()
        .nest("/docs", Route::new().at("/", docs))
        .at("/openapi.json", spec)
        .nest("/account", account_pages());
    if metrics {
        let scraped = core.clone();
        routes = routes.at(
            METRICS_PATH,
            get(poem::endpoint::make(move |_| {
                let scraped = scraped.clone();
                async move {
                    Response::builder()
                        .content_type(crate::metrics::CONTENT_TYPE)
                        .body(scraped.metrics_text().await)
                }
            })),
        );
    }
    let fixed = ["/docs", "/openapi.json"]
        .into_iter()
        .chain(pages::PATHS)
        .chain(metrics.then_some(METRICS_PATH));
    let routes_known = AllowedMethods::of::<Apis>(fixed);
    routes
        .nest("/", service)
        .with(Guard::with_routes(core, routes_known))
}

/// The pages the links in latchkey's mails open (`/verify-email`,
/// `/reset-password`, `/confirm-email`), for an app that serves [`Api`]
/// itself: nest them at `<mount>/account`, where the links point when
/// `--public-url` is the app's URL with the mount (`https://app.example/auth`).
/// They post to `../api/…`, so they find the API wherever it is mounted.
pub fn account_pages() -> impl Endpoint + 'static {
    pages::routes()
}

/// Where latchkey's operations sit in an embedding app's OpenAPI service:
/// implement it on a marker type and use [`Api`] of it.
///
/// ```
/// struct AuthAt;
/// impl latchkey::http::Mount for AuthAt {
///     const PATH: &'static str = "/auth";
/// }
/// // latchkey's login is then `POST /auth/api/auth/login`.
/// let api = latchkey::http::Api::<AuthAt>::default();
/// ```
pub trait Mount: Send + Sync + 'static {
    /// The path before latchkey's own (`/auth`), or `""` for the root; no
    /// trailing slash.
    const PATH: &'static str;
}

/// The root: latchkey's paths as they are (the standalone server).
pub struct Root;

impl Mount for Root {
    const PATH: &'static str = "";
}

/// latchkey's operations, for an app's own [`OpenApiService`]: give it a
/// tuple of your API and this one, and one document (one Swagger UI) lists
/// both, every latchkey path under `M::PATH`. Wrap the app in [`Guard`],
/// which gives the operations the core.
pub struct Api<M: Mount = Root> {
    apis: Apis,
    mount: std::marker::PhantomData<M>,
}

impl<M: Mount> Default for Api<M> {
    fn default() -> Self {
        Api {
            apis: Apis::default(),
            mount: std::marker::PhantomData,
        }
    }
}

impl<M: Mount> OpenApi for Api<M> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = Apis::meta();
        for path in apis.iter_mut().flat_map(|api| api.paths.iter_mut()) {
            path.path = format!("{}{}", M::PATH, path.path);
        }
        apis
    }

    fn register(registry: &mut Registry) {
        Apis::register(registry);
    }

    fn add_routes(
        self,
        route_table: &mut std::collections::HashMap<
            String,
            std::collections::HashMap<Method, poem::endpoint::BoxEndpoint<'static>>,
        >,
    ) {
        let mut own = std::collections::HashMap::new();
        self.apis.add_routes(&mut own);
        for (path, methods) in own {
            route_table
                .entry(format!("{}{path}", M::PATH))
                .or_default()
                .extend(methods);
        }
    }
}

/// The middleware latchkey's operations need, for an app that embeds them:
/// it gives them the core, answers every error (unknown routes, bad bodies,
/// panics) as JSON, limits bodies to [`MAX_BODY_BYTES`], checks the origin
/// of state-changing requests (CSRF) and CORS, adds the security headers
/// and a request id, and logs and counts every request. Wrap the whole app
/// in it: `Route::new()…nest("/", service).with(Guard::new(core).routes::<Apis>())`.
pub struct Guard {
    core: Latchkey,
    settings: Arc<GuardSettings>,
}

impl Guard {
    /// The guard for latchkey's own routes at the root; name the app's
    /// routes with [`Guard::routes`].
    pub fn new(core: Latchkey) -> Guard {
        Guard::with_routes(core, AllowedMethods::of::<Apis>([]))
    }

    /// Names the routes of `T` (your OpenAPI service's API tuple, latchkey's
    /// [`Api`] included) in request logs, in metrics and in the `Allow`
    /// header of a 405. Paths not in `T` are logged as `(none)`.
    #[must_use]
    pub fn routes<T: OpenApi>(self) -> Guard {
        Guard::with_routes(self.core, AllowedMethods::of::<T>([]))
    }

    fn with_routes(core: Latchkey, allowed: AllowedMethods) -> Guard {
        let settings = Arc::new(GuardSettings::of(core.config(), allowed));
        Guard { core, settings }
    }
}

impl<E: Endpoint + 'static> poem::Middleware<E> for Guard {
    type Output = poem::endpoint::BoxEndpoint<'static>;

    fn transform(&self, endpoint: E) -> Self::Output {
        let settings = Arc::clone(&self.settings);
        let counted = self.core.clone();
        endpoint
            .data(self.core.clone())
            // A bug must cost one request a 500, not the connection its answer.
            .with(poem::middleware::CatchPanic::new())
            .around(move |next, req| {
                let settings = Arc::clone(&settings);
                let counted = counted.clone();
                async move { guard(next, req, &settings, counted.metrics()).await }
            })
            .boxed()
    }
}

/// Serves [`app`] on `listener` until `shutdown` completes, then lets
/// in-flight requests finish (up to 30 s); idle connections close at once.
/// Every connection is bounded as `--max-connections`, `--header-timeout`
/// and the other connection settings say.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    core: Latchkey,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let config = core.config().clone();
    serve_endpoint(listener, app(core), &config, shutdown).await
}

/// Serves any endpoint the way [`serve`] serves latchkey's: the same
/// connection caps, timeouts, head limits, TLS and security headers, as
/// `config` sets them. For an app that mounts [`app`] among its own routes
/// (and for the benchmark's baseline, a bare handler served alike).
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve_endpoint<E: Endpoint + 'static>(
    listener: tokio::net::TcpListener,
    endpoint: E,
    config: &crate::config::Config,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = tls::acceptor(config)?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, scheme, "latchkey listening");
    for everyone in config
        .trusted_proxies
        .iter()
        .filter(|net| net.prefix_len() == 0)
    {
        tracing::warn!(
            trusted = %everyone,
            "--trusted-proxies trusts every address: any client can name its own address (rate limits, logs) and host; list only your proxies"
        );
    }
    let settings = server::Settings {
        limits: config.connections.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        tls,
        header_lines: security_headers(config.serves_tls())
            .iter()
            .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap_or_default()))
            .collect::<String>()
            .into_bytes(),
    };
    server::serve(listener, endpoint, settings, shutdown).await
}

/// Where the Prometheus metrics are served (unless `--metrics off`).
const METRICS_PATH: &str = "/metrics";

/// What the outermost middleware needs from the configuration.
pub(crate) struct GuardSettings {
    cors_origins: Vec<String>,
    trusted_proxies: Vec<IpNet>,
    hsts: bool,
    body_timeout: Duration,
    allowed: AllowedMethods,
}

impl GuardSettings {
    fn of(config: &crate::config::Config, allowed: AllowedMethods) -> Self {
        GuardSettings {
            cors_origins: config.cors_origins.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            hsts: config.serves_tls(),
            body_timeout: config.connections.body_timeout,
            allowed,
        }
    }
}

/// The methods each path answers, from the spec (plus the docs and the spec
/// itself), for the `Allow` header of a 405 (RFC 9110 §15.5.6).
struct AllowedMethods {
    routes: Vec<RouteInfo>,
    /// The template of every path no route answers.
    no_route: Template,
}

/// A route template as logged and counted: shared, so that counting a
/// request copies no string.
pub(crate) type Template = Arc<String>;

/// One path of the spec: its template, split, and the methods it answers.
struct RouteInfo {
    template: Template,
    segments: Vec<String>,
    allow: String,
    /// Whether the path with a trailing slash is this route too.
    trailing_slash: bool,
}

impl AllowedMethods {
    /// The paths of `T`'s operations, and `fixed` paths that answer GET.
    fn of<T: OpenApi>(fixed: impl IntoIterator<Item = &'static str>) -> Self {
        let mut paths: Vec<RouteInfo> = T::meta()
            .into_iter()
            .flat_map(|api| api.paths)
            .map(|path| {
                let mut methods: Vec<String> = path
                    .operations
                    .iter()
                    .map(|operation| operation.method.to_string())
                    .collect();
                // poem answers HEAD wherever it answers GET.
                if methods.iter().any(|method| method == "GET") {
                    methods.push("HEAD".to_owned());
                }
                RouteInfo {
                    segments: segments(&path.path),
                    template: Arc::new(path.path),
                    allow: methods.join(", "),
                    trailing_slash: false,
                }
            })
            .collect();
        for fixed in fixed {
            paths.push(RouteInfo {
                template: Arc::new(fixed.to_owned()),
                segments: segments(fixed),
                allow: "GET, HEAD".to_owned(),
                // A nested route (`/docs`) answers `/docs/` too.
                trailing_slash: fixed == "/docs",
            });
        }
        AllowedMethods {
            routes: paths,
            no_route: Arc::new("(none)".to_owned()),
        }
    }

    /// The route a request path belongs to (`{id}` in a template matches
    /// any one segment).
    fn route(&self, path: &str) -> Option<&RouteInfo> {
        let wanted = segments(path);
        self.routes.iter().find(|route| {
            route.segments.len() == wanted.len()
                && route
                    .segments
                    .iter()
                    .zip(&wanted)
                    .all(|(expected, found)| expected.starts_with('{') || expected == found)
        })
    }

    /// The `Allow` value for a request path.
    fn for_path(&self, path: &str) -> Option<&str> {
        self.route(path).map(|route| route.allow.as_str())
    }

    /// The template of a request path's route, for logs (never the path
    /// itself: a client chooses that).
    fn template(&self, path: &str) -> &Template {
        // `/healthz/` is not `/healthz`: the router answers it 404.
        let trailing_slash = path.len() > 1 && path.ends_with('/');
        self.route(path)
            .filter(|route| !trailing_slash || route.trailing_slash)
            .map_or(&self.no_route, |route| &route.template)
    }
}

fn segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect()
}

/// The headers every response carries (HSTS only over TLS): no sniffing, no
/// referrer, no framing.
fn security_headers(hsts: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if hsts {
        // Browsers then refuse plain HTTP to this host for a year.
        headers.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    headers
}

/// Methods a browser may send cross-origin to an allowed origin.
const CORS_METHODS: &str = "GET, POST, PATCH, DELETE";
/// Request headers an allowed origin may send.
const CORS_HEADERS: &str = "authorization, content-type";
/// Response headers an allowed origin may read.
const CORS_EXPOSED: &str = "retry-after, www-authenticate";

/// A domain error as a poem error whose response is the JSON body.
pub(crate) fn error_response(err: &CoreError) -> poem::Error {
    let (status, body) = error::describe(err);
    poem::Error::from_response(error::error_json(status, body))
}

/// The outermost middleware: origin checks and the body limit in, JSON
/// errors and headers out.
/// The response header that carries the request id.
const REQUEST_ID: &str = "x-request-id";

/// Every request: a request id (a trusted proxy's `X-Request-Id`, else a new
/// one), returned in the response and attached to every log line the
/// request causes, and one log line when it is answered.
async fn guard<E: Endpoint>(
    next: E,
    req: Request,
    settings: &GuardSettings,
    metrics: &crate::metrics::Metrics,
) -> poem::Result<Response> {
    let started = std::time::Instant::now();
    let id = request_id(&req, &settings.trusted_proxies);
    // A method is any token a client likes, up to the head limit: only
    // the standard ones are logged by name, so a line stays short.
    let method = standard_method(req.method());
    let route = Arc::clone(settings.allowed.template(req.uri().path()));
    let client = auth::client_info(&req, &settings.trusted_proxies);
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = check_and_answer(next, req, settings)
        .instrument(span)
        .await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.request(&route, method, status, elapsed);
    tracing::info!(
        target: "latchkey::request",
        request_id = %id,
        method,
        route = %route,
        status,
        latency_us = elapsed.as_micros() as u64,
        ip = client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        "request"
    );
    Ok(response)
}

/// The name of a standard method, as a `'static` label.
fn standard_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "(other)",
    }
}

/// The request's id: the `X-Request-Id` a trusted proxy sent (1 to 128
/// letters, digits and `-._:`), else a new random one.
fn request_id(req: &Request, trusted_proxies: &[IpNet]) -> String {
    let forwarded = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| {
            (1..=128).contains(&value.len())
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-._:".contains(&byte))
        });
    match forwarded {
        Some(id) if auth::peer_is_trusted(req, trusted_proxies) => id.to_owned(),
        _ => crate::tokens::new_id(),
    }
}

/// The checks every request passes (Host, origin, body) and its answer.
async fn check_and_answer<E: Endpoint>(
    next: E,
    mut req: Request,
    settings: &GuardSettings,
) -> poem::Result<Response> {
    let strict = req.extensions().get::<server::OwnServer>().is_some();
    let host_problem = origin::host_problem(&req, &settings.trusted_proxies, strict);
    let relation = origin::relation(&req, settings);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut response = if let Some(problem) = host_problem {
        error::error_json(
            StatusCode::BAD_REQUEST,
            ErrorBody::new("invalid_input", problem),
        )
    } else if relation == origin::Relation::Foreign && (preflight || unsafe_method) {
        // A page of another origin asking to change state (or to be allowed
        // to): CSRF, or CORS for an origin nobody listed (OWASP ASVS 13.2.3).
        error_response(&CoreError::CsrfRejected).into_response()
    } else if preflight && matches!(relation, origin::Relation::Allowed(_)) {
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(header::ACCESS_CONTROL_ALLOW_METHODS, CORS_METHODS)
            .header(header::ACCESS_CONTROL_ALLOW_HEADERS, CORS_HEADERS)
            .header(header::ACCESS_CONTROL_MAX_AGE, "600")
            .finish()
    } else {
        let path = req.uri().path().to_owned();
        match read_body(&mut req, settings.body_timeout).await {
            Err(refused) => refused,
            Ok(()) => {
                let mut response = respond(next, req).await;
                if response.status() == StatusCode::METHOD_NOT_ALLOWED
                    && let Some(allow) = settings.allowed.for_path(&path)
                    && let Ok(allow) = HeaderValue::from_str(allow)
                {
                    response.headers_mut().insert(header::ALLOW, allow);
                }
                response
            }
        }
    };
    let unauthorized = response.status() == StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    if unauthorized && !headers.contains_key(header::WWW_AUTHENTICATE) {
        // RFC 6750 §3: a 401 names the scheme the client should use.
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let origin::Relation::Allowed(origin) = relation
        && let Ok(origin) = HeaderValue::from_str(&origin)
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSED),
        );
    }
    if !settings.cors_origins.is_empty() {
        // The answer differs by Origin: caches must keep them apart.
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    for (name, value) in security_headers(settings.hsts) {
        headers.insert(name, value);
    }
    Ok(response)
}

/// Reads the whole body, up to [`MAX_BODY_BYTES`] and within `timeout`,
/// whatever the protocol (HTTP/2 requests carry no `Content-Length`), and
/// puts it back for the handler. A declared length over the limit is
/// refused without reading.
async fn read_body(req: &mut Request, timeout: Duration) -> Result<(), Response> {
    let too_large = || {
        error::error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorBody::new(
                "payload_too_large",
                format!("Request body exceeds {MAX_BODY_BYTES} bytes"),
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let body = req.take_body();
    match tokio::time::timeout(timeout, body.into_bytes_limit(MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .is_some_and(|value| value.to_ascii_lowercase().contains("json"));
            if json && let Some(key) = fields::repeated_key(&bytes) {
                // Parsers disagree on which of two equal keys counts (a
                // proxy may check one, latchkey read the other): refused.
                return Err(error::error_json(
                    StatusCode::BAD_REQUEST,
                    ErrorBody::new(
                        "invalid_input",
                        format!("body: the key {key:?} appears twice in one object"),
                    ),
                ));
            }
            req.set_body(bytes);
            Ok(())
        }
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => Err(too_large()),
        Ok(Err(_)) => Err(error::error_json(
            StatusCode::BAD_REQUEST,
            ErrorBody::new("invalid_input", "body: could not be read"),
        )),
        Err(_) => Err(error::error_json(
            StatusCode::REQUEST_TIMEOUT,
            ErrorBody::new(
                "request_timeout",
                format!(
                    "body: not received within {}",
                    humantime::format_duration(timeout)
                ),
            ),
        )),
    }
}

/// Calls the routes and turns every error into the JSON body.
async fn respond<E: Endpoint>(next: E, req: Request) -> Response {
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
                _ => match (
                    err.downcast_ref::<ParseRequestPayloadError>(),
                    err.downcast_ref::<ParseParamError>(),
                ) {
                    (Some(payload), _) => fields::body_error(&payload.reason),
                    (_, Some(param)) => fields::param_error(param.name, &param.reason),
                    _ => err.to_string(),
                },
            };
            error::error_json(
                status,
                ErrorBody::new(error::code_for_status(status), message),
            )
        }
    }
}

/// Feeds arbitrary bytes to the request parsers an attacker reaches before
/// any handler: the bearer header, the cookies, the forwarding headers and
/// every JSON body type. Panics only where latchkey would.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_request(data: &[u8]) {
    use poem_openapi::types::ParseFromJSON;
    let text = String::from_utf8_lossy(data);
    let mut builder = Request::builder();
    for name in [
        "authorization",
        "cookie",
        "x-forwarded-for",
        "forwarded",
        "origin",
    ] {
        if let Ok(value) = HeaderValue::from_bytes(data) {
            builder = builder.header(name, value);
        }
    }
    let req = builder.finish();
    let _ = auth::presented_token(&req);
    let _ = cookies::single(&req, cookies::REFRESH_TOKEN_COOKIE);
    let trusted: Vec<IpNet> = vec![
        "0.0.0.0/0".parse().expect("net"),
        "::/0".parse().expect("net"),
    ];
    let _ = auth::client_ip([127, 0, 0, 1].into(), req.headers(), &trusted);
    let settings = GuardSettings::of(
        &crate::config::Config::default(),
        AllowedMethods::of::<()>([]),
    );
    let _ = origin::relation(&req, &settings);
    let _ = fields::body_error(&text);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        fn parse<T: ParseFromJSON>(value: &serde_json::Value) {
            if let Err(err) = T::parse_from_json(Some(value.clone())) {
                let _ = fields::body_error(err.message());
            }
        }
        parse::<auth_api::RegisterRequest>(&value);
        parse::<auth_api::LoginRequest>(&value);
        parse::<account_api::PasswordChange>(&value);
        parse::<account_api::DeleteAccount>(&value);
        parse::<admin_api::UserPatch>(&value);
    }
}
