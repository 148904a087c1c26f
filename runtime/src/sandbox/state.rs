//! What a store holds during one attempt, and the host functions the plugin imports.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{Limits, StoreLimiter};
use super::log::AttemptLog;
use crate::bindings::{self, Level};
use crate::outcome::{LogSource, Progress};

/// The data of one attempt's `Store`: created fresh per attempt, dropped with the instance.
pub(crate) struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: StoreLimiter,
    pub(crate) log: AttemptLog,
    pub(crate) checkpoint: Option<Vec<u8>>,
    pub(crate) progress: Option<Progress>,
}

impl RunState {
    pub(crate) fn new(limits: &Limits, started: Instant) -> Self {
        let log = AttemptLog::new(started, limits.max_log_bytes);
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
            limiter: StoreLimiter::new(limits),
            log,
            checkpoint: None,
            progress: None,
        }
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

impl bindings::spool::job::types::Host for RunState {}

impl bindings::spool::job::host::Host for RunState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.log.plugin_line(level.into(), message, fields);
    }

    fn checkpoint(&mut self, state: Vec<u8>) {
        self.checkpoint = Some(state);
    }

    fn progress(&mut self, percent: u8, message: Option<String>) {
        self.progress = Some(Progress {
            percent: percent.min(100),
            message,
        });
    }
}
