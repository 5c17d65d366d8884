//! Request-body field parsers and the wording of body errors.
//!
//! poem-openapi's own parsing accepts a number where a string is declared
//! and names no field; these field types accept only the JSON type the field
//! declares and say which field is wrong, as `email: expected a string`,
//! while their schemas declare the lengths and formats in the spec.
//! [`body_error`] turns whatever poem-openapi reports about a body into the
//! same kind of sentence.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use serde_json::Value;

/// A required JSON string.
fn string<T: Type>(value: Option<Value>, field: &str) -> Result<String, ParseError<T>> {
    match value {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(ParseError::custom(format!("{field}: required"))),
        Some(_) => Err(ParseError::custom(format!("{field}: expected a string"))),
    }
}

/// Declares a request string field as a type: its schema (lengths, format,
/// pattern) is declared in the spec, and parsing accepts only a JSON string,
/// naming the field otherwise. The rules themselves are enforced once, by the
/// core (`Email::parse`, `Password::parse`…), which says what is wrong.
macro_rules! string_field {
    ($(#[$doc:meta])* $name:ident, $field:literal, $type_name:literal, |$schema:ident| $declare:expr) => {
        $(#[$doc])*
        pub(super) struct $name(pub String);

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = String;
            type RawElementValueType = String;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed($type_name)
            }

            fn schema_ref() -> MetaSchemaRef {
                let mut $schema = MetaSchema::new("string");
                $declare;
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&String> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
                Box::new(std::iter::once(&self.0))
            }
        }

        impl ParseFromJSON for $name {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                string(value, $field).map($name)
            }
        }

        impl ToJSON for $name {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.0.clone()))
            }
        }
    };
}

string_field!(
    /// A username: 3 to 32 of `[A-Za-z0-9_.-]`.
    Username, "username", "string(username)",
    |schema| {
        schema.min_length = Some(3);
        schema.max_length = Some(32);
        schema.pattern = Some("^[A-Za-z0-9_.-]{3,32}$".into());
    }
);
string_field!(
    /// An email address, at most 254 characters.
    EmailAddress, "email", "string(email)",
    |schema| {
        schema.format = Some("email");
        schema.min_length = Some(3);
        schema.max_length = Some(254);
    }
);
string_field!(
    /// A password as presented: 1 to 128 characters.
    Password, "password", "string(password)",
    |schema| {
        schema.format = Some("password");
        schema.min_length = Some(1);
        schema.max_length = Some(128);
    }
);
string_field!(
    /// A password being set: 8 to 128 characters.
    NewPassword, "password", "string(new password)",
    |schema| {
        schema.format = Some("password");
        schema.min_length = Some(8);
        schema.max_length = Some(128);
    }
);
string_field!(
    /// A new email address, at most 254 characters.
    NewEmailAddress, "newEmail", "string(new email)",
    |schema| {
        schema.format = Some("email");
        schema.min_length = Some(3);
        schema.max_length = Some(254);
    }
);
string_field!(
    /// A token from a mailed link: 43 base64url characters.
    MailedToken, "token", "string(mailed token)",
    |schema| {
        schema.min_length = Some(1);
        schema.max_length = Some(128);
    }
);
string_field!(
    /// The current password, when changing it.
    CurrentPassword, "currentPassword", "string(current password)",
    |schema| {
        schema.format = Some("password");
        schema.min_length = Some(1);
        schema.max_length = Some(128);
    }
);
string_field!(
    /// The new password, when changing it: 8 to 128 characters.
    ChangedPassword, "newPassword", "string(changed password)",
    |schema| {
        schema.format = Some("password");
        schema.min_length = Some(8);
        schema.max_length = Some(128);
    }
);

string_field!(
    /// A one-time code: 6 digits, or a recovery code (`xxxxx-xxxxx`).
    Code, "code", "string(code)",
    |schema| {
        schema.min_length = Some(1);
        schema.max_length = Some(32);
    }
);
string_field!(
    /// The token of a login's second step.
    MfaToken, "mfaToken", "string(mfa token)",
    |schema| {
        schema.min_length = Some(1);
        schema.max_length = Some(128);
    }
);
string_field!(
    /// The id of a passkey ceremony's first step.
    ChallengeId, "challengeId", "string(challenge id)",
    |schema| {
        schema.min_length = Some(1);
        schema.max_length = Some(128);
    }
);
string_field!(
    /// A passkey's name: at most 64 characters.
    PasskeyName, "name", "string(passkey name)",
    |schema| {
        schema.max_length = Some(64);
    }
);

/// An optional string field: absent, or a string (not `null`, which the
/// schema does not allow).
fn optional<T: ParseFromJSON>(
    value: Option<Value>,
    field: &str,
) -> Result<Option<T>, ParseError<Option<T>>> {
    match value {
        None => Ok(None),
        Some(Value::Null) => Err(ParseError::custom(format!(
            "{field}: expected a string; leave it out instead of null"
        ))),
        present => T::parse_from_json(present)
            .map(Some)
            .map_err(ParseError::propagate),
    }
}

/// The optional `email` of a passkey sign-in.
pub(super) fn optional_email(
    value: Option<Value>,
) -> Result<Option<EmailAddress>, ParseError<Option<EmailAddress>>> {
    optional(value, "email")
}

/// The optional `name` of a new passkey.
pub(super) fn optional_passkey_name(
    value: Option<Value>,
) -> Result<Option<PasskeyName>, ParseError<Option<PasskeyName>>> {
    optional(value, "name")
}

/// A browser's WebAuthn response (`PublicKeyCredential`, as its
/// `toJSON()` gives it), passed through to the checks as it is.
pub(super) struct Credential(pub Value);

impl Type for Credential {
    const IS_REQUIRED: bool = true;
    type RawValueType = Value;
    type RawElementValueType = Value;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("object(webauthn credential)")
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("object");
        schema.description = Some(
            "The PublicKeyCredential, as its toJSON() gives it: id, rawId, type, response (binary fields base64url).",
        );
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Value> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromJSON for Credential {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(object @ Value::Object(_)) => Ok(Credential(object)),
            None | Some(Value::Null) => Err(ParseError::custom("credential: required")),
            Some(_) => Err(ParseError::custom("credential: expected an object")),
        }
    }
}

impl ToJSON for Credential {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

/// The optional boolean field `disabled`: absent, or `true` or `false`
/// (not `null`, which the schema does not allow).
pub(super) fn disabled(value: Option<Value>) -> Result<Option<bool>, ParseError<Option<bool>>> {
    match value {
        None => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(flag)),
        Some(_) => Err(ParseError::custom("disabled: expected true or false")),
    }
}

/// An account's roles: 1 to 16 names of `[a-z0-9_.-]`, declared as such in
/// the spec; which names exist is the core's to say (`--extra-roles`).
pub(super) struct Roles(pub Vec<String>);

impl Type for Roles {
    const IS_REQUIRED: bool = true;
    type RawValueType = Vec<String>;
    type RawElementValueType = Vec<String>;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("[string(role)]")
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut item = MetaSchema::new("string");
        item.pattern = Some("^[a-z0-9_.-]{1,32}$".into());
        let mut schema = MetaSchema::new("array");
        schema.items = Some(Box::new(MetaSchemaRef::Inline(Box::new(item))));
        schema.min_items = Some(1);
        schema.max_items = Some(16);
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Vec<String>> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Vec<String>> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ToJSON for Roles {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0.clone()))
    }
}

/// The optional field `roles`: absent, or a list of strings (not `null`).
pub(super) fn roles(value: Option<Value>) -> Result<Option<Roles>, ParseError<Option<Roles>>> {
    let expected = || ParseError::custom("roles: expected a list of role names");
    match value {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(role) => Ok(role),
                _ => Err(expected()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|roles| Some(Roles(roles))),
        Some(_) => Err(expected()),
    }
}

/// Declares a query parameter as a whole number whose range the spec
/// declares and the core enforces (once, with its own message).
macro_rules! count_param {
    ($(#[$doc:meta])* $name:ident, $param:literal, $min:literal, $max:literal) => {
        $(#[$doc])*
        pub(super) struct $name(pub u32);

        impl Type for $name {
            const IS_REQUIRED: bool = true;
            type RawValueType = u32;
            type RawElementValueType = u32;

            fn name() -> Cow<'static, str> {
                Cow::Borrowed(concat!("integer(", $param, ")"))
            }

            fn schema_ref() -> MetaSchemaRef {
                let mut schema = MetaSchema::new_with_format("integer", "uint32");
                schema.minimum = Some($min as f64);
                schema.maximum = Some($max as f64);
                MetaSchemaRef::Inline(Box::new(schema))
            }

            fn as_raw_value(&self) -> Option<&u32> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a u32> + 'a> {
                Box::new(std::iter::once(&self.0))
            }
        }

        impl ParseFromParameter for $name {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                value.trim().parse().map($name).map_err(|_| {
                    ParseError::custom(concat!($param, ": expected a whole number from ", $min, " to ", $max))
                })
            }
        }
    };
}

count_param!(
    /// A page size: 1 to 100.
    PageLimit, "limit", 1, 100
);
count_param!(
    /// How many audit events: 1 to 1000.
    EventLimit, "limit", 1, 1000
);

/// A page cursor: base64url without padding (the shape declared; any text
/// of that shape is a position in the list).
pub(super) struct Cursor(pub String);

impl Type for Cursor {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("string(cursor)")
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("string");
        schema.pattern = Some("^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$".into());
        schema.max_length = Some(CURSOR_MAX);
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

/// The longest cursor the spec declares.
const CURSOR_MAX: usize = 400;

impl ParseFromParameter for Cursor {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let base64url = value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if value.len() > CURSOR_MAX || !base64url || value.len() % 4 == 1 {
            return Err(ParseError::custom(format!(
                "not a page cursor (base64url, at most {CURSOR_MAX} characters)"
            )));
        }
        Ok(Cursor(value.to_owned()))
    }
}

/// When audit events start: a duration back from now (`24h`) or an RFC
/// 3339 time (`2026-11-27T08:00:00Z`), as the spec's pattern declares.
pub(super) struct Since(pub String);

/// The forms `since` takes.
const SINCE_PATTERN: &str =
    "^([0-9]{1,9}(s|m|h|d|w)|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)$";

impl Type for Since {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        Cow::Borrowed("string(since)")
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new("string");
        schema.pattern = Some(SINCE_PATTERN.into());
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for Since {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Since(value.to_owned()))
    }
}

/// A body error as a sentence naming the field, from poem-openapi's report
/// (`failed to parse "string": email: required (occurred while parsing
/// "LoginRequest")`) or serde_json's.
pub(super) fn body_error(reason: &str) -> String {
    let text = unwrapped(reason);
    if text.starts_with("Expected input type") || text.starts_with("Type \"") {
        return "body: expected a JSON object".to_owned();
    }
    if text.contains(": ") {
        return text.to_owned();
    }
    format!("body: not valid JSON ({text})")
}

/// A query parameter error as a sentence naming the parameter, from
/// poem-openapi's report (`failed to parse "optional_integer(limit)": limit:
/// expected … (occurred while parsing …)`).
pub(super) fn param_error(name: &str, reason: &str) -> String {
    let text = unwrapped(reason);
    match text
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(": "))
    {
        Some(_) => text.to_owned(),
        None => format!("{name}: {text}"),
    }
}

/// poem-openapi's report without its `failed to parse "…": ` and
/// ` (occurred while parsing "…")` wrapping.
fn unwrapped(reason: &str) -> &str {
    let mut text = reason;
    if let Some((_, ours)) = text
        .strip_prefix("failed to parse \"")
        .and_then(|rest| rest.split_once("\": "))
    {
        text = ours;
    }
    if let Some(end) = text.find(" (occurred while parsing \"") {
        text = &text[..end];
    }
    text
}

/// The first key a JSON document repeats within one object
/// (`{"a":1,"a":2}`), if any. `None` too for text that is not JSON: the
/// handler's own parser says what is wrong with it.
pub(super) fn repeated_key(body: &[u8]) -> Option<String> {
    let found = std::cell::RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(body);
    let _ = serde::de::DeserializeSeed::deserialize(UniqueKeys(&found), &mut reader);
    found.into_inner()
}

/// Walks any JSON value, noting the first key repeated within an object.
#[derive(Clone, Copy)]
struct UniqueKeys<'a>(&'a std::cell::RefCell<Option<String>>);

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                *self.0.borrow_mut() = Some(key);
                return Err(serde::de::Error::custom("repeated key"));
            }
            entries.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_name_the_field_in_our_own_words() {
        let wrapped = format!(
            r#"failed to parse "{}": email: expected a string (occurred while parsing "LoginRequest")"#,
            EmailAddress::name()
        );
        assert_eq!(body_error(&wrapped), "email: expected a string");
        assert_eq!(
            body_error(r#"Expected input type "LoginRequest", found null."#),
            "body: expected a JSON object"
        );
        assert_eq!(
            body_error("EOF while parsing a value at line 1 column 0"),
            "body: not valid JSON (EOF while parsing a value at line 1 column 0)"
        );
    }

    #[test]
    fn parameter_errors_name_the_parameter_in_our_own_words() {
        let wrapped = r#"failed to parse "optional_integer(limit)": limit: expected a whole number from 1 to 100 (occurred while parsing "optional_integer(limit)")"#;
        assert_eq!(
            param_error("limit", wrapped),
            "limit: expected a whole number from 1 to 100"
        );
        assert_eq!(param_error("user", "bad"), "user: bad");
    }

    #[test]
    fn a_key_repeated_within_one_object_is_found() {
        assert_eq!(
            repeated_key(br#"{"email":"a@x.io","email":"b@x.io"}"#).as_deref(),
            Some("email")
        );
        assert_eq!(
            repeated_key(br#"{"a":{"b":1,"b":2}}"#).as_deref(),
            Some("b")
        );
        assert_eq!(
            repeated_key(br#"[{"a":1},{"a":2}]"#),
            None,
            "one key in each of two objects"
        );
        assert_eq!(repeated_key(br#"{"a":1,"b":{"a":2}}"#), None);
        assert_eq!(
            repeated_key(br#"{"a":1,"\u0061":2}"#).as_deref(),
            Some("a"),
            "an escaped spelling is the same key"
        );
        assert_eq!(repeated_key(b"not json"), None);
    }

    #[test]
    fn string_fields_accept_only_strings() {
        let parsed = EmailAddress::parse_from_json(Some(Value::from("a@b.c"))).ok();
        assert_eq!(parsed.map(|email| email.0), Some("a@b.c".into()));
        for bad in [
            None,
            Some(Value::Null),
            Some(Value::from(42)),
            Some(Value::from(vec!["x"])),
        ] {
            assert!(EmailAddress::parse_from_json(bad).is_err());
        }
        let parsed = roles(Some(serde_json::json!(["admin"]))).ok().flatten();
        assert_eq!(parsed.map(|roles| roles.0), Some(vec!["admin".to_owned()]));
        assert!(roles(Some(serde_json::json!([false, true]))).is_err());
        assert!(roles(Some(Value::Null)).is_err(), "null is not a list");
        assert!(disabled(Some(Value::from("yes"))).is_err());
        assert!(
            disabled(Some(Value::Null)).is_err(),
            "null is not a boolean"
        );
        assert!(matches!(disabled(None), Ok(None)));
    }
}
