//! How an attempt ended, and what it left behind.
//!
//! An [`AttemptReport`] is the whole record of one attempt: its typed [`Outcome`], the log
//! lines the plugin wrote (through `host.log` or stdout/stderr), the last checkpoint it saved
//! and its timings. Guest failures ([`Outcome::Retry`], [`Outcome::Fail`], [`Outcome::Delay`])
//! and host-enforced ends ([`Outcome::TimedOut`], [`Outcome::Trapped`]) stay apart so the retry
//! policy can treat them differently.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sandbox::Digest;

/// What one attempt's outbound HTTP requests (`wasi:http`) used: kept with the attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpUsage {
    /// Requests sent (passed the grant and the limits, whether or not they were answered).
    pub requests: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
    /// Requests refused before any connection: not granted, an internal address not granted
    /// literally, or a limit.
    pub refused: u64,
}

impl HttpUsage {
    /// No request made or refused.
    pub fn is_none(&self) -> bool {
        *self == HttpUsage::default()
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Outcome {
    /// The handler returned output.
    Succeeded {
        /// The bytes the handler returned.
        #[serde(with = "lossy_bytes")]
        output: Vec<u8>,
    },
    /// The handler asked to be tried again (a transient failure).
    Retry {
        /// What went wrong, in the plugin's words.
        message: String,
        /// The least time to wait before the next attempt, if the plugin named one.
        #[serde(with = "opt_millis", rename = "retry_after_ms")]
        retry_after: Option<Duration>,
    },
    /// The handler reported a permanent failure: no further attempt can succeed.
    Fail {
        /// What went wrong, in the plugin's words.
        message: String,
    },
    /// The handler asked to run again later without spending an attempt.
    Delay {
        /// How long to wait before running again.
        #[serde(with = "millis", rename = "duration_ms")]
        duration: Duration,
    },
    /// The handler asked to wait until every child it enqueued is finished, then run again
    /// without spending an attempt.
    WaitForChildren,
    /// The handler could not decode the payload: permanent, and the job never really ran.
    InvalidPayload {
        /// What is wrong with the payload, in the plugin's words.
        message: String,
    },
    /// The attempt ran past its timeout and its instance was destroyed.
    TimedOut {
        /// How long the attempt had run when it was aborted.
        #[serde(with = "millis", rename = "elapsed_ms")]
        elapsed: Duration,
    },
    /// The guest trapped or broke a limit; its instance was destroyed.
    Trapped {
        /// What kind of trap, classified by its type, never by its message.
        kind: TrapKind,
        /// wasmtime's description of the trap, for people.
        message: String,
    },
}

impl Outcome {
    /// Whether the attempt produced output.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }

    /// The outcome's name as printed by the CLI: `succeeded`, `retry`, `fail`, `delay`,
    /// `wait-for-children`, `invalid-payload`, `timed-out` or `trapped`.
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// A one-line description of why the attempt did not succeed; `None` when it did.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Succeeded { .. } => None,
            Outcome::Retry {
                message,
                retry_after: Some(after),
            } => Some(format!(
                "{message} (retry after {})",
                humantime::format_duration(*after)
            )),
            Outcome::Retry { message, .. }
            | Outcome::Fail { message }
            | Outcome::InvalidPayload { message } => Some(message.clone()),
            Outcome::Delay { duration } => Some(format!(
                "delayed by {}",
                humantime::format_duration(*duration)
            )),
            Outcome::WaitForChildren => Some("waiting for its children".to_owned()),
            Outcome::TimedOut { elapsed } => {
                Some(format!("timed out after {} ms", elapsed.as_millis()))
            }
            Outcome::Trapped { kind, message } => Some(format!("{kind}: {message}")),
        }
    }
}

/// Why a guest was stopped by the host.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum TrapKind {
    /// A memory or table grow was refused by the attempt's cap.
    OutOfMemory,
    /// The guest's call stack passed the configured wasm stack size.
    StackOverflow,
    /// The guest panicked or reached `unreachable` (a Rust panic compiles to that).
    Panic,
    /// The attempt used up its fuel budget.
    OutOfFuel,
    /// The output the handler returned is larger than the plugin's output limit.
    OutputTooLarge,
    /// Any other trap (out-of-bounds access, bad indirect call, a host error, ...).
    Other,
}

/// How important a log line is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogLevel {
    /// Fine-grained detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected the job survived.
    Warn,
    /// Something failed.
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LogSource {
    /// The plugin called `host.log`.
    Plugin,
    /// A line the guest wrote to stdout.
    Stdout,
    /// A line the guest wrote to stderr.
    Stderr,
    /// The host's own note about the attempt (for example, that output was dropped).
    Host,
}

/// One line of an attempt's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Time since the attempt started.
    #[serde(with = "micros", rename = "at_us")]
    pub at: Duration,
    /// How important the line is (stdout lines are `info`, stderr lines `warn`).
    pub level: LogLevel,
    /// Where the line came from.
    pub source: LogSource,
    /// The text.
    pub message: String,
    /// Structured key/value fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

impl LogLine {
    /// Where the line came from, as a word: `plugin`, `stdout`, `stderr` or `host`.
    pub fn source_name(&self) -> &'static str {
        self.source.into()
    }
}

/// Progress a plugin reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Percent done, 0 to 100.
    pub percent: u8,
    /// The plugin's note, if any.
    pub message: Option<String>,
}

/// Where an attempt's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for a free sandbox slot (the configured concurrency).
    #[serde(with = "micros", rename = "queued_us")]
    pub queued: Duration,
    /// Creating the instance.
    #[serde(with = "micros", rename = "instantiate_us")]
    pub instantiate: Duration,
    /// From instantiation to the handler's return (or the abort).
    #[serde(with = "micros", rename = "run_us")]
    pub run: Duration,
    /// From the start of the attempt (after any queueing) to its end, teardown excluded.
    #[serde(with = "micros", rename = "elapsed_us")]
    pub elapsed: Duration,
}

/// The whole record of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// How the attempt ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The digest of the plugin that ran.
    pub digest: Digest,
    /// The attempt's log: `host.log` calls and stdout/stderr lines, in order, bounded.
    pub logs: Vec<LogLine>,
    /// Log lines (or stdout/stderr bytes) that did not fit the attempt's log limit.
    pub logs_dropped: LogsDropped,
    /// Child jobs the attempt enqueued (`host.enqueue`), to be created with its settle.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub children: Vec<crate::queue::NewChild>,
    /// Steps the attempt completed (`host.step-done`), in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub steps: Vec<String>,
    /// The last state the attempt saved with `checkpoint`, if it saved one.
    #[serde(with = "opt_lossy_bytes")]
    pub checkpoint: Option<Vec<u8>>,
    /// The last progress the attempt reported.
    pub progress: Option<Progress>,
    /// What the attempt's outbound HTTP requests used.
    #[serde(default, skip_serializing_if = "HttpUsage::is_none")]
    pub http: HttpUsage,
    /// The most linear memory the instance held at once, in bytes (its high-water mark).
    #[serde(default, rename = "memory_peak_bytes")]
    pub memory_peak: u64,
    /// Where the time went.
    pub timings: Timings,
}

/// What an attempt's log had to leave out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsDropped {
    /// `host.log` lines not stored.
    pub lines: u64,
    /// stdout/stderr bytes not stored.
    pub stdio_bytes: u64,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

mod micros {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Bytes as a UTF-8 string when they are one, else as an array of numbers.
mod lossy_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(text) => s.serialize_str(text),
            Err(_) => b.serialize(s),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(t) => t.into_bytes(),
            Repr::Bytes(b) => b,
        })
    }
}

mod opt_lossy_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => super::lossy_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::lossy_bytes")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}
