//! Reads: one job, listings, counts, the event log.

use std::collections::BTreeMap;

use super::children;
use super::names::{id_path, seq_of};
use super::record::{self, Record, WAKE, Wire};
use super::store::Inner;
use crate::queue::{
    DlqFilter, Event, EventFilter, JobDetail, JobFilter, JobId, JobState, JobSummary, QueueCounts,
    QueueError, now,
};

/// The default listing limit, as in SQLite.
const DEFAULT_LIMIT: usize = 100;

/// The record of a job whose message is still on its queue and that no worker has seen yet
/// (published straight to NATS), read from the message.
pub async fn unclaimed(inner: &Inner, id: &JobId) -> Result<Option<Record>, QueueError> {
    let Some(seq) = seq_of(id) else {
        return Ok(None);
    };
    let Ok(message) = inner.s.jobs.direct_get(seq).await else {
        return Ok(None);
    };
    if message.headers.get(WAKE).is_some() {
        return Ok(None);
    }
    let prefix = format!("{}.", inner.names.jobs_all().trim_end_matches(".>"));
    let subject = message.subject.to_string();
    let rest = subject.trim_start_matches(&prefix);
    let queue = rest
        .strip_suffix(".high")
        .or_else(|| rest.strip_suffix(".low"))
        .unwrap_or(rest);
    Ok(record::parse(
        queue,
        Some(&message.headers),
        &message.payload,
        record::millis(message.time),
    )
    .ok()
    .map(|(job, at)| Record::new(&job, at)))
}

pub async fn job(inner: &Inner, id: &JobId) -> Result<Option<JobDetail>, QueueError> {
    let record = match inner.get(id).await? {
        Some((r, _)) => r,
        None => match unclaimed(inner, id).await? {
            Some(r) => r,
            None => return Ok(None),
        },
    };
    let events = events(
        inner,
        &EventFilter {
            job: Some(id.clone()),
            ..EventFilter::default()
        },
    )
    .await?;
    let children = children::outcomes(inner, id, &record).await?;
    Ok(Some(record.detail(id, events, children, now())))
}

/// Newest first: by enqueue time, then by id (a stream sequence, then child indices).
fn newest_first(records: &mut [(JobId, Record)]) {
    records.sort_by_cached_key(|(id, r)| std::cmp::Reverse((r.enqueued_at, id_path(id))));
}

/// Every job, newest first.
async fn all(inner: &Inner) -> Result<Vec<(JobId, Record)>, QueueError> {
    let mut records = inner.records().await?;
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
    Ok(records
        .into_iter()
        .filter(|(_, r)| filter.queue.as_ref().is_none_or(|q| *q == r.queue))
        .map(|(id, r)| r.summary(&id, now))
        .filter(|s| filter.state.is_none_or(|state| state == s.state))
        .take(filter.limit.unwrap_or(DEFAULT_LIMIT))
        .collect())
}

pub async fn queues(inner: &Inner) -> Result<Vec<QueueCounts>, QueueError> {
    let now = now();
    let mut counts: BTreeMap<String, QueueCounts> = BTreeMap::new();
    for (_, r) in inner.records().await? {
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
    let subject = match &filter.job {
        Some(id) => inner.names.job_events(id),
        None => inner.names.events_all(),
    };
    let start = filter
        .after
        .map(|after| u64::try_from(after).unwrap_or(0).saturating_add(1));
    let scanned = inner
        .scan(&inner.s.events, subject, start, filter.limit)
        .await?;
    Ok(scanned
        .into_iter()
        .filter_map(|m| {
            let wire: Wire = serde_json::from_slice(&m.payload).ok()?;
            Some(wire.into_event(m.seq))
        })
        .collect())
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
