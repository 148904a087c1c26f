//! The worker registry: the table `workers`, one row per worker.
//!
//! A heartbeat is one upsert of the worker's row, with `expires_at` its last heartbeat plus
//! its TTL, and deletes the rows of workers whose TTL has passed (a killed worker's), so the
//! table holds no more than the workers seen in the last TTL. Listing reads only rows not yet
//! past `expires_at`, so it needs no write and works on a read-only file.

use rusqlite::{Connection, params};

use super::Failure;
use crate::queue::{Timestamp, WorkerInfo};

const UPSERT: &str = "INSERT INTO workers \
    (id, host, pid, version, queues, concurrency, running, started_at, last_heartbeat, expires_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
    ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
        version = excluded.version, queues = excluded.queues, \
        concurrency = excluded.concurrency, running = excluded.running, \
        started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat, \
        expires_at = excluded.expires_at";

const DELETE_STALE: &str = "DELETE FROM workers WHERE expires_at <= ?1";

const REMOVE: &str = "DELETE FROM workers WHERE id = ?1 RETURNING expires_at";

const LIVE: &str = "SELECT id, host, pid, version, queues, concurrency, running, started_at, \
    last_heartbeat FROM workers WHERE expires_at > ?1 ORDER BY id";

/// Write `worker`'s row, live until `expires_at`, and drop the rows of workers past theirs.
pub(super) fn heartbeat(
    tx: &Connection,
    worker: &WorkerInfo,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<(), Failure> {
    tx.prepare_cached(DELETE_STALE)?.execute(params![now])?;
    tx.prepare_cached(UPSERT)?.execute(params![
        worker.id,
        worker.host,
        worker.pid,
        worker.version,
        serde_json::to_string(&worker.queues)?,
        worker.concurrency,
        worker.running,
        worker.started_at,
        worker.last_heartbeat,
        expires_at,
    ])?;
    Ok(())
}

/// Delete a worker's row; whether it was live at `now`.
pub(super) fn remove(tx: &Connection, id: &str, now: Timestamp) -> Result<bool, Failure> {
    let mut stmt = tx.prepare_cached(REMOVE)?;
    let mut rows = stmt.query(params![id])?;
    let mut live = false;
    while let Some(row) = rows.next()? {
        live |= row.get::<_, Timestamp>(0)? > now;
    }
    Ok(live)
}

/// The workers live at `now`, by id.
pub(super) fn live(tx: &Connection, now: Timestamp) -> Result<Vec<WorkerInfo>, Failure> {
    let mut stmt = tx.prepare_cached(LIVE)?;
    let rows = stmt.query_map(params![now], |row| {
        Ok((
            WorkerInfo {
                id: row.get(0)?,
                host: row.get(1)?,
                pid: row.get(2)?,
                version: row.get(3)?,
                queues: Vec::new(),
                concurrency: row.get(5)?,
                running: row.get(6)?,
                started_at: row.get(7)?,
                last_heartbeat: row.get(8)?,
            },
            row.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut worker, queues) = row?;
        worker.queues = serde_json::from_str(&queues)?;
        out.push(worker);
    }
    Ok(out)
}
