//! What a settle does: retries, delays, checkpoints, the dead-letter envelope.

use super::*;

pub async fn retry_schedules_the_next_attempt_and_counts_it<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim_one(&b, "q").await;
    let backoff_until = now() + 60_000;
    settle_ok(&b, retry(&first, backoff_until, "boom")).await;

    let scheduled = detail(&b, &id).await;
    assert_eq!(scheduled.summary.state, JobState::Scheduled);
    assert_eq!(scheduled.summary.attempts, 1);
    assert_eq!(scheduled.summary.run_at, backoff_until);
    assert_eq!(scheduled.summary.last_error.as_deref(), Some("boom"));
    assert_eq!(scheduled.summary.last_phase, Some(Phase::Run));
    assert_eq!(scheduled.lease, None);
    assert_eq!(scheduled.attempts.len(), 1);
    assert_eq!(scheduled.attempts[0].outcome, "retry");
    let events = &scheduled.events;
    assert_eq!(
        kinds(events),
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::Failed,
            EventKind::RetryScheduled
        ]
    );
    assert_eq!(events[2].message.as_deref(), Some("boom"));
    assert_eq!(events[2].phase, Some(Phase::Run));
    assert_eq!(events[2].attempt, Some(1));
    assert_eq!(events[3].message.as_deref(), Some("boom"));
    let backoff = events[3].duration_ms.unwrap();
    assert!((55_000..=60_000).contains(&backoff), "backoff {backoff} ms");
    assert!(
        claim(&b, "q", 10, LEASE).await.is_empty(),
        "not before the backoff"
    );

    // A retry that is due at once is ready, and its claim is the next attempt.
    let id = enqueue_one(&b, job("now", b"y")).await;
    let first = claim_one(&b, "now").await;
    settle_ok(&b, retry(&first, now() - 1, "flaky")).await;
    assert_eq!(state(&b, &id).await, JobState::Ready);
    let second = claim_one(&b, "now").await;
    assert_eq!((second.attempt, second.started), (2, 2));
}

pub async fn delay_does_not_spend_an_attempt<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim_one(&b, "q").await;
    settle_ok(&b, delay(&first, now() + 300)).await;

    let delayed = detail(&b, &id).await;
    assert_eq!(delayed.summary.state, JobState::Scheduled);
    assert_eq!(delayed.summary.attempts, 0);
    assert_eq!(
        delayed.attempts.len(),
        1,
        "the delayed run is in the history"
    );
    let last = delayed.events.last().unwrap();
    assert_eq!(last.kind, EventKind::Delayed);
    assert!((200..=300).contains(&last.duration_ms.unwrap()));
    assert!(claim(&b, "q", 10, LEASE).await.is_empty());

    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = claim_one(&b, "q").await;
    assert_eq!(again.attempt, 1, "a delay spends no attempt");
    assert_eq!(again.started, 2, "but it counts as a start");
}

pub async fn checkpoints_carry_over_to_the_next_attempt<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim_one(&b, "q").await;
    let mut settle = retry(&first, now() - 1, "step 2 failed");
    settle.checkpoint = Some(b"step-1".to_vec());
    settle_ok(&b, settle).await;

    let second = claim_one(&b, "q").await;
    assert_eq!(second.checkpoint.as_deref(), Some(&b"step-1"[..]));
    // No checkpoint keeps the last one.
    settle_ok(&b, retry(&second, now() - 1, "again")).await;
    let third = claim_one(&b, "q").await;
    assert_eq!(third.checkpoint.as_deref(), Some(&b"step-1"[..]));
    let mut settle = succeeded(&third, b"done");
    settle.checkpoint = Some(b"step-3".to_vec());
    settle_ok(&b, settle).await;
    assert_eq!(
        detail(&b, &id).await.checkpoint.as_deref(),
        Some(&b"step-3"[..])
    );
}

pub async fn a_dead_job_keeps_its_whole_envelope<B: Backend>(b: B) {
    let id = enqueue_one(
        &b,
        NewJob {
            tenant: Some("acme".into()),
            max_attempts: Some(2),
            ..job("q", b"poison")
        },
    )
    .await;
    let logs = vec![LogLine {
        at: Duration::from_micros(1_500),
        level: LogLevel::Warn,
        source: LogSource::Plugin,
        message: "parsing".into(),
        fields: vec![("step".into(), "1".into())],
    }];
    let first = claim_one(&b, "q").await;
    let mut settle = retry(&first, now() - 1, "first failure");
    settle.attempt.digest = Some("sha256:aa".into());
    settle.attempt.logs = logs.clone();
    settle_ok(&b, settle).await;
    let second = claim_one(&b, "q").await;
    let mut settle = dead(&second, Phase::Trap, "unreachable");
    settle.attempt.digest = Some("sha256:aa".into());
    settle_ok(&b, settle).await;

    let listed = b.dead(&DlqFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    let summary = &listed[0];
    assert_eq!(summary.id, id);
    assert_eq!(summary.state, JobState::Dead);
    assert_eq!(summary.attempts, 2);
    assert_eq!(summary.tenant.as_deref(), Some("acme"));
    assert_eq!(summary.last_error.as_deref(), Some("unreachable"));
    assert_eq!(summary.last_phase, Some(Phase::Trap));

    let envelope = detail(&b, &id).await;
    assert_eq!(&envelope.summary, summary);
    assert_eq!(envelope.payload, b"poison");
    let attempts = &envelope.attempts;
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        attempts.iter().map(|a| a.phase).collect::<Vec<_>>(),
        [Some(Phase::Run), Some(Phase::Trap)]
    );
    assert_eq!(attempts[0].error.as_deref(), Some("first failure"));
    assert_eq!(attempts[1].error.as_deref(), Some("unreachable"));
    assert!(
        attempts
            .iter()
            .all(|a| a.digest.as_deref() == Some("sha256:aa"))
    );
    assert_eq!(attempts[0].logs, logs);
    assert!(attempts[1].logs.is_empty());
    assert_eq!(
        kinds(&envelope.events),
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::Failed,
            EventKind::RetryScheduled,
            EventKind::Started,
            EventKind::Failed,
            EventKind::DeadLettered
        ]
    );
    let dead_lettered = envelope.events.last().unwrap();
    assert_eq!(dead_lettered.phase, Some(Phase::Trap));
    assert_eq!(dead_lettered.message.as_deref(), Some("unreachable"));
    assert_eq!(dead_lettered.digest.as_deref(), Some("sha256:aa"));
    assert!(claim(&b, "q", 10, LEASE).await.is_empty());
}

pub async fn an_attempt_keeps_its_http_counts<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim_one(&b, "q").await;
    let mut settle = retry(&first, now(), "502 from the mail API");
    let usage = spool::HttpUsage {
        requests: 2,
        bytes_sent: 120,
        bytes_received: 30,
        refused: 1,
    };
    settle.attempt.http = usage;
    settle_ok(&b, settle).await;
    let second = claim_one(&b, "q").await;
    settle_ok(&b, succeeded(&second, b"sent")).await;

    let done = detail(&b, &id).await;
    assert_eq!(done.attempts.len(), 2);
    assert_eq!(done.attempts[0].http, usage);
    assert!(done.attempts[1].http.is_none());
}
