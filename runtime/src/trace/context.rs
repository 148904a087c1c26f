//! W3C trace context: the `traceparent` a producer hands a job, and the span ids Spool makes.
//!
//! A `traceparent` is `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>). A job keeps the one it was
//! enqueued with; each attempt is a span of that trace whose parent is the producer's span,
//! and the children an attempt enqueues carry the attempt's own span as their parent.
//!
//! ```
//! use spool::trace::TraceParent;
//!
//! let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
//! let attempt = tp.child();
//! assert_eq!(attempt.trace_id(), tp.trace_id());
//! assert_ne!(attempt.span_id(), tp.span_id());
//! assert!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".parse::<TraceParent>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A trace's id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A fresh random trace id.
    pub fn random() -> TraceId {
        TraceId(nonzero(|| fastrand::u128(..).to_be_bytes()))
    }
}

impl SpanId {
    /// A fresh random span id.
    pub fn random() -> SpanId {
        SpanId(nonzero(|| fastrand::u64(..).to_be_bytes()))
    }
}

fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let bytes = draw();
        if bytes.iter().any(|b| *b != 0) {
            return bytes;
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The W3C `traceparent` of a job: the trace it belongs to, the span that made it, and the
/// trace flags. Only a well-formed one can be built; it is written and stored in its header
/// form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad traceparent `{value}`: {why} (want 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, \
     lowercase, ids not all zero)"
)]
pub struct TraceParentError {
    /// The value refused (cut short if long).
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// The context of a root span: a new trace with a fresh id, sampled.
    pub fn root() -> TraceParent {
        TraceParent {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: SAMPLED,
        }
    }

    /// The context of a new span in this trace whose parent is this one's span: same trace id
    /// and flags, a fresh span id.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: SpanId::random(),
            ..*self
        }
    }

    /// The trace's id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The span's id (the parent id, to whoever receives this `traceparent`).
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(value: &str) -> Result<TraceParent, TraceParentError> {
        let refuse = |why| TraceParentError {
            value: value.chars().take(80).collect(),
            why,
        };
        let parts: Vec<&str> = value.split('-').collect();
        let [version, trace, span, flags] = parts[..] else {
            return Err(refuse("not four fields separated by `-`"));
        };
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if version != "00" {
            return Err(refuse("the version is not 00"));
        }
        if trace.len() != 32 || !lower_hex(trace) {
            return Err(refuse("the trace id is not 32 lowercase hex digits"));
        }
        if span.len() != 16 || !lower_hex(span) {
            return Err(refuse("the parent id is not 16 lowercase hex digits"));
        }
        if flags.len() != 2 || !lower_hex(flags) {
            return Err(refuse("the flags are not 2 lowercase hex digits"));
        }
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        let mut flag = [0; 1];
        hex::decode_to_slice(trace, &mut trace_id).map_err(|_| refuse("bad hex"))?;
        hex::decode_to_slice(span, &mut span_id).map_err(|_| refuse("bad hex"))?;
        hex::decode_to_slice(flags, &mut flag).map_err(|_| refuse("bad hex"))?;
        if trace_id == [0; 16] {
            return Err(refuse("the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(refuse("the parent id is all zeros"));
        }
        Ok(TraceParent {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            flags: flag[0],
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl Serialize for TraceParent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TraceParent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TraceParent, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips_through_text_and_serde() {
        let tp: TraceParent = VALID.parse().unwrap();
        assert_eq!(tp.to_string(), VALID);
        assert_eq!(
            tp.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(tp.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(tp.flags(), 1);
        let json = serde_json::to_string(&tp).unwrap();
        assert_eq!(json, format!("\"{VALID}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), tp);
    }

    #[test]
    fn malformed_traceparents_are_refused_with_what_is_wrong() {
        for (bad, why) in [
            ("", "four fields"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "four fields",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                "parent id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "flags",
            ),
        ] {
            let e = bad.parse::<TraceParent>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_span() {
        let tp: TraceParent = VALID.parse().unwrap();
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_eq!(child.flags(), tp.flags());
        assert_ne!(child.span_id(), tp.span_id());
        assert_ne!(
            TraceParent::root().trace_id(),
            TraceParent::root().trace_id()
        );
    }
}
