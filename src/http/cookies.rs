//! latchkey's cookies: the refresh token (set, cleared, read exactly once)
//! and the device token that keeps a known device out of the account's
//! shared login throttle.

use std::time::Duration;

use poem::Request;
use poem::http::header;
use poem::web::cookie::{Cookie, SameSite};

use super::origin;
use crate::error::Error;
use crate::tokens::device::DEVICE_TOKEN_TTL;

/// The cookie that carries the refresh token.
pub const REFRESH_TOKEN_COOKIE: &str = "refresh_token";
/// The refresh cookie's path: covers refresh and logout, nothing else.
const REFRESH_COOKIE_PATH: &str = "/api/auth";
/// The cookie that carries the device token.
pub const DEVICE_COOKIE: &str = "latchkey_device";
/// The device cookie's path: only login reads it.
const DEVICE_COOKIE_PATH: &str = "/api/auth/login";

/// Where latchkey's cookies go: under the path latchkey is mounted at, and
/// `Secure` or not.
pub(super) struct Scope<'r> {
    /// The path latchkey's routes are mounted under in the app serving
    /// them (`""` at the root, `/auth` when nested there).
    mount: &'r str,
    secure: bool,
}

impl<'r> Scope<'r> {
    /// The scope of a request answered by the operation declared at `own`
    /// (`/api/auth/login`): under [`origin::mount`], `Secure` if `secure`.
    pub(super) fn of(req: &'r Request, own: &str, secure: bool) -> Scope<'r> {
        Scope {
            mount: origin::mount(req, own),
            secure,
        }
    }

    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.mount)
    }
}

/// The device cookie for `token`.
pub(super) fn device_cookie(token: &str, scope: &Scope<'_>) -> Cookie {
    let mut cookie = Cookie::new_with_str(DEVICE_COOKIE, token);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_path(scope.path(DEVICE_COOKIE_PATH));
    cookie.set_max_age(Duration::from_secs(DEVICE_TOKEN_TTL));
    cookie.set_secure(scope.secure);
    cookie
}

/// The one value of cookie `name` the request carries, if any.
///
/// # Errors
/// [`Error::InvalidInput`] when it carries two: a browser sends two cookies
/// of one name when two were set for different paths or domains, which is
/// how an attacker who controls a sibling domain plants one of their own
/// ("cookie tossing"); latchkey refuses to guess.
pub(super) fn single(req: &Request, name: &str) -> Result<Option<String>, Error> {
    let mut found = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().to_owned());
    let first = found.next();
    if found.next().is_some() {
        return Err(Error::InvalidInput(format!(
            "{name}: sent more than once; clear the duplicate cookie"
        )));
    }
    Ok(first)
}

/// A `Set-Cookie` value that stores `token` for `max_age` seconds.
pub(super) fn refresh_cookie(token: &str, max_age: u64, scope: &Scope<'_>) -> String {
    let mut cookie = Cookie::new_with_str(REFRESH_TOKEN_COOKIE, token);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_path(scope.path(REFRESH_COOKIE_PATH));
    cookie.set_max_age(Duration::from_secs(max_age));
    cookie.set_secure(scope.secure);
    cookie.to_string()
}

/// A `Set-Cookie` value that deletes the refresh cookie.
pub(super) fn clear_refresh_cookie(scope: &Scope<'_>) -> String {
    refresh_cookie("", 0, scope)
}
