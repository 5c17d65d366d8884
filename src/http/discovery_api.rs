//! The Discovery tag, `/.well-known/jwks.json` and
//! `/.well-known/openid-configuration`: what
//! another service needs to verify latchkey's access tokens with any
//! standard JWT library, without sharing a secret.

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::service::Latchkey;
use crate::tokens::PublicJwk;

/// The discovery operations.
#[derive(Default)]
pub(super) struct DiscoveryApi;

/// A public key (RFC 7517).
#[derive(Object)]
#[oai(example)]
struct JwkView {
    /// `OKP` (Ed25519) or `EC` (P-256).
    kty: String,
    /// `Ed25519` or `P-256`.
    crv: String,
    /// The public key, base64url.
    x: String,
    /// The y coordinate (`EC` keys), base64url.
    #[oai(skip_serializing_if_is_none)]
    y: Option<String>,
    /// The key id that tokens name in their `kid` header.
    kid: String,
    /// `EdDSA` or `ES256`.
    alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    key_use: String,
}

impl From<PublicJwk> for JwkView {
    fn from(key: PublicJwk) -> Self {
        JwkView {
            kty: key.kty,
            crv: key.crv,
            x: key.x,
            y: key.y,
            kid: key.kid,
            alg: key.alg,
            key_use: "sig".into(),
        }
    }
}

impl Example for JwkView {
    fn example() -> Self {
        JwkView {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            y: None,
            kid: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into(),
            alg: "EdDSA".into(),
            key_use: "sig".into(),
        }
    }
}

/// A JWK set.
#[derive(Object)]
struct JwksBody {
    /// The keys that verify access tokens now: the active one first, then
    /// retired ones whose tokens may still be alive. Empty with HS256.
    keys: Vec<JwkView>,
}

/// A minimal OpenID Provider discovery document.
#[derive(Object)]
struct DiscoveryBody {
    /// The `iss` of every token (`--issuer`).
    issuer: String,
    /// Where the JWKS is.
    jwks_uri: String,
}

#[derive(ApiResponse)]
enum JwksResponse {
    /// The public keys.
    #[oai(status = 200)]
    Ok(
        Json<JwksBody>,
        /// `public, max-age=300`: keys change only at rotation.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

#[derive(ApiResponse)]
enum DiscoveryResponse {
    /// The discovery document.
    #[oai(status = 200)]
    Ok(
        Json<DiscoveryBody>,
        /// `public, max-age=300` when built from `--issuer`; `no-store` when
        /// built from the request's host, so that no shared cache hands one
        /// host's document to another.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

const JWKS_PATH: &str = "/.well-known/jwks.json";
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

#[OpenApi(prefix_path = "/.well-known", tag = "ApiTags::Discovery")]
impl DiscoveryApi {
    /// Public signing keys (JWKS)
    ///
    /// The keys that verify latchkey's access tokens: pick the one whose
    /// `kid` the token's header names, and accept only its `alg`.
    #[oai(path = "/jwks.json", method = "get")]
    async fn jwks(&self, core: Data<&Latchkey>) -> JwksResponse {
        let keys = core.public_keys().into_iter().map(JwkView::from).collect();
        JwksResponse::Ok(Json(JwksBody { keys }), "public, max-age=300".into())
    }

    /// Discovery document
    ///
    /// `issuer` and `jwks_uri`, for libraries that configure themselves
    /// from `/.well-known/openid-configuration`. When `--issuer` is this
    /// server's public URL, `jwks_uri` is built from it; otherwise from the
    /// request's host.
    #[oai(path = "/openid-configuration", method = "get")]
    async fn openid_configuration(
        &self,
        core: Data<&Latchkey>,
        request: &Request,
    ) -> DiscoveryResponse {
        let config = core.config();
        let issuer = config.issuer.clone();
        let (base, cache) = if issuer.starts_with("https://") || issuer.starts_with("http://") {
            (
                issuer.trim_end_matches('/').to_owned(),
                "public, max-age=300",
            )
        } else {
            // The guard has refused an authority that is not a host and port.
            let proxies = &config.trusted_proxies;
            let scheme = super::origin::scheme(request, proxies).unwrap_or_else(|| {
                match config.serves_tls() {
                    true => "https".into(),
                    false => "http".into(),
                }
            });
            let host = super::origin::authority(request, proxies)
                .unwrap_or_else(|| "localhost".to_owned());
            let mount = super::origin::mount(request, DISCOVERY_PATH);
            (format!("{scheme}://{host}{mount}"), "no-store")
        };
        let body = DiscoveryBody {
            issuer,
            jwks_uri: format!("{base}{JWKS_PATH}"),
        };
        DiscoveryResponse::Ok(Json(body), cache.into())
    }
}
