//! The pages the links in latchkey's mails open: `/account/verify-email`,
//! `/account/reset-password` and `/account/confirm-email`. Each is one
//! self-contained HTML document (no outside asset, one inline script
//! allowed by its hash) that reads the link's `token` and POSTs it to the
//! API only when the person presses the button: opening a link consumes
//! nothing, so mail scanners that fetch links cannot use up a token.

use base64::Engine as _;
use bytes::Bytes;
use poem::endpoint::make_sync;
use poem::http::{HeaderValue, header};
use poem::{Body, Endpoint, Response, Route, get};
use sha2::{Digest, Sha256};

/// One page: its title, what it asks, the form's fields and the API it
/// posts to (relative to the page, so it works wherever latchkey is mounted).
struct Page {
    path: &'static str,
    title: &'static str,
    intro: &'static str,
    password: bool,
    button: &'static str,
    api: &'static str,
    done: &'static str,
}

const PAGES: [Page; 3] = [
    Page {
        path: crate::service::VERIFY_PAGE,
        title: "Verify your email address",
        intro: "Press the button to confirm that this address is yours.",
        password: false,
        button: "Verify my address",
        api: "../api/auth/verify-email",
        done: "Your address is verified. You can close this page.",
    },
    Page {
        path: crate::service::RESET_PAGE,
        title: "Choose a new password",
        intro: "8 to 128 characters; a long phrase is best. Every device will be logged out.",
        password: true,
        button: "Set the new password",
        api: "../api/auth/password-reset/confirm",
        done: "Your password is set. Log in with it.",
    },
    Page {
        path: crate::service::CONFIRM_EMAIL_PAGE,
        title: "Confirm your new email address",
        intro: "Press the button to move your account to this address.",
        password: false,
        button: "Confirm the new address",
        api: "../api/profile/email/confirm",
        done: "Your account now uses this address.",
    },
];

/// The script of every page: it reads the token from the address, sends
/// it (with the new password, on the reset page) when the form is
/// submitted, and says how it went. The token never leaves the page
/// otherwise (no referrer is sent).
const SCRIPT: &str = r#"
const form = document.querySelector('form');
const status = document.querySelector('#status');
const token = new URLSearchParams(location.search).get('token');
if (!token) {
  status.textContent = 'This link has no token: open the link from the mail as it is.';
  form.hidden = true;
}
form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = { token };
  const password = form.querySelector('[name=password]');
  if (password) {
    if (password.value !== form.querySelector('[name=again]').value) {
      status.textContent = 'The two passwords differ.';
      return;
    }
    body.newPassword = password.value;
  }
  form.querySelector('button').disabled = true;
  try {
    const res = await fetch(form.dataset.api, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    const answer = await res.json();
    if (res.ok) {
      status.textContent = form.dataset.done;
      form.hidden = true;
    } else {
      status.textContent = answer.message;
      form.querySelector('button').disabled = false;
    }
  } catch {
    status.textContent = 'The server could not be reached; try again.';
    form.querySelector('button').disabled = false;
  }
});
"#;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}\
input,button{display:block;width:100%;margin:.5rem 0;padding:.6rem;font-size:1rem;box-sizing:border-box}\
#status{font-weight:600}";

fn html(page: &Page) -> String {
    let fields = match page.password {
        true => concat!(
            r#"<label>New password<input name="password" type="password" autocomplete="new-password" minlength="8" maxlength="128" required></label>"#,
            r#"<label>Again<input name="again" type="password" autocomplete="new-password" minlength="8" maxlength="128" required></label>"#
        ),
        false => "",
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{title}</title><style>{STYLE}</style></head>
<body><h1>{title}</h1><p>{intro}</p>
<form data-api="{api}" data-done="{done}">{fields}<button type="submit">{button}</button></form>
<p id="status" role="status"></p>
<script>{SCRIPT}</script></body></html>
"#,
        title = page.title,
        intro = page.intro,
        api = page.api,
        done = page.done,
        button = page.button,
    )
}

/// The pages' Content-Security-Policy: nothing from anywhere but the inline
/// script (by its hash) and style, and requests to latchkey itself.
fn policy() -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// The three pages, at `/account/…`.
pub(super) fn routes() -> impl Endpoint + 'static {
    let policy = HeaderValue::from_str(&policy()).ok();
    let mut route = Route::new();
    for page in &PAGES {
        let body = Bytes::from(html(page));
        let policy = policy.clone();
        route = route.at(
            page.path,
            get(make_sync(move |_| {
                let mut response = Response::builder()
                    .content_type("text/html; charset=utf-8")
                    .header(header::CACHE_CONTROL, "no-store")
                    .body(Body::from_bytes(body.clone()));
                if let Some(policy) = &policy {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_SECURITY_POLICY, policy.clone());
                }
                response
            })),
        );
    }
    route
}

/// The pages' paths, for the router's table of routes.
pub(super) const PATHS: [&str; 3] = [
    "/account/verify-email",
    "/account/reset-password",
    "/account/confirm-email",
];
