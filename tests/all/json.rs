//! `--json`: every command's output parsed with serde into typed structs. A key printed twice
//! fails the parse (serde refuses a duplicate field), as does a byte field printed as an
//! array of numbers where a JSON value is expected.

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{Backend, NewJob};

use crate::support::{Setup, plugin_path, spool, state, stop};

const LIMIT: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[worker]
lease = "5s"

[queues.email]
plugin = "EMAIL"
max_attempts = 2

[queues.email.grants]
http = ["http://127.0.0.1:*"]   # the email plugin imports wasi:http

[queues.steps]
plugin = "STEPS"
timeout = "5s"
backoff = { initial = "100ms", factor = 1.0, max = "100ms", jitter = 0.0 }
"#;

#[derive(Debug, Deserialize, PartialEq)]
struct Progress {
    percent: u8,
    message: Option<String>,
}

/// `spool jobs --json` and `spool dlq list --json`: one per line.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct JobLine {
    id: String,
    queue: String,
    state: String,
    failures: u32,
    max_attempts: Option<u32>,
    priority: i32,
    tenant: Option<String>,
    group: Option<String>,
    parent: Option<String>,
    enqueued_at: i64,
    run_at: i64,
    updated_at: i64,
    last_error: Option<String>,
    last_phase: Option<String>,
    progress: Option<Progress>,
}

/// `spool job --json` and `spool dlq show --json`. Spelled out rather than flattened, so that
/// serde catches a key printed twice.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Job {
    id: String,
    queue: String,
    state: String,
    failures: u32,
    max_attempts: Option<u32>,
    started: u32,
    progress: Option<Progress>,
    last_phase: Option<String>,
    payload: Value,
    payload_encoding: Option<String>,
    output: Value,
    output_encoding: Option<String>,
    checkpoint: Value,
    checkpoint_encoding: Option<String>,
    metadata: Vec<(String, String)>,
    attempts: Vec<Attempt>,
    steps: Vec<Step>,
    children: Vec<Value>,
    events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Attempt {
    attempt: u32,
    run: u32,
    outcome: String,
    phase: Option<String>,
    digest: Option<String>,
    logs: Vec<Value>,
}

#[derive(Debug, Deserialize)]
struct Step {
    name: String,
    output: Value,
    output_encoding: Option<String>,
    attempt: u32,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Event {
    seq: i64,
    at: i64,
    kind: String,
    job_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct QueueLine {
    queue: String,
    ready: u64,
    succeeded: u64,
    dead: u64,
    handler: bool,
    plugin: Option<String>,
    digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ScheduleLine {
    name: String,
    queue: String,
    payload: Value,
    payload_encoding: Option<String>,
    next_run_at: i64,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Enqueued {
    id: String,
    duplicate: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Finished {
    id: String,
    state: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Cancelled {
    cancelled: Vec<String>,
    finished: Vec<Finished>,
    unknown: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct PluginCheck {
    ok: bool,
    digest: String,
    world: String,
    imports: Vec<Value>,
    exports: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Exec {
    outcome: String,
    error: Option<String>,
    output: Value,
    output_encoding: Option<String>,
    elapsed_ms: f64,
    children: Vec<NewChild>,
    checkpoint: Value,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct NewChild {
    id: String,
    queue: String,
    payload: Value,
    payload_encoding: Option<String>,
}

/// Every line of `spool args`, parsed as `T`.
fn lines<T: serde::de::DeserializeOwned>(s: &Setup, args: &[&str]) -> Vec<T> {
    let (code, out, err) = s.run(args);
    assert_eq!(code, Some(0), "spool {args:?}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("spool {args:?}: {e}: {l}")))
        .collect()
}

/// The one line of `spool args`, parsed as `T`.
fn one<T: serde::de::DeserializeOwned>(s: &Setup, args: &[&str]) -> T {
    let mut all = lines(s, args);
    assert_eq!(all.len(), 1, "spool {args:?} printed {} lines", all.len());
    all.remove(0)
}

#[test]
fn every_json_output_has_one_documented_shape_with_payloads_as_json_values() {
    let s = Setup::new(CONFIG);
    // A job through the CLI: its max attempts is the config's, stored at enqueue.
    let steps: Enqueued = one(
        &s,
        &[
            "enqueue",
            "steps",
            r#"{"n":10,"crash_after":"two"}"#,
            "--json",
        ],
    );
    assert!(!steps.duplicate);
    // A job whose payload is not UTF-8, as a foreign producer might store one.
    let raw = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let backend = SqliteBackend::open(&s.db(), SqliteOptions::default()).unwrap();
        let enqueued = backend
            .enqueue(vec![NewJob {
                queue: "email".into(),
                payload: vec![0xff, 0xfe, b'x'],
                ..NewJob::default()
            }])
            .await
            .unwrap();
        enqueued[0].id.0.clone()
    });
    let before: Job = one(&s, &["job", &raw, "--json"]);
    assert_eq!(before.max_attempts, None, "no config at enqueue");

    let worker = s.worker(&[]);
    let finished = |j: &Value| matches!(state(j), "succeeded" | "dead");
    s.wait_for(&steps.id, LIMIT, finished);
    s.wait_for(&raw, LIMIT, finished);
    stop(worker, "-TERM");

    // The steps job: payload, output, step outputs and checkpoint as JSON values.
    let job: Job = one(&s, &["job", &steps.id, "--json"]);
    assert_eq!(job.state, "succeeded", "{job:#?}");
    assert_eq!(job.payload, json!({"n": 10, "crash_after": "two"}));
    assert_eq!((job.payload_encoding, job.output_encoding), (None, None));
    assert_eq!(job.output, json!({"result": 25}));
    assert_eq!(job.checkpoint, Value::Null);
    assert_eq!(job.checkpoint_encoding, None);
    let steps_done: Vec<(&str, &Value, u32)> = job
        .steps
        .iter()
        .map(|st| {
            assert_eq!(st.output_encoding, None);
            (st.name.as_str(), &st.output, st.attempt)
        })
        .collect();
    assert_eq!(
        steps_done,
        [
            ("one", &json!(11), 1),
            ("two", &json!(22), 1),
            ("three", &json!(25), 2)
        ]
    );
    // One failure (the crash), two runs, the queue's default of 3 attempts.
    assert_eq!(
        (job.failures, job.started, job.max_attempts),
        (1, 2, Some(3))
    );
    let runs: Vec<(u32, u32, &str)> = job
        .attempts
        .iter()
        .map(|a| (a.run, a.attempt, a.outcome.as_str()))
        .collect();
    assert_eq!(runs, [(1, 1, "trapped"), (2, 2, "succeeded")]);
    assert_eq!(
        job.progress,
        Some(Progress {
            percent: 100,
            message: Some("step three done".into())
        })
    );
    assert_eq!(
        job.events.first().map(|e| e.kind.as_str()),
        Some("enqueued")
    );

    // The raw job: dead at once (the email plugin cannot decode it), its payload in base64,
    // judged by the max attempts its first claim stored (the email queue's 2).
    let dead: Job = one(&s, &["dlq", "show", &raw, "--json"]);
    assert_eq!(dead.state, "dead");
    assert_eq!(dead.payload_encoding.as_deref(), Some("base64"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(dead.payload.as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, [0xff, 0xfe, b'x']);
    assert_eq!(dead.max_attempts, Some(2));
    assert_eq!(dead.last_phase.as_deref(), Some("decode"));

    // Lists: one object per line.
    let listed: Vec<JobLine> = lines(&s, &["jobs", "--json"]);
    assert_eq!(listed.len(), 2);
    let line = listed.iter().find(|j| j.id == steps.id).unwrap();
    assert_eq!((line.failures, line.max_attempts), (1, Some(3)));
    assert_eq!(line.progress.as_ref().map(|p| p.percent), Some(100));
    let dead_list: Vec<JobLine> = lines(&s, &["dlq", "list", "--json"]);
    assert_eq!(dead_list.len(), 1);
    assert_eq!(dead_list[0].id, raw);
    let queues: Vec<QueueLine> = lines(&s, &["queues", "--json"]);
    let email = queues.iter().find(|q| q.queue == "email").unwrap();
    assert_eq!((email.dead, email.handler), (1, true));
    assert_eq!(
        queues
            .iter()
            .find(|q| q.queue == "steps")
            .unwrap()
            .succeeded,
        1
    );
    let events: Vec<Event> = lines(&s, &["events", "--json"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        events
            .iter()
            .any(|e| e.job_id.as_deref() == Some(raw.as_str()))
    );

    let (code, _, err) = s.run(&[
        "schedule",
        "add",
        "nightly",
        "--queue",
        "email",
        "--cron",
        "0 3 * * *",
        "--payload",
        r#"{"to":"ada@example.com"}"#,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let schedules: Vec<ScheduleLine> = lines(&s, &["schedule", "list", "--json"]);
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].payload, json!({"to": "ada@example.com"}));
    assert_eq!(schedules[0].payload_encoding, None);

    // `cancel`: the same object by ids and by filter.
    let later: Enqueued = one(
        &s,
        &[
            "enqueue",
            "email",
            r#"{"to":"x@example.com"}"#,
            "--delay",
            "1h",
            "--json",
        ],
    );
    let by_ids: Cancelled = one(&s, &["cancel", &later.id, &steps.id, "--json"]);
    assert_eq!(
        by_ids,
        Cancelled {
            cancelled: vec![later.id.clone()],
            finished: vec![Finished {
                id: steps.id.clone(),
                state: Some("succeeded".into())
            }],
            unknown: vec![],
        }
    );
    let again: Enqueued = one(
        &s,
        &[
            "enqueue",
            "email",
            r#"{"to":"y@example.com"}"#,
            "--delay",
            "1h",
            "--json",
        ],
    );
    let cancelled: Job = one(&s, &["job", &later.id, "--json"]);
    assert_eq!(cancelled.max_attempts, Some(2), "the config's, at enqueue");
    let by_filter: Cancelled = one(&s, &["cancel", "--queue", "email", "--json"]);
    assert_eq!(by_filter.cancelled, [again.id]);
    assert!(by_filter.finished.is_empty() && by_filter.unknown.is_empty());

    // `plugin check`: one object.
    let out = spool()
        .args(["plugin", "check", "--json"])
        .arg(plugin_path("steps"))
        .output()
        .unwrap();
    let check: PluginCheck = serde_json::from_slice(&out.stdout).unwrap();
    assert!(check.ok);
    assert_eq!(check.digest.len(), 64, "a sha-256 in hex: {check:?}");
    assert!(
        check.exports.iter().any(|e| e.contains("handler")),
        "{check:?}"
    );

    // The text forms say what each number counts.
    let (_, text, _) = s.run(&["job", &steps.id]);
    assert!(text.contains("1 failed of 3 allowed"), "{text}");
    assert!(text.contains("progress    100% step three done"), "{text}");
    assert!(text.contains("run 1 (attempt 1)"), "{text}");
    assert!(text.contains("run 2 (attempt 2)"), "{text}");
    let (_, text, _) = s.run(&["jobs"]);
    assert!(
        text.lines().next().unwrap().contains("failed/max"),
        "{text}"
    );
    assert!(text.contains("1/3"), "{text}");
}

#[test]
fn exec_json_prints_the_fanout_childrens_payloads_as_json() {
    for n in [3_usize, 500] {
        let payload = format!(r#"{{"n":{n},"queue":"squares"}}"#);
        let out = spool()
            .arg("exec")
            .arg(plugin_path("fanout"))
            .args(["--payload", &payload, "--json"])
            .output()
            .unwrap();
        assert_eq!(out.stdout.iter().filter(|b| **b == b'\n').count(), 1);
        let report: Exec = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(report.outcome, "wait-for-children", "{report:#?}");
        assert_eq!(report.children.len(), n);
        for (i, child) in report.children.iter().enumerate() {
            assert_eq!(child.queue, "squares");
            assert_eq!(child.payload, json!({ "value": i + 1 }));
            assert_eq!(child.payload_encoding, None);
        }
        // Each child costs its payload's own bytes plus a fixed envelope, not a number per
        // byte.
        assert!(
            out.stdout.len() < 1000 + n * 250,
            "{} bytes",
            out.stdout.len()
        );
    }
}

#[test]
fn exec_json_of_large_children_is_about_as_large_as_their_payloads() {
    const PAD: usize = 1 << 20;
    let payload = format!(r#"{{"n":4,"queue":"squares","pad":{PAD}}}"#);
    let out = spool()
        .arg("exec")
        .arg(plugin_path("fanout"))
        .args(["--payload", &payload, "--json"])
        .output()
        .unwrap();
    let report: Exec = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report.children.len(), 4);
    for child in &report.children {
        assert_eq!(child.payload["pad"].as_str().map(str::len), Some(PAD));
    }
    // 4 MiB of payloads: printed as arrays of numbers they took about four times that.
    let printed = out.stdout.len();
    assert!(
        (4 * PAD..4 * PAD + 64 * 1024).contains(&printed),
        "{printed} bytes"
    );
}
