//! Configuration and secrets through `wasi:config`: queue values, secrets from the environment
//! and from files, per-tenant overlays, and a secret that appears in no output at all. Every
//! test runs the real `spool` binary on a real `spool.toml` with the `configured` plugin.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::{Setup, plugin_path, spool, state, stop};

/// A value no other test uses, so that finding it anywhere is a leak from this test.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sk-{name}-{:x}{:x}", std::process::id(), nanos)
}

/// FNV-1a 64 in hex, as the `configured` plugin reports a value it read.
fn fnv1a(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `spool.toml` for one `email` queue on the `configured` plugin, then `rest`.
fn config(rest: &str) -> String {
    format!(
        r#"
[worker]
concurrency = 4
lease = "5s"
shutdown_grace = "1s"

[queues.email]
plugin = "{}"
timeout = "10s"
max_attempts = 1
{rest}
"#,
        plugin_path("configured").display()
    )
}

/// `spool worker` with `env` added to its environment and every event logged, its stderr in
/// `worker.log`.
fn worker(s: &Setup, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(s.dir.path().join("worker.log")).unwrap();
    s.cmd()
        .arg("worker")
        .env("SPOOL_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn worker_log(s: &Setup) -> String {
    std::fs::read_to_string(s.dir.path().join("worker.log")).unwrap_or_default()
}

/// Enqueue `payload` on `email` (for `tenant`, if any) and wait until the job is finished.
fn run_job(s: &Setup, payload: &Value, tenant: Option<&str>) -> (String, Value) {
    let payload = payload.to_string();
    let mut args = vec!["enqueue", "email", payload.as_str()];
    if let Some(tenant) = tenant {
        args.extend(["--tenant", tenant]);
    }
    let (code, stdout, stderr) = s.run(&args);
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.split_whitespace().next().unwrap().to_owned();
    let job = s.wait_for(&id, Duration::from_secs(30), |j| {
        matches!(state(j), "succeeded" | "dead")
    });
    (id, job)
}

/// The plugin's JSON output of a succeeded job.
fn output(job: &Value) -> Value {
    assert_eq!(state(job), "succeeded", "{job:#}");
    // JSON output is shown as the JSON value itself.
    job["output"].clone()
}

#[test]
fn queue_values_and_secrets_from_the_environment_and_a_file_reach_the_plugin() {
    let key = unique("env");
    let signing = unique("file");
    let s = Setup::new(&config(
        r#"
[queues.email.config]
api_base = "http://127.0.0.1:8025"
from = "jobs@example.com"
[queues.email.secrets]
api_key = { env = "SPOOL_TEST_CONFIG_KEY_A" }
signing = { file = "signing.key" }
"#,
    ));
    // A file written by `echo`: its line end is not part of the secret.
    std::fs::write(s.dir.path().join("signing.key"), format!("{signing}\n")).unwrap();
    let w = worker(&s, &[("SPOOL_TEST_CONFIG_KEY_A", &key)]);
    let ask = json!({
        "show": ["api_base", "from", "unset"],
        "fingerprint": ["api_key", "signing"],
    });
    let (_, job) = run_job(&s, &ask, None);
    let seen = output(&job);
    assert_eq!(
        seen["keys"],
        json!(["api_base", "api_key", "from", "signing"])
    );
    assert_eq!(
        seen["values"],
        json!({"api_base": "http://127.0.0.1:8025", "from": "jobs@example.com", "unset": null})
    );
    assert_eq!(
        seen["fingerprints"],
        json!({"api_key": fnv1a(&key), "signing": fnv1a(&signing)})
    );
    stop(w, "-TERM");
}

#[test]
fn a_secret_that_cannot_be_read_refuses_the_start_naming_it() {
    let present = unique("present");
    let s = Setup::new(&config(
        r#"
[queues.email.secrets]
present = { env = "SPOOL_TEST_CONFIG_PRESENT" }
api_key = { env = "SPOOL_TEST_CONFIG_NEVER_SET" }
"#,
    ));
    let mut w = worker(&s, &[("SPOOL_TEST_CONFIG_PRESENT", &present)]);
    let status = w.wait().unwrap();
    let log = worker_log(&s);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains(
            "queues.email.secrets.api_key: environment variable `SPOOL_TEST_CONFIG_NEVER_SET` is not set"
        ),
        "{log}"
    );
    assert!(!log.contains(&present), "{log}");

    let s = Setup::new(&config(
        r#"
[tenants.acme.queues.email.secrets]
api_key = { file = "missing/acme.key" }
"#,
    ));
    let mut w = worker(&s, &[]);
    let status = w.wait().unwrap();
    let log = worker_log(&s);
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("tenants.acme.queues.email.secrets.api_key: cannot read ")
            && log.contains("missing/acme.key"),
        "{log}"
    );
}

#[test]
fn each_tenant_reads_its_own_values_and_never_another_tenants() {
    let queue_key = unique("queue");
    let acme_key = unique("acme");
    let globex_key = unique("globex");
    let s = Setup::new(&config(
        r#"
[queues.email.config]
api_base = "http://127.0.0.1:8025"
[queues.email.secrets]
api_key = { env = "SPOOL_TEST_CONFIG_QUEUE_KEY" }

[tenants.acme.queues.email.secrets]
api_key = { env = "SPOOL_TEST_CONFIG_ACME_KEY" }

[tenants.globex.queues.email.config]
api_base = "http://127.0.0.1:9025"
region = "eu"
[tenants.globex.queues.email.secrets]
api_key = { file = "globex.key" }
"#,
    ));
    std::fs::write(s.dir.path().join("globex.key"), &globex_key).unwrap();
    let w = worker(
        &s,
        &[
            ("SPOOL_TEST_CONFIG_QUEUE_KEY", &queue_key),
            ("SPOOL_TEST_CONFIG_ACME_KEY", &acme_key),
        ],
    );
    let ask = json!({"show": ["api_base", "region"], "fingerprint": ["api_key"]});
    let seen = |tenant| output(&run_job(&s, &ask, tenant).1);

    let acme = seen(Some("acme"));
    assert_eq!(acme["fingerprints"]["api_key"], json!(fnv1a(&acme_key)));
    assert_eq!(acme["values"]["api_base"], json!("http://127.0.0.1:8025"));
    assert_eq!(acme["values"]["region"], Value::Null);
    assert_eq!(acme["keys"], json!(["api_base", "api_key"]));

    let globex = seen(Some("globex"));
    assert_eq!(globex["fingerprints"]["api_key"], json!(fnv1a(&globex_key)));
    assert_eq!(globex["values"]["api_base"], json!("http://127.0.0.1:9025"));
    assert_eq!(globex["values"]["region"], json!("eu"));

    // A job without a tenant, and one of a tenant with no overlay, read the queue's values.
    for tenant in [None, Some("initech")] {
        let other = seen(tenant);
        assert_eq!(other["fingerprints"]["api_key"], json!(fnv1a(&queue_key)));
        assert_eq!(other["keys"], json!(["api_base", "api_key"]));
    }
    // No tenant's job read another's key, whatever it asked for.
    for (seen, own) in [(&acme, &acme_key), (&globex, &globex_key)] {
        for key in [&queue_key, &acme_key, &globex_key] {
            if key != own {
                assert_ne!(seen["fingerprints"]["api_key"], json!(fnv1a(key)));
            }
        }
    }
    stop(w, "-TERM");
}

#[test]
fn a_secret_appears_in_no_output_even_when_the_plugin_logs_and_fails_with_it() {
    let key = unique("leak");
    let s = Setup::new(&config(
        r#"
[queues.email.config]
api_base = "http://127.0.0.1:8025"
[queues.email.secrets]
api_key = { env = "SPOOL_TEST_CONFIG_LEAK_KEY" }
[tenants.acme.queues.email.secrets]
api_key = { env = "SPOOL_TEST_CONFIG_LEAK_KEY" }
"#,
    ));
    let w = worker(&s, &[("SPOOL_TEST_CONFIG_LEAK_KEY", &key)]);
    let (ok, job) = run_job(
        &s,
        &json!({"log": ["api_key"], "fingerprint": ["api_key"]}),
        None,
    );
    assert_eq!(output(&job)["fingerprints"]["api_key"], json!(fnv1a(&key)));
    let (dead, job) = run_job(
        &s,
        &json!({"log": ["api_key"], "fail_with": "api_key"}),
        Some("acme"),
    );
    assert_eq!(state(&job), "dead", "{job:#}");

    // The plugin did write the secret everywhere it could: what is stored is the redaction.
    let text = s.run(&["job", &dead]).1;
    assert!(text.contains("the API refused key [redacted]"), "{text}");
    for line in [
        "read api_key = [redacted]",
        "stdout api_key = [redacted]",
        "stderr api_key = [redacted]",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }

    let plugin = plugin_path("configured");
    let plugin = plugin.to_str().unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["job", ok.as_str()],
        vec!["job", ok.as_str(), "--json"],
        vec!["job", dead.as_str()],
        vec!["job", dead.as_str(), "--json"],
        vec!["jobs"],
        vec!["jobs", "--json"],
        vec!["events"],
        vec!["events", "--json"],
        vec!["events", "--job", dead.as_str(), "--json"],
        vec!["queues"],
        vec!["queues", "--json"],
        vec!["dlq", "list"],
        vec!["dlq", "list", "--json"],
        vec!["dlq", "show", dead.as_str()],
        vec!["dlq", "show", dead.as_str(), "--json"],
        vec!["plugin", "check", plugin],
        vec!["plugin", "check", plugin, "--json"],
    ] {
        let (code, stdout, stderr) = s.run(&args);
        assert_eq!(code, Some(0), "spool {args:?}: {stderr}");
        outputs.push((format!("spool {}", args.join(" ")), stdout + &stderr));
    }
    stop(w, "-TERM");
    let log = worker_log(&s);
    // The start-up summary names the values, never a secret's value.
    assert!(
        log.contains("wasi:config: config api_base; secrets api_key; tenant overlays acme"),
        "{log}"
    );
    outputs.push(("the worker's log".to_owned(), log));
    for suffix in ["", "-wal"] {
        let file = format!("{}{suffix}", s.db().display());
        let bytes = std::fs::read(&file).unwrap_or_default();
        outputs.push((file, String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (what, text) in &outputs {
        assert!(!text.contains(&key), "{what} shows the secret:\n{text}");
    }
    assert!(
        outputs[3].1.contains("[redacted]"),
        "the dead job's JSON keeps the redacted lines: {}",
        outputs[3].1
    );
}

#[test]
fn exec_hands_the_plugin_values_and_environment_secrets_and_redacts_its_log() {
    let key = unique("exec");
    let plugin = plugin_path("configured");
    let run = |payload: Value| {
        let out = spool()
            .arg("exec")
            .arg(&plugin)
            .args(["--payload", &payload.to_string(), "--json"])
            .args(["--var", "api_base=http://127.0.0.1:8025"])
            .args(["--secret-env", "api_key=SPOOL_TEST_CONFIG_EXEC_KEY"])
            .env("SPOOL_TEST_CONFIG_EXEC_KEY", &key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!stdout.contains(&key), "{stdout}");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let report = run(json!({"show": ["api_base"], "fingerprint": ["api_key"], "log": ["api_key"]}));
    let seen = &report["output"];
    assert_eq!(seen["values"]["api_base"], json!("http://127.0.0.1:8025"));
    assert_eq!(seen["fingerprints"]["api_key"], json!(fnv1a(&key)));
    assert!(
        report.to_string().contains("read api_key = [redacted]"),
        "{report}"
    );
    let report = run(json!({"fail_with": "api_key"}));
    assert_eq!(report["error"], json!("the API refused key [redacted]"));

    // Without values, the plugin still loads and reads nothing.
    let (code, report) = crate::support::exec_json(
        &plugin,
        &json!({"show": ["api_base"], "fingerprint": ["api_key"]}).to_string(),
        &[],
    );
    assert_eq!(code, Some(0), "{report}");
    let seen = &report["output"];
    assert_eq!(
        *seen,
        json!({"keys": [], "values": {"api_base": null}, "fingerprints": {"api_key": null}})
    );

    let out = spool()
        .arg("exec")
        .arg(&plugin)
        .args(["--secret-env", "api_key=SPOOL_TEST_CONFIG_EXEC_UNSET"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "secret `api_key`: environment variable `SPOOL_TEST_CONFIG_EXEC_UNSET` is not set"
        ),
        "{stderr}"
    );
}

#[test]
fn only_a_plugin_that_reads_config_imports_wasi_config_and_it_needs_no_grant() {
    let imports = |plugin: &Path| {
        let out = spool()
            .args(["plugin", "check"])
            .arg(plugin)
            .arg("--json")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: Value = serde_json::from_slice(&out.stdout).unwrap();
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_owned(),
                    i["grant"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let configured = imports(&plugin_path("configured"));
    assert!(
        configured.contains(&(
            "wasi:config/store@0.2.0-rc.1".to_owned(),
            "config".to_owned()
        )),
        "{configured:?}"
    );
    for plugin in ["noop", "steps"] {
        let imports = imports(&plugin_path(plugin));
        assert!(
            imports
                .iter()
                .all(|(name, _)| !name.starts_with("wasi:config")),
            "{plugin}: {imports:?}"
        );
    }
}

#[test]
fn a_cancelled_or_timed_out_attempt_keeps_its_log_lines_with_the_secret_redacted() {
    let key = unique("cut");
    let s = Setup::new(&config(
        r#"
[queues.email.secrets]
api_key = { env = "SPOOL_TEST_CONFIG_CUT_KEY" }
"#,
    ));
    let w = worker(&s, &[("SPOOL_TEST_CONFIG_CUT_KEY", &key)]);
    let payload = json!({"log": ["api_key"], "sleep_ms": 60_000}).to_string();
    let cancelled = s.enqueue("email", &payload);
    s.wait_for(&cancelled, Duration::from_secs(30), |j| {
        state(j) == "running"
    });
    // The plugin logs before it sleeps; give it a moment to get there.
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, stderr) = s.run(&["cancel", &cancelled]);
    assert_eq!(code, Some(0), "{stderr}");
    let job = s.wait_for(&cancelled, Duration::from_secs(30), |j| {
        state(j) == "cancelled"
            && j["attempts"][0]["logs"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
    });
    let text = job["attempts"][0]["logs"].to_string();
    assert!(text.contains("read api_key = [redacted]"), "{job:#}");

    // A timed-out attempt (10 s, the queue's timeout) keeps its lines redacted too.
    let timed_out = s.enqueue(
        "email",
        &json!({"log": ["api_key"], "sleep_ms": 20_000}).to_string(),
    );
    let job = s.wait_for(&timed_out, Duration::from_secs(40), |j| state(j) == "dead");
    assert_eq!(job["attempts"][0]["phase"], "timeout", "{job:#}");
    assert!(
        job["attempts"][0]["logs"]
            .to_string()
            .contains("stdout api_key = [redacted]"),
        "{job:#}"
    );
    stop(w, "-TERM");
    for id in [&cancelled, &timed_out] {
        for args in [vec!["job", id.as_str()], vec!["job", id.as_str(), "--json"]] {
            let (_, stdout, stderr) = s.run(&args);
            assert!(!stdout.contains(&key) && !stderr.contains(&key), "{stdout}");
        }
    }
    assert!(!worker_log(&s).contains(&key));
}
