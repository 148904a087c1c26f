//! Flow control on NATS: tenant lanes, concurrency slots, rate buckets and group locks, kept
//! in the flow bucket (`<prefix>-flow`) and written by compare-and-set, so every worker on
//! every machine counts the same.
//!
//! - **Tenant lanes.** A job with a tenant waits on its tenant's own subject and consumer
//!   (see [`Lane`]); a claim lists the lanes that hold messages (one stream-info request,
//!   cached for [`LANES_FRESH`]) and splits what it wants evenly between the lanes of a band,
//!   so no tenant's backlog stands in front of another's jobs.
//! - **Concurrency slots** (`c.<queue>` for the queue, `c.<queue>.t.<tenant>` per tenant): a
//!   table of `{job, token, until}`; an entry counts while `until` (the lease's expiry) has
//!   not passed. A claim reserves slots first (placeholder entries that lapse after
//!   [`RESERVE_MS`]), fetches at most that many jobs, then swaps the placeholders for the jobs
//!   it took. A settle, release or cancel drops the job's entry; a renewal moves `until`; an
//!   expired lease's entry lapses by itself, so a dead worker's slots come back.
//! - **Rate buckets** (`r.<queue>`, `r.<queue>.t.<tenant>`): a [`Bucket`] per scope; a claim
//!   takes tokens before it fetches and gives back what it did not use.
//! - **Group locks** (`g.<queue>.<base64url(group)>`): `{job, token}` of the group's running
//!   job. A claim of a job with a group reads the lock: held by another job whose record is
//!   running under that token, the job waits (its message comes back later); otherwise the
//!   claim takes the lock with a compare-and-set once its own record says running. A settle,
//!   release, cancel or lease expiry frees it (an expired holder no longer runs under its
//!   token, so the next claimer may take the lock over even if nobody freed it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};

use super::names::Lane;
use super::setup::store;
use super::store::{Inner, entry_at, put_at_revision};
use crate::queue::flow::{Bucket, Rate};
use crate::queue::{JobId, JobState, QueueError, Timestamp, now};

/// How long a claim trusts the tenant lanes it last listed for a queue.
pub const LANES_FRESH: Duration = Duration::from_millis(500);

/// How long a reservation's placeholder slots count if the claimer never swaps them for jobs.
pub const RESERVE_MS: i64 = 10_000;

/// How often a compare-and-set of flow state is retried against other writers.
const ROUNDS: usize = 64;

/// What flow control keeps in memory: the tenant lanes seen per queue.
#[derive(Default)]
pub struct FlowCache {
    lanes: Mutex<HashMap<String, (Instant, Vec<Lane>)>>,
    turns: Mutex<HashMap<String, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The tenant lanes of `queue` that hold messages (listed at most [`LANES_FRESH`] ago),
/// rotated by one each call so that no tenant is always served first.
pub async fn tenant_lanes(inner: &Inner, queue: &str) -> Result<Vec<Lane>, QueueError> {
    let cached = lock(&inner.flow.lanes)
        .get(queue)
        .filter(|(at, _)| at.elapsed() < LANES_FRESH)
        .map(|(_, lanes)| lanes.clone());
    let mut lanes = match cached {
        Some(lanes) => lanes,
        None => {
            let mut info = inner
                .s
                .jobs
                .info_with_subjects(inner.names.tenant_lanes(queue))
                .await
                .map_err(|e| store("listing tenant lanes", e))?;
            let mut lanes = Vec::new();
            while let Some((subject, count)) = info
                .try_next()
                .await
                .map_err(|e| store("listing tenant lanes", e))?
            {
                if count > 0
                    && let Some((_, lane)) = inner.names.lane_of(&subject)
                {
                    lanes.push(lane);
                }
            }
            lanes.sort();
            lock(&inner.flow.lanes).insert(queue.to_owned(), (Instant::now(), lanes.clone()));
            lanes
        }
    };
    if !lanes.is_empty() {
        let mut turns = lock(&inner.flow.turns);
        let turn = turns.entry(queue.to_owned()).or_default();
        *turn = turn.wrapping_add(1);
        let n = lanes.len();
        lanes.rotate_left(*turn % n);
    }
    Ok(lanes)
}

/// Forget the tenant lanes listed for `queue`: a new tenant may have jobs.
pub fn lanes_changed(inner: &Inner, queue: &str) {
    lock(&inner.flow.lanes).remove(queue);
}

/// The slot table key of a queue.
pub fn queue_slots(queue: &str) -> String {
    format!("c.{queue}")
}

/// The slot table key of a tenant lane's tenant on a queue.
pub fn tenant_slots(queue: &str, token: &str) -> String {
    format!("c.{queue}.t.{token}")
}

/// The rate bucket key of a queue.
pub fn queue_rate(queue: &str) -> String {
    format!("r.{queue}")
}

/// The rate bucket key of a tenant on a queue.
pub fn tenant_rate(queue: &str, token: &str) -> String {
    format!("r.{queue}.t.{token}")
}

/// The group lock key of a group on a queue.
pub fn group_key(queue: &str, group: &str) -> String {
    format!("g.{queue}.{}", URL_SAFE_NO_PAD.encode(group))
}

/// One entry of a slot table: a job's claim, or (`job` empty) a placeholder of reservation
/// `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    job: String,
    token: i64,
    until: Timestamp,
}

/// A value of the flow bucket and its revision (0: none). A malformed value reads as none, so
/// the next write replaces it.
async fn read<T: for<'de> Deserialize<'de>>(
    inner: &Inner,
    key: &str,
) -> Result<(Option<T>, u64), QueueError> {
    let (value, revision) = entry_at(&inner.s.flow, key, "reading flow state").await?;
    Ok((
        value.and_then(|v| serde_json::from_slice(&v).ok()),
        revision,
    ))
}

/// Write a value of the flow bucket if its revision is still `revision`; `false` when another
/// writer got there first.
async fn write<T: Serialize>(
    inner: &Inner,
    key: &str,
    value: &T,
    revision: u64,
) -> Result<bool, QueueError> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let written = put_at_revision(
        &inner.js,
        &inner.s.flow,
        key,
        body,
        revision,
        "writing flow state",
    )
    .await?;
    Ok(written.is_some())
}

/// Read-modify-write a value of the flow bucket; `change` returns what to hand back, and
/// whether to write.
async fn update<T, R>(
    inner: &Inner,
    key: &str,
    mut change: impl FnMut(&mut T) -> (R, bool),
) -> Result<R, QueueError>
where
    T: Serialize + for<'de> Deserialize<'de> + Default,
{
    for round in 0..ROUNDS {
        let (value, revision) = read::<T>(inner, key).await?;
        let mut value = value.unwrap_or_default();
        let (out, changed) = change(&mut value);
        if !changed || write(inner, key, &value, revision).await? {
            return Ok(out);
        }
        let most = 1u64 << round.min(4);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=most))).await;
    }
    Err(QueueError::Store(format!(
        "flow state {key} kept changing under {ROUNDS} attempts to write it"
    )))
}

/// Reserve up to `want` of `limit` slots in table `key`. Returns how many were granted and the
/// reservation's id (to [`commit`] with).
pub async fn reserve(
    inner: &Inner,
    key: &str,
    limit: u32,
    want: usize,
) -> Result<(usize, i64), QueueError> {
    let id = i64::from(fastrand::u32(1..));
    let granted = update::<Vec<Slot>, usize>(inner, key, |slots| {
        let now = now();
        slots.retain(|s| s.until > now);
        let n = want.min((limit as usize).saturating_sub(slots.len()));
        for _ in 0..n {
            slots.push(Slot {
                job: String::new(),
                token: id,
                until: now + RESERVE_MS,
            });
        }
        (n, n > 0)
    })
    .await?;
    Ok((granted, id))
}

/// Swap reservation `id`'s placeholders in table `key` for the claims taken:
/// `(job, token, lease expiry)`.
pub async fn commit(
    inner: &Inner,
    key: &str,
    id: i64,
    taken: &[(JobId, i64, Timestamp)],
) -> Result<(), QueueError> {
    update::<Vec<Slot>, ()>(inner, key, |slots| {
        let now = now();
        slots.retain(|s| s.until > now && !(s.job.is_empty() && s.token == id));
        slots.extend(taken.iter().map(|(job, token, until)| Slot {
            job: job.0.clone(),
            token: *token,
            until: *until,
        }));
        ((), true)
    })
    .await
}

/// Drop the entries of these claims from table `key`.
pub async fn free(inner: &Inner, key: &str, claims: &[(JobId, i64)]) -> Result<(), QueueError> {
    update::<Vec<Slot>, ()>(inner, key, |slots| {
        let before = slots.len();
        let now = now();
        slots.retain(|s| {
            s.until > now && !claims.iter().any(|(j, t)| j.0 == s.job && *t == s.token)
        });
        ((), slots.len() != before)
    })
    .await
}

/// Move the `until` of these claims' entries in table `key` to their renewed lease expiry.
pub async fn refresh(
    inner: &Inner,
    key: &str,
    claims: &[(JobId, i64, Timestamp)],
) -> Result<(), QueueError> {
    update::<Vec<Slot>, ()>(inner, key, |slots| {
        let mut changed = false;
        for s in slots.iter_mut() {
            if let Some((_, _, until)) = claims
                .iter()
                .find(|(j, t, _)| j.0 == s.job && *t == s.token)
            {
                s.until = *until;
                changed = true;
            }
        }
        ((), changed)
    })
    .await
}

/// Take up to `want` starts from rate bucket `key`. Returns how many were taken.
pub async fn take(inner: &Inner, key: &str, rate: Rate, want: usize) -> Result<usize, QueueError> {
    update::<Option<Bucket>, usize>(inner, key, |bucket| {
        let now = now();
        let mut b = bucket
            .unwrap_or_else(|| Bucket::full(rate, now))
            .refilled(rate, now);
        let n = want.min(b.available());
        b.take(n);
        *bucket = Some(b);
        (n, n > 0)
    })
    .await
}

/// Give `n` unused starts back to rate bucket `key`.
pub async fn give_back(inner: &Inner, key: &str, rate: Rate, n: usize) -> Result<(), QueueError> {
    if n == 0 {
        return Ok(());
    }
    update::<Option<Bucket>, ()>(inner, key, |bucket| {
        let now = now();
        let mut b = bucket
            .unwrap_or_else(|| Bucket::full(rate, now))
            .refilled(rate, now);
        b.tokens = (b.tokens + n as f64).min(f64::from(rate.limit));
        *bucket = Some(b);
        ((), true)
    })
    .await
}

/// A group lock's holder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    job: String,
    token: i64,
}

/// Who holds a group now.
pub enum Group {
    /// Nobody that still runs: free to take from this revision.
    Free(u64),
    /// This job runs under the lock.
    Held(JobId),
}

/// Whether group lock `key` is held by a job that still runs under the token it took it with.
pub async fn group(inner: &Inner, key: &str) -> Result<Group, QueueError> {
    let (holder, revision) = read::<Holder>(inner, key).await?;
    let Some(holder) = holder.filter(|h| !h.job.is_empty()) else {
        return Ok(Group::Free(revision));
    };
    let job = JobId(holder.job);
    let runs = inner
        .get(&job)
        .await?
        .is_some_and(|(r, _)| r.state == JobState::Running && r.token == holder.token);
    Ok(if runs {
        Group::Held(job)
    } else {
        Group::Free(revision)
    })
}

/// Take group lock `key` for a claim, if it is still at `revision`.
pub async fn hold_group(
    inner: &Inner,
    key: &str,
    revision: u64,
    job: &JobId,
    token: i64,
) -> Result<bool, QueueError> {
    let holder = Holder {
        job: job.0.clone(),
        token,
    };
    write(inner, key, &holder, revision).await
}

/// Free group lock `key` if this claim holds it.
pub async fn free_group(
    inner: &Inner,
    key: &str,
    job: &JobId,
    token: i64,
) -> Result<(), QueueError> {
    update::<Holder, ()>(inner, key, |holder| {
        if holder.job == job.0 && holder.token == token {
            *holder = Holder::default();
            ((), true)
        } else {
            ((), false)
        }
    })
    .await
}

/// Free what a claim of `id` under `token` held: its slots and its group's lock. Called once
/// its record no longer runs under `token` (settled, released, expired, cancelled).
pub async fn let_go(
    inner: &Inner,
    queue: &str,
    id: &JobId,
    token: i64,
    slots: &[String],
    group: Option<&str>,
) -> Result<(), QueueError> {
    for key in slots {
        free(inner, key, &[(id.clone(), token)]).await?;
    }
    if let Some(g) = group {
        free_group(inner, &group_key(queue, g), id, token).await?;
    }
    Ok(())
}
