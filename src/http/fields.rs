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
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
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

/// The optional boolean field `disabled`.
pub(super) fn disabled(value: Option<Value>) -> Result<Option<bool>, ParseError<Option<bool>>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(flag)),
        Some(_) => Err(ParseError::custom("disabled: expected true or false")),
    }
}

/// The optional field `roles`: a list of strings.
pub(super) fn roles(
    value: Option<Value>,
) -> Result<Option<Vec<String>>, ParseError<Option<Vec<String>>>> {
    let expected = || ParseError::custom("roles: expected a list of role names");
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(role) => Ok(role),
                _ => Err(expected()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(expected()),
    }
}

/// A body error as a sentence naming the field, from poem-openapi's report
/// (`failed to parse "string": email: required (occurred while parsing
/// "LoginRequest")`) or serde_json's.
pub(super) fn body_error(reason: &str) -> String {
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
    if text.starts_with("Expected input type") || text.starts_with("Type \"") {
        return "body: expected a JSON object".to_owned();
    }
    if text.contains(": ") {
        return text.to_owned();
    }
    format!("body: not valid JSON ({text})")
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
        assert_eq!(
            roles(Some(serde_json::json!(["admin"]))).ok(),
            Some(Some(vec!["admin".to_owned()]))
        );
        assert!(roles(Some(serde_json::json!([false, true]))).is_err());
        assert!(disabled(Some(Value::from("yes"))).is_err());
    }
}
