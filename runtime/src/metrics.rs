//! Prometheus metrics: the families a worker and `spool serve` export at `/metrics`.
//!
//! One [`Metrics`] holds a [`Registry`] and the handles of every family registered in it;
//! [`Metrics::encode`] renders them in the OpenMetrics text format, which Prometheus scrapes.
//!
//! The families come from three places:
//! - **committed events**, through the backend's [`EventSink`](crate::events::EventSink):
//!   every `spool_jobs_*_total` counter, plugin loads, schedule fires and skips. They count
//!   exactly what the store committed, on the process that committed it (a worker counts the
//!   jobs it claims and settles; a producer the jobs it enqueues);
//! - **the worker's attempts**: attempt durations by outcome, enqueue-to-start latency, traps,
//!   timeouts and how long past the deadline their abort took, the sandbox's memory
//!   high-water mark, attempts running and slots free, plugin compiles and compile-cache hits;
//! - **the store**: jobs by queue and state, read by [`Metrics::refresh_queue_depth`] every
//!   few seconds (never on a scrape, so scrapes cost the store nothing).
//!
//! Labels are queues, states, outcomes, phases and trap kinds: their number never grows with
//! the number of jobs. Tenants are a label only when [`MetricsConfig::tenant_label`] is on.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::config::MetricsConfig;
use crate::events::{Event, EventKind};
use crate::outcome::{AttemptReport, Outcome, TrapKind};
use crate::queue::{Backend, QueueCounts};
use crate::sandbox::{CacheStatus, RunError};

/// A label set: a few names, each with its value.
type Labels = Vec<(&'static str, String)>;

type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// 1 ms to about 9 minutes, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// 1 ms to about 8 s, doubling: how long past its deadline an attempt took to stop.
fn overrun_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// 1 MiB to 8 GiB, doubling.
fn bytes_histogram() -> Histogram {
    Histogram::new(exponential_buckets(f64::from(1_u32 << 20), 2.0, 14))
}

/// How often a worker reads the queue depths from its store.
pub const DEPTH_REFRESH: Duration = Duration::from_secs(5);

/// The metric families of one process, registered under the `spool` prefix.
pub struct Metrics {
    registry: Registry,
    /// Off (`[metrics] enabled = false`): every observation returns at once.
    enabled: bool,
    tenant_label: bool,
    // From committed events.
    enqueued: Counters,
    duplicates: Counters,
    started: Counters,
    succeeded: Counters,
    failed: Counters,
    retried: Counters,
    dead_lettered: Counters,
    cancelled: Counters,
    lease_expired: Counters,
    delayed: Counters,
    released: Counters,
    replayed: Counters,
    plugin_events: Counters,
    schedule_fires: Counters,
    schedule_skips: Counters,
    // From the worker's attempts.
    attempt_duration: Histograms,
    start_latency: Histograms,
    traps: Counters,
    timeout_overrun: Histograms,
    memory_peak: Histograms,
    running: Gauges,
    slots_free: Gauges,
    compiles: Counters,
    cache_hits: Counters,
    // From the store.
    depth: Gauges,
    /// The queues the last depth refresh saw, so a queue that has gone is removed.
    depth_queues: Mutex<BTreeSet<String>>,
}

impl Metrics {
    /// A registry with every Spool family registered, without a tenant label.
    pub fn new() -> Self {
        Self::with_config(&MetricsConfig::default())
    }

    /// A registry with every Spool family registered, as `config` says (`[metrics]`).
    pub fn with_config(config: &MetricsConfig) -> Self {
        let mut registry = Registry::with_prefix("spool");
        let mut counter = |name: &str, help: &str| {
            let family = Counters::default();
            registry.register(name, help, family.clone());
            family
        };
        let enqueued = counter("jobs_enqueued", "Jobs enqueued");
        let duplicates = counter(
            "jobs_duplicate",
            "Enqueues that matched an unfinished job's idempotency key (no job made)",
        );
        let started = counter("jobs_started", "Attempts started (jobs claimed)");
        let succeeded = counter("jobs_succeeded", "Jobs succeeded");
        let failed = counter(
            "jobs_failed",
            "Attempts failed, by the phase they failed in (a retry or a dead letter follows)",
        );
        let retried = counter("jobs_retried", "Retries scheduled after a failed attempt");
        let dead_lettered = counter("jobs_dead_lettered", "Jobs moved to the dead-letter queue");
        let cancelled = counter("jobs_cancelled", "Jobs cancelled");
        let lease_expired = counter(
            "jobs_lease_expired",
            "Running attempts whose lease expired (their worker stopped renewing it)",
        );
        let delayed = counter(
            "jobs_delayed",
            "Jobs that asked to run again later without spending an attempt",
        );
        let released = counter(
            "jobs_released",
            "Jobs a stopping worker gave back before they finished",
        );
        let replayed = counter("jobs_replayed", "Dead jobs given fresh attempts");
        let plugin_events = counter(
            "plugin_loads",
            "Plugin loads by a worker, by result (loaded, reloaded, refused)",
        );
        let schedule_fires = counter("schedule_fires", "Jobs enqueued by a schedule's tick");
        let schedule_skips = counter(
            "schedule_skips",
            "Times a schedule skipped the ticks it missed",
        );
        let traps = counter(
            "attempt_traps",
            "Attempts ended by a trap, by kind (out-of-memory, stack-overflow, panic, ...)",
        );
        let compiles = counter(
            "plugin_compiles",
            "Plugins compiled at load (not found in the compile cache)",
        );
        let cache_hits = counter(
            "plugin_cache_hits",
            "Plugins loaded from the compile cache without compiling",
        );

        let mut histogram = |name: &str, help: &str, unit: Unit, make: fn() -> Histogram| {
            let family = Histograms::new_with_constructor(make);
            registry.register_with_unit(name, help, unit, family.clone());
            family
        };
        let attempt_duration = histogram(
            "attempt_duration",
            "How long attempts ran in the sandbox, by outcome",
            Unit::Seconds,
            seconds_histogram,
        );
        let start_latency = histogram(
            "enqueue_to_start",
            "From a job's enqueue to the start of its first attempt (including any delay it was enqueued with)",
            Unit::Seconds,
            seconds_histogram,
        );
        let timeout_overrun = histogram(
            "timeout_abort_latency",
            "Attempts aborted at their timeout: how long past the deadline the abort took",
            Unit::Seconds,
            overrun_histogram,
        );
        let memory_peak = histogram(
            "attempt_memory_peak",
            "The most linear memory an attempt's instance held",
            Unit::Bytes,
            bytes_histogram,
        );

        let mut gauge = |name: &str, help: &str| {
            let family = Gauges::default();
            registry.register(name, help, family.clone());
            family
        };
        let running = gauge(
            "worker_attempts_running",
            "Attempts running in a worker's sandbox",
        );
        let slots_free = gauge(
            "worker_slots_free",
            "A worker's attempt slots not in use (of its concurrency)",
        );
        let depth = gauge(
            "queue_jobs",
            "Jobs in the store by queue and state, read every few seconds",
        );

        Metrics {
            registry,
            enabled: config.enabled,
            tenant_label: config.tenant_label,
            enqueued,
            duplicates,
            started,
            succeeded,
            failed,
            retried,
            dead_lettered,
            cancelled,
            lease_expired,
            delayed,
            released,
            replayed,
            plugin_events,
            schedule_fires,
            schedule_skips,
            attempt_duration,
            start_latency,
            traps,
            timeout_overrun,
            memory_peak,
            running,
            slots_free,
            compiles,
            cache_hits,
            depth,
            depth_queues: Mutex::default(),
        }
    }

    /// The families in the OpenMetrics text format (`Content-Type:
    /// application/openmetrics-text; version=1.0.0; charset=utf-8`).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if !self.enabled {
            text.push_str("# EOF\n");
            return text;
        }
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The labels of a job's series: its queue, and its tenant when the tenant label is on
    /// (empty for a job without one, so every series of a family has the same labels).
    fn job_labels(&self, queue: Option<&str>, tenant: Option<&str>) -> Labels {
        let mut labels = vec![("queue", queue.unwrap_or_default().to_owned())];
        if self.tenant_label {
            labels.push(("tenant", tenant.unwrap_or_default().to_owned()));
        }
        labels
    }

    /// Count a committed event (called by the [`EventSink`](crate::events::EventSink)).
    pub fn observe_event(&self, event: &Event) {
        if !self.enabled {
            return;
        }
        let labels = || self.job_labels(event.queue.as_deref(), event.tenant.as_deref());
        let family = match event.kind {
            EventKind::Enqueued => &self.enqueued,
            EventKind::Duplicate => &self.duplicates,
            EventKind::Started => &self.started,
            EventKind::Succeeded => &self.succeeded,
            EventKind::Failed => {
                let mut labels = labels();
                let phase = event.phase.map(<&'static str>::from).unwrap_or_default();
                labels.push(("phase", phase.to_owned()));
                self.failed.get_or_create(&labels).inc();
                return;
            }
            EventKind::RetryScheduled => &self.retried,
            EventKind::DeadLettered => &self.dead_lettered,
            EventKind::Cancelled => &self.cancelled,
            EventKind::LeaseExpired => &self.lease_expired,
            EventKind::Delayed => &self.delayed,
            EventKind::Released => &self.released,
            EventKind::Replayed => &self.replayed,
            EventKind::PluginLoaded | EventKind::PluginReloaded | EventKind::PluginRefused => {
                let result = match event.kind {
                    EventKind::PluginLoaded => "loaded",
                    EventKind::PluginReloaded => "reloaded",
                    _ => "refused",
                };
                let labels = vec![
                    ("queue", event.queue.clone().unwrap_or_default()),
                    ("result", result.to_owned()),
                ];
                self.plugin_events.get_or_create(&labels).inc();
                return;
            }
            EventKind::ScheduleFired => &self.schedule_fires,
            EventKind::ScheduleSkipped => &self.schedule_skips,
            EventKind::Checkpointed
            | EventKind::StepCompleted
            | EventKind::Waiting
            | EventKind::ChildrenFinished => return,
        };
        family.get_or_create(&labels()).inc();
    }

    /// A worker's job started its first attempt `waited` after it was enqueued.
    pub fn job_started(&self, queue: &str, tenant: Option<&str>, waited: Duration) {
        if !self.enabled {
            return;
        }
        self.start_latency
            .get_or_create(&self.job_labels(Some(queue), tenant))
            .observe(waited.as_secs_f64());
    }

    /// An attempt of a job of `queue` ended with `outcome` after running for `elapsed`, its
    /// instance having held at most `memory_peak` bytes (`None`: the attempt never ran), under
    /// the queue's `timeout`.
    pub fn attempt_finished(
        &self,
        queue: &str,
        tenant: Option<&str>,
        outcome: &Outcome,
        elapsed: Duration,
        memory_peak: Option<u64>,
        timeout: Option<Duration>,
    ) {
        if !self.enabled {
            return;
        }
        let mut labels = self.job_labels(Some(queue), tenant);
        labels.push(("outcome", outcome.name().to_owned()));
        self.attempt_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let queue_only = || vec![("queue", queue.to_owned())];
        match outcome {
            Outcome::Trapped { kind, .. } => {
                let mut labels = queue_only();
                labels.push(("kind", kind.to_string()));
                self.traps.get_or_create(&labels).inc();
            }
            Outcome::TimedOut { elapsed } => {
                let past = timeout.map_or(Duration::ZERO, |t| elapsed.saturating_sub(t));
                self.timeout_overrun
                    .get_or_create(&queue_only())
                    .observe(past.as_secs_f64());
            }
            _ => {}
        }
        if let Some(peak) = memory_peak {
            // Exact below 2^53 bytes.
            self.memory_peak
                .get_or_create(&queue_only())
                .observe(peak as f64);
        }
    }

    /// A worker's attempt of a job of `queue`, started at `started` under the queue's
    /// `timeout`, ran (`Ok`) or could not be run by the host (`Err`, counted as a trap).
    pub fn attempt_ran(
        &self,
        queue: &str,
        tenant: Option<&str>,
        ran: &Result<AttemptReport, RunError>,
        started: Instant,
        timeout: Option<Duration>,
    ) {
        match ran {
            Ok(report) => self.attempt_finished(
                queue,
                tenant,
                &report.outcome,
                report.timings.elapsed,
                Some(report.memory_peak),
                timeout,
            ),
            Err(_) => {
                let trap = Outcome::Trapped {
                    kind: TrapKind::Other,
                    message: String::new(),
                };
                self.attempt_finished(queue, tenant, &trap, started.elapsed(), None, timeout);
            }
        }
    }

    /// A worker loaded a queue's plugin; `status` says whether it was compiled.
    pub fn plugin_loaded(&self, queue: &str, status: CacheStatus) {
        if !self.enabled {
            return;
        }
        let labels = vec![("queue", queue.to_owned())];
        match status {
            CacheStatus::Hit => self.cache_hits.get_or_create(&labels).inc(),
            CacheStatus::Off
            | CacheStatus::Stored
            | CacheStatus::Replaced
            | CacheStatus::Unwritable => self.compiles.get_or_create(&labels).inc(),
        };
    }

    /// A worker with `slots` attempt slots in all starts: all of them free.
    pub fn worker_started(&self, worker: &str, slots: u32) {
        if !self.enabled {
            return;
        }
        self.slots_free
            .get_or_create(&vec![("worker", worker.to_owned())])
            .set(i64::from(slots));
    }

    /// An attempt of `worker` on `queue` took a slot; it is counted as running until the
    /// returned guard is dropped.
    pub fn attempt_running(self: &Arc<Self>, worker: &str, queue: &str) -> Running {
        if !self.enabled {
            return Running {
                metrics: Arc::clone(self),
                running: Vec::new(),
                slots: Vec::new(),
            };
        }
        let running: Labels = vec![("worker", worker.to_owned()), ("queue", queue.to_owned())];
        let slots: Labels = vec![("worker", worker.to_owned())];
        self.running.get_or_create(&running).inc();
        self.slots_free.get_or_create(&slots).dec();
        Running {
            metrics: Arc::clone(self),
            running,
            slots,
        }
    }

    /// Set the queue-depth gauges to `counts` (every queue the store holds jobs of); a queue
    /// seen before and absent now is removed.
    pub fn set_queue_depth(&self, counts: &[QueueCounts]) {
        if !self.enabled {
            return;
        }
        let mut known = self
            .depth_queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now: BTreeSet<String> = counts.iter().map(|c| c.queue.clone()).collect();
        for gone in known.difference(&now) {
            for state in STATES {
                self.depth.remove(&vec![
                    ("queue", gone.clone()),
                    ("state", (*state).to_owned()),
                ]);
            }
        }
        for c in counts {
            let by_state = [
                c.scheduled,
                c.ready,
                c.running,
                c.waiting,
                c.succeeded,
                c.dead,
                c.cancelled,
            ];
            for (state, n) in STATES.iter().zip(by_state) {
                self.depth
                    .get_or_create(&vec![
                        ("queue", c.queue.clone()),
                        ("state", (*state).to_owned()),
                    ])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        *known = now;
    }

    /// Read the queue depths from `backend` every `every`, for ever (run it on a task of its
    /// own and abort the task to stop). Reading the depths walks every job the store keeps, so
    /// on a large store the pause grows to 20 times the last read's duration: the refresher
    /// never keeps the store busy more than a twentieth of the time. A failed read keeps the
    /// last values and is logged.
    pub async fn refresh_queue_depth<B: Backend>(self: Arc<Self>, backend: B, every: Duration) {
        if !self.enabled {
            return;
        }
        loop {
            let read = Instant::now();
            match backend.queues().await {
                Ok(counts) => self.set_queue_depth(&counts),
                Err(e) => tracing::warn!(error = %e, "cannot read the queue depths for metrics"),
            }
            tokio::time::sleep(every.max(read.elapsed() * 20)).await;
        }
    }
}

/// The states of the `spool_queue_jobs` gauge, in the order [`Metrics::set_queue_depth`]
/// reads them from a [`QueueCounts`].
const STATES: &[&str] = &[
    "scheduled",
    "ready",
    "running",
    "waiting",
    "succeeded",
    "dead",
    "cancelled",
];

/// An attempt counted as running (see [`Metrics::attempt_running`]) until dropped.
pub struct Running {
    metrics: Arc<Metrics>,
    running: Labels,
    slots: Labels,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.metrics.enabled {
            return;
        }
        self.metrics.running.get_or_create(&self.running).dec();
        self.metrics.slots_free.get_or_create(&self.slots).inc();
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("labels", &self.running)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .field("tenant_label", &self.tenant_label)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use crate::config::MetricsConfig;
    use crate::events::{Event, EventKind};
    use crate::queue::{JobId, Phase, QueueCounts};

    fn event(kind: EventKind, tenant: Option<&str>) -> Event {
        Event {
            seq: 1,
            at: 0,
            kind,
            job_id: Some(JobId("42".to_owned())),
            queue: Some("email".to_owned()),
            tenant: tenant.map(str::to_owned),
            attempt: Some(1),
            phase: Some(Phase::Timeout),
            message: Some("timed out after 300 ms".to_owned()),
            digest: None,
            worker: Some("worker-1".to_owned()),
            duration_ms: Some(300),
        }
    }

    #[test]
    fn tenants_are_a_label_only_when_switched_on() {
        let off = Metrics::new();
        let on = Metrics::with_config(&MetricsConfig {
            tenant_label: true,
            ..MetricsConfig::default()
        });
        for metrics in [&off, &on] {
            metrics.observe_event(&event(EventKind::Failed, Some("acme")));
            metrics.observe_event(&event(EventKind::Failed, None));
        }
        let off = off.encode();
        assert!(
            off.contains("spool_jobs_failed_total{queue=\"email\",phase=\"timeout\"} 2\n"),
            "{off}"
        );
        assert!(!off.contains("acme") && !off.contains("42"), "{off}");
        let on = on.encode();
        for tenant in ["acme", ""] {
            let line = format!(
                "spool_jobs_failed_total{{queue=\"email\",tenant=\"{tenant}\",phase=\"timeout\"}} 1\n"
            );
            assert!(on.contains(&line), "no {line} in {on}");
        }
    }

    #[test]
    fn queue_depth_follows_the_store_and_forgets_a_queue_that_has_gone() {
        let metrics = Metrics::new();
        let counts = |queue: &str, ready| QueueCounts {
            queue: queue.to_owned(),
            ready,
            ..QueueCounts::default()
        };
        metrics.set_queue_depth(&[counts("email", 3), counts("sms", 1)]);
        let text = metrics.encode();
        assert!(text.contains("spool_queue_jobs{queue=\"email\",state=\"ready\"} 3\n"));
        assert!(text.contains("spool_queue_jobs{queue=\"sms\",state=\"ready\"} 1\n"));
        metrics.set_queue_depth(&[counts("email", 0)]);
        let text = metrics.encode();
        assert!(text.contains("spool_queue_jobs{queue=\"email\",state=\"ready\"} 0\n"));
        assert!(!text.contains("sms"), "{text}");
    }
}
