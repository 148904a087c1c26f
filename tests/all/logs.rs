//! What a worker writes on stderr, through the real binary: plain text away from a terminal,
//! JSON on every line with `--log-format json`, its stop logged, a second signal obeyed at once,
//! and `SPOOL_LOG` levels aimed at Spool rather than the libraries under it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Setup, plugin_path, state, stop};

/// Wait until the worker's log contains `needle`, or panic after a minute.
fn wait_for_log(s: &Setup, needle: &str) {
    let start = Instant::now();
    while !s.worker_logs().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no `{needle}` in:\n{}",
            s.worker_logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_lines(s: &Setup) -> Vec<String> {
    std::fs::read_to_string(s.dir.path().join("worker-0.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_json_worker_writes_only_json_lines_and_logs_its_reload_stop_and_summary() {
    let s = Setup::new(
        "[worker]\nshutdown_grace = \"7s\"\n\n[queues.email]\nplugin = \"job.wasm\"\n[queues.email.grants]\nhttp = [\"http://127.0.0.1:*\"]\n",
    );
    let plugin = s.dir.path().join("job.wasm");
    std::fs::copy(plugin_path("noop"), &plugin).unwrap();
    let worker = s.worker(&["--log-format", "json"]);
    wait_for_log(&s, "store sqlite");
    // A new build of the plugin: the worker picks it up and says so.
    std::fs::copy(plugin_path("email"), &plugin).unwrap();
    wait_for_log(&s, "plugin-reloaded");
    let id = s.enqueue("email", r#"{"to":"ada@example.com"}"#);
    s.wait_for(&id, Duration::from_secs(30), |j| state(j) == "succeeded");
    stop(worker, "-TERM");

    let lines = log_lines(&s);
    let messages: Vec<String> = lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{}", lines.join("\n")));
            value["fields"]["message"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    for needle in [
        "concurrency 64",
        "queue email",
        "store sqlite",
        "received SIGTERM: stopping",
        "stopping: waiting up to 7s for ",
        "stopped: 1 attempts, 1 succeeded",
    ] {
        assert!(has(needle), "no `{needle}` in:\n{}", lines.join("\n"));
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"event\":\"plugin-reloaded\""))
    );
}

#[test]
fn a_worker_logging_to_a_file_writes_no_colour_codes() {
    let s = Setup::new(
        "[queues.email]\nplugin = \"EMAIL\"\n[queues.email.grants]\nhttp = [\"http://127.0.0.1:*\"]\n",
    );
    let id = s.enqueue("email", r#"{"to":"ada@example.com","mode":"fail"}"#);
    let worker = s.worker(&[]);
    s.wait_for(&id, Duration::from_secs(60), |j| state(j) == "dead");
    stop(worker, "-TERM");
    let logs = s.worker_logs();
    // The failures are logged as errors and warnings: lines with a level, no ESC bytes.
    assert!(logs.contains("ERROR") && logs.contains("WARN"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs}");
    assert!(logs.contains("stopped: 3 attempts"), "{logs}");
}

/// The first SIGINT lets running attempts finish for the grace period; a second stops the
/// worker at once, aborting them and releasing their jobs for another worker.
#[test]
fn a_second_interrupt_stops_the_worker_at_once_and_releases_its_jobs() {
    let s = Setup::new(
        "[worker]\nshutdown_grace = \"60s\"\n\n[queues.email]\nplugin = \"EMAIL\"\ntimeout = \"120s\"\n[queues.email.grants]\nhttp = [\"http://127.0.0.1:*\"]\n",
    );
    let id = s.enqueue(
        "email",
        r#"{"to":"ada@example.com","mode":"hang","delay_ms":100000}"#,
    );
    let worker = s.worker(&[]);
    s.wait_for(&id, Duration::from_secs(30), |j| state(j) == "running");
    let pid = worker.id().to_string();
    let interrupt = || {
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
    };
    interrupt();
    wait_for_log(&s, "stopping: waiting up to 1m for 1 attempts");
    let stopping = Instant::now();
    interrupt();
    wait_for_log(&s, "received SIGINT again: stopping at once");
    stop(worker, "-0");
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}\n{}",
        s.worker_logs()
    );
    let job = s.job(&id);
    assert_eq!(state(&job), "ready", "{job:#}");
    assert!(
        crate::support::event_kinds(&job).contains(&"released"),
        "{job:#}"
    );
    assert!(
        s.worker_logs().contains("1 released"),
        "{}",
        s.worker_logs()
    );
}

/// `SPOOL_LOG=debug` is Spool's debug output; wasmtime's and cranelift's (a compile logs
/// many lines) come only when a directive names them.
#[test]
fn spool_log_debug_shows_spools_events_and_not_the_compilers() {
    let worker_log = |spec: &str| {
        let s = Setup::new(
            "[queues.email]\nplugin = \"EMAIL\"\n[queues.email.grants]\nhttp = [\"http://127.0.0.1:*\"]\n",
        );
        let id = s.enqueue("email", r#"{"to":"ada@example.com"}"#);
        // A cache of its own: the worker compiles the plugin, which is when cranelift talks.
        let cache = tempfile::tempdir().unwrap();
        let log = s.dir.path().join("debug.log");
        let worker = s
            .cmd()
            .env("SPOOL_LOG", spec)
            .env("SPOOL_CACHE_DIR", cache.path())
            .arg("worker")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        s.wait_for(&id, Duration::from_secs(60), |j| state(j) == "succeeded");
        stop(worker, "-TERM");
        std::fs::read_to_string(&log).unwrap()
    };
    let debug = worker_log("debug");
    assert!(
        debug.contains("spool::events") && debug.contains("event=started"),
        "{debug}"
    );
    assert!(
        !debug.contains("cranelift") && !debug.contains("wasmtime"),
        "{}",
        &debug[..debug.len().min(3000)]
    );
    let named = worker_log("debug,cranelift_codegen=debug");
    assert!(
        named.contains("cranelift_codegen"),
        "{}",
        &named[..named.len().min(3000)]
    );
}
