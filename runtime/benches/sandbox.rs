//! Sandbox benchmarks: per-run cost, abort latency, and the cost of epoch interruption.
//!
//! Run with `cargo bench -p spool-runtime --bench sandbox` (add `-- quick` for a shorter run).
//! Figures go into BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use spool::{JobInput, Limits, Outcome, Plugin, Sandbox, SandboxConfig};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 5 } else { 1 };
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 4,
        max_memory: 256 << 20,
        ..SandboxConfig::default()
    })
    .unwrap();
    let load = |sandbox: &Sandbox, name: &str, limits: Limits| {
        let path = xtask::plugin(name).unwrap();
        sandbox.load_plugin(&path, limits).unwrap()
    };

    println!("## per-run cost: instantiate + call + teardown of the no-op plugin");
    let noop = load(&sandbox, "noop", Limits::default());
    let runs = 100_000 / scale;
    per_run(&sandbox, &noop, 1, runs);
    per_run(&sandbox, &noop, 2, runs);

    println!("\n## abort latency after the deadline");
    let deadline = Duration::from_millis(100);
    let hostile = load(
        &sandbox,
        "hostile",
        Limits {
            timeout: Some(deadline),
            ..Limits::default()
        },
    );
    let samples = 200 / scale;
    abort_latency(&sandbox, &hostile, "spin", deadline, samples);
    abort_latency(&sandbox, &hostile, "sleep", deadline, samples);

    println!("\n## epoch interruption on a CPU-bound plugin (median of 7 runs)");
    let unmetered = Sandbox::new(SandboxConfig {
        concurrency: 1,
        max_memory: 256 << 20,
        epoch_interruption: false,
        ..SandboxConfig::default()
    })
    .unwrap();
    let with_epochs = load(&sandbox, "cpu", Limits::default());
    let without = load(
        &unmetered,
        "cpu",
        Limits {
            timeout: None,
            ..Limits::default()
        },
    );
    println!("| work | with epochs | without | overhead |");
    println!("|---|---|---|---|");
    for (kind, n) in [
        ("arith", 200_000_000u64),
        ("btree", 2_000_000),
        ("interp", 100_000_000),
    ] {
        let n = n / scale as u64;
        let on = median_run(&sandbox, &with_epochs, kind, n);
        let off = median_run(&unmetered, &without, kind, n);
        let overhead = (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0;
        println!(
            "| {kind} (n = {n}) | {:.1} ms | {:.1} ms | {overhead:+.1}% |",
            ms(on),
            ms(off)
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn per_run(sandbox: &Sandbox, plugin: &Plugin, threads: usize, runs_per_thread: usize) {
    let job = JobInput::new("bench", b"{}".to_vec());
    // Warm the pool's slots first.
    runtime().block_on(async {
        for _ in 0..1000 {
            sandbox.run(plugin, &job).await.unwrap();
        }
    });
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                runtime().block_on(async {
                    for _ in 0..runs_per_thread {
                        let report = sandbox.run(plugin, &job).await.unwrap();
                        assert!(report.outcome.is_success());
                    }
                })
            });
        }
    });
    let elapsed = started.elapsed();
    let total = threads * runs_per_thread;
    println!(
        "{threads} thread(s): {total} runs in {:.2} s = {:.0} runs/s ({:.2} µs per run per thread)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 * threads as f64 / total as f64,
    );
}

fn abort_latency(
    sandbox: &Sandbox,
    plugin: &Plugin,
    behaviour: &str,
    deadline: Duration,
    n: usize,
) {
    let job = JobInput::new(
        "bench",
        format!(r#"{{"behaviour":"{behaviour}"}}"#).into_bytes(),
    );
    let rt = runtime();
    let mut late: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let report = rt.block_on(sandbox.run(plugin, &job)).unwrap();
        // Wall time from the call to its return, teardown included.
        let wall = started.elapsed();
        assert!(
            matches!(report.outcome, Outcome::TimedOut { .. }),
            "{behaviour}: {:?}",
            report.outcome
        );
        late.push(wall.saturating_sub(deadline));
    }
    late.sort();
    let pct = |p: f64| late[((late.len() - 1) as f64 * p).round() as usize];
    println!(
        "{behaviour}: deadline {} ms, {n} runs: returned after deadline + p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        deadline.as_millis(),
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(late[late.len() - 1]),
    );
}

fn median_run(sandbox: &Sandbox, plugin: &Plugin, kind: &str, n: u64) -> Duration {
    let job = JobInput::new(
        "bench",
        format!(r#"{{"kind":"{kind}","n":{n}}}"#).into_bytes(),
    );
    let rt = runtime();
    let mut times: Vec<Duration> = (0..7)
        .map(|_| {
            let report = rt.block_on(sandbox.run(plugin, &job)).unwrap();
            assert!(report.outcome.is_success(), "{kind}: {:?}", report.outcome);
            report.timings.run
        })
        .collect();
    times.sort();
    times[3]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
