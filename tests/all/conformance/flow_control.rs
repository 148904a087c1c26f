//! Flow control: job groups, concurrency and rate limits for a queue and per tenant, and fair
//! shares between tenants. Limits are counted in the store, so every claim below could come
//! from another worker.
//!
//! A backend may hand a job it cannot claim yet back for a short while (NATS naks it with a
//! delay), so cases that wait for a job to become claimable poll with a generous deadline.

use std::time::{Duration, Instant};

use spool::queue::flow::{Flow, Rate};
use spool::queue::{Backend, Claimed, JobId, NewJob, QueueClaim};

use super::{LEASE, enqueue_one, job, settle_ok, succeeded};

fn grouped(queue: &str, group: &str, payload: &[u8]) -> NewJob {
    NewJob {
        group: Some(group.into()),
        ..job(queue, payload)
    }
}

fn of_tenant(queue: &str, tenant: &str, payload: &[u8]) -> NewJob {
    NewJob {
        tenant: Some(tenant.into()),
        ..job(queue, payload)
    }
}

async fn claim_with<B: Backend>(b: &B, queue: &str, limit: usize, flow: Flow) -> Vec<Claimed> {
    claim_for(b, queue, limit, flow, LEASE).await
}

async fn claim_for<B: Backend>(
    b: &B,
    queue: &str,
    limit: usize,
    flow: Flow,
    lease: Duration,
) -> Vec<Claimed> {
    let wanted = [QueueClaim {
        queue: queue.into(),
        limit,
        flow,
        max_attempts: None,
    }];
    b.claim("w1", &wanted, lease).await.unwrap()
}

/// Claim until `want` jobs were claimed in all or `within` has passed.
async fn claim_until<B: Backend>(
    b: &B,
    queue: &str,
    want: usize,
    flow: Flow,
    within: Duration,
) -> Vec<Claimed> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < until {
        got.extend(claim_with(b, queue, want - got.len(), flow).await);
        if got.len() < want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    got
}

fn ids(claimed: &[Claimed]) -> Vec<JobId> {
    claimed.iter().map(|c| c.lease.job_id.clone()).collect()
}

fn payloads(claimed: &[Claimed]) -> Vec<Vec<u8>> {
    let mut p: Vec<Vec<u8>> = claimed.iter().map(|c| c.payload.clone()).collect();
    p.sort();
    p
}

pub async fn a_group_runs_one_job_at_a_time_in_order_and_is_freed_by_the_settle<B: Backend>(b: B) {
    let first = enqueue_one(&b, grouped("q", "acct-1", b"g1")).await;
    let second = enqueue_one(&b, grouped("q", "acct-1", b"g2")).await;
    enqueue_one(&b, grouped("q", "acct-2", b"other group")).await;
    enqueue_one(&b, job("q", b"no group")).await;

    let claimed = claim_until(&b, "q", 3, Flow::default(), Duration::from_secs(5)).await;
    assert_eq!(
        payloads(&claimed),
        [
            b"g1".to_vec(),
            b"no group".to_vec(),
            b"other group".to_vec()
        ],
        "one job of each group, the first in claim order"
    );
    assert!(ids(&claimed).contains(&first));
    // While g1 runs, g2 is not claimable, however often a worker asks.
    for _ in 0..3 {
        assert!(claim_with(&b, "q", 10, Flow::default()).await.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let g1 = claimed.iter().find(|c| c.lease.job_id == first).unwrap();
    settle_ok(&b, succeeded(g1, b"")).await;
    let next = claim_until(&b, "q", 1, Flow::default(), Duration::from_secs(10)).await;
    assert_eq!(
        ids(&next),
        [second],
        "the group's next job, once the first settled"
    );
}

pub async fn a_group_is_freed_when_its_running_jobs_lease_expires<B: Backend>(b: B) {
    let first = enqueue_one(&b, grouped("q", "g", b"first")).await;
    let second = enqueue_one(&b, grouped("q", "g", b"second")).await;
    let short = Duration::from_millis(200);
    let until = Instant::now() + Duration::from_secs(5);
    let mut claimed = Vec::new();
    while claimed.is_empty() && Instant::now() < until {
        claimed = claim_for(&b, "q", 1, Flow::default(), short).await;
    }
    assert_eq!(ids(&claimed), std::slice::from_ref(&first));
    // The worker dies: nothing settles; the sweeper returns the job once the lease is gone.
    tokio::time::sleep(short * 3).await;
    assert_eq!(
        b.expire_leases(3).await.unwrap(),
        std::slice::from_ref(&first)
    );
    let next = claim_until(&b, "q", 2, Flow::default(), Duration::from_secs(10)).await;
    assert!(
        !next.is_empty(),
        "the group was freed by the lease's expiry"
    );
    // One at a time still: the two jobs never run together.
    assert_eq!(next.len(), 1, "{:?}", ids(&next));
    assert!([first, second].contains(&next[0].lease.job_id));
}

pub async fn a_queue_concurrency_limit_caps_running_jobs_whoever_claims<B: Backend>(b: B) {
    for i in 0..5u8 {
        enqueue_one(&b, job("q", &[i])).await;
    }
    let flow = Flow {
        concurrency: Some(2),
        ..Flow::default()
    };
    let first = claim_with(&b, "q", 10, flow).await;
    assert_eq!(first.len(), 2);
    assert!(claim_with(&b, "q", 10, flow).await.is_empty(), "full");
    // Another worker with the same limit counts the same running jobs.
    let wanted = [QueueClaim {
        queue: "q".into(),
        limit: 10,
        flow,
        max_attempts: None,
    }];
    assert!(b.claim("w2", &wanted, LEASE).await.unwrap().is_empty());
    settle_ok(&b, succeeded(&first[0], b"")).await;
    assert_eq!(
        claim_with(&b, "q", 10, flow).await.len(),
        1,
        "one slot freed"
    );
    assert!(claim_with(&b, "q", 10, flow).await.is_empty());
}

pub async fn a_tenant_concurrency_limit_caps_each_tenant_alone<B: Backend>(b: B) {
    for i in 0..3u8 {
        enqueue_one(&b, of_tenant("q", "big", &[b'b', i])).await;
        enqueue_one(&b, of_tenant("q", "small", &[b's', i])).await;
    }
    let flow = Flow {
        tenant_concurrency: Some(1),
        ..Flow::default()
    };
    let claimed = claim_until(&b, "q", 2, flow, Duration::from_secs(5)).await;
    let mut tenants: Vec<_> = claimed.iter().map(|c| c.tenant.clone()).collect();
    tenants.sort();
    assert_eq!(
        tenants,
        [Some("big".to_owned()), Some("small".to_owned())],
        "one job per tenant"
    );
    assert!(claim_with(&b, "q", 10, flow).await.is_empty());
    let small = claimed
        .iter()
        .find(|c| c.tenant.as_deref() == Some("small"))
        .unwrap();
    settle_ok(&b, succeeded(small, b"")).await;
    let next = claim_until(&b, "q", 1, flow, Duration::from_secs(5)).await;
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].tenant.as_deref(),
        Some("small"),
        "only small had room"
    );
}

pub async fn a_rate_limit_spreads_starts_over_its_interval<B: Backend>(b: B) {
    for i in 0..10u8 {
        enqueue_one(&b, job("q", &[i])).await;
    }
    let flow = Flow {
        rate: Some("4/1s".parse::<Rate>().unwrap()),
        ..Flow::default()
    };
    let started = Instant::now();
    assert_eq!(
        claim_with(&b, "q", 10, flow).await.len(),
        4,
        "a full bucket"
    );
    assert!(claim_with(&b, "q", 10, flow).await.is_empty(), "spent");
    // Refilled at 4 per second: after 0.6 s, two more (at least one, at most three with the
    // clock's grain), and all ten within about 1.5 s more.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let more = claim_with(&b, "q", 10, flow).await.len();
    assert!((1..=3).contains(&more), "{more} after 0.6 s");
    let rest = claim_until(&b, "q", 6 - more, flow, Duration::from_secs(10)).await;
    assert_eq!(rest.len(), 6 - more);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1300),
        "ten starts at 4/s took only {took:?}"
    );
}

pub async fn a_tenant_rate_limit_holds_each_tenant_to_its_own_rate<B: Backend>(b: B) {
    for i in 0..5u8 {
        enqueue_one(&b, of_tenant("q", "a", &[b'a', i])).await;
        enqueue_one(&b, of_tenant("q", "b", &[b'b', i])).await;
    }
    let flow = Flow {
        tenant_rate: Some("2/1m".parse::<Rate>().unwrap()),
        ..Flow::default()
    };
    let claimed = claim_until(&b, "q", 4, flow, Duration::from_secs(5)).await;
    let a = claimed.iter().filter(|c| c.tenant.as_deref() == Some("a"));
    assert_eq!(a.count(), 2);
    assert_eq!(claimed.len(), 4, "two per tenant");
    assert!(claim_with(&b, "q", 10, flow).await.is_empty());
}

pub async fn fair_claims_serve_a_small_tenant_ahead_of_a_big_backlog<B: Backend>(b: B) {
    let big: Vec<NewJob> = (0..500u32)
        .map(|i| of_tenant("q", "big", &i.to_be_bytes()))
        .collect();
    b.enqueue(big).await.unwrap();
    for i in 0..5u8 {
        enqueue_one(&b, of_tenant("q", "small", &[i])).await;
    }
    let flow = Flow {
        fair: true,
        ..Flow::default()
    };
    // Claims of ten at a time, each settled before the next: the small tenant's five jobs
    // all go in the first two, not after the big tenant's 500.
    let mut small = 0;
    for _ in 0..2 {
        let claimed = claim_until(&b, "q", 10, flow, Duration::from_secs(5)).await;
        small += claimed
            .iter()
            .filter(|c| c.tenant.as_deref() == Some("small"))
            .count();
        let settles = claimed.iter().map(|c| succeeded(c, b"")).collect();
        b.settle(settles).await.unwrap();
    }
    assert_eq!(small, 5, "the small tenant waited behind the backlog");
}
