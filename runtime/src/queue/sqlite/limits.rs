//! Flow control in claims: concurrency and rate limits for a queue and for each tenant, and
//! fair shares between tenants, counted across every process sharing the file.
//!
//! A claim with a [`Flow`] picks its jobs here, inside the claim's write transaction (so the
//! counts it reads cannot change before it leases what it picked), then leases them one by
//! one. Running jobs are counted from the jobs table itself (`jobs_tenant_running`), so a
//! settle, a release or an expired lease frees a slot by moving its job out of `running`;
//! rate limits are token buckets in `rate_buckets`, spent as jobs are picked.
//!
//! Fair shares: the claim lists the tenants with claimable jobs (a loose index scan of
//! `jobs_tenant_claimable`: one index seek per tenant, at most [`MAX_TENANTS`] per claim,
//! starting after the last tenant the previous claim reached), reads each one's head in claim
//! order, and hands out jobs one at a time to the tenant with the fewest running and picked,
//! so a tenant with ten jobs is served in the first claims whatever another tenant's backlog.
//! Without `fair`, tenant limits still hold, and jobs go in claim order across tenants.
//!
//! Jobs without a tenant count as one more tenant here; the tenant indexes leave them out,
//! and `jobs_untenanted_claimable` holds them instead, so whether a queue has any is one
//! seek, whatever the other tenants' backlogs.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::Failure;
use super::columns::int;
use super::lease::group_free;
use crate::queue::flow::{Bucket, Flow, Rate};
use crate::queue::{QueueClaim, Timestamp};

/// The most tenants one claim looks at.
pub(super) const MAX_TENANTS: usize = 512;

/// The queue's running jobs by tenant.
pub(super) const RUNNING: &str = "SELECT tenant, count(*) FROM jobs \
    WHERE queue = ?1 AND state = 'running' AND tenant IS NOT NULL GROUP BY tenant";

/// The queue's running jobs without a tenant (through `jobs_leased`: running jobs are few).
pub(super) const RUNNING_UNTENANTED: &str = "SELECT count(*) FROM jobs \
    WHERE state = 'running' AND queue = ?1 AND tenant IS NULL";

/// The next tenant with claimable jobs after `?2` (one seek of `jobs_tenant_claimable`).
pub(super) const NEXT_TENANT: &str = "SELECT tenant FROM jobs \
    WHERE queue = ?1 AND state IN ('ready', 'scheduled') AND tenant IS NOT NULL \
      AND tenant > ?2 \
    ORDER BY tenant LIMIT 1";

/// The first tenant with claimable jobs.
pub(super) const FIRST_TENANT: &str = "SELECT tenant FROM jobs \
    WHERE queue = ?1 AND state IN ('ready', 'scheduled') AND tenant IS NOT NULL \
    ORDER BY tenant LIMIT 1";

/// A tenant's (`?2`) claimable jobs in claim order, as many as `?4`.
pub(super) const TENANT_HEADS: &str = concat!(
    "SELECT id, group_key, priority, run_at FROM jobs AS j \
    WHERE queue = ?1 AND tenant IS NOT NULL AND tenant = ?2 \
      AND state IN ('ready', 'scheduled') AND run_at <= ?3 \
      AND ",
    group_free!(),
    " ORDER BY priority DESC, run_at, id LIMIT ?4"
);

/// The queue's claimable jobs in claim order, as many as `?4` (no per-tenant counting; `?2`
/// unused).
pub(super) const HEADS: &str = concat!(
    "SELECT id, group_key, priority, run_at FROM jobs AS j \
    WHERE queue = ?1 AND ?2 IS NULL AND state IN ('ready', 'scheduled') AND run_at <= ?3 \
      AND ",
    group_free!(),
    " ORDER BY priority DESC, run_at, id LIMIT ?4"
);

/// The claimable jobs without a tenant in claim order, as many as `?4` (`?2` unused), through
/// `jobs_untenanted_claimable`.
pub(super) const UNTENANTED_HEADS: &str = concat!(
    "SELECT id, group_key, priority, run_at FROM jobs AS j \
    WHERE queue = ?1 AND ?2 IS NULL AND tenant IS NULL \
      AND state IN ('ready', 'scheduled') AND run_at <= ?3 \
      AND ",
    group_free!(),
    " ORDER BY priority DESC, run_at, id LIMIT ?4"
);

const BUCKET: &str = "SELECT tokens, at FROM rate_buckets WHERE scope = ?1";

const SAVE_BUCKET: &str =
    "INSERT OR REPLACE INTO rate_buckets (scope, tokens, at) VALUES (?1, ?2, ?3)";

/// A claimable job, with what orders it.
struct Head {
    id: i64,
    group: Option<String>,
    priority: i32,
    run_at: Timestamp,
}

/// One tenant's share of a claim.
struct Tenant {
    name: Option<String>,
    running: usize,
    picked: usize,
    /// How many more this claim may take for the tenant.
    room: usize,
    heads: std::vec::IntoIter<Head>,
    next: Option<Head>,
}

/// Which jobs a claim of `wanted` may lease now, in the order to lease them; spends the rate
/// limits' tokens for them. `cursor` is where the previous claim's tenant listing stopped.
pub(super) fn pick(
    tx: &Connection,
    now: Timestamp,
    wanted: &QueueClaim,
    cursor: &mut Option<String>,
) -> Result<Vec<i64>, Failure> {
    let flow = wanted.flow;
    let queue = wanted.queue.as_str();
    let running = running(tx, queue)?;
    let mut room = wanted.limit;
    if let Some(limit) = flow.concurrency {
        let total: usize = running.values().sum();
        room = room.min((limit as usize).saturating_sub(total));
    }
    let mut queue_bucket = match flow.rate {
        Some(rate) => {
            let bucket = bucket(tx, &queue_scope(queue), rate, now)?;
            room = room.min(bucket.available());
            Some(bucket)
        }
        None => None,
    };
    if room == 0 {
        return Ok(Vec::new());
    }
    let picked = if flow.per_tenant() {
        per_tenant(tx, now, queue, flow, room, &running, cursor)?
    } else {
        let heads = heads(tx, HEADS, queue, None, now, room)?;
        let mut groups = HashSet::new();
        heads
            .into_iter()
            .filter(|h| h.group.as_ref().is_none_or(|g| groups.insert(g.clone())))
            .map(|h| (h.id, None))
            .collect()
    };
    // Saved only when tokens were taken: a bucket refills the same from what is stored, and
    // a claim that takes nothing then writes nothing (no commit for idle workers to wake on,
    // see `SqliteBackend::wait_for_jobs`).
    if let Some(bucket) = &mut queue_bucket
        && !picked.is_empty()
    {
        bucket.take(picked.len());
        save(tx, &queue_scope(queue), *bucket)?;
    }
    if let Some(rate) = flow.tenant_rate {
        let mut spent: BTreeMap<Option<&str>, usize> = BTreeMap::new();
        for (_, tenant) in &picked {
            *spent.entry(tenant.as_deref()).or_default() += 1;
        }
        for (tenant, n) in spent {
            let scope = tenant_scope(queue, tenant);
            let mut bucket = bucket(tx, &scope, rate, now)?;
            bucket.take(n);
            save(tx, &scope, bucket)?;
        }
    }
    Ok(picked.into_iter().map(|(id, _)| id).collect())
}

/// Picks under per-tenant limits and fair shares: `(job id, tenant)` in lease order.
fn per_tenant(
    tx: &Connection,
    now: Timestamp,
    queue: &str,
    flow: Flow,
    room: usize,
    running: &HashMap<Option<String>, usize>,
    cursor: &mut Option<String>,
) -> Result<Vec<(i64, Option<String>)>, Failure> {
    let mut tenants = Vec::new();
    for name in tenants_with_work(tx, queue, cursor)? {
        let ran = running.get(&name).copied().unwrap_or(0);
        let mut tenant_room = room;
        if let Some(limit) = flow.tenant_concurrency {
            tenant_room = tenant_room.min((limit as usize).saturating_sub(ran));
        }
        if let Some(rate) = flow.tenant_rate {
            let b = bucket(tx, &tenant_scope(queue, name.as_deref()), rate, now)?;
            tenant_room = tenant_room.min(b.available());
        }
        if tenant_room == 0 {
            continue;
        }
        let sql = if name.is_some() {
            TENANT_HEADS
        } else {
            UNTENANTED_HEADS
        };
        let heads = heads(tx, sql, queue, name.as_deref(), now, tenant_room)?;
        let mut heads = heads.into_iter();
        let next = heads.next();
        if next.is_some() {
            tenants.push(Tenant {
                name,
                running: ran,
                picked: 0,
                room: tenant_room,
                heads,
                next,
            });
        }
    }
    let mut picked = Vec::with_capacity(room);
    let mut groups = HashSet::new();
    while picked.len() < room {
        // The tenant to serve next: fair, the fewest running and picked; otherwise the best
        // head in claim order.
        let best = tenants
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.next.as_ref().map(|h| (i, t, h)))
            .min_by_key(|(_, t, h)| {
                let share = if flow.fair { t.running + t.picked } else { 0 };
                (share, std::cmp::Reverse(h.priority), h.run_at, h.id)
            })
            .map(|(i, _, _)| i);
        let Some(i) = best else { break };
        let t = &mut tenants[i];
        let Some(head) = t.next.take() else { break };
        if head.group.as_ref().is_none_or(|g| groups.insert(g.clone())) {
            picked.push((head.id, t.name.clone()));
            t.picked += 1;
        }
        if t.picked < t.room {
            t.next = t.heads.next();
        }
    }
    Ok(picked)
}

/// The queue's running jobs by tenant.
fn running(tx: &Connection, queue: &str) -> Result<HashMap<Option<String>, usize>, Failure> {
    let mut statement = tx.prepare_cached(RUNNING)?;
    let rows = statement.query_map(params![queue], |row| {
        Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut out = HashMap::new();
    for row in rows {
        let (tenant, n) = row?;
        out.insert(tenant, usize::try_from(n).unwrap_or(0));
    }
    let untenanted: i64 = tx
        .prepare_cached(RUNNING_UNTENANTED)?
        .query_row(params![queue], |row| row.get(0))?;
    if untenanted > 0 {
        out.insert(None, usize::try_from(untenanted).unwrap_or(0));
    }
    Ok(out)
}

/// The tenants with claimable jobs (`None` first if jobs without a tenant are among them), at
/// most [`MAX_TENANTS`], starting after `cursor` and wrapping around; `cursor` moves to the
/// last one listed when the listing was cut short.
fn tenants_with_work(
    tx: &Connection,
    queue: &str,
    cursor: &mut Option<String>,
) -> Result<Vec<Option<String>>, Failure> {
    let mut out = Vec::new();
    let untenanted = tx
        .prepare_cached(UNTENANTED_HEADS)?
        .query_row(
            params![queue, Option::<&str>::None, Timestamp::MAX, 1],
            |_| Ok(()),
        )
        .optional()?;
    if untenanted.is_some() {
        out.push(None);
    }
    let next = |after: Option<&str>| -> Result<Option<String>, Failure> {
        Ok(match after {
            Some(after) => tx
                .prepare_cached(NEXT_TENANT)?
                .query_row(params![queue, after], |r| r.get(0))
                .optional()?,
            None => tx
                .prepare_cached(FIRST_TENANT)?
                .query_row(params![queue], |r| r.get(0))
                .optional()?,
        })
    };
    let start = cursor.take();
    // From after the cursor to the end, then from the start up to the cursor.
    let mut at = next(start.as_deref())?;
    while let Some(tenant) = at {
        if out.len() >= MAX_TENANTS {
            *cursor = out.last().cloned().flatten();
            return Ok(out);
        }
        at = next(Some(&tenant))?;
        out.push(Some(tenant));
    }
    if let Some(start) = start {
        let mut at = next(None)?;
        while let Some(tenant) = at.filter(|t| *t <= start) {
            if out.len() >= MAX_TENANTS {
                *cursor = out.last().cloned().flatten();
                return Ok(out);
            }
            at = next(Some(&tenant))?;
            out.push(Some(tenant));
        }
    }
    Ok(out)
}

/// Claimable jobs in claim order through `sql` ([`HEADS`] or [`TENANT_HEADS`]).
fn heads(
    tx: &Connection,
    sql: &str,
    queue: &str,
    tenant: Option<&str>,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Head>, Failure> {
    let mut statement = tx.prepare_cached(sql)?;
    let rows = statement.query_map(params![queue, tenant, now, int(limit)], |row| {
        Ok(Head {
            id: row.get(0)?,
            group: row.get(1)?,
            priority: row.get(2)?,
            run_at: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A rate limit's bucket, refilled to `now` (full when never used).
fn bucket(tx: &Connection, scope: &str, rate: Rate, now: Timestamp) -> Result<Bucket, Failure> {
    let stored = tx
        .prepare_cached(BUCKET)?
        .query_row(params![scope], |row| {
            Ok(Bucket {
                tokens: row.get(0)?,
                at: row.get(1)?,
            })
        })
        .optional()?;
    Ok(stored
        .unwrap_or_else(|| Bucket::full(rate, now))
        .refilled(rate, now))
}

fn save(tx: &Connection, scope: &str, bucket: Bucket) -> Result<(), Failure> {
    tx.prepare_cached(SAVE_BUCKET)?
        .execute(params![scope, bucket.tokens, bucket.at])?;
    Ok(())
}

fn queue_scope(queue: &str) -> String {
    format!("q:{queue}")
}

fn tenant_scope(queue: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("t:{queue}:{t}"),
        None => format!("n:{queue}"),
    }
}
