//! Durable steps and flows end to end: the real `spool` binary, real `steps`, `fanout` and
//! `legacy` components, a real SQLite file.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Setup, event_kinds, plugin_path, state, stop};

const CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "2s"
shutdown_grace = "1s"

[queues.steps]
plugin = "STEPS"
timeout = "1s"
max_attempts = 3
backoff = { initial = "50ms", factor = 1.0, jitter = 0.0 }

[queues.fanout]
plugin = "FANOUT"
timeout = "5s"
max_attempts = 2
backoff = { initial = "50ms", factor = 1.0, jitter = 0.0 }

[queues.legacy]
plugin = "LEGACY"
"#;

const LIMIT: Duration = Duration::from_secs(30);

fn finished(job: &Value) -> bool {
    matches!(state(job), "succeeded" | "dead")
}

/// How many times each step's body ran, over every attempt, from the plugin's log lines.
fn step_runs(job: &Value, step: &str) -> usize {
    let line = format!("step {step} ran");
    job["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["logs"].as_array().unwrap().iter())
        .filter(|l| l["message"].as_str() == Some(line.as_str()))
        .count()
}

fn output(job: &Value) -> Value {
    assert_eq!(job.get("output_encoding"), None, "{job:#}");
    job["output"].clone()
}

#[test]
fn a_crash_after_step_two_resumes_at_step_three_and_each_step_runs_once() {
    let s = Setup::new(CONFIG);
    let id = s.enqueue("steps", r#"{"n": 1, "crash_after": "two"}"#);
    let worker = s.worker(&[]);
    let job = s.wait_for(&id, LIMIT, finished);
    stop(worker, "-TERM");

    assert_eq!(state(&job), "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{job:#}");
    assert_eq!(attempts[0]["outcome"], "trapped");
    for (step, runs) in [("one", 1), ("two", 1), ("three", 1)] {
        assert_eq!(step_runs(&job, step), runs, "step {step}: {job:#}");
    }
    let names: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two", "three"]);
    // Steps one and two were stored by attempt 1, before its crash.
    assert_eq!(job["steps"][1]["attempt"], 1);
    assert_eq!(job["steps"][2]["attempt"], 2);
    let kinds = event_kinds(&job);
    assert_eq!(
        kinds.iter().filter(|k| **k == "step-completed").count(),
        3,
        "{kinds:?}"
    );

    let (code, text, _) = s.run(&["job", &id]);
    assert_eq!(code, Some(0));
    assert!(text.contains("steps:"), "{text}");
    assert!(text.contains("  three (attempt 2"), "{text}");
}

#[test]
fn a_hang_after_a_step_keeps_the_step_and_nothing_lands_after_the_deadline() {
    let s = Setup::new(CONFIG);
    let id = s.enqueue("steps", r#"{"n": 1, "hang_after": "one"}"#);
    let worker = s.worker(&[]);
    let job = s.wait_for(&id, LIMIT, finished);
    stop(worker, "-TERM");

    assert_eq!(state(&job), "succeeded", "{job:#}");
    let attempts = job["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "timed-out", "{job:#}");
    assert_eq!(step_runs(&job, "one"), 1, "{job:#}");
    assert_eq!(step_runs(&job, "two"), 1, "{job:#}");
    // Every write of attempt 1 landed before its deadline (started + 1 s timeout).
    let deadline = attempts[0]["started_at"].as_i64().unwrap() + 1000;
    for event in job["events"].as_array().unwrap() {
        if event["attempt"] == 1
            && matches!(
                event["kind"].as_str(),
                Some("step-completed" | "checkpointed")
            )
        {
            assert!(
                event["at"].as_i64().unwrap() <= deadline,
                "{event} after {deadline}"
            );
        }
    }
}

#[test]
fn a_fanout_parent_waits_for_its_children_and_sums_their_outputs() {
    let s = Setup::new(CONFIG);
    let id = s.enqueue("fanout", r#"{"n": 5, "queue": "fanout"}"#);
    let worker = s.worker(&[]);
    let job = s.wait_for(&id, LIMIT, finished);

    assert_eq!(state(&job), "succeeded", "{job:#}");
    assert_eq!(output(&job)["sum"], 1 + 4 + 9 + 16 + 25, "{job:#}");
    assert_eq!(job["attempts"].as_array().unwrap().len(), 2);
    let kinds = event_kinds(&job);
    assert!(kinds.contains(&"waiting"), "{kinds:?}");
    assert!(kinds.contains(&"children-finished"), "{kinds:?}");

    let children = s.json_lines(&["jobs", "--parent", &id, "--json"]);
    let children = children.as_array().unwrap();
    assert_eq!(children.len(), 5);
    assert!(
        children
            .iter()
            .all(|c| state(c) == "succeeded" && c["parent"] == id.as_str())
    );
    let (_, text, _) = s.run(&["job", &id]);
    assert!(text.contains("children:"), "{text}");
    let child = children[0]["id"].as_str().unwrap();
    let (_, text, _) = s.run(&["job", child]);
    assert!(text.contains(&format!("parent      {id}")), "{text}");

    // A child that dies takes a fail-parent parent with it.
    let doomed = s.enqueue("fanout", r#"{"n": 3, "queue": "fanout", "fail_child": 2}"#);
    let job = s.wait_for(&doomed, LIMIT, finished);
    stop(worker, "-TERM");
    assert_eq!(state(&job), "dead", "{job:#}");
    assert_eq!(job["last_phase"], "child-failed", "{job:#}");
}

#[test]
fn a_plugin_built_against_spool_job_0_1_still_runs() {
    let out = crate::support::spool()
        .args([
            "exec",
            &plugin_path("legacy").display().to_string(),
            "--payload",
            r#"{"hello": 1}"#,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "succeeded", "{report:#}");

    let s = Setup::new(CONFIG);
    let id = s.enqueue("legacy", r#"{"hello": 2}"#);
    let worker = s.worker(&[]);
    let job = s.wait_for(&id, LIMIT, finished);
    stop(worker, "-TERM");
    assert_eq!(state(&job), "succeeded", "{job:#}");
    assert!(
        !job["checkpoint"].is_null(),
        "the 0.1 checkpoint is stored: {job:#}"
    );
}
