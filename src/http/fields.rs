//! Request-body field parsers and the wording of body errors.
//!
//! poem-openapi's own parsing accepts a number where a string is declared
//! and names no field; these parsers accept only the JSON type the field
//! declares and say which field is wrong, as `email: expected a string`.
//! [`body_error`] turns whatever poem-openapi reports about a body into the
//! same kind of sentence.

use poem_openapi::types::ParseError;
#[cfg(test)]
use poem_openapi::types::Type;
use serde_json::Value;

/// A required JSON string.
fn string(value: Option<Value>, field: &str) -> Result<String, ParseError<String>> {
    match value {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(ParseError::custom(format!("{field}: required"))),
        Some(_) => Err(ParseError::custom(format!("{field}: expected a string"))),
    }
}

/// Declares one `deserialize_with` function per named string field.
macro_rules! string_fields {
    ($($function:ident => $field:literal),+ $(,)?) => {
        $(
            #[doc = concat!("The required string field `", $field, "`.")]
            pub(super) fn $function(value: Option<Value>) -> Result<String, ParseError<String>> {
                string(value, $field)
            }
        )+
    };
}

string_fields! {
    username => "username",
    email => "email",
    password => "password",
    current_password => "currentPassword",
    new_password => "newPassword",
}

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

/// The name poem-openapi gives a type in its messages (for tests).
#[cfg(test)]
fn type_name<T: Type>() -> String {
    T::name().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_name_the_field_in_our_own_words() {
        let wrapped = format!(
            r#"failed to parse "{}": email: expected a string (occurred while parsing "LoginRequest")"#,
            type_name::<String>()
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
        assert_eq!(email(Some(Value::from("a@b.c"))).ok(), Some("a@b.c".into()));
        for bad in [
            None,
            Some(Value::Null),
            Some(Value::from(42)),
            Some(Value::from(vec!["x"])),
        ] {
            assert!(email(bad).is_err());
        }
        assert_eq!(
            roles(Some(serde_json::json!(["admin"]))).ok(),
            Some(Some(vec!["admin".to_owned()]))
        );
        assert!(roles(Some(serde_json::json!([false, true]))).is_err());
        assert!(disabled(Some(Value::from("yes"))).is_err());
    }
}
