//! The worker, end to end through the real `spool` binary and a real SQLite file.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Setup, event_counts, event_kinds, plugin_path, state, stop};

const EMAIL_CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "2s"
shutdown_grace = "1s"

[queues.email]
plugin = "EMAIL"
timeout = "3s"
max_attempts = 3
backoff = { initial = "100ms", factor = 2.0, jitter = 0.0 }

[queues.email.grants]
http = ["http://127.0.0.1:*"]   # the email plugin imports wasi:http
"#;

#[test]
fn jobs_run_to_their_end_state_with_their_history() {
    let s = Setup::new(EMAIL_CONFIG);
    let ok = s.enqueue("email", r#"{"to":"ada@example.com","mode":"ok"}"#);
    let flaky = s.enqueue("email", r#"{"to":"ada@example.com","mode":"flaky"}"#);
    let fail = s.enqueue("email", r#"{"to":"ada@example.com","mode":"fail"}"#);
    let reject = s.enqueue("email", r#"{"to":"nobody","mode":"reject"}"#);
    let bad = s.enqueue("email", r#"{"mode":"ok"}"#);
    let worker = s.worker(&[]);
    let finished = |j: &Value| matches!(state(j), "succeeded" | "dead");

    let job = s.wait_for(&ok, Duration::from_secs(20), finished);
    assert_eq!(state(&job), "succeeded");
    assert_eq!(job["output"]["sent_to"], "ada@example.com", "{job:#}");

    let job = s.wait_for(&flaky, Duration::from_secs(20), finished);
    assert_eq!(state(&job), "succeeded");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 2);

    let job = s.wait_for(&fail, Duration::from_secs(20), finished);
    assert_eq!(state(&job), "dead");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a["phase"] == "run" && a["digest"].is_string())
    );
    let kinds = event_kinds(&job);
    assert_eq!(
        kinds.iter().filter(|k| **k == "retry-scheduled").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"dead-lettered"), "{kinds:?}");

    let job = s.wait_for(&reject, Duration::from_secs(20), finished);
    assert_eq!(state(&job), "dead");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);

    let job = s.wait_for(&bad, Duration::from_secs(20), finished);
    assert_eq!(state(&job), "dead");
    assert_eq!(job["attempts"][0]["phase"], "decode");

    // The dead-letter queue: list, replay by filter, purge, with counts.
    let dead = s.json_lines(&["dlq", "list", "--json"]);
    assert_eq!(dead.as_array().unwrap().len(), 3);
    let (code, out, _) = s.run(&["dlq", "replay", "--queue", "email", "--phase", "decode"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("replayed 1 job"), "{out}");
    s.wait_for(&bad, Duration::from_secs(20), |j| {
        state(j) == "dead" && j["attempts"].as_array().unwrap().len() == 2
    });
    let (code, out, _) = s.run(&["dlq", "purge", &reject]);
    assert_eq!(code, Some(0));
    assert!(out.contains("purged 1 job"), "{out}");
    stop(worker, "-TERM");
}

#[test]
fn a_hang_is_aborted_at_its_timeout_and_dead_lettered_after_its_attempts() {
    let s = Setup::new(&EMAIL_CONFIG.replace("timeout = \"3s\"", "timeout = \"300ms\""));
    let hang = s.enqueue("email", r#"{"to":"ada@example.com","mode":"hang"}"#);
    let worker = s.worker(&[]);
    let job = s.wait_for(&hang, Duration::from_secs(20), |j| state(j) == "dead");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    for a in attempts {
        assert_eq!(a["phase"], "timeout");
        let ms = a["finished_at"].as_i64().unwrap() - a["started_at"].as_i64().unwrap();
        assert!((300..1000).contains(&ms), "attempt took {ms} ms");
    }
    assert!(!job["checkpoint"].is_null(), "{job:#}");
    stop(worker, "-TERM");
}

/// A deadline that lands while the guest is inside a write is a timeout, not a trap: the
/// store refuses a checkpoint past the attempt's deadline, and when that refusal comes before
/// the host's own abort, it is the deadline's all the same.
#[test]
fn a_deadline_during_a_checkpoint_is_a_timeout() {
    let s = Setup::new(
        r#"
[worker]
concurrency = 4

[queues.hostile]
plugin = "HOSTILE"
timeout = "200ms"
max_attempts = 1
"#,
    );
    let ids: Vec<String> = (0..8)
        .map(|_| s.enqueue("hostile", r#"{"behaviour":"checkpoints"}"#))
        .collect();
    let worker = s.worker(&[]);
    for id in &ids {
        let job = s.wait_for(id, Duration::from_secs(30), |j| state(j) == "dead");
        let attempt = &job["attempts"][0];
        assert_eq!(attempt["outcome"], "timed-out", "{job:#}");
        assert_eq!(attempt["phase"], "timeout", "{job:#}");
    }
    stop(worker, "-TERM");
}

#[test]
fn a_queue_with_no_plugin_waits_visibly_and_nothing_is_lost() {
    let s = Setup::new(EMAIL_CONFIG);
    let (code, stdout, stderr) = s.run(&["enqueue", "sms", r#"{"to":"+1555"}"#, "--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.trim().to_owned();
    let worker = s.worker(&[]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(&s.job(&id)), "ready");
    let (code, out, _) = s.run(&["queues"]);
    assert_eq!(code, Some(0));
    let sms = out
        .lines()
        .find(|l| l.starts_with("sms"))
        .unwrap_or_default();
    assert!(sms.contains("NO HANDLER"), "{out}");
    stop(worker, "-TERM");
}

#[test]
fn enqueue_refuses_a_payload_that_is_not_json_and_reports_duplicates() {
    let s = Setup::new(EMAIL_CONFIG);
    let (code, _, stderr) = s.run(&["enqueue", "email", "{to: nobody"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("bad payload"), "{stderr}");
    let first = s.json(&[
        "enqueue",
        "email",
        r#"{"to":"a@b"}"#,
        "--key",
        "k1",
        "--json",
    ]);
    let second = s.json(&[
        "enqueue",
        "email",
        r#"{"to":"a@b"}"#,
        "--key",
        "k1",
        "--json",
    ]);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["duplicate"], true);
}

#[test]
fn config_errors_name_the_key_and_the_line() {
    let s = Setup::new("[queues.email]\nplugin = \"EMAIL\"\nconcurrency = 0\n");
    let (code, _, stderr) = s.run(&["worker"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("positive integer"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");

    let s = Setup::new("[queues.email]\nplugin = \"EMAIL\"\ntimeot = \"5s\"\n");
    let (code, _, stderr) = s.run(&["worker"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("timeot"), "{stderr}");

    let s = Setup::new("[queues.email]\nplugin = \"missing.wasm\"\n");
    let (code, _, stderr) = s.run(&["worker"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("missing.wasm"), "{stderr}");
}

#[test]
fn graceful_shutdown_leaves_nothing_leased() {
    // One slot and a prefetch of two: one job runs, two wait claimed; all three go back. The
    // running one hangs well past the test (and its timeout is long) so that however slow the
    // machine, it is still running when the worker is stopped.
    let s = Setup::new(
        &EMAIL_CONFIG
            .replace("[worker]\n", "[worker]\nprefetch = 2\n")
            .replace("timeout = \"3s\"\n", "timeout = \"5m\"\n")
            .replace("max_attempts = 3\n", "max_attempts = 3\nconcurrency = 1\n"),
    );
    let ids: Vec<String> = (0..3)
        .map(|_| s.enqueue("email", r#"{"to":"a@b","mode":"hang","delay_ms":300000}"#))
        .collect();
    let worker = s.worker(&[]);
    for id in &ids {
        s.wait_for(id, Duration::from_secs(60), |j| state(j) == "running");
    }
    stop(worker, "-TERM");
    for id in &ids {
        let job = s.job(id);
        assert_eq!(state(&job), "ready", "{job:#}");
        assert!(job["lease"].is_null());
        let kinds = event_kinds(&job);
        assert!(kinds.contains(&"released"), "{kinds:?}");
    }
}

/// (running, succeeded) jobs of `queue` in the database; running counts the jobs held claimed
/// too, started or not.
fn running_and_succeeded(db: &Path, queue: &str) -> (u64, u64) {
    use spool::queue::Backend;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = spool::queue::sqlite::SqliteBackend::open(db, Default::default()).unwrap();
        let counts = backend.queues().await.unwrap();
        let q = counts
            .iter()
            .find(|c| c.queue == queue)
            .cloned()
            .unwrap_or_default();
        (q.running, q.succeeded)
    })
}

/// Long jobs stay fair under the default prefetch ("auto"): a worker running 2 s jobs holds
/// none claimed beyond its slots once it has timed them, so a second worker that starts
/// finds the waiting jobs and runs them at once. A fixed prefetch does hold them on the busy
/// worker (checked first, so the test can tell the difference).
#[test]
fn long_jobs_are_not_held_away_from_an_idle_worker() {
    const JOBS: u64 = 8;
    for prefetch in ["prefetch = 2\n", ""] {
        let s = Setup::new(
            &EMAIL_CONFIG
                .replace("concurrency = 8\n", &format!("concurrency = 2\n{prefetch}"))
                .replace("lease = \"2s\"", "lease = \"30s\"")
                .replace("timeout = \"3s\"", "timeout = \"20s\""),
        );
        let ids: Vec<String> = (0..JOBS)
            .map(|_| s.enqueue("email", r#"{"to":"a@b","mode":"hang","delay_ms":2000}"#))
            .collect();
        let mut first = vec![s.worker(&[])];
        // The first wave done, the worker knows how long its jobs take; for a while, count
        // the jobs it holds.
        let waiting = Instant::now();
        while running_and_succeeded(&s.db(), "email").1 < 2 {
            s.assert_running(&mut first);
            assert!(
                waiting.elapsed() < Duration::from_secs(60),
                "{}",
                s.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut held = 0;
        let watching = Instant::now();
        while watching.elapsed() < Duration::from_secs(1) {
            held = held.max(running_and_succeeded(&s.db(), "email").0);
            std::thread::sleep(Duration::from_millis(20));
        }
        if !prefetch.is_empty() {
            assert_eq!(held, 4, "two running and two held by a fixed prefetch of 2");
            stop(first.remove(0), "-TERM");
            continue;
        }
        assert_eq!(held, 2, "a worker with two slots held more than it runs");
        // The second worker finds work at once: the next two jobs each worker starts run
        // side by side.
        let mut workers = vec![first.remove(0), s.worker(&[])];
        let both = Instant::now();
        while running_and_succeeded(&s.db(), "email").1 < JOBS {
            s.assert_running(&mut workers);
            assert!(
                both.elapsed() < Duration::from_secs(60),
                "{}",
                s.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let by_second = ids
            .iter()
            .filter(|id| {
                let job = s.job(id);
                let last = job["attempts"].as_array().unwrap().last().cloned().unwrap();
                last["worker"] != s.job(&ids[0])["attempts"][0]["worker"]
            })
            .count();
        assert!(by_second >= 2, "the second worker ran {by_second} jobs");
        for worker in workers {
            stop(worker, "-TERM");
        }
    }
}

#[test]
fn a_killed_workers_jobs_come_back_after_the_lease_and_none_is_lost() {
    let s = Setup::new(EMAIL_CONFIG);
    let ids: Vec<String> = (0..4)
        .map(|_| s.enqueue("email", r#"{"to":"a@b","mode":"hang","delay_ms":1500}"#))
        .collect();
    let first = s.worker(&[]);
    for id in &ids {
        s.wait_for(id, Duration::from_secs(10), |j| state(j) == "running");
    }
    stop(first, "-KILL");
    let second = s.worker(&[]);
    for id in &ids {
        let job = s.wait_for(id, Duration::from_secs(30), |j| state(j) == "succeeded");
        let kinds = event_kinds(&job);
        assert!(kinds.contains(&"lease-expired"), "{kinds:?}");
        assert_eq!(job["attempts"][0]["phase"], "lease-expired");
    }
    stop(second, "-TERM");
}

/// (succeeded jobs, `started` events) in the database, read through the backend.
fn count_jobs(db: &Path) -> (u64, u64) {
    use spool::queue::{Backend, EventKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = spool::queue::sqlite::SqliteBackend::open(db, Default::default()).unwrap();
        let succeeded = backend
            .queues()
            .await
            .unwrap()
            .iter()
            .map(|q| q.succeeded)
            .sum();
        let started = event_counts(&backend)
            .await
            .get(&EventKind::Started)
            .copied();
        (succeeded, started.unwrap_or(0))
    })
}

#[test]
fn two_worker_processes_on_one_file_run_ten_thousand_jobs_exactly_once() {
    let s = Setup::new(
        r#"
[worker]
concurrency = 16
[queues.noop]
plugin = "NOOP"
concurrency = 16
"#,
    );
    // Enqueue through the library in batches (the CLI enqueues one at a time).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use spool::queue::Backend;
        let backend =
            spool::queue::sqlite::SqliteBackend::open(&s.db(), Default::default()).unwrap();
        for _ in 0..10 {
            let jobs = (0..1000)
                .map(|_| spool::queue::NewJob {
                    queue: "noop".to_owned(),
                    payload: b"{}".to_vec(),
                    ..Default::default()
                })
                .collect();
            backend.enqueue(jobs).await.unwrap();
        }
    });
    let a = s.worker(&[]);
    let b = s.worker(&[]);
    let start = Instant::now();
    loop {
        let (succeeded, _) = count_jobs(&s.db());
        if succeeded == 10_000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{succeeded} of 10000 after 120 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(a, "-TERM");
    stop(b, "-TERM");
    let (succeeded, started) = count_jobs(&s.db());
    assert_eq!(succeeded, 10_000);
    assert_eq!(started, 10_000, "some job was started twice");
}

#[test]
fn a_changed_plugin_file_is_reloaded_without_a_restart_and_events_name_the_digest() {
    let s = Setup::new(
        r#"
[worker]
concurrency = 2
[queues.work]
plugin = "plugin.wasm"
[queues.work.grants]
http = ["http://127.0.0.1:*"]   # the email plugin imports wasi:http
"#,
    );
    let plugin = s.dir.path().join("plugin.wasm");
    std::fs::copy(plugin_path("email"), &plugin).unwrap();
    let email_digest = spool::Digest::of(&std::fs::read(plugin_path("email")).unwrap());
    let noop_digest = spool::Digest::of(&std::fs::read(plugin_path("noop")).unwrap());
    let worker = s.worker(&[]);
    let first = s.enqueue("work", r#"{"to":"ada@example.com"}"#);
    let job = s.wait_for(&first, Duration::from_secs(20), |j| state(j) == "succeeded");
    assert_eq!(job["attempts"][0]["digest"], email_digest.as_str());

    // Swap the file in place (write to a temporary name, then rename, as a deploy would).
    let staged = s.dir.path().join("plugin.wasm.new");
    std::fs::copy(plugin_path("noop"), &staged).unwrap();
    std::fs::rename(&staged, &plugin).unwrap();
    let start = Instant::now();
    loop {
        let (_, out, _) = s.run(&["events"]);
        if out.contains("plugin-reloaded") {
            assert!(out.contains(&noop_digest.as_str()[..12]), "{out}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no reload: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = s.enqueue("work", r#"{"to":"ada@example.com"}"#);
    let job = s.wait_for(&second, Duration::from_secs(20), |j| {
        state(j) == "succeeded"
    });
    assert_eq!(job["attempts"][0]["digest"], noop_digest.as_str());
    stop(worker, "-TERM");
}
