//! The one place the WIT contract in `wit/` is turned into Rust.
//!
//! `bindgen!` runs here and nowhere else; the rest of the runtime speaks Spool's own types
//! ([`crate::job::JobInput`], [`crate::outcome::Outcome`]), converted at this boundary.

use std::time::Duration;

use crate::job::JobInput;
use crate::outcome::Outcome;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});

pub(crate) use self::spool::job::types::{Job, JobError, Level};

/// The WIT package this host implements, as `namespace:name`.
pub(crate) const PACKAGE: &str = "spool:job";
/// The version of [`PACKAGE`] this host implements.
pub(crate) const VERSION: &str = "0.1.0";
/// The interface a plugin must export.
pub(crate) const HANDLER_INTERFACE: &str = "spool:job/handler";

impl From<&JobInput> for Job {
    fn from(job: &JobInput) -> Self {
        Job {
            id: job.id.clone(),
            queue: job.queue.clone(),
            payload: job.payload.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            checkpoint: job.checkpoint.clone(),
            tenant: job.tenant.clone(),
            metadata: job.metadata.clone(),
        }
    }
}

impl From<JobError> for Outcome {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Retry(retry) => Outcome::Retry {
                message: retry.message,
                retry_after: retry.retry_after_ms.map(Duration::from_millis),
            },
            JobError::Fail(message) => Outcome::Fail { message },
            JobError::Delay(ms) => Outcome::Delay {
                duration: Duration::from_millis(ms),
            },
            JobError::InvalidPayload(message) => Outcome::InvalidPayload { message },
        }
    }
}

impl From<Level> for crate::outcome::LogLevel {
    fn from(level: Level) -> Self {
        use crate::outcome::LogLevel;
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}
