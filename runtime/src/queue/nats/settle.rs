//! Settle: apply what happens after an attempt, fenced by its lease, and answer the job's
//! message to match: ack a success, nak a retry or delay with its backoff, term a death.

use std::time::Duration;

use super::record::Record;
use super::setup::store;
use super::store::{Answer, Inner};
use crate::queue::{
    EventKind, JobId, JobState, LeaseLost, NewEvent, Next, QueueError, Settle, now,
};

pub async fn settle(
    inner: &Inner,
    settles: Vec<Settle>,
) -> Result<Vec<Result<(), LeaseLost>>, QueueError> {
    let results =
        futures::future::join_all(settles.into_iter().map(|s| settle_one(inner, s))).await;
    let mut out = Vec::with_capacity(results.len());
    let mut events = Vec::new();
    for r in results {
        match r? {
            Ok(mut e) => {
                events.append(&mut e);
                out.push(Ok(()));
            }
            Err(lost) => out.push(Err(lost)),
        }
    }
    inner.publish_events(events).await?;
    Ok(out)
}

async fn settle_one(
    inner: &Inner,
    settle: Settle,
) -> Result<Result<Vec<NewEvent>, LeaseLost>, QueueError> {
    let Settle {
        lease,
        next,
        attempt,
        checkpoint,
    } = settle;
    let id = lease.job_id.clone();
    let now = now();
    let known = inner.held(&id, lease.token);
    let applied = inner
        .update(&id, known, |r| {
            let held = r.leased_with(lease.token)?.clone();
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
            }
            if failed {
                r.attempts += 1;
                r.last_error.clone_from(&attempt.error);
                r.last_phase = attempt.phase;
            }
            if let Some(checkpoint) = &checkpoint {
                r.checkpoint = Some(checkpoint.clone());
            }
            r.lease = None;
            r.updated_at = now;
            r.history.push(attempt.clone());
            Some(held)
        })
        .await?;
    inner.hold(&id, None);
    let Some((held, r, _)) = applied else {
        return Ok(Err(LeaseLost {
            job_id: id,
            token: lease.token,
        }));
    };
    inner.table_drop(&id, lease.token);
    let answer = match &next {
        Next::Succeeded { .. } => Answer::Ack,
        Next::Retry { run_at } | Next::Delay { run_at } => Answer::Nak(Duration::from_millis(
            u64::try_from(run_at - now).unwrap_or(0),
        )),
        Next::Dead => {
            dead_letter(inner, &id, &r).await?;
            Answer::Term
        }
    };
    inner.answer(&held.reply, answer).await?;

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
    let kinds = match &next {
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
    };
    Ok(Ok(kinds.into_iter().map(|e| r.event(&id, e)).collect()))
}

/// Publish a dead job's envelope (the same JSON as `spool job --json` and the SQLite
/// backend's) on the dead-letter stream, for consumers outside Spool.
pub async fn dead_letter(inner: &Inner, id: &JobId, record: &Record) -> Result<(), QueueError> {
    let detail = record.clone().detail(id, Vec::new(), now());
    let body = serde_json::to_vec(&detail).unwrap_or_default();
    inner
        .js
        .publish(inner.names.dlq_subject(&record.queue, id), body.into())
        .await
        .map_err(|e| store("publishing a dead letter", e))?
        .await
        .map_err(|e| store("publishing a dead letter", e))?;
    Ok(())
}
