//! An attempt's log: `host.log` lines and the guest's stdout/stderr, in order, bounded.
//!
//! The guest writes stdout/stderr through WASI streams owned by the `WasiCtx`, and log lines
//! through `host.log`; both land in one [`AttemptLog`] shared behind a mutex, cut into lines
//! as they arrive. Past the byte budget, lines and bytes are counted rather than stored, and
//! the guest never sees an error: a chatty plugin is not a failing plugin.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::wasi_config::ConfigValues;
use crate::outcome::{LogLevel, LogLine, LogSource, LogsDropped};

/// The longest line kept from stdout/stderr; longer lines are split.
const MAX_LINE: usize = 8 << 10;
/// How many bytes a guest may write per `check-write` permit.
const WRITE_PERMIT: usize = 64 << 10;
/// What a line costs the log budget beside its bytes: about what an empty line takes in
/// memory and in the stored log, so that lines without bytes are not free.
pub(crate) const LINE_COST: usize = 80;
/// What each field of a `host.log` line costs the budget beside its key's and value's bytes.
pub(crate) const FIELD_COST: usize = 48;

/// A read-only handle on a running attempt's log ([`Journal::attempt_started`]): what the
/// plugin has written so far stays readable after the attempt is dropped.
///
/// [`Journal::attempt_started`]: super::Journal::attempt_started
#[derive(Clone)]
pub struct LogHandle(AttemptLog);

impl LogHandle {
    pub(crate) fn new(log: &AttemptLog) -> Self {
        LogHandle(log.clone())
    }

    /// The complete lines written so far, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.0.lock().lines.clone()
    }
}

/// The shared, bounded log of one attempt.
#[derive(Clone)]
pub(crate) struct AttemptLog(Arc<Mutex<LogState>>);

struct LogState {
    started: Instant,
    budget: usize,
    lines: Vec<LogLine>,
    dropped: LogsDropped,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The attempt's secret values, replaced in every line as it is stored.
    secrets: ConfigValues,
}

impl AttemptLog {
    pub(crate) fn new(started: Instant, budget: usize) -> Self {
        AttemptLog(Arc::new(Mutex::new(LogState {
            started,
            budget,
            lines: Vec::new(),
            dropped: LogsDropped::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            secrets: ConfigValues::default(),
        })))
    }

    /// Redact the secret values of `values` from every line stored from now on.
    pub(crate) fn redact(&self, values: ConfigValues) {
        self.lock().secrets = values;
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means another thread panicked mid-push; the lines are still valid.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Record a `host.log` call.
    pub(crate) fn plugin_line(
        &self,
        level: LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let mut state = self.lock();
        let size = LINE_COST
            + message.len()
            + fields
                .iter()
                .map(|(k, v)| FIELD_COST + k.len() + v.len())
                .sum::<usize>();
        if size > state.budget {
            state.dropped.lines += 1;
            return;
        }
        state.budget -= size;
        let at = state.started.elapsed();
        let (mut message, mut fields) = (message, fields);
        if state.secrets.has_secrets() {
            state.secrets.redact_in_place(&mut message);
            for (_, value) in &mut fields {
                state.secrets.redact_in_place(value);
            }
        }
        state.lines.push(LogLine {
            at,
            level,
            source: LogSource::Plugin,
            message,
            fields,
        });
    }

    /// A stream for the guest's stdout (`Stdout`) or stderr (`Stderr`).
    pub(crate) fn stream(&self, source: LogSource) -> StdioCapture {
        StdioCapture {
            log: self.clone(),
            source,
        }
    }

    fn write_stdio(&self, source: LogSource, mut bytes: &[u8]) {
        let mut state = self.lock();
        let state = &mut *state;
        while !bytes.is_empty() {
            let pending = match source {
                LogSource::Stderr => &mut state.stderr,
                _ => &mut state.stdout,
            };
            let room = MAX_LINE - pending.len();
            let (chunk, rest) = match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) if nl <= room => (&bytes[..nl], Some(&bytes[nl + 1..])),
                _ if bytes.len() < room => (bytes, None),
                _ => (&bytes[..room], Some(&bytes[room..])),
            };
            let line_ends = rest.is_some();
            // A line costs its bytes plus, at its end, what a line costs, so empty lines
            // cannot grow the log without bound either.
            let cost = chunk.len() + if line_ends { LINE_COST } else { 0 };
            let fits = cost <= state.budget;
            if fits {
                state.budget -= cost;
                pending.extend_from_slice(chunk);
            } else {
                state.dropped.stdio_bytes += (chunk.len() + usize::from(line_ends)) as u64;
            }
            if line_ends && (fits || !pending.is_empty()) {
                let text = std::mem::take(pending);
                push_stdio_line(
                    state.started,
                    &mut state.lines,
                    &state.secrets,
                    source,
                    text,
                );
            }
            bytes = rest.unwrap_or_default();
        }
    }

    /// Add a note of the host's own.
    pub(crate) fn host_line(&self, level: LogLevel, mut message: String) {
        let mut state = self.lock();
        // A host note may quote the plugin (a step's name, an error it returned).
        state.secrets.redact_in_place(&mut message);
        let at = state.started.elapsed();
        state.lines.push(LogLine {
            at,
            level,
            source: LogSource::Host,
            message,
            fields: Vec::new(),
        });
    }

    /// Flush unterminated stdout/stderr lines and take the log out.
    pub(crate) fn finish(&self) -> (Vec<LogLine>, LogsDropped) {
        let mut state = self.lock();
        let state = &mut *state;
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let pending = match source {
                LogSource::Stderr => &mut state.stderr,
                _ => &mut state.stdout,
            };
            if !pending.is_empty() {
                let text = std::mem::take(pending);
                push_stdio_line(
                    state.started,
                    &mut state.lines,
                    &state.secrets,
                    source,
                    text,
                );
            }
        }
        let dropped = state.dropped;
        if dropped.stdio_bytes > 0 || dropped.lines > 0 {
            let at = state.started.elapsed();
            state.lines.push(LogLine {
                at,
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "log limit reached: {} log lines and {} stdout/stderr bytes were not kept",
                    dropped.lines, dropped.stdio_bytes
                ),
                fields: Vec::new(),
            });
        }
        (std::mem::take(&mut state.lines), dropped)
    }
}

fn push_stdio_line(
    started: Instant,
    lines: &mut Vec<LogLine>,
    secrets: &ConfigValues,
    source: LogSource,
    text: Vec<u8>,
) {
    let at: Duration = started.elapsed();
    let level = if source == LogSource::Stderr {
        LogLevel::Warn
    } else {
        LogLevel::Info
    };
    let mut message = String::from_utf8_lossy(&text).into_owned();
    secrets.redact_in_place(&mut message);
    lines.push(LogLine {
        at,
        level,
        source,
        message,
        fields: Vec::new(),
    });
}

/// The guest's stdout or stderr: an always-writable WASI stream into the [`AttemptLog`].
#[derive(Clone)]
pub(crate) struct StdioCapture {
    log: AttemptLog,
    source: LogSource,
}

impl IsTerminal for StdioCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StdioCapture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StdioCapture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write_stdio(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StdioCapture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StdioCapture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.log.write_stdio(self.source, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
