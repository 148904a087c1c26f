//! The sandbox: runs one attempt of a job in a fresh WebAssembly instance under hard limits.
//!
//! One [`Sandbox`] per process owns the wasmtime `Engine` (pooling allocator sized from the
//! configured concurrency, epoch interruption driven by one ticker thread) and the `Linker`
//! with the imports Spool grants. [`Sandbox::load_plugin`] checks a component against the
//! `spool:job` world and pre-instantiates it once; [`Sandbox::run`] then gives every attempt a
//! fresh `Store` (memory, table and instance caps, optional fuel, a locked-down WASI context)
//! and ends it in a typed [`Outcome`](crate::outcome::Outcome).
//!
//! A timeout aborts the attempt whatever it is doing: a guest running wasm code traps at the
//! next epoch check after its deadline, and a guest blocked in a host call (a WASI sleep or
//! poll) has the call's future dropped at the deadline. Either way the store, and with it the
//! instance, is dropped: nothing the attempt would have done afterwards happens.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use spool::{JobInput, Limits, Sandbox, SandboxConfig};
//!
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let plugin = sandbox.load_plugin("email.wasm".as_ref(), Limits::default())?;
//! let job = JobInput::new("email", br#"{"to":"a@example.com","mode":"ok"}"#.to_vec());
//! let report = sandbox.run(&plugin, &job).await?;
//! println!("{}: {:?}", report.outcome.name(), report.outcome.error());
//! # Ok(()) }
//! ```

mod cache;
mod engine;
mod http;
mod limits;
mod log;
mod plugin;
mod run;
mod state;
mod wasi_config;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use self::cache::{CacheStatus, CompileCache};
pub(crate) use self::http::tls_client_config;
pub use self::http::{HttpGrant, HttpLimits, HttpPattern};
pub use self::limits::{Limits, MIN_MEMORY};
pub use self::log::LogHandle;
pub use self::plugin::{
    Digest, Grant, Grants, Import, LoadError, MAX_NESTING, MAX_PARTS, MAX_PLUGIN_BYTES, Plugin,
    PluginInfo,
};
pub use self::run::RunError;
use self::state::RunState;
pub use self::state::{Journal, JournalFuture, MAX_CHILDREN};
pub use self::wasi_config::{ConfigStore, ConfigValues, ConfigValuesError, REDACTED, Secret};

/// How the process-wide sandbox is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// How many attempts may run at once; sizes the pooling allocator. Attempts beyond this
    /// wait for a free slot.
    pub concurrency: u32,
    /// The largest memory cap any plugin may be given, in bytes (the pool's slot size).
    pub max_memory: usize,
    /// The most wasm stack an attempt may use, in bytes.
    pub max_wasm_stack: usize,
    /// How often the epoch ticker advances; a spinning guest is stopped at most about one tick
    /// after its deadline.
    pub epoch_tick: Duration,
    /// Meter fuel, so that plugins may be given a fuel budget ([`Limits::fuel`]). Costs some
    /// speed on every plugin, so it is off by default.
    pub fuel: bool,
    /// Check the epoch in guest code. On by default; only benchmarks turn it off, to measure
    /// what it costs. Without it, a spinning guest cannot be stopped.
    pub epoch_interruption: bool,
    /// Link `wasi:http` and `wasi:config`, and set up each attempt's state for them. On by
    /// default; only benchmarks turn it off, to measure what linking them costs. Without it, a
    /// plugin importing either interface cannot be loaded, and no plugin reads its config.
    pub capabilities: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            concurrency: 16,
            max_memory: 1 << 30,
            max_wasm_stack: 1 << 20,
            epoch_tick: Duration::from_millis(1),
            fuel: false,
            epoch_interruption: true,
            capabilities: true,
        }
    }
}

/// Why the sandbox could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The configuration is out of range.
    #[error("bad sandbox configuration: {0}")]
    Config(String),
    /// wasmtime refused the engine configuration or the host's imports.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
}

/// The process-wide sandbox: one engine, one linker, one epoch ticker.
///
/// Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<RunState>>,
    config: SandboxConfig,
    slots: Arc<tokio::sync::Semaphore>,
    /// The compile cache and this engine's key in it, if caching is on.
    cache: Option<(Arc<CompileCache>, Arc<str>)>,
}

impl Sandbox {
    /// Build the engine and linker and start the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        engine::link(&mut linker, config.capabilities)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        if config.epoch_interruption {
            engine::start_ticker(&engine, config.epoch_tick)?;
        }
        Ok(Sandbox {
            slots: Arc::new(tokio::sync::Semaphore::new(config.concurrency as usize)),
            engine,
            linker: Arc::new(linker),
            config,
            cache: None,
        })
    }

    /// The same sandbox keeping compiled plugins in `cache` (none: compile every load).
    pub fn with_cache(mut self, cache: Option<CompileCache>) -> Self {
        self.cache = cache.map(|c| (Arc::new(c), cache::engine_key(&self.engine).into()));
        self
    }

    /// The compile cache in use, if any.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref().map(|(c, _)| &**c)
    }

    /// The configuration the sandbox was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), LoadError> {
        if limits.memory < MIN_MEMORY {
            return Err(LoadError::Limits {
                reason: format!(
                    "memory cap {} is below the minimum of {}: no plugin can start in less",
                    bytesize::ByteSize(limits.memory as u64).display().iec(),
                    bytesize::ByteSize(MIN_MEMORY as u64).display().iec()
                ),
            });
        }
        if limits.memory > self.config.max_memory {
            return Err(LoadError::Limits {
                reason: format!(
                    "memory cap {} is above the sandbox's maximum of {}",
                    bytesize::ByteSize(limits.memory as u64).display().iec(),
                    bytesize::ByteSize(self.config.max_memory as u64)
                        .display()
                        .iec()
                ),
            });
        }
        if limits.fuel.is_some() && !self.config.fuel {
            return Err(LoadError::Limits {
                reason: "a fuel budget needs a sandbox built with fuel metering".to_owned(),
            });
        }
        Ok(())
    }
}
