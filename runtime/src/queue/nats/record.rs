//! What the backend stores: a job's record (its KV value), the envelope a producer publishes,
//! and events as they travel on their subjects.

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::queue::{
    AttemptRecord, ChildOutcome, Event, JobDetail, JobId, JobState, JobSummary, Lease, NewEvent,
    NewJob, OnChildFailure, Phase, QueueError, StepRecord, Timestamp,
};
use crate::trace::TraceParent;

/// Header: the job's priority (default 0).
pub const PRIORITY: &str = "Spool-Priority";
/// Header: do not run before this time, in milliseconds since the Unix epoch.
pub const RUN_AT: &str = "Spool-Run-At";
/// Header: attempts allowed in all.
pub const MAX_ATTEMPTS: &str = "Spool-Max-Attempts";
/// Header: the tenant.
pub const TENANT: &str = "Spool-Tenant";
/// Header: the idempotency key.
pub const KEY: &str = "Spool-Key";
/// Header: metadata, a JSON array of `[key, value]` pairs.
pub const METADATA: &str = "Spool-Metadata";
/// Header: the job's group (it never runs while another job of its queue and group runs).
pub const GROUP: &str = "Spool-Group";
/// Header: when the job was enqueued (set by Spool's own client; otherwise the message's
/// stream timestamp).
pub const ENQUEUED_AT: &str = "Spool-Enqueued-At";
/// Header: the W3C trace context the job was enqueued in (its standard header name, so a
/// producer's OpenTelemetry propagator sets it as it is).
pub const TRACEPARENT: &str = "traceparent";
/// Header: this message wakes an existing job (a replay) rather than enqueueing a new one.
pub const WAKE: &str = "Spool-Job";

/// A job's record: everything Spool knows about it, its timeline included, as one KV value.
/// Every change is a compare-and-set on the value's revision, so two writers cannot both win,
/// and the events a change makes are written by the same compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub queue: String,
    /// `scheduled` and `ready` are told apart by `run_at` when read, as in SQLite.
    pub state: JobState,
    pub priority: i32,
    pub run_at: Timestamp,
    pub enqueued_at: Timestamp,
    pub updated_at: Timestamp,
    pub attempts: u32,
    pub started: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<(String, String)>,
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub output: Option<Vec<u8>>,
    #[serde(default, with = "b64_opt", skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Vec<u8>>,
    /// The fencing token of the latest claim: every claim adds one, nothing lowers it.
    pub token: i64,
    /// The current lease, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Held>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_phase: Option<Phase>,
    /// Every finished attempt, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
    /// The job whose settle enqueued this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// What the parent does if this child dies (kept by the child: it is the child's end
    /// that tells the parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnChildFailure>,
    /// Completed steps, in the order they were first completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// One byte per child, in enqueue order (child `i` is `<id>-<i>`): how the job last heard
    /// the child end ([`Heard`]), 0 while it has not.
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<u8>,
    /// Children a settle committed that may not exist yet: created from the staging bucket by
    /// whoever holds the job's message next, before anything else (see the module docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spawn: Vec<Spawn>,
    /// The job's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The concurrency-slot keys (in the flow bucket) the current claim holds a slot in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<String>,
    /// The job's timeline, oldest first: each event written with the change it reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Entry>,
    /// How many entries were dropped from the front of the timeline (after its first) to keep
    /// the record small: the next entry's number is `dropped + timeline.len() + 1`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u32,
    /// The last progress an attempt reported (absent from records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::outcome::Progress>,
    /// The W3C trace context the job was enqueued in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

/// The most entries a timeline keeps: a job that checkpoints or delays without end keeps its
/// first entry and the newest ones.
pub const TIMELINE_MAX: usize = 256;

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One event in a job's timeline: what the job, queue and tenant (the record's own) leave to
/// say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at: Timestamp,
    pub kind: crate::queue::EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A completed step's stored result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    #[serde(with = "b64")]
    pub output: Vec<u8>,
    pub attempt: u32,
    pub at: Timestamp,
}

impl From<Step> for StepRecord {
    fn from(s: Step) -> StepRecord {
        StepRecord {
            name: s.name,
            output: s.output,
            attempt: s.attempt,
            at: s.at,
        }
    }
}

/// Children `from..=to` (indices counting from 1), committed by the settle of the attempt
/// holding `token` and staged under that token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    pub from: usize,
    pub to: usize,
    pub token: i64,
}

impl Spawn {
    /// Whether this spawn creates child `index` from the stage of `token`.
    pub fn covers(&self, index: usize, token: i64) -> bool {
        self.token == token && (self.from..=self.to).contains(&index)
    }
}

/// How a parent last heard a child end: one byte per child in [`Record::children`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Not finished, as far as the parent knows.
    Nothing = 0,
    Succeeded = 1,
    Dead = 2,
    Cancelled = 3,
}

impl Heard {
    /// What a child's record says.
    pub fn of(child: &Record) -> Heard {
        match child.state {
            JobState::Succeeded => Heard::Succeeded,
            JobState::Dead => Heard::Dead,
            JobState::Cancelled => Heard::Cancelled,
            _ => Heard::Nothing,
        }
    }

    /// The byte kept for a child (an unknown byte, from a newer version, reads as finished:
    /// it was written only for an ended child).
    pub fn from_byte(b: u8) -> Heard {
        match b {
            0 => Heard::Nothing,
            1 => Heard::Succeeded,
            2 => Heard::Dead,
            _ => Heard::Cancelled,
        }
    }

    /// The finished state heard, if any.
    pub fn state(self) -> Option<JobState> {
        match self {
            Heard::Nothing => None,
            Heard::Succeeded => Some(JobState::Succeeded),
            Heard::Dead => Some(JobState::Dead),
            Heard::Cancelled => Some(JobState::Cancelled),
        }
    }
}

/// A running job's lease and the message it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub worker: String,
    /// When the attempt was claimed.
    pub since: Timestamp,
    pub expires_at: Timestamp,
    /// The held message's ack subject: whoever settles the attempt acks, naks or terms the
    /// message through it, from any connection.
    pub reply: String,
}

impl Record {
    /// A new job's record, from what the producer asked for.
    pub fn new(job: &NewJob, enqueued_at: Timestamp) -> Record {
        Record {
            queue: job.queue.clone(),
            state: JobState::Ready,
            priority: job.priority,
            run_at: job.run_at.unwrap_or(enqueued_at),
            enqueued_at,
            updated_at: enqueued_at,
            attempts: 0,
            started: 0,
            max_attempts: job.max_attempts,
            tenant: job.tenant.clone(),
            key: job.key.clone(),
            metadata: job.metadata.clone(),
            payload: job.payload.clone(),
            output: None,
            checkpoint: None,
            token: 0,
            lease: None,
            last_error: None,
            last_phase: None,
            history: Vec::new(),
            parent: None,
            on_failure: None,
            steps: Vec::new(),
            children: Vec::new(),
            spawn: Vec::new(),
            group: job.group.clone(),
            slots: Vec::new(),
            timeline: Vec::new(),
            dropped: 0,
            progress: None,
            traceparent: job.traceparent,
        }
    }

    /// Whether some child has not been heard to end.
    pub fn has_unfinished_children(&self) -> bool {
        self.children.contains(&(Heard::Nothing as u8))
    }

    /// A child's outcome as its parent sees it.
    pub fn outcome(&self, id: &JobId) -> ChildOutcome {
        ChildOutcome {
            id: id.clone(),
            queue: self.queue.clone(),
            state: match self.state {
                JobState::Scheduled => JobState::Ready,
                other => other,
            },
            output: self.output.clone(),
            error: self.last_error.clone(),
            on_failure: self.on_failure.unwrap_or_default(),
        }
    }

    /// Whether it will not run again unless replayed.
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// The lease the record holds, if `token` is its current one and it is running.
    pub fn leased_with(&self, token: i64) -> Option<&Held> {
        (self.state == JobState::Running && self.token == token)
            .then_some(())
            .and(self.lease.as_ref())
    }

    /// The state as readers see it: a waiting job is scheduled until its `run_at` passes.
    pub fn visible_state(&self, now: Timestamp) -> JobState {
        match self.state {
            JobState::Ready | JobState::Scheduled if self.run_at > now => JobState::Scheduled,
            JobState::Ready | JobState::Scheduled => JobState::Ready,
            other => other,
        }
    }

    /// The listing view.
    pub fn summary(&self, id: &JobId, now: Timestamp) -> JobSummary {
        JobSummary {
            id: id.clone(),
            queue: self.queue.clone(),
            state: self.visible_state(now),
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            priority: self.priority,
            tenant: self.tenant.clone(),
            enqueued_at: self.enqueued_at,
            run_at: self.run_at,
            updated_at: self.updated_at,
            last_error: self.last_error.clone(),
            last_phase: self.last_phase,
            parent: self.parent.clone(),
            group: self.group.clone(),
            progress: self.progress.clone(),
        }
    }

    /// Everything, with the job's timeline and its children's outcomes.
    pub fn detail(
        self,
        id: &JobId,
        events: Vec<Event>,
        children: Vec<ChildOutcome>,
        now: Timestamp,
    ) -> JobDetail {
        let summary = self.summary(id, now);
        let lease = self.lease.map(|held| Lease {
            job_id: id.clone(),
            token: self.token,
            worker: held.worker,
            expires_at: held.expires_at,
        });
        JobDetail {
            summary,
            payload: self.payload,
            output: self.output,
            checkpoint: self.checkpoint,
            key: self.key,
            metadata: self.metadata,
            started: self.started,
            traceparent: self.traceparent,
            lease,
            attempts: self.history,
            steps: self.steps.into_iter().map(StepRecord::from).collect(),
            children,
            events,
        }
    }

    /// An event about this job.
    pub fn event(&self, id: &JobId, event: NewEvent) -> NewEvent {
        NewEvent {
            job_id: Some(id.clone()),
            queue: Some(self.queue.clone()),
            tenant: self.tenant.clone(),
            ..event
        }
    }

    /// Note an event about this job in its timeline (written with the change the caller is
    /// making), and return it for the event log.
    pub fn note(&mut self, id: &JobId, at: Timestamp, event: NewEvent) -> Wire {
        let event = self.event(id, event);
        self.timeline.push(Entry {
            at,
            kind: event.kind,
            attempt: event.attempt,
            phase: event.phase,
            message: event.message.clone(),
            digest: event.digest.clone(),
            worker: event.worker.clone(),
            duration_ms: event.duration_ms,
        });
        if self.timeline.len() > TIMELINE_MAX {
            // The first entry says how the job came to be: keep it, drop the next.
            self.timeline.remove(1);
            self.dropped = self.dropped.saturating_add(1);
        }
        Wire { at, event }
    }

    /// The job's timeline as events, numbered from 1 in the job's own order.
    pub fn events(&self, id: &JobId) -> Vec<Event> {
        self.timeline
            .iter()
            .enumerate()
            .map(|(i, e)| {
                // The first entry is never dropped; those after it moved up by `dropped`.
                let number = if i == 0 {
                    1
                } else {
                    i64::from(self.dropped) + i64::try_from(i).unwrap_or(i64::MAX) + 1
                };
                Event {
                    seq: number,
                    at: e.at,
                    kind: e.kind,
                    job_id: Some(id.clone()),
                    queue: Some(self.queue.clone()),
                    tenant: self.tenant.clone(),
                    attempt: e.attempt,
                    phase: e.phase,
                    message: e.message.clone(),
                    digest: e.digest.clone(),
                    worker: e.worker.clone(),
                    duration_ms: e.duration_ms,
                }
            })
            .collect()
    }

    /// Decode a KV value.
    pub fn decode(bytes: &[u8]) -> Result<Record, QueueError> {
        serde_json::from_slice(bytes)
            .map_err(|e| QueueError::Store(format!("a job record does not decode: {e}")))
    }

    /// Encode as a KV value.
    pub fn encode(&self) -> Vec<u8> {
        // A record is plain data: serializing it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The headers of a job message, from a job to enqueue. The payload is the message body.
pub fn headers(job: &NewJob, enqueued_at: Timestamp) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ENQUEUED_AT, enqueued_at.to_string().as_str());
    if job.priority != 0 {
        headers.insert(PRIORITY, job.priority.to_string().as_str());
    }
    if let Some(run_at) = job.run_at {
        headers.insert(RUN_AT, run_at.to_string().as_str());
    }
    if let Some(max) = job.max_attempts {
        headers.insert(MAX_ATTEMPTS, max.to_string().as_str());
    }
    if let Some(tenant) = &job.tenant {
        headers.insert(TENANT, tenant.as_str());
    }
    if let Some(key) = &job.key {
        headers.insert(KEY, key.as_str());
    }
    if !job.metadata.is_empty() {
        let json = serde_json::to_string(&job.metadata).unwrap_or_default();
        headers.insert(METADATA, json.as_str());
    }
    if let Some(group) = &job.group {
        headers.insert(GROUP, group.as_str());
    }
    if let Some(tp) = &job.traceparent {
        headers.insert(TRACEPARENT, tp.to_string().as_str());
    }
    headers
}

/// Read a job message published by any producer: the queue from its subject, the payload
/// from its body, the rest from its headers. A header that does not parse is an error naming
/// it (but for `traceparent`, which is dropped: see [`traceparent`]).
pub fn parse(
    queue: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    published: Timestamp,
) -> Result<(NewJob, Timestamp), String> {
    fn get<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
        headers?.get(name).map(|v| v.as_str())
    }
    fn number<T: std::str::FromStr>(
        headers: Option<&HeaderMap>,
        name: &str,
    ) -> Result<Option<T>, String> {
        get(headers, name)
            .map(|v| {
                v.trim()
                    .parse::<T>()
                    .map_err(|_| format!("bad {name} header `{v}`: not a number"))
            })
            .transpose()
    }
    let metadata = match get(headers, METADATA) {
        None => Vec::new(),
        Some(json) => serde_json::from_str::<Vec<(String, String)>>(json).map_err(|e| {
            format!("bad {METADATA} header: {e} (want a JSON array of [key, value] pairs)")
        })?,
    };
    let job = NewJob {
        queue: queue.to_owned(),
        payload: payload.to_vec(),
        run_at: number(headers, RUN_AT)?,
        priority: number(headers, PRIORITY)?.unwrap_or(0),
        max_attempts: number(headers, MAX_ATTEMPTS)?,
        tenant: get(headers, TENANT).map(str::to_owned),
        key: get(headers, KEY).map(str::to_owned),
        metadata,
        group: get(headers, GROUP).map(str::to_owned),
        traceparent: traceparent(get(headers, TRACEPARENT)),
    };
    let enqueued_at = number(headers, ENQUEUED_AT)?.unwrap_or(published);
    Ok((job, enqueued_at))
}

/// A job message's `traceparent` header. One that does not parse is dropped with a warning
/// rather than refusing the job: as W3C trace context says, a receiver that cannot parse it
/// starts a trace of its own, and a job must not die of its telemetry.
fn traceparent(header: Option<&str>) -> Option<TraceParent> {
    let header = header?;
    match header.trim().parse() {
        Ok(tp) => Some(tp),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a job message's traceparent header");
            None
        }
    }
}

/// An event as it travels in the event log: everything but the sequence number, which comes
/// from its place in the events stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wire {
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: NewEvent,
}

impl Wire {
    /// The event, numbered.
    pub fn into_event(self, seq: i64) -> Event {
        let e = self.event;
        Event {
            seq,
            at: self.at,
            kind: e.kind,
            job_id: e.job_id,
            queue: e.queue,
            tenant: e.tenant,
            attempt: e.attempt,
            phase: e.phase,
            message: e.message,
            digest: e.digest,
            worker: e.worker,
            duration_ms: e.duration_ms,
        }
    }
}

/// Milliseconds since the epoch of a NATS timestamp.
pub fn millis(at: async_nats::datetime::DateTime) -> Timestamp {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::b64::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(bytes)| bytes))
    }
}
