//! The dead-letter queue and retention: replay, purge, prune; and recording free events.

use super::children::tell;
use super::enqueue::take_key;
use super::read::{dead_records, matches};
use super::spawn::wake;
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
            && take_key(inner, &found.queue, key, &id).await?.is_some()
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
        // A replayed child runs again: its parent must not count it as ended (told before it
        // can end again).
        if let Some(parent) = &r.parent {
            tell(inner, parent, &[(id.clone(), r.clone())], false).await?;
        }
        wake(inner, &id, &r, None).await?;
        inner.purge(&inner.s.dlq, inner.names.job_dlq(&id)).await?;
        events.push(r.event(&id, NewEvent::new(EventKind::Replayed)));
    }
    let n = events.len() as u64;
    inner.publish_events(events).await?;
    Ok(n)
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
    super::spawn::prune_stage(inner, before).await?;
    Ok(n)
}

/// Remove a job's first message from its queue, if it is still there.
pub async fn drop_message(inner: &Inner, id: &JobId) {
    if let Some(seq) = super::names::seq_of(id) {
        // Gone already (acked, or never queued here) is the usual answer.
        let _ = inner.s.jobs.delete_message(seq).await;
    }
}
