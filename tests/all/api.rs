//! The operator HTTP API through the real binary: `spool serve` (and `[worker] http`) on a
//! temporary directory's store, called with a plain HTTP client.

use std::io::BufReader;
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{NatsServer, Setup, stop};

const CONFIG: &str = r#"
[worker]
lease = "5s"

[queues.email]
plugin = "EMAIL"
timeout = "10s"
max_attempts = 1
concurrency = 4

[queues.email.grants]
http = ["http://127.0.0.1:*"]   # the email plugin imports wasi:http
"#;

/// A port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `spool serve` process and its base URL; stopped when dropped.
struct Server {
    child: Option<Child>,
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Server {
    /// `spool serve --http 127.0.0.1:<free port>` in `setup`, with `env`, once it answers.
    fn start(setup: &Setup, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let log =
            std::fs::File::create(setup.dir.path().join(format!("serve-{port}.log"))).unwrap();
        let mut cmd = setup.cmd();
        cmd.args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            token: None,
            agent: agent(),
        };
        server.wait_ready();
        server
    }

    /// A server some other process started at `base`.
    fn at(base: String) -> Server {
        let server = Server {
            child: None,
            base,
            token: None,
            agent: agent(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(mut r) = self.agent.get(format!("{}/readyz", self.base)).call()
                && r.status() == 200
            {
                assert_eq!(r.body_mut().read_to_string().unwrap(), "ready");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the server at {} did not get ready",
                self.base
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The same server, calling with `token`.
    fn with_token(&self, token: &str) -> Server {
        Server {
            child: None,
            base: self.base.clone(),
            token: Some(token.to_owned()),
            agent: agent(),
        }
    }

    /// `method path` with an optional JSON body: (status, JSON body).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request
            .header("Content-Type", "application/json")
            .body(body)
            .unwrap();
        let mut response = self.agent.run(request).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status}, not JSON ({e}): {text}"));
        (status, json)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    /// `GET path`, which must answer 200.
    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Enqueue one job on `queue`: its id.
    fn enqueue(&self, queue: &str, job: Value) -> String {
        let (status, body) = self.post(&format!("/api/v1/queues/{queue}/jobs"), job);
        assert_eq!(status, 201, "{body}");
        body["jobs"][0]["id"].as_str().unwrap().to_owned()
    }

    /// Wait until job `id` is in `state`.
    fn wait_state(&self, id: &str, state: &str) -> Value {
        let start = Instant::now();
        loop {
            let job = self.ok(&format!("/api/v1/jobs/{id}"));
            if job["state"] == state {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "job {id} never got {state}: {job:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop(child, "-TERM");
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// Enqueue (one, a batch, duplicates, unknown queue, force, too large), show, page, cancel.
fn enqueue_show_list_and_cancel(server: &Server) {
    let (status, body) = server.post(
        "/api/v1/queues/email/jobs",
        json!({"payload": {"to": "ada@example.com", "b": 1, "a": 2}, "key": "k1", "delay": "1h", "priority": 3, "tenant": "acme"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["jobs"][0]["duplicate"], false);
    let first = body["jobs"][0]["id"].as_str().unwrap().to_owned();
    // The same key while the job is unfinished: that job, as a duplicate.
    let (status, body) = server.post(
        "/api/v1/queues/email/jobs",
        json!({"payload": {"to": "other"}, "key": "k1"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["jobs"][0], json!({"id": first, "duplicate": true}));

    let job = server.ok(&format!("/api/v1/jobs/{first}"));
    assert_eq!(job["state"], "scheduled");
    assert_eq!(
        job["payload"],
        json!({"to": "ada@example.com", "b": 1, "a": 2})
    );
    assert_eq!(job["priority"], 3);
    assert_eq!(job["tenant"], "acme");
    assert_eq!(
        job["max_attempts"], 1,
        "the config's max attempts, settled at enqueue"
    );
    assert_eq!(job["key"], "k1");

    let (status, body) = server.post(
        "/api/v1/queues/email/jobs",
        json!({"jobs": [
            {"payload": {"n": 1}, "delay": "1h"},
            {"payload": {"n": 2}, "delay": "1h"},
            {"payload": {"n": 3}, "delay": "1h"},
        ]}),
    );
    assert_eq!(status, 201, "{body}");
    let batch: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(batch.len(), 3);

    // Unknown queue: refused naming the known ones, unless forced.
    let (status, body) = server.post("/api/v1/queues/emial/jobs", json!({"payload": 1}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad_request");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("unknown queue `emial`") && message.contains("email"),
        "{message}"
    );
    let (status, body) = server.post(
        "/api/v1/queues/elsewhere/jobs?force=true",
        json!({"payload": 1, "delay": "1h"}),
    );
    assert_eq!(status, 201, "{body}");
    let forced = body["jobs"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.ok(&format!("/api/v1/jobs/{forced}"))["queue"],
        "elsewhere"
    );

    // Too large: 413 naming the limit (the config's 16 MiB, or a smaller one of the store's);
    // a bad body is a 400.
    let big = "x".repeat((16 << 20) + 10);
    let (status, body) = server.post("/api/v1/queues/email/jobs", json!({"payload": big}));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("larger than the maximum payload of") && message.contains(" bytes ("),
        "{message}"
    );
    let (status, body) = server.post("/api/v1/queues/email/jobs", json!({"paylod": 1}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("paylod"),
        "{body}"
    );

    let (status, body) = server.get("/api/v1/jobs/nope");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // Paging, newest first: two pages of two and one of one, no job twice.
    let mut seen = Vec::new();
    let mut after = String::new();
    for page in 0.. {
        let list = server.ok(&format!("/api/v1/jobs?queue=email&limit=2{after}"));
        for job in list["jobs"].as_array().unwrap() {
            seen.push(job["id"].as_str().unwrap().to_owned());
        }
        match list["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => {
                assert_eq!(page, 1, "4 jobs in pages of 2");
                break;
            }
        }
    }
    let mut expected: Vec<String> = batch.iter().rev().map(|s| (*s).to_owned()).collect();
    expected.push(first.clone());
    assert_eq!(seen, expected);
    let (status, _) = server.get("/api/v1/jobs?state=bogus");
    assert_eq!(status, 400);

    // Cancel one, then by filter.
    let (status, body) = server.post(
        &format!("/api/v1/jobs/{first}/cancel"),
        json!({"reason": "not needed"}),
    );
    assert_eq!((status, &body), (200, &json!({"cancelled": true})));
    let job = server.ok(&format!("/api/v1/jobs/{first}"));
    assert_eq!(job["state"], "cancelled");
    let (status, body) = server.post(&format!("/api/v1/jobs/{first}/cancel"), json!({}));
    assert_eq!((status, &body), (200, &json!({"cancelled": false})));
    let (status, _) = server.post("/api/v1/jobs/nope/cancel", json!({}));
    assert_eq!(status, 404);
    let (status, body) = server.post("/api/v1/jobs/cancel", json!({}));
    assert_eq!(status, 400, "an empty filter needs all: {body}");
    let (status, body) = server.post(
        "/api/v1/jobs/cancel",
        json!({"queue": "email", "states": ["queued"]}),
    );
    assert_eq!(status, 200, "{body}");
    let mut cancelled: Vec<&str> = body["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    cancelled.sort();
    let mut want = batch.clone();
    want.sort();
    assert_eq!(cancelled, want);

    let queues = server.ok("/api/v1/queues");
    let email = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "email")
        .unwrap();
    assert_eq!(email["counts"]["cancelled"], 4);
    assert!(email["handler"].as_str().unwrap().ends_with(".wasm"));
    assert_eq!(email["digest"].as_str().unwrap().len(), 64);
}

/// Dead jobs: listed, replayed (back to dead, since the plugin refuses again), purged.
fn dead_letters(server: &Server) {
    let dead: Vec<String> = (0..3)
        .map(|n| {
            server.enqueue(
                "email",
                json!({"payload": {"to": format!("nobody{n}"), "mode": "reject"}}),
            )
        })
        .collect();
    for id in &dead {
        server.wait_state(id, "dead");
    }
    let list = server.ok("/api/v1/dlq?queue=email");
    let listed: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    for id in &dead {
        assert!(listed.contains(&id.as_str()), "{id} in {listed:?}");
    }
    assert_eq!(list["jobs"][0]["last_phase"], "run");

    let (status, body) = server.post("/api/v1/dlq/replay", json!({"ids": [dead[0]]}));
    assert_eq!((status, &body), (200, &json!({"replayed": 1})));
    let job = server.ok(&format!("/api/v1/jobs/{}", dead[0]));
    assert!(
        crate::support::event_kinds(&job).contains(&"replayed"),
        "{job:#}"
    );
    server.wait_state(&dead[0], "dead");
    let (status, body) = server.post("/api/v1/dlq/replay", json!({"ids": ["nope"]}));
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = server.post("/api/v1/dlq/replay", json!({}));
    assert_eq!(status, 400, "{body}");

    let (status, body) = server.post("/api/v1/dlq/purge", json!({"ids": [dead[1]]}));
    assert_eq!((status, &body), (200, &json!({"purged": 1})));
    assert_eq!(server.get(&format!("/api/v1/jobs/{}", dead[1])).0, 404);
    let (status, body) = server.post("/api/v1/dlq/purge", json!({"queue": "email"}));
    assert_eq!((status, &body), (200, &json!({"purged": 2})));
    assert_eq!(server.ok("/api/v1/dlq")["jobs"], json!([]));
}

/// A job that is not dead cannot be replayed: 409.
fn replaying_a_live_job_conflicts(server: &Server) {
    let id = server.enqueue("email", json!({"payload": {"to": "x"}, "delay": "1h"}));
    let (status, body) = server.post("/api/v1/dlq/replay", json!({"ids": [id]}));
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
}

/// Schedules: put (created, then replaced), list, delete.
fn schedules(server: &Server) {
    let (status, body) = server.call(
        "PUT",
        "/api/v1/schedules/nightly",
        Some(json!({"queue": "email", "cron": "0 3 * * *", "payload": {"to": "ops"}})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    assert_eq!(body["schedule"]["payload"], json!({"to": "ops"}));
    let (status, body) = server.call(
        "PUT",
        "/api/v1/schedules/nightly",
        Some(json!({"queue": "email", "every": "1h"})),
    );
    assert_eq!((status, &body["created"]), (200, &json!(false)), "{body}");
    let list = server.ok("/api/v1/schedules");
    let names: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly"]);
    assert_eq!(list["schedules"][0]["queue"], "email");
    let (status, body) = server.call(
        "PUT",
        "/api/v1/schedules/bad",
        Some(json!({"queue": "email", "cron": "not a cron"})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        server.call("DELETE", "/api/v1/schedules/nightly", None).0,
        200
    );
    assert_eq!(
        server.call("DELETE", "/api/v1/schedules/nightly", None).0,
        404
    );
    assert_eq!(server.ok("/api/v1/schedules")["schedules"], json!([]));
}

/// The events of a running worker through the list and the SSE stream, resumed with
/// `Last-Event-ID` without a gap or a duplicate.
fn events_and_stream(setup: &Setup, server: &Server) {
    let before = server.ok("/api/v1/events?limit=1");
    let start = before["events"][0]["seq"].as_i64().unwrap_or(0);
    let stream_url = format!(
        "{}/api/v1/events/stream?queue=email&after={start}",
        server.base
    );
    let open = |last: Option<i64>| {
        let mut request = server.agent.get(&stream_url);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let response = request.call().unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        BufReader::new(response.into_body().into_reader())
    };
    let mut worker = setup.worker(&[]);
    let ids: Vec<String> = (0..4)
        .map(|n| {
            server.enqueue(
                "email",
                json!({"payload": {"to": format!("ada{n}@example.com"), "mode": "ok"}}),
            )
        })
        .collect();
    // Read three events, then resume after the second: the third comes again, then the rest.
    let mut reader = open(None);
    let first = read_events(&mut reader, 3);
    drop(reader);
    let mut reader = open(Some(first[1].0));
    let rest = read_events(&mut reader, 8);
    assert_eq!(rest[0], first[2], "resumed right after Last-Event-ID");
    let seqs: Vec<i64> = first[..2].iter().chain(&rest).map(|e| e.0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate: {seqs:?}"
    );
    for id in &ids {
        server.wait_state(id, "succeeded");
    }
    // Everything the list holds after `start` for the queue is what the stream sent, in order.
    let listed = server.ok(&format!(
        "/api/v1/events?queue=email&after={start}&limit=1000"
    ));
    let listed: Vec<(i64, String)> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_i64().unwrap(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let streamed: Vec<(i64, String)> = first[..2].iter().chain(&rest).cloned().collect();
    assert_eq!(listed[..streamed.len()], streamed[..]);
    assert!(
        streamed.iter().any(|(_, kind)| kind == "started"),
        "the worker's events come through: {streamed:?}"
    );
    let job_events = server.ok(&format!("/api/v1/events?job={}", ids[0]));
    assert!(
        job_events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "succeeded"),
        "{job_events}"
    );
    setup.assert_running(std::slice::from_mut(&mut worker));
    stop(worker, "-TERM");
}

/// Read `n` SSE messages: (id, event) of each, checked against their data.
fn read_events(reader: &mut impl std::io::BufRead, n: usize) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let (mut id, mut kind, mut data) = (None, None, None);
    let mut line = String::new();
    while out.len() < n {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse::<i64>().unwrap());
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
        } else if line.is_empty()
            && let (Some(i), Some(k), Some(d)) = (id.take(), kind.take(), data.take())
        {
            assert_eq!(d["seq"], i);
            assert_eq!(d["kind"], k.as_str());
            assert_eq!(d["queue"], "email");
            out.push((i, k));
        }
    }
    out
}

/// The core of the API on one store.
fn exercise(setup: &Setup) {
    let server = Server::start(setup, &[]);
    assert_eq!(
        server.ok("/api/v1/auth"),
        json!({"role": "admin", "auth_required": false, "demo": false})
    );
    enqueue_show_list_and_cancel(&server);
    schedules(&server);
    replaying_a_live_job_conflicts(&server);
    events_and_stream(setup, &server);
    let mut worker = setup.worker(&[]);
    dead_letters(&server);
    setup.assert_running(std::slice::from_mut(&mut worker));
    stop(worker, "-TERM");
}

#[test]
fn the_http_api_enqueues_lists_cancels_replays_and_streams_on_sqlite() {
    exercise(&Setup::new(CONFIG));
}

#[test]
fn the_http_api_enqueues_lists_cancels_replays_and_streams_on_nats() {
    let nats = NatsServer::start();
    exercise(&Setup::nats(CONFIG, &nats.url()));
}

#[test]
fn tokens_are_required_and_a_read_token_cannot_change_anything() {
    let setup = Setup::new(&format!(
        "{CONFIG}\n[http]\ntokens = [{{ role = \"read\", value = \"reader-token\" }}, {{ role = \"admin\", env = \"API_TEST_ADMIN\" }}]\n"
    ));
    let server = Server::start(&setup, &[("API_TEST_ADMIN", "admin-token")]);
    let (status, body) = server.get("/api/v1/jobs");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        server.ok("/api/v1/auth"),
        json!({"role": null, "auth_required": true, "demo": false})
    );
    let wrong = server.with_token("admin-tokem");
    assert_eq!(wrong.get("/api/v1/jobs").0, 401);
    let reader = server.with_token("reader-token");
    assert_eq!(reader.ok("/api/v1/auth")["role"], "read");
    assert_eq!(reader.ok("/api/v1/jobs")["jobs"], json!([]));
    let (status, body) = reader.post("/api/v1/queues/email/jobs", json!({"payload": 1}));
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let admin = server.with_token("admin-token");
    assert_eq!(admin.ok("/api/v1/auth")["role"], "admin");
    admin.enqueue("email", json!({"payload": 1, "delay": "1h"}));
    assert_eq!(
        reader.ok("/api/v1/jobs")["jobs"].as_array().unwrap().len(),
        1
    );
    // Health needs no token; metrics a read one.
    let health = server
        .agent
        .get(format!("{}/healthz", server.base))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = |token: Option<&str>| {
        let mut request = server.agent.get(format!("{}/metrics", server.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request.call().unwrap().status().as_u16()
    };
    assert_eq!(metrics(None), 401);
    assert_eq!(metrics(Some("reader-token")), 200);
    drop(server);
    let log = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("serve-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(log.contains("refused an HTTP API request"), "{log}");
    for secret in ["reader-token", "admin-token", "admin-tokem"] {
        assert!(!log.contains(secret), "a token was logged: {log}");
    }
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_at_start() {
    let setup = Setup::new(CONFIG);
    let (code, _, stderr) = setup.run(&["serve", "--http", "0.0.0.0:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to serve the HTTP API on 0.0.0.0:0 without a token"),
        "{stderr}"
    );
}

#[test]
fn health_metrics_and_the_openapi_document_list_every_route() {
    let setup = Setup::new(CONFIG);
    let server = Server::start(&setup, &[]);
    let mut metrics = server
        .agent
        .get(format!("{}/metrics", server.base))
        .call()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    let doc = server.ok("/api/v1/openapi.json");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/auth", "get"),
        ("/api/v1/queues/{queue}/jobs", "post"),
        ("/api/v1/jobs", "get"),
        ("/api/v1/jobs/{id}", "get"),
        ("/api/v1/jobs/{id}/cancel", "post"),
        ("/api/v1/jobs/cancel", "post"),
        ("/api/v1/queues", "get"),
        ("/api/v1/dlq", "get"),
        ("/api/v1/dlq/replay", "post"),
        ("/api/v1/dlq/purge", "post"),
        ("/api/v1/schedules", "get"),
        ("/api/v1/schedules/{name}", "put"),
        ("/api/v1/schedules/{name}", "delete"),
        ("/api/v1/events", "get"),
        ("/api/v1/events/stream", "get"),
        ("/api/v1/workers", "get"),
    ];
    for (path, method) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "no route undocumented or unlisted here"
    );
    let (status, body) = server.get("/api/v1/nothing-here");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[test]
fn a_worker_with_worker_http_serves_the_same_api() {
    let port = free_port();
    let setup = Setup::new(&CONFIG.replace(
        "[worker]\n",
        &format!("[worker]\nhttp = \"127.0.0.1:{port}\"\n"),
    ));
    let worker = setup.worker(&[]);
    let server = Server::at(format!("http://127.0.0.1:{port}"));
    let id = server.enqueue(
        "email",
        json!({"payload": {"to": "ada@example.com", "mode": "ok"}}),
    );
    let job = server.wait_state(&id, "succeeded");
    assert_eq!(job["attempts"][0]["outcome"], "succeeded");
    assert_eq!(server.ok("/api/v1/auth")["role"], "admin");

    // A producer's trace context, from the `traceparent` header, is kept on the job; a
    // malformed one is refused.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let enqueue_traced = |value: &str| {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/api/v1/queues/email/jobs", server.base))
            .header("Content-Type", "application/json")
            .header("traceparent", value)
            .body(json!({"payload": {"to": "ada@example.com"}}).to_string())
            .unwrap();
        let mut response = server.agent.run(request).unwrap();
        let status = response.status().as_u16();
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        (status, body)
    };
    let (status, body) = enqueue_traced(traceparent);
    assert_eq!(status, 201, "{body}");
    let traced = body["jobs"][0]["id"].as_str().unwrap().to_owned();
    let job = server.wait_state(&traced, "succeeded");
    assert_eq!(job["traceparent"], traceparent, "{job}");
    let (status, body) = enqueue_traced("00-nothex");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("bad traceparent"),
        "{body}"
    );

    // The worker is in the registry, serving the queue.
    let workers = server.ok("/api/v1/workers");
    let listed = workers["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{workers}");
    assert_eq!(listed[0]["pid"], worker.id(), "{workers}");
    assert_eq!(listed[0]["queues"], json!(["email"]), "{workers}");
    let queues = server.ok("/api/v1/queues");
    let email = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "email")
        .unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(email["workers"], 1, "{queues}");

    // The worker's `/metrics` counts what it ran: a Prometheus text parser reads it.
    let text = server
        .agent
        .get(format!("{}/metrics", server.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let samples = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap()
        .samples;
    let succeeded: f64 = samples
        .iter()
        .filter(|s| {
            s.metric.starts_with("spool_jobs_succeeded") && s.labels.get("queue") == Some("email")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(succeeded, 2.0, "{text}");
    stop(worker, "-TERM");
    assert!(
        server
            .agent
            .get(format!("{}/healthz", server.base))
            .call()
            .is_err(),
        "the API stops with the worker"
    );
}
