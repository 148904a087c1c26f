//! Settle: apply what happens after an attempt, fenced by its lease, a batch per transaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::Failure;
use super::columns::{millis_between, row_id};
use super::journal::{Journal, Subject, insert_attempt};
use crate::queue::{Event, EventKind, LeaseLost, Next, Settle};

/// One statement for every kind of [`Next`]: the `WHERE` is the fence, and a NULL parameter
/// leaves its column as it was.
pub(super) const SETTLE: &str = "UPDATE jobs SET \
        state = ?3, run_at = COALESCE(?4, run_at), attempts = attempts + ?5, \
        output = COALESCE(?6, output), checkpoint = COALESCE(?7, checkpoint), \
        last_error = COALESCE(?8, last_error), last_phase = COALESCE(?9, last_phase), \
        lease_worker = NULL, lease_expires_at = NULL, updated_at = ?10, \
        progress = COALESCE(?11, progress) \
    WHERE id = ?1 AND state = 'running' AND token = ?2 \
    RETURNING queue, tenant, parent_id";

/// A waiting job none of whose children is unfinished: ready at once.
const READY: &str = "UPDATE jobs SET state = 'ready', run_at = ?2 WHERE id = ?1";

pub(super) fn settle(
    tx: &Connection,
    journal: &mut Journal,
    settles: &[Settle],
) -> Result<Vec<Result<(), LeaseLost>>, Failure> {
    settles
        .iter()
        .map(|settle| settle_one(tx, journal, settle))
        .collect()
}

fn settle_one(
    tx: &Connection,
    journal: &mut Journal,
    settle: &Settle,
) -> Result<Result<(), LeaseLost>, Failure> {
    let lost = || LeaseLost {
        job_id: settle.lease.job_id.clone(),
        token: settle.lease.token,
    };
    let Some(id) = row_id(&settle.lease.job_id) else {
        return Ok(Err(lost()));
    };
    let now = journal.now();
    let record = &settle.attempt;
    let scheduled = |run_at: i64| if run_at > now { "scheduled" } else { "ready" };
    let (state, run_at, failed, output) = match &settle.next {
        Next::Succeeded { output } => ("succeeded", None, false, Some(output)),
        Next::Retry { run_at } => (scheduled(*run_at), Some(*run_at), true, None),
        Next::Delay { run_at } => (scheduled(*run_at), Some(*run_at), false, None),
        Next::Dead => ("dead", None, true, None),
        // Told apart below, once the children this settle creates exist.
        Next::Wait => ("waiting", None, false, None),
    };
    let (error, phase) = if failed {
        (record.error.as_deref(), record.phase.map(<&str>::from))
    } else {
        (None, None)
    };
    let progress = settle
        .progress
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    let job = tx
        .prepare_cached(SETTLE)?
        .query_row(
            params![
                id,
                settle.lease.token,
                state,
                run_at,
                i64::from(failed),
                output,
                settle.checkpoint,
                error,
                phase,
                now,
                progress,
            ],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((queue, tenant, parent)) = job else {
        // Not running under this token: nothing of this settle is written.
        return Ok(Err(lost()));
    };
    insert_attempt(tx, id, settle.lease.token, record)?;
    super::flow::create_children(tx, journal, id, &settle.children)?;

    let subject = Subject {
        id,
        queue: &queue,
        tenant: tenant.as_deref(),
    };
    let ran = millis_between(record.started_at, record.finished_at);
    let attempt = |event: &mut Event| {
        event.attempt = Some(record.attempt);
        event.worker = Some(record.worker.clone());
        event.digest = record.digest.clone();
    };
    let failure = |event: &mut Event| {
        attempt(event);
        event.phase = record.phase;
        event.message = record.error.clone();
    };
    match &settle.next {
        Next::Succeeded { .. } => {
            journal.job_event(tx, &subject, EventKind::Succeeded, |event| {
                attempt(event);
                event.duration_ms = Some(ran);
            })?;
        }
        Next::Retry { run_at } => {
            journal.job_event(tx, &subject, EventKind::Failed, |event| {
                failure(event);
                event.duration_ms = Some(ran);
            })?;
            journal.job_event(tx, &subject, EventKind::RetryScheduled, |event| {
                failure(event);
                event.duration_ms = Some(millis_between(now, *run_at));
            })?;
        }
        Next::Delay { run_at } => {
            journal.job_event(tx, &subject, EventKind::Delayed, |event| {
                attempt(event);
                event.duration_ms = Some(millis_between(now, *run_at));
            })?;
        }
        Next::Dead => {
            journal.job_event(tx, &subject, EventKind::Failed, |event| {
                failure(event);
                event.duration_ms = Some(ran);
            })?;
            journal.job_event(tx, &subject, EventKind::DeadLettered, failure)?;
        }
        Next::Wait => {
            journal.job_event(tx, &subject, EventKind::Waiting, attempt)?;
            if !super::flow::has_unfinished_children(tx, id)? {
                tx.prepare_cached(READY)?.execute(params![id, now])?;
                journal.job_event(tx, &subject, EventKind::ChildrenFinished, |_| {})?;
            }
        }
    }
    // A child's end may finish or fail its parent.
    if parent.is_some() && matches!(settle.next, Next::Succeeded { .. } | Next::Dead) {
        super::flow::child_finished(tx, journal, id)?;
    }
    Ok(Ok(()))
}
