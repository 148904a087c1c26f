//! The worker registry: heartbeats register and refresh a worker, a graceful stop removes
//! it, and a worker that stops heartbeating drops out once its TTL has passed.

use spool::queue::{MAX_WORKER_TTL, WorkerInfo};

use super::*;

fn worker(id: &str, queues: &[&str]) -> WorkerInfo {
    let at = now();
    WorkerInfo {
        id: id.into(),
        host: "host-a".into(),
        pid: 4242,
        version: "0.1.0".into(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        concurrency: 8,
        running: 0,
        started_at: at,
        last_heartbeat: at,
    }
}

fn ids(workers: &[WorkerInfo]) -> Vec<&str> {
    workers.iter().map(|w| w.id.as_str()).collect()
}

pub async fn a_heartbeat_registers_a_worker_and_the_next_one_updates_it<B: Backend>(b: B) {
    assert!(b.workers().await.unwrap().is_empty());
    let mut a = worker("worker-1-aaaa", &["email", "sms"]);
    let c = worker("worker-2-cccc", &["email"]);
    b.heartbeat(&a, LEASE).await.unwrap();
    b.heartbeat(&c, LEASE).await.unwrap();
    let listed = b.workers().await.unwrap();
    assert_eq!(
        listed,
        vec![a.clone(), c.clone()],
        "every field kept, by id"
    );

    a.running = 3;
    a.last_heartbeat = now() + 1;
    b.heartbeat(&a, LEASE).await.unwrap();
    let listed = b.workers().await.unwrap();
    assert_eq!(
        listed.len(),
        2,
        "one entry per worker, whatever its heartbeats"
    );
    assert_eq!(listed[0], a);
    assert_eq!(listed[0].running, 3);
}

pub async fn a_removed_worker_is_gone_and_removing_it_again_says_so<B: Backend>(b: B) {
    let a = worker("worker-1-aaaa", &["email"]);
    let c = worker("worker-2-cccc", &["sms"]);
    b.heartbeat(&a, LEASE).await.unwrap();
    b.heartbeat(&c, LEASE).await.unwrap();
    assert!(b.remove_worker(&a.id).await.unwrap());
    assert_eq!(ids(&b.workers().await.unwrap()), ["worker-2-cccc"]);
    assert!(!b.remove_worker(&a.id).await.unwrap());
    assert!(!b.remove_worker("worker-never-seen").await.unwrap());
    // A removed worker that heartbeats again (it did not stop after all) is back.
    b.heartbeat(&a, LEASE).await.unwrap();
    assert_eq!(
        ids(&b.workers().await.unwrap()),
        ["worker-1-aaaa", "worker-2-cccc"]
    );
}

pub async fn a_worker_that_stops_heartbeating_drops_out_after_its_ttl<B: Backend>(b: B) {
    let ttl = Duration::from_millis(600);
    let quiet = worker("worker-1-quiet", &["email"]);
    let alive = worker("worker-2-alive", &["email"]);
    b.heartbeat(&quiet, ttl).await.unwrap();
    b.heartbeat(&alive, ttl).await.unwrap();
    assert_eq!(ids(&b.workers().await.unwrap()).len(), 2);
    // `alive` keeps heartbeating; `quiet` was killed.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let beat = WorkerInfo {
            last_heartbeat: now(),
            ..alive.clone()
        };
        b.heartbeat(&beat, ttl).await.unwrap();
    }
    assert_eq!(ids(&b.workers().await.unwrap()), ["worker-2-alive"]);
    // A dead worker's entry is not live, so removing it says it was not.
    assert!(!b.remove_worker(&quiet.id).await.unwrap());

    // A heartbeat already older than its TTL lists nothing at all.
    let stale = WorkerInfo {
        last_heartbeat: now() - 10_000,
        ..worker("worker-3-stale", &["sms"])
    };
    b.heartbeat(&stale, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&b.workers().await.unwrap()), ["worker-2-alive"]);
}

pub async fn a_heartbeat_needs_an_id_and_a_ttl_within_bounds<B: Backend>(b: B) {
    let bad = |e: QueueError| assert!(matches!(e, QueueError::BadRequest(_)), "{e}");
    bad(b
        .heartbeat(&worker("", &["email"]), LEASE)
        .await
        .unwrap_err());
    let w = worker("worker-1-aaaa", &["email"]);
    bad(b.heartbeat(&w, Duration::ZERO).await.unwrap_err());
    bad(b
        .heartbeat(&w, MAX_WORKER_TTL + Duration::from_secs(1))
        .await
        .unwrap_err());
    assert!(b.workers().await.unwrap().is_empty(), "nothing registered");
    b.heartbeat(&w, MAX_WORKER_TTL).await.unwrap();
    assert_eq!(ids(&b.workers().await.unwrap()), ["worker-1-aaaa"]);
}
