//! Worker channels end to end, on both backends: `spool worker --queues` serves only the queues
//! it names — a worker reserved for an urgent queue never takes bulk work, and bulk work waits,
//! visibly ready, for a worker that serves it — and priorities order the work within a queue.

use std::time::Duration;

use serde_json::Value;
use xtask::nats_server::NatsServer;

use crate::support::{Setup, state, stop};

const CONFIG: &str = r#"
[worker]
concurrency = 1

[queues.bulk]
plugin = "NOOP"
concurrency = 1

[queues.urgent]
plugin = "NOOP"
concurrency = 1
"#;

/// Generous: debug builds on a shared machine.
const LIMIT: Duration = Duration::from_secs(30);

fn enqueue(s: &Setup, queue: &str, payload: &str, priority: i32) -> String {
    let priority = priority.to_string();
    let (code, stdout, stderr) = s.run(&["enqueue", queue, payload, "--priority", &priority]);
    assert_eq!(code, Some(0), "{stderr}");
    stdout.split_whitespace().next().unwrap().to_owned()
}

fn started_at(job: &Value) -> i64 {
    job["attempts"][0]["started_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("no attempt started: {job:#}"))
}

fn reserved_worker_serves_only_its_queue_in_priority_order(s: &Setup) {
    let bulk: Vec<String> = (0..5)
        .map(|i| enqueue(s, "bulk", &format!("\"bulk-{i}\""), 0))
        .collect();
    // Enqueued lowest priority first: the worker must start them the other way round.
    let low = enqueue(s, "urgent", "\"low\"", -5);
    let normal = enqueue(s, "urgent", "\"normal\"", 0);
    let high = enqueue(s, "urgent", "\"high\"", 10);

    let mut reserved = s.worker(&["--queues", "urgent"]);
    let done = |j: &Value| state(j) == "succeeded";
    let [low, normal, high] = [&low, &normal, &high].map(|id| s.wait_for(id, LIMIT, done));
    assert!(
        started_at(&high) <= started_at(&normal) && started_at(&normal) <= started_at(&low),
        "priorities did not order the urgent queue: high {}, normal {}, low {}",
        started_at(&high),
        started_at(&normal),
        started_at(&low)
    );

    // The reserved worker has had time to take bulk work, were it going to.
    std::thread::sleep(Duration::from_millis(500));
    s.assert_running(std::slice::from_mut(&mut reserved));
    for id in &bulk {
        let job = s.job(id);
        assert_eq!(
            state(&job),
            "ready",
            "the urgent-only worker took bulk work: {job:#}"
        );
    }
    let queues = s.json_lines(&["queues", "--json"]);
    let counts = queues
        .as_array()
        .unwrap_or_else(|| panic!("no queue list: {queues:#}"))
        .iter()
        .find(|q| q["queue"] == "bulk")
        .unwrap_or_else(|| panic!("bulk is not listed: {queues:#}"))
        .clone();
    assert_eq!(counts["ready"], 5, "{counts:#}");

    // A general worker for the bulk queue drains it; the reserved one stays as it was.
    let general = s.worker(&["--queues", "bulk"]);
    for id in &bulk {
        s.wait_for(id, LIMIT, done);
    }
    stop(general, "-TERM");
    stop(reserved, "-TERM");
}

#[test]
fn on_sqlite_a_reserved_worker_serves_only_its_queue_in_priority_order() {
    reserved_worker_serves_only_its_queue_in_priority_order(&Setup::new(CONFIG));
}

#[test]
fn on_nats_a_reserved_worker_serves_only_its_queue_in_priority_order() {
    let server = NatsServer::start();
    reserved_worker_serves_only_its_queue_in_priority_order(&Setup::nats(CONFIG, &server.url()));
}
