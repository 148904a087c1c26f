//! Queue benchmarks on the embedded SQLite backend: enqueue rate, end-to-end no-op
//! throughput by concurrency, enqueue-to-start latency at a steady rate, and throughput with a
//! large backlog; and what the Prometheus metrics cost end-to-end throughput.
//!
//! Run with `cargo bench -p spool-runtime --bench queue` (`-- quick` for a shorter run,
//! `-- normal` for `synchronous = NORMAL`, `-- metrics` for the metrics comparison alone;
//! `SPOOL_BENCH_PREFETCH=N` sets the worker's prefetch, the default "auto" otherwise). Figures go into
//! BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use spool::config::{MetricsConfig, QueueConfig, WorkerSettings};
use spool::metrics::Metrics;
use spool::queue::sqlite::{SqliteBackend, SqliteOptions, Synchronous};
use spool::queue::{Backend, EventFilter, EventKind, NewJob};
use spool::worker::Worker;
use spool::{Sandbox, SandboxConfig};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let synchronous = if std::env::args().any(|a| a == "normal") {
        Synchronous::Normal
    } else {
        Synchronous::Full
    };
    let scale = if quick { 10 } else { 1 };
    let noop = xtask::plugin("noop").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("durability: synchronous = {synchronous:?}\n");

    if std::env::args().any(|a| a == "metrics") {
        rt.block_on(metrics_cost(&noop, synchronous, scale));
        return;
    }
    rt.block_on(async {
        println!("## enqueue rate");
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("enqueue.db"), synchronous);
        let n = 5_000 / scale;
        let t = Instant::now();
        for _ in 0..n {
            backend.enqueue(vec![job()]).await.unwrap();
        }
        println!(
            "single: {n} jobs in {:.2} s = {:.0} jobs/s",
            secs(t),
            n as f64 / secs(t)
        );
        let n = 100_000 / scale;
        let t = Instant::now();
        for _ in 0..n / 1000 {
            backend
                .enqueue((0..1000).map(|_| job()).collect())
                .await
                .unwrap();
        }
        println!(
            "batched (1000 per call): {n} jobs in {:.2} s = {:.0} jobs/s",
            secs(t),
            n as f64 / secs(t)
        );

        println!("\n## end-to-end no-op throughput (one worker process)");
        for concurrency in [1u32, 10, 100] {
            let n = if concurrency == 1 { 20_000 } else { 100_000 } / scale;
            let dir = tempfile::tempdir().unwrap();
            let backend = open(&dir.path().join("e2e.db"), synchronous);
            fill(&backend, n).await;
            let rate = drain(&backend, &noop, concurrency, n).await;
            println!("concurrency {concurrency:>3}: {n} jobs, {rate:.0} jobs/s");
        }

        println!("\n## enqueue-to-start latency at 500 jobs/s (concurrency 10)");
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("latency.db"), synchronous);
        latency(&backend, &noop, 5_000 / scale).await;

        println!("\n## throughput against backlog (concurrency 100, 50,000 jobs run)");
        for queued in [10_000usize, 1_000_000 / scale] {
            let dir = tempfile::tempdir().unwrap();
            let backend = open(&dir.path().join("backlog.db"), synchronous);
            fill(&backend, queued).await;
            let run = 50_000.min(queued);
            let rate = drain(&backend, &noop, 100, run).await;
            println!("{queued:>9} queued: {rate:.0} jobs/s");
        }
    });
    rt.block_on(metrics_cost(&noop, synchronous, scale));
}

/// End-to-end no-op throughput with the metrics off and on, alternating, three runs each.
async fn metrics_cost(noop: &Path, synchronous: Synchronous, scale: usize) {
    let n = 30_000 / scale;
    println!("\n## metrics cost (concurrency 100, {n} jobs per run, off and on alternating)");
    let mut rates: HashMap<bool, Vec<f64>> = HashMap::new();
    for round in 0..3 {
        for enabled in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let backend = open(&dir.path().join("metrics.db"), synchronous);
            let config = MetricsConfig {
                enabled,
                ..MetricsConfig::default()
            };
            let metrics = std::sync::Arc::new(Metrics::with_config(&config));
            backend.set_sink(backend.sink().with_metrics(metrics.clone()));
            fill(&backend, n).await;
            let rate = drain(&backend, noop, 100, n).await;
            let state = if enabled { "on" } else { "off" };
            println!("round {round}: metrics {state:>3}: {rate:.0} jobs/s");
            if enabled {
                let started = metrics
                    .encode()
                    .lines()
                    .find(|l| l.starts_with("spool_jobs_succeeded_total"))
                    .unwrap_or_default()
                    .to_owned();
                assert!(started.ends_with(&format!(" {n}")), "{started}");
            }
            rates.entry(enabled).or_default().push(rate);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let off = median(rates.remove(&false).unwrap());
    let on = median(rates.remove(&true).unwrap());
    println!(
        "median: off {off:.0} jobs/s, on {on:.0} jobs/s: on/off = {:.3} (cost {:.1}%)",
        on / off,
        (1.0 - on / off) * 100.0
    );
}

fn open(path: &Path, synchronous: Synchronous) -> SqliteBackend {
    SqliteBackend::open(
        path,
        SqliteOptions {
            synchronous,
            ..SqliteOptions::default()
        },
    )
    .unwrap()
}

fn job() -> NewJob {
    NewJob {
        queue: "noop".to_owned(),
        payload: b"{}".to_vec(),
        ..NewJob::default()
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

async fn fill(backend: &SqliteBackend, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        backend
            .enqueue(chunk.iter().map(|_| job()).collect())
            .await
            .unwrap();
    }
}

async fn start_worker(
    backend: &SqliteBackend,
    noop: &Path,
    concurrency: u32,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<spool::worker::WorkerStats>,
    spool::worker::StatsHandle,
) {
    // Jobs held claimed beyond the free slots: what makes claims and settles big batches.
    // The default ("auto") unless a fixed number is asked for.
    let prefetch = std::env::var("SPOOL_BENCH_PREFETCH")
        .ok()
        .and_then(|p| p.parse().ok());
    let mut queue = QueueConfig::new(noop);
    queue.concurrency = concurrency;
    let queues = BTreeMap::from([("noop".to_owned(), queue)]);
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency,
        ..SandboxConfig::default()
    })
    .unwrap();
    let settings = WorkerSettings {
        concurrency,
        prefetch,
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
            .unwrap()
    });
    (stop, handle, stats)
}

/// Run a worker until it has run `n` jobs to success; jobs per second.
async fn drain(backend: &SqliteBackend, noop: &Path, concurrency: u32, n: usize) -> f64 {
    let (stop, handle, stats) = start_worker(backend, noop, concurrency).await;
    let t = Instant::now();
    while stats.get().succeeded < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / secs(t);
    let _ = stop.send(());
    handle.await.unwrap();
    rate
}

async fn latency(backend: &SqliteBackend, noop: &Path, n: usize) {
    let (stop, handle, _) = start_worker(backend, noop, 10).await;
    let every = Duration::from_millis(2);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + every * i as u32).await;
        backend.enqueue(vec![job()]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    handle.await.unwrap();
    let mut enqueued = HashMap::new();
    let mut lat = Vec::new();
    let mut after = None;
    loop {
        let events = backend
            .events(&EventFilter {
                after,
                limit: Some(5000),
                ..EventFilter::default()
            })
            .await
            .unwrap();
        let Some(last) = events.last() else { break };
        after = Some(last.seq);
        for e in &events {
            match (e.kind, &e.job_id) {
                (EventKind::Enqueued, Some(id)) => {
                    enqueued.insert(id.clone(), e.at);
                }
                (EventKind::Started, Some(id)) => {
                    if let Some(at) = enqueued.get(id) {
                        lat.push(e.at - at);
                    }
                }
                _ => {}
            }
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "{} jobs at 500/s: enqueue-to-start p50 {} ms, p99 {} ms, max {} ms (event timestamps, 1 ms resolution)",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
}
