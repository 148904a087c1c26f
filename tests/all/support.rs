//! Shared setup: one sandbox per test binary, plugins built from source and compiled once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use spool::{JobInput, Limits, Plugin, Sandbox, SandboxConfig};

/// The sandbox every test shares, as a worker process would.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        Sandbox::new(SandboxConfig {
            concurrency: 8,
            max_memory: 256 << 20,
            ..SandboxConfig::default()
        })
        .expect("sandbox")
    })
}

/// The path of a plugin built from `plugins/<name>`.
pub fn plugin_path(name: &str) -> PathBuf {
    xtask::plugin(name).expect("plugins build")
}

/// The plugin `name`, compiled once per test binary, under `limits`.
pub fn plugin_with(name: &str, limits: Limits) -> Plugin {
    static LOADED: OnceLock<Mutex<HashMap<String, Plugin>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let compiled = {
        let mut loaded = loaded.lock().expect("plugin cache");
        match loaded.get(name) {
            Some(plugin) => plugin.clone(),
            None => {
                let plugin = sandbox()
                    .load_plugin(&plugin_path(name), Limits::default())
                    .unwrap_or_else(|e| panic!("plugin {name} refused: {e}"));
                loaded.insert(name.to_owned(), plugin.clone());
                plugin
            }
        }
    };
    sandbox().with_limits(&compiled, limits).expect("limits")
}

/// The plugin `name` with a short timeout and a small memory cap.
pub fn plugin(name: &str) -> Plugin {
    plugin_with(name, limits())
}

/// Limits for tests: 2 s timeout, 64 MiB memory.
pub fn limits() -> Limits {
    Limits {
        timeout: Some(Duration::from_secs(2)),
        memory: 64 << 20,
        ..Limits::default()
    }
}

/// A first attempt of a job with this JSON payload.
pub fn job(payload: serde_json::Value) -> JobInput {
    JobInput {
        id: "job-1".to_owned(),
        max_attempts: 3,
        ..JobInput::new("test", payload.to_string().into_bytes())
    }
}

/// The `spool` binary.
pub fn spool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spool"))
}

/// Every log line's message, joined, for assertions.
pub fn log_text(report: &spool::AttemptReport) -> String {
    report
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
