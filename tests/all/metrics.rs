//! Prometheus metrics from a real worker on a real SQLite file: the counters agree with the
//! events the store holds, histograms see every attempt, and no label holds a job id.
//!
//! The exposition is parsed with `prometheus-parse`, which reads the Prometheus text format:
//! in OpenMetrics output a counter's `# TYPE` names the family without `_total`, so the parser
//! reports its `_total` samples as untyped; the checks read counters as either.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};
use spool::config::{Config, MetricsConfig};
use spool::events::{Event, EventKind};
use spool::metrics::Metrics;
use spool::queue::nats::{NatsBackend, NatsOptions};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{Backend, EventFilter, JobId, JobState, NewJob};
use spool::worker::Worker;

use crate::support::{NatsServer, Setup, event_counts};

const CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "2s"
shutdown_grace = "1s"
poll_interval = "20ms"

[queues.email]
plugin = "EMAIL"
timeout = "5s"
max_attempts = 2
backoff = { initial = "50ms", factor = 2.0, jitter = 0.0 }

[queues.email.grants]
http = ["http://127.0.0.1:*"]

[queues.hang]
plugin = "EMAIL"
timeout = "300ms"
max_attempts = 1

[queues.hang.grants]
http = ["http://127.0.0.1:*"]

[queues.long]
plugin = "EMAIL"
timeout = "60s"
max_attempts = 1

[queues.long.grants]
http = ["http://127.0.0.1:*"]
"#;

/// A worker running in this process on the setup's database, stopped by the sender.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<spool::worker::WorkerStats>,
}

impl Running {
    async fn stop(self) -> spool::worker::WorkerStats {
        let _ = self.stop.send(());
        self.task.await.unwrap()
    }
}

async fn start<B: Backend + Clone>(s: &Setup, backend: &B) -> (Arc<Metrics>, Running) {
    let config = Config::load(&s.dir.path().join("spool.toml")).unwrap();
    let worker = Worker::start(
        backend.clone(),
        crate::support::sandbox().clone(),
        config.worker.clone(),
        config.queues,
    )
    .await
    .unwrap();
    let metrics = worker.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (metrics, Running { stop, task })
}

async fn enqueue<B: Backend>(
    backend: &B,
    queue: &str,
    payload: &str,
    tenant: Option<&str>,
) -> JobId {
    let job = NewJob {
        queue: queue.to_owned(),
        payload: payload.as_bytes().to_vec(),
        tenant: tenant.map(str::to_owned),
        ..NewJob::default()
    };
    backend.enqueue(vec![job]).await.unwrap().remove(0).id
}

/// Wait until job `id` is in a state `done` accepts; its state.
async fn wait_for<B: Backend>(
    backend: &B,
    id: &JobId,
    done: impl Fn(JobState) -> bool,
) -> JobState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = backend.job(id).await.unwrap().unwrap().summary.state;
        if done(state) {
            return state;
        }
        assert!(Instant::now() < deadline, "job {id} still {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn finished(state: JobState) -> bool {
    matches!(
        state,
        JobState::Succeeded | JobState::Dead | JobState::Cancelled
    )
}

fn scrape(metrics: &Metrics) -> Vec<Sample> {
    let text = metrics.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples
}

/// The value of a counter or gauge sample.
fn value(sample: &Sample) -> f64 {
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{} is not a single value: {other:?}", sample.metric),
    }
}

/// The sum of `metric` over the samples whose labels include every pair of `labels`.
fn sum(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(value)
        .sum()
}

/// The observation count of histogram `metric` over the series whose labels include `labels`.
fn observed(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    sum(samples, &format!("{metric}_count"), labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_committed_events_and_no_label_holds_a_job_id() {
    let s = Setup::new(CONFIG);
    let backend = SqliteBackend::open(&s.db(), SqliteOptions::default()).unwrap();
    counters_match_the_committed_events(&s, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_committed_events_on_nats_too() {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let backend = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    let s = Setup::new(CONFIG);
    counters_match_the_committed_events(&s, &backend).await;
}

/// Run a success, a retry, a dead job, a timeout and a cancel through a worker on `backend`,
/// then hold its metrics against the events the store committed.
async fn counters_match_the_committed_events<B: Backend + Clone>(s: &Setup, backend: &B) {
    let (metrics, worker) = start(s, backend).await;
    let backend = backend.clone();

    let ok = enqueue(&backend, "email", r#"{"to":"ada@example.com"}"#, None).await;
    let flaky = enqueue(
        &backend,
        "email",
        r#"{"to":"ada@example.com","mode":"flaky"}"#,
        None,
    )
    .await;
    let reject = enqueue(
        &backend,
        "email",
        r#"{"to":"nobody","mode":"reject"}"#,
        None,
    )
    .await;
    let hang = enqueue(
        &backend,
        "hang",
        r#"{"to":"ada@example.com","mode":"hang"}"#,
        None,
    )
    .await;
    let long = enqueue(
        &backend,
        "long",
        r#"{"to":"ada@example.com","mode":"hang","delay_ms":30000}"#,
        None,
    )
    .await;

    wait_for(&backend, &long, |s| s == JobState::Running).await;
    // Cancelled once it sleeps (its checkpoint saved first), so that the cancel aborts it.
    // Cancelled before its save, the attempt would end on its own, its save refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    while backend
        .job(&long)
        .await
        .unwrap()
        .unwrap()
        .checkpoint
        .is_none()
    {
        assert!(Instant::now() < deadline, "job {long} saved no checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backend.cancel(&long, "no longer wanted").await.unwrap());
    assert_eq!(wait_for(&backend, &ok, finished).await, JobState::Succeeded);
    assert_eq!(
        wait_for(&backend, &flaky, finished).await,
        JobState::Succeeded
    );
    assert_eq!(wait_for(&backend, &reject, finished).await, JobState::Dead);
    assert_eq!(wait_for(&backend, &hang, finished).await, JobState::Dead);
    assert_eq!(
        wait_for(&backend, &long, finished).await,
        JobState::Cancelled
    );
    let stats = worker.stop().await;
    assert_eq!(stats.cancelled, 1, "{stats:?}");

    let samples = scrape(&metrics);
    let events = event_counts(&backend).await;
    let count = |kind| events.get(&kind).copied().unwrap_or(0) as f64;
    for (metric, kind, expected) in [
        ("spool_jobs_enqueued_total", EventKind::Enqueued, 5.0),
        ("spool_jobs_started_total", EventKind::Started, 6.0),
        ("spool_jobs_succeeded_total", EventKind::Succeeded, 2.0),
        ("spool_jobs_failed_total", EventKind::Failed, 3.0),
        ("spool_jobs_retried_total", EventKind::RetryScheduled, 1.0),
        (
            "spool_jobs_dead_lettered_total",
            EventKind::DeadLettered,
            2.0,
        ),
        ("spool_jobs_cancelled_total", EventKind::Cancelled, 1.0),
        ("spool_plugin_loads_total", EventKind::PluginLoaded, 3.0),
    ] {
        assert_eq!(
            count(kind),
            expected,
            "{kind} events in the store: {events:?}"
        );
        assert_eq!(sum(&samples, metric, &[]), expected, "{metric}");
    }
    assert_eq!(sum(&samples, "spool_jobs_lease_expired_total", &[]), 0.0);
    assert_eq!(
        sum(
            &samples,
            "spool_jobs_succeeded_total",
            &[("queue", "email")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &samples,
            "spool_jobs_failed_total",
            &[("queue", "hang"), ("phase", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &samples,
            "spool_jobs_failed_total",
            &[("queue", "email"), ("phase", "run")]
        ),
        2.0
    );

    // Attempts, by outcome: the cancelled one was aborted and never ended on its own.
    let duration = "spool_attempt_duration_seconds";
    assert_eq!(observed(&samples, duration, &[]), 5.0);
    assert_eq!(
        observed(&samples, duration, &[("outcome", "succeeded")]),
        2.0
    );
    assert_eq!(observed(&samples, duration, &[("outcome", "retry")]), 1.0);
    assert_eq!(observed(&samples, duration, &[("outcome", "fail")]), 1.0);
    assert_eq!(
        observed(&samples, duration, &[("outcome", "timed-out")]),
        1.0
    );
    let timed_out = sum(
        &samples,
        &format!("{duration}_sum"),
        &[("outcome", "timed-out")],
    );
    assert!(
        (0.3..3.0).contains(&timed_out),
        "timed out after {timed_out} s"
    );
    // The timeout's abort, and how late past the 300 ms deadline it came.
    let overrun = "spool_timeout_abort_latency_seconds";
    assert_eq!(observed(&samples, overrun, &[("queue", "hang")]), 1.0);
    let late = sum(&samples, &format!("{overrun}_sum"), &[]);
    assert!(
        (0.0..2.0).contains(&late),
        "aborted {late} s past the deadline"
    );
    // One first start per job; every attempt that ran reports its memory high-water mark.
    assert_eq!(
        observed(&samples, "spool_enqueue_to_start_seconds", &[]),
        5.0
    );
    let memory = "spool_attempt_memory_peak_bytes";
    assert_eq!(observed(&samples, memory, &[]), 5.0);
    let mean = sum(&samples, &format!("{memory}_sum"), &[]) / 5.0;
    assert!(
        (f64::from(1_u32 << 20)..f64::from(256_u32 << 20)).contains(&mean),
        "mean memory peak {mean} bytes"
    );
    // Three queues' plugins loaded, each compiled or read from the compile cache.
    let loads = sum(&samples, "spool_plugin_compiles_total", &[])
        + sum(&samples, "spool_plugin_cache_hits_total", &[]);
    assert_eq!(loads, 3.0);
    // A stopped worker runs nothing and has every slot free.
    assert_eq!(sum(&samples, "spool_worker_attempts_running", &[]), 0.0);
    assert_eq!(sum(&samples, "spool_worker_slots_free", &[]), 8.0);

    // No label holds a job id, a tenant or anything else unbounded.
    let ids: BTreeSet<String> = [&ok, &flaky, &reject, &hang, &long]
        .iter()
        .map(|id| id.0.clone())
        .collect();
    let names: BTreeSet<&str> = [
        "queue", "phase", "outcome", "kind", "result", "worker", "state",
    ]
    .into();
    for sample in &samples {
        for (name, value) in sample.labels.iter() {
            assert!(
                names.contains(name.as_str()),
                "{} has label {name}",
                sample.metric
            );
            assert!(
                !ids.contains(value),
                "{} has a job id in {name}",
                sample.metric
            );
        }
    }

    // The queue depths, read from the store by the refresher.
    let refresher = tokio::spawn(
        metrics
            .clone()
            .refresh_queue_depth(backend.clone(), Duration::from_millis(50)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    refresher.abort();
    let samples = scrape(&metrics);
    let depth = |queue, state| {
        sum(
            &samples,
            "spool_queue_jobs",
            &[("queue", queue), ("state", state)],
        )
    };
    assert_eq!(depth("email", "succeeded"), 2.0);
    assert_eq!(depth("email", "dead"), 1.0);
    assert_eq!(depth("email", "ready"), 0.0);
    assert_eq!(depth("hang", "dead"), 1.0);
    assert_eq!(depth("long", "cancelled"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_carries_exactly_the_committed_events_and_tenants_label_when_asked() {
    let s = Setup::new(CONFIG);
    let backend = SqliteBackend::open(&s.db(), SqliteOptions::default()).unwrap();
    // The caller's metrics, with the tenant label on: the worker keeps them.
    let mine = Arc::new(Metrics::with_config(&MetricsConfig {
        tenant_label: true,
        ..MetricsConfig::default()
    }));
    backend.set_sink(backend.sink().with_metrics(mine.clone()));
    let mut live = backend.sink().subscribe();
    let (metrics, worker) = start(&s, &backend).await;
    assert!(Arc::ptr_eq(&metrics, &mine));

    let acme = enqueue(
        &backend,
        "email",
        r#"{"to":"ada@example.com"}"#,
        Some("acme"),
    )
    .await;
    let plain = enqueue(&backend, "email", r#"{"to":"ada@example.com"}"#, None).await;
    wait_for(&backend, &acme, finished).await;
    wait_for(&backend, &plain, finished).await;
    worker.stop().await;

    let stored = backend.events(&EventFilter::default()).await.unwrap();
    let mut heard: Vec<Event> = Vec::new();
    while let Ok(event) = live.try_recv() {
        heard.push(event);
    }
    assert_eq!(heard, stored, "the live stream differs from the store");

    let samples = scrape(&metrics);
    let succeeded = |tenant| {
        sum(
            &samples,
            "spool_jobs_succeeded_total",
            &[("queue", "email"), ("tenant", tenant)],
        )
    };
    assert_eq!(succeeded("acme"), 1.0);
    assert_eq!(succeeded(""), 1.0);
    let by_tenant: HashMap<&str, f64> = samples
        .iter()
        .filter(|s| s.metric == "spool_jobs_enqueued_total")
        .map(|s| (s.labels.get("tenant").unwrap(), value(s)))
        .collect();
    assert_eq!(by_tenant, HashMap::from([("acme", 1.0), ("", 1.0)]));
}
