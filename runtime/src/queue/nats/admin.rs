//! The dead-letter queue and retention: replay, purge, prune; and recording free events.

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;

use super::enqueue::{claim_key, key_name};
use super::names::Band;
use super::read::{dead_records, matches};
use super::record::{Record, WAKE};
use super::setup::store;
use super::store::Inner;
use crate::queue::{DlqFilter, EventKind, JobId, JobState, NewEvent, QueueError, Timestamp, now};

pub async fn record(inner: &Inner, event: NewEvent) -> Result<(), QueueError> {
    let event = match &event.job_id {
        Some(id) => {
            let Some((r, _)) = inner.get(id).await? else {
                return Err(QueueError::NotFound(id.clone()));
            };
            NewEvent {
                queue: event.queue.clone().or(Some(r.queue)),
                tenant: event.tenant.clone().or(r.tenant),
                ..event
            }
        }
        None => event,
    };
    inner.publish_events(vec![event]).await.map(drop)
}

pub async fn replay(inner: &Inner, filter: &DlqFilter) -> Result<u64, QueueError> {
    let mut events = Vec::new();
    for (id, found) in dead_records(inner, filter).await? {
        // A key an unfinished job holds stays with it: the dead job stays dead.
        if let Some(key) = &found.key
            && !take_key_back(inner, &found.queue, key, &id).await?
        {
            continue;
        }
        let now = now();
        let replayed = inner
            .update(&id, None, |r| {
                if !matches(filter, &id, r) {
                    return None;
                }
                r.state = JobState::Ready;
                r.run_at = now;
                r.updated_at = now;
                r.attempts = 0;
                r.started = 0;
                Some(())
            })
            .await?;
        let Some(((), r, _)) = replayed else { continue };
        wake(inner, &id, &r).await?;
        inner.purge(&inner.s.dlq, inner.names.job_dlq(&id)).await?;
        events.push(r.event(&id, NewEvent::new(EventKind::Replayed)));
    }
    let n = events.len() as u64;
    inner.publish_events(events).await?;
    Ok(n)
}

/// Point a dead job's idempotency key back at it, unless an unfinished job holds it.
async fn take_key_back(
    inner: &Inner,
    queue: &str,
    key: &str,
    id: &JobId,
) -> Result<bool, QueueError> {
    let entry = inner
        .s
        .keys
        .entry(key_name(queue, key))
        .await
        .map_err(|e| store("reading an idempotency key", e))?;
    let generation = match entry {
        None => 0,
        Some(entry) => {
            let holder = JobId(String::from_utf8_lossy(&entry.value).into_owned());
            if holder != *id
                && let Some((r, _)) = inner.get(&holder).await?
                && !r.is_finished()
            {
                return Ok(false);
            }
            entry.revision
        }
    };
    claim_key(inner, queue, key, id, generation).await
}

/// Put a message on the job's queue that makes a worker claim it again.
async fn wake(inner: &Inner, id: &JobId, r: &Record) -> Result<(), QueueError> {
    let mut headers = HeaderMap::new();
    headers.insert(WAKE, id.0.as_str());
    let subject = inner.names.job_subject(&r.queue, Band::of(r.priority));
    inner
        .js
        .send_publish(subject, PublishMessage::build().headers(headers))
        .await
        .map_err(|e| store("waking a job", e))?
        .await
        .map_err(|e| store("waking a job", e))?;
    Ok(())
}

/// Delete a job outright: its record, its events, its dead letter, and its first message if
/// it is still queued (a worker seeing it with no record would take it for a new job).
async fn delete(inner: &Inner, id: &JobId) -> Result<(), QueueError> {
    drop_message(inner, id).await;
    inner
        .purge(&inner.s.records_stream, inner.names.record_subject(id))
        .await?;
    inner
        .purge(&inner.s.events, inner.names.job_events(id))
        .await?;
    inner.purge(&inner.s.dlq, inner.names.job_dlq(id)).await?;
    Ok(())
}

pub async fn purge(inner: &Inner, filter: &DlqFilter) -> Result<u64, QueueError> {
    let mut n = 0;
    for (id, _) in dead_records(inner, filter).await? {
        // Read again: a replay may have taken it meanwhile.
        if let Some((r, _)) = inner.get(&id).await?
            && matches(filter, &id, &r)
        {
            delete(inner, &id).await?;
            n += 1;
        }
    }
    Ok(n)
}

pub async fn prune(inner: &Inner, before: Timestamp) -> Result<u64, QueueError> {
    let mut n = 0;
    for (id, r) in inner.records().await? {
        if matches!(r.state, JobState::Succeeded | JobState::Cancelled) && r.updated_at < before {
            delete(inner, &id).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Remove a job's first message from its queue, if it is still there.
pub async fn drop_message(inner: &Inner, id: &JobId) {
    if let Some(seq) = super::names::seq_of(id) {
        // Gone already (acked, or never queued here) is the usual answer.
        let _ = inner.s.jobs.delete_message(seq).await;
    }
}
