//! The caps one attempt runs under, and the store limiter that enforces the memory ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The smallest memory cap a plugin is loaded with: 2 MiB. The smallest plugin built for
/// `wasm32-wasip2` (the `noop` test plugin: a 1 MiB stack and its data) needs just over 1 MiB
/// to start, so a cap below this would trap every attempt of any plugin; it is refused when
/// the plugin is loaded, naming this minimum. Larger plugins need more (Python and JavaScript
/// ones tens of MiB), which only running them tells.
pub const MIN_MEMORY: usize = 2 << 20;

/// Per-plugin limits, applied to every attempt of that plugin.
///
/// The operator's configuration decides these; a plugin cannot raise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Abort the attempt after this long; `None` runs without a deadline.
    pub timeout: Option<Duration>,
    /// The most linear memory the instance may hold, in bytes, summed over its memories.
    pub memory: usize,
    /// The most table elements any one table may hold.
    pub table_elements: usize,
    /// The most core instances, tables and memories one instance may create.
    pub instances: usize,
    /// Fuel for the attempt when the engine meters fuel; `None` means unmetered.
    pub fuel: Option<u64>,
    /// The largest output the handler may return, in bytes.
    pub max_output: usize,
    /// The most bytes of log lines (`host.log` plus stdout/stderr) kept per attempt: each
    /// line counts its bytes plus 80, and each field of a `host.log` line its bytes plus 48,
    /// about what an empty one takes in memory and in the store. Past it, lines are counted,
    /// not kept.
    pub max_log_bytes: usize,
    /// The largest checkpoint an attempt may save, in bytes; a larger one ends the attempt
    /// with a trap naming this cap.
    #[serde(default = "default_max_checkpoint")]
    pub max_checkpoint: usize,
    /// The most bytes of step results one attempt may store, its steps together; the step
    /// that passes it ends the attempt with a trap naming this cap.
    #[serde(default = "default_max_step_output")]
    pub max_step_output: usize,
    /// The most payload bytes of the children one attempt may enqueue, together; the
    /// enqueue that passes it is refused (the plugin is told why).
    #[serde(default = "default_max_child_payload")]
    pub max_child_payload: usize,
}

fn default_max_checkpoint() -> usize {
    1 << 20
}

fn default_max_step_output() -> usize {
    16 << 20
}

fn default_max_child_payload() -> usize {
    16 << 20
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Some(Duration::from_secs(30 * 60)),
            memory: 128 << 20,
            table_elements: 100_000,
            instances: 64,
            fuel: None,
            max_output: 1 << 20,
            max_log_bytes: 256 << 10,
            max_checkpoint: default_max_checkpoint(),
            max_step_output: default_max_step_output(),
            max_child_payload: default_max_child_payload(),
        }
    }
}

/// Enforces [`Limits`] on one store and remembers whether it had to refuse a grow, so that
/// the trap that follows (an allocator abort, usually `unreachable`) is classified as
/// out-of-memory by state rather than by message.
pub(crate) struct StoreLimiter {
    memory_cap: usize,
    table_elements: usize,
    instances: usize,
    memory_in_use: usize,
    /// The most linear memory the instance has held at once.
    pub(crate) memory_peak: usize,
    pub(crate) refused_grow: bool,
}

impl StoreLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        StoreLimiter {
            memory_cap: limits.memory,
            table_elements: limits.table_elements,
            instances: limits.instances,
            memory_in_use: 0,
            memory_peak: 0,
            refused_grow: false,
        }
    }
}

impl wasmtime::ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let others = self.memory_in_use.saturating_sub(current);
        let fits = others.saturating_add(desired) <= self.memory_cap
            && maximum.is_none_or(|max| desired <= max);
        if fits {
            self.memory_in_use = others + desired;
            self.memory_peak = self.memory_peak.max(self.memory_in_use);
        } else {
            self.refused_grow = true;
        }
        Ok(fits)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let fits = desired <= self.table_elements && maximum.is_none_or(|max| desired <= max);
        if !fits {
            self.refused_grow = true;
        }
        Ok(fits)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.instances
    }

    fn memories(&self) -> usize {
        self.instances
    }
}
