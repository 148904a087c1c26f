//! Enqueue and claim: batches, ordering, delays, idempotency keys.

use super::*;

pub async fn enqueue_claim_settle_round_trip<B: Backend>(b: B) {
    let before = now();
    let id = enqueue_one(
        &b,
        NewJob {
            priority: 3,
            max_attempts: Some(4),
            tenant: Some("acme".into()),
            metadata: vec![("trace".into(), "abc".into())],
            ..job("email", b"hello")
        },
    )
    .await;
    let ready = detail(&b, &id).await;
    assert_eq!(ready.summary.state, JobState::Ready);
    assert_eq!(ready.summary.queue, "email");
    assert_eq!(ready.payload, b"hello");
    assert_eq!(ready.metadata, vec![("trace".to_owned(), "abc".to_owned())]);
    assert_eq!(ready.started, 0);
    assert_eq!(ready.lease, None);

    let claimed = claim(&b, "email", 10, LEASE).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.lease.job_id, id);
    assert_eq!(c.lease.worker, "w1");
    assert!(c.lease.expires_at >= before + 29_000, "lease runs ~30 s");
    assert_eq!(c.queue, "email");
    assert_eq!(c.payload, b"hello");
    assert_eq!((c.attempt, c.started), (1, 1));
    assert_eq!(c.max_attempts, Some(4));
    assert_eq!(c.tenant.as_deref(), Some("acme"));
    assert_eq!(c.metadata, vec![("trace".to_owned(), "abc".to_owned())]);
    assert_eq!(c.checkpoint, None);
    assert!(c.enqueued_at >= before && c.enqueued_at <= now());

    let running = detail(&b, &id).await;
    assert_eq!(running.summary.state, JobState::Running);
    assert_eq!(running.lease.as_ref(), Some(&c.lease));
    assert!(
        claim(&b, "email", 10, LEASE).await.is_empty(),
        "a running job is not claimable"
    );

    let mut settle = succeeded(c, b"sent");
    settle.checkpoint = Some(b"step-2".to_vec());
    assert_eq!(b.settle(vec![settle]).await.unwrap(), vec![Ok(())]);

    let done = detail(&b, &id).await;
    assert_eq!(done.summary.state, JobState::Succeeded);
    assert_eq!(
        done.summary.attempts, 0,
        "a success is not a failed attempt"
    );
    assert_eq!(done.started, 1);
    assert_eq!(done.output.as_deref(), Some(&b"sent"[..]));
    assert_eq!(done.checkpoint.as_deref(), Some(&b"step-2"[..]));
    assert_eq!(done.lease, None);
    assert_eq!(done.attempts.len(), 1);
    assert_eq!(done.attempts[0].outcome, "succeeded");
    assert_eq!(done.attempts[0].attempt, 1);
    assert_eq!(done.attempts[0].worker, "w1");
    assert_eq!(
        kinds(&done.events),
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::Succeeded
        ]
    );
    assert!(claim(&b, "email", 10, LEASE).await.is_empty());
}

pub async fn batched_enqueue_inserts_every_job<B: Backend>(b: B) {
    let batch = (0..250)
        .map(|i| job("bulk", format!("job {i}").as_bytes()))
        .collect::<Vec<_>>();
    let enqueued = b.enqueue(batch).await.unwrap();
    assert_eq!(enqueued.len(), 250);
    assert!(enqueued.iter().all(|e| !e.duplicate));
    let ids = enqueued
        .iter()
        .map(|e| e.id.clone())
        .collect::<HashSet<_>>();
    assert_eq!(ids.len(), 250, "every job has its own id");

    let counts = b.queues().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].queue.as_str(), counts[0].ready), ("bulk", 250));

    // The answers come in the batch's order.
    for (i, e) in enqueued.iter().enumerate() {
        assert_eq!(
            detail(&b, &e.id).await.payload,
            format!("job {i}").as_bytes()
        );
    }
    let enqueued_events = b
        .events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Enqueued)
        .count();
    assert_eq!(enqueued_events, 250);
}

pub async fn an_empty_queue_name_is_a_bad_request_and_enqueues_nothing<B: Backend>(b: B) {
    let err = b
        .enqueue(vec![job("fine", b"1"), job("", b"2")])
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::BadRequest(_)), "got {err:?}");
    assert!(b.jobs(&JobFilter::default()).await.unwrap().is_empty());
    assert!(b.queues().await.unwrap().is_empty());
}

pub async fn claims_follow_priority_then_run_at_then_enqueue_order<B: Backend>(b: B) {
    let t = now();
    let at = |priority: i32, ago: i64, name: &str| NewJob {
        priority,
        run_at: Some(t - ago),
        ..job("q", name.as_bytes())
    };
    let enqueued = b
        .enqueue(vec![
            at(0, 3_000, "a"),
            at(5, 1_000, "b"),
            at(5, 2_000, "c"),
            at(0, 3_000, "d"),
            at(-1, 10_000, "e"),
            at(0, 5_000, "g"),
            NewJob {
                priority: 100,
                ..job("other", b"f")
            },
        ])
        .await
        .unwrap();
    assert_eq!(enqueued.len(), 7);

    let payloads = |claimed: Vec<Claimed>| {
        claimed
            .into_iter()
            .map(|c| String::from_utf8(c.payload).unwrap())
            .collect::<Vec<_>>()
    };
    // One at a time, so the order of the claims shows, not just the order of the answer.
    for expected in ["c", "b", "g", "a"] {
        assert_eq!(payloads(claim(&b, "q", 1, LEASE).await), [expected]);
    }
    assert_eq!(payloads(claim(&b, "q", 10, LEASE).await), ["d", "e"]);
    assert!(claim(&b, "q", 10, LEASE).await.is_empty());

    // One claim serves several queues, each up to its own limit.
    b.enqueue(vec![job("x", b"x1"), job("x", b"x2"), job("y", b"y1")])
        .await
        .unwrap();
    let wanted = [
        QueueClaim {
            queue: "x".into(),
            limit: 1,
            ..QueueClaim::default()
        },
        QueueClaim {
            queue: "y".into(),
            limit: 5,
            ..QueueClaim::default()
        },
        QueueClaim {
            queue: "other".into(),
            limit: 0,
            ..QueueClaim::default()
        },
    ];
    let mut got = payloads(b.claim("w1", &wanted, LEASE).await.unwrap());
    got.sort();
    assert_eq!(got, ["x1", "y1"]);
}

pub async fn delayed_jobs_are_not_claimable_before_run_at<B: Backend>(b: B) {
    let id = enqueue_one(
        &b,
        NewJob {
            run_at: Some(now() + 400),
            ..job("later", b"x")
        },
    )
    .await;
    assert_eq!(state(&b, &id).await, JobState::Scheduled);
    assert_eq!(b.queues().await.unwrap()[0].scheduled, 1);
    assert!(claim(&b, "later", 10, LEASE).await.is_empty());

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&b, &id).await, JobState::Ready, "due jobs are ready");
    let claimed = claim(&b, "later", 10, LEASE).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.job_id, id);
}

pub async fn idempotency_key_returns_the_unfinished_job_and_is_free_once_it_finished<B: Backend>(
    b: B,
) {
    let keyed = |queue: &str, key: &str| NewJob {
        key: Some(key.into()),
        ..job(queue, b"k")
    };
    let first = enqueue_one(&b, keyed("q", "k1")).await;
    let again = b.enqueue(vec![keyed("q", "k1")]).await.unwrap();
    assert_eq!(
        again,
        [Enqueued {
            id: first.clone(),
            duplicate: true
        }]
    );
    assert_eq!(
        timeline(&b, &first).await,
        [EventKind::Enqueued, EventKind::Duplicate]
    );

    // Keys are per queue.
    let elsewhere = enqueue_one(&b, keyed("other", "k1")).await;
    assert_ne!(elsewhere, first);

    // Within one batch, the second job is a duplicate of the first.
    let batch = b
        .enqueue(vec![keyed("q", "k2"), keyed("q", "k2")])
        .await
        .unwrap();
    assert!(!batch[0].duplicate && batch[1].duplicate);
    assert_eq!(batch[0].id, batch[1].id);
    let in_q = b
        .jobs(&JobFilter {
            queue: Some("q".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(in_q.len(), 2, "duplicates make no jobs");

    // Running is unfinished too.
    let claimed = claim(&b, "q", 10, LEASE).await;
    let running = claimed.iter().find(|c| c.lease.job_id == first).unwrap();
    assert!(b.enqueue(vec![keyed("q", "k1")]).await.unwrap()[0].duplicate);

    // Once the job finished, the key makes a new job.
    settle_ok(&b, succeeded(running, b"")).await;
    let second = enqueue_one(&b, keyed("q", "k1")).await;
    assert_ne!(second, first);

    // Cancelled and dead jobs free their key as well.
    assert!(b.cancel(&second, "test").await.unwrap());
    let third = enqueue_one(&b, keyed("q", "k1")).await;
    assert_ne!(third, second);
    let c = claim(&b, "q", 10, LEASE).await;
    let c = c.iter().find(|c| c.lease.job_id == third).unwrap();
    settle_ok(&b, dead(c, Phase::Run, "no")).await;
    let fourth = enqueue_one(&b, keyed("q", "k1")).await;
    assert_ne!(fourth, third);
}
