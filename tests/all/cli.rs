//! `spool exec` through the real binary.

use serde_json::Value;

use crate::support::{exec_json, plugin_path, spool};

/// The email plugin imports wasi:http: `spool exec` runs it only with an HTTP grant.
const GRANT: [&str; 2] = ["--allow-http", "http://127.0.0.1:*"];

fn exec(payload: &str, extra: &[&str]) -> (Option<i32>, Value) {
    exec_json(
        &plugin_path("email"),
        payload,
        &[&GRANT[..], extra].concat(),
    )
}

#[test]
fn exec_prints_one_json_object_and_exits_zero_on_success() {
    let (code, report) = exec(r#"{"to":"ada@example.com","mode":"ok"}"#, &[]);
    assert_eq!(code, Some(0));
    assert_eq!(report["outcome"], "succeeded");
    assert!(report["elapsed_ms"].as_f64().unwrap() > 0.0);
    // The output is the plugin's JSON, as a JSON value.
    assert_eq!(
        report["output"],
        serde_json::json!({"sent_to": "ada@example.com", "attempt": 1})
    );
    assert_eq!(report["error"], Value::Null);
    assert!(!report["logs"].as_array().unwrap().is_empty());
}

#[test]
fn exec_exits_non_zero_when_the_attempt_does_not_succeed() {
    let (code, report) = exec(r#"{"to":"nobody","mode":"reject"}"#, &[]);
    assert_eq!(code, Some(1));
    assert_eq!(report["outcome"], "fail");
    assert_eq!(report["output"], Value::Null);
    assert!(report["error"].as_str().is_some());

    let (code, report) = exec(
        r#"{"to":"ada@example.com","mode":"flaky"}"#,
        &["--attempt", "1"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["outcome"], "retry");
}

#[test]
fn exec_aborts_a_hang_at_the_timeout_given() {
    let (code, report) = exec(
        r#"{"to":"ada@example.com","mode":"hang"}"#,
        &["--timeout", "250ms", "--memory", "32MiB"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["outcome"], "timed-out");
    let elapsed = report["elapsed_ms"].as_f64().unwrap();
    assert!((250.0..500.0).contains(&elapsed), "{elapsed}");
}

#[test]
fn exec_refuses_a_payload_that_is_not_json() {
    let out = spool()
        .arg("exec")
        .arg(plugin_path("email"))
        .args(["--payload", "{to: nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad payload"));
}

#[test]
fn exec_refuses_a_duration_it_cannot_read() {
    let out = spool()
        .arg("exec")
        .arg(plugin_path("email"))
        .args(["--timeout", "5 parsecs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad duration"));
}

#[test]
fn exec_prints_a_readable_report_without_json() {
    let out = spool()
        .arg("exec")
        .arg(plugin_path("email"))
        .args(["--payload", r#"{"to":"ada@example.com","mode":"ok"}"#])
        .args(GRANT)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("succeeded in "), "{text}");
    assert!(text.contains("output: "), "{text}");
}

/// A reader that stops reading (`spool events --follow | head -1`) ends the command quietly,
/// with no panic: it would otherwise follow for ever or die printing "failed printing to
/// stdout".
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let s = crate::support::Setup::new(
        "[queues.email]\nplugin = \"EMAIL\"\n[queues.email.grants]\nhttp = [\"http://127.0.0.1:*\"]\n",
    );
    s.enqueue("email", r#"{"to": "ada@example.com"}"#);
    let mut follow = s
        .cmd()
        .args(["events", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads: the first line the command prints meets a closed pipe.
    drop(follow.stdout.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            follow.kill().unwrap();
            panic!("spool events --follow went on for 30 s with its stdout closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
}

/// `dlq replay|purge <id>` and `events --job <id>` of an id that is not a dead job (or not a
/// job at all) exit 2 naming the id, as `dlq show` does, instead of "replayed 0 job(s)".
#[test]
fn dlq_and_events_refuse_an_id_that_is_not_a_dead_job_naming_it() {
    let s = crate::support::Setup::new("[queues.email]\nplugin = \"EMAIL\"\n");
    let live = s.enqueue("email", r#"{"to": "ada@example.com"}"#);
    for command in ["replay", "purge"] {
        let (code, stdout, stderr) = s.run(&["dlq", command, "424242"]);
        assert_eq!(code, Some(2), "dlq {command}: {stdout}{stderr}");
        assert!(stderr.contains("no job with id 424242"), "{stderr}");
        let (code, stdout, stderr) = s.run(&["dlq", command, &live]);
        assert_eq!(code, Some(2), "dlq {command}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "job {live} is not in the dead-letter queue (it is ready)"
            )),
            "{stderr}"
        );
    }
    assert_eq!(crate::support::state(&s.job(&live)), "ready");
    let (code, _, stderr) = s.run(&["events", "--job", "424242"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no job with id 424242"), "{stderr}");
    let (code, stdout, stderr) = s.run(&["events", "--job", &live]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("enqueued"), "{stdout}");
}

/// A store flag typed on the command line wins over the other backend's variable; two typed
/// flags are refused.
#[test]
fn a_typed_store_flag_wins_over_the_other_backends_variable() {
    let server = crate::support::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spool.db");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = spool()
            .current_dir(dir.path())
            .env_remove("SPOOL_DB")
            .env_remove("SPOOL_NATS_URL")
            .envs(env.iter().copied())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        )
    };
    let url = server.url();
    let (code, _, stderr) = run(
        &["--nats", &url, "enqueue", "email", "{}"],
        &[("SPOOL_DB", db.to_str().unwrap())],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!db.exists(), "the job went to SQLite");
    let (code, stdout, stderr) = run(&["jobs", "--json", "--nats", &url], &[("SPOOL_DB", "x.db")]);
    assert_eq!(code, Some(0), "{stderr}");
    // JSON Lines: one object per job.
    let jobs: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(jobs.len(), 1, "{stdout}");

    // The other way round: --db with SPOOL_NATS_URL pointing nowhere.
    let (code, _, stderr) = run(
        &["enqueue", "email", "{}", "--db", db.to_str().unwrap()],
        &[("SPOOL_NATS_URL", "nats://127.0.0.1:1")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(db.exists());

    let (code, _, stderr) = run(&["jobs", "--db", "a.db", "--nats", &url], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (code, _, stderr) = run(
        &["jobs"],
        &[("SPOOL_DB", "a.db"), ("SPOOL_NATS_URL", url.as_str())],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("SPOOL_DB and SPOOL_NATS_URL are both set"),
        "{stderr}"
    );
}

/// Each cause is printed once: a library error that puts its cause in its message does not
/// also hand it on as its source.
#[test]
fn an_error_prints_each_cause_once() {
    let missing_plugin = crate::support::Setup::new("[queues.email]\nplugin = \"nowhere.wasm\"\n");
    let (code, _, stderr) = missing_plugin.run(&["worker"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");

    let not_wasm = crate::support::Setup::new("[queues.email]\nplugin = \"spool.toml\"\n");
    let (code, _, stderr) = not_wasm.run(&["worker"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("not a WebAssembly file").count(),
        1,
        "{stderr}"
    );

    let (code, _, stderr) = missing_plugin.run(&["--config", "absent.toml", "queues"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");

    let out = spool()
        .args(["exec", "/nonexistent/plugin.wasm"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

/// A value outside an enum's set is refused with the set.
#[test]
fn a_bad_enum_value_is_refused_with_the_valid_ones() {
    let s = crate::support::Setup::new("[queues.email]\nplugin = \"EMAIL\"\n");
    s.enqueue("email", "{}");
    let (code, _, stderr) = s.run(&["jobs", "--state", "bogus"]);
    assert_eq!(code, Some(2), "{stderr}");
    let listed = stderr
        .split("[possible values: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("{stderr}"));
    let mut listed: Vec<&str> = listed.split(", ").collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "cancelled",
            "dead",
            "ready",
            "running",
            "scheduled",
            "succeeded",
            "waiting"
        ]
    );
    let (code, _, stderr) = s.run(&["dlq", "list", "--phase", "bogus"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("lease-expired"), "{stderr}");
    assert!(stderr.contains("no-handler"), "{stderr}");
    // The valid ones still parse.
    let (code, stdout, stderr) = s.run(&["dlq", "list", "--phase", "lease-expired"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "0 dead job(s)\n");
    let (code, stdout, stderr) = s.run(&["jobs", "--state", "ready", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    // JSON Lines: one object per job.
    let jobs: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(jobs.len(), 1, "{stdout}");
}

/// Global flags set through the environment (as `SPOOL_CACHE_DIR` is here) are not shown as
/// required in a usage line, and a subcommand's help lists its own flags first.
#[test]
fn usage_and_help_put_the_subcommands_own_arguments_first() {
    let out = spool()
        .args(["enqueue"])
        .env("SPOOL_DB", "x.db")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let usage = stderr.lines().find(|l| l.starts_with("Usage:")).unwrap();
    assert_eq!(usage, "Usage: spool enqueue <QUEUE> <PAYLOAD>", "{stderr}");

    let out = spool().args(["enqueue", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let at = |needle: &str| {
        help.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {help}"))
    };
    assert!(at("--delay") < at("Global options:"), "{help}");
    assert!(at("Global options:") < at("--db"), "{help}");
    assert!(at("Global options:") < at("--cache-dir"), "{help}");
}

/// A memory cap no plugin can start in is refused when the plugin is loaded, naming the
/// minimum, not accepted to trap every attempt.
#[test]
fn a_memory_cap_below_the_minimum_is_refused_at_start() {
    for memory in ["0", "1KiB"] {
        let out = spool()
            .arg("exec")
            .arg(plugin_path("noop"))
            .args(["--memory", memory])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("below the minimum of 2.0 MiB"), "{stderr}");
    }
    let (code, report) = exec_json(&plugin_path("noop"), "{}", &["--memory", "2MiB"]);
    assert_eq!(code, Some(0), "{report}");

    let s = crate::support::Setup::new("[queues.email]\nplugin = \"EMAIL\"\nmemory = \"1KiB\"\n");
    let (code, _, stderr) = s.run(&["worker"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("queue `email`") && stderr.contains("below the minimum of 2.0 MiB"),
        "{stderr}"
    );
}

/// `spool worker` with no config shows one to start from; `spool enqueue` says where it
/// created the database it made, once.
#[test]
fn the_first_commands_say_what_is_missing_and_what_they_made() {
    let dir = tempfile::tempdir().unwrap();
    let out = spool()
        .current_dir(dir.path())
        .env_remove("SPOOL_DB")
        .env_remove("SPOOL_NATS_URL")
        .arg("worker")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no config at spool.toml") && stderr.contains("[queues.email]\nplugin = "),
        "{stderr}"
    );
    // The sample is a config the worker accepts.
    let sample = &stderr[stderr.find("[queues.email]").unwrap()..];
    spool::config::Config::parse(sample).unwrap();

    let enqueue = || {
        spool()
            .current_dir(dir.path())
            .env_remove("SPOOL_DB")
            .env_remove("SPOOL_NATS_URL")
            .args(["enqueue", "email", "{}"])
            .output()
            .unwrap()
    };
    let out = enqueue();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let db = dir.path().join("spool.db");
    assert!(db.exists());
    assert_eq!(
        stderr.trim_end(),
        format!("created the database {}", db.display()),
    );
    let out = enqueue();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `spool completions` and `spool man` come from the parser's own definitions.
#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = spool().args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        for word in ["enqueue", "dlq", "max-attempts", "completions"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = spool().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    let out = spool().arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH spool"),
        "{page}"
    );
    assert!(page.contains("enqueue") && page.contains("dlq"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let out = spool()
        .arg("man")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["spool.1", "spool-enqueue.1", "spool-dlq-replay.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn the_demo_shows_the_mail_api_got_ok_and_flaky_once_each_and_nothing_from_fail_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_path("email").parent().unwrap().to_path_buf();
    let out = spool()
        .current_dir(dir.path())
        .arg("demo")
        .arg("--plugins")
        .arg(&plugins)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("The mail API received 2 deliveries:"),
        "{stdout}"
    );
    for line in [
        "email/ok    sent 1 time (attempt 1)",
        "email/flaky sent 1 time (attempt 2)",
        "email/fail  sent never: every attempt failed before sending",
        "email/hang  sent never: each attempt was aborted at its 5 s timeout, before its send at 8 s",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    // Both deliveries carried the secret API key the demo configured.
    assert_eq!(stdout.matches("(with the API key)").count(), 2, "{stdout}");
    assert!(!stdout.contains("WITHOUT"), "{stdout}");
}
