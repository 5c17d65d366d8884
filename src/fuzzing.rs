//! Entry points for fuzzing (the cargo-fuzz targets in `fuzz/`, feature
//! `fuzzing`) and for the property tests below: each feeds arbitrary bytes
//! to one surface a stranger reaches and panics only where latchkey would.
//! Not part of the library API.

use std::time::Duration;

use crate::config::Config;
use crate::model::{ClientInfo, Email, Password, Secret, Username, parse_roles};
use crate::tokens::device::DeviceTokens;
use crate::tokens::{AccessSigner, Tokens};

/// A fixed time inside every token's validity window.
const NOW: u64 = 1_800_000_000;

/// Token verifiers with fixed HS256 keys (the parsing and checks before the
/// signature are the same for every algorithm).
fn tokens() -> Tokens {
    let config = Config {
        access_ttl: Duration::from_secs(900),
        ..Config::default()
    };
    Tokens::new(
        &AccessSigner::Secret(Secret::new("a".repeat(32))),
        &Secret::new("r".repeat(32)),
        &config,
    )
    .expect("invariant: fixed keys are valid")
}

/// Arbitrary bytes as an access, refresh and device token.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let tokens = tokens();
    let _ = tokens.verify_access(&text, NOW);
    let _ = tokens.verify_refresh(&text, NOW);
    let _ = DeviceTokens::new(&Secret::new("r".repeat(32))).verify(&text, "a@example.com", NOW);
}

/// Arbitrary text as every identifier latchkey parses.
pub fn identifiers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Email::parse(&text);
    let _ = Username::parse(&text);
    let _ = Password::presented(&text);
    if let Ok(password) = Password::parse(&text) {
        let _ = crate::password::check_policy(&password, "alice", "alice@example.com");
    }
    let parts: Vec<&str> = text.split(',').collect();
    let _ = parse_roles(&parts, &["extra".to_owned()]);
    let _ = ClientInfo::new(None, Some(&text));
    let _ = text.parse::<crate::config::Rate>();
}

/// Arbitrary bytes as request headers and JSON bodies.
pub fn request(data: &[u8]) {
    crate::http::fuzz_request(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Email, User};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn no_token_crashes_the_verifiers(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            token(&data);
        }

        #[test]
        fn no_jwt_shaped_text_crashes_the_verifiers(
            header in "[A-Za-z0-9_-]{0,80}",
            payload in "[A-Za-z0-9_-]{0,200}",
            signature in "[A-Za-z0-9_-]{0,90}",
        ) {
            token(format!("{header}.{payload}.{signature}").as_bytes());
        }

        #[test]
        fn no_identifier_crashes_the_parsers(text in any::<String>()) {
            identifiers(text.as_bytes());
        }

        #[test]
        fn no_header_or_body_crashes_the_request_parsers(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            request(&data);
        }

        #[test]
        fn no_json_shaped_body_crashes_the_request_parsers(
            email in any::<String>(),
            password in any::<String>(),
            number in any::<i64>(),
            flag in any::<bool>(),
        ) {
            for body in [
                serde_json::json!({"email": email, "password": password}),
                serde_json::json!({"email": number, "password": flag}),
                serde_json::json!({"username": email, "email": password, "password": number}),
                serde_json::json!({"currentPassword": password, "newPassword": email}),
                serde_json::json!({"roles": [email, number, flag], "disabled": password}),
                serde_json::json!([email, password]),
            ] {
                request(body.to_string().as_bytes());
            }
        }

        #[test]
        fn a_changed_token_never_verifies(position in 0usize..400, byte in any::<u8>()) {
            let tokens = tokens();
            let user = User::new(
                "u1".into(),
                &Username::parse("alice").expect("valid"),
                &Email::parse("alice@example.com").expect("valid"),
                String::new(),
                vec!["user".into()],
                NOW,
            );
            let issued = tokens.issue_access(&user, "s1", &[], NOW).expect("issued");
            let original = issued.token.expose().as_bytes().to_vec();
            let mut changed = original.clone();
            let at = position % changed.len();
            // Only changes that alter the decoded header or claims: the last
            // base64 character of the signature carries padding bits.
            let signature_start = original.iter().rposition(|b| *b == b'.').expect("dot");
            prop_assume!(at < signature_start);
            changed[at] = byte;
            prop_assume!(changed != original);
            let text = String::from_utf8_lossy(&changed);
            prop_assert!(tokens.verify_access(&text, NOW).is_err());
        }
    }
}
