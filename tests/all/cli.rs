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
    assert!(
        report["output"]
            .as_str()
            .unwrap()
            .contains("ada@example.com")
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
