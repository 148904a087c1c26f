//! What the capabilities cost (issue 17): the per-run cost of the no-op plugin with `wasi:http`
//! and `wasi:config` linked against a sandbox built without them, and outbound HTTP from
//! plugins against a native Rust client doing the same requests from the host.
//!
//! Run with `cargo bench -p spool-runtime --bench capabilities` (add `-- quick` for a fifth of
//! the work). The plugins are built from `plugins/` by the bench itself. Every figure is the
//! median of several rounds, the variants interleaved within each round, so that load from
//! elsewhere on the machine falls on all of them alike; ratios are the median of the per-round
//! ratios. Figures go into BENCHMARKS.md.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use spool::sandbox::{ConfigStore, ConfigValues, Secret};
use spool::{
    Grants, HttpGrant, HttpLimits, JobInput, Limits, Outcome, Plugin, Sandbox, SandboxConfig,
};
use wasmtime_wasi_http::io::TokioIo;

/// The body each request POSTs, as the email plugin would.
const BODY: &str = r#"{"to":"someone@example.com","job":"bench","attempt":1}"#;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 5 } else { 1 };
    let rounds = if quick { 3 } else { 7 };
    // Short rounds, many of them: the variants differ by less than the load on the machine
    // moves in a second.
    let run_rounds = if quick { 5 } else { 21 };

    let with = sandbox(true);
    let without = sandbox(false);
    let grant = Grants {
        granted_by: "the bench".to_owned(),
        http: Some(Arc::new(HttpGrant {
            granted_by: "the bench's grants".to_owned(),
            patterns: vec!["http://127.0.0.1:*".parse().unwrap()],
            limits: HttpLimits::default(),
        })),
    };
    let noop_path = xtask::plugin("noop").unwrap();
    let fetch_path = xtask::plugin("fetch").unwrap();
    let noop_with = with.load_plugin(&noop_path, Limits::default()).unwrap();
    let noop_without = without.load_plugin(&noop_path, Limits::default()).unwrap();
    let noop_granted = with
        .load_plugin_with(&noop_path, Limits::default(), grant.clone())
        .unwrap();
    let noop_configured = noop_with.with_config(config_store());
    let fetch = with
        .load_plugin_with(&fetch_path, Limits::default(), grant)
        .unwrap();

    let runs = 5_000 / scale;
    println!(
        "## per-run cost of the no-op plugin, capabilities linked or not (1 thread, {run_rounds} rounds of {runs} runs)"
    );
    let noop_job = JobInput::new("bench", b"{}".to_vec());
    let no_requests = JobInput::new("bench", br#"{"requests":[]}"#.to_vec());
    let variants: [(&str, &Sandbox, &Plugin, &JobInput); 5] = [
        (
            "noop, without wasi:http and wasi:config linked",
            &without,
            &noop_without,
            &noop_job,
        ),
        (
            "noop, with them linked (no grant, no config)",
            &with,
            &noop_with,
            &noop_job,
        ),
        (
            "noop, linked, holding an http grant",
            &with,
            &noop_granted,
            &noop_job,
        ),
        (
            "noop, linked, with 2 config values and 1 secret",
            &with,
            &noop_configured,
            &noop_job,
        ),
        (
            "fetch (imports wasi:http), granted, no request",
            &with,
            &fetch,
            &no_requests,
        ),
    ];
    for (_, sandbox, plugin, job) in &variants {
        per_run(sandbox, plugin, job, 1_000);
    }
    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..run_rounds {
        // Each round starts with another variant, so none is always first after a pause.
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (_, sandbox, plugin, job) = variants[i];
            per_round[i].push(per_run(sandbox, plugin, job, runs));
        }
    }
    println!(
        "| variant | per run, median | per run, best round | against without (median of per-round ratios) | against without (best rounds) |"
    );
    println!("|---|---|---|---|---|");
    let best = |i: usize| per_round[i].iter().copied().fold(f64::INFINITY, f64::min);
    for (i, (name, ..)) in variants.iter().enumerate() {
        let ratios = per_round[i]
            .iter()
            .zip(&per_round[0])
            .map(|(on, off)| (on / off - 1.0) * 100.0);
        let (against, against_best) = if i == 0 {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                format!("{:+.1}%", median(ratios)),
                format!("{:+.1}%", (best(i) / best(0) - 1.0) * 100.0),
            )
        };
        println!(
            "| {name} | {:.2} µs | {:.2} µs | {against} | {against_best} |",
            median(per_round[i].iter().copied()),
            best(i),
        );
    }

    println!(
        "\n## outbound HTTP: one POST per attempt to a local server, plugin against native client (median of {rounds} rounds)"
    );
    let server = start_server();
    let url = format!("http://{server}/send");
    let payload = serde_json::json!({
        "requests": [{"url": url, "method": "POST", "body": BODY}],
    })
    .to_string();
    let post = JobInput::new("bench", payload.into_bytes());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Warm up both sides (the pool's slots, the server's threads).
    rt.block_on(guest_load(&with, &fetch, &post, 8, 50));
    rt.block_on(native_load(server, 8, 50));
    println!(
        "| client | concurrency | requests/s | p50 | p99 | requests/s against native | p50 against native |"
    );
    println!("|---|---|---|---|---|---|---|");
    for concurrency in [1usize, 8] {
        let each = if concurrency == 1 { 1_000 } else { 250 } / scale;
        let mut guest = Vec::new();
        let mut native = Vec::new();
        for _ in 0..rounds {
            guest.push(rt.block_on(guest_load(&with, &fetch, &post, concurrency, each)));
            native.push(rt.block_on(native_load(server, concurrency, each)));
        }
        let row = |name: &str, these: &[Load], ratios: bool| {
            let rate_ratio = median(these.iter().zip(&native).map(|(a, b)| a.rate / b.rate));
            let p50_ratio = median(
                these
                    .iter()
                    .zip(&native)
                    .map(|(a, b)| a.p50.as_secs_f64() / b.p50.as_secs_f64()),
            );
            println!(
                "| {name} | {concurrency} | {:.0} | {:.0} µs | {:.0} µs | {} | {} |",
                median(these.iter().map(|l| l.rate)),
                median(these.iter().map(|l| us(l.p50))),
                median(these.iter().map(|l| us(l.p99))),
                if ratios {
                    format!("{rate_ratio:.2}×")
                } else {
                    "—".to_owned()
                },
                if ratios {
                    format!("{p50_ratio:.2}×")
                } else {
                    "—".to_owned()
                },
            );
        };
        row("plugin (fetch, Sandbox::run)", &guest, true);
        row("native (hyper, host)", &native, false);
    }
}

fn sandbox(capabilities: bool) -> Sandbox {
    Sandbox::new(SandboxConfig {
        concurrency: 16,
        max_memory: 256 << 20,
        capabilities,
        ..SandboxConfig::default()
    })
    .unwrap()
}

/// What the email queue of the README would give its plugin.
fn config_store() -> ConfigStore {
    let config = BTreeMap::from([
        ("api_base".to_owned(), "http://127.0.0.1:8025".to_owned()),
        ("from".to_owned(), "jobs@example.com".to_owned()),
    ]);
    let secrets = BTreeMap::from([(
        "api_key".to_owned(),
        Secret::new("not-a-real-key-0123456789"),
    )]);
    ConfigStore::new(ConfigValues::new(config, secrets).unwrap(), BTreeMap::new())
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `runs` runs of `plugin` one after another on one thread: µs per run.
fn per_run(sandbox: &Sandbox, plugin: &Plugin, job: &JobInput, runs: usize) -> f64 {
    current_thread().block_on(async {
        let started = Instant::now();
        for _ in 0..runs {
            let report = sandbox.run(plugin, job).await.unwrap();
            assert!(report.outcome.is_success(), "{:?}", report.outcome);
        }
        started.elapsed().as_secs_f64() * 1e6 / runs as f64
    })
}

/// One round of requests: their rate and latency percentiles.
struct Load {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

impl Load {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Load {
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        Load {
            rate: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: pct(0.5),
            p99: pct(0.99),
        }
    }
}

/// `concurrency` tasks, each running `each` attempts of the fetch plugin one after another,
/// one POST per attempt. Latency: the whole attempt (instantiate, request, teardown).
async fn guest_load(
    sandbox: &Sandbox,
    plugin: &Plugin,
    job: &JobInput,
    concurrency: usize,
    each: usize,
) -> Load {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (sandbox, plugin, job) = (sandbox.clone(), plugin.clone(), job.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for _ in 0..each {
                    let sent = Instant::now();
                    let report = sandbox.run(&plugin, &job).await.unwrap();
                    latencies.push(sent.elapsed());
                    let Outcome::Succeeded { output } = &report.outcome else {
                        panic!("{:?}", report.outcome);
                    };
                    let results: serde_json::Value = serde_json::from_slice(output).unwrap();
                    assert_eq!(results[0]["status"], 200, "{results}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(concurrency * each);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load::of(latencies, started.elapsed())
}

/// The same from the host: each request on a fresh connection, as each attempt makes one.
async fn native_load(server: SocketAddr, concurrency: usize, each: usize) -> Load {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                for _ in 0..each {
                    let sent = Instant::now();
                    assert_eq!(native_post(server).await, 200);
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(concurrency * each);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Load::of(latencies, started.elapsed())
}

/// Connect, POST [`BODY`], read the whole answer: its status.
async fn native_post(server: SocketAddr) -> u16 {
    let stream = tokio::net::TcpStream::connect(server).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{server}/send"))
        .header(http::header::HOST, server.to_string())
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    drop(sender);
    connection.await.unwrap().unwrap();
    status
}

/// A hyper HTTP/1.1 server on 127.0.0.1 in its own thread and runtime, answering every request
/// `200` with a short body once it has read the request's body.
fn start_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::Builder::new()
        .name("bench-http-server".to_owned())
        .spawn(move || {
            current_thread().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            |request: http::Request<hyper::body::Incoming>| async move {
                                request.into_body().collect().await?;
                                Ok::<_, hyper::Error>(http::Response::new(Full::new(
                                    Bytes::from_static(b"{\"queued\":true}"),
                                )))
                            },
                        );
                        // A client that goes away mid-request is not the bench's concern.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        })
        .unwrap();
    addr
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
