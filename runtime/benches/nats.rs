//! Queue benchmarks on the NATS JetStream backend: enqueue rate, end-to-end no-op throughput
//! with one and two real `spool worker` processes, and enqueue-to-start latency at a steady
//! rate, with the CPU time of the server and the workers.
//!
//! Run with `cargo bench -p spool-runtime --bench nats` (`-- quick` for a tenth of the work;
//! `-- enqueue`, `-- throughput` or `-- latency` for only those sections;
//! `SPOOL_BENCH_PREFETCH=N` sets the workers' prefetch, else it is "auto", the default;
//! `SPOOL_BENCH_SPOOL=PATH` runs the workers from another `spool` binary). Each figure gets a
//! fresh `nats-server -js` (from `PATH` or `/usr/sbin/nats-server`) on a free 127.0.0.1 port
//! with its own store in a temporary directory, killed afterwards. Figures go into
//! BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt as _;
use spool::queue::nats::{NatsBackend, NatsOptions};
use spool::queue::{Backend, EventKind, NewJob};
use xtask::nats_server::NatsServer;

/// Worker concurrency (worker-wide and the queue's) of the throughput runs.
const CONCURRENCY: u32 = 100;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    // `-- enqueue`, `-- throughput`, `-- latency`: only those sections (default: all).
    let sections = ["enqueue", "throughput", "latency"];
    let chosen: Vec<String> = std::env::args()
        .filter(|a| sections.contains(&a.as_str()))
        .collect();
    let run = |section: &str| chosen.is_empty() || chosen.iter().any(|c| c == section);
    // The default ("auto") unless a fixed number is asked for.
    let prefetch = std::env::var("SPOOL_BENCH_PREFETCH")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .map_or_else(|| "\"auto\"".to_owned(), |n| n.to_string());
    let noop = xtask::plugin("noop").unwrap();
    // `SPOOL_BENCH_SPOOL=PATH` runs the workers from another build (to compare two builds in
    // one sitting: the machine's speed drifts over hours).
    let spool = std::env::var_os("SPOOL_BENCH_SPOOL")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spool")), PathBuf::from);
    let version = Command::new(xtask::nats_server::binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "{version}, file storage, one server on 127.0.0.1; workers: {} (release)\n",
        spool.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();

    rt.block_on(async {
        if run("enqueue") {
            enqueue_rate(scale).await;
        }

        if run("throughput") {
            println!(
                "\n## end-to-end no-op throughput (worker processes, concurrency {CONCURRENCY}, prefetch {prefetch}, backlog enqueued first)"
            );
            // One process with a thread per CPU; two with the CPUs shared out (one thread
            // each, `[worker] threads = 1`) and, for comparison, with a thread per CPU each.
            for (workers, threads) in [(1usize, 0u32), (2, 1), (2, 0)] {
                throughput(&spool, &noop, workers, threads, 100_000 / scale, &prefetch).await;
            }
        }
        if run("latency") {
            for poll in ["5ms", "50ms"] {
                println!(
                    "\n## enqueue-to-start latency at 500 jobs/s (one worker process, concurrency 10, poll_interval {poll})"
                );
                latency(&spool, &noop, 5_000 / scale, &prefetch, poll).await;
            }
        }
    });
}

async fn enqueue_rate(scale: usize) {
    println!("## enqueue rate (NatsBackend::enqueue from this process)");
    let server = NatsServer::start();
    let backend = connect(&server).await;
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

/// Nanoseconds since the Unix epoch (the clock the server stamps messages with).
fn unix_nanos() -> i128 {
    i128::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// A `spool.toml` serving the `noop` queue, in `dir`.
fn write_config(
    dir: &Path,
    noop: &Path,
    concurrency: u32,
    prefetch: &str,
    threads: u32,
    poll: &str,
) -> PathBuf {
    let path = dir.join("spool.toml");
    let plugin = noop.display().to_string();
    std::fs::write(
        &path,
        format!(
            "[worker]\nconcurrency = {concurrency}\nprefetch = {prefetch}\nthreads = {threads}\npoll_interval = {poll:?}\n\n\
             [queues.noop]\nplugin = {plugin:?}\nconcurrency = {concurrency}\n"
        ),
    )
    .unwrap();
    path
}

/// Enqueue `n` jobs in batches of 1000.
async fn fill(backend: &NatsBackend, n: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        backend
            .enqueue((0..batch).map(|_| job()).collect())
            .await
            .unwrap();
        left -= batch;
    }
}

async fn throughput(
    spool: &Path,
    noop: &Path,
    workers: usize,
    threads: u32,
    n: usize,
    prefetch: &str,
) {
    let server = NatsServer::start();
    let backend = connect(&server).await;
    let t = Instant::now();
    fill(&backend, n).await;
    let filled = secs(t);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), noop, CONCURRENCY, prefetch, threads, "5ms");
    let js = jetstream(&server).await;
    let mut jobs = js.get_stream(backend.names().jobs_stream()).await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, n as u64);

    let stored_before = stored(&js, &backend).await;
    let varz_before = varz(&server);
    let cpu_before = (
        proc_cpu(pid(&server)),
        proc_cpu(std::process::id()),
        machine_cpu(),
    );
    let spawned_ns = unix_nanos();
    let spawned = Instant::now();
    let mut procs: Vec<Worker> = (0..workers)
        .map(|i| Worker::spawn(spool, &server.url(), &config, dir.path(), i))
        .collect();
    // Until the jobs stream is empty: a job's message is acked (and, with work-queue
    // retention, removed) only once its record says succeeded. Stream info is one cheap
    // request, unlike `queues()`, which reads every record; the exact end is the last
    // `succeeded` event's server timestamp, read afterwards.
    loop {
        let left = jobs.info().await.unwrap().state.messages;
        if left == 0 {
            break;
        }
        for w in &mut procs {
            w.check_alive();
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(900),
            "{left} of {n} jobs still queued after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let polled = secs(spawned);
    let worker_cpu: Vec<f64> = procs.iter().map(|w| proc_cpu(w.child.id())).collect();
    let cpu_after = (
        proc_cpu(pid(&server)),
        proc_cpu(std::process::id()),
        machine_cpu(),
    );
    for w in &mut procs {
        w.stop();
    }
    let varz_after = varz(&server);
    let stored_after = stored(&js, &backend).await;

    let counts = backend.queues().await.unwrap();
    let succeeded: u64 = counts.iter().map(|c| c.succeeded).sum();
    let events = scan_events(&js, &backend).await;
    let first_started = events
        .iter()
        .filter(|e| e.kind == EventKind::Started)
        .map(|e| e.published_ns)
        .min()
        .unwrap();
    let last_succeeded = events
        .iter()
        .filter(|e| e.kind == EventKind::Succeeded)
        .map(|e| e.published_ns)
        .max()
        .unwrap();
    let mut by_worker: HashMap<&str, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.kind == EventKind::Succeeded) {
        *by_worker
            .entry(e.worker.as_deref().unwrap_or("?"))
            .or_default() += 1;
    }
    let mut split: Vec<usize> = by_worker.into_values().collect();
    split.sort_unstable_by(|a, b| b.cmp(a));
    let started_events = events
        .iter()
        .filter(|e| e.kind == EventKind::Started)
        .count();

    let total = (last_succeeded - spawned_ns) as f64 / 1e9;
    let running = (last_succeeded - first_started) as f64 / 1e9;
    println!(
        "{workers} worker process(es), {}: {n} jobs (enqueued in {filled:.2} s), {succeeded} succeeded, {started_events} attempts started",
        match threads {
            0 => "a runtime thread per CPU each".to_owned(),
            t => format!("{t} runtime thread(s) each"),
        }
    );
    println!(
        "  worker spawn -> last succeeded: {total:.2} s = {:.0} jobs/s (stream seen empty by the 100 ms poll after {polled:.2} s)",
        n as f64 / total
    );
    println!(
        "  first started -> last succeeded: {running:.2} s = {:.0} jobs/s (start-up: first job started {:.0} ms after spawn)",
        n as f64 / running,
        (first_started - spawned_ns) as f64 / 1e6
    );
    println!("  jobs per worker process: {split:?}");
    let wall = cpu_after.2.0 - cpu_before.2.0;
    let idle = cpu_after.2.1 - cpu_before.2.1;
    let server_cpu = cpu_after.0 - cpu_before.0;
    let bench_cpu = cpu_after.1 - cpu_before.1;
    let workers_cpu: f64 = worker_cpu.iter().sum();
    println!(
        "  CPU over the run ({polled:.2} s wall, {:.2} CPU-s available on {} CPUs):",
        wall,
        cpus()
    );
    println!(
        "    nats-server {server_cpu:.2} s ({:.1} µs/job), worker process(es) {workers_cpu:.2} s {:?} ({:.1} µs/job), this process (polling) {bench_cpu:.2} s, other processes {:.2} s, idle {idle:.2} s",
        server_cpu * 1e6 / n as f64,
        worker_cpu
            .iter()
            .map(|c| (c * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        workers_cpu * 1e6 / n as f64,
        (wall - idle - server_cpu - workers_cpu - bench_cpu).max(0.0),
    );
    let per_job = |a: u64, b: u64| (a - b) as f64 / n as f64;
    println!(
        "  server traffic per job: {:.1} messages in, {:.1} out, {:.1} JetStream API requests; stored per job: {}",
        per_job(varz_after.in_msgs, varz_before.in_msgs),
        per_job(varz_after.out_msgs, varz_before.out_msgs),
        per_job(varz_after.api, varz_before.api),
        stored_after
            .iter()
            .zip(&stored_before)
            .map(|((name, a), (_, b))| format!("{name} {:.1}", per_job(*a, *b)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

async fn latency(spool: &Path, noop: &Path, n: usize, prefetch: &str, poll: &str) {
    let server = NatsServer::start();
    let backend = connect(&server).await;
    let js = jetstream(&server).await;
    let mut jobs = js.get_stream(backend.names().jobs_stream()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), noop, 10, prefetch, 0, poll);
    let mut worker = Worker::spawn(spool, &server.url(), &config, dir.path(), 0);

    // Warm up: the worker has loaded its plugin and run a few jobs.
    for _ in 0..20 {
        backend.enqueue(vec![job()]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    while jobs.info().await.unwrap().state.messages > 0 {
        worker.check_alive();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "warm-up jobs not run"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // id -> (client clock just before the enqueue call, the call's duration)
    let mut sent: HashMap<String, (i128, Duration)> = HashMap::with_capacity(n);
    let every = Duration::from_millis(2);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + every * u32::try_from(i).unwrap()).await;
        let at = unix_nanos();
        let t = Instant::now();
        let id = backend.enqueue(vec![job()]).await.unwrap().remove(0).id;
        sent.insert(id.0, (at, t.elapsed()));
    }
    let paced = start.elapsed().as_secs_f64();
    let t = Instant::now();
    while jobs.info().await.unwrap().state.messages > 0 {
        worker.check_alive();
        assert!(t.elapsed() < Duration::from_secs(60), "jobs not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop();

    let mut enqueued_ms = HashMap::new();
    let mut lat_ms = Vec::with_capacity(n);
    let mut lat_us = Vec::with_capacity(n);
    for e in scan_events(&js, &backend).await {
        let Some(id) = e.job_id.as_deref() else {
            continue;
        };
        let Some(&(sent_at, _)) = sent.get(id) else {
            continue;
        };
        match e.kind {
            EventKind::Enqueued => {
                enqueued_ms.insert(id.to_owned(), e.at);
            }
            EventKind::Started => {
                if let Some(at) = enqueued_ms.get(id) {
                    lat_ms.push(e.at - at);
                }
                lat_us.push(i64::try_from((e.published_ns - sent_at) / 1000).unwrap());
            }
            _ => {}
        }
    }
    let mut calls: Vec<i64> = sent
        .values()
        .map(|(_, d)| i64::try_from(d.as_micros()).unwrap())
        .collect();
    println!(
        "{n} jobs enqueued one per call in {paced:.2} s ({:.0} jobs/s); {} started",
        n as f64 / paced,
        lat_us.len()
    );
    let (p50, p99, max) = percentiles(&mut lat_ms);
    println!(
        "  `started` event at - `enqueued` event at (1 ms resolution): p50 {p50} ms, p99 {p99} ms, max {max} ms"
    );
    let (p50, p99, max) = percentiles(&mut lat_us);
    println!(
        "  enqueue call begins -> `started` event stored (server timestamp, µs): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
    let (p50, p99, max) = percentiles(&mut calls);
    println!(
        "  the enqueue call itself: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        max as f64 / 1e3
    );
}

fn percentiles(v: &mut [i64]) -> (i64, i64, i64) {
    v.sort_unstable();
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (pct(0.5), pct(0.99), v[v.len() - 1])
}

/// One event as read from the event log, with the server's timestamp of its message.
struct Ev {
    kind: EventKind,
    job_id: Option<String>,
    worker: Option<String>,
    /// The event's own `at` (milliseconds).
    at: i64,
    /// When the server stored the event's message (nanoseconds since the Unix epoch).
    published_ns: i128,
}

#[derive(serde::Deserialize)]
struct WireEvent {
    at: i64,
    kind: EventKind,
    job_id: Option<String>,
    worker: Option<String>,
}

/// Every event of the installation, in order, with server timestamps: an ordered consumer on
/// the events stream (`backend.events` gives the same events with millisecond `at` only).
async fn scan_events(js: &async_nats::jetstream::Context, backend: &NatsBackend) -> Vec<Ev> {
    let stream = js
        .get_stream(backend.names().events_stream())
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: backend.names().events_all(),
            deliver_policy: DeliverPolicy::All,
            ..pull::OrderedConfig::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return out;
    }
    let mut messages = consumer.messages().await.unwrap();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the events scan stalled")
            .unwrap()
            .unwrap();
        let info = message.info().unwrap();
        let pending = info.pending;
        let published_ns = info.published.unix_timestamp_nanos();
        // One message of the event log: a JSON array of events.
        let batch: Vec<WireEvent> = serde_json::from_slice(&message.payload).unwrap();
        out.extend(batch.into_iter().map(|wire| Ev {
            kind: wire.kind,
            job_id: wire.job_id,
            worker: wire.worker,
            at: wire.at,
            published_ns,
        }));
        if pending == 0 {
            break;
        }
    }
    out
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn proc_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / clock_ticks()
}

/// Total and idle (idle + iowait) CPU seconds of the machine, from `/proc/stat`.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let line = stat.lines().next().unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is included in user)
    let total: u64 = v.iter().take(8).sum();
    (
        total as f64 / clock_ticks(),
        (v[3] + v[4]) as f64 / clock_ticks(),
    )
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A `spool --nats URL worker --config TOML` process; SIGTERMed when stopped or dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn spawn(spool: &Path, url: &str, config: &Path, dir: &Path, i: usize) -> Worker {
        let log = dir.join(format!("worker-{i}.log"));
        let file = File::create(&log).unwrap();
        let child = Command::new(spool)
            .arg("--nats")
            .arg(url)
            .arg("worker")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", spool.display()));
        Worker { child, log }
    }

    /// Panic with the worker's log if it has exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the worker process exited ({status}):\n{log}");
        }
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    fn stop(&mut self) {
        if self.child.try_wait().unwrap().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let t = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                eprintln!("worker {} ignored SIGTERM: killing it", self.child.id());
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The backend on `server`.
async fn connect(server: &NatsServer) -> NatsBackend {
    NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server.url()))
}

/// The server's process id.
fn pid(server: &NatsServer) -> u32 {
    server.pid().expect("the server runs")
}

/// The server's `/varz` counters: messages in and out, JetStream API requests.
fn varz(server: &NatsServer) -> Varz {
    use std::io::{Read as _, Write as _};
    let mut http = std::net::TcpStream::connect(("127.0.0.1", server.monitor_port())).unwrap();
    http.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    Varz {
        in_msgs: v["in_msgs"].as_u64().unwrap_or(0),
        out_msgs: v["out_msgs"].as_u64().unwrap_or(0),
        api: v["jetstream"]["stats"]["api"]["total"]
            .as_u64()
            .unwrap_or(0),
    }
}

/// A plain JetStream context, for stream info and the events scan.
async fn jetstream(server: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

#[derive(Debug, Clone, Copy)]
struct Varz {
    in_msgs: u64,
    out_msgs: u64,
    api: u64,
}

/// The last sequence of each of the backend's streams (jobs, records, leases, events): how
/// many messages each has stored so far.
async fn stored(js: &async_nats::jetstream::Context, backend: &NatsBackend) -> Vec<(String, u64)> {
    let names = backend.names();
    let mut out = Vec::new();
    for stream in [
        names.jobs_stream(),
        format!("KV_{}", names.records_bucket()),
        names.leases_stream(),
        names.events_stream(),
    ] {
        let mut s = js.get_stream(&stream).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        out.push((stream, last));
    }
    out
}
