//! The backend's shared state and the few primitives every operation is made of: read a job's
//! record, compare-and-set it, publish events, answer a held message, scan a stream.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream::consumer::{DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt as _;

use super::NatsOptions;
use super::names::{Lane, Names};
use super::record::{Record, Wire};
use super::setup::{self, REQUEST_TIMEOUT, Streams, store};
use crate::events::EventSink;
use crate::queue::{JobId, NewEvent, QueueError};

/// How often a compare-and-set is retried against concurrent writers before giving up.
const CAS_ROUNDS: usize = 32;

/// Write `body` to `key` of the KV bucket `bucket` if the key's revision is still `revision`
/// (0: never written): JetStream's compare-and-set on the subject's last sequence. The new
/// revision, or `None` when another writer got there first; `what` names the write in errors.
pub async fn put_at_revision(
    js: &jetstream::Context,
    bucket: &kv::Store,
    key: &str,
    body: Vec<u8>,
    revision: u64,
    what: &str,
) -> Result<Option<u64>, QueueError> {
    let publish = PublishMessage::build()
        .payload(Bytes::from(body))
        .expected_last_subject_sequence(revision);
    let ack = js
        .send_publish(format!("$KV.{}.{key}", bucket.name), publish)
        .await
        .map_err(|e| store(what, e))?
        .await;
    match ack {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(e) => Err(store(what, e)),
    }
}

/// The value of `key` in the KV bucket `bucket` and its revision: no value when the key was
/// deleted (at that revision) or never written (revision 0); `what` names the read in errors.
pub async fn entry_at(
    bucket: &kv::Store,
    key: &str,
    what: &str,
) -> Result<(Option<Bytes>, u64), QueueError> {
    let entry = bucket.entry(key).await.map_err(|e| store(what, e))?;
    Ok(match entry {
        Some(e) if e.operation == kv::Operation::Put => (Some(e.value), e.revision),
        Some(e) => (None, e.revision),
        None => (None, 0),
    })
}

/// Event-log messages sent and not yet confirmed, with the events each holds.
type PendingEvents = (Vec<Wire>, async_nats::jetstream::context::PublishAckFuture);

/// Wait for the server to store event-log messages, and publish their events through `sink`.
async fn confirm_events(sink: &EventSink, pending: Vec<PendingEvents>) -> Result<(), QueueError> {
    for (chunk, ack) in pending {
        let ack = ack.await.map_err(|e| store("publishing events", e))?;
        for (i, wire) in chunk.into_iter().enumerate() {
            sink.emit(&wire.into_event(log_seq(ack.sequence, i)));
        }
    }
    Ok(())
}

/// How many ranges of the jobs stream [`Inner::queued`] reads at once.
const WALKERS: usize = 16;

/// The most events one event-log message holds.
pub const LOG_BATCH: usize = 1024;

/// The sequence number of the `index`-th event of the event-log message at stream sequence
/// `seq`: the message's sequence in the high bits, the index in the low [`LOG_INDEX_BITS`].
pub fn log_seq(seq: u64, index: usize) -> i64 {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX >> LOG_INDEX_BITS);
    (seq << LOG_INDEX_BITS) | i64::try_from(index).unwrap_or(0)
}

/// Bits of an event's sequence number that count events within one event-log message.
pub const LOG_INDEX_BITS: u32 = 16;

pub struct Inner {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
    pub options: NatsOptions,
    pub s: Streams,
    consumers: tokio::sync::Mutex<HashMap<(String, Lane), PullConsumer>>,
    /// Flow control's caches (tenant lanes seen per queue).
    pub flow: super::flow::FlowCache,
    /// Records of the jobs this process holds leases on, with their revision: a settle or
    /// renew from this process writes without reading first, and reads only when the
    /// revision moved (a cancel, an expiry).
    held: Mutex<HashMap<JobId, (Record, u64)>>,
    /// The leases this connection holds, as published in its lease table.
    table: Mutex<HashMap<JobId, TableEntry>>,
    /// The subject of this connection's lease table.
    table_subject: String,
    /// Serializes table publishes, so the newest snapshot is the last one stored.
    table_publish: tokio::sync::Mutex<()>,
    /// When this connection's lease table was last published.
    table_published: Mutex<Option<std::time::Instant>>,
    /// Cancel notices heard by this connection.
    pub notices: super::cancel::Notices,
    /// Where stored events go.
    sink: std::sync::RwLock<EventSink>,
}

/// One lease in a lease table: what the sweeper needs to find a lapsed lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableEntry {
    /// The job.
    pub job: JobId,
    /// The claim's fencing token.
    pub token: i64,
    /// When the lease lapses unless renewed.
    pub expires_at: crate::queue::Timestamp,
}

/// What a message answer tells the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Done: the work queue drops the message.
    Ack,
    /// Deliver again after this long (zero: at once).
    Nak(std::time::Duration),
    /// Never deliver again.
    Term,
    /// Still working: restart the ack wait.
    Progress,
}

/// One message of a scan.
pub struct Scanned {
    pub seq: u64,
    pub subject: String,
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: Bytes,
    /// When the server stored it.
    pub published: crate::queue::Timestamp,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    pub fn new(
        client: async_nats::Client,
        js: jetstream::Context,
        names: Names,
        options: NatsOptions,
        s: Streams,
    ) -> Inner {
        Inner {
            client,
            js,
            options,
            s,
            consumers: tokio::sync::Mutex::new(HashMap::new()),
            flow: super::flow::FlowCache::default(),
            held: Mutex::new(HashMap::new()),
            table: Mutex::new(HashMap::new()),
            table_subject: names.lease_table(&format!("{:016x}", fastrand::u64(..))),
            table_publish: tokio::sync::Mutex::new(()),
            table_published: Mutex::new(None),
            notices: super::cancel::Notices::default(),
            sink: std::sync::RwLock::default(),
            names,
        }
    }

    /// The sink stored events are published through.
    pub fn sink(&self) -> EventSink {
        self.sink
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Publish stored events through `sink` from now on.
    pub fn set_sink(&self, sink: EventSink) {
        *self
            .sink
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sink;
    }

    /// The consumer of a queue's lane, created on first use.
    pub async fn consumer(&self, queue: &str, lane: &Lane) -> Result<PullConsumer, QueueError> {
        let key = (queue.to_owned(), lane.clone());
        if let Some(c) = self.consumers.lock().await.get(&key) {
            return Ok(c.clone());
        }
        // Created without holding the map, so lanes are set up side by side.
        let c = setup::consumer(&self.s.jobs, &self.names, &self.options, queue, lane).await?;
        self.consumers.lock().await.insert(key, c.clone());
        Ok(c)
    }

    /// Forget a lane's consumer (the server deleted it for being idle): the next use creates
    /// it again.
    pub async fn forget_consumer(&self, queue: &str, lane: &Lane) {
        self.consumers
            .lock()
            .await
            .remove(&(queue.to_owned(), lane.clone()));
    }

    /// A job's record and its revision.
    pub async fn get(&self, id: &JobId) -> Result<Option<(Record, u64)>, QueueError> {
        if !super::names::is_job_id(id) {
            return Ok(None);
        }
        match entry_at(&self.s.records, &id.0, "reading a job record").await? {
            (Some(value), revision) => Ok(Some((Record::decode(&value)?, revision))),
            (None, _) => Ok(None),
        }
    }

    /// The record this process holds for a lease, if it still has it cached, taken out of the
    /// cache: whoever writes it next puts the new revision back with [`Inner::hold`] if the
    /// lease goes on.
    pub fn held(&self, id: &JobId, token: i64) -> Option<(Record, u64)> {
        let mut held = lock(&self.held);
        match held.get(id) {
            Some((r, _)) if r.token == token => held.remove(id),
            _ => None,
        }
    }

    /// Remember (or forget, with `None`) the record of a lease this process holds.
    pub fn hold(&self, id: &JobId, record: Option<(Record, u64)>) {
        let mut held = lock(&self.held);
        match record {
            Some(r) => {
                held.insert(id.clone(), r);
            }
            None => {
                held.remove(id);
            }
        }
    }

    /// Note leases this connection now holds (claimed or renewed) in its lease table.
    pub fn table_hold<'a>(&self, leases: impl IntoIterator<Item = &'a crate::queue::Lease>) {
        let mut table = lock(&self.table);
        for l in leases {
            table.insert(
                l.job_id.clone(),
                TableEntry {
                    job: l.job_id.clone(),
                    token: l.token,
                    expires_at: l.expires_at,
                },
            );
        }
    }

    /// Drop a lease from this connection's lease table (settled, released, expired,
    /// cancelled). Only the entry of that claim goes: a later claim's entry stays.
    pub fn table_drop(&self, id: &JobId, token: i64) {
        let mut table = lock(&self.table);
        if table.get(id).is_some_and(|e| e.token == token) {
            table.remove(id);
        }
    }

    /// The leases this connection holds, as its lease table has them now.
    pub fn table(&self) -> Vec<TableEntry> {
        lock(&self.table).values().cloned().collect()
    }

    /// Whether this subject is this connection's own lease table.
    pub fn is_own_table(&self, subject: &str) -> bool {
        subject == self.table_subject
    }

    /// Publish this connection's lease table unless it was published less than `every` ago.
    /// Claims publish this way: a table only has to name a lease before it could lapse, and
    /// a lease no table names is still found (see the module docs), so a busy connection
    /// publishes a few tables a second, not one per claim round.
    pub async fn publish_table_within(&self, every: std::time::Duration) -> Result<(), QueueError> {
        let due = lock(&self.table_published).is_none_or(|at| at.elapsed() >= every);
        if due {
            self.publish_table().await?;
        }
        Ok(())
    }

    /// Publish this connection's lease table: one message replacing the previous one (the
    /// stream keeps one per subject). Snapshots are published in the order they are taken.
    pub async fn publish_table(&self) -> Result<(), QueueError> {
        let ack = {
            let _order = self.table_publish.lock().await;
            *lock(&self.table_published) = Some(std::time::Instant::now());
            let entries = self.table();
            let body = serde_json::to_vec(&entries).unwrap_or_default();
            self.js
                .publish(self.table_subject.clone(), body.into())
                .await
                .map_err(|e| store("publishing the lease table", e))?
        };
        ack.await
            .map_err(|e| store("publishing the lease table", e))
            .map(drop)
    }

    /// Write `record` if the stored revision is still `revision` (0: if there is none).
    /// `Ok(None)` when another writer got there first.
    pub async fn cas(
        &self,
        id: &JobId,
        record: &Record,
        revision: u64,
    ) -> Result<Option<u64>, QueueError> {
        put_at_revision(
            &self.js,
            &self.s.records,
            &id.0,
            record.encode(),
            revision,
            "writing a job record",
        )
        .await
    }

    /// Read-modify-write a job's record: `change` edits a copy and says whether to write it
    /// (`None`: leave the record as it is). Retried from a fresh read when another writer
    /// got there first. `Ok(None)` when there is no record or `change` declined.
    pub async fn update<T>(
        &self,
        id: &JobId,
        known: Option<(Record, u64)>,
        mut change: impl FnMut(&mut Record) -> Option<T>,
    ) -> Result<Option<(T, Record, u64)>, QueueError> {
        let mut current = known;
        for round in 0..CAS_ROUNDS {
            let (record, revision) = match current.take() {
                Some(known) => known,
                None => match self.get(id).await? {
                    Some(found) => found,
                    None => return Ok(None),
                },
            };
            // Changed in place: a lost round reads the record afresh anyway.
            let mut next = record;
            let Some(out) = change(&mut next) else {
                return Ok(None);
            };
            if let Some(revision) = self.cas(id, &next, revision).await? {
                return Ok(Some((out, next, revision)));
            }
            // Lost to another writer: a random pause of up to 32 ms (growing with the rounds
            // lost) keeps a crowd of writers, such as siblings telling their parent, from
            // colliding round after round.
            let most = 1u64 << round.min(5);
            tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(0..=most))).await;
        }
        Err(QueueError::Store(format!(
            "job {id}: record kept changing under {CAS_ROUNDS} attempts to write it"
        )))
    }

    /// Note an event about job `id` in its timeline, now. Returns it for the event log, or
    /// `None` when there is no such job.
    pub async fn append(&self, id: &JobId, event: NewEvent) -> Result<Option<Wire>, QueueError> {
        let at = crate::queue::now();
        // A job no worker has claimed yet is its message: its record starts here.
        let known = match self.get(id).await? {
            Some(found) => found,
            None => match super::read::unclaimed(self, id).await? {
                Some(r) => (r, 0),
                None => return Ok(None),
            },
        };
        Ok(self
            .update(id, Some(known), |r| Some(r.note(id, at, event.clone())))
            .await?
            .map(|(wire, _, _)| wire))
    }

    /// Append events to the event log: one message per queue (and per [`LOG_BATCH`] events)
    /// holding a JSON array, in order, pipelined; each event is published through the
    /// sink once stored. The events about a job are already in its record's timeline: this is the
    /// log that `spool events` reads and follows.
    pub async fn publish_events(&self, events: Vec<Wire>) -> Result<(), QueueError> {
        let pending = self.send_events(events).await?;
        confirm_events(&self.sink(), pending).await
    }

    /// [`Inner::publish_events`] without waiting for the server to store them: the messages
    /// are sent in order before this returns, and a task of their own waits for the server's
    /// answers (and emits the events). For a claim, whose jobs should start without waiting
    /// for their log entries: the timeline in each record already holds them.
    pub async fn publish_events_unconfirmed(&self, events: Vec<Wire>) -> Result<(), QueueError> {
        let pending = self.send_events(events).await?;
        if !pending.is_empty() {
            let sink = self.sink();
            tokio::spawn(async move {
                if let Err(e) = confirm_events(&sink, pending).await {
                    tracing::warn!(error = %e, "the event log did not store a batch of events");
                }
            });
        }
        Ok(())
    }

    /// Send events to the event log, one message per queue and [`LOG_BATCH`] events.
    async fn send_events(&self, events: Vec<Wire>) -> Result<Vec<PendingEvents>, QueueError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_subject: Vec<(String, Vec<Wire>)> = Vec::new();
        for wire in events {
            let subject = self.names.event_subject(wire.event.queue.as_deref());
            match by_subject.iter_mut().find(|(s, _)| *s == subject) {
                Some((_, batch)) => batch.push(wire),
                None => by_subject.push((subject, vec![wire])),
            }
        }
        let mut pending = Vec::with_capacity(by_subject.len());
        for (subject, batch) in by_subject {
            for chunk in batch.chunks(LOG_BATCH) {
                let body = serde_json::to_vec(chunk).unwrap_or_default();
                let ack = self
                    .js
                    .publish(subject.clone(), body.into())
                    .await
                    .map_err(|e| store("publishing events", e))?;
                pending.push((chunk.to_vec(), ack));
            }
        }
        Ok(pending)
    }

    /// Answer a held message through its ack subject. A nak waits for the server to confirm,
    /// so that the next fetch can deliver the message again; an ack, a term and a progress
    /// are sent without waiting (the record, written first, already says the job is finished
    /// or running, so nothing depends on when the server applies them). A message the server
    /// no longer holds (already answered, or its stream message gone) confirms nothing: that
    /// is not an error.
    pub async fn answer(&self, reply: &str, answer: Answer) -> Result<(), QueueError> {
        let body: Bytes = match answer {
            Answer::Ack => "+ACK".into(),
            Answer::Term => "+TERM".into(),
            Answer::Progress => "+WPI".into(),
            Answer::Nak(d) if d.is_zero() => "-NAK".into(),
            Answer::Nak(d) => format!("-NAK {{\"delay\": {}}}", d.as_nanos()).into(),
        };
        if matches!(answer, Answer::Ack | Answer::Term | Answer::Progress) {
            return self
                .client
                .publish(reply.to_owned(), body)
                .await
                .map_err(|e| store("answering a message", e));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(reply.to_owned(), body))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) => Err(store("answering a message", e)),
            Err(_) => Err(store("answering a message", "timed out")),
        }
    }

    /// Every message of `stream` matching `filter` from sequence `start` on (all when `None`),
    /// at most `limit`, in stream order.
    pub async fn scan(
        &self,
        stream: &stream::Stream,
        filter: String,
        start: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<Scanned>, QueueError> {
        let deliver_policy = match start {
            Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            None => DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy,
                ..pull::OrderedConfig::default()
            })
            .await
            .map_err(|e| store("starting a scan", e))?;
        let expected = consumer.cached_info().num_pending;
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if expected == 0 || limit == 0 {
            return Ok(out);
        }
        // Starting the consumer's message stream subscribes through the client, which can
        // wait without end while the connection is down: bound it like a request.
        let mut messages = tokio::time::timeout(REQUEST_TIMEOUT, consumer.messages())
            .await
            .map_err(|_| store("starting a scan", "timed out"))?
            .map_err(|e| store("starting a scan", e))?;
        loop {
            let next = tokio::time::timeout(REQUEST_TIMEOUT, messages.next())
                .await
                .map_err(|_| store("scanning", "timed out"))?;
            let Some(message) = next else { break };
            let message = message.map_err(|e| store("scanning", e))?;
            let info = message.info().map_err(|e| store("scanning", e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let published = super::record::millis(info.published);
            out.push(Scanned {
                seq,
                subject: message.subject.to_string(),
                headers: message.headers.clone(),
                payload: message.payload.clone(),
                published,
            });
            if pending == 0 || out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every message on the jobs stream (the work queue keeps only those of unfinished jobs),
    /// in stream order. A work-queue stream admits no second consumer over its subjects, so
    /// this walks it with direct gets, [`WALKERS`] ranges at a time.
    pub async fn queued(&self) -> Result<Vec<Scanned>, QueueError> {
        let info = self
            .s
            .jobs
            .get_info()
            .await
            .map_err(|e| store("reading the jobs stream's state", e))?;
        if info.state.messages == 0 {
            return Ok(Vec::new());
        }
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let width = (last - first + 1).div_ceil(WALKERS as u64).max(1);
        let ranges = (0..WALKERS as u64)
            .map(|k| (first + k * width, (first + (k + 1) * width).min(last + 1)))
            .filter(|(from, to)| from < to);
        let walks = ranges.map(|(from, to)| async move {
            let mut out = Vec::new();
            let mut seq = from;
            while seq < to {
                let found = self
                    .s
                    .jobs
                    .direct_get_next_for_subject(self.names.jobs_all(), Some(seq))
                    .await;
                let m = match found {
                    Ok(m) => m,
                    Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                    Err(e) => return Err(store("reading queued jobs", e)),
                };
                if m.sequence >= to {
                    break;
                }
                seq = m.sequence + 1;
                out.push(Scanned {
                    seq: m.sequence,
                    subject: m.subject.to_string(),
                    headers: Some(m.headers),
                    payload: m.payload,
                    published: super::record::millis(m.time),
                });
            }
            Ok(out)
        });
        let mut out = Vec::new();
        for walk in futures::future::join_all(walks).await {
            out.append(&mut walk?);
        }
        Ok(out)
    }

    /// Every job record, decoded, with its id.
    pub async fn records(&self) -> Result<Vec<(JobId, Record)>, QueueError> {
        let prefix = format!("$KV.{}.", self.s.records.name);
        let scanned = self
            .scan(&self.s.records_stream, format!("{prefix}>"), None, None)
            .await?;
        let mut out = Vec::with_capacity(scanned.len());
        for m in scanned {
            // Purged records leave no message; a delete marker has no body.
            if m.payload.is_empty() {
                continue;
            }
            let id = JobId(m.subject.trim_start_matches(&prefix).to_owned());
            out.push((id, Record::decode(&m.payload)?));
        }
        Ok(out)
    }

    /// Remove every message of `stream` on `subject` (wildcards allowed).
    pub async fn purge(&self, stream: &stream::Stream, subject: String) -> Result<u64, QueueError> {
        stream
            .purge()
            .filter(subject)
            .await
            .map(|r| r.purged)
            .map_err(|e| store("purging", e))
    }

    /// Remove the messages of `stream` on `subject` up to and including sequence `seq`:
    /// a later message on the subject stays.
    pub async fn purge_through(
        &self,
        stream: &stream::Stream,
        subject: String,
        seq: u64,
    ) -> Result<u64, QueueError> {
        stream
            .purge()
            .filter(subject)
            .sequence(seq + 1)
            .await
            .map(|r| r.purged)
            .map_err(|e| store("purging", e))
    }
}
