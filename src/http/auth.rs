//! The extractors that guard protected operations, and the client address
//! of a request. [`AuthUser`] reads the access token from `Authorization:
//! Bearer …` or, when no such header is sent, from the `access_token`
//! cookie, authenticates it with the core, and documents both ways in the
//! spec (Swagger UI's Authorize button sets the bearer one);
//! [`RequireRole`] also requires a role. Public so that an app embedding
//! latchkey can guard its own poem-openapi operations with them.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use poem::Request;
use poem::http::{HeaderMap, HeaderName, header};
use poem::web::RemoteAddr;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::error::Error;
use crate::model::ClientInfo;
use crate::service::{Authenticated, Latchkey};

use super::error_response;

/// Name of the bearer security scheme in the spec.
pub const BEARER_SCHEME: &str = "BearerAuth";
/// Name of the cookie security scheme in the spec.
pub const COOKIE_SCHEME: &str = "CookieAuth";
/// The cookie an access token may also arrive in.
pub const ACCESS_TOKEN_COOKIE: &str = "access_token";

/// The caller of a protected operation: a valid access token of a live
/// session, and its user as stored now. Missing or bad token: 401 with
/// `missing_token`, `token_expired`, `invalid_token` or `session_revoked`.
/// Dereferences to [`Authenticated`] (`auth.claims`, `auth.user`).
#[derive(Debug, Clone)]
pub struct AuthUser(pub Authenticated);

impl AuthUser {
    /// The user's id (the token's `sub`).
    pub fn user_id(&self) -> &str {
        &self.0.user.id
    }

    /// The user's email, as stored now.
    pub fn email(&self) -> &str {
        &self.0.user.email
    }

    /// The user's roles, as stored now.
    pub fn roles(&self) -> &[String] {
        &self.0.user.roles
    }

    /// The session the token belongs to (its `sid`).
    pub fn session_id(&self) -> &str {
        &self.0.claims.sid
    }

    /// How the session's login proved who it was (RFC 8176 `amr`):
    /// `["pwd"]`, `["pwd","otp","mfa"]`, `["hwk","mfa"]` or `["swk","mfa"]`.
    pub fn amr(&self) -> &[String] {
        &self.0.claims.amr
    }

    /// Whether the session signed in with more than a password (a second
    /// factor or a passkey): for a handler that asks for it before a
    /// sensitive step.
    pub fn multi_factor(&self) -> bool {
        self.amr().iter().any(|method| method == "mfa")
    }
}

impl std::ops::Deref for AuthUser {
    type Target = Authenticated;

    fn deref(&self) -> &Authenticated {
        &self.0
    }
}

/// The access token a request carries: the bearer header first, then the
/// cookie. Two `Authorization` headers are refused (`invalid_token`), not
/// guessed between: a proxy and latchkey might each pick another.
pub(super) fn presented_token(req: &Request) -> Result<String, Error> {
    let mut headers = req.headers().get_all(header::AUTHORIZATION).iter();
    if let Some(value) = headers.next() {
        if headers.next().is_some() {
            return Err(Error::InvalidToken);
        }
        let value = value.to_str().map_err(|_| Error::MissingToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(Error::MissingToken)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Error::MissingToken);
        }
        return Ok(token.to_owned());
    }
    // The header itself, not poem's cookie jar: the jar exists only inside
    // poem-openapi's middleware, and a guard must not depend on where it is
    // mounted. Two access_token cookies are refused, not guessed between.
    super::cookies::single(req, ACCESS_TOKEN_COOKIE)
        .map_err(|_| Error::MissingToken)?
        .filter(|token| !token.is_empty())
        .ok_or(Error::MissingToken)
}

/// The core the app was built with.
pub(crate) fn core_of(req: &Request) -> poem::Result<&Latchkey> {
    req.data::<Latchkey>().ok_or_else(|| {
        error_response(&Error::Internal(
            "the latchkey core is not attached to this route".into(),
        ))
    })
}

/// Whether the socket peer of `req` is one of `trusted_proxies`.
pub(crate) fn peer_is_trusted(req: &Request, trusted_proxies: &[IpNet]) -> bool {
    match req.remote_addr() {
        RemoteAddr(poem::Addr::SocketAddr(addr)) => {
            let ip = addr.ip().to_canonical();
            trusted_proxies.iter().any(|net| net.contains(&ip))
        }
        _ => false,
    }
}

/// [`client_info`] with the core's trusted proxies.
pub(crate) fn client_of(req: &Request, core: &Latchkey) -> ClientInfo {
    client_info(req, &core.config().trusted_proxies)
}

/// The client's address and user agent, as recorded with a session and fed
/// to the rate limits and the audit log.
pub(crate) fn client_info(req: &Request, trusted_proxies: &[IpNet]) -> ClientInfo {
    let peer = match req.remote_addr() {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        RemoteAddr(poem::Addr::SocketAddr(addr)) => Some(addr.ip().to_canonical()),
        _ => None,
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    let ip = peer.map(|peer| client_ip(peer, req.headers(), trusted_proxies));
    ClientInfo::new(ip, user_agent)
}

/// The client's IP: the socket peer, unless the peer is a trusted proxy; then
/// the forwarding chain (`X-Forwarded-For`) is walked from the right, past trusted proxies, to the first address no trusted proxy
/// vouches for. Addresses an untrusted peer claims are never believed.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_chain(headers).into_iter().rev() {
        let Some(ip) = hop else {
            // An unparsable hop ("unknown", an obfuscated name): stop at the
            // last address we could vouch for.
            return client;
        };
        client = ip;
        if !trusted(&ip) {
            return ip;
        }
    }
    client
}

/// The addresses of `X-Forwarded-For`, leftmost (the original client)
/// first. `None` marks a hop that is not an IP address.
///
/// Only the `X-Forwarded-*` family is read (as for the host and the
/// scheme): it is what nginx, Caddy, Traefik, HAProxy and the cloud load
/// balancers write. `Forwarded` (RFC 7239) is ignored: a proxy that writes
/// only one of the two passes the other through as the client sent it, so
/// reading both would let any client name its own address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .map(parse_hop)
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:443`,
/// `2001:db8::1`, `"[2001:db8::1]:443"`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let text = raw.trim().trim_matches('"');
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|rest| rest.split_once(']'))
                .and_then(|(ip, _)| ip.parse().ok())
        })?;
    Some(ip.to_canonical())
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl<'a> ApiExtractor<'a> for AuthUser {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            BEARER_SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "The `accessToken` from login or refresh, sent as `Authorization: Bearer <token>`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
        registry.create_security_scheme(
            COOKIE_SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(
                    "The access token in an `access_token` cookie, used only when no Authorization header is sent. (Swagger UI cannot set cookies: use BearerAuth here.)",
                ),
                name: Some(ACCESS_TOKEN_COOKIE),
                key_in: Some("cookie"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME, COOKIE_SCHEME]
    }

    async fn from_request(
        req: &'a Request,
        body: &mut poem::RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let SignedIn(auth) = <SignedIn as poem::FromRequest>::from_request(req, body).await?;
        Ok(auth)
    }
}

/// A role an operation requires, as a type: implement it on a marker type
/// and take a [`RequireRole`] of it as an operation parameter.
pub trait RoleName: Send + Sync + 'static {
    /// The role's name as stored on users (`admin`).
    const NAME: &'static str;
}

/// The `admin` role (the admin API's guard).
pub struct Admin;

impl RoleName for Admin {
    const NAME: &'static str = crate::model::ADMIN_ROLE;
}

/// The caller of an operation that requires role `R`: a valid access token
/// of a live session whose user (as stored now, so a role taken away counts
/// at once) holds `R`. Missing or bad token: 401 as for [`AuthUser`]; no
/// such role: 403 `forbidden` "Insufficient role".
///
/// ```
/// use latchkey::http::{Admin, RequireRole};
/// use poem_openapi::{OpenApi, payload::PlainText};
///
/// struct Reports;
///
/// #[OpenApi]
/// impl Reports {
///     /// Only administrators get here.
///     #[oai(path = "/reports", method = "get")]
///     async fn reports(&self, admin: RequireRole<Admin>) -> PlainText<String> {
///         PlainText(format!("hello, {}", admin.user.username))
///     }
/// }
/// ```
pub struct RequireRole<R: RoleName> {
    /// The authenticated caller, who holds the role. `RequireRole`
    /// dereferences to it (`admin.user`, `admin.user_id()`).
    pub auth: AuthUser,
    role: std::marker::PhantomData<R>,
}

impl<R: RoleName> std::ops::Deref for RequireRole<R> {
    type Target = AuthUser;

    fn deref(&self) -> &AuthUser {
        &self.auth
    }
}

impl<'a, R: RoleName> ApiExtractor<'a> for RequireRole<R> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        AuthUser::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        AuthUser::security_schemes()
    }

    async fn from_request(
        req: &'a Request,
        body: &mut poem::RequestBody,
        param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let auth = AuthUser::from_request(req, body, param_opts).await?;
        core_of(req)?
            .require_role(&auth, R::NAME)
            .map_err(|err| error_response(&err))?;
        Ok(RequireRole {
            auth,
            role: std::marker::PhantomData,
        })
    }
}

/// [`AuthUser`] for plain poem handlers (`#[poem::handler]`), which take
/// poem's extractors rather than poem-openapi's: the same check, the same
/// 401 answers. (poem-openapi operations take [`AuthUser`] itself, which
/// also documents the security scheme.)
///
/// ```
/// use latchkey::http::SignedIn;
///
/// #[poem::handler]
/// fn hello(SignedIn(user): SignedIn) -> String {
///     format!("hello, {}", user.email())
/// }
/// ```
#[derive(Debug, Clone)]
pub struct SignedIn(pub AuthUser);

impl<'a> poem::FromRequest<'a> for SignedIn {
    async fn from_request(req: &'a Request, _body: &mut poem::RequestBody) -> poem::Result<Self> {
        let core = core_of(req)?;
        let token = presented_token(req).map_err(|err| error_response(&err))?;
        core.authenticate(&token)
            .await
            .map(|auth| SignedIn(AuthUser(auth)))
            .map_err(|err| error_response(&err))
    }
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn a_cookie_token_is_read_without_poems_cookie_jar() {
        // Found by the property tests: reading the cookie through poem's
        // jar panicked outside poem-openapi's middleware.
        let with = |cookie: &str| {
            let req = Request::builder().header(header::COOKIE, cookie).finish();
            presented_token(&req).ok()
        };
        assert_eq!(with("access_token=abc; other=1").as_deref(), Some("abc"));
        assert_eq!(with("access_token=a; access_token=b"), None, "ambiguous");
        assert_eq!(with("=;;=="), None);
    }

    #[test]
    fn two_authorization_headers_are_refused_not_guessed_between() {
        let one = Request::builder()
            .header(header::AUTHORIZATION, "Bearer a")
            .finish();
        assert_eq!(presented_token(&one).ok().as_deref(), Some("a"));
        let two = Request::builder()
            .header(header::AUTHORIZATION, "Bearer a")
            .header(header::AUTHORIZATION, "Bearer b")
            .finish();
        assert!(matches!(presented_token(&two), Err(Error::InvalidToken)));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &spoofed, &[]),
            ip("203.0.113.9")
        );
        let proxies = ["10.0.0.0/8".parse().expect("cidr")];
        assert_eq!(
            client_ip(ip("203.0.113.9"), &spoofed, &proxies),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_chain_is_walked_from_the_right() {
        let proxies = ["10.0.0.0/8".parse().expect("cidr")];
        // The client forged the first hop; the trusted proxy appended the real one.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &chain, &proxies),
            ip("198.51.100.7")
        );
        let ported = headers(&[("x-forwarded-for", r#"6.6.6.6, "[2001:db8::17]:4711""#)]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &ported, &proxies),
            ip("2001:db8::17")
        );
        let mapped = headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &mapped, &proxies),
            ip("198.51.100.7")
        );
        let hidden = headers(&[("x-forwarded-for", "_hidden, 10.0.0.9")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &hidden, &proxies), ip("10.0.0.9"));
        // A client's own `Forwarded`, passed through by a proxy that writes
        // X-Forwarded-For, names nothing.
        let both = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=203.0.113.66"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &both, &proxies),
            ip("198.51.100.7")
        );
        let only_forwarded = headers(&[("forwarded", "for=203.0.113.66")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &only_forwarded, &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &proxies),
            ip("10.0.0.2")
        );
    }
}
