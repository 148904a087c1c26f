//! The conformance suite every queue backend runs (River's `riverdrivertest.Exercise`).
//!
//! Each case is an `async fn` taking a fresh backend; [`backend_conformance!`] turns the whole
//! list into one `#[tokio::test]` per case for a backend's factory, so a failure names the
//! case. A bug found in one backend becomes a case here.
//!
//! Cases treat job ids and fencing tokens as opaque, and wait on the wall clock with generous
//! margins, so a backend over the network passes them as well as an embedded one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use spool::queue::{
    AttemptRecord, Backend, Claimed, DlqFilter, Enqueued, EventFilter, EventKind, JobDetail,
    JobFilter, JobId, JobState, Lease, LeaseLost, NewEvent, NewJob, Next, Phase, Prune, QueueClaim,
    QueueCounts, QueueError, Settle, Timestamp, now,
};
use spool::{LogLevel, LogLine, LogSource};

mod attempts;
mod cancel;
mod dlq;
mod enqueue;
mod filters;
mod flow_control;
mod flows;
mod leases;
mod listing;
mod rules;
mod schedules;
mod workers;

pub use self::attempts::*;
pub use self::cancel::*;
pub use self::dlq::*;
pub use self::enqueue::*;
pub use self::filters::*;
pub use self::flow_control::*;
pub use self::flows::*;
pub use self::leases::*;
pub use self::listing::*;
pub use self::rules::*;
pub use self::schedules::*;
pub use self::workers::*;

/// One `#[tokio::test]` per case, each on a backend from `$factory`: an async fn returning
/// `(backend, guard)`, where the guard (a temporary directory, a server) lives as long as the
/// test.
macro_rules! backend_conformance {
    ($factory:path) => {
        $crate::conformance::backend_conformance!(@cases $factory;
            enqueue_claim_settle_round_trip,
            batched_enqueue_inserts_every_job,
            an_empty_queue_name_is_a_bad_request_and_enqueues_nothing,
            claims_follow_priority_then_run_at_then_enqueue_order,
            delayed_jobs_are_not_claimable_before_run_at,
            idempotency_key_returns_the_unfinished_job_and_is_free_once_it_finished,
            one_winner_per_job_when_claimers_race,
            a_settle_with_a_stale_lease_is_refused_and_writes_nothing,
            renew_keeps_a_lease_alive_and_refuses_a_stale_one,
            retry_schedules_the_next_attempt_and_counts_it,
            delay_does_not_spend_an_attempt,
            checkpoints_carry_over_to_the_next_attempt,
            a_dead_job_keeps_its_whole_envelope,
            an_attempt_keeps_its_http_counts,
            an_expired_lease_returns_the_job_and_refuses_the_late_settle,
            an_expired_lease_dead_letters_a_job_out_of_attempts,
            a_lapsed_job_is_judged_by_the_max_attempts_its_first_claim_stored,
            release_returns_jobs_without_spending_an_attempt,
            cancel_stops_a_job_and_revokes_its_lease,
            replay_by_id_gives_a_dead_job_fresh_attempts,
            replay_by_filter_matches_queue_phase_and_time,
            replay_leaves_dead_a_job_whose_key_an_unfinished_job_holds,
            dead_lists_most_recently_dead_first_and_filters,
            purge_deletes_matching_dead_jobs_with_their_history,
            prune_removes_old_finished_jobs_but_never_dead_ones,
            ids_and_event_seqs_are_never_reused_after_a_purge,
            queues_counts_jobs_per_state,
            jobs_are_listed_newest_first_with_filters,
            events_are_ordered_and_follow_after,
            job_timeline_lists_its_events_in_order,
            steps_and_checkpoints_are_saved_at_once_and_handed_to_the_next_attempt,
            a_stale_attempt_can_neither_save_nor_enqueue_nor_settle,
            a_save_after_the_attempts_deadline_is_refused,
            a_parent_waits_for_its_children_and_runs_again_with_their_outcomes,
            waiting_with_every_child_finished_is_ready_at_once,
            a_dead_child_fails_its_parent_or_is_reported_as_asked,
            a_group_runs_one_job_at_a_time_in_order_and_is_freed_by_the_settle,
            a_group_is_freed_when_its_running_jobs_lease_expires,
            a_queue_concurrency_limit_caps_running_jobs_whoever_claims,
            a_tenant_concurrency_limit_caps_each_tenant_alone,
            a_rate_limit_spreads_starts_over_its_interval,
            a_tenant_rate_limit_holds_each_tenant_to_its_own_rate,
            fair_claims_serve_a_small_tenant_ahead_of_a_big_backlog,
            cancel_by_filter_touches_only_matching_unfinished_jobs,
            a_cancelled_job_is_never_claimed_even_if_already_delivered,
            cancelling_a_running_job_records_the_attempt_and_frees_its_group_and_slot,
            cancelling_a_parent_cancels_its_unfinished_children,
            a_cancelled_attempt_keeps_the_digest_and_logs_its_worker_kept,
            the_last_progress_an_attempt_reported_is_kept_on_the_job,
            prune_per_state_keeps_the_other_states_and_never_dead_ones,
            a_tick_fires_exactly_once_when_schedulers_race,
            the_leader_lock_is_exclusive_and_passes_on_after_expiry,
            missed_ticks_are_skipped_or_caught_up_once,
            an_unchanged_spec_keeps_its_tick_and_a_removed_schedule_fires_no_more,
            queue_names_follow_one_rule_on_every_backend,
            a_payload_over_the_backends_limit_is_refused_and_one_at_it_is_kept,
            a_job_with_the_largest_payload_runs_and_dies_with_it_kept,
            jobs_filter_by_tenant_and_since_and_page_with_a_cursor,
            events_filter_by_queue_and_since_and_the_newest_come_last,
            a_heartbeat_registers_a_worker_and_the_next_one_updates_it,
            a_removed_worker_is_gone_and_removing_it_again_says_so,
            a_worker_that_stops_heartbeating_drops_out_after_its_ttl,
            a_heartbeat_needs_an_id_and_a_ttl_within_bounds,
        );
    };
    (@cases $factory:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (backend, _guard) = $factory().await;
                $crate::conformance::$case(backend).await;
            }
        )+
    };
}
pub(crate) use backend_conformance;

/// The lease for cases that do not wait for it to lapse.
const LEASE: Duration = Duration::from_secs(30);
/// The lease for cases that do.
const SHORT_LEASE: Duration = Duration::from_millis(100);
/// Long enough for a [`SHORT_LEASE`] to have lapsed.
const PAST_SHORT_LEASE: Duration = Duration::from_millis(300);

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob {
        queue: queue.into(),
        payload: payload.to_vec(),
        ..NewJob::default()
    }
}

async fn enqueue_one<B: Backend>(b: &B, new: NewJob) -> JobId {
    let mut enqueued = b.enqueue(vec![new]).await.unwrap();
    assert_eq!(enqueued.len(), 1);
    assert!(!enqueued[0].duplicate);
    enqueued.remove(0).id
}

async fn claim<B: Backend>(b: &B, queue: &str, limit: usize, lease: Duration) -> Vec<Claimed> {
    let wanted = [QueueClaim {
        queue: queue.into(),
        limit,
        ..QueueClaim::default()
    }];
    b.claim("w1", &wanted, lease).await.unwrap()
}

async fn claim_one<B: Backend>(b: &B, queue: &str) -> Claimed {
    let mut claimed = claim(b, queue, 1, LEASE).await;
    assert_eq!(claimed.len(), 1, "expected one claimable job on {queue}");
    claimed.remove(0)
}

async fn detail<B: Backend>(b: &B, id: &JobId) -> JobDetail {
    b.job(id).await.unwrap().expect("job exists")
}

pub(crate) async fn state<B: Backend>(b: &B, id: &JobId) -> JobState {
    detail(b, id).await.summary.state
}

fn kinds(events: &[spool::queue::Event]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

async fn timeline<B: Backend>(b: &B, id: &JobId) -> Vec<EventKind> {
    kinds(&detail(b, id).await.events)
}

fn record(
    claimed: &Claimed,
    outcome: &str,
    phase: Option<Phase>,
    error: Option<&str>,
) -> AttemptRecord {
    let at = now();
    AttemptRecord {
        attempt: claimed.attempt,
        worker: claimed.lease.worker.clone(),
        started_at: at - 5,
        finished_at: at,
        outcome: outcome.into(),
        phase,
        error: error.map(Into::into),
        digest: Some("sha256:0123".into()),
        logs: Vec::new(),
        http: Default::default(),
    }
}

pub(crate) fn succeeded(claimed: &Claimed, output: &[u8]) -> Settle {
    Settle {
        lease: claimed.lease.clone(),
        next: Next::Succeeded {
            output: output.to_vec(),
        },
        attempt: record(claimed, "succeeded", None, None),
        checkpoint: None,
        children: Vec::new(),
        progress: None,
    }
}

fn retry(claimed: &Claimed, run_at: Timestamp, error: &str) -> Settle {
    Settle {
        lease: claimed.lease.clone(),
        next: Next::Retry { run_at },
        attempt: record(claimed, "retry", Some(Phase::Run), Some(error)),
        checkpoint: None,
        children: Vec::new(),
        progress: None,
    }
}

fn delay(claimed: &Claimed, run_at: Timestamp) -> Settle {
    Settle {
        lease: claimed.lease.clone(),
        next: Next::Delay { run_at },
        attempt: record(claimed, "delay", None, None),
        checkpoint: None,
        children: Vec::new(),
        progress: None,
    }
}

fn dead(claimed: &Claimed, phase: Phase, error: &str) -> Settle {
    Settle {
        lease: claimed.lease.clone(),
        next: Next::Dead,
        attempt: record(claimed, "fail", Some(phase), Some(error)),
        checkpoint: None,
        children: Vec::new(),
        progress: None,
    }
}

async fn settle_ok<B: Backend>(b: &B, settle: Settle) {
    assert_eq!(b.settle(vec![settle]).await.unwrap(), vec![Ok(())]);
}

/// Enqueue a job on `queue` and run it straight into the dead-letter queue.
async fn kill<B: Backend>(b: &B, queue: &str, phase: Phase, error: &str) -> JobId {
    let id = enqueue_one(b, job(queue, b"doomed")).await;
    let claimed = claim_one(b, queue).await;
    assert_eq!(claimed.lease.job_id, id);
    settle_ok(b, dead(&claimed, phase, error)).await;
    id
}

pub(crate) fn lost(lease: &Lease) -> Result<(), LeaseLost> {
    Err(LeaseLost {
        job_id: lease.job_id.clone(),
        token: lease.token,
    })
}
