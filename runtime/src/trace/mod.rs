//! Tracing: W3C trace context on jobs, and each attempt as a span exported with
//! OpenTelemetry's OTLP/HTTP (JSON) protocol.
//!
//! A producer enqueues a job with a [`TraceParent`]; the job keeps it (both backends), and
//! every attempt of the job is a span of that trace whose parent is the producer's span
//! ([`TraceParent::child`]). The children an attempt enqueues carry the attempt's span as
//! their `traceparent`, so a whole flow is one trace. A job enqueued without one starts a
//! trace of its own at each attempt.
//!
//! The worker also opens a `tracing` span, `attempt`, around each run (fields `queue`, `job`,
//! `attempt`, `outcome`, `digest`, `trace_id`, `span_id`) with the plugin's log lines as
//! events inside it. With a `[tracing] otlp_endpoint` in the config, the same attempt is sent
//! to an OTLP/HTTP collector as an [`AttemptSpan`] by an [`OtlpExporter`]: hand-written on the
//! HTTP client Spool already has, so exporting costs no extra dependency.

mod attempt;
mod context;
mod export;
mod span;

pub use self::attempt::AttemptTrace;
pub use self::context::{SpanId, TraceId, TraceParent, TraceParentError};
pub use self::export::{Endpoint, ExportError, OtlpExporter, OtlpOptions, Tracer, header};
pub use self::span::{AttemptSpan, Attr, SpanEvent, SpanStatus, export_request};
