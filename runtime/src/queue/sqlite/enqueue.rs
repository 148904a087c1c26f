//! Enqueue: a batch of jobs in one transaction, with idempotency keys.

use rusqlite::{Connection, OptionalExtension, params};

use super::Failure;
use super::columns::{job_id, millis_between, to_json};
use super::journal::{Journal, Subject};
use crate::queue::{Enqueued, EventKind, NewJob};

const INSERT: &str = "INSERT INTO jobs \
    (id, queue, state, priority, run_at, enqueued_at, updated_at, max_attempts, tenant, key, \
     metadata, payload, group_key, traceparent) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// The unfinished job holding a key (through the `jobs_key` index). Run inside the same
/// transaction as the insert, so two enqueues with one key cannot both miss it.
pub(super) const HOLDER: &str = "SELECT id, tenant FROM jobs \
    WHERE queue = ?1 AND key = ?2 AND key IS NOT NULL \
      AND state NOT IN ('succeeded', 'dead', 'cancelled')";

pub(super) fn enqueue(
    tx: &Connection,
    journal: &mut Journal,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>, Failure> {
    let now = journal.now();
    let mut insert = tx.prepare_cached(INSERT)?;
    let mut enqueued = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(key) = &job.key {
            let holder = tx
                .prepare_cached(HOLDER)?
                .query_row(params![job.queue, key], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Option<String>>(1)?))
                })
                .optional()?;
            if let Some((id, tenant)) = holder {
                let subject = Subject {
                    id,
                    queue: &job.queue,
                    tenant: tenant.as_deref(),
                };
                journal.job_event(tx, &subject, EventKind::Duplicate, |event| {
                    event.message = Some(format!("idempotency key {key}"));
                })?;
                enqueued.push(Enqueued {
                    id: job_id(id),
                    duplicate: true,
                });
                continue;
            }
        }
        let run_at = job.run_at.unwrap_or(now);
        let state = if run_at > now { "scheduled" } else { "ready" };
        let id = journal.next_job_id(tx)?;
        insert.execute(params![
            id,
            job.queue,
            state,
            job.priority,
            run_at,
            now,
            job.max_attempts,
            job.tenant,
            job.key,
            to_json(&job.metadata)?,
            job.payload,
            job.group,
            job.traceparent.map(|tp| tp.to_string()),
        ])?;
        let subject = Subject {
            id,
            queue: &job.queue,
            tenant: job.tenant.as_deref(),
        };
        journal.job_event(tx, &subject, EventKind::Enqueued, |event| {
            if run_at > now {
                event.duration_ms = Some(millis_between(now, run_at));
            }
        })?;
        enqueued.push(Enqueued {
            id: job_id(id),
            duplicate: false,
        });
    }
    Ok(enqueued)
}
