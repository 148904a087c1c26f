//! HTTP API benchmarks on the embedded SQLite backend: the enqueue rate over HTTP/1.1
//! keep-alive on loopback (one job per request, and batches), against the store's own rate
//! in the same sitting; and the Server-Sent Events stream keeping up with a worker at full
//! end-to-end throughput.
//!
//! Run with `cargo bench -p spool-runtime --bench api` (`-- quick` for a tenth of the work).
//! The server is Spool's own (`spool::server::serve`) on a loopback port, in this process as
//! `[worker] http` runs it; the clients are blocking HTTP clients on their own threads, each
//! keeping its connection alive. Figures go into BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spool::config::{QueueConfig, WorkerSettings};
use spool::metrics::Metrics;
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{Backend, EventFilter, NewJob};
use spool::server::{self, ServerState};
use spool::worker::Worker;
use spool::{Sandbox, SandboxConfig};

/// The payload of every job, as the API takes it and as the store keeps it.
const PAYLOAD: &str = r#"{"to":"a@example.com","n":1}"#;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    let noop = xtask::plugin("noop").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    println!("## enqueue rate over HTTP/1.1 keep-alive (SQLite, synchronous = FULL)");
    {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("store.db"));
        let n = 5_000 / scale;
        let store_single = rt.block_on(async {
            let t = Instant::now();
            for _ in 0..n {
                backend.enqueue(vec![job()]).await.unwrap();
            }
            n as f64 / t.elapsed().as_secs_f64()
        });
        println!("store, in process, one job per call: {store_single:.0} jobs/s");
        let n = 100_000 / scale;
        let mut store_batched = BTreeMap::new();
        for batch in [100usize, 1000] {
            let rate = rt.block_on(async {
                let t = Instant::now();
                for _ in 0..n / batch {
                    backend
                        .enqueue((0..batch).map(|_| job()).collect())
                        .await
                        .unwrap();
                }
                n as f64 / t.elapsed().as_secs_f64()
            });
            println!("store, in process, {batch} jobs per call: {rate:.0} jobs/s");
            store_batched.insert(batch, rate);
        }

        let (addr, stop) = start_server(&rt, backend.clone());
        for clients in [1usize, 4, 16] {
            let requests = 5_000 / scale;
            let rate = enqueue_over_http(addr, clients, requests, 1);
            println!(
                "API, {clients:>2} clients, one job per request: {requests} requests, {rate:.0} jobs/s ({:.2} of the store's)",
                rate / store_single
            );
        }
        for (clients, batch) in [(1usize, 100usize), (4, 100), (1, 1000), (4, 1000)] {
            let requests = 100_000 / scale / batch;
            let rate = enqueue_over_http(addr, clients, requests, batch);
            println!(
                "API, {clients:>2} clients, {batch:>4} jobs per request: {} jobs, {rate:.0} jobs/s ({:.2} of the store's)",
                requests * batch,
                rate / store_batched[&batch]
            );
        }
        let _ = stop.send(true);
    }

    println!(
        "\n## the event stream against a worker at full throughput (concurrency 100, prefetch 1000)"
    );
    let n = 100_000 / scale;
    for streams in [0usize, 1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(&dir.path().join("stream.db"));
        rt.block_on(fill(&backend, n));
        let (addr, stop) = start_server(&rt, backend.clone());
        let readers: Vec<Reader> = (0..streams).map(|_| Reader::start(addr)).collect();
        for r in &readers {
            r.wait_connected();
        }
        let from = rt.block_on(newest(&backend));
        let committed_at = record_commits(&rt, &backend);
        let t = Instant::now();
        let rate = rt.block_on(drain(&backend, &noop, n));
        let ran = t.elapsed();
        let last = rt.block_on(newest(&backend));
        let committed = rt.block_on(count_after(&backend, from));
        // How long after the worker's last commit each stream still needed to deliver it all.
        let mut lags = Vec::new();
        for r in &readers {
            let caught_up = Instant::now();
            while r.last.load(Ordering::Relaxed) < last {
                assert!(
                    caught_up.elapsed() < Duration::from_secs(120),
                    "a stream fell too far behind"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            lags.push(caught_up.elapsed());
            let received = r.received.load(Ordering::Relaxed);
            assert_eq!(received, committed, "a stream lost or repeated events");
            assert_eq!(r.out_of_order.load(Ordering::Relaxed), 0);
        }
        let events_per_sec = committed as f64 / ran.as_secs_f64();
        if streams == 0 {
            println!(
                "no stream: {n} jobs, {rate:.0} jobs/s ({committed} events, {events_per_sec:.0} events/s committed)"
            );
        } else {
            let lag = lags.iter().max().unwrap();
            // From each event's commit to its arrival, every stream's events together (those
            // whose commit the in-process subscriber saw).
            let committed_at = lock(&committed_at);
            let mut delays: Vec<Duration> = readers
                .iter()
                .flat_map(|r| std::mem::take(&mut *lock(&r.arrivals)))
                .filter_map(|(seq, arrived)| {
                    committed_at
                        .get(&seq)
                        .map(|at| arrived.saturating_duration_since(*at))
                })
                .collect();
            delays.sort_unstable();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let at = |q: f64| ms(delays[((delays.len() - 1) as f64 * q) as usize]);
            println!(
                "{streams} stream(s): {n} jobs, {rate:.0} jobs/s; each stream got all {committed} events in order ({events_per_sec:.0} events/s); commit to arrival p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the last event {:.1} ms after the worker's last commit",
                at(0.5),
                at(0.99),
                ms(*delays.last().unwrap()),
                ms(*lag)
            );
        }
        drop(readers);
        let _ = stop.send(true);
    }
}

fn open(path: &Path) -> SqliteBackend {
    SqliteBackend::open(path, SqliteOptions::default()).unwrap()
}

fn job() -> NewJob {
    NewJob {
        queue: "noop".into(),
        payload: PAYLOAD.as_bytes().to_vec(),
        ..NewJob::default()
    }
}

async fn fill(backend: &SqliteBackend, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        backend
            .enqueue(chunk.iter().map(|_| job()).collect())
            .await
            .unwrap();
    }
}

/// Spool's HTTP server for `backend` on a free loopback port, on `rt`; stopped by sending
/// `true`.
fn start_server(
    rt: &tokio::runtime::Runtime,
    backend: SqliteBackend,
) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    let state = ServerState::new(backend.into(), Arc::new(Metrics::new()));
    let listener = rt
        .block_on(server::bind("127.0.0.1:0".parse().unwrap(), &state))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    rt.spawn(server::serve(listener, state, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    (addr, stop)
}

/// `requests` POSTs of `batch` jobs each, shared among `clients` threads, each with its own
/// keep-alive connection; jobs per second.
fn enqueue_over_http(addr: SocketAddr, clients: usize, requests: usize, batch: usize) -> f64 {
    let url = format!("http://{addr}/api/v1/queues/noop/jobs");
    let one = format!(r#"{{"payload":{PAYLOAD}}}"#);
    let body = if batch == 1 {
        one
    } else {
        format!("{{\"jobs\":[{}]}}", vec![one; batch].join(","))
    };
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let (url, body) = (&url, &body);
            let mine = requests / clients + usize::from(c < requests % clients);
            s.spawn(move || {
                let agent = ureq::Agent::new_with_defaults();
                for _ in 0..mine {
                    let mut response = agent
                        .post(url)
                        .header("content-type", "application/json")
                        .send(body.as_str())
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    let answer = response.body_mut().read_to_string().unwrap();
                    assert!(answer.starts_with(r#"{"jobs":["#), "{answer}");
                }
            });
        }
    });
    (requests * batch) as f64 / t.elapsed().as_secs_f64()
}

/// A client reading `/api/v1/events/stream` on its own thread: what it got, whether the
/// seqs rose, and when each event arrived.
struct Reader {
    received: Arc<AtomicU64>,
    last: Arc<AtomicI64>,
    out_of_order: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<(i64, Instant)>>>,
    connected: Arc<std::sync::Barrier>,
}

impl Reader {
    fn start(addr: SocketAddr) -> Reader {
        let received = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicI64::new(0));
        let out_of_order = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(std::sync::Barrier::new(2));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let reader = Reader {
            received: received.clone(),
            last: last.clone(),
            out_of_order: out_of_order.clone(),
            arrivals: arrivals.clone(),
            connected: connected.clone(),
        };
        std::thread::spawn(move || {
            let agent = ureq::Agent::new_with_defaults();
            let response = agent
                .get(format!("http://{addr}/api/v1/events/stream?queue=noop"))
                .call()
                .unwrap();
            connected.wait();
            let lines = std::io::BufReader::new(response.into_body().into_reader()).lines();
            for line in lines {
                let Ok(line) = line else { return };
                let Some(id) = line.strip_prefix("id:") else {
                    continue;
                };
                let seq: i64 = id.trim().parse().unwrap();
                lock(&arrivals).push((seq, Instant::now()));
                if seq <= last.load(Ordering::Relaxed) {
                    out_of_order.fetch_add(1, Ordering::Relaxed);
                }
                last.store(seq, Ordering::Relaxed);
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
        reader
    }

    fn wait_connected(&self) {
        self.connected.wait();
    }
}

/// When each event `backend` commits from now on was published by its sink (right after
/// its commit), by seq.
fn record_commits(
    rt: &tokio::runtime::Runtime,
    backend: &SqliteBackend,
) -> Arc<Mutex<HashMap<i64, Instant>>> {
    let times = Arc::new(Mutex::new(HashMap::new()));
    let mut live = backend.sink().subscribe();
    let into = times.clone();
    rt.spawn(async move {
        loop {
            match live.recv().await {
                Ok(event) => {
                    lock(&into).insert(event.seq, Instant::now());
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    times
}

/// The newest event's seq.
async fn newest(backend: &SqliteBackend) -> i64 {
    let filter = EventFilter {
        limit: Some(1),
        newest: true,
        ..EventFilter::default()
    };
    backend
        .events(&filter)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.seq)
}

/// The events committed after `seq`.
async fn count_after(backend: &SqliteBackend, mut seq: i64) -> u64 {
    let mut count = 0;
    loop {
        let filter = EventFilter {
            after: Some(seq),
            limit: Some(10_000),
            ..EventFilter::default()
        };
        let events = backend.events(&filter).await.unwrap();
        let Some(last) = events.last() else {
            return count;
        };
        seq = last.seq;
        count += events.len() as u64;
    }
}

/// Run a worker until it has run `n` jobs to success; jobs per second.
async fn drain(backend: &SqliteBackend, noop: &Path, n: usize) -> f64 {
    let concurrency = 100;
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
            .unwrap()
    });
    let t = Instant::now();
    while stats.get().succeeded < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = stop.send(());
    handle.await.unwrap();
    rate
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
