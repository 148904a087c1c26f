//! Schedules and the schedulers' leader lock.
//!
//! A fire is one transaction: the conditional `UPDATE` that moves `next_run_at` on from the
//! tick being fired (so only the first of several schedulers racing for it matches a row) and
//! the enqueue of its job. The leader lock is a row of `leader_locks`, taken or renewed by one
//! conditional upsert.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::Failure;
use super::columns::{after, job_id, row_id};
use super::journal::Journal;
use crate::queue::{EventKind, JobId, NewEvent, Timestamp};
use crate::schedule::{
    FireAction, Schedule, ScheduleFire, ScheduleState, fired_message, skipped_message,
};

/// The lock the schedulers share.
const SCHEDULER_LOCK: &str = "scheduler";

const EXISTING_SPEC: &str = "SELECT spec FROM schedules WHERE name = ?1";

/// An upsert that keeps the next and last ticks when the spec is the same.
const PUT: &str = "INSERT INTO schedules (name, spec, definition, next_run_at) \
    VALUES (?1, ?2, ?3, ?4) \
    ON CONFLICT (name) DO UPDATE SET \
        definition = excluded.definition, \
        next_run_at = CASE WHEN spec = excluded.spec THEN next_run_at ELSE excluded.next_run_at END, \
        last_run_at = CASE WHEN spec = excluded.spec THEN last_run_at ELSE NULL END, \
        last_job_id = CASE WHEN spec = excluded.spec THEN last_job_id ELSE NULL END, \
        spec = excluded.spec";

const REMOVE: &str = "DELETE FROM schedules WHERE name = ?1";

const LIST: &str = "SELECT definition, next_run_at, last_run_at, last_job_id \
    FROM schedules ORDER BY name";

const DEFINITION: &str = "SELECT definition FROM schedules WHERE name = ?1";

/// Move a schedule on, only from the tick being fired.
const ADVANCE: &str = "UPDATE schedules SET next_run_at = ?3 WHERE name = ?1 AND next_run_at = ?2";

const FIRED: &str = "UPDATE schedules SET last_run_at = ?2, last_job_id = ?3 WHERE name = ?1";

/// Take the lock if it is free, expired or already `holder`'s.
const TAKE: &str = "INSERT INTO leader_locks (name, holder, expires_at) VALUES (?1, ?2, ?3) \
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
    WHERE leader_locks.holder = excluded.holder OR leader_locks.expires_at <= ?4";

pub(super) fn put(
    tx: &Connection,
    schedule: &Schedule,
    next_run_at: Timestamp,
) -> Result<bool, Failure> {
    let spec = serde_json::to_string(&schedule.spec)?;
    let existed = tx
        .prepare_cached(EXISTING_SPEC)?
        .query_row(params![schedule.name], |row| row.get::<_, String>(0))
        .optional()?
        .is_some();
    tx.prepare_cached(PUT)?.execute(params![
        schedule.name,
        spec,
        serde_json::to_string(schedule)?,
        next_run_at
    ])?;
    Ok(!existed)
}

pub(super) fn remove(tx: &Connection, name: &str) -> Result<bool, Failure> {
    Ok(tx.prepare_cached(REMOVE)?.execute(params![name])? > 0)
}

pub(super) fn list(tx: &Connection) -> Result<Vec<ScheduleState>, Failure> {
    let mut stmt = tx.prepare_cached(LIST)?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Timestamp>(1)?,
            row.get::<_, Option<Timestamp>>(2)?,
            row.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (definition, next_run_at, last_run_at, last_job) = row?;
        out.push(ScheduleState {
            schedule: serde_json::from_str(&definition)?,
            next_run_at,
            last_run_at,
            last_job: last_job.map(job_id),
        });
    }
    Ok(out)
}

pub(super) fn take_leadership(
    tx: &Connection,
    holder: &str,
    ttl: Duration,
    now: Timestamp,
) -> Result<bool, Failure> {
    let changed =
        tx.prepare_cached(TAKE)?
            .execute(params![SCHEDULER_LOCK, holder, after(now, ttl), now])?;
    Ok(changed > 0)
}

pub(super) fn fire(
    tx: &Connection,
    journal: &mut Journal,
    fire: ScheduleFire,
) -> Result<Option<JobId>, Failure> {
    let definition: Option<String> = tx
        .prepare_cached(DEFINITION)?
        .query_row(params![fire.name], |row| row.get(0))
        .optional()?;
    let Some(definition) = definition else {
        return Ok(None);
    };
    let schedule: Schedule = serde_json::from_str(&definition)?;
    let advanced = tx
        .prepare_cached(ADVANCE)?
        .execute(params![fire.name, fire.due, fire.next])?;
    if advanced == 0 {
        // Another scheduler fired this tick already.
        return Ok(None);
    }
    match fire.action {
        FireAction::Enqueue {
            tick,
            job,
            caught_up,
        } => {
            let enqueued = super::enqueue::enqueue(tx, journal, std::slice::from_ref(&job))?;
            let id = enqueued.first().map(|e| e.id.clone()).ok_or_else(|| {
                Failure::Queue(crate::queue::QueueError::Store(
                    "a schedule's enqueue returned no job".into(),
                ))
            })?;
            tx.prepare_cached(FIRED)?
                .execute(params![fire.name, tick, row_id(&id)])?;
            let event = NewEvent {
                job_id: Some(id.clone()),
                queue: Some(job.queue.clone()),
                tenant: job.tenant.clone(),
                worker: fire.worker,
                message: Some(fired_message(&fire.name, tick, caught_up)),
                ..NewEvent::new(EventKind::ScheduleFired)
            };
            journal.given_event(tx, event, row_id(&id))?;
            Ok(Some(id))
        }
        FireAction::Skip { ticks } => {
            let event = NewEvent {
                queue: Some(schedule.queue),
                tenant: schedule.tenant,
                worker: fire.worker,
                message: Some(skipped_message(&fire.name, ticks, fire.due, fire.next)),
                ..NewEvent::new(EventKind::ScheduleSkipped)
            };
            journal.given_event(tx, event, None)?;
            Ok(None)
        }
    }
}
