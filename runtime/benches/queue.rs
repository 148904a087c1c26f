//! Queue benchmarks on the embedded SQLite backend: enqueue rate, end-to-end no-op
//! throughput by concurrency, enqueue-to-start latency at a steady rate, and throughput and
//! memory with a large backlog; what the Prometheus metrics cost end-to-end throughput; and
//! Spool against BullMQ side by side.
//!
//! Run with `cargo bench -p spool-runtime --bench queue` (`-- quick` for a shorter run,
//! `-- normal` for `synchronous = NORMAL`, `-- metrics` for the metrics comparison alone,
//! `-- versus` for the comparison with BullMQ alone, `-- drain` for its Spool side alone, the
//! default configuration, to profile or compare changes; `SPOOL_BENCH_PREFETCH=N` sets the
//! worker's prefetch, the default "auto" otherwise). Figures go into BENCHMARKS.md.
//!
//! `-- versus` needs Node and a Redis server on 127.0.0.1:6379 (`SPOOL_BENCH_REDIS` names
//! another); it installs `runtime/benches/bullmq`'s pinned packages with `npm ci` when they
//! are missing.

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
    if std::env::args().any(|a| a == "drain") {
        rt.block_on(spool_side(&noop, synchronous, scale));
        return;
    }
    if std::env::args().any(|a| a == "versus") {
        rt.block_on(versus(&noop, synchronous, scale));
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
            let (rate, _) = drain(&backend, &noop, concurrency, prefetch(), n).await;
            println!("concurrency {concurrency:>3}: {n} jobs, {rate:.0} jobs/s");
        }

        println!("\n## enqueue-to-start latency at 500 jobs/s (concurrency 10)");
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("latency.db"), synchronous);
        latency(&backend, &noop, 5_000 / scale).await;

        println!(
            "\n## enqueue-to-start latency at 500 jobs/s, the worker in another process \
             (`spool worker`, concurrency 10, the default configuration)"
        );
        cross_process_latency(&noop, synchronous, 5_000 / scale).await;

        println!(
            "\n## throughput and memory against backlog (concurrency 100, 50,000 jobs run; \
             the peak resident memory of this process, worker and store, sampled while it runs)"
        );
        for queued in [10_000usize, 1_000_000 / scale] {
            let dir = tempfile::tempdir().unwrap();
            let backend = open(&dir.path().join("backlog.db"), synchronous);
            fill(&backend, queued).await;
            let run = 50_000.min(queued);
            let (rate, rss) = drain(&backend, &noop, 100, prefetch(), run).await;
            println!(
                "{queued:>9} queued: {rate:.0} jobs/s, peak RSS {:.0} MB",
                rss as f64 / 1e6
            );
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
            let (rate, _) = drain(&backend, noop, 100, prefetch(), n).await;
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

/// The prefetch asked for with `SPOOL_BENCH_PREFETCH=N`; else `None`, the default ("auto").
fn prefetch() -> Option<u32> {
    std::env::var("SPOOL_BENCH_PREFETCH")
        .ok()
        .and_then(|p| p.parse().ok())
}

async fn start_worker(
    backend: &SqliteBackend,
    noop: &Path,
    concurrency: u32,
    prefetch: Option<u32>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<spool::worker::WorkerStats>,
    spool::worker::StatsHandle,
) {
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

/// Run a worker until it has run `n` jobs to success: jobs per second, and the peak resident
/// memory of this process meanwhile (bytes, sampled every 100 ms).
async fn drain(
    backend: &SqliteBackend,
    noop: &Path,
    concurrency: u32,
    prefetch: Option<u32>,
    n: usize,
) -> (f64, u64) {
    let (stop, handle, stats) = start_worker(backend, noop, concurrency, prefetch).await;
    let t = Instant::now();
    let mut rss = resident();
    let mut sampled = Instant::now();
    while stats.get().succeeded < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if sampled.elapsed() >= Duration::from_millis(100) {
            rss = rss.max(resident());
            sampled = Instant::now();
        }
    }
    let rate = n as f64 / secs(t);
    rss = rss.max(resident());
    let _ = stop.send(());
    handle.await.unwrap();
    (rate, rss)
}

/// This process's resident memory in bytes (`VmRSS` of /proc/self/status); 0 if unknown.
fn resident() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// Spool (one `spool worker` process, the default configuration and `prefetch = 1000`)
/// against BullMQ (one worker process, `runtime/benches/bullmq`) at concurrency 1, 10 and
/// 100, the same backlog enqueued first, alternating for three rounds; medians and ratios.
/// Both sides are timed from their first job's start to their last job's end.
async fn versus(noop: &Path, synchronous: Synchronous, scale: usize) {
    let bullmq = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq");
    if !bullmq.join("node_modules").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&bullmq)
            .status()
            .expect("npm");
        assert!(status.success(), "npm ci in {} failed", bullmq.display());
    }
    let redis =
        std::env::var("SPOOL_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let sides = ["BullMQ", "Spool default", "Spool prefetch = 1000"];
    let mut rates: BTreeMap<(u32, usize), Vec<f64>> = BTreeMap::new();
    println!(
        "## Spool against BullMQ, alternating: no-op jobs enqueued first, one worker process \
         each (`spool worker`: {}; BullMQ: removeOnComplete: true), timed from the first \
         job's start to the last job's end",
        env!("CARGO_BIN_EXE_spool")
    );
    for round in 1..=3 {
        for concurrency in [1u32, 10, 100] {
            let n = if concurrency == 1 { 20_000 } else { 100_000 } / scale;
            let output = std::process::Command::new("node")
                .arg("bench.mjs")
                .args(["throughput", "--json", "--workers", "1"])
                .args(["--remove-on-complete", "true", "--redis", &redis])
                .args(["--jobs", &n.to_string()])
                .args(["--concurrency", &concurrency.to_string()])
                .current_dir(&bullmq)
                .output()
                .expect("node");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "node bench.mjs failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let result: serde_json::Value = stdout
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .map(|json| serde_json::from_str(json).unwrap())
                .unwrap_or_else(|| panic!("no RESULT line from bench.mjs:\n{stdout}"));
            let mut figures = vec![result["running_jobs_per_s"].as_f64().unwrap()];
            for prefetch in [None, Some(1000)] {
                figures.push(drain_process(noop, synchronous, concurrency, prefetch, n).await);
            }
            let shown: Vec<String> = sides
                .iter()
                .zip(&figures)
                .map(|(side, rate)| format!("{side} {rate:.0}"))
                .collect();
            println!(
                "round {round}, concurrency {concurrency:>3}, {n} jobs: {} jobs/s",
                shown.join(", ")
            );
            for (side, rate) in figures.into_iter().enumerate() {
                rates.entry((concurrency, side)).or_default().push(rate);
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n| concurrency | BullMQ | Spool, default config | ratio | Spool, `prefetch = 1000` | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for concurrency in [1u32, 10, 100] {
        let [bull, default, tuned] = [0, 1, 2].map(|side| median(&rates[&(concurrency, side)]));
        println!(
            "| {concurrency} | {bull:.0} | {default:.0} | {:.2}× | {tuned:.0} | {:.2}× |",
            default / bull,
            tuned / bull
        );
    }
}

/// The Spool side of [`versus`] alone, with the default configuration: a release
/// `spool worker` process draining the backlog at concurrency 1, 10 and 100, three rounds.
async fn spool_side(noop: &Path, synchronous: Synchronous, scale: usize) {
    println!("## `spool worker`, default configuration, draining a backlog of no-op jobs");
    for round in 1..=3 {
        for concurrency in [1u32, 10, 100] {
            let n = if concurrency == 1 { 20_000 } else { 100_000 } / scale;
            let rate = drain_process(noop, synchronous, concurrency, None, n).await;
            println!("round {round}, concurrency {concurrency:>3}, {n} jobs: {rate:.0} jobs/s");
        }
    }
}

async fn latency(backend: &SqliteBackend, noop: &Path, n: usize) {
    let (stop, handle, _) = start_worker(backend, noop, 10, prefetch()).await;
    pace(backend, n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop.send(());
    handle.await.unwrap();
    print_latency(backend, 0).await;
}

/// `n` jobs enqueued first, then run by the release `spool worker` in its own process with
/// the default configuration but for the concurrency (and `prefetch`, when given): jobs per
/// second from the first job's `started` event to the last one's `succeeded`.
async fn drain_process(
    noop: &Path,
    synchronous: Synchronous,
    concurrency: u32,
    prefetch: Option<u32>,
    n: usize,
) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("versus.db");
    let backend = open(&db, synchronous);
    fill(&backend, n).await;
    let prefetch = prefetch.map_or_else(String::new, |p| format!("prefetch = {p}\n"));
    let config = write_config(
        dir.path(),
        &format!("concurrency = {concurrency}\n{prefetch}"),
        noop,
        concurrency,
        synchronous,
    );
    drop(backend);
    let mut worker = SpoolWorker::spawn(&db, &config, dir.path());
    let t = Instant::now();
    let conn = rusqlite::Connection::open(&db).unwrap();
    // Cheap to ask while the worker runs (two partial indexes, no count): the bench's own
    // reads must not take the worker's CPU.
    let unfinished = || -> bool {
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('ready', 'scheduled')) \
                 OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running')",
            [],
            |row| row.get(0),
        )
        .unwrap()
    };
    while unfinished() {
        worker.check_alive();
        assert!(t.elapsed() < Duration::from_secs(600), "jobs not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.stop();
    let succeeded: i64 = conn
        .query_row(
            "SELECT count(*) FROM jobs WHERE state = 'succeeded'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(succeeded, n as i64, "not every job succeeded");
    let (first, last): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT min(at) FROM events WHERE kind = 'started'), \
                    (SELECT max(at) FROM events WHERE kind = 'succeeded')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    n as f64 / ((last - first).max(1) as f64 / 1000.0)
}

/// Jobs succeeded in the store so far.
async fn succeeded(backend: &SqliteBackend) -> u64 {
    let counts = backend.queues().await.unwrap();
    counts.iter().map(|c| c.succeeded).sum()
}

/// `spool.toml` in `dir`: `[worker]` with the settings in `worker` (lines, or nothing) and
/// `synchronous`, and the queue `noop` at `concurrency`.
fn write_config(
    dir: &Path,
    worker: &str,
    noop: &Path,
    concurrency: u32,
    synchronous: Synchronous,
) -> std::path::PathBuf {
    let synchronous = match synchronous {
        Synchronous::Full => "full",
        _ => "normal",
    };
    let path = dir.join("spool.toml");
    std::fs::write(
        &path,
        format!(
            "[worker]\n{worker}synchronous = {synchronous:?}\n\n\
             [queues.noop]\nplugin = {:?}\nconcurrency = {concurrency}\n",
            noop.display().to_string()
        ),
    )
    .unwrap();
    path
}

/// The release `spool worker` on a database, in its own process.
struct SpoolWorker {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl SpoolWorker {
    fn spawn(db: &Path, config: &Path, dir: &Path) -> SpoolWorker {
        let log = dir.join("worker.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .arg("--db")
            .arg(db)
            .arg("worker")
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        SpoolWorker { child, log }
    }

    /// Panic with the worker's log if it has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("spool worker exited ({status}):\n{log}");
        }
    }

    /// Stop it as Ctrl-C does, and wait for it.
    fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap();
    }
}

impl Drop for SpoolWorker {
    /// Never leave it running when the bench fails.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Enqueue `n` jobs one per call, one every 2 ms.
async fn pace(backend: &SqliteBackend, n: usize) {
    let every = Duration::from_millis(2);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + every * i as u32).await;
        backend.enqueue(vec![job()]).await.unwrap();
    }
}

/// The same, with the jobs run by the release `spool worker` in its own process: it learns of
/// another process's commits by watching the store's write-ahead log.
async fn cross_process_latency(noop: &Path, synchronous: Synchronous, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("latency.db");
    let config = write_config(dir.path(), "", noop, 10, synchronous);
    let backend = open(&db, synchronous);
    let mut worker = SpoolWorker::spawn(&db, &config, dir.path());
    // Warm up: the worker has loaded its plugin and run a few jobs.
    for _ in 0..20 {
        backend.enqueue(vec![job()]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    while succeeded(&backend).await < 20 {
        worker.check_alive();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "warm-up jobs not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    pace(&backend, n).await;
    let t = Instant::now();
    while succeeded(&backend).await < 20 + n as u64 {
        worker.check_alive();
        assert!(t.elapsed() < Duration::from_secs(60), "jobs not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop();
    print_latency(&backend, 20).await;
}

/// Enqueue-to-start latencies from the event log: `started` at minus `enqueued` at, leaving
/// out the first `warm_up` jobs enqueued.
async fn print_latency(backend: &SqliteBackend, warm_up: usize) {
    let mut enqueued = HashMap::new();
    let mut lat = Vec::new();
    let mut after = None;
    let mut skipped = 0;
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
                    if skipped < warm_up {
                        skipped += 1;
                    } else {
                        enqueued.insert(id.clone(), e.at);
                    }
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
