//! A job's history as written inside a transaction: its events and its attempt records.

use rusqlite::{Connection, params};

use super::Failure;
use super::columns::{int, job_id, to_json};
use crate::queue::{AttemptRecord, Event, EventKind, NewEvent, Timestamp};

const INSERT_EVENT: &str = "INSERT INTO events \
    (seq, at, kind, job_id, queue, tenant, attempt, phase, message, digest, worker, \
     duration_ms) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const COUNTER: &str = "SELECT value FROM counters WHERE name = ?1";

const STORE_COUNTER: &str = "UPDATE counters SET value = ?2 WHERE name = ?1";

const INSERT_ATTEMPT: &str = "INSERT INTO attempts \
    (job_id, token, attempt, worker, started_at, finished_at, outcome, phase, error, digest, logs, \
    http) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// The job an event is about.
pub(super) struct Subject<'a> {
    pub id: i64,
    pub queue: &'a str,
    pub tenant: Option<&'a str>,
}

/// What one write transaction shares: its clock, its id counters and the events it
/// recorded, to emit once it commits.
pub(super) struct Journal {
    now: Timestamp,
    job_ids: Counter,
    seqs: Counter,
    events: Vec<Event>,
}

impl Journal {
    pub fn new(now: Timestamp) -> Self {
        Journal {
            now,
            job_ids: Counter::new("job"),
            seqs: Counter::new("event"),
            events: Vec::new(),
        }
    }

    /// The transaction's time: every row it writes carries this one.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// A new job's id.
    pub fn next_job_id(&mut self, tx: &Connection) -> rusqlite::Result<i64> {
        self.job_ids.next(tx)
    }

    /// Store the counters; call it last, before the commit.
    pub fn finish(&self, tx: &Connection) -> rusqlite::Result<()> {
        self.job_ids.store(tx)?;
        self.seqs.store(tx)
    }

    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// Record an event of `kind` about `job`, with the fields `fill` sets. Its queue and
    /// tenant are the job's; they are not stored again with the event.
    pub fn job_event(
        &mut self,
        tx: &Connection,
        job: &Subject<'_>,
        kind: EventKind,
        fill: impl FnOnce(&mut Event),
    ) -> rusqlite::Result<()> {
        let mut event = Event {
            seq: 0,
            at: self.now,
            kind,
            job_id: Some(job_id(job.id)),
            queue: Some(job.queue.to_owned()),
            tenant: job.tenant.map(str::to_owned),
            attempt: None,
            phase: None,
            message: None,
            digest: None,
            worker: None,
            duration_ms: None,
        };
        fill(&mut event);
        event.seq = self.seqs.next(tx)?;
        insert_event(tx, &event, Some(job.id), false)?;
        self.events.push(event);
        Ok(())
    }

    /// Record an event exactly as given (`job` is the row id of its job, if any).
    pub fn given_event(
        &mut self,
        tx: &Connection,
        new: NewEvent,
        job: Option<i64>,
    ) -> rusqlite::Result<()> {
        let event = Event {
            seq: self.seqs.next(tx)?,
            at: self.now,
            kind: new.kind,
            job_id: new.job_id,
            queue: new.queue,
            tenant: new.tenant,
            attempt: new.attempt,
            phase: new.phase,
            message: new.message,
            digest: new.digest,
            worker: new.worker,
            duration_ms: new.duration_ms,
        };
        insert_event(tx, &event, job, true)?;
        self.events.push(event);
        Ok(())
    }
}

/// A row of `counters`: read when first used, stored by [`Journal::finish`].
struct Counter {
    name: &'static str,
    /// The last value handed out, once read.
    last: Option<i64>,
}

impl Counter {
    fn new(name: &'static str) -> Self {
        Counter { name, last: None }
    }

    fn next(&mut self, tx: &Connection) -> rusqlite::Result<i64> {
        let last = match self.last {
            Some(last) => last,
            None => tx
                .prepare_cached(COUNTER)?
                .query_row(params![self.name], |row| row.get(0))?,
        };
        let next = last.saturating_add(1);
        self.last = Some(next);
        Ok(next)
    }

    fn store(&self, tx: &Connection) -> rusqlite::Result<()> {
        if let Some(last) = self.last {
            tx.prepare_cached(STORE_COUNTER)?
                .execute(params![self.name, last])?;
        }
        Ok(())
    }
}

fn insert_event(
    tx: &Connection,
    event: &Event,
    job: Option<i64>,
    with_subject: bool,
) -> rusqlite::Result<()> {
    let (queue, tenant) = if with_subject {
        (event.queue.as_deref(), event.tenant.as_deref())
    } else {
        (None, None)
    };
    tx.prepare_cached(INSERT_EVENT)?.execute(params![
        event.seq,
        event.at,
        <&'static str>::from(event.kind),
        job,
        queue,
        tenant,
        event.attempt,
        event.phase.map(<&'static str>::from),
        event.message,
        event.digest,
        event.worker,
        event.duration_ms.map(int),
    ])?;
    Ok(())
}

/// Add an attempt to job `job`'s history; `token` is the lease it ran under.
pub(super) fn insert_attempt(
    tx: &Connection,
    job: i64,
    token: i64,
    record: &AttemptRecord,
) -> Result<(), Failure> {
    tx.prepare_cached(INSERT_ATTEMPT)?.execute(params![
        job,
        token,
        record.attempt,
        record.worker,
        record.started_at,
        record.finished_at,
        record.outcome,
        record.phase.map(<&'static str>::from),
        record.error,
        record.digest,
        to_json(&record.logs)?,
        if record.http.is_none() {
            None
        } else {
            serde_json::to_string(&record.http).ok()
        },
    ])?;
    Ok(())
}
