//! The dead-letter queue and retention: listing, replay, purge, prune.

use super::*;

pub async fn dead_lists_most_recently_dead_first_and_filters<B: Backend>(b: B) {
    let a = kill(&b, "q1", Phase::Run, "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let bj = kill(&b, "q2", Phase::Timeout, "b").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = kill(&b, "q1", Phase::Run, "c").await;
    enqueue_one(&b, job("q1", b"alive")).await;

    let ids = |filter: DlqFilter| {
        let b = &b;
        async move {
            b.dead(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ids(DlqFilter::default()).await,
        [c.clone(), bj.clone(), a.clone()]
    );
    let b_died = detail(&b, &bj).await.summary.updated_at;
    assert_eq!(
        ids(DlqFilter {
            phase: Some(Phase::Timeout),
            ..DlqFilter::default()
        })
        .await,
        std::slice::from_ref(&bj)
    );
    assert_eq!(
        ids(DlqFilter {
            queue: Some("q1".into()),
            ..DlqFilter::default()
        })
        .await,
        [c.clone(), a.clone()]
    );
    assert_eq!(
        ids(DlqFilter {
            id: Some(a.clone()),
            ..DlqFilter::default()
        })
        .await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        ids(DlqFilter {
            limit: Some(1),
            ..DlqFilter::default()
        })
        .await,
        std::slice::from_ref(&c)
    );
    assert_eq!(
        ids(DlqFilter {
            since: Some(b_died),
            ..DlqFilter::default()
        })
        .await,
        [c.clone(), bj.clone()]
    );
    assert_eq!(
        ids(DlqFilter {
            until: Some(b_died),
            ..DlqFilter::default()
        })
        .await,
        std::slice::from_ref(&a)
    );
}

pub async fn replay_by_id_gives_a_dead_job_fresh_attempts<B: Backend>(b: B) {
    let id = enqueue_one(&b, job("q", b"x")).await;
    let first = claim_one(&b, "q").await;
    settle_ok(&b, retry(&first, now() - 1, "one")).await;
    let second = claim_one(&b, "q").await;
    settle_ok(&b, dead(&second, Phase::Run, "two")).await;
    let other = kill(&b, "q", Phase::Run, "other").await;

    let filter = DlqFilter {
        id: Some(id.clone()),
        ..DlqFilter::default()
    };
    assert_eq!(b.replay(&filter).await.unwrap(), 1);
    assert_eq!(b.replay(&filter).await.unwrap(), 0, "no longer dead");

    let replayed = detail(&b, &id).await;
    assert_eq!(replayed.summary.state, JobState::Ready);
    assert_eq!(replayed.summary.attempts, 0);
    assert_eq!(replayed.started, 0);
    assert_eq!(replayed.attempts.len(), 2, "history kept");
    assert_eq!(replayed.events.last().unwrap().kind, EventKind::Replayed);
    assert_eq!(state(&b, &other).await, JobState::Dead);

    let fresh = claim_one(&b, "q").await;
    assert_eq!(fresh.lease.job_id, id);
    assert_eq!((fresh.attempt, fresh.started), (1, 1));
    assert!(fresh.lease.token != first.lease.token && fresh.lease.token != second.lease.token);
}

pub async fn replay_by_filter_matches_queue_phase_and_time<B: Backend>(b: B) {
    let a = kill(&b, "q1", Phase::Run, "a").await;
    let bj = kill(&b, "q2", Phase::Timeout, "b").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let c = kill(&b, "q1", Phase::Timeout, "c").await;

    let replay = |filter: DlqFilter| {
        let b = &b;
        async move { b.replay(&filter).await.unwrap() }
    };
    assert_eq!(
        replay(DlqFilter {
            queue: Some("q2".into()),
            phase: Some(Phase::Run),
            ..DlqFilter::default()
        })
        .await,
        0
    );
    assert_eq!(
        replay(DlqFilter {
            phase: Some(Phase::Timeout),
            until: Some(t),
            ..DlqFilter::default()
        })
        .await,
        1
    );
    assert_eq!(state(&b, &bj).await, JobState::Ready);
    assert_eq!(
        replay(DlqFilter {
            queue: Some("q1".into()),
            since: Some(t),
            ..DlqFilter::default()
        })
        .await,
        1
    );
    assert_eq!(state(&b, &c).await, JobState::Ready);
    assert_eq!(state(&b, &a).await, JobState::Dead);
    assert_eq!(replay(DlqFilter::default()).await, 1);
    assert!(b.dead(&DlqFilter::default()).await.unwrap().is_empty());
    for id in [&a, &bj, &c] {
        let replayed = b
            .events(&EventFilter {
                job: Some(id.clone()),
                ..EventFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == EventKind::Replayed)
            .count();
        assert_eq!(replayed, 1);
    }
}

pub async fn purge_deletes_matching_dead_jobs_with_their_history<B: Backend>(b: B) {
    let a = kill(&b, "q1", Phase::Run, "a").await;
    let bj = kill(&b, "q2", Phase::Run, "b").await;
    let alive = enqueue_one(&b, job("q1", b"alive")).await;

    let q1 = DlqFilter {
        queue: Some("q1".into()),
        ..DlqFilter::default()
    };
    assert_eq!(b.purge(&q1).await.unwrap(), 1);
    assert!(b.job(&a).await.unwrap().is_none());
    let a_events = b
        .events(&EventFilter {
            job: Some(a.clone()),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert!(a_events.is_empty(), "its events are gone");
    assert_eq!(state(&b, &alive).await, JobState::Ready, "only dead jobs");
    let remaining = b.dead(&DlqFilter::default()).await.unwrap();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].id, bj);

    assert_eq!(b.purge(&DlqFilter::default()).await.unwrap(), 1);
    assert_eq!(b.purge(&DlqFilter::default()).await.unwrap(), 0);
    assert!(b.job(&bj).await.unwrap().is_none());
}

pub async fn prune_removes_old_finished_jobs_but_never_dead_ones<B: Backend>(b: B) {
    let succeeded_id = enqueue_one(&b, job("q", b"s")).await;
    let claimed = claim_one(&b, "q").await;
    settle_ok(&b, succeeded(&claimed, b"")).await;
    let cancelled = enqueue_one(&b, job("q", b"c")).await;
    assert!(b.cancel(&cancelled, "test").await.unwrap());
    let dead_id = kill(&b, "q", Phase::Run, "d").await;
    let ready = enqueue_one(&b, job("q", b"r")).await;
    let later = enqueue_one(
        &b,
        NewJob {
            run_at: Some(now() + 60_000),
            ..job("q", b"later")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    assert_eq!(
        b.prune(Prune::before(now() - 60_000)).await.unwrap(),
        0,
        "nothing that old"
    );
    assert_eq!(b.prune(Prune::before(now() + 1)).await.unwrap(), 2);
    assert!(b.job(&succeeded_id).await.unwrap().is_none());
    assert!(b.job(&cancelled).await.unwrap().is_none());
    let events = b.events(&EventFilter::default()).await.unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.job_id.as_ref() != Some(&succeeded_id)),
        "its events are gone"
    );
    assert_eq!(state(&b, &dead_id).await, JobState::Dead);
    assert_eq!(state(&b, &ready).await, JobState::Ready);
    assert_eq!(state(&b, &later).await, JobState::Scheduled);
    assert_eq!(b.prune(Prune::before(now() + 1)).await.unwrap(), 0);
}

pub async fn ids_and_event_seqs_are_never_reused_after_a_purge<B: Backend>(b: B) {
    let purged = kill(&b, "q", Phase::Run, "gone").await;
    let last_seq = b
        .events(&EventFilter::default())
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    assert_eq!(b.purge(&DlqFilter::default()).await.unwrap(), 1);

    let next = enqueue_one(&b, job("q", b"next")).await;
    assert_ne!(next, purged, "a purged job's id means that job only");
    let follow = b
        .events(&EventFilter {
            after: Some(last_seq),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(follow.len(), 1, "a follower sees the new event");
    assert_eq!(follow[0].job_id.as_ref(), Some(&next));
}

pub async fn replay_leaves_dead_a_job_whose_key_an_unfinished_job_holds<B: Backend>(b: B) {
    let keyed = || NewJob {
        key: Some("k".into()),
        ..job("q", b"x")
    };
    let first = enqueue_one(&b, keyed()).await;
    let claimed = claim_one(&b, "q").await;
    settle_ok(&b, dead(&claimed, Phase::Run, "no")).await;
    let second = enqueue_one(&b, keyed()).await;
    assert_ne!(second, first, "a dead job frees its key");

    assert_eq!(b.replay(&DlqFilter::default()).await.unwrap(), 0);
    assert_eq!(
        state(&b, &first).await,
        JobState::Dead,
        "two unfinished jobs, one key"
    );

    let claimed = claim_one(&b, "q").await;
    settle_ok(&b, succeeded(&claimed, b"")).await;
    assert_eq!(b.replay(&DlqFilter::default()).await.unwrap(), 1);
    assert_eq!(state(&b, &first).await, JobState::Ready);
    let duplicate = b.enqueue(vec![keyed()]).await.unwrap();
    assert_eq!(
        duplicate,
        [Enqueued {
            id: first,
            duplicate: true
        }]
    );
}
