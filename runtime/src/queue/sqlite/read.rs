//! Reads: one job with its history, listings, counts and the event log.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::Failure;
use super::admin::{dead_matching, dlq_params};
use super::columns::{count, int, job_id, json, name, opt_name, opt_u64, row_id};
use crate::queue::{
    AttemptRecord, DlqFilter, Event, EventFilter, JobDetail, JobFilter, JobId, JobState,
    JobSummary, Lease, QueueCounts, Timestamp,
};

/// The columns [`summary`] reads, first in every job query.
macro_rules! summary_columns {
    () => {
        "id, queue, state, run_at, attempts, max_attempts, priority, tenant, enqueued_at, \
         updated_at, last_error, last_phase, parent_id, group_key, progress"
    };
}

const JOB: &str = concat!(
    "SELECT ",
    summary_columns!(),
    ", payload, output, checkpoint, key, metadata, started, token, lease_worker, \
     lease_expires_at, traceparent FROM jobs WHERE id = ?1"
);

const ATTEMPTS: &str = "SELECT attempt, worker, started_at, finished_at, outcome, phase, \
        error, digest, logs, http \
    FROM attempts WHERE job_id = ?1 ORDER BY token";

/// The state a reader reports: 'scheduled' and 'ready' are told apart by the clock (`?4`).
const JOBS: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM jobs \
    WHERE (?1 IS NULL OR queue = ?1) \
      AND (?5 IS NULL OR parent_id = ?5) \
      AND (?6 IS NULL OR tenant = ?6) \
      AND (?7 IS NULL OR enqueued_at >= ?7) \
      AND (?8 IS NULL OR id < ?8) \
      AND (?2 IS NULL OR ?2 = CASE \
            WHEN state IN ('ready', 'scheduled') \
            THEN CASE WHEN run_at > ?4 THEN 'scheduled' ELSE 'ready' END \
            ELSE state END) \
    ORDER BY id DESC LIMIT ?3"
);

pub(super) const DEAD: &str = concat!(
    "SELECT ",
    summary_columns!(),
    " FROM jobs WHERE ",
    dead_matching!(),
    " ORDER BY updated_at DESC, id DESC LIMIT ?6"
);

const QUEUES: &str = "SELECT queue, \
        SUM(state IN ('ready', 'scheduled') AND run_at > ?1), \
        SUM(state IN ('ready', 'scheduled') AND run_at <= ?1), \
        SUM(state = 'running'), SUM(state = 'succeeded'), SUM(state = 'dead'), \
        SUM(state = 'cancelled'), SUM(state = 'waiting') \
    FROM jobs GROUP BY queue ORDER BY queue";

/// Events with the queue and tenant of their job when they do not carry their own.
macro_rules! event_select {
    () => {
        "SELECT e.seq, e.at, e.kind, e.job_id, COALESCE(e.queue, j.queue), \
            COALESCE(e.tenant, j.tenant), e.attempt, e.phase, e.message, e.digest, e.worker, \
            e.duration_ms \
         FROM events e LEFT JOIN jobs j ON j.id = e.job_id "
    };
}

/// The log's events after `?1`, oldest first, optionally of one queue (`?3`) and since a
/// time (`?4`).
macro_rules! events_matching {
    () => {
        "WHERE e.seq > ?1 \
           AND (?3 IS NULL OR COALESCE(e.queue, j.queue) = ?3) \
           AND (?4 IS NULL OR e.at >= ?4) "
    };
}

const EVENTS: &str = concat!(
    event_select!(),
    events_matching!(),
    "ORDER BY e.seq LIMIT ?2"
);

/// As [`EVENTS`], the newest first.
const NEWEST_EVENTS: &str = concat!(
    event_select!(),
    events_matching!(),
    "ORDER BY e.seq DESC LIMIT ?2"
);

pub(super) const JOB_EVENTS: &str = concat!(
    event_select!(),
    "WHERE e.job_id = ?3 AND e.seq > ?1 ORDER BY e.seq LIMIT ?2"
);

/// Listings return at most this many jobs unless the filter says otherwise.
const DEFAULT_JOBS: usize = 100;
/// [`Backend::events`](crate::queue::Backend::events) returns at most this many by default.
const DEFAULT_EVENTS: usize = 1000;

pub(super) fn job(
    tx: &Connection,
    now: Timestamp,
    id: &JobId,
) -> Result<Option<JobDetail>, Failure> {
    let Some(row) = row_id(id) else {
        return Ok(None);
    };
    let found = tx
        .prepare_cached(JOB)?
        .query_row(params![row], |r| {
            let summary = summary(r, now)?;
            let lease = match (summary.state, r.get::<_, Option<String>>(22)?) {
                (JobState::Running, Some(worker)) => Some(Lease {
                    job_id: summary.id.clone(),
                    token: r.get(21)?,
                    worker,
                    expires_at: r.get::<_, Option<i64>>(23)?.unwrap_or_default(),
                }),
                _ => None,
            };
            Ok(JobDetail {
                payload: r.get(15)?,
                output: r.get(16)?,
                checkpoint: r.get(17)?,
                key: r.get(18)?,
                metadata: json(r, 19)?,
                started: r.get(20)?,
                traceparent: opt_name(r, 24)?,
                lease,
                summary,
                attempts: Vec::new(),
                steps: Vec::new(),
                children: Vec::new(),
                events: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut detail) = found else {
        return Ok(None);
    };
    detail.attempts = tx
        .prepare_cached(ATTEMPTS)?
        .query_map(params![row], attempt)?
        .collect::<rusqlite::Result<_>>()?;
    detail.steps = super::flow::steps(tx, row)?;
    detail.children = super::flow::children(tx, row)?;
    detail.events = tx
        .prepare_cached(JOB_EVENTS)?
        .query_map(params![0, i64::MAX, row], event)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(detail))
}

pub(super) fn jobs(
    tx: &Connection,
    now: Timestamp,
    filter: &JobFilter,
) -> Result<Vec<JobSummary>, Failure> {
    let state = filter.state.map(<&str>::from);
    let limit = int(filter.limit.unwrap_or(DEFAULT_JOBS));
    let row = |id: &Option<JobId>| match id {
        Some(id) => row_id(id).map(Some),
        None => Some(None),
    };
    // An id that is not one of this backend's matches nothing.
    let (Some(parent), Some(after)) = (row(&filter.parent), row(&filter.after)) else {
        return Ok(Vec::new());
    };
    let jobs = tx
        .prepare_cached(JOBS)?
        .query_map(
            params![
                filter.queue,
                state,
                limit,
                now,
                parent,
                filter.tenant,
                filter.since,
                after
            ],
            |r| summary(r, now),
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(jobs)
}

pub(super) fn dead(
    tx: &Connection,
    now: Timestamp,
    filter: &DlqFilter,
) -> Result<Vec<JobSummary>, Failure> {
    let Some([id, queue, phase, since, until]) = dlq_params(filter) else {
        return Ok(Vec::new());
    };
    let limit = Value::Integer(int(filter.limit.unwrap_or(DEFAULT_JOBS)));
    let jobs = tx
        .prepare_cached(DEAD)?
        .query_map(
            params_from_iter([id, queue, phase, since, until, limit]),
            |r| summary(r, now),
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(jobs)
}

pub(super) fn queues(tx: &Connection, now: Timestamp) -> Result<Vec<QueueCounts>, Failure> {
    let queues = tx
        .prepare_cached(QUEUES)?
        .query_map(params![now], |r| {
            Ok(QueueCounts {
                queue: r.get(0)?,
                scheduled: count(r.get(1)?),
                ready: count(r.get(2)?),
                running: count(r.get(3)?),
                succeeded: count(r.get(4)?),
                dead: count(r.get(5)?),
                cancelled: count(r.get(6)?),
                waiting: count(r.get(7)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(queues)
}

pub(super) fn events(tx: &Connection, filter: &EventFilter) -> Result<Vec<Event>, Failure> {
    let after = filter.after.unwrap_or(0);
    if let Some(id) = &filter.job {
        // A job's timeline is short: read it whole and filter it.
        let Some(row) = row_id(id) else {
            return Ok(Vec::new());
        };
        let timeline = tx
            .prepare_cached(JOB_EVENTS)?
            .query_map(params![after, i64::MAX, row], event)?
            .collect::<rusqlite::Result<_>>()?;
        return Ok(filter.select(timeline, DEFAULT_EVENTS));
    }
    let limit = int(filter.limit.unwrap_or(DEFAULT_EVENTS));
    let query = if filter.newest { NEWEST_EVENTS } else { EVENTS };
    let mut events: Vec<Event> = tx
        .prepare_cached(query)?
        .query_map(params![after, limit, filter.queue, filter.since], event)?
        .collect::<rusqlite::Result<_>>()?;
    if filter.newest {
        events.reverse();
    }
    Ok(events)
}

/// A job's summary from the [`summary_columns`] at the start of `r`.
fn summary(r: &Row<'_>, now: Timestamp) -> rusqlite::Result<JobSummary> {
    let run_at = r.get(3)?;
    let state = match name(r, 2)? {
        JobState::Ready | JobState::Scheduled if run_at > now => JobState::Scheduled,
        JobState::Ready | JobState::Scheduled => JobState::Ready,
        state => state,
    };
    Ok(JobSummary {
        id: job_id(r.get(0)?),
        queue: r.get(1)?,
        state,
        run_at,
        attempts: r.get(4)?,
        max_attempts: r.get(5)?,
        priority: r.get(6)?,
        tenant: r.get(7)?,
        enqueued_at: r.get(8)?,
        updated_at: r.get(9)?,
        last_error: r.get(10)?,
        last_phase: opt_name(r, 11)?,
        parent: r.get::<_, Option<i64>>(12)?.map(job_id),
        group: r.get(13)?,
        progress: json(r, 14)?,
    })
}

fn attempt(r: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        attempt: r.get(0)?,
        worker: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        outcome: r.get(4)?,
        phase: opt_name(r, 5)?,
        error: r.get(6)?,
        digest: r.get(7)?,
        logs: json(r, 8)?,
        http: r
            .get::<_, Option<String>>(9)?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
    })
}

fn event(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: r.get(0)?,
        at: r.get(1)?,
        kind: name(r, 2)?,
        job_id: r.get::<_, Option<i64>>(3)?.map(job_id),
        queue: r.get(4)?,
        tenant: r.get(5)?,
        attempt: r.get(6)?,
        phase: opt_name(r, 7)?,
        message: r.get(8)?,
        digest: r.get(9)?,
        worker: r.get(10)?,
        duration_ms: opt_u64(r, 11)?,
    })
}
