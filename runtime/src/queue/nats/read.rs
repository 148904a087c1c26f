//! Reads: one job, listings, counts, the event log.

use std::collections::BTreeMap;

use super::children;
use super::names::{id_path, seq_of};
use super::record::{self, Record, WAKE, Wire};
use super::store::{Inner, LOG_INDEX_BITS, log_seq};
use crate::queue::{
    DlqFilter, Event, EventFilter, EventKind, JobDetail, JobFilter, JobId, JobState, JobSummary,
    NewEvent, QueueCounts, QueueError, now,
};

/// The default listing limit, as in SQLite.
const DEFAULT_LIMIT: usize = 100;

/// The default number of events read at once, as in SQLite.
const DEFAULT_EVENTS: usize = 1000;

/// The record of a job whose message is still on its queue and that no worker has seen yet,
/// read from the message: enqueueing publishes the message alone, and the first claim (or a
/// cancel) writes the record.
pub async fn unclaimed(inner: &Inner, id: &JobId) -> Result<Option<Record>, QueueError> {
    let Some(seq) = seq_of(id) else {
        return Ok(None);
    };
    let Ok(message) = inner.s.jobs.direct_get(seq).await else {
        return Ok(None);
    };
    Ok(from_message(
        inner,
        id,
        &message.subject,
        Some(&message.headers),
        &message.payload,
        record::millis(message.time),
    ))
}

/// A new job's record, read from its message (`None` for a message that names an existing
/// job, or whose headers do not parse: its claimer dead-letters it).
fn from_message(
    inner: &Inner,
    id: &JobId,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    published: crate::queue::Timestamp,
) -> Option<Record> {
    if headers.is_some_and(|h| h.get(WAKE).is_some()) {
        return None;
    }
    let (queue, _) = inner.names.lane_of(subject)?;
    let (job, at) = record::parse(&queue, headers, payload, published).ok()?;
    let mut r = Record::new(&job, at);
    let spool_client = headers.is_some_and(|h| h.get(record::ENQUEUED_AT).is_some());
    r.note(
        id,
        at,
        NewEvent {
            message: (!spool_client).then(|| format!("published on {subject}")),
            duration_ms: (r.run_at > at).then(|| u64::try_from(r.run_at - at).unwrap_or(0)),
            ..NewEvent::new(EventKind::Enqueued)
        },
    );
    Some(r)
}

/// Every job: the records, and the jobs whose messages no worker has seen yet.
pub async fn every(inner: &Inner) -> Result<Vec<(JobId, Record)>, QueueError> {
    let mut records = inner.records().await?;
    let known: std::collections::HashSet<JobId> =
        records.iter().map(|(id, _)| id.clone()).collect();
    let queued = inner.queued().await?;
    for m in queued {
        let id = JobId(m.seq.to_string());
        if known.contains(&id) {
            continue;
        }
        if let Some(r) = from_message(
            inner,
            &id,
            &m.subject,
            m.headers.as_ref(),
            &m.payload,
            m.published,
        ) {
            records.push((id, r));
        }
    }
    Ok(records)
}

pub async fn job(inner: &Inner, id: &JobId) -> Result<Option<JobDetail>, QueueError> {
    let record = match inner.get(id).await? {
        Some((r, _)) => r,
        None => match unclaimed(inner, id).await? {
            Some(r) => r,
            None => return Ok(None),
        },
    };
    let events = record.events(id);
    let children = children::outcomes(inner, id, &record).await?;
    Ok(Some(record.detail(id, events, children, now())))
}

/// Newest first: by enqueue time, then by id (a stream sequence, then child indices).
fn newest_first(records: &mut [(JobId, Record)]) {
    records.sort_by_cached_key(|(id, r)| std::cmp::Reverse((r.enqueued_at, id_path(id))));
}

/// Every job, newest first.
async fn all(inner: &Inner) -> Result<Vec<(JobId, Record)>, QueueError> {
    let mut records = every(inner).await?;
    newest_first(&mut records);
    Ok(records)
}

pub async fn jobs(inner: &Inner, filter: &JobFilter) -> Result<Vec<JobSummary>, QueueError> {
    let now = now();
    let records = match &filter.parent {
        // A parent knows its children: no need to read every record.
        Some(parent) => match inner.get(parent).await? {
            Some((r, _)) => {
                let mut kids = children::records(inner, parent, &r).await?;
                newest_first(&mut kids);
                kids
            }
            None => Vec::new(),
        },
        None => all(inner).await?,
    };
    // The cursor: jobs after it in newest-first order (by its place in the order when it is
    // still listed, else by its id).
    let skip = match &filter.after {
        None => 0,
        Some(after) => match records.iter().position(|(id, _)| id == after) {
            Some(at) => at + 1,
            None => {
                let Some(path) = id_path(after) else {
                    return Ok(Vec::new());
                };
                records
                    .iter()
                    .position(|(id, _)| id_path(id).is_some_and(|p| p < path))
                    .unwrap_or(records.len())
            }
        },
    };
    Ok(records
        .into_iter()
        .skip(skip)
        .filter(|(_, r)| filter.queue.as_ref().is_none_or(|q| *q == r.queue))
        .filter(|(_, r)| filter.tenant.is_none() || filter.tenant == r.tenant)
        .filter(|(_, r)| filter.since.is_none_or(|t| r.enqueued_at >= t))
        .map(|(id, r)| r.summary(&id, now))
        .filter(|s| filter.state.is_none_or(|state| state == s.state))
        .take(filter.limit.unwrap_or(DEFAULT_LIMIT))
        .collect())
}

pub async fn queues(inner: &Inner) -> Result<Vec<QueueCounts>, QueueError> {
    let now = now();
    let mut counts: BTreeMap<String, QueueCounts> = BTreeMap::new();
    for (_, r) in every(inner).await? {
        let c = counts
            .entry(r.queue.clone())
            .or_insert_with(|| QueueCounts {
                queue: r.queue.clone(),
                ..QueueCounts::default()
            });
        match r.visible_state(now) {
            JobState::Scheduled => c.scheduled += 1,
            JobState::Ready => c.ready += 1,
            JobState::Running => c.running += 1,
            JobState::Succeeded => c.succeeded += 1,
            JobState::Dead => c.dead += 1,
            JobState::Cancelled => c.cancelled += 1,
            JobState::Waiting => c.waiting += 1,
        }
    }
    Ok(counts.into_values().collect())
}

pub async fn events(inner: &Inner, filter: &EventFilter) -> Result<Vec<Event>, QueueError> {
    let limit = filter.limit.unwrap_or(DEFAULT_EVENTS);
    if let Some(id) = &filter.job {
        // A job's events are its record's timeline (numbered in the job's own order).
        let record = match inner.get(id).await? {
            Some((r, _)) => Some(r),
            None => unclaimed(inner, id).await?,
        };
        let timeline = record.map(|r| r.events(id)).unwrap_or_default();
        return Ok(filter.select(timeline, DEFAULT_EVENTS));
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    // The log: one message per queue and batch (so a queue's events are its subject's), each
    // message's events numbered by its sequence and their place in it.
    let subject = match &filter.queue {
        Some(queue) => inner.names.event_subject(Some(queue)),
        None => inner.names.events_all(),
    };
    // The message holding the event after `after`.
    let first = u64::try_from(filter.after.unwrap_or(0) >> LOG_INDEX_BITS)
        .unwrap_or(0)
        .max(1);
    if filter.newest {
        return newest_events(inner, filter, subject, first, limit).await;
    }
    // Each message holds at least one event, so `limit + 1` messages hold `limit` events
    // unless the filter leaves some out: then read on.
    let chunk = limit.saturating_add(1).min(10_000);
    let mut start = first;
    let mut out = Vec::new();
    loop {
        let scanned = inner
            .scan(&inner.s.events, subject.clone(), Some(start), Some(chunk))
            .await?;
        let Some(last) = scanned.last().map(|m| m.seq) else {
            return Ok(out);
        };
        for m in &scanned {
            for (i, wire) in log_entries(&m.payload).into_iter().enumerate() {
                let event = wire.into_event(log_seq(m.seq, i));
                if filter.matches(&event) {
                    out.push(event);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        if scanned.len() < chunk {
            return Ok(out);
        }
        start = last + 1;
    }
}

/// The newest `limit` events of the log matching `filter` on `subject`, no older than message
/// `first`: read back from the end in growing windows until they hold enough.
async fn newest_events(
    inner: &Inner,
    filter: &EventFilter,
    subject: String,
    first: u64,
    limit: usize,
) -> Result<Vec<Event>, QueueError> {
    let end = inner
        .s
        .events
        .get_info()
        .await
        .map_err(|e| super::setup::store("reading the event log", e))?
        .state
        .last_sequence;
    let mut window = u64::try_from(limit).unwrap_or(u64::MAX).max(64);
    loop {
        let start = end.saturating_sub(window.saturating_sub(1)).max(first);
        let most = usize::try_from(end.saturating_sub(start) + 1).unwrap_or(usize::MAX);
        let scanned = inner
            .scan(&inner.s.events, subject.clone(), Some(start), Some(most))
            .await?;
        let mut found = Vec::new();
        for m in scanned.iter().filter(|m| m.seq <= end) {
            for (i, wire) in log_entries(&m.payload).into_iter().enumerate() {
                let event = wire.into_event(log_seq(m.seq, i));
                if filter.matches(&event) {
                    found.push(event);
                }
            }
        }
        if found.len() >= limit || start <= first {
            let cut = found.len().saturating_sub(limit);
            found.drain(..cut);
            return Ok(found);
        }
        window = window.saturating_mul(4);
    }
}

/// The events of one event-log message: a JSON array of events (a single event object, as
/// older versions published, reads as one).
fn log_entries(payload: &[u8]) -> Vec<Wire> {
    serde_json::from_slice::<Vec<Wire>>(payload)
        .or_else(|_| serde_json::from_slice::<Wire>(payload).map(|w| vec![w]))
        .unwrap_or_default()
}

/// Whether a dead job matches a filter.
pub fn matches(filter: &DlqFilter, id: &JobId, r: &Record) -> bool {
    r.state == JobState::Dead
        && filter.id.as_ref().is_none_or(|want| want == id)
        && filter.queue.as_ref().is_none_or(|q| *q == r.queue)
        && filter.phase.is_none_or(|p| r.last_phase == Some(p))
        && filter.since.is_none_or(|t| r.updated_at >= t)
        && filter.until.is_none_or(|t| r.updated_at < t)
}

/// Dead jobs matching `filter`, most recently dead first.
pub async fn dead_records(
    inner: &Inner,
    filter: &DlqFilter,
) -> Result<Vec<(JobId, Record)>, QueueError> {
    let mut dead: Vec<(JobId, Record)> = match &filter.id {
        // One job: read it, not the whole bucket.
        Some(id) => inner
            .get(id)
            .await?
            .map(|(r, _)| (id.clone(), r))
            .into_iter()
            .collect(),
        None => inner.records().await?,
    };
    dead.retain(|(id, r)| matches(filter, id, r));
    dead.sort_by_cached_key(|(id, r)| std::cmp::Reverse((r.updated_at, id_path(id))));
    Ok(dead)
}

pub async fn dead(inner: &Inner, filter: &DlqFilter) -> Result<Vec<JobSummary>, QueueError> {
    let now = now();
    Ok(dead_records(inner, filter)
        .await?
        .into_iter()
        .take(filter.limit.unwrap_or(usize::MAX))
        .map(|(id, r)| r.summary(&id, now))
        .collect())
}
