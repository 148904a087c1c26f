//! The NATS JetStream backend: any number of worker processes on any number of machines share
//! the queues through one NATS server (or cluster).
//!
//! # Design
//!
//! Everything lives under one prefix (default `spool`; upper-cased in stream names), created
//! on first use with [`NatsOptions`]' replicas and storage. An existing stream, bucket or
//! consumer whose settings Spool relies on differ is reported with the differences named, and
//! left as it is.
//!
//! | what | JetStream object | subjects |
//! |---|---|---|
//! | job messages | stream `SPOOL_JOBS`, work-queue retention | `spool.jobs.<queue>`, `spool.jobs.<queue>.high`, `spool.jobs.<queue>.low`; tenant lanes `spool.jobs.<queue>.t.<tenant>[.high\|.low]` |
//! | job records | KV bucket `spool-jobs`, history 1 | key = job id |
//! | idempotency keys | KV bucket `spool-keys` | key = `<queue>.<base64url(key)>` |
//! | staged children | KV bucket `spool-staged`, history 1 | key = `<child id>.<parent's token>` |
//! | the event log | stream `SPOOL_EVENTS`, limits retention | `spool.events.<queue>` (`_` for none) |
//! | dead letters | stream `SPOOL_DLQ` | `spool.dlq.<queue>.<job id>` |
//! | running leases | stream `SPOOL_LEASES`, one message per subject | `spool.leases.<connection>` (one lease table per connection) |
//! | cancel notices | core NATS, no stream | `spool.cancel` (`<job id> <token>`, see `cancel.rs`) |
//! | flow control | KV bucket `spool-flow` | group locks `g.<queue>.<base64url(group)>`, slots `c.<queue>[.t.<tenant>]`, rate buckets `r.<queue>[.t.<tenant>]` |
//! | schedules | KV bucket `spool-schedules` | schedules `s.<name>`, the schedulers' leader lock `leader` |
//! | live workers | KV bucket `spool-workers`, max age 3 min | `w.<base64url(worker id)>` (see `workers.rs`) |
//!
//! **Queues.** A job is one message on its queue's subject, and its id is that message's
//! stream sequence; a child job's id is its parent's and its index, `<parent>-<i>` counting
//! from 1 (`12-1-3` is the third child of the first child of job 12), and its messages name
//! it in a `Spool-Job` header. A sequence has no `-`, so the two never meet. Each queue has
//! three durable pull consumers, one per priority band (`high-<queue>` for priority above 0,
//! `normal-<queue>`, `low-<queue>`), shared by every worker: explicit ack, unlimited
//! deliveries (Spool counts attempts), unlimited pending acks (scheduled jobs wait as pending
//! naks). A claim asks every queue at once and, within a queue, fetches band by band from the
//! highest. Work-queue retention drops a message once acked, and nothing else drops one: a
//! job's message stays until the job succeeds, dies or is cancelled.
//!
//! **Tenant lanes and flow control.** A job with a tenant waits in its tenant's lane: its own
//! subject and its own consumer per band (created on first use, deleted by the server after a
//! day unused), so a claim can take from every tenant in turn. A claim lists the lanes with
//! messages (one stream-info request, kept half a second) and gives the shared band and each
//! tenant lane of a band an even share of what it wants. Group locks, concurrency slots and
//! rate buckets live in `spool-flow` (see `flow.rs`): a job whose group runs waits as a
//! delayed nak (a quarter second more each time it finds the group busy, up to five); slots
//! are reserved before fetching and swapped for the jobs taken, and lapse with the lease of
//! a worker that died.
//!
//! **Records start at the first claim.** Enqueueing publishes the job's message and nothing
//! else (its idempotency key aside): until a worker first claims it, the message is the job,
//! and reads of a job with no record read its message. The first delivery of a message
//! creates the record with the claim's compare-and-set on "no record yet", with no read
//! first; should one exist after all (a cancel came first), that write fails and the claim
//! reads the record and decides again. A cancel of a job nobody claimed yet creates its
//! record the same way. So a job's first attempt costs one read-free write to start and one
//! write to settle.
//!
//! **Cancels.** A cancel writes the record first (a running attempt recorded as cancelled),
//! frees what the claim held, terms the held message (or deletes a message nobody holds),
//! cancels the job's unfinished children, and publishes a notice on `spool.cancel` that every
//! worker listens to ([`Backend::revoked`]), so the attempt is dropped at once; a worker that
//! misses it finds the lease gone at its next renewal. A message fetched for a cancelled job
//! finds its record finished and is acked without running.
//!
//! **Leases.** A claimed job's message stays unacked while its attempt runs: the consumer's
//! ack wait is the server-side lease, and every renewal sends the message an ack-progress. The
//! lease that fences writes is Spool's own, kept in the job's record with the held message's
//! ack subject: a settle acks the message (success, and a wait for children), naks it with the
//! backoff as its delay (retry, delay: the server delivers it again when due, no polling), or
//! terms it (dead). Any process can answer a message through its ack subject, so the sweeper
//! of another worker can return a dead worker's job. Naks are sent as requests and wait for the server's
//! confirmation, so a job naked for now is claimable by the next fetch; acks and terms are
//! sent without waiting (the record, written first, already says the job is finished).
//!
//! **Fencing.** Every write to a job's record is a compare-and-set on its revision
//! (`Nats-Expected-Last-Subject-Sequence`), retried from a fresh read when another writer got
//! there first, and a write for an attempt applies only while the record is running under the
//! attempt's token (every claim adds one; nothing lowers it). JetStream accepts a late ack
//! after a redelivery, so the message alone cannot fence: a stale attempt's settle finds
//! another token in the record and commits nothing, and its message answer is never sent.
//! A worker seeing a message whose record is finished acks it away; one whose record is
//! running under a live lease naks it until the lease ends.
//!
//! **The sweeper.** Each connection keeps a lease table: the `{job, token, expires_at}` of
//! every lease it holds, published as one message on its own subject (the stream keeps the
//! newest per subject) after each renewal and, at most once a second (or a quarter of the
//! lease), after claims: a table only has to name a lease before that lease could lapse, and
//! a busy worker claims many rounds a second. Settles, releases and expiries drop their entry
//! from the table in memory; the next publish carries that. [`Backend::expire_leases`] reads
//! every other connection's table (one message per connection, not per job) and its own from
//! memory, checks each lapsed entry against the job's record (the record, not the table,
//! says whether the lease is still that claim's and still lapsed) and returns each lapsed job
//! through its record and its message. A table with no live entry (a stopped or idle
//! connection's) is purged up to the version read, so a newer one published meanwhile stays.
//! When no sweeper runs, the ack wait still brings the message back to a claimer. A claimer
//! that died before a table named its lease (it claimed within its last second, or between
//! writing the record and publishing) left a lease no table names: whoever fetches the
//! returning message and finds the lease lapsed adopts it into its own table, and the next
//! sweep returns the job.
//!
//! **Steps and checkpoints** are compare-and-sets of the record fenced like a settle (and
//! refused after the attempt's deadline): `steps` keeps each name's latest result in the order
//! of first completion, `checkpoint` the latest state. Each is stored before the call returns.
//!
//! **Children.** A record counts its children in `children`, one byte per child in enqueue
//! order: what the parent has heard of the child's end (0: nothing yet). A child's record keeps
//! `parent` and `on_failure`. A settle that enqueues children
//!
//! 1. stages each child's record in `spool-staged` under the child's id and the attempt's
//!    token (payloads stay out of the parent's record, however many children there are);
//! 2. commits them with its compare-and-set: the parent's `children` grows by them and a
//!    `spawn` entry names the range and the token. A settle that loses its lease commits
//!    nothing, and drops its stages;
//! 3. creates them: each child's record (if absent; a child whose idempotency key an
//!    unfinished job holds is created cancelled, naming the holder), its `enqueued` event, its
//!    message (`Nats-Msg-Id: <child>.spawn`), in enqueue order; drops the stages; clears the
//!    spawn.
//!
//! A waiting job (`wait-for-children`) is `waiting` while one of its children is unheard, and
//! its message is acked. A child that ends (settled, expired into the dead-letter queue,
//! cancelled) tells its parent, one compare-and-set per parent for a whole settle group:
//! the parent notes the byte and, if waiting, dies of a child newly heard dead with
//! `fail-parent` (phase `child-failed`, events `failed` and `dead-lettered`, a dead letter) or,
//! once no child is unheard, becomes ready: a wake message (`Spool-Job`, `Nats-Msg-Id:
//! <parent>.wake.<token>`) is published first, then the record is set ready (event
//! `children-finished`). A parent that ended tells its own parent in turn, up the tree. A
//! replayed child is unheard again. What a job sees of its children (`Claimed::children`,
//! `spool job`) is read from their records, in enqueue order; listing a parent's children
//! reads only those.
//!
//! **Crash windows.** Whatever follows a commit is done before the job's message is answered,
//! so a crash leaves the message to come back to a claimer (after the ack wait), which finishes
//! the work before anything else, every step of which is a no-op when repeated:
//!
//! - children committed but not (all) created: the parent's message comes back; its claimer
//!   sees `spawn` and creates them from their stages;
//! - a child ended but its parent not told: the child's message comes back (an unclaimed
//!   cancelled child's is still queued); its claimer finds the child ended and tells the
//!   parent, and climbs the tree from there;
//! - the wake published but the parent still `waiting`: the wake's claimer reads the records
//!   of the children its parent has not heard, hears those that ended, and claims the parent if
//!   none is left (a wake that finds children unfinished is dropped: their ends will tell);
//! - a parent that died of a child before its dead letter was published, and a settle that
//!   crashed after staging and before its commit: the letter is lost as for any death (the
//!   record is what counts); the stages are left over and `prune` drops those no spawn names
//!   once they are an hour old;
//! - a replay of a child that crashed before telling the parent: the parent still counts the
//!   child as ended until it ends again (a `report` parent could wake before it has).
//!
//! A parent's record is rewritten once per child end it hears (per settle group), so a fan-out
//! costs its children times the parent's record size in writes.
//!
//! **Idempotency keys.** An enqueue reads the key's entry: held by an unfinished job, the new
//! job is its duplicate. Otherwise the job is published with `Nats-Msg-Id:
//! <queue>.<key>:<entry revision>`, so two producers racing for a free key publish the same
//! id and the stream keeps one message (its ack says `duplicate` to the second), and the entry
//! is moved to the new job with a compare-and-set. A finished job frees its key by being
//! finished; nothing has to delete the entry.
//!
//! **Events.** A job's events are its timeline, kept in its record and written by the same
//! compare-and-set as the change each reports: a transition and its event are one write, so
//! neither lands without the other, and `spool job` reads both in one get. (The timeline keeps
//! a job's first event and its newest 255; the log below keeps them all.) Once stored, events
//! are also appended to the event log, the stream `SPOOL_EVENTS`: one message per queue per
//! batch of changes (a claim round, a settle group, an enqueue call), holding a JSON array, so
//! a busy worker stores one log message per batch rather than one per event. An event's
//! sequence number in the log is its message's stream sequence times 2^16 plus its place in
//! the message, so `spool events --follow` resumes after any event; in a job's timeline it is
//! the event's place in the timeline. Purging or pruning a job purges its record (timeline
//! included) and dead letter; the log is trimmed by `prune` to what is younger than the
//! retention. A crash after a change is stored and before its log message is published loses
//! that log entry, never the timeline's.
//!
//! **Reads.** `spool job` is one KV get (its timeline included), and one more per child; a job
//! no worker has claimed yet is one direct get of its message. Listings and counts (`spool
//! jobs`, `spool queues`, the dead-letter queue, prune) read every record of the bucket
//! through an ordered consumer, and `jobs` and `queues` also the messages of the jobs stream
//! no record names yet (a work-queue stream admits no second consumer, so these are direct
//! gets, 16 ranges at a time): linear in the jobs kept, which retention bounds. Jobs are
//! listed newest first by enqueue time, then by id.
//!
//! **What a newer server would simplify.** nats-server 2.9 has no atomic batch publish
//! (2.12+), no counters (2.12+) and no per-message TTL or scheduled delivery (2.11+/2.12+),
//! so: a job's message and its record are two writes (the first claim builds the record from
//! the message, so nothing is lost between them, but a listing reads both); a
//! settle's children are staged, committed and created in three steps where one atomic batch
//! on the records' stream would write the parent and its children together; a parent hears
//! its children by rewriting its record where a counter would do; a scheduled job waits as a
//! delayed nak; and the lease index is a table per connection that the sweeper reads whole. A
//! consumer filtered on several subjects (2.10+) would let one consumer per queue serve every
//! band.
//!
//! **Priorities.** Bands order claims across a backlog of any depth (high before normal
//! before low). Within a band, jobs go in stream order, and one enqueue batch is published in
//! claim order (priority, then run-at): exact priorities inside a band do not overtake jobs
//! already queued. The SQLite backend orders by exact priority.
//!
//! **Schedules** live in the KV bucket `spool-schedules` (see `schedule.rs`): `s.<name>` holds a
//! schedule and its next and last tick, `leader` the schedulers' leader lock. The lock is taken
//! and renewed with a compare-and-set on its revision, and is free to take once its recorded
//! expiry has passed. A fire publishes the job with `Nats-Msg-Id: schedule:<name>:<tick>`, then
//! moves the schedule on with a compare-and-set: of several schedulers firing one tick, the
//! stream keeps one message and one compare-and-set lands (only that one logs
//! `schedule-fired`). A scheduler whose compare-and-set fails because the schedule was removed
//! or replaced meanwhile has still published that one job.
//!
//! # Wire format
//!
//! Any NATS client can enqueue a job by publishing one message to `spool.jobs.<queue>` (or
//! `.high` / `.low` for a positive / negative priority) with the payload as its body, as a
//! JetStream publish (a request, whose reply `{"stream":"SPOOL_JOBS","seq":N}` carries the
//! job's id `N`). Queue names are letters, digits, `-` and `_`. A job with a tenant belongs on
//! its tenant's lane, `spool.jobs.<queue>.t.<token>` (`.high` / `.low` appended for those
//! bands), where the token is the tenant itself if it is letters, digits, `-` and `_` (at most
//! 64, not starting with `_x`), otherwise `_x` and the first 32 hex digits of its SHA-256
//! ([`tenant_token`]); published on the queue's own subject it runs all the same, outside
//! tenant limits and shares. Optional headers:
//!
//! | header | meaning |
//! |---|---|
//! | `Spool-Priority` | integer, default 0 |
//! | `Spool-Run-At` | do not run before, milliseconds since the Unix epoch |
//! | `Spool-Max-Attempts` | attempts allowed in all (default: the queue's setting) |
//! | `Spool-Tenant` | the tenant |
//! | `Spool-Key` | idempotency key (with Spool's client: held until the job finishes) |
//! | `Spool-Metadata` | JSON array of `[key, value]` string pairs |
//! | `Spool-Group` | the job's group: it never runs while another job of its queue and group runs |
//! | `Nats-Msg-Id` | the server drops a repeat within the duplicate window (2 min) |
//!
//! A message with a `Spool-Job: <id>` header is not a new job: it names an existing job to
//! claim (Spool publishes them for replays, children and wakes; one for a job that does not
//! exist is dropped).
//!
//! A job whose headers do not parse goes to the dead-letter queue with phase `decode` and the
//! header named. The event log's messages are JSON arrays of events, each an object
//! `{"at", "kind", "job_id", "queue", "tenant", "attempt", "phase", "message", "digest",
//! "worker", "duration_ms"}` (absent fields null), on `spool.events.<queue>` (`spool.events._`
//! for events about no queue); subscribe to `spool.events.>` to follow them. A dead letter is
//! the job's whole envelope (the JSON of `spool job --json`, timeline included) on
//! `spool.dlq.<queue>.<job id>`.
//!
//! The schedules bucket `spool-schedules` holds, under `s.<name>`, the JSON object `{"name",
//! "spec", "queue", "payload", "missed", "priority", "tenant", "group", "max_attempts",
//! "next_run_at", "last_run_at", "last_job"}`, where `spec` is `{"cron": "<expr>"}` or
//! `{"every-ms": <n>}`, `payload` an array of bytes, `missed` `skip` or `catch-up`, and times are
//! milliseconds since the Unix epoch; and under `leader` the lock `{"holder", "expires_at"}`. A
//! scheduled job's message carries the metadata `spool-schedule` and `spool-tick` (in
//! `Spool-Metadata`) and `Nats-Msg-Id: schedule:<name>:<tick>`.
//!
//! The worker bucket `spool-workers` holds, under `w.<base64url(worker id)>`, the JSON object
//! `{"id", "host", "pid", "version", "queues", "concurrency", "running", "started_at",
//! "last_heartbeat", "expires_at"}` of each worker that heartbeat within the bucket's max age;
//! the worker is live while `expires_at` (milliseconds since the Unix epoch) is in the future.

mod admin;
mod cancel;
mod children;
mod enqueue;
mod flow;
mod lease;
mod names;
mod read;
mod record;
mod schedule;
mod settle;
mod setup;
mod spawn;
mod steps;
mod store;
#[cfg(test)]
mod tests;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::names::{Band, Lane, Names, tenant_token};
pub use self::record::{
    ENQUEUED_AT, GROUP, KEY, MAX_ATTEMPTS, METADATA, PRIORITY, RUN_AT, TENANT, WAKE,
};
use self::store::Inner;
use super::{
    AttemptRecord, AttemptSave, Backend, CancelFilter, Claimed, DlqFilter, Enqueued, Event,
    EventFilter, JobDetail, JobFilter, JobId, JobSummary, Lease, LeaseLost, NewEvent, NewJob,
    Prune, QueueClaim, QueueCounts, QueueError, Settle, Timestamp, WorkerInfo,
};
use crate::schedule::{Schedule, ScheduleFire, ScheduleState};

/// Where JetStream keeps Spool's streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Storage {
    /// On disk (the default): survives a server restart.
    #[default]
    File,
    /// In memory: faster, lost when the server stops.
    Memory,
}

/// How the backend lays itself out on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The prefix of every subject, stream and bucket name (default `spool`): two prefixes are
    /// two independent Spool installations on one server. Letters, digits, `-` and `_`.
    pub prefix: String,
    /// Replicas of every stream and bucket (1 on a single server; 3 on a cluster).
    pub replicas: usize,
    /// File or memory storage.
    pub storage: Storage,
    /// The consumers' ack wait: how long the server waits for a worker that has gone silent
    /// before it redelivers the job's message. Spool's own lease (kept in the job's record and
    /// renewed with the message's ack-progress) is what fences writes; the ack wait is the
    /// server-side backstop, and should not be shorter than a third of the workers' lease.
    pub ack_wait: Duration,
    /// How long the jobs stream remembers a `Nats-Msg-Id` to drop a republished message.
    pub duplicate_window: Duration,
    /// The largest payload an enqueue takes, in bytes;
    /// [`DEFAULT_MAX_PAYLOAD`](crate::queue::check::DEFAULT_MAX_PAYLOAD) (16 MiB) by default.
    /// The server's own `max_payload` (1 MiB unless configured) may allow less: see
    /// [`Backend::max_payload`].
    pub max_payload: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            prefix: "spool".into(),
            replicas: 1,
            storage: Storage::File,
            ack_wait: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
            max_payload: crate::queue::check::DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// The NATS JetStream backend. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct NatsBackend {
    inner: Arc<Inner>,
    url: Arc<str>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("url", &self.url)
            .field("prefix", &self.inner.options.prefix)
            .finish_non_exhaustive()
    }
}

impl NatsBackend {
    /// Connect to the server at `url` (`nats://host:4222`, several comma-separated for a
    /// cluster) and make sure Spool's streams and buckets exist with `options`' settings:
    /// created on first use, checked when they exist (settings that disagree are an error
    /// that names them; nothing is overwritten). The connection reconnects by itself when the
    /// server goes away; calls made meanwhile fail with [`QueueError::Store`]. Nothing waits
    /// without end for an answer a restart can lose: requests, a claim's fetch and a scan
    /// each give up after five seconds of silence.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<NatsBackend, QueueError> {
        Self::open(url, options, false).await
    }

    /// As [`connect`](NatsBackend::connect), for a process that only reads: an installation
    /// with `options`' prefix must exist on the server already (its jobs stream is looked
    /// for first); when there is none, nothing is created and the error says so.
    pub async fn connect_existing(
        url: &str,
        options: NatsOptions,
    ) -> Result<NatsBackend, QueueError> {
        Self::open(url, options, true).await
    }

    async fn open(
        url: &str,
        options: NatsOptions,
        existing: bool,
    ) -> Result<NatsBackend, QueueError> {
        let names = Names::new(&options.prefix)?;
        let client = async_nats::ConnectOptions::new()
            .name("spool")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(setup::REQUEST_TIMEOUT))
            .connect(url)
            .await
            .map_err(|e| QueueError::Store(format!("cannot connect to NATS: {e}")))?;
        let js = async_nats::jetstream::new(client.clone());
        if existing && js.get_stream(names.jobs_stream()).await.is_err() {
            return Err(QueueError::Store(format!(
                "no Spool installation with prefix `{}` on this server (no stream {}); nothing was created",
                options.prefix,
                names.jobs_stream()
            )));
        }
        let streams = setup::streams(&js, &names, &options).await?;
        Ok(NatsBackend {
            inner: Arc::new(Inner::new(client, js, names, options, streams)),
            url: url.into(),
        })
    }

    /// The server's URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The names of the streams, buckets and subjects in use.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }
}

impl Backend for NatsBackend {
    /// The smaller of [`NatsOptions::max_payload`] and what the server's `max_payload` leaves
    /// room for: a job's record (its KV value) holds the payload in base64 beside up to
    /// 64 KiB of state, so a server at its default of 1 MiB takes payloads up to 720 KiB.
    fn max_payload(&self) -> usize {
        enqueue::max_payload(&self.inner).0
    }

    fn sink(&self) -> crate::events::EventSink {
        self.inner.sink()
    }

    fn set_sink(&self, sink: crate::events::EventSink) {
        self.inner.set_sink(sink);
    }

    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
        enqueue::enqueue(&self.inner, jobs).await
    }

    async fn claim(
        &self,
        worker: &str,
        queues: &[QueueClaim],
        lease: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
        lease::claim(&self.inner, worker, queues, lease).await
    }

    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) {
        lease::wait(&self.inner, queues, timeout).await;
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>, QueueError> {
        lease::renew(&self.inner, leases, lease).await
    }

    async fn settle(&self, settles: Vec<Settle>) -> Result<Vec<Result<(), LeaseLost>>, QueueError> {
        settle::settle(&self.inner, settles).await
    }

    async fn save(&self, save: AttemptSave) -> Result<Result<(), LeaseLost>, QueueError> {
        steps::save(&self.inner, save).await
    }

    async fn child_id(&self, lease: &Lease, index: u32) -> Result<JobId, QueueError> {
        // Nothing to reserve: the id is the parent's and the index, which the settle that
        // commits the child checks. An attempt that never commits leaves the index to the next.
        if !names::is_job_id(&lease.job_id) {
            return Err(QueueError::NotFound(lease.job_id.clone()));
        }
        let index = usize::try_from(index)
            .ok()
            .and_then(|i| i.checked_add(1))
            .ok_or_else(|| QueueError::BadRequest(format!("child index {index} is too large")))?;
        Ok(names::child_of(&lease.job_id, index))
    }

    async fn release(&self, leases: &[Lease]) -> Result<u64, QueueError> {
        lease::release(&self.inner, leases).await
    }

    async fn expire_leases(&self, default_max_attempts: u32) -> Result<Vec<JobId>, QueueError> {
        lease::expire(&self.inner, default_max_attempts).await
    }

    async fn cancel(&self, id: &JobId, reason: &str) -> Result<bool, QueueError> {
        cancel::cancel(&self.inner, id, reason).await
    }

    async fn keep_cancelled(
        &self,
        lease: &Lease,
        attempt: AttemptRecord,
    ) -> Result<bool, QueueError> {
        cancel::keep(&self.inner, lease, attempt).await
    }

    async fn cancel_matching(
        &self,
        filter: &CancelFilter,
        reason: &str,
    ) -> Result<Vec<JobId>, QueueError> {
        cancel::cancel_matching(&self.inner, filter, reason).await
    }

    async fn revoked(&self, leases: &[Lease], timeout: Duration) -> Result<Vec<JobId>, QueueError> {
        cancel::revoked(&self.inner, leases, timeout).await
    }

    async fn record(&self, event: NewEvent) -> Result<(), QueueError> {
        admin::record(&self.inner, event).await
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobDetail>, QueueError> {
        read::job(&self.inner, id).await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, QueueError> {
        read::jobs(&self.inner, filter).await
    }

    async fn queues(&self) -> Result<Vec<QueueCounts>, QueueError> {
        read::queues(&self.inner).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, QueueError> {
        read::events(&self.inner, filter).await
    }

    async fn dead(&self, filter: &DlqFilter) -> Result<Vec<JobSummary>, QueueError> {
        read::dead(&self.inner, filter).await
    }

    async fn replay(&self, filter: &DlqFilter) -> Result<u64, QueueError> {
        admin::replay(&self.inner, filter).await
    }

    async fn purge(&self, filter: &DlqFilter) -> Result<u64, QueueError> {
        admin::purge(&self.inner, filter).await
    }

    async fn prune(&self, prune: Prune) -> Result<u64, QueueError> {
        admin::prune(&self.inner, prune).await
    }

    async fn put_schedule(
        &self,
        schedule: Schedule,
        next_run_at: Timestamp,
    ) -> Result<bool, QueueError> {
        schedule
            .check()
            .map_err(|e| QueueError::BadRequest(e.to_string()))?;
        schedule::put(&self.inner, schedule, next_run_at).await
    }

    async fn remove_schedule(&self, name: &str) -> Result<bool, QueueError> {
        crate::schedule::check_name(name).map_err(|e| QueueError::BadRequest(e.to_string()))?;
        schedule::remove(&self.inner, name).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>, QueueError> {
        schedule::list(&self.inner).await
    }

    async fn take_leadership(
        &self,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        schedule::take_leadership(&self.inner, holder, ttl, now).await
    }

    async fn fire_schedule(&self, fire: ScheduleFire) -> Result<Option<JobId>, QueueError> {
        schedule::fire(&self.inner, fire).await
    }

    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        super::check_heartbeat(worker, ttl)?;
        workers::heartbeat(&self.inner, worker, ttl).await
    }

    async fn remove_worker(&self, id: &str) -> Result<bool, QueueError> {
        workers::remove(&self.inner, id).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        workers::live(&self.inner).await
    }
}
