//! Cancelling: by filter, of jobs already delivered, of running attempts (recorded as
//! cancelled, their group and slots freed, their workers told), of flows; and retention per
//! finished state.

use std::time::{Duration, Instant};

use spool::queue::flow::Flow;
use spool::queue::{
    Backend, CancelFilter, Claimed, EventKind, JobId, JobState, NewJob, OnChildFailure, Prune,
    QueueClaim, now,
};

use super::flows::{child, wait};
use super::*;

const REASON: &str = "cancelled by operator";

fn cancelled_event(detail: &JobDetail) -> &spool::queue::Event {
    detail
        .events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Cancelled)
        .expect("a cancelled event")
}

/// Claim one job of `queue` within `flow`, polling (a backend may hold a job back briefly).
async fn claim_within<B: Backend>(
    b: &B,
    queue: &str,
    flow: Flow,
    within: Duration,
) -> Vec<Claimed> {
    let until = Instant::now() + within;
    let wanted = [QueueClaim {
        queue: queue.into(),
        limit: 1,
        flow,
        max_attempts: None,
    }];
    loop {
        let got = b.claim("w2", &wanted, LEASE).await.unwrap();
        if !got.is_empty() || Instant::now() >= until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn cancel_by_filter_touches_only_matching_unfinished_jobs<B: Backend>(b: B) {
    let of = |tenant: Option<&str>, group: Option<&str>, payload: &[u8]| NewJob {
        tenant: tenant.map(Into::into),
        group: group.map(Into::into),
        ..job("q", payload)
    };
    let t1 = enqueue_one(&b, of(Some("t1"), None, b"t1")).await;
    let t2 = enqueue_one(&b, of(Some("t2"), None, b"t2")).await;
    let grouped = enqueue_one(&b, of(None, Some("g"), b"g")).await;
    let later = enqueue_one(
        &b,
        NewJob {
            run_at: Some(now() + 60_000),
            ..job("q", b"later")
        },
    )
    .await;
    let t1_grouped = enqueue_one(&b, of(Some("t1"), Some("h"), b"t1 grouped")).await;
    let other = enqueue_one(
        &b,
        NewJob {
            tenant: Some("t1".into()),
            ..job("other", b"other queue")
        },
    )
    .await;
    let running = enqueue_one(&b, job("r", b"running")).await;
    let claimed = claim_one(&b, "r").await;
    assert_eq!(claimed.lease.job_id, running);
    let ready_r = enqueue_one(&b, job("r", b"ready")).await;
    let done = enqueue_one(&b, job("s", b"done")).await;
    let finished = claim_one(&b, "s").await;
    settle_ok(&b, succeeded(&finished, b"")).await;

    let by_tenant = CancelFilter {
        queue: Some("q".into()),
        tenant: Some("t1".into()),
        ..CancelFilter::default()
    };
    let mut got = b.cancel_matching(&by_tenant, REASON).await.unwrap();
    got.sort();
    let mut want = vec![t1.clone(), t1_grouped.clone()];
    want.sort();
    assert_eq!(got, want, "q's jobs of tenant t1 only");
    assert_eq!(state(&b, &other).await, JobState::Ready, "another queue");
    assert_eq!(state(&b, &t2).await, JobState::Ready, "another tenant");
    assert_eq!(
        cancelled_event(&detail(&b, &t1).await).message.as_deref(),
        Some(REASON)
    );

    let scheduled = CancelFilter {
        queue: Some("q".into()),
        states: vec![JobState::Scheduled],
        ..CancelFilter::default()
    };
    assert_eq!(
        b.cancel_matching(&scheduled, REASON).await.unwrap(),
        std::slice::from_ref(&later)
    );
    let by_group = CancelFilter {
        group: Some("g".into()),
        ..CancelFilter::default()
    };
    assert_eq!(
        b.cancel_matching(&by_group, REASON).await.unwrap(),
        std::slice::from_ref(&grouped)
    );
    assert_eq!(state(&b, &t2).await, JobState::Ready);

    let running_only = CancelFilter {
        queue: Some("r".into()),
        states: vec![JobState::Running],
        ..CancelFilter::default()
    };
    assert_eq!(
        b.cancel_matching(&running_only, REASON).await.unwrap(),
        std::slice::from_ref(&running)
    );
    assert_eq!(state(&b, &ready_r).await, JobState::Ready, "not running");
    assert_eq!(
        b.settle(vec![succeeded(&claimed, b"late")]).await.unwrap(),
        [lost(&claimed.lease)]
    );
    // Finished jobs match nothing, whatever the filter.
    let finished_only = CancelFilter {
        states: vec![JobState::Succeeded],
        ..CancelFilter::default()
    };
    assert!(
        b.cancel_matching(&finished_only, REASON)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(state(&b, &done).await, JobState::Succeeded);
    // Nothing left to cancel on q but t2; a second pass finds it alone.
    let all_q = CancelFilter {
        queue: Some("q".into()),
        ..CancelFilter::default()
    };
    assert_eq!(
        b.cancel_matching(&all_q, REASON).await.unwrap(),
        std::slice::from_ref(&t2)
    );
    assert!(b.cancel_matching(&all_q, REASON).await.unwrap().is_empty());
    assert!(claim(&b, "q", 10, LEASE).await.is_empty());
}

pub async fn a_cancelled_job_is_never_claimed_even_if_already_delivered<B: Backend>(b: B) {
    // Not due yet: a claim sees it (and on a message queue, is handed its message) and
    // leaves it.
    let delayed = enqueue_one(
        &b,
        NewJob {
            run_at: Some(now() + 300),
            ..job("q", b"delayed")
        },
    )
    .await;
    assert!(claim(&b, "q", 10, LEASE).await.is_empty());
    // Ran once and waits for its retry.
    let retried = enqueue_one(&b, job("q", b"retried")).await;
    let first = claim_one(&b, "q").await;
    assert_eq!(first.lease.job_id, retried);
    settle_ok(&b, retry(&first, now() + 300, "boom")).await;

    assert!(b.cancel(&delayed, REASON).await.unwrap());
    assert!(b.cancel(&retried, REASON).await.unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..5 {
        assert!(claim(&b, "q", 10, LEASE).await.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [&delayed, &retried] {
        let d = detail(&b, id).await;
        assert_eq!(d.summary.state, JobState::Cancelled);
        assert_eq!(cancelled_event(&d).message.as_deref(), Some(REASON));
        assert!(
            d.attempts.iter().all(|a| a.outcome != "cancelled"),
            "no attempt was running"
        );
    }
}

pub async fn cancelling_a_running_job_records_the_attempt_and_frees_its_group_and_slot<
    B: Backend,
>(
    b: B,
) {
    // Listening before the cancel, as a worker does from its start.
    assert!(
        b.revoked(&[], Duration::from_millis(10))
            .await
            .unwrap()
            .is_empty()
    );
    let flow = Flow {
        concurrency: Some(1),
        ..Flow::default()
    };
    let grouped = |payload: &[u8]| NewJob {
        group: Some("g".into()),
        ..job("q", payload)
    };
    let first = enqueue_one(&b, grouped(b"first")).await;
    let second = enqueue_one(&b, grouped(b"second")).await;
    let claimed = claim_within(&b, "q", flow, Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.job_id, first);
    let lease = claimed[0].lease.clone();
    assert!(
        b.revoked(std::slice::from_ref(&lease), Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty(),
        "not cancelled yet"
    );

    assert!(b.cancel(&first, REASON).await.unwrap());
    let started = Instant::now();
    let mut told = Vec::new();
    while told.is_empty() && started.elapsed() < Duration::from_secs(3) {
        told = b
            .revoked(std::slice::from_ref(&lease), Duration::from_millis(250))
            .await
            .unwrap();
    }
    assert_eq!(
        told,
        std::slice::from_ref(&first),
        "the worker holding it is told"
    );

    let d = detail(&b, &first).await;
    assert_eq!(d.summary.state, JobState::Cancelled);
    assert_eq!(d.summary.attempts, 0, "no attempt spent");
    assert_eq!(d.lease, None);
    let last = d.attempts.last().expect("the attempt is recorded");
    assert_eq!(last.outcome, "cancelled");
    assert_eq!(last.error.as_deref(), Some(REASON));
    assert_eq!(last.worker, "w2");
    let event = cancelled_event(&d);
    assert_eq!(event.worker.as_deref(), Some("w2"));
    assert_eq!(event.message.as_deref(), Some(REASON));
    assert_eq!(
        b.settle(vec![succeeded(&claimed[0], b"late")])
            .await
            .unwrap(),
        [lost(&lease)]
    );

    // The group and the queue's only slot are free at once.
    let next = claim_within(&b, "q", flow, Duration::from_secs(10)).await;
    assert_eq!(next.len(), 1, "the group's next job runs");
    assert_eq!(next[0].lease.job_id, second);
}

pub async fn cancelling_a_parent_cancels_its_unfinished_children<B: Backend>(b: B) {
    let parent = enqueue_one(&b, job("parents", b"parent")).await;
    let first = claim_one(&b, "parents").await;
    let kids = vec![
        child(&b, &first, 0, "children", OnChildFailure::FailParent).await,
        child(&b, &first, 1, "children", OnChildFailure::FailParent).await,
    ];
    let kid_ids: Vec<JobId> = kids.iter().map(|k| k.id.clone()).collect();
    settle_ok(&b, wait(&first, kids)).await;
    assert_eq!(state(&b, &parent).await, JobState::Waiting);
    let done = claim_one(&b, "children").await;
    settle_ok(&b, succeeded(&done, b"")).await;
    let (finished, open) = if done.lease.job_id == kid_ids[0] {
        (&kid_ids[0], &kid_ids[1])
    } else {
        (&kid_ids[1], &kid_ids[0])
    };

    assert!(b.cancel(&parent, REASON).await.unwrap());
    assert_eq!(state(&b, &parent).await, JobState::Cancelled);
    assert_eq!(state(&b, finished).await, JobState::Succeeded);
    let d = detail(&b, open).await;
    assert_eq!(d.summary.state, JobState::Cancelled);
    let message = cancelled_event(&d).message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!("parent job {parent} was cancelled")) && message.contains(REASON),
        "{message}"
    );
    assert!(claim(&b, "children", 10, LEASE).await.is_empty());
    assert!(claim(&b, "parents", 10, LEASE).await.is_empty());
}

pub async fn prune_per_state_keeps_the_other_states_and_never_dead_ones<B: Backend>(b: B) {
    let ok = enqueue_one(&b, job("q", b"ok")).await;
    let claimed = claim_one(&b, "q").await;
    settle_ok(&b, succeeded(&claimed, b"")).await;
    let cancelled = enqueue_one(&b, job("q", b"c")).await;
    assert!(b.cancel(&cancelled, REASON).await.unwrap());
    let dead_id = kill(&b, "q", Phase::Run, "d").await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let only_succeeded = Prune {
        succeeded: Some(now() + 1),
        cancelled: None,
    };
    assert_eq!(b.prune(only_succeeded).await.unwrap(), 1);
    assert!(b.job(&ok).await.unwrap().is_none());
    assert_eq!(state(&b, &cancelled).await, JobState::Cancelled);
    let cancelled_long_ago = Prune {
        succeeded: None,
        cancelled: Some(now() - 60_000),
    };
    assert_eq!(b.prune(cancelled_long_ago).await.unwrap(), 0, "kept longer");
    assert_eq!(state(&b, &cancelled).await, JobState::Cancelled);
    let cancelled_now = Prune {
        succeeded: None,
        cancelled: Some(now() + 1),
    };
    assert_eq!(b.prune(cancelled_now).await.unwrap(), 1);
    assert!(b.job(&cancelled).await.unwrap().is_none());
    assert_eq!(b.prune(Prune::before(now() + 1)).await.unwrap(), 0);
    assert_eq!(state(&b, &dead_id).await, JobState::Dead, "dead jobs stay");
    let counts = b.queues().await.unwrap();
    let q = counts
        .iter()
        .find(|c| c.queue == "q")
        .expect("q is counted");
    assert_eq!((q.succeeded, q.cancelled, q.dead), (0, 0, 1));
}

pub async fn a_cancelled_attempt_keeps_the_digest_and_logs_its_worker_kept<B: Backend>(b: B) {
    let running = enqueue_one(&b, job("q", b"running")).await;
    let claimed = claim_one(&b, "q").await;
    let line = LogLine {
        at: Duration::from_millis(3),
        level: LogLevel::Info,
        source: LogSource::Plugin,
        message: "halfway".into(),
        fields: vec![("step".into(), "2".into())],
    };
    let kept = AttemptRecord {
        digest: Some("sha256:abcd".into()),
        logs: vec![line.clone()],
        ..record(&claimed, "cancelled", None, None)
    };
    // Not cancelled: nothing to complete, nothing recorded.
    assert!(
        !b.keep_cancelled(&claimed.lease, kept.clone())
            .await
            .unwrap()
    );
    assert!(detail(&b, &running).await.attempts.is_empty());

    assert!(b.cancel(&running, REASON).await.unwrap());
    let before = detail(&b, &running).await;
    assert_eq!(before.attempts.len(), 1);
    assert_eq!(before.attempts[0].outcome, "cancelled");
    assert_eq!(before.attempts[0].digest, None);
    // Another lease of the job (a forged token) cannot write it.
    let forged = Lease {
        token: claimed.lease.token + 7,
        ..claimed.lease.clone()
    };
    assert!(!b.keep_cancelled(&forged, kept.clone()).await.unwrap());

    assert!(
        b.keep_cancelled(&claimed.lease, kept.clone())
            .await
            .unwrap()
    );
    let after = detail(&b, &running).await;
    assert_eq!(after.summary.state, JobState::Cancelled);
    assert_eq!(after.attempts.len(), 1);
    let attempt = &after.attempts[0];
    assert_eq!(attempt.outcome, "cancelled");
    assert_eq!(
        attempt.error.as_deref(),
        Some(REASON),
        "the cancel's reason stays"
    );
    assert_eq!(attempt.digest.as_deref(), Some("sha256:abcd"));
    assert_eq!(attempt.logs, [line]);
    // Once only.
    let other = AttemptRecord {
        digest: Some("sha256:ffff".into()),
        ..kept
    };
    assert!(!b.keep_cancelled(&claimed.lease, other).await.unwrap());
    assert_eq!(
        detail(&b, &running).await.attempts[0].digest.as_deref(),
        Some("sha256:abcd")
    );
}

pub async fn the_last_progress_an_attempt_reported_is_kept_on_the_job<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"p")).await;
    let claimed = claim_one(&b, "q").await;
    let half = spool::outcome::Progress {
        percent: 50,
        message: Some("half".into()),
    };
    let mut settle = delay(&claimed, now());
    settle.progress = Some(half.clone());
    settle_ok(&b, settle).await;
    assert_eq!(detail(&b, &id).await.summary.progress, Some(half.clone()));
    // An attempt that reports none leaves the last one in place; one that does replaces it.
    let claimed = claim_one(&b, "q").await;
    settle_ok(&b, delay(&claimed, now())).await;
    let listed = b.jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(listed[0].progress, Some(half));
    let claimed = claim_one(&b, "q").await;
    let mut settle = succeeded(&claimed, b"done");
    let full = spool::outcome::Progress {
        percent: 100,
        message: None,
    };
    settle.progress = Some(full.clone());
    settle_ok(&b, settle).await;
    assert_eq!(detail(&b, &id).await.summary.progress, Some(full));
}
