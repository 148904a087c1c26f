//! How payload bytes become a handler's argument and its result becomes output bytes.
//!
//! Any `serde` type travels as JSON; [`Raw`] passes bytes through untouched.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::JobError;

/// A type a handler can take as its payload.
///
/// Implemented for every [`DeserializeOwned`] type (decoded from JSON) and for [`Raw`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a job payload",
    label = "payload types must implement `serde::Deserialize`",
    note = "derive `serde::Deserialize` for it, or take `spool_sdk::Raw` to get the bytes as enqueued"
)]
pub trait Payload: Sized {
    /// Decode the payload bytes; an error fails the attempt without calling the handler.
    fn from_payload(bytes: &[u8]) -> Result<Self, JobError>;
}

/// A type a handler can return as its output.
///
/// Implemented for every [`Serialize`] type (encoded as JSON) and for [`Raw`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a job output",
    label = "output types must implement `serde::Serialize`",
    note = "derive `serde::Serialize` for it, or return `spool_sdk::Raw` to send bytes as they are"
)]
pub trait Output {
    /// Encode the output; an error fails the attempt for good, since it would fail again.
    fn into_output(self) -> Result<Vec<u8>, JobError>;
}

/// Payload or output bytes that skip JSON.
///
/// As a payload it holds a copy of [`Job::payload`](crate::Job::payload); as output its bytes are
/// the job's output. `Raw::default()` is an empty output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Raw(pub Vec<u8>);

impl From<Vec<u8>> for Raw {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<String> for Raw {
    fn from(text: String) -> Self {
        Self(text.into_bytes())
    }
}

impl Payload for Raw {
    fn from_payload(bytes: &[u8]) -> Result<Self, JobError> {
        Ok(Self(bytes.to_vec()))
    }
}

impl Output for Raw {
    fn into_output(self) -> Result<Vec<u8>, JobError> {
        Ok(self.0)
    }
}

impl<T: DeserializeOwned> Payload for T {
    fn from_payload(bytes: &[u8]) -> Result<Self, JobError> {
        decode_json(bytes, "bad payload").map_err(|e| match e {
            JobError::Fail { message } => JobError::InvalidPayload { message },
            other => other,
        })
    }
}

impl<T: Serialize> Output for T {
    fn into_output(self) -> Result<Vec<u8>, JobError> {
        serde_json::to_vec(&self).map_err(|e| JobError::fail(format_args!("bad output: {e}")))
    }
}

/// Decode JSON as `T`; an error is a [`JobError::fail`] reading `{what}: {path}: {problem}`.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, JobError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| e.to_string())
        .and_then(|value| de.end().map(|()| value).map_err(|e| e.to_string()));
    decoded.map_err(|streaming| {
        let problem = data_error_without_position::<T>(bytes).unwrap_or(streaming);
        JobError::fail(format_args!("{what}: {problem}"))
    })
}

/// If `bytes` are well-formed JSON, the error decoding them as `T` again from a
/// `serde_json::Value`. Such errors carry no line and column, which say nothing useful about a
/// one-line payload once the path is known, and they describe type mismatches that the
/// streaming parser reports as syntax errors (an integer where an enum belongs is "expected
/// value"). Only runs on the failure path, so good payloads are parsed once.
fn data_error_without_position<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    serde_path_to_error::deserialize::<_, T>(value)
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Ok,
        Hang,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct Email {
        to: String,
        mode: Mode,
        delay_ms: Option<u64>,
    }

    fn error_of<T: DeserializeOwned + std::fmt::Debug>(payload: &str) -> JobError {
        match T::from_payload(payload.as_bytes()) {
            Ok(value) => panic!("{payload} decoded as {value:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn decodes_a_good_payload() {
        let email = Email::from_payload(br#"{"to": "a@b.c", "mode": "hang"}"#);
        assert_eq!(
            email,
            Ok(Email {
                to: "a@b.c".into(),
                mode: Mode::Hang,
                delay_ms: None
            })
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        assert_eq!(
            error_of::<Email>(r#"{"to": "a@b.c", "mode": "ok", "delay_ms": "x"}"#),
            JobError::invalid_payload(
                r#"bad payload: delay_ms: invalid type: string "x", expected u64"#
            )
        );
    }

    #[test]
    fn missing_field_is_named() {
        assert_eq!(
            error_of::<Email>(r#"{"mode": "ok"}"#),
            JobError::invalid_payload("bad payload: missing field `to`")
        );
    }

    #[test]
    fn unknown_enum_variant_names_the_field_and_the_choices() {
        assert_eq!(
            error_of::<Email>(r#"{"to": "a", "mode": "sideways"}"#),
            JobError::invalid_payload(
                "bad payload: mode: unknown variant `sideways`, expected `ok` or `hang`"
            )
        );
    }

    #[test]
    fn nested_paths_include_map_keys_and_indices() {
        assert_eq!(
            error_of::<BTreeMap<String, Vec<Email>>>(r#"{"batch": [{"to": "a", "mode": 7}]}"#),
            JobError::invalid_payload(
                "bad payload: batch[0].mode: invalid type: integer `7`, expected string or map"
            )
        );
    }

    #[test]
    fn malformed_json_keeps_its_position() {
        assert_eq!(
            error_of::<Email>(r#"{"to": "#),
            JobError::invalid_payload(
                "bad payload: to: EOF while parsing a value at line 1 column 7"
            )
        );
        assert_eq!(
            error_of::<Email>(r#"{"to": "a", "mode": "ok"} trailing"#),
            JobError::invalid_payload("bad payload: trailing characters at line 1 column 27")
        );
    }

    #[test]
    fn raw_passes_bytes_through_both_ways() {
        assert_eq!(
            Raw::from_payload(b"\xff not json"),
            Ok(Raw(b"\xff not json".to_vec()))
        );
        assert_eq!(
            Raw::from(String::from("hi")).into_output(),
            Ok(b"hi".to_vec())
        );
        assert_eq!(Raw::default().into_output(), Ok(Vec::new()));
    }

    #[test]
    fn serializable_output_is_json() {
        let out = BTreeMap::from([("sent_to", "a@b.c")]);
        assert_eq!(out.into_output(), Ok(br#"{"sent_to":"a@b.c"}"#.to_vec()));
    }

    #[test]
    fn output_that_cannot_be_json_fails_for_good() {
        let out = BTreeMap::from([((1, 2), "tuple keys are not JSON")]);
        assert_eq!(
            out.into_output(),
            Err(JobError::fail("bad output: key must be a string"))
        );
    }
}
