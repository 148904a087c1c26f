//! Reads: queue counts, job listings, the event log and job timelines.

use super::*;

pub async fn queues_counts_jobs_per_state<B: Backend>(b: B) {
    b.enqueue(vec![
        job("q1", b"ready"),
        job("q1", b"ready"),
        NewJob {
            run_at: Some(now() + 60_000),
            ..job("q1", b"scheduled")
        },
        job("q1", b"ready"),
        job("q2", b"ready"),
    ])
    .await
    .unwrap();
    // Claims go in priority order: these three run ahead of the ready jobs.
    let urgent = |name: &str| NewJob {
        priority: 10,
        ..job("q1", name.as_bytes())
    };
    b.enqueue(vec![urgent("succeeds"), urgent("dies"), urgent("runs")])
        .await
        .unwrap();
    let claimed = claim(&b, "q1", 3, LEASE).await;
    settle_ok(&b, succeeded(&claimed[0], b"")).await;
    settle_ok(&b, dead(&claimed[1], Phase::Run, "x")).await;
    let cancelled = enqueue_one(&b, job("q1", b"cancel")).await;
    assert!(b.cancel(&cancelled, "test").await.unwrap());

    let mut counts = b.queues().await.unwrap();
    counts.sort_by(|x, y| x.queue.cmp(&y.queue));
    assert_eq!(
        counts,
        [
            QueueCounts {
                queue: "q1".into(),
                scheduled: 1,
                ready: 3,
                running: 1,
                succeeded: 1,
                dead: 1,
                cancelled: 1,
                waiting: 0,
            },
            QueueCounts {
                queue: "q2".into(),
                ready: 1,
                ..QueueCounts::default()
            },
        ]
    );
}

pub async fn jobs_are_listed_newest_first_with_filters<B: Backend>(b: B) {
    let mut ids = Vec::new();
    for (queue, delayed) in [("q1", false), ("q2", false), ("q1", true), ("q1", false)] {
        let run_at = delayed.then(|| now() + 60_000);
        ids.push(
            enqueue_one(
                &b,
                NewJob {
                    run_at,
                    ..job(queue, b"x")
                },
            )
            .await,
        );
    }
    let listed = |filter: JobFilter| {
        let b = &b;
        async move {
            b.jobs(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_first = ids.iter().rev().cloned().collect::<Vec<_>>();
    assert_eq!(listed(JobFilter::default()).await, newest_first);
    assert_eq!(
        listed(JobFilter {
            limit: Some(2),
            ..JobFilter::default()
        })
        .await,
        newest_first[..2]
    );
    assert_eq!(
        listed(JobFilter {
            queue: Some("q1".into()),
            ..JobFilter::default()
        })
        .await,
        [ids[3].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(
        listed(JobFilter {
            state: Some(JobState::Scheduled),
            ..JobFilter::default()
        })
        .await,
        [ids[2].clone()]
    );
    assert_eq!(
        listed(JobFilter {
            queue: Some("q1".into()),
            state: Some(JobState::Ready),
            ..JobFilter::default()
        })
        .await,
        [ids[3].clone(), ids[0].clone()]
    );

    // The default limit is 100.
    b.enqueue((0..120).map(|_| job("bulk", b"")).collect())
        .await
        .unwrap();
    assert_eq!(listed(JobFilter::default()).await.len(), 100);
}

pub async fn events_are_ordered_and_follow_after<B: Backend>(b: B) {
    for i in 0..5 {
        b.record(NewEvent {
            queue: Some("q".into()),
            digest: Some(format!("sha256:{i}")),
            message: Some(format!("loaded {i}")),
            worker: Some("w1".into()),
            ..NewEvent::new(EventKind::PluginLoaded)
        })
        .await
        .unwrap();
    }
    let all = b.events(&EventFilter::default()).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.kind, EventKind::PluginLoaded);
        assert_eq!(e.job_id, None);
        assert_eq!(e.queue.as_deref(), Some("q"));
        assert_eq!(e.message, Some(format!("loaded {i}")));
        assert_eq!(e.digest, Some(format!("sha256:{i}")));
        assert_eq!(e.worker.as_deref(), Some("w1"));
    }

    let after = b
        .events(&EventFilter {
            after: Some(all[1].seq),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(after, all[2..], "after is exclusive");
    let limited = b
        .events(&EventFilter {
            after: Some(all[0].seq),
            limit: Some(2),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, all[1..3]);
    let none = b
        .events(&EventFilter {
            after: Some(all[4].seq),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // Transitions follow in the same log.
    let id = enqueue_one(&b, job("q", b"x")).await;
    let follow = b
        .events(&EventFilter {
            after: Some(all[4].seq),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(follow.len(), 1);
    assert_eq!(follow[0].kind, EventKind::Enqueued);
    assert_eq!(follow[0].job_id.as_ref(), Some(&id));

    // A recorded event about a job joins its timeline; one about no job cannot.
    b.record(NewEvent {
        job_id: Some(id.clone()),
        message: Some("no plugin for q".into()),
        ..NewEvent::new(EventKind::PluginRefused)
    })
    .await
    .unwrap();
    assert_eq!(
        timeline(&b, &id).await,
        [EventKind::Enqueued, EventKind::PluginRefused]
    );
    let missing = b
        .record(NewEvent {
            job_id: Some(JobId("999999999".into())),
            ..NewEvent::new(EventKind::PluginRefused)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(missing, QueueError::NotFound(_)),
        "got {missing:?}"
    );
}

pub async fn job_timeline_lists_its_events_in_order<B: Backend>(b: B) {
    let id = enqueue_one(
        &b,
        NewJob {
            tenant: Some("acme".into()),
            ..job("q", b"x")
        },
    )
    .await;
    let first = claim_one(&b, "q").await;
    settle_ok(&b, retry(&first, now() - 1, "flaky")).await;
    let wanted = [QueueClaim {
        queue: "q".into(),
        limit: 1,
        ..QueueClaim::default()
    }];
    let second = b.claim("w2", &wanted, LEASE).await.unwrap().remove(0);
    settle_ok(&b, succeeded(&second, b"ok")).await;

    let events = detail(&b, &id).await.events;
    assert_eq!(
        kinds(&events),
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::Failed,
            EventKind::RetryScheduled,
            EventKind::Started,
            EventKind::Succeeded
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    for e in &events {
        assert_eq!(e.job_id.as_ref(), Some(&id));
        assert_eq!(e.queue.as_deref(), Some("q"));
        assert_eq!(e.tenant.as_deref(), Some("acme"));
    }
    assert_eq!(
        (events[1].worker.as_deref(), events[1].attempt),
        (Some("w1"), Some(1))
    );
    assert_eq!(
        (events[2].message.as_deref(), events[2].attempt),
        (Some("flaky"), Some(1))
    );
    assert_eq!(
        (events[4].worker.as_deref(), events[4].attempt),
        (Some("w2"), Some(2))
    );
    assert_eq!(
        (events[5].worker.as_deref(), events[5].attempt),
        (Some("w2"), Some(2))
    );
    assert!(events[5].duration_ms.is_some());

    let by_filter = b
        .events(&EventFilter {
            job: Some(id.clone()),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_filter, events);
}
