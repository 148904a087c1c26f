//! Typed events: one for every transition of a job, recorded by the backend in the same
//! transaction as the transition (the job's timeline), and published through the backend's
//! [`EventSink`] once committed.
//!
//! The sink is the one way out for committed events: it fans each one out to `tracing`
//! ([`emit`]), to the process's [`Metrics`] when it has them, and to an in-process broadcast
//! that live views (the HTTP server's event stream, the dashboard) [`subscribe`](EventSink::subscribe)
//! to. A backend emits exactly what its store committed, nothing before the commit, so every
//! view shows the same events in the same order.
//!
//! Levels: `failed` is an error; `dead-lettered`, `retry-scheduled`, `lease-expired` and
//! `schedule-skipped` are warnings; `started`, `succeeded`, `checkpointed` and
//! `step-completed` are debug; the rest info.
//!
//! ```
//! use std::sync::Arc;
//!
//! use spool::events::{Event, EventKind, EventSink};
//! use spool::metrics::Metrics;
//!
//! let metrics = Arc::new(Metrics::new());
//! let sink = EventSink::new().with_metrics(metrics.clone());
//! let mut live = sink.subscribe();
//! # let event = Event { seq: 1, at: 0, kind: EventKind::Enqueued, job_id: None, queue: Some("email".into()),
//! #     tenant: None, attempt: None, phase: None, message: None, digest: None, worker: None, duration_ms: None };
//! sink.emit(&event);
//! assert_eq!(live.try_recv().map(|e| e.kind), Ok(EventKind::Enqueued));
//! assert!(metrics.encode().contains("spool_jobs_enqueued_total{queue=\"email\"} 1"));
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::queue::{JobId, Phase, Timestamp};

/// What happened.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum EventKind {
    /// A job was enqueued.
    Enqueued,
    /// An enqueue matched an unfinished job's idempotency key; no new job was made.
    Duplicate,
    /// A worker claimed the job and an attempt started.
    Started,
    /// The attempt succeeded.
    Succeeded,
    /// The attempt failed (the next event says whether it will be retried).
    Failed,
    /// Another attempt was scheduled after a failure.
    RetryScheduled,
    /// The job moved to the dead-letter queue.
    DeadLettered,
    /// The job asked to run again later, without spending an attempt.
    Delayed,
    /// The lease of a running attempt expired: its worker stopped renewing it.
    LeaseExpired,
    /// A worker shutting down gave the job back before it finished.
    Released,
    /// A dead job was given fresh attempts.
    Replayed,
    /// The job was cancelled.
    Cancelled,
    /// A running attempt stored a checkpoint.
    Checkpointed,
    /// A running attempt stored a completed step's result (the message names the step).
    StepCompleted,
    /// The job parked until its children are finished.
    Waiting,
    /// The last child of a waiting job finished: the job is ready again.
    ChildrenFinished,
    /// A worker loaded a plugin for a queue.
    PluginLoaded,
    /// A worker reloaded a queue's plugin because its file changed.
    PluginReloaded,
    /// A worker could not load a queue's plugin.
    PluginRefused,
    /// A schedule enqueued its job for a tick (the job is the event's; the message names the
    /// schedule and the tick).
    ScheduleFired,
    /// A schedule's missed ticks were skipped (the message says how many and the next tick).
    ScheduleSkipped,
}

impl EventKind {
    /// The `tracing` level the event is emitted at.
    pub fn level(self) -> tracing::Level {
        match self {
            EventKind::Failed | EventKind::PluginRefused => tracing::Level::ERROR,
            EventKind::DeadLettered
            | EventKind::RetryScheduled
            | EventKind::LeaseExpired
            | EventKind::ScheduleSkipped => tracing::Level::WARN,
            EventKind::Started
            | EventKind::Succeeded
            | EventKind::Checkpointed
            | EventKind::StepCompleted => tracing::Level::DEBUG,
            _ => tracing::Level::INFO,
        }
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The job, if the event is about one.
    pub job_id: Option<JobId>,
    /// The queue.
    pub queue: Option<String>,
    /// The job's tenant.
    pub tenant: Option<String>,
    /// The attempt number.
    pub attempt: Option<u32>,
    /// Where an attempt failed.
    pub phase: Option<Phase>,
    /// Details in words: the error, the digest loaded, the delay.
    pub message: Option<String>,
    /// The plugin digest involved.
    pub digest: Option<String>,
    /// The worker involved.
    pub worker: Option<String>,
    /// A duration in milliseconds (the attempt's run time, a delay, a backoff).
    pub duration_ms: Option<u64>,
}

impl NewEvent {
    /// An event of `kind` with no other field set.
    pub fn new(kind: EventKind) -> Self {
        NewEvent {
            kind,
            job_id: None,
            queue: None,
            tenant: None,
            attempt: None,
            phase: None,
            message: None,
            digest: None,
            worker: None,
            duration_ms: None,
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the backend's event log: strictly increasing.
    pub seq: i64,
    /// When it was recorded.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The job, if any.
    pub job_id: Option<JobId>,
    /// The queue.
    pub queue: Option<String>,
    /// The tenant.
    pub tenant: Option<String>,
    /// The attempt number.
    pub attempt: Option<u32>,
    /// Where an attempt failed.
    pub phase: Option<Phase>,
    /// Details in words.
    pub message: Option<String>,
    /// The plugin digest involved.
    pub digest: Option<String>,
    /// The worker involved.
    pub worker: Option<String>,
    /// A duration in milliseconds.
    pub duration_ms: Option<u64>,
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this job's.
    pub job: Option<JobId>,
    /// Only events with `seq` greater than this (for following).
    pub after: Option<i64>,
    /// At most this many; `None` = the backend's default of 1000.
    pub limit: Option<usize>,
    /// Only events of this queue.
    pub queue: Option<String>,
    /// Only events recorded at or after this time.
    pub since: Option<Timestamp>,
    /// The newest `limit` matching events (still in order of their sequence number) instead
    /// of the oldest.
    pub newest: bool,
}

impl EventFilter {
    /// Whether `event` meets the filter's conditions (all but `limit` and `newest`).
    pub fn matches(&self, event: &Event) -> bool {
        self.job
            .as_ref()
            .is_none_or(|job| event.job_id.as_ref() == Some(job))
            && self.after.is_none_or(|after| event.seq > after)
            && self
                .queue
                .as_ref()
                .is_none_or(|queue| event.queue.as_ref() == Some(queue))
            && self.since.is_none_or(|since| event.at >= since)
    }

    /// The events of `events` (in order of their sequence number) that match, at most
    /// `limit` (`None`: `default_limit`) of them: the oldest, or the newest when
    /// [`newest`](EventFilter::newest) is set, still in order.
    pub fn select(&self, events: Vec<Event>, default_limit: usize) -> Vec<Event> {
        let limit = self.limit.unwrap_or(default_limit);
        let mut matching: Vec<Event> = events.into_iter().filter(|e| self.matches(e)).collect();
        if self.newest {
            let cut = matching.len().saturating_sub(limit);
            matching.drain(..cut);
        } else {
            matching.truncate(limit);
        }
        matching
    }
}

/// How many events the live broadcast holds for a subscriber that has not read them yet; one
/// that falls further behind misses the oldest ([`broadcast::error::RecvError::Lagged`]).
pub const LIVE_CAPACITY: usize = 4096;

/// Where a backend publishes the events it committed: `tracing`, the metrics (when attached)
/// and a live broadcast. Cheap to clone: clones share the broadcast and the metrics.
///
/// A backend opens with [`EventSink::new`] (tracing and the broadcast, no metrics); a worker
/// attaches its [`Metrics`] with [`EventSink::with_metrics`] (see
/// [`Backend::set_sink`](crate::queue::Backend::set_sink)).
#[derive(Clone)]
pub struct EventSink {
    metrics: Option<Arc<Metrics>>,
    live: broadcast::Sender<Event>,
}

impl EventSink {
    /// A sink to `tracing` and a live broadcast of its own, without metrics.
    pub fn new() -> Self {
        EventSink {
            metrics: None,
            live: broadcast::Sender::new(LIVE_CAPACITY),
        }
    }

    /// This sink, counting its events in `metrics` too. The broadcast is the same one: its
    /// subscribers keep receiving.
    pub fn with_metrics(&self, metrics: Arc<Metrics>) -> Self {
        EventSink {
            metrics: Some(metrics),
            live: self.live.clone(),
        }
    }

    /// The metrics the sink counts events in, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Every event emitted from now on, in the order emitted. A receiver that falls more than
    /// [`LIVE_CAPACITY`] events behind is told how many it missed, and goes on from the
    /// oldest still held.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Publish a committed event: to `tracing` at its kind's level, to the metrics, and to
    /// every subscriber. Call it only once the store has committed the event.
    pub fn emit(&self, event: &Event) {
        emit(event);
        if let Some(metrics) = &self.metrics {
            metrics.observe_event(event);
        }
        // Cloning only when someone listens: with no subscriber the broadcast costs nothing.
        if self.live.receiver_count() > 0 {
            // A send fails only when the last receiver went away meanwhile.
            let _ = self.live.send(event.clone());
        }
    }
}

impl Default for EventSink {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("metrics", &self.metrics.is_some())
            .field("subscribers", &self.live.receiver_count())
            .finish()
    }
}

/// Emit a committed event through `tracing`, at its kind's level (one of the outlets of an
/// [`EventSink`]).
pub fn emit(event: &Event) {
    macro_rules! at_level {
        ($level:expr) => {
            tracing::event!(
                target: "spool::events",
                $level,
                event = %event.kind,
                job = event.job_id.as_ref().map(|id| id.0.as_str()),
                queue = event.queue.as_deref(),
                tenant = event.tenant.as_deref(),
                attempt = event.attempt,
                phase = event.phase.map(<&'static str>::from),
                digest = event.digest.as_deref(),
                worker = event.worker.as_deref(),
                duration_ms = event.duration_ms,
                "{}",
                event.message.as_deref().unwrap_or_default(),
            )
        };
    }
    match event.kind.level() {
        tracing::Level::ERROR => at_level!(tracing::Level::ERROR),
        tracing::Level::WARN => at_level!(tracing::Level::WARN),
        tracing::Level::INFO => at_level!(tracing::Level::INFO),
        tracing::Level::DEBUG => at_level!(tracing::Level::DEBUG),
        _ => at_level!(tracing::Level::TRACE),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::broadcast::error::TryRecvError;

    use super::{Event, EventKind, EventSink};
    use crate::metrics::Metrics;

    fn event(seq: i64, kind: EventKind) -> Event {
        Event {
            seq,
            at: 1_700_000_000_000,
            kind,
            job_id: Some(crate::queue::JobId(format!("{seq}"))),
            queue: Some("email".to_owned()),
            tenant: None,
            attempt: Some(1),
            phase: None,
            message: None,
            digest: None,
            worker: None,
            duration_ms: None,
        }
    }

    #[test]
    fn a_sink_fans_each_event_out_to_every_subscriber_and_its_metrics_in_order() {
        let metrics = Arc::new(Metrics::new());
        let sink = EventSink::new().with_metrics(metrics.clone());
        let (mut first, mut second) = (sink.subscribe(), sink.subscribe());
        let events = [
            event(1, EventKind::Enqueued),
            event(2, EventKind::Started),
            event(3, EventKind::Succeeded),
        ];
        for e in &events {
            sink.emit(e);
        }
        for rx in [&mut first, &mut second] {
            for e in &events {
                assert_eq!(rx.try_recv().as_ref(), Ok(e));
            }
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        }
        let text = metrics.encode();
        for family in ["enqueued", "started", "succeeded"] {
            let line = format!("spool_jobs_{family}_total{{queue=\"email\"}} 1\n");
            assert!(text.contains(&line), "no {line} in {text}");
        }
    }

    #[test]
    fn attaching_metrics_keeps_the_subscribers_of_the_sink() {
        let plain = EventSink::new();
        let mut live = plain.subscribe();
        let metrics = Arc::new(Metrics::new());
        let counted = plain.with_metrics(metrics.clone());
        assert!(plain.metrics().is_none());
        assert!(Arc::ptr_eq(counted.metrics().unwrap(), &metrics));
        counted.emit(&event(7, EventKind::Cancelled));
        assert_eq!(live.try_recv().map(|e| e.seq), Ok(7));
        // The plain sink counts nothing: only the one given the metrics does.
        plain.emit(&event(8, EventKind::Cancelled));
        assert_eq!(live.try_recv().map(|e| e.seq), Ok(8));
        assert!(
            metrics
                .encode()
                .contains("spool_jobs_cancelled_total{queue=\"email\"} 1\n")
        );
    }

    #[test]
    fn a_sink_without_subscribers_still_counts_and_a_late_subscriber_sees_only_what_follows() {
        let metrics = Arc::new(Metrics::new());
        let sink = EventSink::new().with_metrics(metrics.clone());
        sink.emit(&event(1, EventKind::Enqueued));
        let mut late = sink.subscribe();
        sink.emit(&event(2, EventKind::Enqueued));
        assert_eq!(late.try_recv().map(|e| e.seq), Ok(2));
        assert_eq!(late.try_recv(), Err(TryRecvError::Empty));
        assert!(
            metrics
                .encode()
                .contains("spool_jobs_enqueued_total{queue=\"email\"} 2\n")
        );
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let sink = EventSink::new();
        let mut slow = sink.subscribe();
        let n = i64::try_from(super::LIVE_CAPACITY).unwrap() + 10;
        for seq in 1..=n {
            sink.emit(&event(seq, EventKind::Checkpointed));
        }
        assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(10)));
        assert_eq!(slow.try_recv().map(|e| e.seq), Ok(11));
    }
}
