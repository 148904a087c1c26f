//! Cancellation end to end, on both backends: a real `spool worker` runs a job that hangs
//! (its timeout a minute away) — the `email` plugin sleeping in the host, or a guest spinning
//! in its own code — and `spool cancel` from the real binary has it aborted within a few
//! seconds with no retry; the worker goes on serving, and a queued job cancelled by a filter
//! never runs.

use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::nats_server::NatsServer;

use crate::support::{Setup, event_kinds, plugin_path, state, stop};

const CONFIG: &str = r#"
[worker]
concurrency = 4
lease = "30s"

[queues.email]
plugin = "EMAIL"
timeout = "60s"
max_attempts = 3
concurrency = 2

[queues.email.grants]
http = ["http://127.0.0.1:*"]   # the email plugin imports wasi:http
"#;

/// How long the abort may take once `spool cancel` returned (generous: a debug build on a
/// shared machine; the renewal that would otherwise find the lease gone is 10 s away).
const ABORT_BOUND: Duration = Duration::from_secs(3);

fn count(job: &Value, kind: &str) -> usize {
    event_kinds(job).iter().filter(|k| **k == kind).count()
}

/// A guest blocked in a host call (a WASI sleep) is aborted at once when its job is cancelled.
fn cancel_end_to_end(s: &Setup) {
    let mut worker = s.worker(&[]);
    let hung = s.enqueue(
        "email",
        r#"{"to": "a@example.com", "mode": "hang", "delay_ms": 60000}"#,
    );
    // Running, past its checkpoint: the guest sleeps inside the host.
    s.wait_for(&hung, Duration::from_secs(60), |j| {
        count(j, "checkpointed") == 1
    });
    let (code, stdout, stderr) = s.run(&["cancel", &hung]);
    let cancelled_at = Instant::now();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("job {hung}: cancelled")),
        "{stdout}"
    );
    assert!(stdout.contains("cancelled 1 of 1 job(s)"), "{stdout}");
    let aborted = wait_for_abort(s, &hung, cancelled_at);
    eprintln!("the worker aborted the sleeping attempt {aborted:?} after `spool cancel` returned");

    // The worker goes on serving.
    let ok = s.enqueue("email", r#"{"to": "c@example.com"}"#);
    s.wait_for(&ok, Duration::from_secs(30), |j| state(j) == "succeeded");
    s.assert_running(std::slice::from_mut(&mut worker));
    let job = s.job(&hung);
    assert_cancelled_in_its_one_attempt(&job, "cancelled by operator");
    // What the attempt did is kept: the plugin that ran, and what it logged before the cancel.
    let email = spool::Digest::of(&std::fs::read(plugin_path("email")).unwrap());
    assert_eq!(job["attempts"][0]["digest"], email.as_str(), "{job:#}");
    let logged: Vec<&str> = job["attempts"][0]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert_eq!(
        logged[..2],
        ["sending email", "waiting for the smtp server"],
        "{job:#}"
    );
    stop(worker, "-TERM");
}

/// `job` (as `spool job --json` prints it) is cancelled, with `reason`, in its one attempt:
/// started once, recorded as cancelled, never failed, retried, expired or succeeded.
fn assert_cancelled_in_its_one_attempt(job: &Value, reason: &str) {
    assert_eq!(state(job), "cancelled", "{job:#}");
    assert_eq!(count(job, "started"), 1, "no retry: {job:#}");
    for kind in ["failed", "retry-scheduled", "lease-expired", "succeeded"] {
        assert_eq!(count(job, kind), 0, "{kind}: {job:#}");
    }
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1, "{job:#}");
    assert_eq!(job["attempts"][0]["outcome"], "cancelled");
    assert_eq!(job["attempts"][0]["error"], reason);
}

#[test]
fn on_sqlite_spool_cancel_aborts_an_attempt_sleeping_in_the_host_at_once_with_no_retry() {
    let s = Setup::new(CONFIG);
    cancel_end_to_end(&s);
}

#[test]
fn on_nats_spool_cancel_aborts_an_attempt_sleeping_in_the_host_at_once_with_no_retry() {
    let server = NatsServer::start();
    let s = Setup::nats(CONFIG, &server.url());
    cancel_end_to_end(&s);
}

/// The handler of a guest that spins forever: only the epoch machinery (a yield, or the
/// deadline) ever stops it.
const SPIN: &str = "(loop $spin (br $spin)) (unreachable)";

/// The handler of a guest that succeeds at once with an empty output: the result
/// (`ok(list<u8>)`: tag 0, then pointer and length 0) sits zeroed at address 16.
const SUCCEED: &str = "(i32.const 16)";

/// A component of the Spool world whose handler runs `body`, built from inline WAT (with a
/// bump allocator for the job the host hands in), written to `dir/name.wasm`.
fn component(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let core = format!(
        r#"
        (module
          (memory (export "memory") 1)
          (global $next (mut i32) (i32.const 1024))
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $at i32)
            (local.set $at
              (i32.and
                (i32.add (global.get $next) (i32.sub (local.get 2) (i32.const 1)))
                (i32.sub (i32.const 0) (local.get 2))))
            (global.set $next (i32.add (local.get $at) (local.get 3)))
            (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
              (then (drop (memory.grow
                (i32.add (i32.div_u (global.get $next) (i32.const 65536)) (i32.const 1))))))
            (local.get $at))
          (func (export "spool:job/handler@0.2.0#handle") (param i32) (result i32)
            {body}))
        "#
    );
    let mut resolve = wit_parser::Resolve::default();
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/job.wit");
    let package = resolve.push_file(&wit).unwrap();
    let world = resolve.select_world(&[package], Some("plugin")).unwrap();
    let mut module = wat::parse_str(core).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, component).unwrap();
    path
}

/// Queue `spin` runs a guest that spins, queue `ok` one that succeeds at once.
fn spin_config(dir: &std::path::Path) -> String {
    format!(
        r#"
[worker]
concurrency = 4
lease = "30s"

[worker.retention]
succeeded = "1h"
cancelled = "7d"

[queues.spin]
plugin = "{}"
timeout = "60s"
max_attempts = 3
concurrency = 2

[queues.ok]
plugin = "{}"
"#,
        component(dir, "spin", SPIN).display(),
        component(dir, "ok", SUCCEED).display(),
    )
}

/// A spinning guest never yields on its own: the worker still aborts it at once.
fn cancel_spinning(s: &Setup) {
    let mut worker = s.worker(&[]);
    let spinning = s.enqueue("spin", "{}");
    s.wait_for(&spinning, Duration::from_secs(60), |j| {
        state(j) == "running"
    });
    // Let it spin a little inside the guest.
    std::thread::sleep(Duration::from_millis(300));
    let (code, stdout, stderr) = s.run(&["cancel", &spinning, "--reason", "stuck"]);
    let cancelled_at = Instant::now();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("job {spinning}: cancelled")),
        "{stdout}"
    );
    let aborted = wait_for_abort(s, &spinning, cancelled_at);
    eprintln!("the worker aborted the spinning attempt {aborted:?} after `spool cancel` returned");
    // Both of the queue's slots serve the next spinning job: the cancelled one holds none.
    let next = s.enqueue("spin", "{}");
    let other = s.enqueue("spin", "{}");
    for id in [&next, &other] {
        s.wait_for(id, Duration::from_secs(30), |j| state(j) == "running");
    }
    s.assert_running(std::slice::from_mut(&mut worker));
    let (code, stdout, stderr) = s.run(&["cancel", "--queue", "spin", "--state", "running"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "cancelled 2 job(s)");
    for id in [&next, &other] {
        wait_for_abort(s, id, Instant::now());
    }
    let job = s.job(&spinning);
    assert_cancelled_in_its_one_attempt(&job, "stuck");
    let event = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "cancelled")
        .unwrap();
    assert_eq!(event["message"], "stuck");
    assert!(
        event["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("worker-")),
        "{event:#}"
    );

    // A queued job, not due for a moment, cancelled by a filter: it never runs, while the
    // worker goes on serving the queue.
    let (code, stdout, stderr) =
        s.run(&["enqueue", "ok", "{}", "--delay", "1s", "--tenant", "acme"]);
    assert_eq!(code, Some(0), "{stderr}");
    let queued = stdout.split_whitespace().next().unwrap().to_owned();
    let (code, _, stderr) = s.run(&["cancel"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("refusing to cancel every unfinished job"),
        "{stderr}"
    );
    let (code, _, stderr) = s.run(&["cancel", "--queue", "ok", "--state", "succeeded"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("succeeded jobs are finished"), "{stderr}");
    let (code, stdout, stderr) = s.run(&[
        "cancel", "--queue", "ok", "--state", "queued", "--tenant", "acme",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.trim(), "cancelled 1 job(s)");
    let ok = s.enqueue("ok", "{}");
    s.wait_for(&ok, Duration::from_secs(30), |j| state(j) == "succeeded");
    std::thread::sleep(Duration::from_millis(1500));
    s.assert_running(std::slice::from_mut(&mut worker));
    let job = s.job(&queued);
    assert_eq!(state(&job), "cancelled", "{job:#}");
    assert_eq!(event_kinds(&job), ["enqueued", "cancelled"], "it never ran");

    // Per id: cancelled, already finished, unknown (exit status 2).
    let (code, stdout, _) = s.run(&["cancel", &ok, "999999999"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains(&format!("job {ok}: already finished (succeeded)")),
        "{stdout}"
    );
    assert!(stdout.contains("job 999999999: unknown id"), "{stdout}");
    assert!(stdout.contains("cancelled 0 of 2 job(s)"), "{stdout}");

    // `spool queues` shows every state and the retention in force.
    let (code, stdout, stderr) = s.run(&["queues"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("retention: succeeded 1h, cancelled 7days, dead until purged"),
        "{stdout}"
    );
    let row = |queue: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(queue))
            .unwrap_or_else(|| panic!("no row for {queue}: {stdout}"));
        line.split_whitespace()
            .skip(1)
            .take(7)
            .map(str::to_owned)
            .collect()
    };
    // scheduled ready running waiting succeeded dead cancelled
    assert_eq!(row("spin"), ["0", "0", "0", "0", "0", "0", "3"], "{stdout}");
    assert_eq!(row("ok"), ["0", "0", "0", "0", "1", "0", "1"], "{stdout}");
    // And `--json` carries the same, retention in seconds.
    let queues = s.json_lines(&["queues", "--json"]);
    let spin = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "spin")
        .unwrap();
    assert_eq!(spin["cancelled"], 3, "{queues:#}");
    assert_eq!(
        spin["retention"],
        serde_json::json!({ "succeeded_secs": 3600, "cancelled_secs": 7 * 86400 }),
        "{queues:#}"
    );
    stop(worker, "-TERM");
    let logs = s.worker_logs();
    assert!(
        logs.contains("1 succeeded, 0 retried, 0 delayed, 0 dead")
            && logs.contains("3 cancelled while running"),
        "{logs}"
    );
}

/// `text` without its terminal colour codes (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Wait until the worker logs that it aborted `id`'s attempt; how long after `since`.
fn wait_for_abort(s: &Setup, id: &str, since: Instant) -> Duration {
    loop {
        let logs = plain(&s.worker_logs());
        if logs.lines().any(|l| {
            l.contains("job cancelled: aborting the attempt") && l.contains(&format!("job={id} "))
        }) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < ABORT_BOUND,
            "the worker did not abort job {id} within {ABORT_BOUND:?}:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn on_sqlite_a_spinning_guest_is_aborted_at_once_when_its_job_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::new(&spin_config(dir.path()));
    cancel_spinning(&s);
}

#[test]
fn on_nats_a_spinning_guest_is_aborted_at_once_when_its_job_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start();
    let s = Setup::nats(&spin_config(dir.path()), &server.url());
    cancel_spinning(&s);
}

/// A spinning guest still times out at its deadline, not before and not much after: the
/// yields that let a cancel drop it do not move the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_guest_that_yields_still_times_out_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_millis(300);
    let limits = spool::Limits {
        timeout: Some(deadline),
        ..crate::support::limits()
    };
    let spin = crate::support::sandbox()
        .load_plugin(&component(dir.path(), "spin", SPIN), limits)
        .unwrap();
    let started = Instant::now();
    let report = crate::support::sandbox()
        .run(&spin, &crate::support::job(serde_json::json!({})))
        .await
        .unwrap();
    let wall = started.elapsed();
    let spool::Outcome::TimedOut { elapsed } = report.outcome else {
        panic!("expected a timeout, got {:?}", report.outcome);
    };
    assert!(elapsed >= deadline, "aborted early: {elapsed:?}");
    assert!(wall < deadline * 2, "aborted late: {wall:?}");
}

/// Dropping a spinning guest's run (what a worker does to a cancelled attempt) stops it at
/// once, with no timeout at all: its thread is free again for other work.
#[tokio::test(flavor = "current_thread")]
async fn dropping_a_spinning_guests_run_stops_it_at_once_without_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let limits = spool::Limits {
        timeout: None,
        ..crate::support::limits()
    };
    let spin = crate::support::sandbox()
        .load_plugin(&component(dir.path(), "spin", SPIN), limits)
        .unwrap();
    let input = crate::support::job(serde_json::json!({}));
    let started = Instant::now();
    // One thread: the timer below can only fire if the guest yields it the thread.
    let run = tokio::time::timeout(
        Duration::from_millis(200),
        crate::support::sandbox().run(&spin, &input),
    )
    .await;
    let wall = started.elapsed();
    assert!(run.is_err(), "the guest cannot finish: {run:?}");
    assert!(wall < Duration::from_secs(1), "dropped late: {wall:?}");
}
