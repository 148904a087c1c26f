//! The live worker registry end to end, on both backends: a `spool worker` process is listed by
//! `spool workers` (its pid, host, version and queues) while it heartbeats, `spool queues` says
//! which queues a live worker serves, a graceful stop takes the worker out at once, and a
//! killed worker drops out once its TTL (three heartbeats) has passed.

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;
use xtask::nats_server::NatsServer;

use crate::support::{Setup, stop};

/// A long heartbeat (TTL 60 s), so a worker that is gone right after a graceful stop was
/// removed, not expired.
const SLOW_BEAT: &str = r#"
[worker]
concurrency = 3
heartbeat = "20s"

[queues.served]
plugin = "NOOP"

[queues.idle]
plugin = "NOOP"
"#;

/// A short heartbeat (TTL 600 ms), so a killed worker drops out quickly.
const FAST_BEAT: &str = r#"
[worker]
concurrency = 2
heartbeat = "200ms"

[queues.served]
plugin = "NOOP"
"#;

/// Generous: debug builds on a shared machine.
const LIMIT: Duration = Duration::from_secs(60);

fn workers(s: &Setup) -> Vec<Value> {
    s.json_lines(&["workers", "--json"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Wait until `spool workers --json` lists the worker with `pid`, and return its entry.
fn listed(s: &Setup, worker: &mut Child) -> Value {
    let pid = u64::from(worker.id());
    let start = Instant::now();
    loop {
        s.assert_running(std::slice::from_mut(worker));
        if let Some(w) = workers(s).into_iter().find(|w| w["pid"] == pid) {
            return w;
        }
        assert!(
            start.elapsed() < LIMIT,
            "worker {pid} never listed:\n{}",
            s.worker_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .unwrap_or_else(|| panic!("no queue {name}: {queues:#}"))
}

fn a_worker_is_listed_while_it_runs_and_removed_when_it_stops(s: &Setup) {
    // A job no worker will take (its queue is not served) makes the store.
    s.enqueue("idle", "{}");
    assert!(workers(s).is_empty(), "no worker before one starts");
    let (code, stdout, stderr) = s.run(&["workers"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("no live workers"), "{stdout}");

    let mut worker = s.worker(&["--queues", "served"]);
    let entry = listed(s, &mut worker);
    assert_eq!(entry["queues"], serde_json::json!(["served"]), "{entry:#}");
    assert_eq!(entry["version"], env!("CARGO_PKG_VERSION"), "{entry:#}");
    assert_eq!(entry["concurrency"], 3, "{entry:#}");
    assert_eq!(entry["running"], 0, "{entry:#}");
    assert!(!entry["host"].as_str().unwrap().is_empty(), "{entry:#}");
    let id = entry["id"].as_str().unwrap();
    assert!(
        id.starts_with(&format!("worker-{}-", worker.id())),
        "{entry:#}"
    );
    let started = entry["started_at"].as_i64().unwrap();
    let beat = entry["last_heartbeat"].as_i64().unwrap();
    assert!(beat >= started && started > 0, "{entry:#}");

    // For people: one row naming the worker, its pid and its queues.
    let (code, stdout, stderr) = s.run(&["workers"]);
    assert_eq!(code, Some(0), "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id}: {stdout}"));
    assert!(row.contains(&worker.id().to_string()), "{row}");
    assert!(row.ends_with("served"), "{row}");

    // `spool queues`: both queues have a handler in the config, one a live worker.
    let queues = s.json_lines(&["queues", "--json"]);
    let served = queue(&queues, "served");
    assert_eq!(
        (&served["handler"], &served["served"], &served["workers"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::from(1)),
        "{queues:#}"
    );
    let idle = queue(&queues, "idle");
    assert_eq!(
        (&idle["handler"], &idle["served"], &idle["workers"]),
        (&Value::Bool(true), &Value::Bool(false), &Value::from(0)),
        "{queues:#}"
    );
    let (code, stdout, stderr) = s.run(&["queues"]);
    assert_eq!(code, Some(0), "{stderr}");
    let row = |name: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {stdout}"));
        // queue, seven counts, then the live workers.
        line.split_whitespace()
            .map(str::to_owned)
            .nth(8)
            .into_iter()
            .collect()
    };
    assert_eq!(row("served"), ["1"], "{stdout}");
    assert_eq!(row("idle"), ["NONE"], "{stdout}");

    // A graceful stop removes it at once: well within the 60 s its TTL would take.
    stop(worker, "-TERM");
    assert!(workers(s).is_empty(), "{:#?}", workers(s));
    let queues = s.json_lines(&["queues", "--json"]);
    assert_eq!(queue(&queues, "served")["served"], false, "{queues:#}");
}

fn a_killed_worker_drops_out_once_its_ttl_has_passed(s: &Setup) {
    // The store exists before the worker starts, so listing never finds none.
    s.enqueue("served", "{}");
    let mut worker = s.worker(&[]);
    let first = listed(s, &mut worker);
    // Heartbeats keep it listed past its TTL (600 ms), each later than the one before.
    std::thread::sleep(Duration::from_millis(1500));
    s.assert_running(std::slice::from_mut(&mut worker));
    let later = listed(s, &mut worker);
    assert!(
        later["last_heartbeat"].as_i64() > first["last_heartbeat"].as_i64(),
        "{first:#} then {later:#}"
    );
    assert_eq!(later["started_at"], first["started_at"]);

    let pid = u64::from(worker.id());
    stop(worker, "-KILL");
    let killed = Instant::now();
    while workers(s).iter().any(|w| w["pid"] == pid) {
        assert!(
            killed.elapsed() < LIMIT,
            "a killed worker stayed listed: {:#?}",
            workers(s)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let queues = s.json_lines(&["queues", "--json"]);
    assert_eq!(queue(&queues, "served")["served"], false, "{queues:#}");
}

#[test]
fn sqlite_lists_a_live_worker_and_removes_it_on_a_graceful_stop() {
    a_worker_is_listed_while_it_runs_and_removed_when_it_stops(&Setup::new(SLOW_BEAT));
}

#[test]
fn sqlite_drops_a_killed_worker_after_its_ttl() {
    a_killed_worker_drops_out_once_its_ttl_has_passed(&Setup::new(FAST_BEAT));
}

#[test]
fn nats_lists_a_live_worker_and_removes_it_on_a_graceful_stop() {
    let server = NatsServer::start();
    a_worker_is_listed_while_it_runs_and_removed_when_it_stops(&Setup::nats(
        SLOW_BEAT,
        &server.url(),
    ));
}

#[test]
fn nats_drops_a_killed_worker_after_its_ttl() {
    let server = NatsServer::start();
    a_killed_worker_drops_out_once_its_ttl_has_passed(&Setup::nats(FAST_BEAT, &server.url()));
}

#[tokio::test]
async fn a_version_5_database_gains_the_worker_registry_on_open() {
    use spool::queue::Backend;
    use spool::queue::sqlite::{SqliteBackend, SqliteOptions};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    drop(SqliteBackend::open(&path, SqliteOptions::default()).unwrap());
    // The file as a build of schema version 5 left it: no `workers` table.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TABLE workers; PRAGMA user_version = 5;")
        .unwrap();

    // A reader refuses it until a writer has migrated it.
    let err = SqliteBackend::open_read_only(&path, SqliteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("schema version 5"), "{err}");

    let backend = SqliteBackend::open(&path, SqliteOptions::default()).unwrap();
    let at = spool::queue::now();
    let worker = spool::queue::WorkerInfo {
        id: "worker-1-aaaa".into(),
        host: "h".into(),
        pid: 1,
        version: "0.1.0".into(),
        queues: vec!["email".into()],
        concurrency: 1,
        running: 0,
        started_at: at,
        last_heartbeat: at,
    };
    backend
        .heartbeat(&worker, Duration::from_secs(30))
        .await
        .unwrap();
    let reader = SqliteBackend::open_read_only(&path, SqliteOptions::default()).unwrap();
    assert_eq!(reader.workers().await.unwrap(), vec![worker]);
}
