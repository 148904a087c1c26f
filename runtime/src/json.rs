//! The JSON shapes Spool shows to scripts: every `--json` output of the `spool` command, and the
//! dead-letter envelope the NATS backend publishes.
//!
//! The job model in [`crate::queue`] is also what the backends store (the NATS backend keeps
//! attempts with serde), so its encoding stays as it is; these types are views of it, built
//! when printing. Two rules hold everywhere:
//!
//! - Bytes (a payload, an output, a checkpoint, a step's output) appear as the JSON value they
//!   hold when they are UTF-8 JSON. Other bytes appear as a base64 string, and the field
//!   `<name>_encoding` next to it says `"base64"`; it is absent when the value is JSON.
//! - No key appears twice: a job's failed-attempt count is `failures`, its runs `started`, and
//!   `attempts` is the list of its attempts.
//!
//! `spool workers --json` prints each live [`WorkerInfo`](crate::queue::WorkerInfo) as it is.
//!
//! ```
//! use spool::json::Bytes;
//!
//! let json = serde_json::to_string(&Bytes::of(br#"{"to":"ada"}"#)).unwrap();
//! assert_eq!(json, r#"{"value":{"to":"ada"}}"#);
//! let raw = serde_json::to_string(&Bytes::of(&[0xff, 0x00])).unwrap();
//! assert_eq!(raw, r#"{"value":"/wA=","encoding":"base64"}"#);
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::outcome::{AttemptReport, HttpUsage, LogLine, LogsDropped, Outcome, Progress, Timings};
use crate::queue::{
    AttemptRecord, ChildOutcome, Event, JobDetail, JobId, JobState, JobSummary, Lease, NewChild,
    OnChildFailure, Phase, QueueCounts, StepRecord, Timestamp,
};
use crate::sandbox::Digest;

/// How bytes that are not UTF-8 JSON are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard base64 with padding.
    Base64,
}

/// Bytes as JSON: their own value when they are UTF-8 JSON, else base64 with an [`Encoding`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bytes {
    /// The JSON value, or the base64 text.
    pub value: serde_json::Value,
    /// `Some` when `value` is base64 text rather than the bytes' own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

impl Bytes {
    /// Read `bytes` as JSON, or encode them.
    pub fn of(bytes: &[u8]) -> Bytes {
        match serde_json::from_slice(bytes) {
            Ok(value) => Bytes {
                value,
                encoding: None,
            },
            Err(_) => Bytes {
                value: STANDARD.encode(bytes).into(),
                encoding: Some(Encoding::Base64),
            },
        }
    }

    /// [`Bytes::of`] for optional bytes: `null` and no encoding when absent.
    pub fn of_opt(bytes: Option<&[u8]>) -> Bytes {
        bytes.map_or(
            Bytes {
                value: serde_json::Value::Null,
                encoding: None,
            },
            Bytes::of,
        )
    }
}

/// A job as `spool jobs --json` and `spool dlq list --json` print it (one per line).
#[derive(Debug, Clone, Serialize)]
pub struct JobLine {
    /// The id.
    pub id: JobId,
    /// The queue.
    pub queue: String,
    /// The state.
    pub state: JobState,
    /// Attempts that failed so far (a delay or a wait for children is not one).
    pub failures: u32,
    /// Attempts allowed in all; `null` until the job's first claim settles it when it was
    /// enqueued without one and without a config.
    pub max_attempts: Option<u32>,
    /// Priority.
    pub priority: i32,
    /// Tenant.
    pub tenant: Option<String>,
    /// The job's group.
    pub group: Option<String>,
    /// The job that enqueued this one.
    pub parent: Option<JobId>,
    /// When it was enqueued (milliseconds since the Unix epoch, as every `_at` field).
    pub enqueued_at: Timestamp,
    /// When it runs next (scheduled or ready), or ran last.
    pub run_at: Timestamp,
    /// When it last changed state.
    pub updated_at: Timestamp,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// The last failed attempt's phase.
    pub last_phase: Option<Phase>,
    /// The last progress an attempt reported (`host.progress`).
    pub progress: Option<Progress>,
}

impl From<&JobSummary> for JobLine {
    fn from(s: &JobSummary) -> JobLine {
        JobLine {
            id: s.id.clone(),
            queue: s.queue.clone(),
            state: s.state,
            failures: s.attempts,
            max_attempts: s.max_attempts,
            priority: s.priority,
            tenant: s.tenant.clone(),
            group: s.group.clone(),
            parent: s.parent.clone(),
            enqueued_at: s.enqueued_at,
            run_at: s.run_at,
            updated_at: s.updated_at,
            last_error: s.last_error.clone(),
            last_phase: s.last_phase,
            progress: s.progress.clone(),
        }
    }
}

/// A queue as `spool queues --json` prints it (one per line): its job counts, its handler in
/// the config, and the live workers that serve it.
#[derive(Debug, Clone, Serialize)]
pub struct QueueLine {
    /// The queue and its job counts per state.
    #[serde(flatten)]
    pub counts: QueueCounts,
    /// The plugin the config names for it.
    pub plugin: Option<String>,
    /// That plugin file's digest; `null` when the file is missing.
    pub digest: Option<String>,
    /// Whether the config has a plugin for it (`[queues.NAME]`).
    pub handler: bool,
    /// Whether a live worker (see `spool workers`) serves it: without one, its jobs wait.
    pub served: bool,
    /// How many live workers serve it.
    pub workers: u32,
    /// How long finished jobs are kept (`[worker] retention`), when there is a config.
    pub retention: Option<RetentionSecs>,
}

/// A retention in seconds per finished state; dead jobs are kept until purged.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RetentionSecs {
    /// Succeeded jobs.
    pub succeeded_secs: u64,
    /// Cancelled jobs.
    pub cancelled_secs: u64,
}

/// A whole job as `spool job --json` and `spool dlq show --json` print it, and as the NATS
/// backend publishes a dead job's envelope.
#[derive(Debug, Clone, Serialize)]
pub struct JobJson {
    /// The fields `spool jobs --json` prints.
    #[serde(flatten)]
    pub line: JobLine,
    /// Runs started, delays and waits included.
    pub started: u32,
    /// The payload.
    pub payload: serde_json::Value,
    /// `"base64"` when `payload` is not the payload's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<Encoding>,
    /// The output, once succeeded.
    pub output: serde_json::Value,
    /// `"base64"` when `output` is not the output's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<Encoding>,
    /// The last checkpoint.
    pub checkpoint: serde_json::Value,
    /// `"base64"` when `checkpoint` is not the checkpoint's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_encoding: Option<Encoding>,
    /// The idempotency key.
    pub key: Option<String>,
    /// Metadata, as `[key, value]` pairs.
    pub metadata: Vec<(String, String)>,
    /// The W3C trace context the job was enqueued in, as its `traceparent` header.
    pub traceparent: Option<String>,
    /// The current lease, while running.
    pub lease: Option<Lease>,
    /// Every run, oldest first.
    pub attempts: Vec<AttemptJson>,
    /// The steps its attempts completed.
    pub steps: Vec<StepJson>,
    /// The children it enqueued.
    pub children: Vec<ChildJson>,
    /// The job's timeline, oldest first.
    pub events: Vec<Event>,
}

impl From<&JobDetail> for JobJson {
    fn from(job: &JobDetail) -> JobJson {
        let payload = Bytes::of(&job.payload);
        let output = Bytes::of_opt(job.output.as_deref());
        let checkpoint = Bytes::of_opt(job.checkpoint.as_deref());
        JobJson {
            line: JobLine::from(&job.summary),
            started: job.started,
            payload: payload.value,
            payload_encoding: payload.encoding,
            output: output.value,
            output_encoding: output.encoding,
            checkpoint: checkpoint.value,
            checkpoint_encoding: checkpoint.encoding,
            key: job.key.clone(),
            metadata: job.metadata.clone(),
            traceparent: job.traceparent.map(|tp| tp.to_string()),
            lease: job.lease.clone(),
            attempts: job
                .attempts
                .iter()
                .enumerate()
                .map(|(i, a)| AttemptJson::new(a, i))
                .collect(),
            steps: job.steps.iter().map(StepJson::from).collect(),
            children: job.children.iter().map(ChildJson::from).collect(),
            events: job.events.clone(),
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptJson {
    /// The attempt number the run was (failed attempts before it + 1): a run after a delay or
    /// a wait has the number of the run before it, since those spend no attempt.
    pub attempt: u32,
    /// The run's number among all the job's runs, from 1.
    pub run: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// How it ended (`succeeded`, `retry`, `fail`, `delay`, `timed-out`, `cancelled`, ...).
    pub outcome: String,
    /// Where it failed.
    pub phase: Option<Phase>,
    /// The error, in words.
    pub error: Option<String>,
    /// The digest of the plugin that ran.
    pub digest: Option<String>,
    /// Its log lines.
    pub logs: Vec<LogLine>,
    /// What its outbound HTTP requests used (zeros when it made none).
    pub http: HttpUsage,
}

impl AttemptJson {
    fn new(a: &AttemptRecord, index: usize) -> AttemptJson {
        AttemptJson {
            attempt: a.attempt,
            run: u32::try_from(index + 1).unwrap_or(u32::MAX),
            worker: a.worker.clone(),
            started_at: a.started_at,
            finished_at: a.finished_at,
            outcome: a.outcome.clone(),
            phase: a.phase,
            error: a.error.clone(),
            digest: a.digest.clone(),
            logs: a.logs.clone(),
            http: a.http,
        }
    }
}

/// A completed step.
#[derive(Debug, Clone, Serialize)]
pub struct StepJson {
    /// Its name.
    pub name: String,
    /// What it returned.
    pub output: serde_json::Value,
    /// `"base64"` when `output` is not the output's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<Encoding>,
    /// The attempt that completed it.
    pub attempt: u32,
    /// When it was stored.
    pub at: Timestamp,
}

impl From<&StepRecord> for StepJson {
    fn from(s: &StepRecord) -> StepJson {
        let output = Bytes::of(&s.output);
        StepJson {
            name: s.name.clone(),
            output: output.value,
            output_encoding: output.encoding,
            attempt: s.attempt,
            at: s.at,
        }
    }
}

/// A child as its parent sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildJson {
    /// Its id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobState,
    /// Its output, once succeeded.
    pub output: serde_json::Value,
    /// `"base64"` when `output` is not the output's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<Encoding>,
    /// Its last error.
    pub error: Option<String>,
    /// What its parent does if it dies.
    pub on_failure: OnChildFailure,
}

impl From<&ChildOutcome> for ChildJson {
    fn from(c: &ChildOutcome) -> ChildJson {
        let output = Bytes::of_opt(c.output.as_deref());
        ChildJson {
            id: c.id.clone(),
            queue: c.queue.clone(),
            state: c.state,
            output: output.value,
            output_encoding: output.encoding,
            error: c.error.clone(),
            on_failure: c.on_failure,
        }
    }
}

/// A child an attempt enqueued, as `spool exec --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct NewChildJson {
    /// The id it was given (`child-N` in `exec`).
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// `"base64"` when `payload` is not the payload's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<Encoding>,
    /// Do not run before this time.
    pub run_at: Option<Timestamp>,
    /// Its priority.
    pub priority: i32,
    /// Its max attempts, if the plugin set one.
    pub max_attempts: Option<u32>,
    /// Its tenant.
    pub tenant: Option<String>,
    /// Its idempotency key.
    pub key: Option<String>,
    /// Its group.
    pub group: Option<String>,
    /// What its parent does if it dies.
    pub on_failure: OnChildFailure,
}

impl From<&NewChild> for NewChildJson {
    fn from(c: &NewChild) -> NewChildJson {
        let payload = Bytes::of(&c.job.payload);
        NewChildJson {
            id: c.id.clone(),
            queue: c.job.queue.clone(),
            payload: payload.value,
            payload_encoding: payload.encoding,
            run_at: c.job.run_at,
            priority: c.job.priority,
            max_attempts: c.job.max_attempts,
            tenant: c.job.tenant.clone(),
            key: c.job.key.clone(),
            group: c.job.group.clone(),
            on_failure: c.on_failure,
        }
    }
}

/// One attempt run by `spool exec --json`.
#[derive(Debug, Clone, Serialize)]
pub struct ExecJson {
    /// How it ended: `succeeded`, `retry`, `fail`, `delay`, `wait-for-children`,
    /// `invalid-payload`, `timed-out` or `trapped`.
    pub outcome: &'static str,
    /// Why it did not succeed, in one line; `null` when it did.
    pub error: Option<String>,
    /// The plugin's own message (retry, fail, invalid-payload) or wasmtime's (trapped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The kind of trap (`trapped` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::outcome::TrapKind>,
    /// The least wait the plugin asked for before a retry, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// How long a `delay` asked to wait, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The output, when it succeeded; `null` otherwise.
    pub output: serde_json::Value,
    /// `"base64"` when `output` is not the output's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<Encoding>,
    /// From the start of the attempt to its end, in milliseconds.
    pub elapsed_ms: f64,
    /// The digest of the plugin that ran.
    pub digest: Digest,
    /// Its log lines.
    pub logs: Vec<LogLine>,
    /// What its log had to leave out.
    pub logs_dropped: LogsDropped,
    /// The children it enqueued.
    pub children: Vec<NewChildJson>,
    /// The steps it completed, in order.
    pub steps: Vec<String>,
    /// The last checkpoint it saved.
    pub checkpoint: serde_json::Value,
    /// `"base64"` when `checkpoint` is not the checkpoint's own JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_encoding: Option<Encoding>,
    /// The last progress it reported.
    pub progress: Option<Progress>,
    /// What its outbound HTTP requests used (zeros when it made none).
    pub http: HttpUsage,
    /// Where the time went, in microseconds.
    pub timings: Timings,
}

impl From<&AttemptReport> for ExecJson {
    fn from(r: &AttemptReport) -> ExecJson {
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (mut message, mut kind, mut retry_after_ms, mut duration_ms) = (None, None, None, None);
        let mut output = Bytes::of_opt(None);
        match &r.outcome {
            Outcome::Succeeded { output: bytes } => output = Bytes::of(bytes),
            Outcome::Retry {
                message: m,
                retry_after,
            } => {
                message = Some(m.clone());
                retry_after_ms = retry_after.map(millis);
            }
            Outcome::Fail { message: m } | Outcome::InvalidPayload { message: m } => {
                message = Some(m.clone());
            }
            Outcome::Trapped {
                kind: k,
                message: m,
            } => {
                kind = Some(*k);
                message = Some(m.clone());
            }
            Outcome::Delay { duration } => duration_ms = Some(millis(*duration)),
            Outcome::WaitForChildren | Outcome::TimedOut { .. } => {}
        }
        let checkpoint = Bytes::of_opt(r.checkpoint.as_deref());
        ExecJson {
            outcome: r.outcome.name(),
            error: r.outcome.error(),
            message,
            kind,
            retry_after_ms,
            duration_ms,
            output: output.value,
            output_encoding: output.encoding,
            elapsed_ms: r.timings.elapsed.as_secs_f64() * 1000.0,
            digest: r.digest.clone(),
            logs: r.logs.clone(),
            logs_dropped: r.logs_dropped,
            children: r.children.iter().map(NewChildJson::from).collect(),
            steps: r.steps.clone(),
            checkpoint: checkpoint.value,
            checkpoint_encoding: checkpoint.encoding,
            progress: r.progress.clone(),
            http: r.http,
            timings: r.timings,
        }
    }
}

/// One schedule as `spool schedule list --json` and `GET /api/v1/schedules` print it: its
/// spec in words, its payload as a JSON value (or base64, with `payload_encoding`).
pub fn schedule(state: &crate::schedule::ScheduleState) -> serde_json::Value {
    let payload = Bytes::of(&state.schedule.payload);
    let mut line = serde_json::json!({
        "name": state.schedule.name,
        "spec": state.schedule.spec.to_string(),
        "queue": state.schedule.queue,
        "payload": payload.value,
        "priority": state.schedule.priority,
        "tenant": state.schedule.tenant,
        "group": state.schedule.group,
        "max_attempts": state.schedule.max_attempts,
        "missed": state.schedule.missed,
        "next_run_at": state.next_run_at,
        "last_run_at": state.last_run_at,
        "last_job": state.last_job,
        "from_config": state.schedule.from_config,
    });
    if let (Some(encoding), Some(object)) = (payload.encoding, line.as_object_mut()) {
        object.insert(
            "payload_encoding".to_owned(),
            serde_json::to_value(encoding).unwrap_or_default(),
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bytes_are_values_and_other_bytes_are_base64() {
        let json = Bytes::of(br#"{"a":[1,2]}"#);
        assert_eq!(json.value, serde_json::json!({"a": [1, 2]}));
        assert_eq!(json.encoding, None);
        // Text that is not JSON, and bytes that are not UTF-8, are both base64.
        for raw in [&b"plain text"[..], &[0xff, 0xfe, 0x00][..]] {
            let b = Bytes::of(raw);
            assert_eq!(b.encoding, Some(Encoding::Base64));
            let text = b.value.as_str().unwrap();
            assert_eq!(STANDARD.decode(text).unwrap(), raw);
        }
        assert_eq!(Bytes::of_opt(None).value, serde_json::Value::Null);
    }
}
