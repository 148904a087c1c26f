//! The NATS backend's flows through their crash windows, and at fan-out scale. A crash is
//! simulated by writing what a crashed writer leaves behind (a commit without what follows
//! it), which only code inside the backend can do: the conformance suite in `tests/all`
//! covers the behaviour every backend shares.

use std::time::Duration;

use xtask::nats_server::NatsServer;

use super::names::child_of;
use super::record::Spawn;
use super::spawn;
use super::*;
use crate::queue::{
    AttemptRecord, JobState, NewChild, Next, OnChildFailure, QueueClaim, Settle, now,
};

const ACK_WAIT: Duration = Duration::from_secs(2);

async fn fresh() -> (NatsBackend, NatsServer) {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let backend = NatsBackend::connect(
        &server.url(),
        NatsOptions {
            ack_wait: ACK_WAIT,
            ..NatsOptions::default()
        },
    )
    .await
    .unwrap();
    (backend, server)
}

fn job(queue: &str, payload: &[u8]) -> NewJob {
    NewJob {
        queue: queue.into(),
        payload: payload.to_vec(),
        ..NewJob::default()
    }
}

async fn claim(b: &NatsBackend, queue: &str, n: usize) -> Vec<Claimed> {
    b.claim(
        "w",
        &[QueueClaim {
            queue: queue.into(),
            limit: n,
            ..QueueClaim::default()
        }],
        Duration::from_secs(30),
    )
    .await
    .unwrap()
}

/// Claim with retries until `n` are claimed or `within` passes.
async fn claim_within(b: &NatsBackend, queue: &str, n: usize, within: Duration) -> Vec<Claimed> {
    let until = std::time::Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < until {
        got.extend(claim(b, queue, n - got.len()).await);
        if got.len() < n {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    got
}

fn record(c: &Claimed) -> AttemptRecord {
    AttemptRecord {
        attempt: c.attempt,
        worker: c.lease.worker.clone(),
        started_at: now() - 5,
        finished_at: now(),
        outcome: "x".into(),
        phase: None,
        error: None,
        digest: None,
        logs: Vec::new(),
        http: Default::default(),
    }
}

fn settle(c: &Claimed, next: Next, children: Vec<NewChild>) -> Settle {
    Settle {
        lease: c.lease.clone(),
        next,
        attempt: AttemptRecord {
            error: Some("boom".into()),
            ..record(c)
        },
        checkpoint: None,
        children,
        progress: None,
    }
}

async fn kid(b: &NatsBackend, c: &Claimed, i: u32, queue: &str, on: OnChildFailure) -> NewChild {
    NewChild {
        id: b.child_id(&c.lease, i).await.unwrap(),
        job: job(queue, b"kid"),
        on_failure: on,
    }
}

async fn state(b: &NatsBackend, id: &JobId) -> JobState {
    b.job(id).await.unwrap().unwrap().summary.state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_whose_children_were_never_created_is_finished_by_the_next_claimer() {
    let (b, _s) = fresh().await;
    let parent = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let kids = vec![
        kid(&b, &c, 0, "k", OnChildFailure::FailParent).await,
        kid(&b, &c, 1, "k", OnChildFailure::FailParent).await,
    ];
    // The settle's commit, then a crash: staged and committed, nothing created, no answer.
    let inner = &b.inner;
    spawn::stage(inner, &parent, c.lease.token, &kids, now())
        .await
        .unwrap();
    inner
        .update(&parent, None, |r| {
            r.leased_with(c.lease.token)?;
            r.children = vec![0, 0];
            r.spawn.push(Spawn {
                from: 1,
                to: 2,
                token: c.lease.token,
            });
            r.state = JobState::Waiting;
            r.lease = None;
            Some(())
        })
        .await
        .unwrap()
        .unwrap();
    assert!(b.job(&child_of(&parent, 1)).await.unwrap().is_none());
    let detail = b.job(&parent).await.unwrap().unwrap();
    assert_eq!(
        detail.children.len(),
        2,
        "pending children are seen from their stage"
    );
    assert_eq!(detail.children[0].queue, "k");
    // The parent's message comes back after the ack wait: its claimer creates the children.
    let none = claim_within(&b, "p", 1, ACK_WAIT * 3).await;
    assert!(none.is_empty());
    let running = claim_within(&b, "k", 2, ACK_WAIT * 3).await;
    assert_eq!(running.len(), 2);
    assert_eq!(state(&b, &parent).await, JobState::Waiting);
    for r in &running {
        b.settle(vec![settle(
            r,
            Next::Succeeded {
                output: b"o".to_vec(),
            },
            vec![],
        )])
        .await
        .unwrap();
    }
    assert_eq!(state(&b, &parent).await, JobState::Ready);
    let again = claim(&b, "p", 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].children.len(), 2);
    // The stage is gone.
    let left = inner
        .scan(
            &inner.s.staging_stream,
            format!("$KV.{}.>", inner.s.staging.name),
            None,
            None,
        )
        .await
        .unwrap();
    assert!(left.iter().all(|m| m.payload.is_empty()), "{}", left.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_that_ended_without_telling_its_parent_tells_it_when_its_message_returns() {
    let (b, _s) = fresh().await;
    let parent = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let k = kid(&b, &c, 0, "k", OnChildFailure::FailParent).await;
    b.settle(vec![settle(&c, Next::Wait, vec![k])])
        .await
        .unwrap();
    assert_eq!(state(&b, &parent).await, JobState::Waiting);
    let child = claim(&b, "k", 1).await.remove(0);
    // The child's settle commits, then the worker crashes: parent untold, message unanswered.
    b.inner
        .update(&child.lease.job_id, None, |r| {
            r.leased_with(child.lease.token)?;
            r.state = JobState::Dead;
            r.last_error = Some("boom".into());
            r.lease = None;
            Some(())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state(&b, &parent).await, JobState::Waiting);
    // Its message comes back after the ack wait; the claimer tells the parent.
    assert!(claim_within(&b, "k", 1, ACK_WAIT * 3).await.is_empty());
    let until = std::time::Instant::now() + ACK_WAIT * 3;
    while state(&b, &parent).await == JobState::Waiting && std::time::Instant::now() < until {
        claim(&b, "k", 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = b.job(&parent).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Dead);
    assert_eq!(d.summary.last_phase, Some(crate::queue::Phase::ChildFailed));
    assert!(d.summary.last_error.unwrap().contains("boom"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wake_that_finds_its_parent_still_waiting_hears_the_children_and_claims_it() {
    let (b, _s) = fresh().await;
    let parent = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let k = kid(&b, &c, 0, "k", OnChildFailure::Report).await;
    b.settle(vec![settle(&c, Next::Wait, vec![k])])
        .await
        .unwrap();
    let child = claim(&b, "k", 1).await.remove(0);
    // The child ends and its notifier publishes the wake, then crashes before the parent's
    // compare-and-set (and before answering the child's message).
    b.inner
        .update(&child.lease.job_id, None, |r| {
            r.state = JobState::Succeeded;
            r.output = Some(b"out".to_vec());
            r.lease = None;
            Some(())
        })
        .await
        .unwrap()
        .unwrap();
    let (p, _) = b.inner.get(&parent).await.unwrap().unwrap();
    spawn::wake(&b.inner, &parent, &p, Some("w".into()))
        .await
        .unwrap();
    let again = claim(&b, "p", 1).await;
    assert_eq!(
        again.len(),
        1,
        "the wake's claimer hears the child and claims"
    );
    assert_eq!(again[0].children[0].state, JobState::Succeeded);
    assert_eq!(again[0].children[0].output.as_deref(), Some(&b"out"[..]));
    let kinds: Vec<_> = b
        .job(&parent)
        .await
        .unwrap()
        .unwrap()
        .events
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&crate::queue::EventKind::ChildrenFinished),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_deaths_climb_and_keys_cancel_and_child_ids_work_everywhere() {
    let (b, _s) = fresh().await;
    let holder = b
        .enqueue(vec![NewJob {
            key: Some("k1".into()),
            ..job("k", b"holder")
        }])
        .await
        .unwrap()[0]
        .id
        .clone();
    let root = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let mut keyed = kid(&b, &c, 1, "k", OnChildFailure::FailParent).await;
    keyed.job.key = Some("k1".into());
    let kids = vec![
        kid(&b, &c, 0, "mid", OnChildFailure::FailParent).await,
        keyed,
    ];
    b.settle(vec![settle(&c, Next::Wait, kids)]).await.unwrap();
    let keyed_id = child_of(&root, 2);
    let d = b.job(&keyed_id).await.unwrap().unwrap();
    assert_eq!(d.summary.state, JobState::Cancelled);
    assert!(d.summary.last_error.unwrap().contains(&holder.0));
    assert_eq!(state(&b, &root).await, JobState::Waiting);

    let mid = claim(&b, "mid", 1).await.remove(0);
    assert_eq!(mid.lease.job_id, child_of(&root, 1));
    assert_eq!(mid.parent.as_ref(), Some(&root));
    let g = kid(&b, &mid, 0, "leaf", OnChildFailure::FailParent).await;
    assert_eq!(g.id.0, format!("{root}-1-1"));
    b.settle(vec![settle(&mid, Next::Wait, vec![g])])
        .await
        .unwrap();
    let leaf = claim(&b, "leaf", 1).await.remove(0);
    b.settle(vec![settle(&leaf, Next::Dead, vec![])])
        .await
        .unwrap();
    assert_eq!(state(&b, &leaf.lease.job_id).await, JobState::Dead);
    assert_eq!(state(&b, &mid.lease.job_id).await, JobState::Dead);
    assert_eq!(state(&b, &root).await, JobState::Dead);
    let dead = b.dead(&DlqFilter::default()).await.unwrap();
    assert_eq!(dead.len(), 3);
    // Events and DLQ subjects of child ids.
    assert!(
        !b.job(&leaf.lease.job_id)
            .await
            .unwrap()
            .unwrap()
            .events
            .is_empty()
    );
    // Listing: children of the root, and everything newest first.
    let listed = b
        .jobs(&JobFilter {
            parent: Some(root.clone()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = listed.iter().map(|s| s.id.0.clone()).collect();
    assert_eq!(ids, [format!("{root}-2"), format!("{root}-1")]);
    let all: Vec<_> = b
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.0)
        .collect();
    assert_eq!(all[0], format!("{root}-1-1"), "{all:?}");
    // Replaying the dead leaf reopens it in its parent.
    let n = b
        .replay(&DlqFilter {
            id: Some(leaf.lease.job_id.clone()),
            ..DlqFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (m, _) = b.inner.get(&mid.lease.job_id).await.unwrap().unwrap();
    assert_eq!(m.children, vec![0]);
    // Cancel by child id.
    assert!(b.cancel(&leaf.lease.job_id, "test").await.unwrap());
    let (m, _) = b.inner.get(&mid.lease.job_id).await.unwrap().unwrap();
    assert_eq!(m.children, vec![3]);
    // Purge and prune with child ids.
    assert!(b.purge(&DlqFilter::default()).await.unwrap() >= 2);
    b.prune(Prune::before(now() + 1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fan_out_of_many_children_fits_and_wakes_once() {
    let (b, _s) = fresh().await;
    let parent = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let n = 2000;
    let mut kids = Vec::new();
    for i in 0..n {
        let mut k = kid(&b, &c, i, "k", OnChildFailure::Report).await;
        k.job.payload = vec![7; 1000];
        kids.push(k);
    }
    let t = std::time::Instant::now();
    b.settle(vec![settle(&c, Next::Wait, kids)]).await.unwrap();
    // Generous: about a second and a half on a 2-core machine in a debug build.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let mut done = 0;
    while done < n {
        let got = claim(&b, "k", 200).await;
        let settles: Vec<_> = got
            .iter()
            .map(|g| {
                settle(
                    g,
                    Next::Succeeded {
                        output: b"o".to_vec(),
                    },
                    vec![],
                )
            })
            .collect();
        done += u32::try_from(settles.len()).unwrap();
        b.settle(settles).await.unwrap();
    }
    assert_eq!(state(&b, &parent).await, JobState::Ready);
    let again = claim(&b, "p", 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].children.len(), n as usize);
    assert!(claim(&b, "p", 1).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn siblings_settled_one_by_one_from_many_connections_all_reach_their_parent() {
    let (b, s) = fresh().await;
    let parent = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let n = 400;
    let mut kids = Vec::new();
    for i in 0..n {
        kids.push(kid(&b, &c, i, "k", OnChildFailure::Report).await);
    }
    b.settle(vec![settle(&c, Next::Wait, kids)]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let w = NatsBackend::connect(
            &s.url(),
            NatsOptions {
                ack_wait: ACK_WAIT,
                ..NatsOptions::default()
            },
        )
        .await
        .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut idle = 0;
            while idle < 5 {
                let got = claim(&w, "k", 1).await;
                if got.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                idle = 0;
                w.settle(vec![settle(
                    &got[0],
                    Next::Succeeded {
                        output: b"o".to_vec(),
                    },
                    vec![],
                )])
                .await
                .unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, n);
    assert_eq!(state(&b, &parent).await, JobState::Ready);
    assert_eq!(claim(&b, "p", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn siblings_are_claimed_in_enqueue_order_and_the_timeline_reads_right() {
    let (b, _s) = fresh().await;
    let parent = b.enqueue(vec![job("p", b"p")]).await.unwrap()[0].id.clone();
    let c = claim(&b, "p", 1).await.remove(0);
    let mut kids = Vec::new();
    for i in 0..50 {
        kids.push(kid(&b, &c, i, "k", OnChildFailure::Report).await);
    }
    b.settle(vec![settle(&c, Next::Wait, kids)]).await.unwrap();
    let got = claim(&b, "k", 50).await;
    let ids: Vec<_> = got.iter().map(|g| g.lease.job_id.clone()).collect();
    let want: Vec<_> = (1..=50).map(|i| child_of(&parent, i)).collect();
    assert_eq!(ids, want);
    let settles: Vec<_> = got
        .iter()
        .map(|g| {
            settle(
                g,
                Next::Succeeded {
                    output: b"o".to_vec(),
                },
                vec![],
            )
        })
        .collect();
    b.settle(settles).await.unwrap();
    let again = claim(&b, "p", 1).await.remove(0);
    b.settle(vec![settle(
        &again,
        Next::Succeeded {
            output: b"o".to_vec(),
        },
        vec![],
    )])
    .await
    .unwrap();
    let timeline = |events: Vec<crate::queue::Event>| {
        events
            .iter()
            .map(|e| e.kind.to_string())
            .collect::<Vec<_>>()
    };
    let parent_events = b.job(&parent).await.unwrap().unwrap().events;
    assert_eq!(
        timeline(parent_events),
        [
            "enqueued",
            "started",
            "waiting",
            "children-finished",
            "started",
            "succeeded"
        ]
    );
    let child_events = b.job(&child_of(&parent, 3)).await.unwrap().unwrap().events;
    assert_eq!(timeline(child_events), ["enqueued", "started", "succeeded"]);
    let counts = b.queues().await.unwrap();
    assert_eq!(counts[0].queue, "k");
    assert_eq!(counts[0].succeeded, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_no_table_names_is_adopted_by_the_next_claimer_and_swept() {
    let (b, _s) = fresh().await;
    let id = b.enqueue(vec![job("q", b"p")]).await.unwrap()[0].id.clone();
    let short = Duration::from_millis(100);
    let c = b
        .claim(
            "w",
            &[QueueClaim {
                queue: "q".into(),
                limit: 1,
                ..QueueClaim::default()
            }],
            short,
        )
        .await
        .unwrap()
        .remove(0);
    // The claimer dies after writing the lease, before its table names it.
    b.inner.table_drop(&id, c.lease.token);
    b.inner.publish_table().await.unwrap();
    tokio::time::sleep(short * 3).await;
    assert!(b.expire_leases(3).await.unwrap().is_empty());
    assert_eq!(state(&b, &id).await, JobState::Running);

    // The message comes back after the ack wait; whoever fetches it adopts the lease, and a
    // sweep returns the job.
    let until = std::time::Instant::now() + ACK_WAIT * 5;
    let mut again = Vec::new();
    while again.is_empty() && std::time::Instant::now() < until {
        again = claim(&b, "q", 1).await;
        b.expire_leases(3).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(again.len(), 1, "the job never came back");
    assert_eq!(again[0].lease.job_id, id);
    assert_eq!(
        again[0].attempt, 2,
        "the lost attempt counts as lease-expired"
    );
}
