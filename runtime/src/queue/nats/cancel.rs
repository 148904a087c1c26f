//! Cancelling: one job and its unfinished children, the jobs a filter matches, and the
//! notices that tell workers to abort a cancelled attempt at once.
//!
//! A cancel writes the record first (state `cancelled`, the lease gone, a running attempt
//! recorded as cancelled), then frees what the claim held (lease-table entry, group,
//! concurrency slots), terminates the job's message (or deletes it, if no worker holds it),
//! and publishes `<job id> <token>` on [`Names::cancel_notices`](super::names::Names). Every
//! worker listens there through [`revoked`]; a worker that misses the notice finds the lease
//! gone at its next renewal. A message already fetched by a claimer is refused by the claim:
//! the record it reads is finished, so the message is acked and dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use super::children;
use super::flow;
use super::names::is_job_id;
use super::read::{every, unclaimed};
use super::setup::{REQUEST_TIMEOUT, store};
use super::store::{Answer, Inner};
use crate::queue::cancel::parent_cancelled;
use crate::queue::{
    AttemptRecord, CancelFilter, EventKind, JobId, JobState, Lease, NewEvent, QueueError, now,
};

/// How long a notice that matched none of the leases asked about is kept for a later ask
/// (the attempt may have been claimed while the notice was on its way).
const KEEP_NOTICE: Duration = Duration::from_secs(5);

/// The cancel-notice subscription of one connection, opened by the first [`revoked`].
#[derive(Default)]
pub struct Notices {
    subscription: tokio::sync::Mutex<Option<async_nats::Subscriber>>,
    /// Notices heard and not matched yet: job, token, when heard.
    heard: Mutex<Vec<(JobId, i64, Instant)>>,
}

pub async fn cancel(inner: &Inner, id: &JobId, reason: &str) -> Result<bool, QueueError> {
    let mut done = Vec::new();
    Box::pin(cancel_tree(inner, id, reason, &mut done)).await
}

/// Cancel one job, then its unfinished children; the ids cancelled are added to `done`.
async fn cancel_tree(
    inner: &Inner,
    id: &JobId,
    reason: &str,
    done: &mut Vec<JobId>,
) -> Result<bool, QueueError> {
    if !is_job_id(id) {
        return Err(QueueError::NotFound(id.clone()));
    }
    let now = now();
    let known = match inner.get(id).await? {
        Some(found) => Some(found),
        None => unclaimed(inner, id).await?.map(|r| (r, 0)),
    };
    let Some(known) = known else {
        return Err(QueueError::NotFound(id.clone()));
    };
    let cancelled = inner
        .update(id, Some(known), |r| {
            if r.is_finished() {
                return None;
            }
            let running = r
                .lease
                .take()
                .map(|held| (held, r.token, std::mem::take(&mut r.slots)));
            r.state = JobState::Cancelled;
            r.updated_at = now;
            let mut event = NewEvent {
                message: Some(reason.to_owned()),
                ..NewEvent::new(EventKind::Cancelled)
            };
            if let Some((held, _, _)) = &running {
                // The running attempt ends here, spending no attempt.
                let attempt = r.attempts + 1;
                r.history.push(AttemptRecord {
                    attempt,
                    worker: held.worker.clone(),
                    started_at: held.since,
                    finished_at: now,
                    outcome: "cancelled".into(),
                    phase: None,
                    error: Some(reason.to_owned()),
                    digest: None,
                    logs: Vec::new(),
                    http: Default::default(),
                });
                event.worker = Some(held.worker.clone());
                event.attempt = Some(attempt);
                event.duration_ms = Some(u64::try_from(now - held.since).unwrap_or(0));
            }
            let event = r.note(id, now, event);
            Some((running, event))
        })
        .await?;
    let Some(((running, event), r, _)) = cancelled else {
        return Ok(false);
    };
    inner.hold(id, None);
    let mut events = vec![event];
    // Before the message goes: until then it would come back and tell the parent.
    events.append(&mut children::ended(inner, id, &r).await?);
    if let Some((held, token, slots)) = running {
        inner.table_drop(id, token);
        flow::let_go(inner, &r.queue, id, token, &slots, r.group.as_deref()).await?;
        inner.answer(&held.reply, Answer::Term).await?;
        notify(inner, id, token).await;
    } else {
        super::admin::drop_message(inner, id).await;
    }
    inner.publish_events(events).await?;
    done.push(id.clone());
    if r.has_unfinished_children() {
        let why = parent_cancelled(id, reason);
        for (child, record) in children::records(inner, id, &r).await? {
            if !record.is_finished() {
                Box::pin(cancel_tree(inner, &child, &why, done)).await?;
            }
        }
    }
    Ok(true)
}

/// Tell every worker that the attempt of `id` under `token` is cancelled. A lost notice costs
/// time only: the worker finds the lease gone at its next renewal.
async fn notify(inner: &Inner, id: &JobId, token: i64) {
    let notice = format!("{id} {token}");
    let sent = match inner
        .client
        .publish(inner.names.cancel_notices(), notice.into())
        .await
    {
        // Out now: the process that cancels (`spool cancel`) may exit next. A flush waits
        // for the connection, which may be down: bounded like a request.
        Ok(()) => match tokio::time::timeout(REQUEST_TIMEOUT, inner.client.flush()).await {
            Ok(flushed) => flushed.map_err(|e| e.to_string()),
            Err(_) => Err("timed out flushing".to_owned()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        tracing::warn!(job = %id, error = %e, "cannot publish the cancel notice");
    }
}

pub async fn cancel_matching(
    inner: &Inner,
    filter: &CancelFilter,
    reason: &str,
) -> Result<Vec<JobId>, QueueError> {
    let now = now();
    let mut matching: Vec<(JobId, i64)> = every(inner)
        .await?
        .into_iter()
        .filter(|(id, r)| filter.matches(&r.summary(id, now)))
        .map(|(id, r)| (id, r.enqueued_at))
        .collect();
    matching.sort_by_key(|(_, at)| *at);
    let mut done = Vec::new();
    for (id, _) in matching {
        // Cancelled with its parent already, or finished meanwhile: `false`.
        match Box::pin(cancel_tree(inner, &id, reason, &mut done)).await {
            Ok(_) | Err(QueueError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

pub async fn revoked(
    inner: &Inner,
    leases: &[Lease],
    timeout: Duration,
) -> Result<Vec<JobId>, QueueError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut subscription = inner.notices.subscription.lock().await;
    if subscription.is_none() {
        let opened = inner
            .client
            .subscribe(inner.names.cancel_notices())
            .await
            .map_err(|e| store("listening for cancel notices", e))?;
        *subscription = Some(opened);
    }
    let mut found = take_heard(inner, leases);
    while found.is_empty() {
        let Some(listening) = subscription.as_mut() else {
            break;
        };
        match tokio::time::timeout_at(deadline, listening.next()).await {
            Ok(Some(message)) => {
                let text = String::from_utf8_lossy(&message.payload);
                if let Some((job, token)) = text.split_once(' ')
                    && let Ok(token) = token.parse()
                {
                    lock(&inner.notices.heard).push((JobId(job.to_owned()), token, Instant::now()));
                }
                found = take_heard(inner, leases);
            }
            Ok(None) => {
                // The subscription ended (the connection closed): open another next time.
                *subscription = None;
                break;
            }
            Err(_) => break,
        }
    }
    Ok(found)
}

/// The notices heard that match `leases`, taken out; notices too old to matter are dropped.
fn take_heard(inner: &Inner, leases: &[Lease]) -> Vec<JobId> {
    let mut heard = lock(&inner.notices.heard);
    heard.retain(|(_, _, at)| at.elapsed() < KEEP_NOTICE);
    let mut found = Vec::new();
    heard.retain(|(job, token, _)| {
        let matched = leases.iter().any(|l| l.job_id == *job && l.token == *token);
        if matched {
            found.push(job.clone());
        }
        !matched
    });
    found
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
