//! Flow-control benchmarks on both backends: no-op throughput with limits off against on, and
//! how long a small tenant's jobs wait behind another tenant's large backlog, with fair shares
//! on and off.
//!
//! Run with `cargo bench -p spool-runtime --bench limits` (`-- quick` for a tenth of the work;
//! `-- sqlite` or `-- nats` for one backend). The worker runs in this process (one `Worker`,
//! concurrency 100, prefetch 1000); NATS is a fresh `nats-server -js` on a free port with its
//! own store. Figures go into BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use spool::config::{QueueConfig, WorkerSettings};
use spool::queue::nats::{NatsBackend, NatsOptions};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{AnyBackend, Backend, JobId, JobState, NewJob};
use spool::worker::{StatsHandle, Worker};
use spool::{Sandbox, SandboxConfig};
use xtask::nats_server::NatsServer;

const CONCURRENCY: u32 = 100;
const TENANTS: usize = 10;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    let only = |name: &str| {
        let chosen: Vec<String> = std::env::args()
            .filter(|a| a == "sqlite" || a == "nats")
            .collect();
        chosen.is_empty() || chosen.iter().any(|c| c == name)
    };
    let noop = xtask::plugin("noop").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for backend in ["sqlite", "nats"] {
            if !only(backend) {
                continue;
            }
            println!(
                "## {backend}: no-op throughput, {} jobs over {TENANTS} tenants, one worker (concurrency {CONCURRENCY}, prefetch 1000)",
                100_000 / scale
            );
            for (name, limits) in settings() {
                let store = Store::open(backend).await;
                fill(&store.backend, 100_000 / scale, TENANTS).await;
                let rate = drain(&store.backend, &noop, limits, 100_000 / scale).await;
                println!("  {name:<58} {rate:>7.0} jobs/s");
            }
            println!(
                "## {backend}: a small tenant's 10 jobs enqueued behind a {}-job backlog of another tenant",
                100_000 / scale
            );
            for fair in [true, false] {
                let store = Store::open(backend).await;
                fill(&store.backend, 100_000 / scale, 1).await;
                let (waited, ran) = small_tenant(&store.backend, &noop, fair).await;
                let waited = match waited {
                    Some(w) => format!("{:.0} ms", w.as_secs_f64() * 1000.0),
                    None => "not within 10 s".to_owned(),
                };
                println!(
                    "  fair = {fair:<5}: all 10 succeeded {waited} after their enqueue ({ran} jobs had run by then)"
                );
            }
        }
    });
}

/// The flow settings compared: none, every limit set but none binding (their bookkeeping
/// alone), and binding ones.
fn settings() -> Vec<(&'static str, QueueConfig)> {
    let base = |f: &dyn Fn(&mut QueueConfig)| {
        let mut q = QueueConfig::new("noop.wasm");
        q.concurrency = CONCURRENCY;
        f(&mut q);
        q
    };
    vec![
        ("limits off", base(&|_| {})),
        ("fair shares", base(&|q| q.fair = true)),
        (
            "all limits on, none binding (2000 running, 10^6/s)",
            base(&|q| {
                q.fair = true;
                q.global_concurrency = Some(2000);
                q.tenant_concurrency = Some(2000);
                q.rate = Some("1000000/1s".parse().unwrap());
                q.tenant_rate = Some("1000000/1s".parse().unwrap());
            }),
        ),
        (
            "binding: 20 running per tenant (200 in all)",
            base(&|q| q.tenant_concurrency = Some(20)),
        ),
        (
            "binding: rate 5000/1s",
            base(&|q| q.rate = Some("5000/1s".parse().unwrap())),
        ),
    ]
}

/// A fresh store (and the server behind it, for NATS).
struct Store {
    backend: AnyBackend,
    _dir: tempfile::TempDir,
    _server: Option<NatsServer>,
}

impl Store {
    async fn open(kind: &str) -> Store {
        let dir = tempfile::tempdir().unwrap();
        if kind == "sqlite" {
            let backend =
                SqliteBackend::open(&dir.path().join("limits.db"), SqliteOptions::default())
                    .unwrap();
            Store {
                backend: AnyBackend::Sqlite(backend),
                _dir: dir,
                _server: None,
            }
        } else {
            let server = NatsServer::start();
            let backend = NatsBackend::connect(&server.url(), NatsOptions::default())
                .await
                .unwrap();
            Store {
                backend: AnyBackend::Nats(backend),
                _dir: dir,
                _server: Some(server),
            }
        }
    }
}

fn jobs(tenant: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            queue: "noop".to_owned(),
            payload: b"{}".to_vec(),
            tenant: Some(tenant.to_owned()),
            ..NewJob::default()
        })
        .collect()
}

/// `n` jobs, spread round-robin over `tenants` tenants, in batches of 1000.
async fn fill(backend: &AnyBackend, n: usize, tenants: usize) {
    let mut left = n;
    let mut t = 0;
    while left > 0 {
        let batch = left.min(1000);
        let per = batch / tenants.max(1);
        let mut all = Vec::with_capacity(batch);
        for i in 0..tenants {
            let k = if i + 1 == tenants {
                batch - per * (tenants - 1)
            } else {
                per
            };
            all.extend(jobs(&format!("tenant-{}", (t + i) % tenants), k));
        }
        t += 1;
        backend.enqueue(all).await.unwrap();
        left -= batch;
    }
}

async fn start(
    backend: &AnyBackend,
    noop: &Path,
    mut queue: QueueConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    StatsHandle,
) {
    queue.plugin = noop.to_owned();
    let queues = BTreeMap::from([("noop".to_owned(), queue)]);
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: CONCURRENCY,
        ..SandboxConfig::default()
    })
    .unwrap();
    let settings = WorkerSettings {
        concurrency: CONCURRENCY,
        poll_interval: Duration::from_millis(5),
        prefetch: Some(1000),
        ..WorkerSettings::default()
    };
    let worker = Worker::start(backend.clone(), sandbox, settings, queues)
        .await
        .unwrap();
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, handle, stats)
}

/// Run a worker until `n` jobs succeeded; jobs per second.
async fn drain(backend: &AnyBackend, noop: &Path, queue: QueueConfig, n: usize) -> f64 {
    let (stop, handle, stats) = start(backend, noop, queue).await;
    let t = Instant::now();
    while stats.get().succeeded < n as u64 {
        assert!(t.elapsed() < Duration::from_secs(600), "stuck");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    handle.await.unwrap();
    rate
}

/// With the backlog draining, enqueue 10 jobs of another tenant; how long until all succeeded,
/// and how many jobs the worker had succeeded by then.
async fn small_tenant(backend: &AnyBackend, noop: &Path, fair: bool) -> (Option<Duration>, u64) {
    let mut queue = QueueConfig::new(noop);
    queue.concurrency = CONCURRENCY;
    queue.fair = fair;
    let (stop, handle, stats) = start(backend, noop, queue).await;
    while stats.get().succeeded < 1000 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let t = Instant::now();
    let ids: Vec<JobId> = backend
        .enqueue(jobs("small", 10))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut waited = None;
    while t.elapsed() < Duration::from_secs(10) {
        let mut done = 0;
        for id in &ids {
            if backend.job(id).await.unwrap().unwrap().summary.state == JobState::Succeeded {
                done += 1;
            }
        }
        if done == ids.len() {
            waited = Some(t.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ran = stats.get().succeeded;
    let _ = stop.send(());
    handle.await.unwrap();
    (waited, ran)
}
