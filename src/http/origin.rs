//! Where a request says it comes from and where it was sent: the same-origin
//! decision behind the CSRF check and CORS, for HTTP/1.1 (`Host`) and
//! HTTP/2 (`:authority`, which has no `Host` header) alike.

use ipnet::IpNet;
use poem::Request;
use poem::http::{HeaderName, HeaderValue, header};

use super::GuardSettings;
use super::auth::peer_is_trusted;

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How a request relates to this server's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Relation {
    /// No `Origin` or `Referer`: not a browser acting for a page (curl,
    /// native apps, server-to-server).
    Unstated,
    /// Sent by a page of this server (Swagger UI, a same-origin app).
    SameOrigin,
    /// Sent by a page of a `--cors-origins` entry (the origin, lower-cased).
    Allowed(String),
    /// Sent by any other page.
    Foreign,
}

/// The host (and port) the request was sent to: the `X-Forwarded-Host` of a
/// trusted proxy, else the URI's authority (HTTP/2's `:authority`, or an
/// absolute-form HTTP/1.1 target), else the `Host` header.
pub(super) fn authority(req: &Request, trusted_proxies: &[IpNet]) -> Option<String> {
    let text = |name: HeaderName| {
        req.headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .map(str::to_owned)
    };
    let forwarded = text(X_FORWARDED_HOST)
        .filter(|_| peer_is_trusted(req, trusted_proxies))
        .and_then(|hosts| hosts.split(',').next().map(|host| host.trim().to_owned()));
    forwarded
        .or_else(|| {
            req.uri()
                .authority()
                .map(|authority| authority.as_str().to_owned())
        })
        .or_else(|| text(header::HOST))
        .filter(|host| !host.is_empty())
}

/// Whether the request comes from this server's pages, an allowed origin,
/// another page, or says nothing (`Origin`, else the `Referer`'s origin).
pub(super) fn relation(req: &Request, settings: &GuardSettings) -> Relation {
    let header_text = |name| {
        req.headers()
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    let origin = match header_text(header::ORIGIN) {
        Some(origin) => origin.to_ascii_lowercase(),
        None => match header_text(header::REFERER).and_then(origin_of) {
            Some(origin) => origin,
            None => return Relation::Unstated,
        },
    };
    let own = authority(req, &settings.trusted_proxies);
    let same = origin
        .split_once("://")
        .is_some_and(|(_, host)| own.is_some_and(|own| own.eq_ignore_ascii_case(host)));
    if same {
        Relation::SameOrigin
    } else if settings.cors_origins.contains(&origin) {
        Relation::Allowed(origin)
    } else {
        Relation::Foreign
    }
}

/// `scheme://authority` of a URL (a `Referer`), lower-cased.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}
