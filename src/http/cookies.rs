//! The refresh-token cookie: how it is set and cleared.

use std::time::Duration;

use poem::web::cookie::{Cookie, SameSite};

/// The cookie that carries the refresh token.
pub const REFRESH_TOKEN_COOKIE: &str = "refresh_token";
/// The refresh cookie's path: covers refresh and logout, nothing else.
const REFRESH_COOKIE_PATH: &str = "/api/auth";

/// A `Set-Cookie` value that stores `token` for `max_age` seconds.
pub(super) fn refresh_cookie(token: &str, max_age: u64, secure: bool) -> String {
    let mut cookie = Cookie::new_with_str(REFRESH_TOKEN_COOKIE, token);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_path(REFRESH_COOKIE_PATH);
    cookie.set_max_age(Duration::from_secs(max_age));
    cookie.set_secure(secure);
    cookie.to_string()
}

/// A `Set-Cookie` value that deletes the refresh cookie.
pub(super) fn clear_refresh_cookie(secure: bool) -> String {
    refresh_cookie("", 0, secure)
}
