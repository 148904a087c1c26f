//! Schedules: jobs enqueued at every tick of a cron expression or a fixed interval.
//!
//! A [`Schedule`] is kept in the backend with the time of its next tick (`next_run_at`). Every
//! worker runs the [scheduler loop](crate::scheduler), but only the one holding the backend's
//! leader lock fires ticks; when it dies the lock expires and another worker takes over.
//! Firing is also idempotent on its own: [`Backend::fire_schedule`] applies only while the
//! stored `next_run_at` is still the tick being fired, and enqueues the job in the same
//! atomic step (SQLite: one transaction; NATS: a compare-and-set of the schedule's record and
//! a publish deduplicated on `schedule:<name>:<tick>`), so two schedulers racing for one tick
//! enqueue one job.
//!
//! Cron expressions are read by the `croner` crate: crontab's five fields with POSIX/Vixie
//! semantics (so a line from a crontab means the same here), an optional seconds field first,
//! and `L`, `W` and `#`. (The `cron` crate, the other common choice, requires the seconds
//! field, so crontab lines would not read as written.)
//!
//! [`plan`] decides what a due schedule does. Ticks normally come one at a time; when more
//! than one has passed since `next_run_at` (no worker ran, or the leader died and its lock had
//! to expire), the schedule's [`Missed`] policy applies: `skip` fires none of them (event
//! `schedule-skipped` with how many) and waits for the next tick, `catch-up` fires one job for
//! the latest of them and goes on from there.
//!
//! ```
//! use std::time::Duration;
//! use spool::schedule::{FireAction, Missed, Schedule, Spec, plan};
//!
//! let schedule = Schedule {
//!     missed: Missed::Skip,
//!     ..Schedule::new("tidy", "maintenance", Spec::every(Duration::from_secs(30)).unwrap())
//! };
//! // Ticks fall on multiples of the interval: the first after 10 s past the epoch is 30 s.
//! let first = schedule.spec.next_after(10_000).unwrap();
//! assert_eq!(first, 30_000);
//! // At 31 s the tick at 30 s is due: one job, and the next tick is at 60 s.
//! let fire = plan(&schedule, first, 31_000).unwrap().unwrap();
//! assert_eq!(fire.next, 60_000);
//! assert!(matches!(fire.action, FireAction::Enqueue { tick: 30_000, .. }));
//! // At 95 s the ticks at 30, 60 and 90 s were all missed: skipped, next at 120 s.
//! let fire = plan(&schedule, first, 95_000).unwrap().unwrap();
//! assert_eq!(fire.next, 120_000);
//! assert!(matches!(fire.action, FireAction::Skip { ticks: 3 }));
//! ```
//!
//! [`Backend::fire_schedule`]: crate::queue::Backend::fire_schedule

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queue::{JobId, NewJob, Timestamp};

/// Metadata key naming the schedule on the jobs it enqueues.
pub const SCHEDULE_METADATA: &str = "spool-schedule";
/// Metadata key holding a scheduled job's tick, in milliseconds since the Unix epoch.
pub const TICK_METADATA: &str = "spool-tick";

/// How many missed ticks of a cron schedule [`plan`] counts one by one before it stops
/// counting (and reports that many).
const COUNT_LIMIT: u64 = 10_000;

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("bad cron expression `{expr}`: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// The interval is shorter than a second or not whole milliseconds.
    #[error("bad interval {0:?}: a schedule repeats every second at most")]
    Every(Duration),
    /// The name is not letters, digits, `-` and `_` (at most 64).
    #[error("bad schedule name `{0}`: use 1 to 64 letters, digits, `-` and `_`")]
    Name(String),
    /// The queue name is empty.
    #[error("schedule `{0}` names no queue")]
    Queue(String),
    /// The expression has no tick after the given time.
    #[error("cron expression `{0}` has no further tick")]
    NoTick(String),
}

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Spec {
    /// A cron expression (UTC): five fields (minute, hour, day of month, month, day of
    /// week) or six with seconds first, with POSIX/Vixie semantics plus `L`, `W` and `#`.
    Cron(String),
    /// Every so many milliseconds, on multiples of the interval since the Unix epoch (so
    /// `every = "1h"` ticks on the hour).
    EveryMs(u64),
}

impl Spec {
    /// A cron schedule, if `expr` parses.
    pub fn cron(expr: &str) -> Result<Spec, ScheduleError> {
        parse_cron(expr)?;
        Ok(Spec::Cron(expr.trim().to_owned()))
    }

    /// A fixed interval of at least one second.
    pub fn every(interval: Duration) -> Result<Spec, ScheduleError> {
        let ms = u64::try_from(interval.as_millis()).map_err(|_| ScheduleError::Every(interval))?;
        if ms < 1000 || !interval.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(ScheduleError::Every(interval));
        }
        Ok(Spec::EveryMs(ms))
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Result<Timestamp, ScheduleError> {
        match self {
            Spec::EveryMs(ms) => {
                let ms = i64::try_from(*ms).unwrap_or(i64::MAX);
                Ok(t.div_euclid(ms).saturating_add(1).saturating_mul(ms))
            }
            Spec::Cron(expr) => {
                let cron = parse_cron(expr)?;
                let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
                    .ok_or_else(|| ScheduleError::NoTick(expr.clone()))?;
                let next = cron
                    .find_next_occurrence(&at, false)
                    .map_err(|_| ScheduleError::NoTick(expr.clone()))?;
                Ok(next.timestamp_millis())
            }
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Cron(expr) => write!(f, "cron \"{expr}\""),
            Spec::EveryMs(ms) => write!(
                f,
                "every {}",
                humantime::format_duration(Duration::from_millis(*ms))
            ),
        }
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron, ScheduleError> {
    croner::Cron::from_str(expr.trim()).map_err(|e| ScheduleError::Cron {
        expr: expr.to_owned(),
        reason: e.to_string().trim_end_matches('.').to_owned(),
    })
}

/// What a schedule does about ticks that passed while no scheduler fired them.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
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
pub enum Missed {
    /// Fire none of them (event `schedule-skipped` with how many) and wait for the next tick.
    #[default]
    Skip,
    /// Fire one job now, for the latest missed tick, then go on with the next tick.
    CatchUp,
}

/// A schedule: what to enqueue, where, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name, unique in the backend: letters, digits, `-` and `_`.
    pub name: String,
    /// When it ticks.
    pub spec: Spec,
    /// The queue its jobs go to.
    pub queue: String,
    /// Every job's payload.
    pub payload: Vec<u8>,
    /// What happens to missed ticks.
    pub missed: Missed,
    /// The jobs' priority.
    pub priority: i32,
    /// The jobs' tenant.
    pub tenant: Option<String>,
    /// The jobs' group.
    pub group: Option<String>,
    /// The jobs' max attempts (`None`: the queue's).
    pub max_attempts: Option<u32>,
    /// Whether it comes from `[schedules.<name>]` in `spool.toml`: a worker starting with a
    /// config that no longer has it removes it ([`Worker::sync_schedules`]); one added
    /// otherwise (`spool schedule add`) stays until removed.
    ///
    /// [`Worker::sync_schedules`]: crate::worker::Worker::sync_schedules
    #[serde(default)]
    pub from_config: bool,
}

impl Schedule {
    /// A schedule of empty-payload jobs on `queue` with every option at its default.
    pub fn new(name: impl Into<String>, queue: impl Into<String>, spec: Spec) -> Self {
        Schedule {
            name: name.into(),
            spec,
            queue: queue.into(),
            payload: Vec::new(),
            missed: Missed::default(),
            priority: 0,
            tenant: None,
            group: None,
            max_attempts: None,
            from_config: false,
        }
    }

    /// Check the name and queue (the spec is checked when it is made).
    pub fn check(&self) -> Result<(), ScheduleError> {
        check_name(&self.name)?;
        if self.queue.is_empty() {
            return Err(ScheduleError::Queue(self.name.clone()));
        }
        Ok(())
    }

    /// The job fired for `tick`: the schedule's settings, and metadata naming the schedule
    /// ([`SCHEDULE_METADATA`]) and the tick ([`TICK_METADATA`]).
    pub fn job(&self, tick: Timestamp) -> NewJob {
        NewJob {
            queue: self.queue.clone(),
            payload: self.payload.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            tenant: self.tenant.clone(),
            group: self.group.clone(),
            metadata: vec![
                (SCHEDULE_METADATA.to_owned(), self.name.clone()),
                (TICK_METADATA.to_owned(), tick.to_string()),
            ],
            ..NewJob::default()
        }
    }
}

/// Check a schedule name: 1 to 64 letters, digits, `-` and `_`.
pub fn check_name(name: &str) -> Result<(), ScheduleError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) {
        return Err(ScheduleError::Name(name.to_owned()));
    }
    Ok(())
}

/// A schedule as the backend keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The schedule.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// Its next tick.
    pub next_run_at: Timestamp,
    /// When it last fired a job (the tick's time), if ever.
    pub last_run_at: Option<Timestamp>,
    /// The job it last fired.
    pub last_job: Option<JobId>,
}

/// One step of a schedule, applied by [`Backend::fire_schedule`] only while the stored
/// `next_run_at` is still `due`.
///
/// [`Backend::fire_schedule`]: crate::queue::Backend::fire_schedule
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFire {
    /// The schedule.
    pub name: String,
    /// The `next_run_at` this step moves on from.
    pub due: Timestamp,
    /// The `next_run_at` it moves to.
    pub next: Timestamp,
    /// What it does.
    pub action: FireAction,
    /// The worker firing, for the event.
    pub worker: Option<String>,
}

/// What one step of a schedule does.
// One is made per tick and consumed at once: boxing the job would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireAction {
    /// Enqueue `job` for `tick` (event `schedule-fired`).
    Enqueue {
        /// The tick the job is for.
        tick: Timestamp,
        /// The job.
        job: NewJob,
        /// How many earlier missed ticks this one stands for (catch-up; 0 normally).
        caught_up: u64,
    },
    /// Enqueue nothing: `ticks` missed ticks are skipped (event `schedule-skipped`).
    Skip {
        /// How many.
        ticks: u64,
    },
}

/// What `schedule`, whose next tick is `next_run_at`, does at `now`: `None` before the tick.
pub fn plan(
    schedule: &Schedule,
    next_run_at: Timestamp,
    now: Timestamp,
) -> Result<Option<ScheduleFire>, ScheduleError> {
    if next_run_at > now {
        return Ok(None);
    }
    // The due ticks: `next_run_at` and every later one up to `now`.
    let (count, latest) = match schedule.spec {
        Spec::EveryMs(ms) => {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            let later = (now - next_run_at) / ms;
            (
                u64::try_from(later).unwrap_or(0) + 1,
                next_run_at + later * ms,
            )
        }
        Spec::Cron(_) => {
            let (mut count, mut latest) = (1, next_run_at);
            loop {
                let after = schedule.spec.next_after(latest)?;
                if after > now {
                    break;
                }
                (count, latest) = (count + 1, after);
                if count >= COUNT_LIMIT {
                    // Stop counting; go straight to the last tick before now.
                    while let Ok(after) = schedule.spec.next_after(latest) {
                        if after > now {
                            break;
                        }
                        latest = after;
                    }
                    break;
                }
            }
            (count, latest)
        }
    };
    let next = schedule.spec.next_after(latest)?;
    let action = match (count, schedule.missed) {
        (1, _) => FireAction::Enqueue {
            tick: next_run_at,
            job: schedule.job(next_run_at),
            caught_up: 0,
        },
        (_, Missed::Skip) => FireAction::Skip { ticks: count },
        (_, Missed::CatchUp) => FireAction::Enqueue {
            tick: latest,
            job: schedule.job(latest),
            caught_up: count - 1,
        },
    };
    Ok(Some(ScheduleFire {
        name: schedule.name.clone(),
        due: next_run_at,
        next,
        action,
        worker: None,
    }))
}

/// A time as RFC 3339 in UTC, for messages.
pub fn rfc3339(t: Timestamp) -> String {
    let t = u64::try_from(t).unwrap_or(0);
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(t)).to_string()
}

/// The words of a `schedule-fired` event's message.
pub fn fired_message(name: &str, tick: Timestamp, caught_up: u64) -> String {
    match caught_up {
        0 => format!("schedule {name} fired for tick {}", rfc3339(tick)),
        n => format!(
            "schedule {name} fired for tick {}, catching up {n} missed tick{}",
            rfc3339(tick),
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// The words of a `schedule-skipped` event's message.
pub fn skipped_message(name: &str, ticks: u64, due: Timestamp, next: Timestamp) -> String {
    format!(
        "schedule {name} skipped {ticks} missed ticks from {}; next tick {}",
        rfc3339(due),
        rfc3339(next)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_cron_expressions_tick_in_utc() {
        let daily = Spec::cron("30 3 * * *").unwrap();
        // 2026-01-01T00:00:00Z
        let midnight = 1_767_225_600_000;
        assert_eq!(
            daily.next_after(midnight).unwrap(),
            midnight + (3 * 3600 + 30 * 60) * 1000
        );
        let every_second = Spec::cron("* * * * * *").unwrap();
        assert_eq!(every_second.next_after(midnight).unwrap(), midnight + 1000);
        assert_eq!(
            every_second.next_after(midnight + 500).unwrap(),
            midnight + 1000
        );
    }

    #[test]
    fn bad_cron_expressions_and_intervals_are_refused_with_the_reason() {
        let err = Spec::cron("61 * * * *").unwrap_err();
        assert!(err.to_string().contains("`61 * * * *`"), "{err}");
        assert!(Spec::cron("every day").is_err());
        assert!(Spec::every(Duration::from_millis(500)).is_err());
        assert!(Spec::every(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn catch_up_fires_once_for_the_latest_missed_tick() {
        let schedule = Schedule {
            missed: Missed::CatchUp,
            ..Schedule::new("s", "q", Spec::EveryMs(1000))
        };
        let fire = plan(&schedule, 5000, 9500).unwrap().unwrap();
        assert_eq!(fire.next, 10_000);
        match fire.action {
            FireAction::Enqueue {
                tick, caught_up, ..
            } => assert_eq!((tick, caught_up), (9000, 4)),
            other => panic!("{other:?}"),
        }
        assert_eq!(plan(&schedule, 10_000, 9999).unwrap(), None);
    }

    #[test]
    fn missed_cron_ticks_are_counted() {
        let schedule = Schedule::new("s", "q", Spec::cron("0 * * * * *").unwrap());
        let fire = plan(&schedule, 60_000, 60_000 * 4 + 5).unwrap().unwrap();
        assert_eq!(fire.action, FireAction::Skip { ticks: 4 });
        assert_eq!(fire.next, 60_000 * 5);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("nightly-report_2").is_ok());
        for bad in ["", "a.b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
