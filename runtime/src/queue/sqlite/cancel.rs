//! Cancelling: one job (with its unfinished children), the jobs a filter matches, and the
//! cheap read a worker polls to learn that its running attempts were cancelled.

use rusqlite::{Connection, OptionalExtension, params};

use super::Failure;
use super::columns::{int, job_id, name, row_id};
use super::journal::{Journal, Subject, insert_attempt};
use crate::queue::cancel::parent_cancelled;
use crate::queue::{AttemptRecord, CancelFilter, EventKind, JobId, JobState, Lease};

const FIND: &str = "SELECT state, lease_worker, queue, tenant, token, updated_at, attempts \
    FROM jobs WHERE id = ?1";

const CANCEL: &str = "UPDATE jobs SET \
        state = 'cancelled', lease_worker = NULL, lease_expires_at = NULL, updated_at = ?2 \
    WHERE id = ?1";

const UNFINISHED_CHILDREN: &str = "SELECT id FROM jobs \
    WHERE parent_id = ?1 AND state NOT IN ('succeeded', 'dead', 'cancelled') ORDER BY id";

/// The unfinished jobs a [`CancelFilter`] matches, enqueued by `?9`, at most `?10`. `?4`..`?7`
/// say which listed states are wanted (`scheduled`, `ready`, `running`, `waiting`); `?8` is
/// the time that tells scheduled from ready.
const MATCHING: &str = "SELECT id FROM jobs \
    WHERE state IN ('scheduled', 'ready', 'running', 'waiting') \
      AND (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR tenant = ?2) \
      AND (?3 IS NULL OR group_key = ?3) \
      AND ((?4 AND state IN ('ready', 'scheduled') AND run_at > ?8) \
        OR (?5 AND state IN ('ready', 'scheduled') AND run_at <= ?8) \
        OR (?6 AND state = 'running') OR (?7 AND state = 'waiting')) \
      AND enqueued_at <= ?9 \
    ORDER BY id LIMIT ?10";

/// A job cancelled while its claim with token `?2` held it (a cancel keeps the token).
const REVOKED: &str = "SELECT 1 FROM jobs WHERE id = ?1 AND token = ?2 AND state = 'cancelled'";

/// Cancel job `id` and its unfinished children, down the tree. `None` if there is no such
/// job; otherwise whether it was unfinished.
pub(super) fn cancel(
    tx: &Connection,
    journal: &mut Journal,
    id: i64,
    reason: &str,
) -> Result<Option<bool>, Failure> {
    let mut done = Vec::new();
    let found = cancel_one(tx, journal, id, reason, &mut done)?;
    Ok(found)
}

/// Cancel one job, then its unfinished children; the ids cancelled are added to `done`.
fn cancel_one(
    tx: &Connection,
    journal: &mut Journal,
    id: i64,
    reason: &str,
    done: &mut Vec<i64>,
) -> Result<Option<bool>, Failure> {
    let found = tx
        .prepare_cached(FIND)?
        .query_row(params![id], |r| {
            Ok((
                name::<JobState>(r, 0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, u32>(6)?,
            ))
        })
        .optional()?;
    let Some((state, worker, queue, tenant, token, since, attempts)) = found else {
        return Ok(None);
    };
    if state.is_finished() {
        return Ok(Some(false));
    }
    let now = journal.now();
    tx.prepare_cached(CANCEL)?.execute(params![id, now])?;
    // A running attempt ends here: recorded as cancelled, spending no attempt. Its worker
    // destroys the instance once it hears; whatever it settles later is refused.
    let running = state == JobState::Running;
    if running {
        let record = AttemptRecord {
            attempt: attempts + 1,
            worker: worker.clone().unwrap_or_default(),
            started_at: since,
            finished_at: now,
            outcome: "cancelled".into(),
            phase: None,
            error: Some(reason.to_owned()),
            digest: None,
            logs: Vec::new(),
            http: Default::default(),
        };
        insert_attempt(tx, id, token, &record)?;
    }
    let subject = Subject {
        id,
        queue: &queue,
        tenant: tenant.as_deref(),
    };
    journal.job_event(tx, &subject, EventKind::Cancelled, |event| {
        event.worker = worker;
        event.message = Some(reason.to_owned());
        if running {
            event.attempt = Some(attempts + 1);
            event.duration_ms = Some(u64::try_from(now - since).unwrap_or(0));
        }
    })?;
    done.push(id);
    super::flow::child_finished(tx, journal, id)?;
    let children = tx
        .prepare_cached(UNFINISHED_CHILDREN)?
        .query_map(params![id], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if !children.is_empty() {
        let why = parent_cancelled(&job_id(id), reason);
        for child in children {
            cancel_one(tx, journal, child, &why, done)?;
        }
    }
    Ok(Some(true))
}

/// Cancel up to `chunk` of the unfinished jobs `filter` matches that were enqueued by
/// `started` (with their children). Returns the jobs cancelled; fewer than `chunk` matched
/// once it returns none.
pub(super) fn cancel_matching(
    tx: &Connection,
    journal: &mut Journal,
    filter: &CancelFilter,
    reason: &str,
    started: i64,
    chunk: usize,
) -> Result<Vec<JobId>, Failure> {
    let wants = |state: JobState| filter.states.is_empty() || filter.states.contains(&state);
    let ids = tx
        .prepare_cached(MATCHING)?
        .query_map(
            params![
                filter.queue,
                filter.tenant,
                filter.group,
                wants(JobState::Scheduled),
                wants(JobState::Ready),
                wants(JobState::Running),
                wants(JobState::Waiting),
                journal.now(),
                started,
                int(chunk),
            ],
            |r| r.get::<_, i64>(0),
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut done = Vec::new();
    for id in ids {
        // A child of an earlier one may be finished already.
        cancel_one(tx, journal, id, reason, &mut done)?;
    }
    Ok(done.into_iter().map(job_id).collect())
}

/// The jobs among `leases` that were cancelled while the lease held them.
pub(super) fn revoked(tx: &Connection, leases: &[Lease]) -> Result<Vec<JobId>, Failure> {
    let mut cancelled = tx.prepare_cached(REVOKED)?;
    let mut gone = Vec::new();
    for lease in leases {
        let Some(id) = row_id(&lease.job_id) else {
            continue;
        };
        if cancelled.exists(params![id, lease.token])? {
            gone.push(lease.job_id.clone());
        }
    }
    Ok(gone)
}
