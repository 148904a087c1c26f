//! Flow control end to end: a real `spool worker` process with `fair = true` serves a small
//! tenant's jobs while another tenant's backlog of 100,000 jobs drains, on both backends.

use std::process::Child;
use std::time::{Duration, Instant};

use spool::queue::nats::{NatsBackend, NatsOptions};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{Backend, JobId, JobState, NewJob};
use xtask::nats_server::NatsServer;

use crate::support::{Setup, stop};

/// The big tenant's backlog.
const BACKLOG: usize = 100_000;
/// The small tenant's jobs.
const SMALL: usize = 10;
/// How long the small tenant's jobs may take, from their enqueue to the last one's success,
/// while the backlog drains (generous: a debug build on a shared machine).
const BOUND: Duration = Duration::from_secs(20);

fn config(fair: bool) -> String {
    format!(
        r#"
[worker]
concurrency = 8

[queues.noop]
plugin = "NOOP"
concurrency = 8
fair = {fair}
"#
    )
}

fn tenant_jobs(tenant: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob {
            queue: "noop".into(),
            payload: format!("{tenant}-{i}").into_bytes(),
            tenant: Some(tenant.into()),
            ..NewJob::default()
        })
        .collect()
}

async fn fill<B: Backend>(backend: &B) {
    let mut left = BACKLOG;
    while left > 0 {
        let n = left.min(1000);
        backend.enqueue(tenant_jobs("big", n)).await.unwrap();
        left -= n;
    }
}

async fn succeeded<B: Backend>(backend: &B, ids: &[JobId]) -> usize {
    let mut done = 0;
    for id in ids {
        let job = backend.job(id).await.unwrap().unwrap();
        if job.summary.state == JobState::Succeeded {
            done += 1;
        }
    }
    done
}

/// Enqueue the small tenant's jobs behind the big backlog once the worker is running, and
/// measure how long until they have all succeeded (`None` if not within `bound`).
async fn small_tenant_wait<B: Backend>(
    backend: &B,
    s: &Setup,
    worker: &mut Child,
    bound: Duration,
) -> (Option<Duration>, Vec<JobId>) {
    // The worker is busy with the backlog first.
    let started = Instant::now();
    loop {
        s.assert_running(std::slice::from_mut(worker));
        let first = backend.job(&JobId("1".into())).await.unwrap();
        if first.is_some_and(|j| j.summary.state == JobState::Succeeded) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the worker never ran the backlog's first job:\n{}",
            s.worker_logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = Instant::now();
    let ids: Vec<JobId> = backend
        .enqueue(tenant_jobs("small", SMALL))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    while at.elapsed() < bound {
        s.assert_running(std::slice::from_mut(worker));
        if succeeded(backend, &ids).await == SMALL {
            return (Some(at.elapsed()), ids);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (None, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_small_tenant_finishes_while_a_hundred_thousand_job_backlog_drains() {
    let s = Setup::new(&config(true));
    let backend = SqliteBackend::open(&s.db(), SqliteOptions::default()).unwrap();
    fill(&backend).await;
    let mut worker = s.worker(&[]);
    let (took, _) = small_tenant_wait(&backend, &s, &mut worker, BOUND).await;
    let counts = backend.queues().await.unwrap();
    stop(worker, "-KILL");
    let took = took.unwrap_or_else(|| panic!("the small tenant starved:\n{}", s.worker_logs()));
    let noop = counts.iter().find(|c| c.queue == "noop").unwrap();
    eprintln!(
        "sqlite: the small tenant's {SMALL} jobs took {took:?}; backlog left {}",
        noop.ready
    );
    assert!(
        noop.ready >= (BACKLOG / 2) as u64,
        "the backlog had mostly drained ({} left): not a measure of fairness",
        noop.ready
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_without_fair_shares_the_small_tenant_waits_behind_the_backlog() {
    let s = Setup::new(&config(false));
    let backend = SqliteBackend::open(&s.db(), SqliteOptions::default()).unwrap();
    fill(&backend).await;
    let mut worker = s.worker(&[]);
    // A few seconds are plenty to tell: with fair shares it takes well under one.
    let (took, ids) = small_tenant_wait(&backend, &s, &mut worker, Duration::from_secs(3)).await;
    let done = succeeded(&backend, &ids).await;
    stop(worker, "-KILL");
    assert!(
        took.is_none(),
        "the small tenant finished in {took:?} without fair shares: the fair test proves nothing"
    );
    assert_eq!(done, 0, "claim order put them behind the whole backlog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_a_small_tenant_finishes_while_a_hundred_thousand_job_backlog_drains() {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let s = Setup::nats(&config(true), &server.url());
    let backend = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    fill(&backend).await;
    let mut worker = s.worker(&[]);
    let (took, _) = small_tenant_wait(&backend, &s, &mut worker, BOUND).await;
    // What is left of the backlog: the jobs stream's messages (one per unfinished job).
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut jobs = js.get_stream(backend.names().jobs_stream()).await.unwrap();
    let left = jobs.info().await.unwrap().state.messages;
    stop(worker, "-KILL");
    let took = took.unwrap_or_else(|| panic!("the small tenant starved:\n{}", s.worker_logs()));
    eprintln!("nats: the small tenant's {SMALL} jobs took {took:?}; backlog left {left}");
    assert!(
        left >= (BACKLOG / 2) as u64,
        "the backlog had mostly drained ({left} left): not a measure of fairness"
    );
}
