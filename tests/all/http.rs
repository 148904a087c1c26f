//! Outbound HTTP end to end: the `fetch` plugin, run by the real `spool` binary (`spool exec`
//! or a `spool worker`), against a real HTTP server on 127.0.0.1 started by the test
//! ([`TestServer`]). Grants, the address check, limits, and requests cut at the deadline, at a
//! cancel and at a lost lease — seen from the server's side.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http_server::TestServer;
use crate::support::{Setup, exec_json, plugin_path, state, stop};

/// `spool exec fetch` with `payload` and `extra` flags: exit code and JSON report.
fn fetch(payload: Value, extra: &[&str]) -> (Option<i32>, Value) {
    exec_json(&plugin_path("fetch"), &payload.to_string(), extra)
}

/// The plugin's per-request results (its output).
fn results(report: &Value) -> Vec<Value> {
    report["output"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{report:#}"))
}

fn get(url: &str) -> Value {
    json!({ "url": url })
}

/// The host's log lines of a report (or an attempt), joined.
fn host_lines(logs: &Value) -> String {
    logs.as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"] == "host")
        .map(|l| l["message"].as_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_granted_request_succeeds_and_the_report_counts_it() {
    let server = TestServer::start();
    let grant = format!("http://127.0.0.1:{}", server.port());
    let (code, report) = fetch(
        json!({ "requests": [{ "url": server.url("/ok"), "body": "hello" }] }),
        &["--allow-http", &grant],
    );
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        results(&report),
        vec![json!({"status": 200, "bytes": 2, "body": "ok"})]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].line, "POST /ok HTTP/1.1");
    assert_eq!(requests[0].body_len, 5);
    assert_eq!(
        report["http"],
        json!({"requests": 1, "bytes_sent": 5, "bytes_received": 2, "refused": 0})
    );
}

#[test]
fn requests_outside_the_grants_are_refused_before_any_connection() {
    let granted = TestServer::start();
    let other = TestServer::start();
    let grant = format!("http://127.0.0.1:{}", granted.port());
    let urls = [
        // Another port.
        other.url("/ok"),
        // Another scheme.
        format!("https://127.0.0.1:{}/ok", granted.port()),
        // Another host (the same address by name).
        format!("http://localhost:{}/ok", granted.port()),
    ];
    let requests: Vec<Value> = urls.iter().map(|u| get(u)).collect();
    let (code, report) = fetch(json!({ "requests": requests }), &["--allow-http", &grant]);
    assert_eq!(code, Some(0), "{report:#}");
    for result in results(&report) {
        assert_eq!(result, json!({"error": "ErrorCode::HttpRequestDenied"}));
    }
    assert_eq!(other.connections(), 0, "the refused port saw a connection");
    assert_eq!(
        granted.connections(),
        0,
        "a refused request reached the granted server"
    );
    let log = host_lines(&report["logs"]);
    for url in &urls {
        assert!(
            log.contains(&format!(
                "http request to {url} refused: not granted by --allow-http"
            )),
            "{log}"
        );
    }
    assert_eq!(report["http"]["refused"], 3);
    assert_eq!(report["http"]["requests"], 0);
}

/// A name other than `localhost` that resolves to loopback addresses only: the machine's
/// own host name (in `/etc/hosts` on the machines the tests run on).
fn loopback_name() -> String {
    use std::net::ToSocketAddrs;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let addrs: Vec<_> = (hostname.as_str(), 80)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("this test needs the host name `{hostname}` to resolve: {e}"))
        .collect();
    assert!(
        !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()),
        "this test needs the host name `{hostname}` to resolve to loopback only, not {addrs:?}"
    );
    hostname
}

#[test]
fn a_granted_name_resolving_to_loopback_is_refused_unless_the_address_is_granted() {
    let server = TestServer::start();
    let name = loopback_name();
    let by_name = format!("http://{name}:{}", server.port());
    let payload = json!({ "requests": [get(&format!("{by_name}/ok"))] });

    let (code, report) = fetch(payload.clone(), &["--allow-http", &by_name]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(
        results(&report),
        vec![json!({"error": "ErrorCode::DestinationIpProhibited"})]
    );
    assert_eq!(
        server.connections(),
        0,
        "the refused address saw a connection"
    );
    let log = host_lines(&report["logs"]);
    assert!(
        log.contains("resolves to 127.0.0.1, an internal address not named literally"),
        "{log}"
    );

    let by_ip = format!("http://127.0.0.1:{}", server.port());
    let (code, report) = fetch(payload, &["--allow-http", &by_name, "--allow-http", &by_ip]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(results(&report)[0]["status"], 200, "{report:#}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn at_the_deadline_a_request_in_flight_is_cut_and_a_later_one_is_never_sent() {
    let server = TestServer::start();
    let s = worker_setup(&server, "", "1s");
    let mut worker = s.worker(&[]);
    let held = s.enqueue(
        "web",
        &json!({ "requests": [get(&server.url("/hold"))] }).to_string(),
    );
    let late = s.enqueue(
        "web",
        &json!({ "requests": [get(&server.url("/ok"))], "delay_ms": 1500 }).to_string(),
    );
    let sent = server.wait_requests(1, Duration::from_secs(60))[0].at;
    let hangup = server.wait_hangups(1, Duration::from_secs(10))[0];
    let cut = hangup - sent;
    eprintln!("the held connection was closed {cut:?} after its request arrived");
    assert!(
        cut <= Duration::from_secs(4),
        "cut {cut:?} after the request, past its 1 s deadline"
    );
    for id in [&held, &late] {
        let job = s.wait_for(id, Duration::from_secs(60), |j| state(j) == "dead");
        assert_eq!(job["attempts"][0]["outcome"], "timed-out", "{job:#}");
    }
    // Well past the moment the late job would have sent.
    std::thread::sleep(Duration::from_secs(2));
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        1,
        "a request after the deadline reached the server: {requests:?}"
    );
    s.assert_running(std::slice::from_mut(&mut worker));
    stop(worker, "-TERM");
}

#[test]
fn spool_exec_ends_a_run_at_its_deadline_before_it_sends() {
    let server = TestServer::start();
    let grant = format!("http://127.0.0.1:{}", server.port());
    let (code, report) = fetch(
        json!({ "requests": [get(&server.url("/ok"))], "delay_ms": 1500 }),
        &["--allow-http", &grant, "--timeout", "500ms"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(report["outcome"], "timed-out", "{report:#}");
    assert_eq!(server.connections(), 0);
}

#[test]
fn body_and_concurrency_limits_are_enforced_with_clear_errors() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spool.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[queues.limited]
plugin = "unused.wasm"
timeout = "20s"
[queues.limited.grants]
http = ["http://127.0.0.1:{}"]
[queues.limited.http]
max_concurrent = 2
max_request_bytes = "1KiB"
max_response_bytes = "1KiB"
"#,
            server.port()
        ),
    )
    .unwrap();
    let queue = ["--config", config.to_str().unwrap(), "--queue", "limited"];

    // One request per run, so that the limit on requests in flight plays no part.
    let one = |request: Value| {
        let (_, report) = fetch(json!({ "requests": [request] }), &queue);
        (results(&report).remove(0), host_lines(&report["logs"]))
    };
    let (done, log) = one(json!({ "url": server.url("/ok"), "body_bytes": 2000 }));
    assert_eq!(
        done,
        json!({"error": "ErrorCode::HttpRequestBodySize(Some(1024))"})
    );
    assert!(
        log.contains("over the limit (http.max_request_bytes) of 1024"),
        "{log}"
    );
    let (done, log) = one(get(&server.url("/big?n=5000")));
    assert_eq!(
        done,
        json!({"error": "ErrorCode::HttpResponseBodySize(Some(1024))"})
    );
    assert!(
        log.contains("over the limit (http.max_response_bytes) of 1024"),
        "{log}"
    );
    let (done, _) = one(get(&server.url("/big?n=1000")));
    assert_eq!(done["bytes"], 1000, "{done:?}");
    assert!(
        server.requests().iter().all(|r| r.body_len <= 1024),
        "a body over the limit reached the server"
    );

    let slow = get(&server.url("/slow?ms=1000"));
    let (_, report) = fetch(json!({ "requests": [slow, slow, slow] }), &queue);
    let done = results(&report);
    let refused: Vec<_> = done
        .iter()
        .filter(|r| r["error"] == "ErrorCode::ConnectionLimitReached")
        .collect();
    assert_eq!(refused.len(), 1, "{done:?}");
    assert_eq!(done.iter().filter(|r| r["status"] == 200).count(), 2);
    let log = host_lines(&report["logs"]);
    assert!(
        log.contains(
            "2 requests of this attempt are already in flight, the limit (http.max_concurrent) is 2"
        ),
        "{log}"
    );
}

#[test]
fn a_plugin_importing_http_without_the_grant_is_refused_at_load_and_by_plugin_check() {
    let s = Setup::new(
        r#"
[queues.plain]
plugin = "FETCH"
"#,
    );
    let (code, _, stderr) = s.run(&["worker"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("import `wasi:http/"), "{stderr}");
    assert!(
        stderr.contains("needs the `http` grant, which queue `plain` does not give"),
        "{stderr}"
    );

    let plugin = plugin_path("fetch");
    let plugin = plugin.to_str().unwrap();
    let (code, stdout, stderr) = s.run(&["plugin", "check", plugin, "--queue", "plain"]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stderr.contains("needs the `http` grant, which queue `plain` does not give"),
        "{stderr}"
    );

    let (code, stdout, stderr) = s.run(&["plugin", "check", plugin]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("grants   http"), "{stdout}");
    assert!(stdout.contains("(needs the `http` grant)"), "{stdout}");

    let (code, _, stderr) = s.run(&["exec", plugin]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("which `spool exec` without --allow-http does not give"),
        "{stderr}"
    );
}

/// A worker serving `fetch` on queue `web` (one attempt per job, `timeout`), granted the
/// server, with `worker` in its `[worker]` table.
fn worker_setup(server: &TestServer, worker: &str, timeout: &str) -> Setup {
    Setup::new(&format!(
        r#"
[worker]
concurrency = 2
{worker}

[queues.web]
plugin = "FETCH"
timeout = "{timeout}"
max_attempts = 1

[queues.web.grants]
http = ["http://127.0.0.1:{}"]
"#,
        server.port()
    ))
}

#[test]
fn a_worker_records_each_attempts_requests_and_refusals() {
    let server = TestServer::start();
    let s = worker_setup(&server, "", "60s");
    let mut worker = s.worker(&[]);
    let payload = json!({ "requests": [
        { "url": server.url("/ok"), "body": "abc" },
        get("http://127.0.0.1:1/ok"),
    ]});
    let id = s.enqueue("web", &payload.to_string());
    let job = s.wait_for(&id, Duration::from_secs(60), |j| state(j) == "succeeded");
    let attempt = &job["attempts"][0];
    assert_eq!(
        attempt["http"],
        json!({"requests": 1, "bytes_sent": 3, "bytes_received": 2, "refused": 1}),
        "{job:#}"
    );
    let log = host_lines(&attempt["logs"]);
    assert!(
        log.contains(
            "http request to http://127.0.0.1:1/ok refused: not granted by queue `web`'s grants"
        ),
        "{log}"
    );
    let (_, text, _) = s.run(&["job", &id]);
    assert!(
        text.contains("http: 1 requests · 3 bytes sent · 2 bytes received · 1 refused"),
        "{text}"
    );
    s.assert_running(std::slice::from_mut(&mut worker));
    stop(worker, "-TERM");
}

#[test]
fn a_request_in_flight_when_its_job_is_cancelled_is_cut() {
    let server = TestServer::start();
    let s = worker_setup(&server, "", "60s");
    let mut worker = s.worker(&[]);
    let id = s.enqueue(
        "web",
        &json!({ "requests": [get(&server.url("/hold"))] }).to_string(),
    );
    server.wait_requests(1, Duration::from_secs(60));
    let (code, _, stderr) = s.run(&["cancel", &id]);
    assert_eq!(code, Some(0), "{stderr}");
    let cancelled = Instant::now();
    let hangup = server.wait_hangups(1, Duration::from_secs(10))[0];
    eprintln!(
        "connection closed {:?} after the cancel",
        hangup.saturating_duration_since(cancelled)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.requests().len(),
        1,
        "a request started after the cancel"
    );
    s.assert_running(std::slice::from_mut(&mut worker));
    stop(worker, "-TERM");
}

#[test]
fn a_request_in_flight_when_the_lease_is_lost_is_cut() {
    let server = TestServer::start();
    let s = worker_setup(&server, "lease = \"2s\"", "60s");
    let worker = s.worker(&[]);
    let id = s.enqueue(
        "web",
        &json!({ "requests": [get(&server.url("/hold"))] }).to_string(),
    );
    server.wait_requests(1, Duration::from_secs(60));
    let pid = worker.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Another worker returns the expired lease (the job, with one attempt allowed, dies).
    let sweeper = s.worker(&[]);
    s.wait_for(&id, Duration::from_secs(60), |j| state(j) == "dead");
    assert!(
        server.hangups().is_empty(),
        "the connection closed while the worker was stopped"
    );
    let resumed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let hangup = server.wait_hangups(1, Duration::from_secs(10))[0];
    eprintln!(
        "connection closed {:?} after the worker resumed",
        hangup - resumed
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.requests().len(),
        1,
        "a request started after the lease was lost"
    );
    stop(worker, "-TERM");
    stop(sweeper, "-TERM");
}
