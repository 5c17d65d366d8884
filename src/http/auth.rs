//! [`AuthUser`]: the extractor for protected operations. It reads the access
//! token from `Authorization: Bearer …` or, when no such header is sent, from
//! the `access_token` cookie, verifies it with the core, and documents both
//! ways in the spec (Swagger UI's Authorize button sets the bearer one).
//! Public so that an app embedding latchkey can guard its own poem-openapi
//! operations with it.

use poem::Request;
use poem::http::header;
use poem::web::RemoteAddr;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::error::Error;
use crate::model::ClientInfo;
use crate::service::Latchkey;
use crate::tokens::AccessClaims;

use super::error_response;

/// Name of the bearer security scheme in the spec.
pub const BEARER_SCHEME: &str = "BearerAuth";
/// Name of the cookie security scheme in the spec.
pub const COOKIE_SCHEME: &str = "CookieAuth";
/// The cookie an access token may also arrive in.
pub const ACCESS_TOKEN_COOKIE: &str = "access_token";

/// The caller of a protected operation, authenticated by a valid access token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The verified claims of the access token.
    pub claims: AccessClaims,
}

impl AuthUser {
    /// The authenticated user's id.
    pub fn user_id(&self) -> &str {
        &self.claims.sub
    }
}

/// The access token a request carries: the bearer header first, then the cookie.
fn presented_token(req: &Request) -> Result<String, Error> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Error::MissingToken)?;
        let (scheme, token) = value.split_once(' ').ok_or(Error::MissingToken)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Error::MissingToken);
        }
        return Ok(token.to_owned());
    }
    req.cookie()
        .get(ACCESS_TOKEN_COOKIE)
        .map(|cookie| cookie.value_str().to_owned())
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

/// The client's address and user agent, as recorded with a session.
pub(crate) fn client_info(req: &Request) -> ClientInfo {
    let ip = match req.remote_addr() {
        RemoteAddr(poem::Addr::SocketAddr(addr)) => Some(addr.ip().to_string()),
        _ => None,
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    ClientInfo::new(ip, user_agent)
}

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
        _body: &mut poem::RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let core = core_of(req)?;
        let claims = presented_token(req)
            .and_then(|token| core.authenticate(&token))
            .map_err(|err| error_response(&err))?;
        Ok(AuthUser { claims })
    }
}
