//! The worker: claim → run → settle, with per-queue and global concurrency, lease renewal,
//! the lease sweeper, retention, plugin reloads and graceful shutdown.
//!
//! One [`Worker`] serves the queues of a [`Config`](crate::config::Config) from one
//! [`Backend`]. Its main loop runs in rounds: each commits the settles of the attempts that
//! ended since the last round (group commit) and claims as many ready jobs as the room they
//! and the free slots leave, in one call ([`Backend::settle_and_claim`]: one transaction on
//! SQLite). Each attempt runs in the [`Sandbox`] on a task of its own, which decides what
//! follows with the queue's [`RetryPolicy`](crate::retry::RetryPolicy) and hands the settle
//! back to the main loop. Beside it:
//! - the renewer extends every in-flight lease at a third of the lease time, and aborts an
//!   attempt whose lease was lost (its instance is destroyed);
//! - the cancel watcher asks the backend which in-flight jobs were cancelled
//!   ([`Backend::revoked`]: a cheap poll on SQLite, notices on NATS) and aborts their attempts
//!   at once, without waiting for the next renewal;
//! - the sweeper returns jobs whose lease expired (another worker died) and prunes finished
//!   jobs past their retention;
//! - the scheduler fires due schedules while this worker holds the leader lock (see
//!   [`scheduler`](crate::scheduler));
//! - the reloader notices a changed plugin file and swaps in the new component without a
//!   restart (a file that fails to load keeps the old one, with a `plugin-refused` event);
//! - the heartbeat keeps the worker's entry in the store's worker registry (`spool workers`)
//!   fresh, with the attempts it is running, every `[worker] heartbeat`; a graceful stop
//!   removes the entry.
//!
//! The worker counts what it does in its [`Metrics`] ([`Worker::metrics`]): the backend's
//! committed events reach them through the backend's [`EventSink`], which the worker gives
//! its metrics to unless the caller already did; the worker adds what only it sees (attempt
//! durations, traps, memory, slots) and refreshes the queue depths every few seconds.
//!
//! Shutdown stops claiming and scheduling (giving up the scheduler lock), lets running attempts
//! finish for the grace period, aborts the rest and releases their leases so nothing waits for
//! a lease to expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::config::{QueueConfig, Retention, WorkerSettings};
use crate::events::{EventKind, EventSink, NewEvent};
use crate::job::JobInput;
use crate::metrics::Metrics;
use crate::queue::{
    AttemptRecord, AttemptSave, Backend, Claimed, JobId, JobState, Lease, Next, QueueClaim,
    QueueError, Save, Settle, Timestamp, WORKER_TTL_BEATS, WorkerInfo, now,
};
use crate::sandbox::{Journal, JournalFuture, LoadError, LogHandle, Plugin, Sandbox};
use crate::trace::{AttemptTrace, Tracer};
use tracing::Instrument as _;

/// Why a worker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A queue's plugin could not be loaded at start.
    #[error("queue `{queue}`: plugin {path} refused: {error}")]
    Plugin {
        /// The queue.
        queue: String,
        /// The plugin file.
        path: String,
        /// Why (in the message, so not also the `source`).
        error: LoadError,
    },
    /// A queue's secret could not be read at start (the message names it, never a value).
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    /// The worker was asked to serve no queue, or a queue it has no configuration for.
    #[error("{0}")]
    Queues(String),
    /// The backend failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What a worker did, for its exit summary and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Attempts run.
    pub attempts: u64,
    /// Jobs succeeded.
    pub succeeded: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Delays scheduled.
    pub delayed: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Settles refused because the lease was gone.
    pub lease_lost: u64,
    /// Jobs released at shutdown.
    pub released: u64,
    /// Attempts aborted because their job was cancelled.
    pub cancelled: u64,
}

struct QueueSlot {
    name: String,
    config: QueueConfig,
    plugin: RwLock<Plugin>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
    permits: Arc<Semaphore>,
    /// Jobs claimed and not yet settled (running or waiting for a permit).
    outstanding: AtomicUsize,
    /// How long its attempts take, for the adaptive prefetch.
    pace: Pace,
}

/// A moving average of attempt durations (an exponentially weighted one, each new attempt
/// weighing an eighth), in nanoseconds; 0 until an attempt has been timed.
#[derive(Default)]
struct Pace(AtomicU64);

impl Pace {
    fn observe(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                Some(if mean == 0 {
                    took
                } else {
                    mean - mean / 8 + took / 8
                })
            });
    }

    fn mean(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

/// The most jobs the adaptive prefetch holds claimed for one queue beyond its free slots.
pub const MAX_PREFETCH: usize = 1000;

/// How many of the store's round-trips the adaptive prefetch covers.
const ROUND_TRIPS: u32 = 4;

/// How many jobs a queue's worker holds claimed beyond its free slots when `prefetch` is
/// `"auto"` (the default): as many as the queue's `concurrency` slots run, at the observed
/// mean `attempt` duration, in [`ROUND_TRIPS`] of the store's round-trips (`round_trip`, the
/// time a claim takes), so that the next jobs are at hand while the next claim is in flight.
/// None before an attempt has been timed, and none for attempts of a tenth of the `lease` or
/// longer: those would wait on a busy worker while an idle one could run them. Never more
/// than the slots run in a tenth of the lease, nor [`MAX_PREFETCH`].
///
/// A no-op job (50 µs) on SQLite (a 2 ms commit) with 10 slots gets the full 1000; a job of
/// 100 ms, 0 to 1; a job of 3 s or more with the default 30 s lease, 0.
pub fn adaptive_prefetch(
    concurrency: u32,
    attempt: Option<Duration>,
    round_trip: Duration,
    lease: Duration,
) -> usize {
    let Some(attempt) = attempt else {
        return 0;
    };
    let horizon = lease / 10;
    if attempt >= horizon {
        return 0;
    }
    let cover = (round_trip * ROUND_TRIPS).min(horizon).as_secs_f64();
    let jobs = f64::from(concurrency) * cover / attempt.as_secs_f64().max(1e-6);
    // A float to integer `as` saturates: a huge quotient is capped below.
    (jobs as usize).min(MAX_PREFETCH)
}

/// One queue's room for a claim: how many jobs it may hold claimed (its concurrency plus its
/// prefetch) and how many it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Room {
    cap: usize,
    held: usize,
}

/// How many jobs to claim from each queue (in the order of `rooms`): each up to its free room,
/// within the worker-wide `budget`, which is shared evenly between the queues with room,
/// starting from a different queue each `round` — a queue whose own room exceeds the budget
/// must not take it all round after round while the others starve.
fn claim_budget(rooms: &[Room], budget: usize, round: usize) -> Vec<usize> {
    let mut takes = vec![0; rooms.len()];
    let wanting: Vec<usize> = (0..rooms.len())
        .filter(|&i| rooms[i].cap > rooms[i].held)
        .collect();
    let share = budget.div_ceil(wanting.len().max(1));
    let mut budget = budget;
    for k in 0..wanting.len() {
        let i = wanting[(round + k) % wanting.len()];
        let take = (rooms[i].cap - rooms[i].held).min(share).min(budget);
        budget -= take;
        takes[i] = take;
    }
    takes
}

/// Counts a claimed job as outstanding until its attempt task ends.
struct Outstanding {
    slot: Arc<QueueSlot>,
    global: Arc<AtomicUsize>,
}

impl Outstanding {
    fn new(slot: Arc<QueueSlot>, global: Arc<AtomicUsize>) -> Self {
        slot.outstanding.fetch_add(1, Ordering::Relaxed);
        global.fetch_add(1, Ordering::Relaxed);
        Outstanding { slot, global }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.slot.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.global.fetch_sub(1, Ordering::Relaxed);
    }
}

impl QueueSlot {
    fn plugin(&self) -> Plugin {
        match self.plugin.read() {
            Ok(plugin) => plugin.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A worker serving some queues from one backend.
pub struct Worker<B: Backend + Clone> {
    backend: B,
    sandbox: Sandbox,
    id: String,
    settings: WorkerSettings,
    queues: Vec<Arc<QueueSlot>>,
    stats: Arc<Mutex<WorkerStats>>,
    /// Where attempt spans are exported, if anywhere.
    tracer: Option<Tracer>,
    metrics: Arc<Metrics>,
}

/// A live view of a running worker's [`WorkerStats`].
#[derive(Clone)]
pub struct StatsHandle(Arc<Mutex<WorkerStats>>);

impl StatsHandle {
    /// The counts so far.
    pub fn get(&self) -> WorkerStats {
        *lock(&self.0)
    }
}

type InFlight = Arc<Mutex<HashMap<JobId, (Lease, Option<AbortHandle>)>>>;

impl<B: Backend + Clone> Worker<B> {
    /// Load every queue's plugin (refusing to start if one cannot be loaded) and record a
    /// `plugin-loaded` event for each.
    pub async fn start(
        backend: B,
        sandbox: Sandbox,
        settings: WorkerSettings,
        queues: BTreeMap<String, QueueConfig>,
    ) -> Result<Self, WorkerError> {
        if queues.is_empty() {
            return Err(WorkerError::Queues(
                "no queues to serve: add a [queues.NAME] section to the config".to_owned(),
            ));
        }
        let id = format!("worker-{}-{:04x}", std::process::id(), fastrand::u16(..));
        // The backend's events count in the metrics its sink already has, or in new ones.
        let sink = backend.sink();
        let metrics = match sink.metrics() {
            Some(metrics) => metrics.clone(),
            None => {
                let metrics = Arc::new(Metrics::new());
                backend.set_sink(sink.with_metrics(metrics.clone()));
                metrics
            }
        };
        let mut slots = Vec::new();
        for (name, config) in queues {
            let plugin = sandbox
                .load_plugin_with(&config.plugin, config.limits(), config.grants(&name))
                .map_err(|error| WorkerError::Plugin {
                    queue: name.clone(),
                    path: config.plugin.display().to_string(),
                    error,
                })?
                .with_config(config.values(&name)?);
            metrics.plugin_loaded(&name, plugin.cache_status());
            let mut event = NewEvent::new(EventKind::PluginLoaded);
            event.queue = Some(name.clone());
            event.digest = Some(plugin.digest().as_str().to_owned());
            event.worker = Some(id.clone());
            event.message = Some(config.plugin.display().to_string());
            patiently("recording plugin-loaded", || backend.record(event.clone())).await?;
            slots.push(Arc::new(QueueSlot {
                stamp: Mutex::new(file_stamp(&config.plugin)),
                permits: Arc::new(Semaphore::new(config.concurrency as usize)),
                outstanding: AtomicUsize::new(0),
                pace: Pace::default(),
                plugin: RwLock::new(plugin),
                name,
                config,
            }));
        }
        Ok(Worker {
            backend,
            sandbox,
            id,
            settings,
            queues: slots,
            stats: Arc::default(),
            tracer: None,
            metrics,
        })
    }

    /// Export every attempt's span through `tracer` (see [`crate::trace`]).
    pub fn with_tracer(mut self, tracer: Tracer) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// Make the backend's schedules match the configuration's `schedules`: create or update
    /// each (see [`Backend::put_schedule`]: a schedule whose spec is unchanged keeps its next
    /// tick), and remove those an earlier config put there that this one no longer has. A
    /// schedule added otherwise (`spool schedule add`, `from_config` false) is left alone.
    /// Returns the names removed.
    pub async fn sync_schedules(
        &self,
        schedules: Vec<crate::schedule::Schedule>,
    ) -> Result<Vec<String>, WorkerError> {
        let names: std::collections::HashSet<String> =
            schedules.iter().map(|s| s.name.clone()).collect();
        for schedule in schedules {
            let next = schedule
                .spec
                .next_after(now())
                .map_err(|e| WorkerError::Queues(format!("schedule `{}`: {e}", schedule.name)))?;
            patiently("writing a schedule", || {
                self.backend.put_schedule(schedule.clone(), next)
            })
            .await?;
        }
        let mut removed = Vec::new();
        for state in patiently("reading the schedules", || self.backend.schedules()).await? {
            let name = state.schedule.name;
            if state.schedule.from_config
                && !names.contains(&name)
                && patiently("removing a schedule", || {
                    self.backend.remove_schedule(&name)
                })
                .await?
            {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// A handle that reads the worker's counts while it runs.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle(self.stats.clone())
    }

    /// The worker's metrics, for `/metrics` ([`Metrics::encode`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The sink the worker's backend publishes committed events through: subscribe to it for
    /// a live stream of them.
    pub fn events(&self) -> EventSink {
        self.backend.sink()
    }

    /// The worker's id, as recorded in leases and events.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// This round's claim: up to each queue's concurrency plus its prefetch, less what it
    /// holds claimed and not settled, within the worker-wide bound (`held` of it held).
    fn claims(&self, held: usize, round: usize, round_trip: Duration) -> Vec<QueueClaim> {
        let prefetch: Vec<usize> = self
            .queues
            .iter()
            .map(|q| match self.settings.prefetch {
                Some(n) => n as usize,
                None => adaptive_prefetch(
                    q.config.concurrency,
                    q.pace.mean(),
                    round_trip,
                    self.settings.lease,
                ),
            })
            .collect();
        let cap = self.settings.concurrency as usize + prefetch.iter().sum::<usize>();
        let rooms: Vec<Room> = self
            .queues
            .iter()
            .zip(&prefetch)
            .map(|(q, prefetch)| Room {
                cap: q.config.concurrency as usize + prefetch,
                held: q.outstanding.load(Ordering::Relaxed),
            })
            .collect();
        let takes = claim_budget(&rooms, cap.saturating_sub(held), round);
        self.queues
            .iter()
            .zip(takes)
            .filter(|(_, take)| *take > 0)
            .map(|(q, take)| QueueClaim {
                queue: q.name.clone(),
                limit: take,
                flow: q.config.flow(),
                max_attempts: Some(q.config.max_attempts),
            })
            .collect()
    }

    /// This worker as the worker registry lists it, as of now, running nothing.
    fn info(&self) -> WorkerInfo {
        let at = now();
        WorkerInfo {
            id: self.id.clone(),
            host: host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            queues: self.queues.iter().map(|q| q.name.clone()).collect(),
            concurrency: self.settings.concurrency,
            running: 0,
            started_at: at,
            last_heartbeat: at,
        }
    }

    /// A human-readable start-up summary: queues, plugins and digests, limits.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "worker {}: concurrency {}, prefetch {}, threads {}, lease {}, grace {}, retention: {}\n",
            self.id,
            self.settings.concurrency,
            match self.settings.prefetch {
                None => "auto".to_owned(),
                Some(n) => n.to_string(),
            },
            match self.settings.threads {
                0 => "one per CPU".to_owned(),
                n => n.to_string(),
            },
            humantime::format_duration(self.settings.lease),
            humantime::format_duration(self.settings.shutdown_grace),
            self.settings.retention,
        );
        for q in &self.queues {
            let plugin = q.plugin();
            let timeout = match plugin.limits().timeout {
                Some(t) => humantime::format_duration(t).to_string(),
                None => "none".to_owned(),
            };
            out.push_str(&format!(
                "  queue {:<12} plugin {} ({}, compile cache {}) timeout {timeout}, memory {} MiB, max attempts {}, concurrency {}\n",
                q.name,
                q.config.plugin.display(),
                plugin.digest().short(),
                plugin.cache_status(),
                q.config.memory >> 20,
                q.config.max_attempts,
                q.config.concurrency,
            ));
            if let Some(http) = &plugin.grants().http {
                let l = &http.limits;
                out.push_str(&format!(
                    "    grants {} (at most {} in flight, bodies {}/{} bytes)\n",
                    http.listed(),
                    l.max_concurrent,
                    l.max_request_bytes,
                    l.max_response_bytes,
                ));
            }
            let store = plugin.config();
            if !store.is_empty() {
                // Names only: a secret's value is never printed.
                let values = store.for_tenant(None);
                let names = |keys: Vec<&str>| {
                    if keys.is_empty() {
                        "none".to_owned()
                    } else {
                        keys.join(", ")
                    }
                };
                out.push_str(&format!(
                    "    wasi:config: config {}; secrets {}; tenant overlays {}\n",
                    names(values.config_keys().collect()),
                    names(values.secret_keys().collect()),
                    names(store.tenants().collect()),
                ));
            }
        }
        out
    }

    /// Serve until `shutdown` completes, then shut down gracefully.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerStats, WorkerError> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// As [`Worker::run`], cutting the shutdown's grace period short when `now` completes
    /// (an operator's second Ctrl-C): running attempts are aborted and their jobs released.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
        now: impl Future<Output = ()> + Send,
    ) -> Result<WorkerStats, WorkerError> {
        let stats = self.stats.clone();
        let inflight: InFlight = Arc::new(Mutex::new(HashMap::new()));
        let global = Arc::new(Semaphore::new(self.settings.concurrency as usize));
        let (settle_tx, mut settle_rx) = mpsc::unbounded_channel::<Settle>();
        let mut background = JoinSet::new();
        self.metrics
            .worker_started(&self.id, self.settings.concurrency);
        background.spawn(
            self.metrics
                .clone()
                .refresh_queue_depth(self.backend.clone(), crate::metrics::DEPTH_REFRESH),
        );
        background.spawn(renew_loop(
            self.backend.clone(),
            inflight.clone(),
            self.settings.lease,
            stats.clone(),
        ));
        background.spawn(cancel_loop(
            self.backend.clone(),
            inflight.clone(),
            stats.clone(),
        ));
        // Every job this worker claims gets its queue's max attempts stored with the claim, so
        // the sweeper judges each lapsed job by its own; the default is for a job claimed
        // without one (by an older Spool), never another queue's number.
        let default_max = QueueConfig::new("").max_attempts;
        background.spawn(sweep_loop(
            self.backend.clone(),
            self.settings.lease,
            self.settings.retention,
            default_max,
        ));
        // Stopped at shutdown between rounds, never aborted in the middle of a fire.
        let stop_scheduler = Arc::new(Notify::new());
        let scheduler = tokio::spawn(crate::scheduler::run(
            self.backend.clone(),
            self.id.clone(),
            self.settings.lease,
            stop_scheduler.clone(),
        ));
        background.spawn(reload_loop(
            self.backend.clone(),
            self.sandbox.clone(),
            self.queues.clone(),
            self.id.clone(),
            self.metrics.clone(),
        ));
        background.spawn(heartbeat_loop(
            self.backend.clone(),
            self.info(),
            self.settings.heartbeat,
            global.clone(),
        ));

        let names: Vec<String> = self.queues.iter().map(|q| q.name.clone()).collect();
        let mut attempts = JoinSet::new();
        let outstanding = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        // The time a round with a claim takes, averaged (each new one weighing a quarter), for
        // the adaptive prefetch.
        let mut round_trip = Duration::from_millis(1);
        // Settles received and not yet committed.
        let mut settles: Vec<Settle> = Vec::new();
        // Set when a claim came back empty: what wakes the next claim (new jobs, or the poll
        // interval). Kept across rounds that only settle, so a busy settler does not start a
        // new wait at every round.
        let mut idle: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> = None;
        tokio::pin!(shutdown);
        let mut round = 0_usize;
        loop {
            // Reap finished attempt tasks so the set does not grow.
            while attempts.try_join_next().is_some() {}
            while settles.len() < MAX_SETTLES {
                match settle_rx.try_recv() {
                    Ok(settle) => settles.push(settle),
                    Err(_) => break,
                }
            }
            round = round.wrapping_add(1);
            let claims = if idle.is_some() {
                Vec::new()
            } else {
                self.claims(outstanding.load(Ordering::Relaxed), round, round_trip)
            };
            if settles.is_empty() && claims.is_empty() {
                // Nothing to do: wait for an attempt to end, for jobs (after an empty claim),
                // or, with no free slot, for the poll interval (a cancelled attempt frees its
                // slot without a settle).
                let woke = {
                    let wait = async {
                        match idle.as_mut() {
                            Some(idle) => idle.await,
                            None => tokio::time::sleep(self.settings.poll_interval).await,
                        }
                    };
                    tokio::select! {
                        () = &mut shutdown => break,
                        _ = settle_rx.recv_many(&mut settles, MAX_SETTLES) => false,
                        () = wait => true,
                    }
                };
                if woke {
                    idle = None;
                }
                continue;
            }
            // One round: the settles and the claim, in one transaction where the store can.
            let batch = std::mem::take(&mut settles);
            let kinds = settle_kinds(&batch);
            let asked = Instant::now();
            let answer = self
                .backend
                .settle_and_claim(batch.clone(), &self.id, &claims, self.settings.lease)
                .await;
            if !claims.is_empty() {
                round_trip = round_trip * 3 / 4 + asked.elapsed() / 4;
            }
            match answer.settled {
                Ok(results) => {
                    settled(&self.backend, &batch, kinds, results, &inflight, &stats).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "settle failed; retrying in 1s");
                    settles = batch;
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            let claimed = match answer.claimed {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "claim failed; retrying");
                    Vec::new()
                }
            };
            if !claims.is_empty() && claimed.is_empty() {
                let names = &names;
                let mut wait = Box::pin(
                    self.backend
                        .wait_for_jobs(names, self.settings.poll_interval),
                );
                // Polled once now, so that it starts watching right after the empty claim: a
                // commit that lands before its first poll (after more rounds of settles)
                // would otherwise go unnoticed until the poll interval.
                if futures::FutureExt::now_or_never(wait.as_mut()).is_none() {
                    idle = Some(wait);
                }
            }
            let mut inflight = lock(&inflight);
            for job in claimed {
                let lease = job.lease.clone();
                let Some(slot) = self.queues.iter().find(|q| q.name == job.queue) else {
                    // Not a queue this worker asked for: cannot happen, but never strand it.
                    inflight.insert(lease.job_id.clone(), (lease, None));
                    continue;
                };
                let log = Arc::new(Mutex::new(None));
                let queue_permit = QueuePermit::line_up(&slot.permits);
                let handle = attempts.spawn(attempt(
                    Run {
                        sandbox: self.sandbox.clone(),
                        queue_permit,
                        slot: slot.clone(),
                        global: global.clone(),
                        stopping: stopping.clone(),
                        worker: self.id.clone(),
                        metrics: self.metrics.clone(),
                        settles: settle_tx.clone(),
                        journal: Arc::new(AttemptJournal {
                            backend: self.backend.clone(),
                            lease: lease.clone(),
                            attempt: job.attempt,
                            log: log.clone(),
                        }),
                        kept: KeepOnAbort::new(&self.backend, &lease, log),
                        tracer: self.tracer.clone(),
                    },
                    job,
                    Outstanding::new(slot.clone(), outstanding.clone()),
                ));
                inflight.insert(lease.job_id.clone(), (lease, Some(handle)));
            }
        }
        drop(idle);
        // Attempts still running settle through the settler from here on.
        let settler = tokio::spawn(settle_loop(
            self.backend.clone(),
            settles,
            settle_rx,
            inflight.clone(),
            stats.clone(),
        ));
        // Claimed jobs still waiting for a slot do not start now; they are released below.
        stopping.store(true, Ordering::Relaxed);
        // Hand the schedules over to another worker now rather than after the grace period.
        stop_scheduler.notify_one();
        if let Err(e) = scheduler.await {
            tracing::error!(error = %e, "scheduler task failed");
        }

        // Shutdown: no more claims; let attempts finish for the grace period, then abort the
        // rest (destroying their instances) and give their jobs back.
        while attempts.try_join_next().is_some() {}
        tracing::info!(
            worker = %self.id,
            "stopping: waiting up to {} for {} attempts",
            humantime::format_duration(self.settings.shutdown_grace),
            attempts.len()
        );
        let drained = tokio::select! {
            drained = tokio::time::timeout(self.settings.shutdown_grace, async {
                while attempts.join_next().await.is_some() {}
            }) => drained.is_ok(),
            () = now => false,
        };
        if !drained {
            attempts.abort_all();
            while attempts.join_next().await.is_some() {}
        }
        drop(settle_tx);
        if let Err(e) = settler.await {
            tracing::error!(error = %e, "settler task failed");
        }
        background.abort_all();
        // Out of the worker registry at once, rather than when its entry's TTL passes.
        if let Err(e) = self.backend.remove_worker(&self.id).await {
            tracing::warn!(worker = %self.id, error = %e, "cannot remove the worker from the registry");
        }
        let leftover: Vec<Lease> = lock(&inflight)
            .drain()
            .map(|(_, (lease, _))| lease)
            .collect();
        if !leftover.is_empty() {
            let released = self.backend.release(&leftover).await?;
            lock(&stats).released += released;
        }
        let stats = *lock(&stats);
        Ok(stats)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What an attempt task needs besides its job.
struct Run {
    sandbox: Sandbox,
    queue_permit: QueuePermit,
    slot: Arc<QueueSlot>,
    global: Arc<Semaphore>,
    stopping: Arc<AtomicBool>,
    worker: String,
    metrics: Arc<Metrics>,
    settles: mpsc::UnboundedSender<Settle>,
    journal: Arc<dyn Journal>,
    kept: KeepOnAbort,
    tracer: Option<Tracer>,
}

/// A claimed job's place in its queue's line for a slot, taken by the claim loop in claim
/// order (priority, then age): the semaphore serves its waiters first come, first served, and a
/// waiter is in line from its first poll — which the attempt tasks, on several threads, would
/// each make at a moment of their own, starting held jobs out of order.
enum QueuePermit {
    /// A slot was free at once.
    Ready(tokio::sync::OwnedSemaphorePermit),
    /// In line.
    Waiting(std::pin::Pin<Box<dyn Future<Output = PermitResult> + Send>>),
}

type PermitResult = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>;

impl QueuePermit {
    fn line_up(permits: &Arc<Semaphore>) -> QueuePermit {
        let mut acquire = Box::pin(permits.clone().acquire_owned());
        // One poll puts it in line. Its waker is replaced by the attempt task's own when the
        // task polls it.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match acquire.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(permit)) => QueuePermit::Ready(permit),
            _ => QueuePermit::Waiting(acquire),
        }
    }

    async fn acquired(self) -> PermitResult {
        match self {
            QueuePermit::Ready(permit) => Ok(permit),
            QueuePermit::Waiting(acquire) => acquire.await,
        }
    }
}

/// What an attempt did, recorded if its task is dropped before it settles: a cancel's abort
/// (the cancel recorded the attempt without knowing the plugin or its logs). Any other drop
/// (a lost lease, the end of the shutdown grace) finds no cancelled job and changes nothing.
struct KeepOnAbort {
    log: Arc<Mutex<Option<LogHandle>>>,
    /// Set once the attempt runs; taken by a settle.
    record: Option<AttemptRecord>,
    keep: Option<Box<dyn FnOnce(AttemptRecord) + Send>>,
}

impl KeepOnAbort {
    fn new<B: Backend + Clone>(
        backend: &B,
        lease: &Lease,
        log: Arc<Mutex<Option<LogHandle>>>,
    ) -> Self {
        let (backend, lease) = (backend.clone(), lease.clone());
        let keep = move |record: AttemptRecord| {
            // Dropped on a runtime thread; a runtime already gone has nobody left to tell.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = backend.keep_cancelled(&lease, record).await {
                        tracing::warn!(job = %lease.job_id, error = %e, "cannot keep a cancelled attempt's logs");
                    }
                });
            }
        };
        KeepOnAbort {
            log,
            record: None,
            keep: Some(Box::new(keep)),
        }
    }
}

impl Drop for KeepOnAbort {
    fn drop(&mut self) {
        if let (Some(mut record), Some(keep)) = (self.record.take(), self.keep.take()) {
            record.finished_at = now();
            record.logs = lock(&self.log)
                .as_ref()
                .map(LogHandle::lines)
                .unwrap_or_default();
            keep(record);
        }
    }
}

/// An attempt's durable writes, through the worker's backend under the attempt's lease.
struct AttemptJournal<B> {
    backend: B,
    lease: Lease,
    attempt: u32,
    /// The running attempt's log, for [`KeepOnAbort`].
    log: Arc<Mutex<Option<LogHandle>>>,
}

impl<B: Backend> Journal for AttemptJournal<B> {
    fn save(&self, save: Save, not_after: Option<Timestamp>) -> JournalFuture<'_, ()> {
        let save = AttemptSave {
            lease: self.lease.clone(),
            attempt: self.attempt,
            not_after,
            save,
        };
        Box::pin(async move {
            match self.backend.save(save).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(lost)) => Err(lost.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn attempt_started(&self, log: LogHandle) {
        *lock(&self.log) = Some(log);
    }

    fn max_payload(&self) -> usize {
        self.backend.max_payload()
    }

    fn child_id(&self, index: u32) -> JournalFuture<'_, String> {
        Box::pin(async move {
            self.backend
                .child_id(&self.lease, index)
                .await
                .map(|id| id.0)
                .map_err(|e| e.to_string())
        })
    }
}

/// Wait for a slot, run one attempt and send its settle.
async fn attempt(run: Run, job: Claimed, outstanding: Outstanding) {
    let Run {
        sandbox,
        queue_permit,
        slot,
        global,
        stopping,
        worker,
        metrics,
        settles,
        journal,
        mut kept,
        tracer,
    } = run;
    // Queue permit first, then the worker-wide one: every task takes them in that order.
    let (Ok(_queue_permit), Ok(_global_permit)) =
        (queue_permit.acquired().await, global.acquire_owned().await)
    else {
        return;
    };
    if stopping.load(Ordering::Relaxed) {
        return;
    }
    let _running = metrics.attempt_running(&worker, &slot.name);
    let plugin = slot.plugin();
    let policy = slot.config.retry_policy(job.max_attempts);
    let input = JobInput {
        id: job.lease.job_id.0.clone(),
        queue: job.queue.clone(),
        payload: job.payload,
        attempt: job.attempt,
        max_attempts: policy.max_attempts,
        checkpoint: job.checkpoint,
        tenant: job.tenant.clone(),
        metadata: job.metadata,
        parent: job.parent.map(|p| p.0),
        steps: job.steps.into_iter().map(|s| (s.name, s.output)).collect(),
        children: job.children,
    };
    let trace = AttemptTrace::start(
        job.traceparent,
        &job.queue,
        &job.lease.job_id.0,
        job.attempt,
    );
    let started_at = now();
    let started = Instant::now();
    if job.started == 1 {
        let waited = u64::try_from(started_at - job.enqueued_at).unwrap_or(0);
        metrics.job_started(
            &job.queue,
            job.tenant.as_deref(),
            Duration::from_millis(waited),
        );
    }
    kept.record = Some(AttemptRecord {
        attempt: job.attempt,
        worker: worker.clone(),
        started_at,
        finished_at: started_at,
        outcome: crate::queue::cancel::CANCELLED.to_owned(),
        phase: None,
        error: None,
        digest: Some(plugin.digest().as_str().to_owned()),
        logs: Vec::new(),
        http: Default::default(),
    });
    let ran = sandbox
        .run_with(&plugin, &input, Some(journal))
        .instrument(trace.span().clone())
        .await;
    slot.pace.observe(started.elapsed());
    let timeout = plugin.limits().timeout;
    metrics.attempt_ran(&job.queue, job.tenant.as_deref(), &ran, started, timeout);
    let (outcome, logs, checkpoint, mut children, digest, progress, http) = match ran {
        Ok(report) => (
            report.outcome,
            report.logs,
            report.checkpoint,
            report.children,
            Some(report.digest.as_str().to_owned()),
            report.progress,
            report.http,
        ),
        Err(e) => (
            crate::Outcome::Trapped {
                kind: crate::TrapKind::Other,
                message: format!("the host could not run the attempt: {e}"),
            },
            Vec::new(),
            None,
            Vec::new(),
            Some(plugin.digest().as_str().to_owned()),
            None,
            crate::HttpUsage::default(),
        ),
    };
    // The attempt ended on its own: its settle records it.
    kept.record = None;
    let finished_at = started_at + i64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    let (next, phase) = policy.decide(&outcome, job.attempt, job.started, finished_at);
    let traceparent = trace.traceparent();
    trace.finish(tracer.as_ref(), &outcome, digest.as_deref(), &logs);
    // Children are kept only when the attempt ends well; they inherit the job's tenant, and
    // their trace context is the attempt's span.
    if !matches!(
        next,
        Next::Succeeded { .. } | Next::Delay { .. } | Next::Wait
    ) {
        children.clear();
    }
    for child in &mut children {
        child.job.tenant = child.job.tenant.take().or_else(|| job.tenant.clone());
        child.job.traceparent = Some(traceparent);
    }
    let settle = Settle {
        lease: job.lease,
        next,
        checkpoint,
        children,
        progress,
        attempt: AttemptRecord {
            attempt: job.attempt,
            worker,
            started_at,
            finished_at,
            outcome: outcome.name().to_owned(),
            phase,
            error: outcome.error(),
            digest,
            logs,
            http,
        },
    };
    // The room is free for the claim that commits with this settle.
    drop(outstanding);
    // The settler outlives every attempt task; a send only fails once it is gone at shutdown.
    let _ = settles.send(settle);
}

/// The most settles one round commits.
const MAX_SETTLES: usize = 1024;

/// What each settle of a batch does, for counting once it is committed (a success's output
/// left out).
fn settle_kinds(settles: &[Settle]) -> Vec<(JobId, Next)> {
    settles
        .iter()
        .map(|s| {
            let next = match &s.next {
                Next::Succeeded { .. } => Next::Succeeded { output: Vec::new() },
                other => other.clone(),
            };
            (s.lease.job_id.clone(), next)
        })
        .collect()
}

/// Count a committed batch of settles, and take their jobs out of the in-flight table.
async fn settled<B: Backend>(
    backend: &B,
    settles: &[Settle],
    kinds: Vec<(JobId, Next)>,
    results: Vec<Result<(), crate::queue::LeaseLost>>,
    inflight: &InFlight,
    stats: &Mutex<WorkerStats>,
) {
    // A refused settle whose job was cancelled while the attempt ran (the attempt ended
    // on its own before the cancel watcher aborted it, its saves refused) is a cancel:
    // its record, made by the cancel, gets the digest and logs the settle carried.
    let mut cancelled = Vec::new();
    for (settle, result) in settles.iter().zip(&results) {
        if result.is_err() {
            let kept = backend
                .keep_cancelled(&settle.lease, settle.attempt.clone())
                .await
                .unwrap_or(false);
            cancelled.push(kept);
        }
    }
    let mut cancelled = cancelled.into_iter();
    let mut stats = lock(stats);
    let mut inflight = lock(inflight);
    for ((job_id, kind), result) in kinds.into_iter().zip(results) {
        // Gone already when the cancel watcher aborted the attempt (and counted it).
        let watched = inflight.remove(&job_id).is_some();
        match result {
            Ok(()) => {
                stats.attempts += 1;
                match kind {
                    Next::Succeeded { .. } => stats.succeeded += 1,
                    Next::Retry { .. } => stats.retried += 1,
                    Next::Delay { .. } | Next::Wait => stats.delayed += 1,
                    Next::Dead => stats.dead += 1,
                }
            }
            Err(_) if cancelled.next() == Some(true) => {
                if watched {
                    stats.cancelled += 1;
                    tracing::warn!(job = %job_id, "job cancelled while its attempt ran");
                }
            }
            Err(lost) => {
                stats.attempts += 1;
                stats.lease_lost += 1;
                tracing::warn!(job = %job_id, error = %lost, "settle refused");
            }
        }
    }
}

/// After the main loop stops claiming: commit the settles of the attempts still running, in
/// batches (whatever has accumulated while the last commit ran), starting with `pending`.
async fn settle_loop<B: Backend>(
    backend: B,
    pending: Vec<Settle>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
    inflight: InFlight,
    stats: Arc<Mutex<WorkerStats>>,
) {
    let mut batch = pending;
    while !batch.is_empty() || rx.recv_many(&mut batch, MAX_SETTLES).await > 0 {
        let settles = std::mem::take(&mut batch);
        let kinds = settle_kinds(&settles);
        let results = loop {
            match backend.settle(settles.clone()).await {
                Ok(results) => break results,
                Err(e) => {
                    tracing::error!(error = %e, "settle failed; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        settled(&backend, &settles, kinds, results, &inflight, &stats).await;
    }
}

/// Renew every in-flight lease at a third of the lease time; abort attempts whose lease is
/// gone. A lease revoked by a cancel that the renewal learns of before the cancel watcher
/// does counts as a cancel, as the watcher would have counted it.
async fn renew_loop<B: Backend>(
    backend: B,
    inflight: InFlight,
    lease: Duration,
    stats: Arc<Mutex<WorkerStats>>,
) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leases: Vec<Lease> = lock(&inflight).values().map(|(l, _)| l.clone()).collect();
        if leases.is_empty() {
            continue;
        }
        match backend.renew(&leases, lease).await {
            Ok(kept) => {
                let mut lost = Vec::new();
                {
                    let mut inflight = lock(&inflight);
                    for (lease, kept) in leases.iter().zip(kept) {
                        let ended = match inflight.get(&lease.job_id) {
                            Some((_, Some(handle))) => handle.is_finished(),
                            Some((_, None)) => false,
                            None => continue,
                        };
                        // An attempt that has ended is being settled, fenced by the same
                        // lease: most often the settle itself just released the lease, and
                        // if not, the refused settle says so. Nothing to abort or warn of.
                        if kept || ended {
                            continue;
                        }
                        if let Some((_, handle)) = inflight.remove(&lease.job_id) {
                            if let Some(handle) = handle {
                                handle.abort();
                            }
                            lost.push(lease.job_id.clone());
                        }
                    }
                }
                for id in lost {
                    let cancelled = matches!(
                        backend.job(&id).await,
                        Ok(Some(job)) if job.summary.state == JobState::Cancelled
                    );
                    if cancelled {
                        tracing::warn!(job = %id, "job cancelled: aborting the attempt");
                        lock(&stats).cancelled += 1;
                    } else {
                        tracing::warn!(job = %id, "lease lost: aborting the attempt");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "lease renewal failed"),
        }
    }
}

/// How long a starting worker waits for a store that fails its calls (slow, or restarting)
/// before it gives up.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// Run a store call of a starting worker, calling it again while the store fails (a store
/// restarting, or too slow to answer in time) for up to [`STARTUP_PATIENCE`], logging each
/// failure; `what` names the call. Only [`QueueError::Store`] is tried again: a refusal
/// (bad request, not found, too large) is final.
async fn patiently<T, F, Fut>(what: &str, mut call: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(QueueError::Store(e)) if start.elapsed() + pause < STARTUP_PATIENCE => {
                tracing::warn!(error = %e, "{what} failed; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// How long one [`Backend::revoked`] call waits: how late, at most, a cancelled attempt is
/// aborted (plus the call itself) when the backend polls.
const CANCEL_WATCH: Duration = Duration::from_millis(200);

/// Abort the attempts whose job was cancelled, as soon as the backend tells: the instance is
/// destroyed with the task, and no settle is sent (the cancel recorded the attempt).
async fn cancel_loop<B: Backend>(backend: B, inflight: InFlight, stats: Arc<Mutex<WorkerStats>>) {
    loop {
        let leases: Vec<Lease> = lock(&inflight).values().map(|(l, _)| l.clone()).collect();
        match backend.revoked(&leases, CANCEL_WATCH).await {
            Ok(revoked) => {
                let mut inflight = lock(&inflight);
                for id in revoked {
                    let asked = leases.iter().find(|l| l.job_id == id).map(|l| l.token);
                    // Only the attempt asked about: not a later claim of the same job.
                    if inflight.get(&id).map(|(l, _)| l.token) != asked {
                        continue;
                    }
                    if let Some((lease, handle)) = inflight.remove(&id) {
                        tracing::warn!(
                            job = %id,
                            token = lease.token,
                            "job cancelled: aborting the attempt"
                        );
                        if let Some(handle) = handle {
                            handle.abort();
                        }
                        lock(&stats).cancelled += 1;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot learn of cancelled jobs");
                tokio::time::sleep(CANCEL_WATCH).await;
            }
        }
    }
}

/// Return jobs whose lease expired, and prune finished jobs past retention.
async fn sweep_loop<B: Backend>(backend: B, lease: Duration, retention: Retention, max: u32) {
    let every = (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now();
    loop {
        tick.tick().await;
        if let Err(e) = backend.expire_leases(max).await {
            tracing::error!(error = %e, "lease sweep failed");
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            last_prune = Instant::now();
            match backend.prune(retention.prune(now())).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned finished jobs past retention"),
                Err(e) => tracing::error!(error = %e, "prune failed"),
            }
        }
    }
}

/// Keep this worker's entry in the worker registry: a heartbeat at once (registering it),
/// then one every `every`, each with the attempts running then (the worker-wide permits
/// taken) and live for [`WORKER_TTL_BEATS`] intervals. A failed heartbeat is logged; the next
/// tick tries again.
async fn heartbeat_loop<B: Backend>(
    backend: B,
    mut info: WorkerInfo,
    every: Duration,
    global: Arc<Semaphore>,
) {
    let ttl = every * WORKER_TTL_BEATS;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let free = u32::try_from(global.available_permits()).unwrap_or(u32::MAX);
        info.running = info.concurrency.saturating_sub(free);
        info.last_heartbeat = now();
        if let Err(e) = backend.heartbeat(&info, ttl).await {
            tracing::warn!(worker = %info.id, error = %e, "heartbeat failed");
        }
    }
}

/// This machine's host name, as the worker registry shows it.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reload a queue's plugin when its file changes.
async fn reload_loop<B: Backend>(
    backend: B,
    sandbox: Sandbox,
    queues: Vec<Arc<QueueSlot>>,
    worker: String,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for q in &queues {
            let stamp = file_stamp(&q.config.plugin);
            if stamp.is_none() || *lock(&q.stamp) == stamp {
                continue;
            }
            *lock(&q.stamp) = stamp;
            let mut event = NewEvent::new(EventKind::PluginReloaded);
            event.queue = Some(q.name.clone());
            event.worker = Some(worker.clone());
            // Compiling takes a while: never on an async thread, where it would hold up the
            // attempts sharing it.
            let loaded = {
                let (sandbox, path) = (sandbox.clone(), q.config.plugin.clone());
                let (limits, grants) = (q.config.limits(), q.config.grants(&q.name));
                tokio::task::spawn_blocking(move || sandbox.load_plugin_with(&path, limits, grants))
                    .await
            };
            let Ok(loaded) = loaded else {
                tracing::error!(queue = %q.name, "the plugin reload panicked");
                continue;
            };
            match loaded {
                Ok(plugin) if plugin.digest() == q.plugin().digest() => {
                    metrics.plugin_loaded(&q.name, plugin.cache_status());
                    continue;
                }
                Ok(plugin) => {
                    metrics.plugin_loaded(&q.name, plugin.cache_status());
                    // Secrets are read once, at start: the new plugin gets the same values.
                    let plugin = plugin.with_config(q.plugin().config().clone());
                    event.digest = Some(plugin.digest().as_str().to_owned());
                    event.message = Some(format!("reloaded {}", q.config.plugin.display()));
                    match q.plugin.write() {
                        Ok(mut current) => *current = plugin,
                        Err(poisoned) => *poisoned.into_inner() = plugin,
                    }
                }
                Err(e) => {
                    event.kind = EventKind::PluginRefused;
                    event.message = Some(format!(
                        "{} refused, keeping the loaded plugin: {e}",
                        q.config.plugin.display()
                    ));
                }
            }
            if let Err(e) = backend.record(event).await {
                tracing::error!(error = %e, "cannot record a plugin event");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_PREFETCH, Pace, Room, adaptive_prefetch, claim_budget};

    const LEASE: Duration = Duration::from_secs(30);
    const COMMIT: Duration = Duration::from_millis(2);

    fn room(cap: usize, held: usize) -> Room {
        Room { cap, held }
    }

    #[test]
    fn one_queue_claims_its_free_room_within_the_budget() {
        assert_eq!(claim_budget(&[room(10, 3)], 100, 0), vec![7]);
        assert_eq!(claim_budget(&[room(10, 3)], 4, 0), vec![4]);
        assert_eq!(claim_budget(&[room(10, 10)], 100, 0), vec![0]);
        assert_eq!(claim_budget(&[room(10, 0)], 0, 0), vec![0]);
    }

    #[test]
    fn the_budget_is_shared_evenly_between_queues_with_room() {
        assert_eq!(
            claim_budget(&[room(100, 0), room(100, 0)], 10, 0),
            vec![5, 5]
        );
        // A full queue takes no share: the others get it all.
        assert_eq!(
            claim_budget(&[room(100, 0), room(5, 5), room(100, 0)], 10, 0),
            vec![5, 0, 5]
        );
        // A queue with less room than its share leaves the rest unclaimed this round.
        assert_eq!(claim_budget(&[room(2, 0), room(100, 0)], 10, 0), vec![2, 5]);
    }

    #[test]
    fn an_odd_budget_goes_to_a_different_queue_each_round() {
        let first: Vec<Vec<usize>> = (0..3)
            .map(|round| claim_budget(&[room(100, 0), room(100, 0), room(100, 0)], 4, round))
            .collect();
        // Shares of 2, 2 and 0: the queue left out moves with the round.
        for takes in &first {
            assert_eq!(takes.iter().sum::<usize>(), 4);
        }
        let left_out: Vec<usize> = first
            .iter()
            .map(|takes| takes.iter().position(|&t| t == 0).unwrap())
            .collect();
        assert_eq!(left_out.len(), 3);
        assert_ne!(left_out[0], left_out[1]);
        assert_ne!(left_out[1], left_out[2]);
    }

    #[test]
    fn nothing_is_held_before_an_attempt_was_timed() {
        assert_eq!(adaptive_prefetch(10, None, COMMIT, LEASE), 0);
    }

    #[test]
    fn short_jobs_are_held_in_proportion_to_how_short_they_are() {
        let us = Duration::from_micros;
        // One slot, 100 µs jobs, four 2 ms round-trips: 80 jobs.
        assert_eq!(adaptive_prefetch(1, Some(us(100)), COMMIT, LEASE), 80);
        // Half as long, twice as many; ten slots, ten times as many, up to the cap.
        assert_eq!(adaptive_prefetch(1, Some(us(50)), COMMIT, LEASE), 160);
        assert_eq!(
            adaptive_prefetch(10, Some(us(50)), COMMIT, LEASE),
            MAX_PREFETCH
        );
        assert_eq!(
            adaptive_prefetch(10, Some(Duration::from_nanos(1)), COMMIT, LEASE),
            MAX_PREFETCH
        );
    }

    #[test]
    fn long_jobs_are_never_held() {
        let ms = Duration::from_millis;
        assert_eq!(adaptive_prefetch(10, Some(ms(100)), COMMIT, LEASE), 0);
        assert_eq!(adaptive_prefetch(100, Some(ms(3000)), COMMIT, LEASE), 0);
        // However slow the store: beyond a tenth of the lease nothing is held.
        assert_eq!(
            adaptive_prefetch(100, Some(ms(3000)), Duration::from_secs(60), LEASE),
            0
        );
        // And what is held runs within a tenth of the lease at the observed pace.
        let held = adaptive_prefetch(10, Some(ms(100)), Duration::from_secs(60), LEASE);
        assert_eq!(held, 10 * 3000 / 100);
    }

    #[test]
    fn the_pace_follows_the_attempts() {
        let pace = Pace::default();
        assert_eq!(pace.mean(), None);
        pace.observe(Duration::from_millis(8));
        assert_eq!(pace.mean(), Some(Duration::from_millis(8)));
        for _ in 0..100 {
            pace.observe(Duration::from_secs(2));
        }
        let mean = pace.mean().unwrap();
        assert!(mean > Duration::from_millis(1900), "{mean:?}");
    }
}
