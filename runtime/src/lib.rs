//! Spool: a job runtime whose job handlers are WebAssembly components.
//!
//! This crate is the host. [`sandbox`] runs one attempt of a job in a fresh, capped
//! WebAssembly instance and reports a typed [`Outcome`]; the queue, the worker and the
//! backends are built around it. The contract with plugins is the WIT package in `wit/`.

mod bindings;
pub mod config;
pub mod events;
pub mod job;
pub mod json;
pub mod metrics;
pub mod outcome;
pub mod queue;
pub mod retry;
pub mod sandbox;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod trace;
pub mod units;
pub mod worker;

pub use job::JobInput;
pub use outcome::{AttemptReport, HttpUsage, LogLevel, LogLine, LogSource, Outcome, TrapKind};
pub use sandbox::{
    CacheStatus, CompileCache, Digest, Grants, HttpGrant, HttpLimits, HttpPattern, Limits,
    LoadError, MAX_NESTING, MAX_PARTS, MAX_PLUGIN_BYTES, Plugin, PluginInfo, RunError, Sandbox,
    SandboxConfig,
};
