//! What a plugin's language costs: component size, load time (compile) cold and from the
//! compile cache, and the per-run cost (instantiate + call + teardown) of a no-op job, for
//! Rust, Python (componentize-py) and JavaScript (ComponentizeJS).
//!
//! Run with `cargo bench -p spool-runtime --bench polyglot` (add `-- quick` for fewer runs).
//! The plugins are built by the bench itself (the Python and JavaScript ones need `python3`
//! and `node`). Figures go into BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spool::{CacheStatus, CompileCache, JobInput, Limits, Plugin, Sandbox, SandboxConfig};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let plugins: [(&str, PathBuf, &[u8]); 3] = [
        ("Rust (noop)", xtask::plugin("noop").unwrap(), b"{}"),
        (
            "Python (email-py, payload \"noop\")",
            xtask::build_python_plugin().unwrap(),
            b"\"noop\"",
        ),
        (
            "JavaScript (email-js, payload \"noop\")",
            xtask::build_js_plugin().unwrap(),
            b"\"noop\"",
        ),
    ];
    let cache = tempfile::tempdir().unwrap();
    let loads = if quick { 1 } else { 3 };
    let runs = if quick { 200 } else { 2_000 };

    println!("## size, load (compile) cold and cached, per-run cost of a no-op job");
    println!(
        "| plugin | size | load, cold | load, cached | per run (p50) | per run (p99) | runs/s, 1 thread |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, path, payload) in &plugins {
        let size = std::fs::metadata(path).unwrap().len();
        let cold = median((0..loads).map(|_| {
            let _ = std::fs::remove_dir_all(cache.path());
            load(path, cache.path(), CacheStatus::Stored).1
        }));
        let cached =
            median((0..loads.max(3)).map(|_| load(path, cache.path(), CacheStatus::Hit).1));
        let (sandbox, plugin) = {
            let (sandbox, _) = load(path, cache.path(), CacheStatus::Hit);
            let plugin = sandbox
                .load_plugin_with(path, Limits::default(), grants())
                .unwrap();
            (sandbox, plugin)
        };
        let (p50, p99, rate) = per_run(&sandbox, &plugin, payload, runs);
        println!(
            "| {name} | {} | {:.0} ms | {:.1} ms | {:.0} µs | {:.0} µs | {rate:.0} |",
            if size < 1_000_000 {
                format!("{:.0} KB", size as f64 / 1e3)
            } else {
                format!("{:.1} MB", size as f64 / 1e6)
            },
            ms(cold),
            ms(cached),
            us(p50),
            us(p99),
        );
    }
}

/// The email plugins import wasi:http (they send when `api_base` is configured; the benchmark
/// configures none): granted to 127.0.0.1, as a queue running them would be.
fn grants() -> spool::Grants {
    let mut queue = spool::config::QueueConfig::new("email");
    queue.grants.http = vec!["http://127.0.0.1:*".parse().unwrap()];
    queue.grants("email")
}

fn sandbox(cache: &Path) -> Sandbox {
    Sandbox::new(SandboxConfig {
        concurrency: 4,
        max_memory: 256 << 20,
        ..SandboxConfig::default()
    })
    .unwrap()
    .with_cache(Some(CompileCache::new(cache.to_owned())))
}

/// Load `path` on a new sandbox (as a starting worker does): the sandbox and the load time.
fn load(path: &Path, cache: &Path, expect: CacheStatus) -> (Sandbox, Duration) {
    let sandbox = sandbox(cache);
    let start = Instant::now();
    let plugin = sandbox
        .load_plugin_with(path, Limits::default(), grants())
        .unwrap();
    let took = start.elapsed();
    assert_eq!(plugin.cache_status(), expect, "{}", path.display());
    (sandbox, took)
}

/// `runs` sequential runs after 50 warm-up ones: p50, p99, runs per second.
fn per_run(
    sandbox: &Sandbox,
    plugin: &Plugin,
    payload: &[u8],
    runs: usize,
) -> (Duration, Duration, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let job = JobInput::new("bench", payload.to_vec());
    rt.block_on(async {
        for _ in 0..50 {
            let report = sandbox.run(plugin, &job).await.unwrap();
            assert!(report.outcome.is_success(), "{report:?}");
        }
        let mut times = Vec::with_capacity(runs);
        let start = Instant::now();
        for _ in 0..runs {
            let t = Instant::now();
            sandbox.run(plugin, &job).await.unwrap();
            times.push(t.elapsed());
        }
        let rate = runs as f64 / start.elapsed().as_secs_f64();
        times.sort();
        (times[runs / 2], times[runs * 99 / 100], rate)
    })
}

fn median(times: impl Iterator<Item = Duration>) -> Duration {
    let mut times: Vec<Duration> = times.collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
