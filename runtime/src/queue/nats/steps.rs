//! Durable steps: a running attempt's checkpoints and step results, each one compare-and-set
//! of the job's record fenced by the attempt's lease, stored before the call returns.

use super::record::Step;
use super::store::Inner;
use crate::queue::{AttemptSave, EventKind, LeaseLost, NewEvent, QueueError, Save, now};

pub async fn save(inner: &Inner, save: AttemptSave) -> Result<Result<(), LeaseLost>, QueueError> {
    let AttemptSave {
        lease,
        attempt,
        not_after,
        save,
    } = save;
    let lost = || LeaseLost {
        job_id: lease.job_id.clone(),
        token: lease.token,
    };
    let now = now();
    if not_after.is_some_and(|deadline| now > deadline) {
        return Ok(Err(lost()));
    }
    let id = &lease.job_id;
    let saved = inner
        .update(id, inner.held(id, lease.token), |r| {
            r.leased_with(lease.token)?;
            match &save {
                Save::Checkpoint(state) => r.checkpoint = Some(state.clone()),
                Save::Step { name, output } => {
                    let step = Step {
                        name: name.clone(),
                        output: output.clone(),
                        attempt,
                        at: now,
                    };
                    // A name stored again keeps the place of its first completion.
                    match r.steps.iter_mut().find(|s| s.name == *name) {
                        Some(stored) => *stored = step,
                        None => r.steps.push(step),
                    }
                }
            }
            let event = match &save {
                Save::Checkpoint(_) => NewEvent::new(EventKind::Checkpointed),
                Save::Step { name, .. } => NewEvent {
                    message: Some(name.clone()),
                    ..NewEvent::new(EventKind::StepCompleted)
                },
            };
            Some(r.note(
                id,
                now,
                NewEvent {
                    attempt: Some(attempt),
                    worker: Some(lease.worker.clone()),
                    ..event
                },
            ))
        })
        .await?;
    let Some((event, r, revision)) = saved else {
        return Ok(Err(lost()));
    };
    // The settle of this attempt writes on top of this revision without reading first.
    inner.hold(id, Some((r, revision)));
    inner.publish_events(vec![event]).await?;
    Ok(Ok(()))
}
