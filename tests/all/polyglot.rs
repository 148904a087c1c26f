//! The Python and JavaScript email plugins (`plugins/python`, `plugins/javascript`): every mode
//! through `spool exec` and through a real `spool worker` on SQLite, and the author guides'
//! commands (`docs/guides/`), run as written.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Lang, Setup, event_kinds, exec_json, polyglot, state, stop};

const LANGS: [Lang; 2] = [Lang::Python, Lang::JavaScript];

/// The email plugins import wasi:http: `spool exec` runs them only with an HTTP grant.
const GRANT: [&str; 2] = ["--allow-http", "http://127.0.0.1:*"];

fn exec(lang: Lang, payload: &str, extra: &[&str]) -> (Option<i32>, Value) {
    exec_json(&polyglot(lang), payload, &[&GRANT[..], extra].concat())
}

fn messages(logs: &Value) -> Vec<&str> {
    logs.as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect()
}

/// A payload, output or checkpoint as `--json` prints it (its own JSON), as JSON text.
fn bytes(value: &Value) -> String {
    value.to_string()
}

#[test]
fn exec_runs_every_mode_of_the_python_and_javascript_plugins() {
    for lang in LANGS {
        let (code, r) = exec(lang, r#"{"to":"ada@example.com","mode":"ok"}"#, &[]);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (Some(0), Some("succeeded")),
            "{lang:?}: {r:#}"
        );
        let output: Value = serde_json::from_str(&bytes(&r["output"])).unwrap();
        assert_eq!(output["sent_to"], "ada@example.com", "{lang:?}");
        assert_eq!(output["attempt"], 1, "{lang:?}");
        assert_eq!(messages(&r["logs"]), ["sending email"], "{lang:?}");
        let fields = &r["logs"][0]["fields"];
        assert!(
            fields.to_string().contains("ada@example.com"),
            "{lang:?}: {fields}"
        );

        let flaky = r#"{"to":"ada@example.com","mode":"flaky"}"#;
        let (code, r) = exec(lang, flaky, &["--attempt", "1"]);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (Some(1), Some("retry")),
            "{lang:?}: {r:#}"
        );
        assert!(r["error"].as_str().unwrap().contains("flaky"), "{lang:?}");
        let (code, r) = exec(lang, flaky, &["--attempt", "2"]);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (Some(0), Some("succeeded")),
            "{lang:?}"
        );

        let (code, r) = exec(lang, r#"{"to":"ada@example.com","mode":"fail"}"#, &[]);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (Some(1), Some("retry")),
            "{lang:?}"
        );
        assert_eq!(r["error"], "smtp server unavailable", "{lang:?}");

        let (code, r) = exec(lang, r#"{"to":"nobody","mode":"reject"}"#, &[]);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (Some(1), Some("fail")),
            "{lang:?}: {r:#}"
        );
        assert!(
            r["error"].as_str().unwrap().contains("invalid recipient"),
            "{lang:?}"
        );

        let (code, r) = exec(lang, r#"{"to":"ada@example.com","mode":"shout"}"#, &[]);
        assert_eq!(
            (code, r["outcome"].as_str()),
            (Some(1), Some("invalid-payload")),
            "{lang:?}: {r:#}"
        );
        assert!(r["error"].as_str().unwrap().contains("mode"), "{lang:?}");
    }
}

#[test]
fn exec_aborts_a_blocking_sleep_and_a_busy_loop_at_the_deadline_keeping_the_checkpoint() {
    for lang in LANGS {
        for mode in ["hang", "spin"] {
            let payload = format!(r#"{{"to":"ada@example.com","mode":"{mode}","delay_ms":60000}}"#);
            let (code, r) = exec(lang, &payload, &["--timeout", "1s"]);
            assert_eq!(code, Some(1), "{lang:?} {mode}");
            assert_eq!(r["outcome"], "timed-out", "{lang:?} {mode}: {r:#}");
            let elapsed = r["elapsed_ms"].as_f64().unwrap();
            // Generous: a loaded machine; the point is "at the deadline", not "after 60 s".
            assert!(
                (1000.0..5000.0).contains(&elapsed),
                "{lang:?} {mode}: {elapsed} ms"
            );
            let checkpoint: Value = serde_json::from_str(&bytes(&r["checkpoint"])).unwrap();
            assert_eq!(checkpoint["stage"], "connected", "{lang:?} {mode}");
            let logs = messages(&r["logs"]);
            assert_eq!(
                logs[..2],
                ["sending email", "waiting for the smtp server"],
                "{lang:?} {mode}"
            );
            // The host's own line says why the attempt ended.
            assert!(
                logs.last().unwrap().starts_with("aborted at the deadline"),
                "{lang:?} {mode}: {logs:?}"
            );
        }
        // A short wait in either form runs to the end and succeeds.
        for mode in ["hang", "spin"] {
            let payload = format!(r#"{{"to":"ada@example.com","mode":"{mode}","delay_ms":50}}"#);
            let (code, r) = exec(lang, &payload, &["--timeout", "10s"]);
            assert_eq!(
                (code, r["outcome"].as_str()),
                (Some(0), Some("succeeded")),
                "{lang:?} {mode}: {r:#}"
            );
        }
    }
}

const CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "5s"
shutdown_grace = "1s"

[queues.py]
plugin = "EMAIL_PY"
timeout = "2s"
max_attempts = 3
backoff = { initial = "100ms", factor = 2.0, jitter = 0.0 }

[queues.py.grants]
http = ["http://127.0.0.1:*"]   # the email plugins imports wasi:http


[queues.js]
plugin = "EMAIL_JS"
timeout = "2s"
max_attempts = 3
backoff = { initial = "100ms", factor = 2.0, jitter = 0.0 }

[queues.js.grants]
http = ["http://127.0.0.1:*"]   # the email plugins imports wasi:http
"#;

#[test]
fn a_worker_runs_every_mode_of_both_plugins_with_retries_logs_and_checkpoints() {
    let s = Setup::new(CONFIG);
    let mut jobs = Vec::new();
    for queue in ["py", "js"] {
        for mode in ["ok", "flaky", "fail", "reject", "hang", "spin"] {
            let payload = format!(r#"{{"to":"ada@example.com","mode":"{mode}","delay_ms":60000}}"#);
            jobs.push((queue, mode, s.enqueue(queue, &payload)));
        }
    }
    let worker = s.worker(&[]);
    let finished = |j: &Value| matches!(state(j), "succeeded" | "dead");
    for (queue, mode, id) in &jobs {
        let job = s.wait_for(id, Duration::from_secs(120), finished);
        let attempts = job["attempts"].as_array().unwrap();
        let kinds = event_kinds(&job);
        let what = format!("{queue} {mode}: {job:#}");
        let (end, tries) = match *mode {
            "ok" => ("succeeded", 1),
            "flaky" => ("succeeded", 2),
            "reject" => ("dead", 1),
            _ => ("dead", 3),
        };
        assert_eq!((state(&job), attempts.len()), (end, tries), "{what}");
        assert_eq!(
            kinds.iter().filter(|k| **k == "retry-scheduled").count(),
            tries - 1,
            "{what}"
        );
        for a in attempts {
            assert!(messages(&a["logs"]).contains(&"sending email"), "{what}");
        }
        match *mode {
            "ok" | "flaky" => {
                let output: Value = serde_json::from_str(&bytes(&job["output"])).unwrap();
                assert_eq!(output["attempt"], tries, "{what}");
            }
            "hang" | "spin" => {
                for a in attempts {
                    assert_eq!(a["phase"], "timeout", "{what}");
                    let ms = a["finished_at"].as_i64().unwrap() - a["started_at"].as_i64().unwrap();
                    assert!((2000..6000).contains(&ms), "{what}: attempt took {ms} ms");
                }
                let checkpoint: Value = serde_json::from_str(&bytes(&job["checkpoint"])).unwrap();
                assert_eq!(checkpoint["stage"], "connected", "{what}");
                assert_eq!(checkpoint["attempt"], 3, "{what}");
            }
            _ => assert_eq!(attempts.last().unwrap()["phase"], "run", "{what}"),
        }
    }
    stop(worker, "-TERM");
}

/// Runs `docs/guides/<name>` as written (see `xtask::guides`) with the `spool` binary under
/// test, and checks that its last command ran the job.
fn guide(name: &str) {
    let spool = std::path::Path::new(env!("CARGO_BIN_EXE_spool"));
    // The guides' `spool exec` compiles into the tests' cache, not the user's.
    let ran = xtask::guides::run(
        name,
        spool,
        &[("SPOOL_CACHE_DIR", crate::support::cache_dir())],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(ran.stdout.contains("succeeded"), "{name}: {}", ran.stdout);
    assert!(ran.stdout.contains("Hello, Ada!"), "{name}: {}", ran.stdout);
}

#[test]
fn the_rust_guide_runs_as_written() {
    guide("rust.md");
}

#[test]
fn the_python_guide_runs_as_written() {
    guide("python.md");
}

#[test]
fn the_javascript_guide_runs_as_written() {
    guide("javascript.md");
}
