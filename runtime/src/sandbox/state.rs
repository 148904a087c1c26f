//! What a store holds during one attempt, and the host functions the plugin imports.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::http::{HttpGrant, HttpState};
use super::limits::{Limits, StoreLimiter};
use super::log::AttemptLog;
use super::wasi_config::ConfigValues;
use crate::bindings::{self, EnqueueOptions, Level, v1};
use crate::outcome::{LogLevel, LogSource, Progress};
use crate::queue::{JobId, NewChild, NewJob, Save, Timestamp};

/// Ends an attempt whose write was refused because its deadline had passed: classified as
/// timed out, not as a trap.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the attempt's deadline has passed")]
pub(crate) struct DeadlinePassed;

/// The most children one attempt may enqueue.
pub const MAX_CHILDREN: usize = 10_000;

/// A boxed future, as [`Journal`] returns them.
pub type JournalFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where a running attempt's durable writes go: in a worker, the queue backend, each write
/// fenced by the attempt's lease and refused after its deadline. An `Err` means the write was
/// refused (the lease is gone, the deadline passed) or failed; the attempt is then aborted,
/// since nothing it does afterwards could be kept.
pub trait Journal: Send + Sync {
    /// Store a checkpoint or a step result; refused once `not_after` (the attempt's deadline)
    /// has passed.
    fn save(&self, save: Save, not_after: Option<Timestamp>) -> JournalFuture<'_, ()>;
    /// Reserve the id of the attempt's job's `index`-th child.
    fn child_id(&self, index: u32) -> JournalFuture<'_, String>;
    /// Called as the attempt starts, with a handle on its log: a caller that may drop the
    /// attempt before it ends (a worker aborting a cancelled job) keeps it, to record what the
    /// plugin wrote until then. The default ignores it.
    fn attempt_started(&self, log: super::LogHandle) {
        let _ = log;
    }

    /// The largest payload the store takes ([`Backend::max_payload`](crate::queue::Backend::max_payload)):
    /// a child with a larger one is refused when the plugin enqueues it.
    fn max_payload(&self) -> usize {
        crate::queue::check::DEFAULT_MAX_PAYLOAD
    }
}

/// The data of one attempt's `Store`: created fresh per attempt, dropped with the instance.
pub(crate) struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// `wasi:http`: the grant's hooks and the attempt's request counters.
    pub(crate) http: HttpState,
    pub(crate) limiter: StoreLimiter,
    pub(crate) log: AttemptLog,
    pub(crate) checkpoint: Option<Vec<u8>>,
    pub(crate) progress: Option<Progress>,
    /// Steps completed by this attempt, in order.
    pub(crate) steps: Vec<String>,
    /// Children enqueued by this attempt, committed with its settle.
    pub(crate) children: Vec<NewChild>,
    /// Children of the job enqueued by earlier attempts (the next index).
    pub(crate) earlier_children: u32,
    journal: Option<Arc<dyn Journal>>,
    /// The attempt's deadline on the wall clock, for the journal's writes.
    not_after: Option<Timestamp>,
    /// What the plugin reads through `wasi:config`: its job's tenant's values (none until set).
    pub(crate) config: ConfigValues,
    /// The caps on what the attempt may store (checkpoint, step results, child payloads).
    caps: Limits,
    /// Bytes of step results stored by this attempt.
    step_bytes: usize,
    /// Payload bytes of the children this attempt enqueued.
    child_bytes: usize,
}

impl RunState {
    pub(crate) fn new(
        limits: &Limits,
        started: Instant,
        journal: Option<Arc<dyn Journal>>,
        earlier_children: u32,
        http: Option<&Arc<HttpGrant>>,
    ) -> Self {
        let log = AttemptLog::new(started, limits.max_log_bytes);
        if let Some(journal) = &journal {
            journal.attempt_started(super::LogHandle::new(&log));
        }
        // No preopened directories, no environment, no arguments, no network: a guest that
        // tries to reach any of them gets an error back, never the host's resources.
        let wasi = WasiCtx::builder()
            .stdout(log.stream(LogSource::Stdout))
            .stderr(log.stream(LogSource::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        RunState {
            wasi,
            table: ResourceTable::new(),
            http: HttpState::new(http, &log),
            limiter: StoreLimiter::new(limits),
            log,
            checkpoint: None,
            progress: None,
            steps: Vec::new(),
            children: Vec::new(),
            earlier_children,
            journal,
            not_after: limits.timeout.map(|t| {
                let left = t.saturating_sub(started.elapsed());
                crate::queue::now() + i64::try_from(left.as_millis()).unwrap_or(i64::MAX)
            }),
            config: ConfigValues::default(),
            caps: *limits,
            step_bytes: 0,
            child_bytes: 0,
        }
    }

    /// The trap that ends an attempt past one of its caps, said in its log too.
    fn over_cap(&self, why: String) -> wasmtime::Error {
        self.log.host_line(LogLevel::Error, why.clone());
        wasmtime::Error::msg(why)
    }

    /// Serve `values` through `wasi:config`, and keep their secret values out of the log.
    pub(crate) fn set_config(&mut self, values: ConfigValues) {
        if values.has_secrets() {
            self.log.redact(values.clone());
        }
        self.config = values;
    }

    /// Write through the journal, if there is one; a refusal ends the attempt with a trap,
    /// or as timed out ([`DeadlinePassed`]) when it came after the deadline.
    async fn save(&mut self, save: Save) -> wasmtime::Result<()> {
        let Some(journal) = self.journal.clone() else {
            return Ok(());
        };
        let what = match &save {
            Save::Checkpoint(_) => "checkpoint".to_owned(),
            Save::Step { name, .. } => format!("step `{name}`"),
        };
        journal.save(save, self.not_after).await.map_err(|e| {
            // Refused because the deadline passed while the write was on its way: the
            // attempt timed out, whatever the store said.
            if self
                .not_after
                .is_some_and(|deadline| crate::queue::now() > deadline)
            {
                self.log.host_line(
                    LogLevel::Error,
                    format!("{what} refused: the attempt's deadline has passed"),
                );
                return wasmtime::Error::new(DeadlinePassed);
            }
            self.log
                .host_line(LogLevel::Error, format!("{what} refused: {e}"));
            wasmtime::Error::msg(format!("{what} refused: {e}"))
        })
    }

    fn progress(&mut self, percent: u8, message: Option<String>) {
        self.progress = Some(Progress {
            percent: percent.min(100),
            message,
        });
    }

    async fn checkpoint(&mut self, state: Vec<u8>) -> wasmtime::Result<()> {
        if state.len() > self.caps.max_checkpoint {
            return Err(self.over_cap(format!(
                "a checkpoint of {} bytes is larger than the queue's max_checkpoint of {} bytes",
                state.len(),
                self.caps.max_checkpoint
            )));
        }
        self.save(Save::Checkpoint(state.clone())).await?;
        self.checkpoint = Some(state);
        Ok(())
    }

    async fn step_done(&mut self, name: String, output: Vec<u8>) -> wasmtime::Result<()> {
        let total = self.step_bytes.saturating_add(output.len());
        if total > self.caps.max_step_output {
            return Err(self.over_cap(format!(
                "step `{name}`'s result would bring this attempt's step results to {total} \
                 bytes, more than the queue's max_step_output of {} bytes",
                self.caps.max_step_output
            )));
        }
        self.step_bytes = total;
        self.save(Save::Step {
            name: name.clone(),
            output,
        })
        .await?;
        self.steps.push(name);
        Ok(())
    }

    async fn enqueue(
        &mut self,
        queue: String,
        payload: Vec<u8>,
        options: EnqueueOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        // The store's rules, checked here so the plugin hears of a refusal at once.
        let limit = self
            .journal
            .as_ref()
            .map_or(crate::queue::check::DEFAULT_MAX_PAYLOAD, |j| {
                j.max_payload()
            });
        if let Err(e) = crate::queue::check::check_queue_name(&queue)
            .and_then(|()| crate::queue::check::check_payload(payload.len(), limit))
        {
            return Ok(Err(e.to_string()));
        }
        let total = self.child_bytes.saturating_add(payload.len());
        if total > self.caps.max_child_payload {
            return Ok(Err(format!(
                "the children's payloads would total {total} bytes, more than the queue's \
                 max_child_payload of {} bytes per attempt",
                self.caps.max_child_payload
            )));
        }
        if self.children.len() >= MAX_CHILDREN {
            return Ok(Err(format!(
                "an attempt may enqueue at most {MAX_CHILDREN} children"
            )));
        }
        let index = self.earlier_children + u32::try_from(self.children.len()).unwrap_or(u32::MAX);
        let id = match &self.journal {
            Some(journal) => journal
                .clone()
                .child_id(index)
                .await
                .map_err(|e| wasmtime::Error::msg(format!("cannot reserve a child id: {e}")))?,
            None => format!("child-{}", index + 1),
        };
        let run_at = options
            .delay_ms
            .map(|ms| crate::queue::now() + i64::try_from(ms).unwrap_or(i64::MAX));
        self.child_bytes = total;
        self.children.push(NewChild {
            id: JobId(id.clone()),
            job: NewJob {
                queue,
                payload,
                run_at,
                priority: options.priority,
                max_attempts: options.max_attempts,
                tenant: None,
                key: options.key,
                metadata: options.metadata,
                // The WIT's enqueue options have no group (yet): a child has none.
                group: None,
                // The worker gives it the attempt's span.
                traceparent: None,
            },
            on_failure: options.on_failure.into(),
        });
        Ok(Ok(id))
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

impl bindings::v2::spool::job::types::Host for RunState {}

impl bindings::v2::spool::job::host::Host for RunState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.log.plugin_line(level.into(), message, fields);
    }

    async fn checkpoint(&mut self, state: Vec<u8>) -> wasmtime::Result<()> {
        RunState::checkpoint(self, state).await
    }

    fn progress(&mut self, percent: u8, message: Option<String>) {
        RunState::progress(self, percent, message);
    }

    async fn step_done(&mut self, name: String, output: Vec<u8>) -> wasmtime::Result<()> {
        RunState::step_done(self, name, output).await
    }

    async fn enqueue(
        &mut self,
        queue: String,
        payload: Vec<u8>,
        options: EnqueueOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        RunState::enqueue(self, queue, payload, options).await
    }
}

impl v1::spool::job::types::Host for RunState {}

impl v1::spool::job::host::Host for RunState {
    fn log(
        &mut self,
        level: v1::spool::job::types::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        self.log.plugin_line(level.into(), message, fields);
    }

    async fn checkpoint(&mut self, state: Vec<u8>) -> wasmtime::Result<()> {
        RunState::checkpoint(self, state).await
    }

    fn progress(&mut self, percent: u8, message: Option<String>) {
        RunState::progress(self, percent, message);
    }
}
