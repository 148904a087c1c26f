//! The dead-letter queue and retention: replay, purge, prune; and recording free events.

use super::children::tell;
use super::enqueue::take_key;
use super::read::{dead_records, matches};
use super::record::Wire;
use super::setup::store;
use super::spawn::wake;
use super::store::Inner;
use crate::queue::{
    DlqFilter, EventKind, JobId, JobState, NewEvent, Prune, QueueError, Timestamp, now,
};

pub async fn record(inner: &Inner, event: NewEvent) -> Result<(), QueueError> {
    let wire = match event.job_id.clone() {
        // An event about a job joins its timeline.
        Some(id) => inner
            .append(&id, event)
            .await?
            .ok_or(QueueError::NotFound(id))?,
        None => Wire { at: now(), event },
    };
    inner.publish_events(vec![wire]).await
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
                Some(r.note(&id, now, NewEvent::new(EventKind::Replayed)))
            })
            .await?;
        let Some((event, r, _)) = replayed else {
            continue;
        };
        // A replayed child runs again: its parent must not count it as ended (told before it
        // can end again).
        if let Some(parent) = &r.parent {
            tell(inner, parent, &[(id.clone(), r.clone())], false).await?;
        }
        wake(inner, &id, &r, None).await?;
        inner.purge(&inner.s.dlq, inner.names.job_dlq(&id)).await?;
        events.push(event);
    }
    let n = events.len() as u64;
    inner.publish_events(events).await?;
    Ok(n)
}

/// Delete a job outright: its record (with its timeline), its dead letter, and its first
/// message if it is still queued (a worker seeing it with no record would take it for a new
/// job). The event log is a log: what it told of the job stays until `prune` trims it.
async fn delete(inner: &Inner, id: &JobId) -> Result<(), QueueError> {
    drop_message(inner, id).await;
    inner
        .purge(&inner.s.records_stream, inner.names.record_subject(id))
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

pub async fn prune(inner: &Inner, prune: Prune) -> Result<u64, QueueError> {
    let mut n = 0;
    for (id, r) in inner.records().await? {
        if prune
            .cutoff(r.state)
            .is_some_and(|before| r.updated_at < before)
        {
            delete(inner, &id).await?;
            n += 1;
        }
    }
    // The stage and the log are kept as long as the longest retention asks.
    if let Some(before) = prune.earliest() {
        super::spawn::prune_stage(inner, before).await?;
        trim_log(inner, before).await?;
    }
    Ok(n)
}

/// Drop the event-log messages published before `before` (jobs keep their own timelines in
/// their records): a binary search for the first message at or after it, then one purge.
async fn trim_log(inner: &Inner, before: Timestamp) -> Result<(), QueueError> {
    let info = inner
        .s
        .events
        .get_info()
        .await
        .map_err(|e| store("reading the event log's state", e))?;
    let (mut low, mut high) = (info.state.first_sequence, info.state.last_sequence + 1);
    if info.state.messages == 0 {
        return Ok(());
    }
    // The first sequence in `low..high` whose message is at or after `before` (`high` if
    // none): messages are stored in time order.
    while low < high {
        let mid = low + (high - low) / 2;
        let at = match inner.s.events.direct_get(mid).await {
            Ok(m) => super::record::millis(m.time),
            // A gap (trimmed meanwhile): treat as old.
            Err(_) => Timestamp::MIN,
        };
        if at < before {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    if low > info.state.first_sequence {
        inner
            .s
            .events
            .purge()
            .sequence(low)
            .await
            .map_err(|e| store("trimming the event log", e))?;
    }
    Ok(())
}

/// Remove a job's first message from its queue, if it is still there.
pub async fn drop_message(inner: &Inner, id: &JobId) {
    if let Some(seq) = super::names::seq_of(id) {
        // Gone already (acked, or never queued here) is the usual answer.
        let _ = inner.s.jobs.delete_message(seq).await;
    }
}
