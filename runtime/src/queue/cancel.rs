//! What an operator's cancel selects, and how long each finished state is kept.
//!
//! A cancel names jobs by id ([`Backend::cancel`](super::Backend::cancel)) or by a
//! [`CancelFilter`] ([`Backend::cancel_matching`](super::Backend::cancel_matching)); either way
//! a job that has not started never starts, a running attempt loses its lease at once (its
//! worker hears of it through [`Backend::revoked`](super::Backend::revoked) and destroys the
//! instance), and the unfinished children of a cancelled job are cancelled with it.
//! [`Prune`] says, per finished state, what the sweeper deletes; dead jobs have no entry:
//! they are kept until `spool dlq purge`.
//!
//! The cancel records the running attempt at once ([`cancelled_attempt`]), with what the
//! canceller knows; the worker that aborts it then completes the record with the plugin's
//! digest and the log lines written until the abort
//! ([`Backend::keep_cancelled`](super::Backend::keep_cancelled), [`keep`]).

use serde::{Deserialize, Serialize};

use super::{AttemptRecord, JobState, JobSummary, Timestamp};

/// The outcome of an attempt a cancel ended.
pub const CANCELLED: &str = "cancelled";

/// The record of the running attempt `attempt` (of `worker`, started at `since`) that a cancel
/// ends at `now`: outcome `cancelled`, no phase (it spends no attempt), the reason as its error.
pub(crate) fn cancelled_attempt(
    attempt: u32,
    worker: String,
    since: Timestamp,
    now: Timestamp,
    reason: &str,
) -> AttemptRecord {
    AttemptRecord {
        attempt,
        worker,
        started_at: since,
        finished_at: now,
        outcome: CANCELLED.into(),
        phase: None,
        error: Some(reason.to_owned()),
        digest: None,
        logs: Vec::new(),
        http: Default::default(),
    }
}

/// Complete a cancel's record of an attempt with what its worker kept (digest, logs, HTTP
/// usage), once:
/// returns whether `record` was one still waiting for it.
pub(crate) fn keep(record: &mut AttemptRecord, kept: AttemptRecord) -> bool {
    if record.outcome != CANCELLED || record.digest.is_some() {
        return false;
    }
    record.digest = kept.digest;
    record.logs = kept.logs;
    record.http = kept.http;
    true
}

/// Which unfinished jobs to cancel: every field given must match. A filter with no field
/// matches every unfinished job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CancelFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs in one of these states (as listings report them: a job waiting for its
    /// `run_at` is `scheduled`); empty = every unfinished state. Finished states match
    /// nothing.
    pub states: Vec<JobState>,
    /// Only this tenant's jobs.
    pub tenant: Option<String>,
    /// Only this group's jobs.
    pub group: Option<String>,
}

impl CancelFilter {
    /// Whether the filter names nothing, and so matches every unfinished job.
    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.states.is_empty()
            && self.tenant.is_none()
            && self.group.is_none()
    }

    /// Whether a listed job matches (its state as listed).
    pub fn matches(&self, job: &JobSummary) -> bool {
        !job.state.is_finished()
            && self.queue.as_ref().is_none_or(|q| *q == job.queue)
            && (self.states.is_empty() || self.states.contains(&job.state))
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| job.tenant.as_ref() == Some(t))
            && self
                .group
                .as_ref()
                .is_none_or(|g| job.group.as_ref() == Some(g))
    }
}

/// What [`Backend::prune`](super::Backend::prune) deletes: per finished state, the jobs that
/// finished before a time (`None`: none of that state). Dead jobs are never pruned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prune {
    /// Delete succeeded jobs that finished before this.
    pub succeeded: Option<Timestamp>,
    /// Delete cancelled jobs that were cancelled before this.
    pub cancelled: Option<Timestamp>,
}

impl Prune {
    /// Both states finished before the same time.
    pub fn before(at: Timestamp) -> Prune {
        Prune {
            succeeded: Some(at),
            cancelled: Some(at),
        }
    }

    /// The cutoff for a state (`None` for a state that is never pruned).
    pub fn cutoff(&self, state: JobState) -> Option<Timestamp> {
        match state {
            JobState::Succeeded => self.succeeded,
            JobState::Cancelled => self.cancelled,
            _ => None,
        }
    }

    /// The latest of the cutoffs: nothing finished at or after it is pruned.
    pub fn latest(&self) -> Option<Timestamp> {
        self.succeeded.max(self.cancelled)
    }

    /// The earliest of the cutoffs given.
    pub fn earliest(&self) -> Option<Timestamp> {
        match (self.succeeded, self.cancelled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The message of the `cancelled` event of a job cancelled because its parent was.
pub(crate) fn parent_cancelled(parent: &super::JobId, reason: &str) -> String {
    format!("parent job {parent} was cancelled: {reason}")
}
