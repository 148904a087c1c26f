//! The one place the WIT contract in `wit/` is turned into Rust.
//!
//! `bindgen!` runs here and nowhere else, once per `spool:job` version the host implements:
//! [`v2`] for the current `wit/job.wit` (0.2.0) and [`v1`] for the frozen
//! `wit/versions/0.1.0/job.wit`, so that plugins built against 0.1 keep running. Both sets of
//! imports go into one linker (0.1 and 0.2 are different packages to the component model);
//! a plugin is bound to the version its `handler` export names. The rest of the runtime
//! speaks Spool's own types ([`crate::job::JobInput`], [`crate::outcome::Outcome`]),
//! converted at this boundary.

use std::time::Duration;

use crate::job::JobInput;
use crate::outcome::Outcome;
use crate::queue::JobState;

/// `spool:job@0.2.0`: the current contract.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: {
            "spool:job/host.checkpoint": async | trappable,
            "spool:job/host.step-done": async | trappable,
            "spool:job/host.enqueue": async | trappable,
        },
        exports: { default: async },
    });
}

/// `spool:job@0.1.0`: the first contract, still served.
pub(crate) mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/versions/0.1.0",
        world: "plugin",
        imports: {
            "spool:job/host.checkpoint": async | trappable,
        },
        exports: { default: async },
    });
}

pub(crate) use self::v2::spool::job::types::{
    ChildState, EnqueueOptions, Job, JobError, Level, OnChildFailure,
};

/// The WIT package this host implements, as `namespace:name`.
pub(crate) const PACKAGE: &str = "spool:job";
/// The newest version of [`PACKAGE`] this host implements.
pub(crate) const VERSION: &str = "0.2.0";
/// Every version of [`PACKAGE`] this host implements, oldest first.
pub(crate) const VERSIONS: &[&str] = &["0.1.0", "0.2.0"];
/// The interface a plugin must export.
pub(crate) const HANDLER_INTERFACE: &str = "spool:job/handler";

impl From<&JobInput> for Job {
    fn from(job: &JobInput) -> Self {
        use self::v2::spool::job::types::{Child, Step};
        Job {
            id: job.id.clone(),
            queue: job.queue.clone(),
            payload: job.payload.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            checkpoint: job.checkpoint.clone(),
            tenant: job.tenant.clone(),
            metadata: job.metadata.clone(),
            parent: job.parent.clone(),
            steps: job
                .steps
                .iter()
                .map(|(name, output)| Step {
                    name: name.clone(),
                    output: output.clone(),
                })
                .collect(),
            children: job
                .children
                .iter()
                .map(|c| Child {
                    id: c.id.0.clone(),
                    queue: c.queue.clone(),
                    state: match c.state {
                        JobState::Succeeded => ChildState::Succeeded,
                        JobState::Dead => ChildState::Dead,
                        JobState::Cancelled => ChildState::Cancelled,
                        _ => ChildState::Pending,
                    },
                    output: c.output.clone(),
                    error: c.error.clone(),
                })
                .collect(),
        }
    }
}

impl From<&JobInput> for v1::spool::job::types::Job {
    fn from(job: &JobInput) -> Self {
        v1::spool::job::types::Job {
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
            JobError::WaitForChildren => Outcome::WaitForChildren,
        }
    }
}

impl From<v1::spool::job::types::JobError> for Outcome {
    fn from(err: v1::spool::job::types::JobError) -> Self {
        use v1::spool::job::types::JobError as V1;
        match err {
            V1::Retry(retry) => Outcome::Retry {
                message: retry.message,
                retry_after: retry.retry_after_ms.map(Duration::from_millis),
            },
            V1::Fail(message) => Outcome::Fail { message },
            V1::Delay(ms) => Outcome::Delay {
                duration: Duration::from_millis(ms),
            },
            V1::InvalidPayload(message) => Outcome::InvalidPayload { message },
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

impl From<v1::spool::job::types::Level> for crate::outcome::LogLevel {
    fn from(level: v1::spool::job::types::Level) -> Self {
        use crate::outcome::LogLevel;
        use v1::spool::job::types::Level as V1;
        match level {
            V1::Trace => LogLevel::Trace,
            V1::Debug => LogLevel::Debug,
            V1::Info => LogLevel::Info,
            V1::Warn => LogLevel::Warn,
            V1::Error => LogLevel::Error,
        }
    }
}

impl From<OnChildFailure> for crate::queue::OnChildFailure {
    fn from(policy: OnChildFailure) -> Self {
        match policy {
            OnChildFailure::FailParent => crate::queue::OnChildFailure::FailParent,
            OnChildFailure::Report => crate::queue::OnChildFailure::Report,
        }
    }
}
