//! The durable queue: the job model, the [`Backend`] trait every store implements, and the
//! embedded SQLite backend.
//!
//! Data flows one way: producers [`enqueue`](Backend::enqueue); a worker
//! [`claim`](Backend::claim)s ready jobs under a lease, runs each attempt in the sandbox and
//! [`settle`](Backend::settle)s it with what should happen next ([`Next`]), decided by the
//! worker's retry policy. Every transition is one atomic operation on the backend and records
//! one or more [`Event`]s in the same transaction. Every write made for an attempt carries its
//! [`Lease`], and the backend refuses it once that lease is gone (expired and swept, released,
//! or the job cancelled): a stale attempt can commit nothing.

pub mod any;
pub mod cancel;
pub mod check;
pub mod flow;
pub mod nats;
pub mod sqlite;

pub use self::any::AnyBackend;
pub use self::cancel::{CancelFilter, Prune};

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::events::{Event, EventFilter, EventKind, NewEvent};
use crate::outcome::{HttpUsage, LogLine, Progress};
use crate::schedule::{Schedule, ScheduleFire, ScheduleState};
use crate::trace::TraceParent;

/// Milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A job's id: unique within a backend, stable across attempts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
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
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum JobState {
    /// Waiting for its `run_at` to pass. Moved in by an enqueue with a delay or run-at, by a
    /// retry's backoff and by a `delay`; claimable (no separate promotion step) once `run_at`
    /// has passed. Kept until it runs or is cancelled.
    Scheduled,
    /// Waiting for a worker. Moved in by enqueue, by an expired lease, by a graceful release
    /// and by a DLQ replay; moved out by a claim or a cancel. A job whose queue no live worker
    /// serves stays here, and `spool queues` shows that no live worker serves the queue.
    Ready,
    /// Leased by a worker that is running an attempt. Moved out by that attempt's settle, by
    /// the worker's release on shutdown, or by the sweeper once the lease has expired.
    Running,
    /// Finished with output. Kept for its retention period (24 h by default,
    /// `[worker.retention] succeeded`), then pruned.
    Succeeded,
    /// In the dead-letter queue: failed for good or out of attempts. Kept, with its whole
    /// envelope, until a person replays or purges it.
    Dead,
    /// Cancelled before it finished, by an operator (`spool cancel`) or with its parent.
    /// Kept for its retention period (24 h by default, `[worker.retention] cancelled`).
    Cancelled,
    /// Parked until every child it enqueued is finished (the attempt returned
    /// `wait-for-children`); then ready again, without spending an attempt. A child that dies
    /// with `on-failure = fail-parent` sends it to the dead-letter queue instead.
    Waiting,
}

impl JobState {
    /// Whether the job will not run again unless replayed.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

/// Where an attempt failed, as kept in the dead-letter envelope.
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
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Phase {
    /// The handler returned an error.
    Run,
    /// The attempt ran past its timeout and was aborted.
    Timeout,
    /// The guest trapped (panic, out of memory, stack overflow, ...).
    Trap,
    /// The worker running the attempt stopped renewing its lease (it crashed or hung).
    LeaseExpired,
    /// The payload could not be decoded.
    Decode,
    /// No plugin could be loaded for the job's queue.
    NoHandler,
    /// The job asked to be delayed more often than its max-started-attempts allows.
    MaxStarted,
    /// A child enqueued with `on-failure = fail-parent` died while the job waited for it.
    ChildFailed,
}

/// What a parent waiting for its children does when this child dies.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum OnChildFailure {
    /// The waiting parent dies at once (phase `child-failed`).
    #[default]
    FailParent,
    /// The parent runs again once all its children are finished and sees the failure.
    Report,
}

/// A child job enqueued by a running attempt: committed with the attempt's settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewChild {
    /// The id reserved for it with [`Backend::child_id`].
    pub id: JobId,
    /// The job.
    pub job: NewJob,
    /// What its parent does if it dies.
    pub on_failure: OnChildFailure,
}

/// A child job as its parent (and `spool job`) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildOutcome {
    /// The child's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its state.
    pub state: JobState,
    /// Its output, once succeeded.
    pub output: Option<Vec<u8>>,
    /// Its last error, if any.
    pub error: Option<String>,
    /// What its parent does if it dies.
    pub on_failure: OnChildFailure,
}

/// A step an attempt completed (`host.step-done`): its stored result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's name, unique within the job.
    pub name: String,
    /// What the step returned.
    pub output: Vec<u8>,
    /// The attempt that completed it.
    pub attempt: u32,
    /// When it was stored.
    pub at: Timestamp,
}

/// A durable write made during an attempt, fenced by its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Save {
    /// Replace the job's checkpoint.
    Checkpoint(Vec<u8>),
    /// Store a completed step's result (replacing one of the same name).
    Step {
        /// The step's name.
        name: String,
        /// Its result.
        output: Vec<u8>,
    },
}

/// One [`Save`] of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSave {
    /// The attempt's lease: the write is refused if it is no longer the job's current lease.
    pub lease: Lease,
    /// The attempt number, kept with a step.
    pub attempt: u32,
    /// The attempt's deadline: the write is refused once it has passed, so nothing an attempt
    /// asked for lands after its deadline.
    pub not_after: Option<Timestamp>,
    /// What to write.
    pub save: Save,
}

/// A job to enqueue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// The queue to put it on.
    pub queue: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Do not run before this time; `None` = now.
    pub run_at: Option<Timestamp>,
    /// Higher runs first within a queue; default 0.
    pub priority: i32,
    /// Attempts allowed in all. A producer that knows the queue's config resolves it at
    /// enqueue (`spool enqueue` with a `spool.toml` does); `None` takes the queue's configured
    /// default at the job's first claim, and the claim stores it on the job
    /// ([`QueueClaim::max_attempts`]), so it is settled once and for all.
    pub max_attempts: Option<u32>,
    /// The tenant the job belongs to.
    pub tenant: Option<String>,
    /// Idempotency key: while an unfinished job on the same queue has this key, enqueueing
    /// another returns that job's id with `duplicate = true`.
    pub key: Option<String>,
    /// Free-form key/value pairs handed to the plugin.
    pub metadata: Vec<(String, String)>,
    /// The job's group: a job never runs while another job of its queue and group runs
    /// (its turn comes once that one's attempt has settled or its lease has expired).
    #[serde(default)]
    pub group: Option<String>,
    /// The W3C trace context the producer enqueued the job in: each attempt is a span of that
    /// trace, a child of the producer's span. A child job an attempt enqueues gets the
    /// attempt's span as its parent.
    #[serde(default)]
    pub traceparent: Option<TraceParent>,
}

/// The result of enqueueing one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The job's id (the existing job's, for a duplicate).
    pub id: JobId,
    /// Whether an unfinished job with the same idempotency key already existed.
    pub duplicate: bool,
}

/// A worker's claim on one attempt of one job. Every write for the attempt carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The fencing token: fresh for every claim, never reused for the job.
    pub token: i64,
    /// The worker holding the lease.
    pub worker: String,
    /// When the lease lapses unless renewed.
    pub expires_at: Timestamp,
}

/// How many jobs a worker wants from one queue, and the queue's limits across all workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueClaim {
    /// The queue.
    pub queue: String,
    /// At most this many jobs.
    pub limit: usize,
    /// The queue's concurrency and rate limits and fair sharing, counted across every worker.
    pub flow: flow::Flow,
    /// The queue's configured max attempts: stored on every job claimed without its own, so
    /// from its first claim on, the job's max attempts is settled (the worker's retry policy,
    /// the lease sweeper, replay and cancel all read it from the job). `None` stores nothing.
    pub max_attempts: Option<u32>,
}

/// A claimed job: what the plugin needs for the attempt, and the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The lease the attempt runs under.
    pub lease: Lease,
    /// The queue.
    pub queue: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// The attempt number this run is (failed attempts so far + 1; delays do not count).
    pub attempt: u32,
    /// The job's max-attempts: its own, or the one its first claim stored
    /// ([`QueueClaim::max_attempts`]).
    pub max_attempts: Option<u32>,
    /// How many times the job has been started, this run included (delays count).
    pub started: u32,
    /// The last checkpoint an earlier attempt saved.
    pub checkpoint: Option<Vec<u8>>,
    /// The tenant.
    pub tenant: Option<String>,
    /// The job's metadata.
    pub metadata: Vec<(String, String)>,
    /// When the job was enqueued.
    pub enqueued_at: Timestamp,
    /// The job that enqueued this one, if any.
    pub parent: Option<JobId>,
    /// The steps earlier attempts completed, in the order they completed.
    pub steps: Vec<StepRecord>,
    /// The children earlier attempts enqueued, in the order they were enqueued.
    pub children: Vec<ChildOutcome>,
    /// The trace context the job was enqueued in ([`NewJob::traceparent`]).
    pub traceparent: Option<TraceParent>,
}

/// What happens to a job after an attempt: decided by the worker, applied by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "next", rename_all = "kebab-case")]
pub enum Next {
    /// Done: store the output (event `succeeded`).
    Succeeded {
        /// The output.
        output: Vec<u8>,
    },
    /// The attempt failed and another is allowed: schedule it (events `failed`,
    /// `retry-scheduled`). Spends an attempt.
    Retry {
        /// When the next attempt may start.
        run_at: Timestamp,
    },
    /// Run again later without spending an attempt (event `delayed`).
    Delay {
        /// When to run again.
        run_at: Timestamp,
    },
    /// Failed for good: to the dead-letter queue (events `failed`, `dead-lettered`). Spends an
    /// attempt.
    Dead,
    /// Park the job until all its children are finished (event `waiting`), or ready at once if
    /// they already are. Does not spend an attempt.
    Wait,
}

/// One attempt as kept in the job's history (and its dead-letter envelope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number (see [`Claimed::attempt`]).
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// The outcome's name (`succeeded`, `retry`, `fail`, `delay`, `timed-out`, `trapped`,
    /// `invalid-payload`, `lease-expired`, ...).
    pub outcome: String,
    /// Where it failed; `None` for a success or a delay.
    pub phase: Option<Phase>,
    /// The error, in words; `None` for a success.
    pub error: Option<String>,
    /// The digest of the plugin that ran, if one did.
    pub digest: Option<String>,
    /// The attempt's log lines (plugin `log` calls and stdout/stderr).
    pub logs: Vec<LogLine>,
    /// What its outbound HTTP requests used (zero when it made none).
    #[serde(default, skip_serializing_if = "HttpUsage::is_none")]
    pub http: HttpUsage,
}

/// Settle one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settle {
    /// The attempt's lease: the settle is refused if it is no longer the job's current lease.
    pub lease: Lease,
    /// What happens next.
    pub next: Next,
    /// The attempt, for the job's history.
    pub attempt: AttemptRecord,
    /// A checkpoint the attempt saved, replacing the job's previous one.
    pub checkpoint: Option<Vec<u8>>,
    /// Children the attempt enqueued, created with the settle (empty for a failed attempt).
    pub children: Vec<NewChild>,
    /// The last progress the attempt reported, replacing the job's; `None` keeps the job's.
    pub progress: Option<Progress>,
}

/// What [`Backend::settle_and_claim`] answers.
#[derive(Debug)]
pub struct SettledAndClaimed {
    /// One answer per settle, as [`Backend::settle`] gives them.
    pub settled: Result<Vec<Result<(), LeaseLost>>, QueueError>,
    /// The jobs claimed, as [`Backend::claim`] gives them.
    pub claimed: Result<Vec<Claimed>, QueueError>,
}

/// A write refused because the attempt's lease is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease lost: job {job_id} is no longer leased with token {token}")]
pub struct LeaseLost {
    /// The job.
    pub job_id: JobId,
    /// The stale token.
    pub token: i64,
}

/// A job as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The id.
    pub id: JobId,
    /// The queue.
    pub queue: String,
    /// The state.
    pub state: JobState,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The job's own max-attempts, if set.
    pub max_attempts: Option<u32>,
    /// Priority.
    pub priority: i32,
    /// Tenant.
    pub tenant: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: Timestamp,
    /// When it runs next (scheduled/ready), or ran last.
    pub run_at: Timestamp,
    /// When it last changed state.
    pub updated_at: Timestamp,
    /// The last attempt's error, if any.
    pub last_error: Option<String>,
    /// The last failed attempt's phase, if any.
    pub last_phase: Option<Phase>,
    /// The job that enqueued this one, if any.
    pub parent: Option<JobId>,
    /// The job's group, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The last progress an attempt reported (`host.progress`), kept after it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// Everything known about a job: `spool job <id>` and the dead-letter envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The payload.
    pub payload: Vec<u8>,
    /// The output, once succeeded.
    pub output: Option<Vec<u8>>,
    /// The last checkpoint.
    pub checkpoint: Option<Vec<u8>>,
    /// The idempotency key.
    pub key: Option<String>,
    /// Metadata.
    pub metadata: Vec<(String, String)>,
    /// How many times the job has been started.
    pub started: u32,
    /// The trace context the job was enqueued in ([`NewJob::traceparent`]).
    #[serde(default)]
    pub traceparent: Option<TraceParent>,
    /// The current lease, while running.
    pub lease: Option<Lease>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// The steps its attempts completed, in the order they completed.
    pub steps: Vec<StepRecord>,
    /// The children it enqueued, in the order they were enqueued.
    pub children: Vec<ChildOutcome>,
    /// The job's timeline, oldest first.
    pub events: Vec<Event>,
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only the children of this job.
    pub parent: Option<JobId>,
    /// At most this many (newest first); `None` = the backend's default of 100.
    pub limit: Option<usize>,
    /// Only this tenant's.
    pub tenant: Option<String>,
    /// Only jobs enqueued at or after this time.
    pub since: Option<Timestamp>,
    /// Only jobs listed after this one, newest first (a cursor: pass the last id of the
    /// previous page).
    pub after: Option<JobId>,
}

/// Which dead jobs to list, replay or purge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DlqFilter {
    /// Only this job.
    pub id: Option<JobId>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only jobs whose last attempt failed in this phase.
    pub phase: Option<Phase>,
    /// Only jobs that died at or after this time.
    pub since: Option<Timestamp>,
    /// Only jobs that died before this time.
    pub until: Option<Timestamp>,
    /// At most this many (listing only).
    pub limit: Option<usize>,
}

/// Job counts of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// The queue.
    pub queue: String,
    /// Scheduled jobs.
    pub scheduled: u64,
    /// Ready jobs.
    pub ready: u64,
    /// Running jobs.
    pub running: u64,
    /// Succeeded jobs still kept.
    pub succeeded: u64,
    /// Dead jobs.
    pub dead: u64,
    /// Cancelled jobs still kept.
    pub cancelled: u64,
    /// Jobs waiting for their children.
    #[serde(default)]
    pub waiting: u64,
}

/// A live worker, as kept in the store's worker registry ([`Backend::heartbeat`],
/// [`Backend::workers`]) and shown by `spool workers`.
///
/// A worker registers when it starts and heartbeats every few seconds (`[worker] heartbeat`,
/// 5 s by default), each time with how many attempts it is running. It is live until
/// [`WORKER_TTL_BEATS`] heartbeats have been missed: a worker that stops gracefully removes
/// itself ([`Backend::remove_worker`]); one that is killed drops out of the list once that
/// time has passed since its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id, as recorded in leases and events (`worker-<pid>-<hex>`).
    pub id: String,
    /// The host name of the machine it runs on.
    pub host: String,
    /// Its process id on that machine.
    pub pid: u32,
    /// The Spool version it runs.
    pub version: String,
    /// The queues it serves, by name.
    pub queues: Vec<String>,
    /// Attempts it runs at once at most (`[worker] concurrency`).
    pub concurrency: u32,
    /// Attempts it was running at its last heartbeat.
    pub running: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// When it sent its last heartbeat.
    pub last_heartbeat: Timestamp,
}

/// How many heartbeat intervals a worker stays live after its last heartbeat: the TTL a
/// worker passes to [`Backend::heartbeat`] is this many times its interval.
pub const WORKER_TTL_BEATS: u32 = 3;

/// The longest TTL a heartbeat may ask for (so the longest heartbeat interval is a third of
/// it). The NATS backend's worker bucket drops an entry this long after its last write.
pub const MAX_WORKER_TTL: Duration = Duration::from_secs(180);

/// A backend failure (as opposed to a refused write, which is [`LeaseLost`]).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store could not be opened or answered with an error.
    #[error("queue store error: {0}")]
    Store(String),
    /// A request was malformed (an empty queue name, say).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No job has this id.
    #[error("no job with id {0}")]
    NotFound(JobId),
    /// A job's payload is larger than the backend takes ([`Backend::max_payload`]).
    #[error(
        "payload of {} is larger than the maximum payload of {}{}",
        check::bytes(*.size),
        check::bytes(*.limit),
        .why.as_deref().map(|why| format!(" ({why})")).unwrap_or_default()
    )]
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The largest payload the backend takes.
        limit: usize,
        /// Where the limit comes from, when it is not Spool's own `max_payload`.
        why: Option<String>,
    },
}

/// The operations every queue store provides. One conformance suite (in `tests/all`) runs
/// against every implementation.
pub trait Backend: Send + Sync + 'static {
    /// The largest payload, in bytes, that [`enqueue`](Backend::enqueue) takes: larger ones
    /// are refused with [`QueueError::PayloadTooLarge`].
    fn max_payload(&self) -> usize {
        check::DEFAULT_MAX_PAYLOAD
    }

    /// The sink this backend publishes its committed events through (shared by its clones).
    fn sink(&self) -> crate::events::EventSink;

    /// Publish committed events through `sink` from now on: this backend and every clone of
    /// it. A backend opens with a sink of its own ([`EventSink::new`](crate::events::EventSink::new)).
    fn set_sink(&self, sink: crate::events::EventSink);

    /// Enqueue jobs, all in one transaction; see [`NewJob::key`] for duplicates. Records
    /// `enqueued` (or `duplicate`) for each. Every job is checked first
    /// ([`check::check_jobs`]: its queue name and payload size); one that fails refuses the
    /// whole batch.
    fn enqueue(
        &self,
        jobs: Vec<NewJob>,
    ) -> impl Future<Output = Result<Vec<Enqueued>, QueueError>> + Send;

    /// Atomically claim ready jobs whose `run_at` has passed — highest priority first, then
    /// oldest `run_at` — for `worker`, under a lease of `lease` from now, each with a fresh
    /// fencing token; records `started`. One winner per job, whatever the number of workers.
    fn claim(
        &self,
        worker: &str,
        queues: &[QueueClaim],
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<Claimed>, QueueError>> + Send;

    /// Wait until a job may have become claimable on one of `queues`, or `timeout` has
    /// passed, whichever is first. A worker calls it when a claim came back empty; a wake-up
    /// that finds nothing is harmless. The default sleeps for `timeout` (polling).
    fn wait_for_jobs(
        &self,
        queues: &[String],
        timeout: Duration,
    ) -> impl Future<Output = ()> + Send {
        let _ = queues;
        tokio::time::sleep(timeout)
    }

    /// Extend leases to `lease` from now. One answer per lease, `false` where it is lost.
    fn renew(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> impl Future<Output = Result<Vec<bool>, QueueError>> + Send;

    /// Settle attempts, all in one transaction (group commit), each fenced by its lease. One
    /// answer per settle.
    fn settle(
        &self,
        settles: Vec<Settle>,
    ) -> impl Future<Output = Result<Vec<Result<(), LeaseLost>>, QueueError>> + Send;

    /// Settle attempts and claim jobs in one round: what a worker does each time its attempts
    /// end (BullMQ's `moveToFinished` returning the next job, for a batch). The answers are
    /// those of [`settle`](Backend::settle) and [`claim`](Backend::claim); `queues` may be
    /// empty (settle only) and so may `settles` (claim only).
    ///
    /// A store with one writer does both in one transaction, so a round costs one commit and
    /// the claim sees the room and the group heads the settles freed; when that transaction
    /// fails, neither is written: the settles' answer is the error and nothing is claimed.
    /// The default runs the two calls side by
    /// side, so a store whose writes do not queue behind each other keeps them apart.
    fn settle_and_claim(
        &self,
        settles: Vec<Settle>,
        worker: &str,
        queues: &[QueueClaim],
        lease: Duration,
    ) -> impl Future<Output = SettledAndClaimed> + Send {
        async move {
            let settle = async {
                if settles.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.settle(settles).await
                }
            };
            let claim = async {
                if queues.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.claim(worker, queues, lease).await
                }
            };
            let (settled, claimed) = futures::join!(settle, claim);
            SettledAndClaimed { settled, claimed }
        }
    }

    /// Store a checkpoint or a step result of a running attempt, durably, fenced by its lease
    /// and refused after its deadline (records `checkpointed` or `step-completed`).
    fn save(
        &self,
        save: AttemptSave,
    ) -> impl Future<Output = Result<Result<(), LeaseLost>, QueueError>> + Send;

    /// Reserve the id of the `index`-th child (counting from 0 over the job's life) that the
    /// attempt holding `lease` enqueues. The child itself is created only by the attempt's
    /// settle; an id reserved by an attempt that never commits is simply never used.
    fn child_id(
        &self,
        lease: &Lease,
        index: u32,
    ) -> impl Future<Output = Result<JobId, QueueError>> + Send;

    /// Give leased jobs back (graceful shutdown): ready again at once, no attempt spent,
    /// event `released`. Returns how many were still leased.
    fn release(&self, leases: &[Lease]) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Return every job whose lease has expired: the attempt counts as failed with phase
    /// `lease-expired` (event `lease-expired`); the job is ready again, or dead when no
    /// attempts are left, judged by the job's own max attempts (stored at enqueue or at its
    /// first claim). `default_max_attempts` applies only to a job claimed with no max attempts
    /// at all (by a claim that passed none, or by a Spool older than that rule). Returns the
    /// jobs returned.
    fn expire_leases(
        &self,
        default_max_attempts: u32,
    ) -> impl Future<Output = Result<Vec<JobId>, QueueError>> + Send;

    /// Cancel an unfinished job (event `cancelled` with `reason` as its message): it never
    /// starts again, even if its message was already delivered; a running attempt's lease is
    /// revoked, so its settle is refused, the attempt is recorded with outcome `cancelled`
    /// (no attempt spent) and what it held (its group, concurrency slots) is free at once.
    /// Its unfinished children are cancelled with it, down the tree. Returns whether it was
    /// unfinished; [`QueueError::NotFound`] for an unknown id.
    fn cancel(
        &self,
        id: &JobId,
        reason: &str,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Complete the record of the attempt a cancel ended while `lease` held it, with what its
    /// worker kept of it: the plugin's digest and the log lines written before the abort
    /// (`attempt`'s other fields are ignored). Applies once, and only to a job cancelled while
    /// running under `lease`; returns whether it applied.
    fn keep_cancelled(
        &self,
        lease: &Lease,
        attempt: AttemptRecord,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Cancel every unfinished job matching `filter` at the time of the call, as
    /// [`cancel`](Backend::cancel) does one. Returns the jobs cancelled (children cancelled
    /// with their parents included).
    fn cancel_matching(
        &self,
        filter: &CancelFilter,
        reason: &str,
    ) -> impl Future<Output = Result<Vec<JobId>, QueueError>> + Send;

    /// Wait up to `timeout` for a cancel to revoke one of `leases`, and return the jobs whose
    /// lease among `leases` a cancel revoked (possibly none). A worker calls it in a loop to
    /// abort cancelled attempts at once; renewing leases finds the same, later.
    fn revoked(
        &self,
        leases: &[Lease],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<JobId>, QueueError>> + Send;

    /// Record an event that belongs to no transition (plugin loaded or reloaded, ...).
    fn record(&self, event: NewEvent) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// One job with its attempts and timeline.
    fn job(&self, id: &JobId)
    -> impl Future<Output = Result<Option<JobDetail>, QueueError>> + Send;

    /// Jobs, newest first.
    fn jobs(
        &self,
        filter: &JobFilter,
    ) -> impl Future<Output = Result<Vec<JobSummary>, QueueError>> + Send;

    /// Counts per state for every queue that has jobs.
    fn queues(&self) -> impl Future<Output = Result<Vec<QueueCounts>, QueueError>> + Send;

    /// Events in order of their sequence number.
    fn events(
        &self,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Vec<Event>, QueueError>> + Send;

    /// Dead jobs matching `filter`, most recently dead first.
    fn dead(
        &self,
        filter: &DlqFilter,
    ) -> impl Future<Output = Result<Vec<JobSummary>, QueueError>> + Send;

    /// Give dead jobs matching `filter` fresh attempts: ready at once, attempt count reset,
    /// history kept, event `replayed`. Returns how many.
    fn replay(&self, filter: &DlqFilter) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Delete dead jobs matching `filter` with their history. Returns how many.
    fn purge(&self, filter: &DlqFilter) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Delete succeeded and cancelled jobs that finished before their state's cutoff in
    /// `prune`, with their history. Dead jobs are never pruned. Returns how many.
    fn prune(&self, prune: Prune) -> impl Future<Output = Result<u64, QueueError>> + Send;

    /// Create a schedule, or replace one of the same name. Its next tick becomes
    /// `next_run_at`, unless a schedule of that name with the same spec exists: that one keeps
    /// its next and last ticks. Returns whether it was new.
    fn put_schedule(
        &self,
        schedule: Schedule,
        next_run_at: Timestamp,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Delete a schedule: it fires no more. Returns whether it existed.
    fn remove_schedule(&self, name: &str) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Every schedule, by name.
    fn schedules(&self) -> impl Future<Output = Result<Vec<ScheduleState>, QueueError>> + Send;

    /// Take or keep the schedulers' leader lock for `holder` until `now + ttl`: granted when
    /// nobody holds it, `holder` holds it, or the holder's expiry has passed at `now`. A
    /// `ttl` of zero gives it up (it is free at once). Returns whether `holder` holds it.
    fn take_leadership(
        &self,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// Apply one step of a schedule ([`plan`](crate::schedule::plan)) if its `next_run_at` is still
    /// `fire.due`: move it to `fire.next` and, in the same atomic step, enqueue the job
    /// (event `schedule-fired`, with the job) or record the skip (`schedule-skipped`).
    /// Returns the job enqueued, `Ok(None)` when nothing was (a skip, or the schedule moved
    /// on or was removed meanwhile: another scheduler fired the tick).
    fn fire_schedule(
        &self,
        fire: ScheduleFire,
    ) -> impl Future<Output = Result<Option<JobId>, QueueError>> + Send;

    /// Register `worker` in the worker registry, or refresh its entry (keyed by
    /// [`WorkerInfo::id`]): it is live until `ttl` after its
    /// [`last_heartbeat`](WorkerInfo::last_heartbeat), unless it heartbeats again. An empty id,
    /// or a `ttl` of zero or above [`MAX_WORKER_TTL`], is a [`QueueError::BadRequest`].
    fn heartbeat(
        &self,
        worker: &WorkerInfo,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Take a worker out of the registry (a graceful stop). Returns whether it was listed
    /// and live.
    fn remove_worker(&self, id: &str) -> impl Future<Output = Result<bool, QueueError>> + Send;

    /// The live workers (whose TTL has not passed), by id. Works on a read-only store.
    fn workers(&self) -> impl Future<Output = Result<Vec<WorkerInfo>, QueueError>> + Send;
}

/// Check a heartbeat's arguments, for every backend: an id and a TTL.
pub(crate) fn check_heartbeat(worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
    if worker.id.is_empty() {
        return Err(QueueError::BadRequest("a worker needs an id".to_owned()));
    }
    if ttl.is_zero() || ttl > MAX_WORKER_TTL {
        return Err(QueueError::BadRequest(format!(
            "worker {}: a heartbeat's TTL must be above zero and at most {}",
            worker.id,
            humantime::format_duration(MAX_WORKER_TTL)
        )));
    }
    Ok(())
}

/// When a worker that heartbeat at `last_heartbeat` stops being live, `ttl` later.
pub(crate) fn worker_expiry(last_heartbeat: Timestamp, ttl: Duration) -> Timestamp {
    last_heartbeat.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}
