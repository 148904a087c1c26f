//! One attempt: a fresh store, the call, the deadline, and the classification of how it ended.

use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use std::sync::Arc;

use super::Sandbox;
use super::limits::Limits;
use super::plugin::{Plugin, Pre};
use super::state::{Journal, RunState};
use crate::bindings::{Job, v1};
use crate::job::JobInput;
use crate::outcome::{AttemptReport, LogLevel, Outcome, Timings, TrapKind};

/// The longest error message from a plugin kept in an outcome; the rest is cut.
const MAX_MESSAGE: usize = 4 << 10;

/// Why the host could not run an attempt at all (as opposed to the attempt failing).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sandbox is shutting down.
    #[error("the sandbox is shut down")]
    Closed,
    /// wasmtime could not set up the store (for example a fuel budget without metering).
    #[error("cannot prepare the attempt: {0}")]
    Setup(String),
}

/// How the call ended, before classification.
enum Ended {
    Returned(Result<Vec<u8>, Outcome>),
    Error(wasmtime::Error),
    Deadline,
}

/// How long a component's start functions may run when [`Sandbox::check_instance`] makes an
/// instance of it at load.
const CHECK_DEADLINE: Duration = Duration::from_secs(5);

impl Sandbox {
    /// Make one instance of `pre` and drop it. wasmtime checks the types of the exports the
    /// bindings use (the handler's) when an instance is made, not when one is prepared, so
    /// this is what refuses, at load, a handler with the right name and the wrong types.
    /// Bounded as an attempt is (memory, tables, fuel), and its start functions by
    /// [`CHECK_DEADLINE`]. Nothing in the instance runs but those.
    pub(super) fn check_instance(&self, pre: &Pre, limits: &Limits) -> wasmtime::Result<()> {
        let state = RunState::new(limits, Instant::now(), None, 0, None);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.config.fuel {
            store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
        }
        if self.config.epoch_interruption {
            // No callback: the deadline traps.
            store.set_epoch_deadline(ticks_in(CHECK_DEADLINE, self.config.epoch_tick));
        }
        // Nothing here waits on the async runtime: the store is async only because the
        // engine is configured so.
        futures::executor::block_on(async {
            match pre {
                Pre::V2(pre) => pre.instantiate_async(&mut store).await.map(drop),
                Pre::V1(pre) => pre.instantiate_async(&mut store).await.map(drop),
            }
        })
    }

    /// Run one attempt of `job` on `plugin` in a fresh instance, and report how it ended.
    ///
    /// Waits for a free slot when `concurrency` attempts are already running. Every way the
    /// guest can end (output, an error it returned, a trap, the deadline) is an `Ok` report;
    /// `Err` means the host itself could not run the attempt.
    ///
    /// Checkpoints and steps stay in the report; children the plugin enqueues are listed in it
    /// with ids of the form `child-N`. A worker uses [`Sandbox::run_with`] instead.
    ///
    /// The plugin reads, through `wasi:config`, the values its [`ConfigStore`](super::ConfigStore)
    /// (attached with [`Plugin::with_config`]) holds for the job's tenant; secret values are
    /// redacted from the report's log lines, error message and progress note.
    pub async fn run(&self, plugin: &Plugin, job: &JobInput) -> Result<AttemptReport, RunError> {
        self.run_with(plugin, job, None).await
    }

    /// [`Sandbox::run`], with the attempt's durable writes (checkpoints, steps, child ids) going
    /// through `journal`: a write it refuses aborts the attempt.
    pub async fn run_with(
        &self,
        plugin: &Plugin,
        job: &JobInput,
        journal: Option<Arc<dyn Journal>>,
    ) -> Result<AttemptReport, RunError> {
        let queued_at = Instant::now();
        let _slot = self.slots.acquire().await.map_err(|_| RunError::Closed)?;
        let started = Instant::now();
        let limits = plugin.limits();
        let deadline = limits.timeout.map(|t| started + t);

        let earlier_children = u32::try_from(job.children.len()).unwrap_or(u32::MAX);
        let capabilities = self.config.capabilities;
        let mut state = RunState::new(
            limits,
            started,
            journal,
            earlier_children,
            plugin.grants().http.as_ref().filter(|_| capabilities),
        );
        if capabilities {
            state.set_config(plugin.config().for_tenant(job.tenant.as_deref()).clone());
        }
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        if self.config.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| RunError::Setup(format!("{e:#}")))?;
        }
        if self.config.epoch_interruption {
            // A spinning guest yields to the executor every so often, so that dropping the
            // attempt (a cancelled job, a shutdown) takes effect at once, not at the timeout.
            // Through tokio's own yield, which lets the worker thread poll its timers and
            // sockets first: a task that wakes itself would run again before them, and with
            // every thread spinning a guest, timers would fire only every few seconds.
            let tick = self.config.epoch_tick;
            let yield_ticks = ticks_in(YIELD_EVERY, tick);
            match deadline {
                Some(deadline) => {
                    // The epoch counts ticks, and a ticker woken late catches up several at once,
                    // so reaching the deadline in ticks can come a little before the deadline in
                    // time. The callback checks the clock: early, it yields and waits the
                    // remaining ticks (at most `YIELD_EVERY` of them); due, it interrupts.
                    store.set_epoch_deadline(ticks_until(deadline, tick).min(yield_ticks));
                    store.epoch_deadline_callback(move |_| {
                        Ok(match deadline.checked_duration_since(Instant::now()) {
                            Some(left) if !left.is_zero() => UpdateDeadline::YieldCustom(
                                ticks_until(Instant::now() + left, tick).min(yield_ticks),
                                Box::pin(tokio::task::yield_now()),
                            ),
                            _ => UpdateDeadline::Interrupt,
                        })
                    });
                }
                None => {
                    store.set_epoch_deadline(yield_ticks);
                    store.epoch_deadline_callback(move |_| {
                        Ok(UpdateDeadline::YieldCustom(
                            yield_ticks,
                            Box::pin(tokio::task::yield_now()),
                        ))
                    });
                }
            }
        }

        let mut instantiated = started;
        let call = async {
            match plugin.pre() {
                Pre::V2(pre) => {
                    let wit_job = Job::from(job);
                    let instance = pre.instantiate_async(&mut store).await?;
                    instantiated = Instant::now();
                    let returned = instance
                        .spool_job_handler()
                        .call_handle(&mut store, &wit_job)
                        .await?;
                    Ok::<_, wasmtime::Error>(returned.map_err(Outcome::from))
                }
                Pre::V1(pre) => {
                    let wit_job = v1::spool::job::types::Job::from(job);
                    let instance = pre.instantiate_async(&mut store).await?;
                    instantiated = Instant::now();
                    let returned = instance
                        .spool_job_handler()
                        .call_handle(&mut store, &wit_job)
                        .await?;
                    Ok(returned.map_err(Outcome::from))
                }
            }
        };
        // A guest blocked in a host call (a WASI sleep or poll) never reaches an epoch check:
        // the deadline drops the call's future instead, which aborts the host call.
        let ended = match deadline {
            Some(at) => match tokio::time::timeout_at(at.into(), call).await {
                Ok(Ok(returned)) => Ended::Returned(returned),
                Ok(Err(e)) => Ended::Error(e),
                Err(_) => Ended::Deadline,
            },
            None => match call.await {
                Ok(returned) => Ended::Returned(returned),
                Err(e) => Ended::Error(e),
            },
        };
        let finished = Instant::now();
        let elapsed = finished - started;

        let state = store.data();
        let outcome = match ended {
            Ended::Returned(Ok(output)) if output.len() > limits.max_output => Outcome::Trapped {
                kind: TrapKind::OutputTooLarge,
                message: format!(
                    "the handler returned {} bytes of output, more than the limit of {}",
                    output.len(),
                    limits.max_output
                ),
            },
            Ended::Returned(Ok(output)) => Outcome::Succeeded { output },
            Ended::Returned(Err(err)) => truncate_message(err),
            Ended::Deadline => Outcome::TimedOut { elapsed },
            Ended::Error(err) => classify(&err, state.limiter.refused_grow, elapsed),
        };
        if let Outcome::Trapped { kind, message } = &outcome {
            state
                .log
                .host_line(LogLevel::Error, format!("trapped ({kind}): {message}"));
        } else if let Outcome::TimedOut { elapsed } = &outcome {
            state.log.host_line(
                LogLevel::Error,
                format!("aborted at the deadline after {} ms", elapsed.as_millis()),
            );
        }
        let (logs, logs_dropped) = state.log.finish();
        let mut report = AttemptReport {
            outcome,
            digest: plugin.digest().clone(),
            logs,
            logs_dropped,
            checkpoint: state.checkpoint.clone(),
            steps: state.steps.clone(),
            children: state.children.clone(),
            progress: state.progress.clone(),
            http: state.http.usage(),
            memory_peak: u64::try_from(state.limiter.memory_peak).unwrap_or(u64::MAX),
            timings: Timings {
                queued: started - queued_at,
                instantiate: instantiated.saturating_duration_since(started),
                run: finished.saturating_duration_since(instantiated),
                elapsed,
            },
        };
        state.config.redact_report(&mut report);
        // The store (and the instance in it) is dropped here: an aborted or trapped instance is
        // never reused.
        drop(store);
        Ok(report)
    }
}

/// How often a running guest yields to the executor between its deadline checks.
const YIELD_EVERY: Duration = Duration::from_millis(50);

/// Ticks in `span`, rounded up, at least one.
fn ticks_in(span: Duration, tick: Duration) -> u64 {
    u64::try_from(span.as_nanos().div_ceil(tick.as_nanos().max(1)))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Ticks from now until `deadline`, rounded up, at least one.
fn ticks_until(deadline: Instant, tick: Duration) -> u64 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_nanos();
    u64::try_from(left.div_ceil(tick.as_nanos().max(1)))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Classify a trap by its type, and by the limiter's state for out-of-memory (an allocator
/// that is refused memory aborts, which reaches the host as `unreachable`).
fn classify(err: &wasmtime::Error, refused_grow: bool, elapsed: Duration) -> Outcome {
    if err.downcast_ref::<super::state::DeadlinePassed>().is_some() {
        return Outcome::TimedOut { elapsed };
    }
    let trap = err.downcast_ref::<Trap>().copied();
    let kind = match trap {
        Some(Trap::Interrupt) => return Outcome::TimedOut { elapsed },
        Some(Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(Trap::OutOfFuel) => TrapKind::OutOfFuel,
        _ if refused_grow => TrapKind::OutOfMemory,
        Some(Trap::UnreachableCodeReached) => TrapKind::Panic,
        _ => TrapKind::Other,
    };
    let message = match trap {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    Outcome::Trapped { kind, message }
}

fn truncate_message(outcome: Outcome) -> Outcome {
    let cut = |mut message: String| {
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("... (cut)");
        }
        message
    };
    match outcome {
        Outcome::Retry {
            message,
            retry_after,
        } => Outcome::Retry {
            message: cut(message),
            retry_after,
        },
        Outcome::Fail { message } => Outcome::Fail {
            message: cut(message),
        },
        Outcome::InvalidPayload { message } => Outcome::InvalidPayload {
            message: cut(message),
        },
        other => other,
    }
}
