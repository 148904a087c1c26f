//! Leases and fencing: racing claimers, stale settles, renew, expiry, release, cancel.

use super::*;

pub async fn one_winner_per_job_when_claimers_race<B: Backend>(b: B) {
    let b = Arc::new(b);
    let batch = (0..500)
        .map(|i| job("race", format!("{i}").as_bytes()))
        .collect();
    b.enqueue(batch).await.unwrap();

    let claimers = (0..8)
        .map(|n| {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let worker = format!("w{n}");
                let wanted = [QueueClaim {
                    queue: "race".into(),
                    limit: 7,
                    ..QueueClaim::default()
                }];
                let mut mine = Vec::new();
                // Bounded, so a backend that hands out running jobs fails instead of hanging.
                for _ in 0..=500 {
                    let claimed = b.claim(&worker, &wanted, LEASE).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.lease.job_id));
                }
                panic!("{worker} kept claiming after every job was taken");
            })
        })
        .collect::<Vec<_>>();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct = all.iter().cloned().collect::<HashSet<_>>();
    assert_eq!(all.len(), 500, "every job claimed");
    assert_eq!(distinct.len(), 500, "no job claimed twice");
    assert_eq!(b.queues().await.unwrap()[0].running, 500);
}

pub async fn a_settle_with_a_stale_lease_is_refused_and_writes_nothing<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim_one(&b, "q").await;
    assert_eq!(
        b.release(std::slice::from_ref(&first.lease)).await.unwrap(),
        1
    );
    let second = claim_one(&b, "q").await;
    assert_ne!(
        second.lease.token, first.lease.token,
        "every claim has a fresh token"
    );

    let mut stale = succeeded(&first, b"stale");
    stale.checkpoint = Some(b"stale".to_vec());
    assert_eq!(
        b.settle(vec![stale.clone()]).await.unwrap(),
        [lost(&first.lease)]
    );
    let untouched = detail(&b, &id).await;
    assert_eq!(untouched.summary.state, JobState::Running);
    assert_eq!(untouched.lease.as_ref(), Some(&second.lease));
    assert!(untouched.attempts.is_empty(), "no attempt recorded");
    assert_eq!((untouched.output, untouched.checkpoint), (None, None));
    assert_eq!(
        kinds(&untouched.events),
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::Released,
            EventKind::Started
        ]
    );

    // A made-up token is refused too.
    let mut forged = succeeded(&second, b"forged");
    forged.lease.token = second.lease.token.wrapping_add(1);
    let forged_lease = forged.lease.clone();
    // A job that does not exist: refused, not an error.
    let mut ghost = succeeded(&second, b"ghost");
    ghost.lease.job_id = JobId("999999999".into());
    let ghost_lease = ghost.lease.clone();

    // Each settle of a batch stands alone.
    let results = b
        .settle(vec![stale, forged, succeeded(&second, b"ok"), ghost])
        .await
        .unwrap();
    assert_eq!(
        results,
        [
            lost(&first.lease),
            lost(&forged_lease),
            Ok(()),
            lost(&ghost_lease)
        ]
    );
    let done = detail(&b, &id).await;
    assert_eq!(done.summary.state, JobState::Succeeded);
    assert_eq!(done.output.as_deref(), Some(&b"ok"[..]));
    assert_eq!(done.attempts.len(), 1);

    // A settled lease is gone: settling again is refused.
    assert_eq!(
        b.settle(vec![succeeded(&second, b"twice")]).await.unwrap(),
        [lost(&second.lease)]
    );
    assert_eq!(detail(&b, &id).await.output.as_deref(), Some(&b"ok"[..]));
}

pub async fn renew_keeps_a_lease_alive_and_refuses_a_stale_one<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let claimed = claim(&b, "q", 1, SHORT_LEASE).await.remove(0);
    let mut forged = claimed.lease.clone();
    forged.token = forged.token.wrapping_add(1);
    assert_eq!(
        b.renew(
            &[claimed.lease.clone(), forged.clone()],
            Duration::from_secs(10)
        )
        .await
        .unwrap(),
        [true, false]
    );
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert!(
        b.expire_leases(5).await.unwrap().is_empty(),
        "renewed lease kept"
    );
    let running = detail(&b, &id).await;
    assert_eq!(running.summary.state, JobState::Running);
    assert!(running.lease.unwrap().expires_at > now() + 5_000);

    settle_ok(&b, succeeded(&claimed, b"")).await;
    assert_eq!(
        b.renew(std::slice::from_ref(&claimed.lease), LEASE)
            .await
            .unwrap(),
        [false],
        "a settled lease cannot be renewed"
    );
}

pub async fn an_expired_lease_returns_the_job_and_refuses_the_late_settle<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim(&b, "q", 1, SHORT_LEASE).await.remove(0);
    assert!(b.expire_leases(5).await.unwrap().is_empty(), "not yet");

    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert_eq!(b.expire_leases(5).await.unwrap(), std::slice::from_ref(&id));
    assert!(
        b.expire_leases(5).await.unwrap().is_empty(),
        "returned once"
    );

    let back = detail(&b, &id).await;
    assert_eq!(back.summary.state, JobState::Ready);
    assert_eq!(back.summary.attempts, 1);
    assert_eq!(back.summary.last_phase, Some(Phase::LeaseExpired));
    assert_eq!(back.lease, None);
    assert_eq!(back.attempts.len(), 1);
    assert_eq!(back.attempts[0].outcome, "lease-expired");
    assert_eq!(back.attempts[0].phase, Some(Phase::LeaseExpired));
    assert_eq!(back.attempts[0].attempt, 1);
    assert_eq!(back.attempts[0].worker, "w1");
    let expired = back.events.last().unwrap();
    assert_eq!(expired.kind, EventKind::LeaseExpired);
    assert_eq!(expired.phase, Some(Phase::LeaseExpired));
    assert_eq!(expired.attempt, Some(1));

    assert_eq!(
        b.settle(vec![succeeded(&first, b"late")]).await.unwrap(),
        [lost(&first.lease)]
    );
    assert_eq!(detail(&b, &id).await.output, None);
    assert_eq!(
        b.renew(std::slice::from_ref(&first.lease), LEASE)
            .await
            .unwrap(),
        [false]
    );

    let second = claim_one(&b, "q").await;
    assert_ne!(second.lease.token, first.lease.token);
    assert_eq!((second.attempt, second.started), (2, 2));
}

pub async fn an_expired_lease_dead_letters_a_job_out_of_attempts<B: Backend>(b: B) {
    let with_max = |max: Option<u32>, name: &str| NewJob {
        max_attempts: max,
        ..job("q", name.as_bytes())
    };
    let enqueued = b
        .enqueue(vec![
            with_max(Some(1), "one"),
            with_max(None, "default"),
            with_max(Some(3), "three"),
        ])
        .await
        .unwrap();
    let [one, default, three] = [0, 1, 2].map(|i| enqueued[i].id.clone());

    assert_eq!(claim(&b, "q", 10, SHORT_LEASE).await.len(), 3);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let mut returned = b.expire_leases(2).await.unwrap();
    returned.sort();
    let mut all = vec![one.clone(), default.clone(), three.clone()];
    all.sort();
    assert_eq!(returned, all);
    assert_eq!(state(&b, &one).await, JobState::Dead);
    assert_eq!(state(&b, &default).await, JobState::Ready);
    assert_eq!(state(&b, &three).await, JobState::Ready);
    assert_eq!(
        timeline(&b, &one).await,
        [
            EventKind::Enqueued,
            EventKind::Started,
            EventKind::LeaseExpired,
            EventKind::DeadLettered
        ]
    );
    let listed = b.dead(&DlqFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, one);
    assert_eq!(listed[0].last_phase, Some(Phase::LeaseExpired));

    // The default applies to the job without its own max: its second lapse is its last.
    assert_eq!(claim(&b, "q", 10, SHORT_LEASE).await.len(), 2);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    assert_eq!(b.expire_leases(2).await.unwrap().len(), 2);
    assert_eq!(state(&b, &default).await, JobState::Dead);
    assert_eq!(state(&b, &three).await, JobState::Ready);
    assert_eq!(detail(&b, &three).await.summary.attempts, 2);
}

pub async fn release_returns_jobs_without_spending_an_attempt<B: Backend>(b: B) {
    b.enqueue(vec![job("q", b"a"), job("q", b"b")])
        .await
        .unwrap();
    let claimed = claim(&b, "q", 10, LEASE).await;
    let leases = claimed.iter().map(|c| c.lease.clone()).collect::<Vec<_>>();
    assert_eq!(b.release(&leases).await.unwrap(), 2);
    assert_eq!(b.release(&leases).await.unwrap(), 0, "already released");
    for lease in &leases {
        let back = detail(&b, &lease.job_id).await;
        assert_eq!(back.summary.state, JobState::Ready);
        assert_eq!(back.summary.attempts, 0);
        assert_eq!(back.lease, None);
        assert!(back.attempts.is_empty());
        assert_eq!(back.events.last().unwrap().kind, EventKind::Released);
    }
    assert_eq!(
        b.settle(vec![succeeded(&claimed[0], b"late")])
            .await
            .unwrap(),
        [lost(&claimed[0].lease)]
    );
    let again = claim(&b, "q", 10, LEASE).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|c| c.attempt == 1 && c.started == 2));
}

pub async fn cancel_stops_a_job_and_revokes_its_lease<B: Backend>(b: B) {
    let waiting = enqueue_one(&b, job("q", b"a")).await;
    assert!(b.cancel(&waiting, "test").await.unwrap());
    assert_eq!(state(&b, &waiting).await, JobState::Cancelled);
    assert_eq!(
        timeline(&b, &waiting).await,
        [EventKind::Enqueued, EventKind::Cancelled]
    );
    assert!(claim(&b, "q", 10, LEASE).await.is_empty());
    assert!(
        !b.cancel(&waiting, "test").await.unwrap(),
        "already finished"
    );

    let running = enqueue_one(&b, job("q", b"b")).await;
    let claimed = claim_one(&b, "q").await;
    assert!(b.cancel(&running, "test").await.unwrap());
    assert_eq!(
        b.settle(vec![succeeded(&claimed, b"late")]).await.unwrap(),
        [lost(&claimed.lease)]
    );
    assert_eq!(
        b.renew(std::slice::from_ref(&claimed.lease), LEASE)
            .await
            .unwrap(),
        [false]
    );
    let cancelled = detail(&b, &running).await;
    assert_eq!(cancelled.summary.state, JobState::Cancelled);
    assert_eq!((cancelled.lease, cancelled.output), (None, None));
    assert!(b.expire_leases(5).await.unwrap().is_empty());

    let done = enqueue_one(&b, job("q", b"c")).await;
    let claimed = claim_one(&b, "q").await;
    settle_ok(&b, succeeded(&claimed, b"")).await;
    assert!(!b.cancel(&done, "test").await.unwrap());
    assert_eq!(state(&b, &done).await, JobState::Succeeded);

    for missing in ["999999999", "no-such-job"] {
        let err = b.cancel(&JobId(missing.into()), "test").await.unwrap_err();
        assert!(matches!(err, QueueError::NotFound(_)), "got {err:?}");
    }
}

pub async fn a_lapsed_job_is_judged_by_the_max_attempts_its_first_claim_stored<B: Backend>(b: B) {
    // Two queues without a max of their own on their jobs: one allows 3 attempts, the other
    // 10. Whatever number the sweeper or a later claim passes, each job keeps its own.
    let small = enqueue_one(&b, job("small", b"s")).await;
    let large = enqueue_one(&b, job("large", b"l")).await;
    let claim_with = |queue: &str, max: u32| QueueClaim {
        queue: queue.into(),
        limit: 1,
        max_attempts: Some(max),
        ..QueueClaim::default()
    };
    for (round, (small_max, large_max, sweep_default)) in [(3, 10, 1), (10, 1, 10), (10, 1, 10)]
        .into_iter()
        .enumerate()
    {
        let claimed = b
            .claim(
                "w1",
                &[
                    claim_with("small", small_max),
                    claim_with("large", large_max),
                ],
                SHORT_LEASE,
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2, "round {round}");
        for c in &claimed {
            let own = if c.lease.job_id == small { 3 } else { 10 };
            assert_eq!(c.max_attempts, Some(own), "round {round}: {c:?}");
        }
        tokio::time::sleep(PAST_SHORT_LEASE).await;
        assert_eq!(
            b.expire_leases(sweep_default).await.unwrap().len(),
            2,
            "round {round}"
        );
        // A sweep whose default is 1 leaves the 10-attempt job alone; one whose default is 10
        // still dead-letters the 3-attempt job at its third lapse.
        let expected = if round == 2 {
            JobState::Dead
        } else {
            JobState::Ready
        };
        assert_eq!(state(&b, &small).await, expected, "round {round}");
        assert_eq!(state(&b, &large).await, JobState::Ready, "round {round}");
    }
    let small = detail(&b, &small).await.summary;
    assert_eq!((small.attempts, small.max_attempts), (3, Some(3)));
    assert_eq!(small.last_phase, Some(Phase::LeaseExpired));
    let large = detail(&b, &large).await.summary;
    assert_eq!((large.attempts, large.max_attempts), (3, Some(10)));

    // A job enqueued with its own max keeps it whatever the claim says.
    let own = enqueue_one(
        &b,
        NewJob {
            max_attempts: Some(2),
            ..job("small", b"own")
        },
    )
    .await;
    let claimed = b
        .claim("w1", &[claim_with("small", 7)], LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.job_id, own);
    assert_eq!(claimed[0].max_attempts, Some(2));
}
