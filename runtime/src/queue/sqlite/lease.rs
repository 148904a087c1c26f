//! Leases: claim, renew, release, and the sweep of expired leases.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::Failure;
use super::columns::{after, int, job_id, json, millis_between, opt_name, row_id};
use super::journal::{Journal, Subject, insert_attempt};
use crate::queue::{AttemptRecord, Claimed, EventKind, JobId, Lease, Phase, QueueClaim};

/// What a claim returns of each job it leases (read by `claimed_row`).
macro_rules! claimed_columns {
    () => {
        "id, token, priority, run_at, attempts, max_attempts, started, payload, checkpoint, \
         tenant, metadata, enqueued_at, parent_id, traceparent"
    };
}

/// The condition a claimable job `j` (with `?3` the claim's time) must also meet: no group, or
/// its group has no running job and `j` is the group's head in claim order.
macro_rules! group_free {
    () => {
        "(j.group_key IS NULL OR ( \
            NOT EXISTS (SELECT 1 FROM jobs AS r \
                WHERE r.queue = j.queue AND r.group_key = j.group_key AND r.state = 'running') \
            AND j.id = (SELECT g.id FROM jobs AS g \
                WHERE g.queue = j.queue AND g.group_key = j.group_key \
                  AND g.state IN ('ready', 'scheduled') AND g.run_at <= ?3 \
                ORDER BY g.priority DESC, g.run_at, g.id LIMIT 1)))"
    };
}
pub(super) use group_free;

/// One statement picks the head of the queue (through `jobs_claimable`) and leases it, so two
/// claimers can never both take a job: the transaction holds the write lock, and the
/// statement's own read and write see the same rows. A job with a group is claimable only
/// while no job of its group runs, and only as its group's head (so one statement never takes
/// two of one group): two index lookups for such a job, none for the others.
pub(super) const CLAIM: &str = concat!(
    "UPDATE jobs SET \
        state = 'running', token = token + 1, started = started + 1, \
        lease_worker = ?1, lease_expires_at = ?2, updated_at = ?3, \
        max_attempts = COALESCE(max_attempts, ?6) \
    WHERE id IN ( \
        SELECT id FROM jobs AS j \
        WHERE queue = ?4 AND state IN ('ready', 'scheduled') AND run_at <= ?3 \
          AND ",
    group_free!(),
    " ORDER BY priority DESC, run_at, id \
        LIMIT ?5) \
    RETURNING ",
    claimed_columns!()
);

/// Lease one job picked by the flow-control path ([`super::limits`]), if it is still
/// claimable.
const CLAIM_ONE: &str = concat!(
    "UPDATE jobs SET \
        state = 'running', token = token + 1, started = started + 1, \
        lease_worker = ?1, lease_expires_at = ?2, updated_at = ?3, \
        max_attempts = COALESCE(max_attempts, ?5) \
    WHERE id = ?4 AND state IN ('ready', 'scheduled') AND run_at <= ?3 \
    RETURNING ",
    claimed_columns!()
);

const RENEW: &str = "UPDATE jobs SET lease_expires_at = ?3 \
    WHERE id = ?1 AND state = 'running' AND token = ?2";

const RELEASE: &str = "UPDATE jobs SET \
        state = 'ready', run_at = ?3, lease_worker = NULL, lease_expires_at = NULL, \
        updated_at = ?3 \
    WHERE id = ?1 AND state = 'running' AND token = ?2 \
    RETURNING queue, tenant, attempts";

/// Running jobs whose lease has lapsed (through `jobs_leased`). While running, `updated_at`
/// is the claim time: the attempt's start.
pub(super) const EXPIRED: &str = "SELECT id, token, attempts, max_attempts, lease_worker, \
        updated_at, queue, tenant \
    FROM jobs WHERE state = 'running' AND lease_expires_at < ?1";

/// A returned job keeps its `run_at` (and priority): its place at the head of its queue.
const EXPIRE: &str = "UPDATE jobs SET \
        state = ?3, attempts = attempts + 1, last_error = ?5, \
        last_phase = 'lease-expired', lease_worker = NULL, lease_expires_at = NULL, \
        updated_at = ?4 \
    WHERE id = ?1 AND state = 'running' AND token = ?2";

/// A claimed row, with what orders it.
struct ClaimedRow {
    id: i64,
    priority: i32,
    run_at: i64,
    claimed: Claimed,
}

pub(super) fn claim(
    tx: &Connection,
    journal: &mut Journal,
    worker: &str,
    queues: &[QueueClaim],
    lease: Duration,
    fair_cursors: &mut std::collections::HashMap<String, Option<String>>,
) -> Result<Vec<Claimed>, Failure> {
    let now = journal.now();
    let expires_at = after(now, lease);
    let mut claimed = Vec::new();
    for wanted in queues.iter().filter(|wanted| wanted.limit > 0) {
        let mut rows = if wanted.flow.is_limited() {
            let cursor = fair_cursors.entry(wanted.queue.clone()).or_default();
            let picked = super::limits::pick(tx, now, wanted, cursor)?;
            let mut statement = tx.prepare_cached(CLAIM_ONE)?;
            let mut rows = Vec::with_capacity(picked.len());
            for id in picked {
                rows.extend(
                    statement
                        .query_row(
                            params![worker, expires_at, now, id, wanted.max_attempts],
                            |row| claimed_row(row, worker, &wanted.queue, expires_at),
                        )
                        .optional()?,
                );
            }
            rows
        } else {
            let mut statement = tx.prepare_cached(CLAIM)?;
            let rows = statement.query_map(
                params![
                    worker,
                    expires_at,
                    now,
                    wanted.queue,
                    int(wanted.limit),
                    wanted.max_attempts
                ],
                |row| claimed_row(row, worker, &wanted.queue, expires_at),
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        // RETURNING yields rows in no particular order.
        rows.sort_by_key(|row| (std::cmp::Reverse(row.priority), row.run_at, row.id));
        for mut row in rows {
            row.claimed.steps = super::flow::steps(tx, row.id)?;
            row.claimed.children = super::flow::children(tx, row.id)?;
            let subject = Subject {
                id: row.id,
                queue: &wanted.queue,
                tenant: row.claimed.tenant.as_deref(),
            };
            journal.job_event(tx, &subject, EventKind::Started, |event| {
                event.attempt = Some(row.claimed.attempt);
                event.worker = Some(worker.to_owned());
            })?;
            claimed.push(row.claimed);
        }
    }
    Ok(claimed)
}

fn claimed_row(
    row: &Row<'_>,
    worker: &str,
    queue: &str,
    expires_at: i64,
) -> rusqlite::Result<ClaimedRow> {
    let id = row.get(0)?;
    let failed: u32 = row.get(4)?;
    Ok(ClaimedRow {
        id,
        priority: row.get(2)?,
        run_at: row.get(3)?,
        claimed: Claimed {
            lease: Lease {
                job_id: job_id(id),
                token: row.get(1)?,
                worker: worker.to_owned(),
                expires_at,
            },
            queue: queue.to_owned(),
            payload: row.get(7)?,
            attempt: failed.saturating_add(1),
            max_attempts: row.get(5)?,
            started: row.get(6)?,
            checkpoint: row.get(8)?,
            tenant: row.get(9)?,
            metadata: json(row, 10)?,
            enqueued_at: row.get(11)?,
            parent: row.get::<_, Option<i64>>(12)?.map(job_id),
            steps: Vec::new(),
            children: Vec::new(),
            traceparent: opt_name(row, 13)?,
        },
    })
}

pub(super) fn renew(
    tx: &Connection,
    journal: &mut Journal,
    leases: &[Lease],
    lease: Duration,
) -> Result<Vec<bool>, Failure> {
    let expires_at = after(journal.now(), lease);
    let mut statement = tx.prepare_cached(RENEW)?;
    let mut renewed = Vec::with_capacity(leases.len());
    for held in leases {
        let kept = match row_id(&held.job_id) {
            Some(id) => statement.execute(params![id, held.token, expires_at])? == 1,
            None => false,
        };
        renewed.push(kept);
    }
    Ok(renewed)
}

pub(super) fn release(
    tx: &Connection,
    journal: &mut Journal,
    leases: &[Lease],
) -> Result<u64, Failure> {
    let now = journal.now();
    let mut released = 0;
    for held in leases {
        let Some(id) = row_id(&held.job_id) else {
            continue;
        };
        let row = tx
            .prepare_cached(RELEASE)?
            .query_row(params![id, held.token, now], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, u32>(2)?,
                ))
            })
            .optional()?;
        let Some((queue, tenant, failed)) = row else {
            continue;
        };
        released += 1;
        let subject = Subject {
            id,
            queue: &queue,
            tenant: tenant.as_deref(),
        };
        journal.job_event(tx, &subject, EventKind::Released, |event| {
            event.attempt = Some(failed.saturating_add(1));
            event.worker = Some(held.worker.clone());
        })?;
    }
    Ok(released)
}

/// A running job whose lease has lapsed.
struct Lapsed {
    id: i64,
    token: i64,
    failed: u32,
    max_attempts: Option<u32>,
    worker: Option<String>,
    started_at: i64,
    queue: String,
    tenant: Option<String>,
}

pub(super) fn expire(
    tx: &Connection,
    journal: &mut Journal,
    default_max_attempts: u32,
) -> Result<Vec<JobId>, Failure> {
    let now = journal.now();
    let lapsed = tx
        .prepare_cached(EXPIRED)?
        .query_map(params![now], |row| {
            Ok(Lapsed {
                id: row.get(0)?,
                token: row.get(1)?,
                failed: row.get(2)?,
                max_attempts: row.get(3)?,
                worker: row.get(4)?,
                started_at: row.get(5)?,
                queue: row.get(6)?,
                tenant: row.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut returned = Vec::with_capacity(lapsed.len());
    for job in lapsed {
        let attempt = job.failed.saturating_add(1);
        let dead = attempt >= job.max_attempts.unwrap_or(default_max_attempts);
        let worker = job.worker.unwrap_or_default();
        let error = format!("lease expired: worker {worker} stopped renewing it");
        let state = if dead { "dead" } else { "ready" };
        tx.prepare_cached(EXPIRE)?
            .execute(params![job.id, job.token, state, now, error])?;
        let record = AttemptRecord {
            attempt,
            worker: worker.clone(),
            started_at: job.started_at,
            finished_at: now,
            outcome: "lease-expired".to_owned(),
            phase: Some(Phase::LeaseExpired),
            error: Some(error.clone()),
            digest: None,
            logs: Vec::new(),
            http: Default::default(),
        };
        insert_attempt(tx, job.id, job.token, &record)?;
        let subject = Subject {
            id: job.id,
            queue: &job.queue,
            tenant: job.tenant.as_deref(),
        };
        let fill = |event: &mut crate::queue::Event| {
            event.attempt = Some(attempt);
            event.phase = Some(Phase::LeaseExpired);
            event.message = Some(error.clone());
            event.worker = Some(worker.clone());
            event.duration_ms = Some(millis_between(job.started_at, now));
        };
        journal.job_event(tx, &subject, EventKind::LeaseExpired, fill)?;
        if dead {
            journal.job_event(tx, &subject, EventKind::DeadLettered, fill)?;
            super::flow::child_finished(tx, journal, job.id)?;
        }
        returned.push(job_id(job.id));
    }
    Ok(returned)
}
