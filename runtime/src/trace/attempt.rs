//! One attempt's place in its trace: the `tracing` span around the run, and the
//! [`AttemptSpan`] exported once it ends.

use std::time::SystemTime;

use tracing::field::Empty;

use super::context::{SpanId, TraceParent};
use super::export::Tracer;
use super::span::{AttemptSpan, Attr, SpanEvent, SpanStatus};
use crate::outcome::{LogLine, Outcome};

/// An attempt's trace context from its start: made by the worker before the run, finished
/// with what the run did.
///
/// ```
/// use spool::trace::{AttemptTrace, TraceParent};
///
/// let job: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// let trace = AttemptTrace::start(Some(job), "email", "42", 1);
/// // A child enqueued by the attempt is a child of the attempt's span.
/// assert_eq!(trace.traceparent().trace_id(), job.trace_id());
/// assert_ne!(trace.traceparent().span_id(), job.span_id());
/// ```
#[derive(Debug)]
pub struct AttemptTrace {
    context: TraceParent,
    parent: Option<SpanId>,
    start: SystemTime,
    queue: String,
    job: String,
    attempt: u32,
    span: tracing::Span,
}

impl AttemptTrace {
    /// Start the span of attempt `attempt` of job `job` on `queue`: a child of the job's
    /// `traceparent`, or the root of a new trace when it has none.
    pub fn start(
        traceparent: Option<TraceParent>,
        queue: &str,
        job: &str,
        attempt: u32,
    ) -> AttemptTrace {
        let context = traceparent.map_or_else(TraceParent::root, |tp| tp.child());
        let span = tracing::info_span!(
            "attempt",
            queue,
            job,
            attempt,
            outcome = Empty,
            digest = Empty,
            trace_id = %context.trace_id(),
            span_id = %context.span_id(),
        );
        AttemptTrace {
            context,
            parent: traceparent.map(|tp| tp.span_id()),
            start: SystemTime::now(),
            queue: queue.to_owned(),
            job: job.to_owned(),
            attempt,
            span,
        }
    }

    /// The `tracing` span to run the attempt in.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The `traceparent` of the attempt's own span: what the children it enqueues carry.
    pub fn traceparent(&self) -> TraceParent {
        self.context
    }

    /// End the span: record the outcome and digest on it, emit the plugin's log lines as
    /// events in it, and hand the finished span to `tracer` (if spans are exported).
    pub fn finish(
        self,
        tracer: Option<&Tracer>,
        outcome: &Outcome,
        digest: Option<&str>,
        logs: &[LogLine],
    ) {
        let end = SystemTime::now();
        self.span.record("outcome", outcome.name());
        if let Some(digest) = digest {
            self.span.record("digest", digest);
        }
        self.span.in_scope(|| {
            for line in logs {
                // The plugin's own lines, at debug whatever their level: a worker's log is
                // for its operator, and the job keeps them all anyway.
                tracing::debug!(
                    target: "spool::plugin",
                    level = %line.level,
                    source = line.source_name(),
                    fields = ?line.fields,
                    "{}",
                    line.message
                );
            }
        });
        let Some(tracer) = tracer else {
            return;
        };
        let mut attributes: Vec<(String, Attr)> = vec![
            ("messaging.system".into(), "spool".into()),
            (
                "messaging.destination.name".into(),
                self.queue.clone().into(),
            ),
            ("messaging.message.id".into(), self.job.clone().into()),
            ("spool.queue".into(), self.queue.clone().into()),
            ("spool.job.id".into(), self.job.clone().into()),
            ("spool.attempt".into(), i64::from(self.attempt).into()),
            ("spool.outcome".into(), outcome.name().into()),
        ];
        if let Some(digest) = digest {
            attributes.push(("spool.plugin.digest".into(), digest.into()));
        }
        let events = logs
            .iter()
            .map(|line| {
                let mut attributes: Vec<(String, Attr)> = vec![
                    ("level".into(), line.level.to_string().into()),
                    ("source".into(), line.source_name().into()),
                ];
                attributes.extend(
                    line.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), Attr::from(v.as_str()))),
                );
                SpanEvent {
                    at: self.start + line.at,
                    name: line.message.clone(),
                    attributes,
                }
            })
            .collect();
        let status = match outcome {
            Outcome::Succeeded { .. } => SpanStatus::Ok,
            Outcome::Delay { .. } | Outcome::WaitForChildren => SpanStatus::Unset,
            other => SpanStatus::Error(other.error().unwrap_or_default()),
        };
        tracer.export(AttemptSpan {
            context: self.context,
            parent: self.parent,
            name: format!("attempt {}", self.queue),
            start: self.start,
            end,
            attributes,
            events,
            status,
        });
    }
}
