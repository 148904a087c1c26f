//! One attempt as a finished span, and its OTLP/JSON encoding
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::context::{SpanId, TraceParent};

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
}

impl From<&str> for Attr {
    fn from(s: &str) -> Attr {
        Attr::Str(s.to_owned())
    }
}

impl From<String> for Attr {
    fn from(s: String) -> Attr {
        Attr::Str(s)
    }
}

impl From<i64> for Attr {
    fn from(n: i64) -> Attr {
        Attr::Int(n)
    }
}

/// Something that happened during a span: one of the plugin's log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanEvent {
    /// When.
    pub at: SystemTime,
    /// The event's name: the log line's message.
    pub name: String,
    /// Its attributes: the line's level and source, and the plugin's fields.
    pub attributes: Vec<(String, Attr)>,
}

/// How the span ended, in OpenTelemetry's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// Nothing to say (a delay, a wait for children).
    Unset,
    /// The attempt succeeded.
    Ok,
    /// The attempt failed, with the error.
    Error(String),
}

/// One finished attempt span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSpan {
    /// The span's own context: its trace and its span id.
    pub context: TraceParent,
    /// The parent span (the producer's, or the parent attempt's), if any.
    pub parent: Option<SpanId>,
    /// The span's name.
    pub name: String,
    /// When the attempt started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Queue, job id, attempt, outcome, digest.
    pub attributes: Vec<(String, Attr)>,
    /// The plugin's log lines.
    pub events: Vec<SpanEvent>,
    /// How it ended.
    pub status: SpanStatus,
}

/// OpenTelemetry's `SPAN_KIND_CONSUMER`: the span handles a message a producer sent.
const KIND_CONSUMER: u8 = 5;

/// The body of an OTLP/HTTP JSON export request (`POST /v1/traces`) carrying `spans`, as
/// emitted by `service_name`.
pub fn export_request(service_name: &str, spans: &[AttemptSpan]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": attributes(&[("service.name".to_owned(), Attr::from(service_name))]),
            },
            "scopeSpans": [{
                "scope": { "name": "spool", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    })
}

fn span(s: &AttemptSpan) -> Value {
    let mut out = json!({
        "traceId": s.context.trace_id().to_string(),
        "spanId": s.context.span_id().to_string(),
        "flags": s.context.flags(),
        "name": s.name,
        "kind": KIND_CONSUMER,
        "startTimeUnixNano": nanos(s.start),
        "endTimeUnixNano": nanos(s.end),
        "attributes": attributes(&s.attributes),
        "events": s.events.iter().map(|e| json!({
            "timeUnixNano": nanos(e.at),
            "name": e.name,
            "attributes": attributes(&e.attributes),
        })).collect::<Vec<_>>(),
        "status": match &s.status {
            SpanStatus::Unset => json!({}),
            SpanStatus::Ok => json!({ "code": 1 }),
            SpanStatus::Error(message) => json!({ "code": 2, "message": message }),
        },
    });
    if let (Some(parent), Some(map)) = (s.parent, out.as_object_mut()) {
        map.insert("parentSpanId".to_owned(), parent.to_string().into());
    }
    out
}

fn attributes(attrs: &[(String, Attr)]) -> Vec<Value> {
    attrs
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Attr::Str(s) => json!({ "stringValue": s }),
                // OTLP/JSON writes 64-bit integers as strings.
                Attr::Int(n) => json!({ "intValue": n.to_string() }),
            };
            json!({ "key": key, "value": value })
        })
        .collect()
}

/// Nanoseconds since the Unix epoch, as OTLP/JSON writes them: a decimal string.
fn nanos(at: SystemTime) -> String {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_span_encodes_as_otlp_json_with_hex_ids_and_string_integers() {
        let context: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let body = export_request(
            "svc",
            &[AttemptSpan {
                context,
                parent: Some(SpanId([1, 2, 3, 4, 5, 6, 7, 8])),
                name: "attempt email".to_owned(),
                start,
                end: start + Duration::from_millis(5),
                attributes: vec![("spool.attempt".to_owned(), Attr::Int(2))],
                events: vec![SpanEvent {
                    at: start + Duration::from_millis(1),
                    name: "sending".to_owned(),
                    attributes: vec![("level".to_owned(), Attr::from("info"))],
                }],
                status: SpanStatus::Error("boom".to_owned()),
            }],
        );
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "svc"}})
        );
        let s = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00f067aa0ba902b7");
        assert_eq!(s["parentSpanId"], "0102030405060708");
        assert_eq!(s["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000005000000");
        assert_eq!(
            s["attributes"][0],
            json!({"key": "spool.attempt", "value": {"intValue": "2"}})
        );
        assert_eq!(s["events"][0]["name"], "sending");
        assert_eq!(s["events"][0]["timeUnixNano"], "1700000000001000000");
        assert_eq!(s["status"], json!({"code": 2, "message": "boom"}));
    }
}
