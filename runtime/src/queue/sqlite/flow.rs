//! Durable steps and flows: an attempt's fenced checkpoints and step results, the children a
//! settle creates, and what a finished child does to its waiting parent.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Failure;
use super::columns::{job_id, name, opt_name, row_id, to_json};
use super::enqueue::HOLDER;
use super::journal::{Journal, Subject};
use crate::queue::{
    AttemptSave, ChildOutcome, EventKind, JobState, LeaseLost, NewChild, OnChildFailure, Phase,
    Save, StepRecord,
};

/// The running job an attempt's write is for: the fence.
const FENCE: &str =
    "SELECT queue, tenant FROM jobs WHERE id = ?1 AND state = 'running' AND token = ?2";

const CHECKPOINT: &str = "UPDATE jobs SET checkpoint = ?2 WHERE id = ?1";

/// A step's result; storing a name again replaces its output and keeps its place.
const STEP: &str = "INSERT INTO steps (job_id, name, output, attempt, at) \
    VALUES (?1, ?2, ?3, ?4, ?5) \
    ON CONFLICT (job_id, name) DO UPDATE SET \
        output = excluded.output, attempt = excluded.attempt, at = excluded.at";

const STEPS: &str = "SELECT name, output, attempt, at FROM steps WHERE job_id = ?1 ORDER BY rowid";

const CHILDREN: &str = "SELECT id, queue, state, output, last_error, on_parent_failure \
    FROM jobs WHERE parent_id = ?1 ORDER BY id";

const INSERT_CHILD: &str = "INSERT INTO jobs \
    (id, queue, state, priority, run_at, enqueued_at, updated_at, max_attempts, tenant, key, \
     metadata, payload, parent_id, on_parent_failure, last_error, group_key, traceparent) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

const UNFINISHED_CHILDREN: &str = "SELECT count(*) FROM jobs \
    WHERE parent_id = ?1 AND state NOT IN ('succeeded', 'dead', 'cancelled')";

const CHILD_OF: &str =
    "SELECT parent_id, on_parent_failure, state, last_error FROM jobs WHERE id = ?1";

const WAITING_PARENT: &str = "SELECT queue, tenant FROM jobs WHERE id = ?1 AND state = 'waiting'";

const WAKE: &str = "UPDATE jobs SET state = 'ready', run_at = ?2, updated_at = ?2 WHERE id = ?1";

const FAIL_PARENT: &str = "UPDATE jobs SET state = 'dead', last_error = ?2, \
        last_phase = 'child-failed', updated_at = ?3 \
    WHERE id = ?1";

/// Store a checkpoint or a step result for a running attempt, fenced by its lease and refused
/// after its deadline.
pub(super) fn save(
    tx: &Connection,
    journal: &mut Journal,
    save: &AttemptSave,
) -> Result<Result<(), LeaseLost>, Failure> {
    let lost = || LeaseLost {
        job_id: save.lease.job_id.clone(),
        token: save.lease.token,
    };
    let now = journal.now();
    let Some(id) = row_id(&save.lease.job_id) else {
        return Ok(Err(lost()));
    };
    if save.not_after.is_some_and(|deadline| now > deadline) {
        return Ok(Err(lost()));
    }
    let job = tx
        .prepare_cached(FENCE)?
        .query_row(params![id, save.lease.token], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })
        .optional()?;
    let Some((queue, tenant)) = job else {
        return Ok(Err(lost()));
    };
    let subject = Subject {
        id,
        queue: &queue,
        tenant: tenant.as_deref(),
    };
    match &save.save {
        Save::Checkpoint(state) => {
            tx.prepare_cached(CHECKPOINT)?.execute(params![id, state])?;
            journal.job_event(tx, &subject, EventKind::Checkpointed, |event| {
                event.attempt = Some(save.attempt);
                event.worker = Some(save.lease.worker.clone());
            })?;
        }
        Save::Step { name, output } => {
            tx.prepare_cached(STEP)?
                .execute(params![id, name, output, save.attempt, now])?;
            journal.job_event(tx, &subject, EventKind::StepCompleted, |event| {
                event.attempt = Some(save.attempt);
                event.worker = Some(save.lease.worker.clone());
                event.message = Some(name.clone());
            })?;
        }
    }
    Ok(Ok(()))
}

/// The steps a job's attempts completed, in the order they completed.
pub(super) fn steps(tx: &Connection, id: i64) -> rusqlite::Result<Vec<StepRecord>> {
    tx.prepare_cached(STEPS)?
        .query_map(params![id], |r| {
            Ok(StepRecord {
                name: r.get(0)?,
                output: r.get(1)?,
                attempt: r.get(2)?,
                at: r.get(3)?,
            })
        })?
        .collect()
}

/// A job's children, in the order they were enqueued.
pub(super) fn children(tx: &Connection, id: i64) -> rusqlite::Result<Vec<ChildOutcome>> {
    tx.prepare_cached(CHILDREN)?
        .query_map(params![id], child)?
        .collect()
}

fn child(r: &Row<'_>) -> rusqlite::Result<ChildOutcome> {
    let state: JobState = name(r, 2)?;
    Ok(ChildOutcome {
        id: job_id(r.get(0)?),
        queue: r.get(1)?,
        state: match state {
            JobState::Scheduled => JobState::Ready,
            other => other,
        },
        output: r.get(3)?,
        error: r.get(4)?,
        on_failure: opt_name(r, 5)?.unwrap_or_default(),
    })
}

/// Create the children a settled attempt enqueued, with their reserved ids. A child whose
/// idempotency key an unfinished job already holds is created cancelled, naming the holder.
pub(super) fn create_children(
    tx: &Connection,
    journal: &mut Journal,
    parent: i64,
    children: &[NewChild],
) -> Result<(), Failure> {
    let now = journal.now();
    for NewChild {
        id,
        job,
        on_failure,
    } in children
    {
        let Some(id) = row_id(id) else {
            return Err(Failure::Queue(crate::queue::QueueError::BadRequest(
                format!("child id {id} was not reserved by this backend"),
            )));
        };
        let holder = match &job.key {
            Some(key) => tx
                .prepare_cached(HOLDER)?
                .query_row(params![job.queue, key], |row| row.get::<_, i64>(0))
                .optional()?,
            None => None,
        };
        let run_at = job.run_at.unwrap_or(now);
        let (state, error) = match holder {
            Some(holder) => (
                "cancelled",
                Some(format!(
                    "not created: job {holder} holds idempotency key {}",
                    job.key.as_deref().unwrap_or_default()
                )),
            ),
            None if run_at > now => ("scheduled", None),
            None => ("ready", None),
        };
        tx.prepare_cached(INSERT_CHILD)?.execute(params![
            id,
            job.queue,
            state,
            job.priority,
            run_at,
            now,
            job.max_attempts,
            job.tenant,
            if holder.is_some() {
                None
            } else {
                job.key.as_ref()
            },
            to_json(&job.metadata)?,
            job.payload,
            parent,
            <&str>::from(*on_failure),
            error,
            job.group,
            job.traceparent.map(|tp| tp.to_string()),
        ])?;
        let subject = Subject {
            id,
            queue: &job.queue,
            tenant: job.tenant.as_deref(),
        };
        journal.job_event(tx, &subject, EventKind::Enqueued, |event| {
            event.message = Some(format!("child of job {parent}"));
        })?;
        if holder.is_some() {
            journal.job_event(tx, &subject, EventKind::Cancelled, |event| {
                event.message.clone_from(&error);
            })?;
        }
    }
    Ok(())
}

/// Whether the job has children that are not finished.
pub(super) fn has_unfinished_children(tx: &Connection, id: i64) -> rusqlite::Result<bool> {
    let n: i64 = tx
        .prepare_cached(UNFINISHED_CHILDREN)?
        .query_row(params![id], |r| r.get(0))?;
    Ok(n > 0)
}

/// Job `id` just finished (succeeded, died or was cancelled): if it is a child and its parent
/// is waiting, the parent dies (a dead child with `fail-parent`) or, once no child is left
/// unfinished, becomes ready again. A parent that dies finishes in turn, up the tree.
pub(super) fn child_finished(
    tx: &Connection,
    journal: &mut Journal,
    id: i64,
) -> Result<(), Failure> {
    let mut id = id;
    loop {
        let found = tx
            .prepare_cached(CHILD_OF)?
            .query_row(params![id], |r| {
                Ok((
                    r.get::<_, Option<i64>>(0)?,
                    opt_name::<OnChildFailure>(r, 1)?.unwrap_or_default(),
                    name::<JobState>(r, 2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .optional()?;
        let Some((Some(parent), on_failure, state, error)) = found else {
            return Ok(());
        };
        let Some((queue, tenant)) = tx
            .prepare_cached(WAITING_PARENT)?
            .query_row(params![parent], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .optional()?
        else {
            return Ok(());
        };
        let now = journal.now();
        let subject = Subject {
            id: parent,
            queue: &queue,
            tenant: tenant.as_deref(),
        };
        if state == JobState::Dead && on_failure == OnChildFailure::FailParent {
            let message = format!(
                "child {id} died: {}",
                error.as_deref().unwrap_or("no error recorded")
            );
            tx.prepare_cached(FAIL_PARENT)?
                .execute(params![parent, message, now])?;
            let fill = |event: &mut crate::queue::Event| {
                event.phase = Some(Phase::ChildFailed);
                event.message = Some(message.clone());
            };
            journal.job_event(tx, &subject, EventKind::Failed, fill)?;
            journal.job_event(tx, &subject, EventKind::DeadLettered, fill)?;
            // The parent is finished now: its own parent may be waiting for it.
            id = parent;
            continue;
        }
        if !has_unfinished_children(tx, parent)? {
            tx.prepare_cached(WAKE)?.execute(params![parent, now])?;
            journal.job_event(tx, &subject, EventKind::ChildrenFinished, |_| {})?;
        }
        return Ok(());
    }
}
