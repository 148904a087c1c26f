//! Schedules and the schedulers' leader lock, in the bucket `<prefix>-schedules`.
//!
//! A schedule is the key `s.<name>` (its definition, next and last tick, as JSON); the leader
//! lock is the key `leader` (`{"holder", "expires_at"}`). Every write is a compare-and-set on
//! the key's revision. A fire publishes the job first, with `Nats-Msg-Id:
//! schedule:<name>:<tick>` (so every scheduler firing one tick publishes one message, which
//! the jobs stream keeps once within its duplicate window), then moves the schedule on with
//! its compare-and-set; only the scheduler whose compare-and-set lands logs `schedule-fired`.
//! A crash between the two leaves the tick due, and whoever fires it again publishes the same
//! message id.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::names::{Lane, check_queue};
use super::record::{Wire, headers};
use super::setup::store;
use super::store::{Inner, entry_at, put_at_revision};
use crate::queue::{EventKind, JobId, NewEvent, QueueError, Timestamp, now};
use crate::schedule::{
    FireAction, Schedule, ScheduleFire, ScheduleState, fired_message, skipped_message,
};

/// The leader lock's key.
const LEADER: &str = "leader";

/// Compare-and-set rounds before an upsert gives up.
const ROUNDS: usize = 16;

/// The leader lock's value.
#[derive(Debug, Serialize, Deserialize)]
struct Leader {
    holder: String,
    expires_at: Timestamp,
}

fn key(name: &str) -> String {
    format!("s.{name}")
}

/// A value of the bucket and its revision (0: none, or deleted at that revision).
async fn read<T: for<'de> Deserialize<'de>>(
    inner: &Inner,
    key: &str,
) -> Result<(Option<T>, u64), QueueError> {
    let (value, revision) = entry_at(&inner.s.schedules, key, "reading a schedule").await?;
    let value = match value {
        Some(v) => Some(
            serde_json::from_slice(&v)
                .map_err(|e| store(&format!("malformed schedule entry {key}"), e))?,
        ),
        None => None,
    };
    Ok((value, revision))
}

/// Write a value if the key's revision is still `revision`; `false` when another writer got
/// there first.
async fn write<T: Serialize>(
    inner: &Inner,
    key: &str,
    value: &T,
    revision: u64,
) -> Result<bool, QueueError> {
    let body = serde_json::to_vec(value).map_err(|e| store("encoding a schedule", e))?;
    let written = put_at_revision(
        &inner.js,
        &inner.s.schedules,
        key,
        body,
        revision,
        "writing a schedule",
    )
    .await?;
    Ok(written.is_some())
}

pub async fn put(
    inner: &Inner,
    schedule: Schedule,
    next_run_at: Timestamp,
) -> Result<bool, QueueError> {
    super::enqueue::check(inner, &[schedule.job(next_run_at)])?;
    let key = key(&schedule.name);
    for _ in 0..ROUNDS {
        let (existing, revision) = read::<ScheduleState>(inner, &key).await?;
        let new = existing.is_none();
        let state = match existing {
            Some(old) if old.schedule.spec == schedule.spec => ScheduleState {
                schedule: schedule.clone(),
                ..old
            },
            _ => ScheduleState {
                schedule: schedule.clone(),
                next_run_at,
                last_run_at: None,
                last_job: None,
            },
        };
        if write(inner, &key, &state, revision).await? {
            return Ok(new);
        }
    }
    Err(QueueError::Store(format!(
        "NATS: schedule {} kept changing while it was written",
        schedule.name
    )))
}

pub async fn remove(inner: &Inner, name: &str) -> Result<bool, QueueError> {
    let key = key(name);
    for _ in 0..ROUNDS {
        let (existing, revision) = read::<ScheduleState>(inner, &key).await?;
        if existing.is_none() {
            return Ok(false);
        }
        match inner
            .s
            .schedules
            .delete_expect_revision(&key, Some(revision))
            .await
        {
            Ok(()) => return Ok(true),
            // Fired meanwhile: read it again.
            Err(e) => tracing::debug!(error = %e, schedule = name, "removing a schedule"),
        }
    }
    Err(QueueError::Store(format!(
        "NATS: schedule {name} kept changing while it was removed"
    )))
}

pub async fn list(inner: &Inner) -> Result<Vec<ScheduleState>, QueueError> {
    let mut keys = inner
        .s
        .schedules
        .keys()
        .await
        .map_err(|e| store("listing schedules", e))?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| store("listing schedules", e))?;
        if key.starts_with("s.") {
            names.push(key);
        }
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for key in names {
        if let (Some(state), _) = read::<ScheduleState>(inner, &key).await? {
            out.push(state);
        }
    }
    Ok(out)
}

pub async fn take_leadership(
    inner: &Inner,
    holder: &str,
    ttl: Duration,
    now: Timestamp,
) -> Result<bool, QueueError> {
    let (current, revision) = read::<Leader>(inner, LEADER).await?;
    let free = match &current {
        None => true,
        Some(lock) => lock.holder == holder || lock.expires_at <= now,
    };
    if !free {
        return Ok(false);
    }
    let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let lock = Leader {
        holder: holder.to_owned(),
        expires_at: now.saturating_add(ttl),
    };
    // Whoever else wrote since the read took it.
    write(inner, LEADER, &lock, revision).await
}

pub async fn fire(inner: &Inner, fire: ScheduleFire) -> Result<Option<JobId>, QueueError> {
    let key = key(&fire.name);
    let (state, revision) = read::<ScheduleState>(inner, &key).await?;
    let Some(mut state) = state.filter(|s| s.next_run_at == fire.due) else {
        return Ok(None);
    };
    state.next_run_at = fire.next;
    let at = now();
    match fire.action {
        FireAction::Enqueue {
            tick,
            job,
            caught_up,
        } => {
            check_queue(&job.queue)?;
            let publish = PublishMessage::build()
                .payload(Bytes::from(job.payload.clone()))
                .headers(headers(&job, at))
                .message_id(format!("schedule:{}:{tick}", fire.name));
            let lane = Lane::of(job.tenant.as_deref(), job.priority);
            let subject = inner.names.lane_subject(&job.queue, &lane);
            let ack = inner
                .js
                .send_publish(subject, publish)
                .await
                .map_err(|e| store("publishing a scheduled job", e))?
                .await
                .map_err(|e| store("publishing a scheduled job", e))?;
            let id = JobId(ack.sequence.to_string());
            state.last_run_at = Some(tick);
            state.last_job = Some(id.clone());
            if !write(inner, &key, &state, revision).await? {
                // Another scheduler moved the schedule on: it fired this tick (its publish
                // and this one were the same message).
                return Ok(None);
            }
            let subject_event = |kind| NewEvent {
                job_id: Some(id.clone()),
                queue: Some(job.queue.clone()),
                tenant: job.tenant.clone(),
                ..NewEvent::new(kind)
            };
            let mut events = Vec::with_capacity(2);
            if !ack.duplicate {
                events.push(Wire {
                    at,
                    event: subject_event(EventKind::Enqueued),
                });
            }
            events.push(Wire {
                at,
                event: NewEvent {
                    worker: fire.worker,
                    message: Some(fired_message(&fire.name, tick, caught_up)),
                    ..subject_event(EventKind::ScheduleFired)
                },
            });
            inner.publish_events(events).await?;
            Ok(Some(id))
        }
        FireAction::Skip { ticks } => {
            if !write(inner, &key, &state, revision).await? {
                return Ok(None);
            }
            let event = NewEvent {
                queue: Some(state.schedule.queue.clone()),
                tenant: state.schedule.tenant.clone(),
                worker: fire.worker,
                message: Some(skipped_message(&fire.name, ticks, fire.due, fire.next)),
                ..NewEvent::new(EventKind::ScheduleSkipped)
            };
            inner.publish_events(vec![Wire { at, event }]).await?;
            Ok(None)
        }
    }
}
