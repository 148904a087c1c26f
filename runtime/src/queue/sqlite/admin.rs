//! Operator writes: cancel, free-standing events, and the dead-letter queue's replay, purge
//! and retention.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::Failure;
use super::columns::{int, len, row_id};
use super::journal::{Journal, Subject};
use crate::queue::{DlqFilter, EventKind, JobId, NewEvent, Prune, QueueError};

/// The `WHERE` clause selecting the dead jobs a [`DlqFilter`] matches, with parameters
/// `?1`..`?5` from [`dlq_params`]. A macro so that whole statements stay literals.
macro_rules! dead_matching {
    () => {
        "state = 'dead' \
         AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR queue = ?2) \
         AND (?3 IS NULL OR last_phase = ?3) \
         AND (?4 IS NULL OR updated_at >= ?4) AND (?5 IS NULL OR updated_at < ?5)"
    };
}
pub(super) use dead_matching;

/// The parameters of [`dead_matching`]; `None` when the filter names an id this backend
/// cannot have issued, so nothing matches.
pub(super) fn dlq_params(filter: &DlqFilter) -> Option<[Value; 5]> {
    let id = match &filter.id {
        Some(id) => Value::Integer(row_id(id)?),
        None => Value::Null,
    };
    let text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    let time = |value: Option<i64>| value.map_or(Value::Null, Value::Integer);
    Some([
        id,
        text(filter.queue.clone()),
        text(filter.phase.map(|phase| <&str>::from(phase).to_owned())),
        time(filter.since),
        time(filter.until),
    ])
}

/// `OR IGNORE`: a dead job whose idempotency key an unfinished job now holds stays dead
/// rather than break the key's uniqueness (and is not counted).
const REPLAY: &str = concat!(
    "UPDATE OR IGNORE jobs SET \
        state = 'ready', run_at = ?6, attempts = 0, started = 0, updated_at = ?6 \
    WHERE ",
    dead_matching!(),
    " RETURNING id, queue, tenant"
);

const PURGE: &str = concat!("DELETE FROM jobs WHERE ", dead_matching!(), " RETURNING id");

/// `?1`/`?2`: the succeeded and cancelled cutoffs (`i64::MIN` for none), `?3` the later one
/// (so the `jobs_finished` index bounds the walk).
pub(super) const PRUNE: &str = "DELETE FROM jobs WHERE id IN ( \
        SELECT id FROM jobs \
        WHERE state IN ('succeeded', 'cancelled') AND updated_at < ?3 \
          AND ((state = 'succeeded' AND updated_at < ?1) \
            OR (state = 'cancelled' AND updated_at < ?2)) \
        LIMIT ?4) \
    RETURNING id";

const EXISTS: &str = "SELECT 1 FROM jobs WHERE id = ?1";

pub(super) fn cancel(
    tx: &Connection,
    journal: &mut Journal,
    id: &JobId,
    reason: &str,
) -> Result<bool, Failure> {
    let not_found = || Failure::Queue(QueueError::NotFound(id.clone()));
    let row = row_id(id).ok_or_else(not_found)?;
    super::cancel::cancel(tx, journal, row, reason)?.ok_or_else(not_found)
}

pub(super) fn record(
    tx: &Connection,
    journal: &mut Journal,
    event: NewEvent,
) -> Result<(), Failure> {
    let job = match &event.job_id {
        Some(id) => {
            let not_found = || Failure::Queue(QueueError::NotFound(id.clone()));
            let row = row_id(id).ok_or_else(not_found)?;
            tx.prepare_cached(EXISTS)?
                .query_row(params![row], |_| Ok(()))
                .optional()?
                .ok_or_else(not_found)?;
            Some(row)
        }
        None => None,
    };
    journal.given_event(tx, event, job)?;
    Ok(())
}

pub(super) fn replay(
    tx: &Connection,
    journal: &mut Journal,
    filter: &DlqFilter,
) -> Result<u64, Failure> {
    let Some([id, queue, phase, since, until]) = dlq_params(filter) else {
        return Ok(0);
    };
    let now = Value::Integer(journal.now());
    let replayed = tx
        .prepare_cached(REPLAY)?
        .query_map(
            params_from_iter([id, queue, phase, since, until, now]),
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, queue, tenant) in &replayed {
        let subject = Subject {
            id: *id,
            queue,
            tenant: tenant.as_deref(),
        };
        journal.job_event(tx, &subject, EventKind::Replayed, |_| {})?;
    }
    Ok(len(replayed.len()))
}

pub(super) fn purge(tx: &Connection, filter: &DlqFilter) -> Result<u64, Failure> {
    let Some(params) = dlq_params(filter) else {
        return Ok(0);
    };
    let ids = tx
        .prepare_cached(PURGE)?
        .query_map(params_from_iter(params), |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    delete_history(tx, &ids)?;
    Ok(len(ids.len()))
}

/// Delete up to `chunk` succeeded or cancelled jobs that finished before their state's cutoff.
pub(super) fn prune(tx: &Connection, prune: Prune, chunk: usize) -> Result<u64, Failure> {
    let Some(latest) = prune.latest() else {
        return Ok(0);
    };
    let succeeded = prune.succeeded.unwrap_or(i64::MIN);
    let cancelled = prune.cancelled.unwrap_or(i64::MIN);
    let ids = tx
        .prepare_cached(PRUNE)?
        .query_map(params![succeeded, cancelled, latest, int(chunk)], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    delete_history(tx, &ids)?;
    Ok(len(ids.len()))
}

/// Delete the attempts and events of deleted jobs.
fn delete_history(tx: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut attempts = tx.prepare_cached("DELETE FROM attempts WHERE job_id = ?1")?;
    let mut events = tx.prepare_cached("DELETE FROM events WHERE job_id = ?1")?;
    let mut steps = tx.prepare_cached("DELETE FROM steps WHERE job_id = ?1")?;
    for id in ids {
        attempts.execute(params![id])?;
        events.execute(params![id])?;
        steps.execute(params![id])?;
    }
    Ok(())
}
