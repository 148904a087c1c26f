//! W3C trace context and OTLP export end to end: a job keeps the `traceparent` it was
//! enqueued with on both backends, its children carry the span of the attempt that made them,
//! and a worker with a `[tracing]` section sends each attempt as a span to an OTLP/HTTP
//! receiver the test runs itself.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use spool::queue::nats::{NatsBackend, NatsOptions};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
use spool::queue::{Backend, NewJob, QueueClaim};
use spool::trace::TraceParent;

use crate::support::{NatsServer, Setup, state, stop};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const LIMIT: Duration = Duration::from_secs(60);

const FANOUT: &str = r#"
[worker]
lease = "5s"
shutdown_grace = "1s"

[queues.fanout]
plugin = "FANOUT"
timeout = "10s"
"#;

fn traceparent() -> TraceParent {
    TRACEPARENT.parse().unwrap()
}

/// The three parts of a `traceparent` after its version.
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!((p.len(), p[0]), (4, "00"), "{tp}");
    (p[1].to_owned(), p[2].to_owned(), p[3].to_owned())
}

fn claim(queue: &str) -> Vec<QueueClaim> {
    vec![QueueClaim {
        queue: queue.to_owned(),
        limit: 10,
        ..QueueClaim::default()
    }]
}

/// Enqueue a job with a traceparent through `backend`, read it back and claim it: the same
/// traceparent everywhere; a job without one has none.
async fn round_trip<B: Backend>(backend: &B) {
    let ids = backend
        .enqueue(vec![
            NewJob {
                queue: "q".to_owned(),
                payload: b"{}".to_vec(),
                traceparent: Some(traceparent()),
                ..NewJob::default()
            },
            NewJob {
                queue: "q".to_owned(),
                payload: b"{}".to_vec(),
                ..NewJob::default()
            },
        ])
        .await
        .unwrap();
    let (traced, plain) = (&ids[0].id, &ids[1].id);
    let detail = backend.job(traced).await.unwrap().unwrap();
    assert_eq!(detail.traceparent, Some(traceparent()));
    assert_eq!(backend.job(plain).await.unwrap().unwrap().traceparent, None);
    let claimed = backend
        .claim("w1", &claim("q"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        let want = (c.lease.job_id == *traced).then(traceparent);
        assert_eq!(c.traceparent, want, "job {}", c.lease.job_id);
    }
    let detail = backend.job(traced).await.unwrap().unwrap();
    assert_eq!(detail.traceparent, Some(traceparent()));
}

#[tokio::test]
async fn a_sqlite_job_keeps_its_traceparent_from_enqueue_to_claim() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        SqliteBackend::open(&dir.path().join("spool.db"), SqliteOptions::default()).unwrap();
    round_trip(&backend).await;
}

#[tokio::test]
async fn a_nats_job_keeps_its_traceparent_in_a_header_and_its_record() {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let backend = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    round_trip(&backend).await;

    // The job message carries the standard header, for any consumer of the stream.
    let id = backend
        .enqueue(vec![NewJob {
            queue: "q".to_owned(),
            payload: b"{}".to_vec(),
            traceparent: Some(traceparent()),
            ..NewJob::default()
        }])
        .await
        .unwrap()[0]
        .id
        .clone();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let message = js
        .get_stream("SPOOL_JOBS")
        .await
        .unwrap()
        .get_raw_message(id.0.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        message.headers.get("traceparent").map(|v| v.as_str()),
        Some(TRACEPARENT)
    );

    // A plain NATS producer's header is read; a malformed one is dropped, not the job.
    let mut published = Vec::new();
    for header in [TRACEPARENT, "00-not-a-traceparent-01"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", header);
        let reply = client
            .request_with_headers("spool.jobs.plain", headers, "{}".into())
            .await
            .unwrap();
        let ack: Value = serde_json::from_slice(&reply.payload).unwrap();
        published.push(spool::queue::JobId(
            ack["seq"].as_u64().unwrap().to_string(),
        ));
    }
    let claimed = backend
        .claim("w1", &claim("plain"), Duration::from_secs(30))
        .await
        .unwrap();
    let of = |id: &spool::queue::JobId| {
        claimed
            .iter()
            .find(|c| c.lease.job_id == *id)
            .unwrap_or_else(|| panic!("job {id} not claimed"))
            .traceparent
    };
    assert_eq!(of(&published[0]), Some(traceparent()));
    assert_eq!(of(&published[1]), None);
}

#[test]
fn spool_enqueue_takes_a_traceparent_and_spool_job_shows_it() {
    let s = Setup::new(FANOUT);
    let (code, stdout, stderr) = s.run(&[
        "enqueue",
        "--traceparent",
        TRACEPARENT,
        "fanout",
        r#"{"n": 0, "queue": "fanout"}"#,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.trim();
    assert_eq!(s.job(id)["traceparent"], TRACEPARENT);
    let plain = s.enqueue("fanout", r#"{"n": 0, "queue": "fanout"}"#);
    assert_eq!(s.job(&plain)["traceparent"], Value::Null);

    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-XYZ-00f067aa0ba902b7-01",
    ] {
        let (code, _, stderr) = s.run(&["enqueue", "--traceparent", bad, "fanout", "{}"]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--traceparent") && stderr.contains("bad traceparent"),
            "{bad}: {stderr}"
        );
    }
    // Nothing was enqueued by the refused commands.
    assert_eq!(
        s.json_lines(&["jobs", "--json"]).as_array().unwrap().len(),
        2
    );
}

/// Run a fanout parent of two children with a traceparent to the end, on `s`'s store; return
/// the parent's and the children's `spool job --json`.
fn run_fanout(s: &Setup) -> (Value, Vec<Value>) {
    let (code, stdout, stderr) = s.run(&[
        "enqueue",
        "--traceparent",
        TRACEPARENT,
        "fanout",
        r#"{"n": 2, "queue": "fanout"}"#,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let id = stdout.trim().to_owned();
    let worker = s.worker(&[]);
    let parent = s.wait_for(&id, LIMIT, |j| state(j) == "succeeded");
    stop(worker, "-TERM");
    let children = parent["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| s.job(c["id"].as_str().unwrap()))
        .collect::<Vec<_>>();
    assert_eq!(children.len(), 2, "{parent:#}");
    (parent, children)
}

/// Both children carry one traceparent: the parent's trace, and a span that is not the
/// producer's (the parent's first attempt). Returns that span id.
fn children_share_the_parent_attempts_span(parent: &Value, children: &[Value]) -> String {
    assert_eq!(parent["traceparent"], TRACEPARENT);
    let tps: Vec<&str> = children
        .iter()
        .map(|c| c["traceparent"].as_str().unwrap_or_else(|| panic!("{c:#}")))
        .collect();
    assert_eq!(tps[0], tps[1]);
    let (trace, span, flags) = parts(tps[0]);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "01"));
    assert_ne!(span, PRODUCER_SPAN);
    span
}

#[test]
fn children_carry_the_span_of_the_attempt_that_enqueued_them_on_sqlite() {
    let s = Setup::new(FANOUT);
    let (parent, children) = run_fanout(&s);
    children_share_the_parent_attempts_span(&parent, &children);
}

#[test]
fn children_carry_the_span_of_the_attempt_that_enqueued_them_on_nats() {
    let server = NatsServer::start();
    let s = Setup::nats(FANOUT, &server.url());
    let (parent, children) = run_fanout(&s);
    children_share_the_parent_attempts_span(&parent, &children);
}

/// One request the receiver got.
struct Request {
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Value,
}

/// What the receiver got, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Request>>>);

impl Received {
    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|request| {
                request.body["resourceSpans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r["scopeSpans"].as_array().unwrap().iter())
                    .flat_map(|s| s["spans"].as_array().unwrap().clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A tiny OTLP/HTTP receiver on 127.0.0.1: records each POST (path, headers, JSON body) and
/// answers 200 with an empty JSON object, one HTTP/1.1 request per connection.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Received::default();
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap();
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.0.lock().unwrap().push(Request {
                path,
                headers,
                body,
            });
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .unwrap();
        }
    });
    (port, received)
}

/// An attribute's value (`stringValue` or `intValue`, both strings in OTLP/JSON).
fn attr<'a>(attributes: &'a Value, key: &str) -> Option<&'a str> {
    attributes
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| {
            let v = &a["value"];
            v["stringValue"].as_str().or(v["intValue"].as_str())
        })
}

#[test]
fn a_worker_exports_each_attempt_as_a_span_of_the_jobs_trace() {
    let (port, received) = receiver();
    let config = format!(
        r#"{FANOUT}
[tracing]
otlp_endpoint = "http://127.0.0.1:{port}"
headers = {{ x-api-key = "k-123" }}
service_name = "spool-test"
"#
    );
    let s = Setup::new(&config);
    let (parent, children) = run_fanout(&s);
    let child_span = children_share_the_parent_attempts_span(&parent, &children);
    let parent_id = parent["id"].as_str().unwrap();

    // The parent ran twice (enqueue children, then sum them up) and each child once. The
    // worker has stopped, so its exporter has sent everything.
    let start = Instant::now();
    let spans = loop {
        let spans = received.spans();
        if spans.len() >= 4 || start.elapsed() > LIMIT {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(spans.len(), 4, "{spans:#?}\n{}", s.worker_logs());
    for Request {
        path,
        headers,
        body,
    } in received.0.lock().unwrap().iter()
    {
        assert_eq!(path, "/v1/traces");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-api-key"), Some("k-123"));
        assert_eq!(header("content-type"), Some("application/json"));
        let resource = &body["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(attr(resource, "service.name"), Some("spool-test"));
    }
    for span in &spans {
        assert_eq!(span["traceId"], TRACE_ID, "{span:#}");
    }

    let of_job = |id: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| attr(&s["attributes"], "spool.job.id") == Some(id))
            .collect()
    };
    // The parent's attempts are children of the producer's span.
    let parent_spans = of_job(parent_id);
    assert_eq!(parent_spans.len(), 2, "{spans:#?}");
    let first = parent_spans
        .iter()
        .find(|s| attr(&s["attributes"], "spool.outcome") == Some("wait-for-children"))
        .unwrap_or_else(|| panic!("{parent_spans:#?}"));
    let digest = parent["attempts"][0]["digest"].as_str().unwrap();
    for span in &parent_spans {
        assert_eq!(span["parentSpanId"], PRODUCER_SPAN, "{span:#}");
        let a = &span["attributes"];
        assert_eq!(attr(a, "spool.queue"), Some("fanout"));
        assert_eq!(attr(a, "spool.attempt"), Some("1"));
        assert_eq!(attr(a, "spool.plugin.digest"), Some(digest));
    }
    // The children's job traceparent names the first parent attempt's span, and so does
    // their attempts' parent.
    assert_eq!(first["spanId"], child_span.as_str());
    // Its log line is an event, with the plugin's fields.
    let event = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "enqueued children")
        .unwrap_or_else(|| panic!("{first:#}"));
    assert_eq!(attr(&event["attributes"], "level"), Some("info"));
    assert_eq!(attr(&event["attributes"], "n"), Some("2"));
    assert_eq!(attr(&event["attributes"], "queue"), Some("fanout"));
    let second = parent_spans
        .iter()
        .find(|s| s["spanId"] != first["spanId"])
        .unwrap();
    assert_eq!(
        attr(&second["attributes"], "spool.outcome"),
        Some("succeeded")
    );
    assert_eq!(second["status"]["code"], 1);

    for child in &children {
        let id = child["id"].as_str().unwrap();
        let child_spans = of_job(id);
        assert_eq!(child_spans.len(), 1, "{spans:#?}");
        let span = child_spans[0];
        assert_eq!(span["parentSpanId"], child_span.as_str(), "{span:#}");
        assert_eq!(
            attr(&span["attributes"], "spool.outcome"),
            Some("succeeded")
        );
        assert_ne!(span["spanId"], first["spanId"]);
    }
}

#[test]
fn the_tracing_section_is_checked_when_the_config_is_read() {
    let config = spool::config::Config::parse(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nheaders = { x-api-key = \"k\" }\n",
    )
    .unwrap();
    let otlp = config.tracing.otlp().unwrap();
    assert_eq!(
        otlp.endpoint.traces_url(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(otlp.service_name, "spool");
    assert_eq!(otlp.headers, [("x-api-key".to_owned(), "k".to_owned())]);
    assert_eq!(
        spool::config::Config::parse("").unwrap().tracing.otlp(),
        None
    );

    for (text, want) in [
        ("otlp_endpoint = \"127.0.0.1:4318\"", "bad OTLP endpoint"),
        ("otlp_endpoint = \"ftp://127.0.0.1\"", "http or https"),
        (
            "headers = { \"bad name\" = \"v\" }",
            "bad OTLP header `bad name`",
        ),
        (
            "endpoint = \"http://127.0.0.1:4318\"",
            "unknown field `endpoint`",
        ),
    ] {
        let e = spool::config::Config::parse(&format!("[tracing]\n{text}\n")).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
}
