//! Settle: apply what happens after an attempt, fenced by its lease, and answer the job's
//! message to match: ack a success or a wait, nak a retry or delay with its backoff, term a
//! death. A settle with children stages them, commits them with the compare-and-set, then
//! creates them; a job that ends tells its parent.

use std::time::Duration;

use super::names::child_of;
use super::record::{Record, Spawn, Wire};
use super::setup::store;
use super::store::{Answer, Inner};
use super::{children, flow, spawn};
use crate::queue::{
    AttemptRecord, EventKind, JobId, JobState, LeaseLost, NewEvent, Next, QueueError, Settle,
    Timestamp, now,
};
use std::collections::BTreeMap;

/// A settle applied, but for what waits until the whole group is applied.
struct Applied {
    id: JobId,
    events: Vec<Wire>,
    /// The job, if it ended and has a parent to tell.
    ended: Option<(JobId, Record)>,
    /// The held message and its answer.
    reply: String,
    answer: Answer,
    /// What the claim held that the settle lets go: `(slot keys, group lock key)`.
    held: (Vec<String>, Option<String>),
    token: i64,
}

pub async fn settle(
    inner: &Inner,
    settles: Vec<Settle>,
) -> Result<Vec<Result<(), LeaseLost>>, QueueError> {
    let results =
        futures::future::join_all(settles.into_iter().map(|s| Box::pin(settle_one(inner, s))))
            .await;
    let mut out = Vec::with_capacity(results.len());
    let mut events = Vec::new();
    let mut ended = Vec::new();
    let mut answers = Vec::new();
    // Slots freed together, one write per table for the whole group.
    let mut slots: BTreeMap<String, Vec<(JobId, i64)>> = BTreeMap::new();
    let mut groups = Vec::new();
    for r in results {
        match r? {
            Ok(mut applied) => {
                events.append(&mut applied.events);
                ended.extend(applied.ended);
                answers.push((applied.reply, applied.answer));
                let (keys, group) = applied.held;
                for key in keys {
                    slots
                        .entry(key)
                        .or_default()
                        .push((applied.id.clone(), applied.token));
                }
                if let Some(key) = group {
                    groups.push((key, applied.id.clone(), applied.token));
                }
                out.push(Ok(()));
            }
            Err(lost) => out.push(Err(lost)),
        }
    }
    for (key, claims) in &slots {
        flow::free(inner, key, claims).await?;
    }
    for (key, id, token) in &groups {
        flow::free_group(inner, key, id, *token).await?;
    }
    // Parents are told before any message is answered (until then a message comes back and
    // tells again), with one write per parent for the whole group: siblings settled together
    // do not race for their parent's record.
    events.append(&mut children::ended_together(inner, ended).await?);
    for r in futures::future::join_all(
        answers
            .iter()
            .map(|(reply, answer)| inner.answer(reply, *answer)),
    )
    .await
    {
        r?;
    }
    inner.publish_events(events).await?;
    Ok(out)
}

async fn settle_one(
    inner: &Inner,
    settle: Settle,
) -> Result<Result<Applied, LeaseLost>, QueueError> {
    let Settle {
        lease,
        next,
        attempt,
        checkpoint,
        children,
        progress,
    } = settle;
    let id = lease.job_id.clone();
    let now = now();
    let lost = || LeaseLost {
        job_id: id.clone(),
        token: lease.token,
    };
    // Only an attempt that ends well enqueues anything.
    let children = match next {
        Next::Succeeded { .. } | Next::Delay { .. } | Next::Wait => children,
        Next::Retry { .. } | Next::Dead => Vec::new(),
    };
    let mut known = inner.held(&id, lease.token);
    // Children are staged first, then committed by the settle's compare-and-set naming them.
    let first = if children.is_empty() {
        0
    } else {
        if known.is_none() {
            known = Box::pin(inner.get(&id)).await?;
        }
        let Some((r, _)) = known
            .as_ref()
            .filter(|(r, _)| r.leased_with(lease.token).is_some())
        else {
            inner.hold(&id, None);
            return Ok(Err(lost()));
        };
        let first = r.children.len() + 1;
        for (i, child) in children.iter().enumerate() {
            if child.id != child_of(&id, first + i) {
                return Err(QueueError::BadRequest(format!(
                    "child {} of job {id} is not the id this backend reserved for its child {}",
                    child.id,
                    first + i
                )));
            }
        }
        Box::pin(spawn::stage(inner, &id, lease.token, &children, now)).await?;
        first
    };
    let applied = inner
        .update(&id, known, |r| {
            let held = r.leased_with(lease.token)?.clone();
            if !children.is_empty() {
                if r.children.len() + 1 != first {
                    return None;
                }
                r.children.resize(r.children.len() + children.len(), 0);
                r.spawn.push(Spawn {
                    from: first,
                    to: r.children.len(),
                    token: lease.token,
                });
            }
            let failed = matches!(next, Next::Retry { .. } | Next::Dead);
            match &next {
                Next::Succeeded { output } => {
                    r.state = JobState::Succeeded;
                    r.output = Some(output.clone());
                }
                Next::Retry { run_at } | Next::Delay { run_at } => {
                    r.state = if *run_at > now {
                        JobState::Scheduled
                    } else {
                        JobState::Ready
                    };
                    r.run_at = *run_at;
                }
                Next::Dead => r.state = JobState::Dead,
                Next::Wait if r.has_unfinished_children() => r.state = JobState::Waiting,
                Next::Wait => {
                    r.state = JobState::Ready;
                    r.run_at = now;
                }
            }
            if failed {
                r.attempts += 1;
                r.last_error.clone_from(&attempt.error);
                r.last_phase = attempt.phase;
            }
            if let Some(checkpoint) = &checkpoint {
                r.checkpoint = Some(checkpoint.clone());
            }
            if let Some(progress) = &progress {
                r.progress = Some(progress.clone());
            }
            r.lease = None;
            r.updated_at = now;
            r.history.push(attempt.clone());
            let slots = std::mem::take(&mut r.slots);
            let events: Vec<Wire> = kinds(&next, &attempt, r, now)
                .into_iter()
                .map(|e| r.note(&id, now, e))
                .collect();
            Some((held, events, slots))
        })
        .await?;
    inner.hold(&id, None);
    let Some(((held, mut events, slots), r, _)) = applied else {
        Box::pin(spawn::unstage(inner, &children, lease.token)).await;
        return Ok(Err(lost()));
    };
    inner.table_drop(&id, lease.token);

    // What follows the commit is done before the job's message is answered: until then the
    // message comes back to a claimer, which finishes it (see `children::heal`).
    if !r.spawn.is_empty() {
        // The job's own events first, so that its children's cannot come before them.
        Box::pin(inner.publish_events(std::mem::take(&mut events))).await?;
        events.append(&mut Box::pin(spawn::spawn(inner, &id, &r)).await?);
    }
    let answer = match &next {
        Next::Succeeded { .. } => Answer::Ack,
        Next::Retry { run_at } | Next::Delay { run_at } => Answer::Nak(Duration::from_millis(
            u64::try_from(run_at - now).unwrap_or(0),
        )),
        Next::Dead => {
            Box::pin(dead_letter(inner, &id, &r)).await?;
            Answer::Term
        }
        // Waiting: a wake message brings it back once its children have ended.
        Next::Wait if r.state == JobState::Waiting => Answer::Ack,
        Next::Wait => Answer::Nak(Duration::ZERO),
    };
    let group = r.group.as_deref().map(|g| flow::group_key(&r.queue, g));
    let ended = (r.is_finished() && r.parent.is_some()).then(|| (id.clone(), r));
    Ok(Ok(Applied {
        events,
        ended,
        reply: held.reply,
        answer,
        held: (slots, group),
        token: lease.token,
        id,
    }))
}

/// The events of a settle.
fn kinds(next: &Next, attempt: &AttemptRecord, r: &Record, now: Timestamp) -> Vec<NewEvent> {
    let ran = u64::try_from(attempt.finished_at - attempt.started_at).unwrap_or(0);
    let wait = |run_at: i64| u64::try_from(run_at - now).unwrap_or(0);
    let base = NewEvent {
        attempt: Some(attempt.attempt),
        worker: Some(attempt.worker.clone()),
        digest: attempt.digest.clone(),
        ..NewEvent::new(EventKind::Succeeded)
    };
    let failure = NewEvent {
        phase: attempt.phase,
        message: attempt.error.clone(),
        ..base.clone()
    };
    match next {
        Next::Succeeded { .. } => vec![NewEvent {
            duration_ms: Some(ran),
            ..base
        }],
        Next::Retry { run_at } => vec![
            NewEvent {
                kind: EventKind::Failed,
                duration_ms: Some(ran),
                ..failure.clone()
            },
            NewEvent {
                kind: EventKind::RetryScheduled,
                duration_ms: Some(wait(*run_at)),
                ..failure
            },
        ],
        Next::Delay { run_at } => vec![NewEvent {
            kind: EventKind::Delayed,
            duration_ms: Some(wait(*run_at)),
            ..base
        }],
        Next::Dead => vec![
            NewEvent {
                kind: EventKind::Failed,
                duration_ms: Some(ran),
                ..failure.clone()
            },
            NewEvent {
                kind: EventKind::DeadLettered,
                ..failure
            },
        ],
        Next::Wait => {
            let mut events = vec![NewEvent {
                kind: EventKind::Waiting,
                ..base
            }];
            if r.state != JobState::Waiting {
                events.push(NewEvent::new(EventKind::ChildrenFinished));
            }
            events
        }
    }
}

/// Publish a dead job's envelope (the same JSON as `spool job --json`,
/// [`crate::json::JobJson`]) on the dead-letter stream, for consumers outside Spool.
pub async fn dead_letter(inner: &Inner, id: &JobId, record: &Record) -> Result<(), QueueError> {
    let children = children::outcomes(inner, id, record).await?;
    let detail = record
        .clone()
        .detail(id, record.events(id), children, now());
    let mut envelope = crate::json::JobJson::from(&detail);
    let mut body = serde_json::to_vec(&envelope).unwrap_or_default();
    // A large fan-out's outcomes may not fit one message: its children's outputs go first,
    // then the list (each child keeps its own record).
    let room = match inner.client.server_info().max_payload {
        0 => usize::MAX,
        most => most.saturating_sub(4096),
    };
    if body.len() > room {
        envelope.children.iter_mut().for_each(|c| {
            c.output = serde_json::Value::Null;
            c.output_encoding = None;
        });
        body = serde_json::to_vec(&envelope).unwrap_or_default();
    }
    if body.len() > room {
        envelope.children.clear();
        body = serde_json::to_vec(&envelope).unwrap_or_default();
    }
    // A large payload may not fit either: the envelope then goes without it (the job's
    // record keeps it, for `spool dlq show` and a replay).
    if body.len() > room {
        envelope.payload = serde_json::Value::Null;
        envelope.payload_encoding = None;
        body = serde_json::to_vec(&envelope).unwrap_or_default();
    }
    inner
        .js
        .publish(inner.names.dlq_subject(&record.queue, id), body.into())
        .await
        .map_err(|e| store("publishing a dead letter", e))?
        .await
        .map_err(|e| store("publishing a dead letter", e))?;
    Ok(())
}
