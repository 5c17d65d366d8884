//! Where a request says it comes from and where it was sent: the same-origin
//! decision behind the CSRF check and CORS, for HTTP/1.1 (`Host`) and
//! HTTP/2 (`:authority`, which has no `Host` header) alike.

use ipnet::IpNet;
use poem::Request;
use poem::http::{HeaderName, HeaderValue, header};

use super::GuardSettings;
use super::auth::peer_is_trusted;

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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

/// The path latchkey's routes are mounted under in the app serving them
/// (`""` at the root, `/auth` when nested there), from a request answered
/// by the route declared at `own` (`/api/auth/login`): whatever the app put
/// before it (a trailing slash aside). A mount with characters that have
/// no place in a cookie's path or a URL is ignored (the root then).
pub(super) fn mount<'r>(req: &'r Request, own: &str) -> &'r str {
    req.original_uri()
        .path()
        .trim_end_matches('/')
        .strip_suffix(own)
        .filter(|mount| {
            mount
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte))
        })
        .unwrap_or_default()
}

/// The scheme the client used: `X-Forwarded-Proto` from a trusted proxy,
/// else whether latchkey itself served TLS. `None` for a request through a
/// trusted proxy that does not say (it may have terminated TLS).
pub(super) fn scheme(req: &Request, trusted_proxies: &[IpNet]) -> Option<String> {
    if peer_is_trusted(req, trusted_proxies) {
        return req
            .headers()
            .get(X_FORWARDED_PROTO)
            .and_then(|value| value.to_str().ok())
            .and_then(|protos| protos.split(',').next())
            .map(|proto| proto.trim().to_ascii_lowercase())
            .filter(|proto| proto == "http" || proto == "https");
    }
    Some(req.scheme().as_str().to_ascii_lowercase())
}

/// What is wrong with where the request says it was sent, if anything: an
/// authority (`Host`, `:authority`, a trusted proxy's `X-Forwarded-Host`)
/// that is not a host and port, or more than one `Host`; and, when
/// `strict` (latchkey's own server, not an embedding app's test client),
/// an HTTP/1.1 request without `Host` (RFC 9112 §3.2: answered 400).
pub(super) fn host_problem(
    req: &Request,
    trusted_proxies: &[IpNet],
    strict: bool,
) -> Option<&'static str> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (strict && hosts == 0 && req.version() == poem::http::Version::HTTP_11) {
        return Some("an HTTP/1.1 request carries exactly one Host header");
    }
    match authority(req, trusted_proxies) {
        Some(authority) if !valid_authority(&authority) => {
            Some("Host: must be a host name or address, with an optional port")
        }
        _ => None,
    }
}

/// Whether `text` is a request authority latchkey accepts: a DNS name or an
/// IPv4 address (letters, digits, `.`, `-`, `_`), or a bracketed IPv6
/// address, with an optional numeric port; nothing else (no user info,
/// path, query or spaces).
pub(super) fn valid_authority(text: &str) -> bool {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => match after {
                "" => return true,
                after => ("v6", after.strip_prefix(':')),
            },
            _ => return false,
        },
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        },
    };
    let host_ok = host == "v6"
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
    });
    host_ok && port_ok
}

/// `authority` with the scheme's default port made explicit, lower-cased.
fn with_port(authority: &str, scheme: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    match (has_port, scheme) {
        (false, "https") => format!("{authority}:443"),
        (false, _) => format!("{authority}:80"),
        (true, _) => authority,
    }
}

/// Whether the request comes from this server's pages, an allowed origin,
/// another page, or says nothing (`Origin`, else the `Referer`'s origin).
/// Same origin means the same scheme, host and port (RFC 6454), default
/// ports included; the scheme is not compared for a request through a
/// trusted proxy that does not send `X-Forwarded-Proto`.
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
    let own_scheme = scheme(req, &settings.trusted_proxies);
    let same = origin.split_once("://").is_some_and(|(claimed, host)| {
        let scheme_matches = own_scheme.as_deref().is_none_or(|own| own == claimed);
        scheme_matches
            && own.is_some_and(|own| with_port(&own, claimed) == with_port(host, claimed))
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_are_host_names_or_addresses_with_a_port() {
        for good in [
            "localhost",
            "auth.example.com",
            "auth.example.com:8443",
            "127.0.0.1:5000",
            "[::1]",
            "[::1]:5000",
            "my_host",
        ] {
            assert!(valid_authority(good), "{good}");
        }
        for bad in [
            "",
            "evil.example/x?",
            "user@example.com",
            "example.com:",
            "example.com:99999x",
            "a b",
            "[::1",
            "[not-v6]:80",
            "example.com:80:80",
            "ex\u{e4}mple.com",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn default_ports_are_made_explicit() {
        assert_eq!(with_port("X", "http"), "x:80");
        assert_eq!(with_port("x:80", "http"), "x:80");
        assert_eq!(with_port("x", "https"), "x:443");
        assert_eq!(with_port("[::1]", "https"), "[::1]:443");
        assert_eq!(with_port("[::1]:8", "https"), "[::1]:8");
    }
}
