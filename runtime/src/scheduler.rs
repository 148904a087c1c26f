//! The scheduler: the worker's background service that fires due [schedules](crate::schedule).
//!
//! Every worker runs it; only the holder of the backend's leader lock fires. The lock lasts
//! `ttl` (the worker's lease) and the leader renews it at every wake-up, which comes at least
//! every third of it. A worker that is not the leader tries to take the lock as often, so
//! when the leader dies (its lock no longer renewed) another worker fires within about `ttl`.
//! The leader sleeps until the earliest next tick (or the next renewal), then fires every
//! schedule that is due through [`Backend::fire_schedule`], which applies a tick at most once
//! whoever else tries it.
//!
//! The lock's expiry is compared with the clock of the worker trying to take it, so the
//! workers' clocks should agree to well within a lease; should two workers both believe they
//! lead, each tick still fires once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::queue::{Backend, Timestamp, now};
use crate::schedule::plan;

/// The longest a scheduler sleeps, so a schedule added meanwhile is seen within a second.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Run one scheduling round at `now` as `worker`: take or keep the leader lock for `ttl` and,
/// if this worker holds it, fire every due schedule. Returns whether it is the leader and the
/// earliest next tick it saw.
pub async fn round<B: Backend>(
    backend: &B,
    worker: &str,
    ttl: Duration,
    now: Timestamp,
) -> (bool, Option<Timestamp>) {
    let leader = match backend.take_leadership(worker, ttl, now).await {
        Ok(leader) => leader,
        Err(e) => {
            tracing::error!(error = %e, "cannot take the scheduler lock");
            false
        }
    };
    if !leader {
        return (false, None);
    }
    let schedules = match backend.schedules().await {
        Ok(schedules) => schedules,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the schedules");
            return (true, None);
        }
    };
    let mut earliest: Option<Timestamp> = None;
    for state in schedules {
        let mut next = state.next_run_at;
        match plan(&state.schedule, state.next_run_at, now) {
            Ok(None) => {}
            Ok(Some(mut fire)) => {
                fire.worker = Some(worker.to_owned());
                next = fire.next;
                if let Err(e) = backend.fire_schedule(fire).await {
                    tracing::error!(schedule = %state.schedule.name, error = %e, "cannot fire a schedule");
                    next = now + 1000;
                }
            }
            Err(e) => {
                tracing::error!(schedule = %state.schedule.name, error = %e, "cannot plan a schedule");
                continue;
            }
        }
        earliest = Some(earliest.map_or(next, |e| e.min(next)));
    }
    (true, earliest)
}

/// Fire schedules until `stop` is notified (see the module docs); then give up the lock if
/// this worker holds it, so another worker takes over at once. A round under way when `stop`
/// comes is finished first.
pub async fn run<B: Backend>(backend: B, worker: String, ttl: Duration, stop: Arc<Notify>) {
    let renew = (ttl / 3).clamp(Duration::from_millis(50), MAX_SLEEP);
    loop {
        let at = now();
        let (leader, earliest) = round(&backend, &worker, ttl, at).await;
        let mut sleep = renew;
        if leader && let Some(earliest) = earliest {
            let until = u64::try_from(earliest.saturating_sub(now())).unwrap_or(0);
            sleep = sleep.min(Duration::from_millis(until));
        }
        tokio::select! {
            () = stop.notified() => break,
            () = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
        }
    }
    resign(&backend, &worker).await;
}

/// Give up the leader lock if `worker` holds it, so another worker takes over at once.
pub async fn resign<B: Backend>(backend: &B, worker: &str) {
    if let Err(e) = backend.take_leadership(worker, Duration::ZERO, now()).await {
        tracing::warn!(error = %e, "cannot give up the scheduler lock");
    }
}
