//! The NATS JetStream backend: the conformance suite on a real `nats-server`, and what only a
//! shared server shows, through the real `spool` binary: jobs published by any NATS client,
//! several worker processes on one server, a worker killed mid-run, and the server itself
//! killed and restarted on its store mid-run.
//!
//! Every test starts a server of its own ([`NatsServer`]: about 10 ms to start), so tests share
//! no state and may kill their server.

use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use futures::StreamExt as _;
use serde_json::Value;
use spool::queue::nats::{NatsBackend, NatsOptions, Storage};
use spool::queue::{Backend, EventKind, JobState, NewJob, QueueClaim, QueueCounts, QueueError};

use crate::support::{NatsServer, Setup, event_counts, event_kinds, state, stop};

/// A backend on a new server of its own.
async fn fresh() -> (NatsBackend, NatsServer) {
    let server = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let backend = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .expect("connect to a new server");
    (backend, server)
}

mod conformance {
    crate::conformance::backend_conformance!(super::fresh);
}

/// Workers with a short lease, and a NATS ack wait to match, so a dead worker's jobs come back
/// within seconds.
const EMAIL_CONFIG: &str = r#"
[worker]
concurrency = 8
lease = "2s"
shutdown_grace = "1s"

[nats]
ack-wait = "2s"

[queues.email]
plugin = "EMAIL"
timeout = "5s"
max_attempts = 3
backoff = { initial = "100ms", factor = 2.0, jitter = 0.0 }

[queues.email.grants]
http = ["http://127.0.0.1:*"]   # the email plugin imports wasi:http
"#;

/// The options `EMAIL_CONFIG`'s workers run with, for the test's own connection.
fn email_options() -> NatsOptions {
    NatsOptions {
        ack_wait: Duration::from_secs(2),
        ..NatsOptions::default()
    }
}

/// A runtime for the test's own connection; its reconnects run in the background.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn jobs(queue: &str, payload: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob {
            queue: queue.to_owned(),
            payload: payload.as_bytes().to_vec(),
            ..NewJob::default()
        })
        .collect()
}

/// How long [`wait_for_counts`] waits for one read of the counts.
const READ_BOUND: Duration = Duration::from_secs(10);

/// Poll `queue`'s counts until `done` holds; panic after `limit`, or as soon as a worker
/// exits, with the workers' logs. A failed or unanswered read (the server restarting) counts
/// as not yet.
fn wait_for_counts(
    rt: &tokio::runtime::Runtime,
    backend: &NatsBackend,
    queue: &str,
    s: &Setup,
    workers: &mut [Child],
    limit: Duration,
    done: impl Fn(&QueueCounts) -> bool,
) -> QueueCounts {
    let start = Instant::now();
    loop {
        s.assert_running(workers);
        // Each read bounded: one that hangs across a server restart counts as "not yet".
        let read = rt.block_on(async { tokio::time::timeout(READ_BOUND, backend.queues()).await });
        let last = match read {
            Err(_) => Err(format!("no answer in {READ_BOUND:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(all)) => {
                let counts = all
                    .into_iter()
                    .find(|c| c.queue == queue)
                    .unwrap_or_default();
                if done(&counts) {
                    return counts;
                }
                Ok(counts)
            }
        };
        assert!(
            start.elapsed() < limit,
            "{queue} did not get there in {limit:?}: {last:?}\n{}",
            s.worker_logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The attempts of `queue` started from now on, counted from the event log's messages as
/// they are published: pushed to a subscription at once, where a read of the store may take
/// seconds on a loaded machine (long enough to miss a short run whole).
fn count_starts(rt: &tokio::runtime::Runtime, url: &str, queue: &str) -> Arc<AtomicU64> {
    let started = Arc::new(AtomicU64::new(0));
    let client = rt.block_on(async_nats::connect(url)).unwrap();
    let mut log = rt
        .block_on(client.subscribe(format!("spool.events.{queue}")))
        .unwrap();
    rt.block_on(client.flush()).unwrap();
    let counter = started.clone();
    rt.spawn(async move {
        let _client = client;
        while let Some(message) = log.next().await {
            let events: Vec<Value> = serde_json::from_slice(&message.payload).unwrap_or_default();
            let starts = events.iter().filter(|e| e["kind"] == "started").count();
            counter.fetch_add(starts as u64, Ordering::SeqCst);
        }
    });
    started
}

/// Wait (up to a minute, the workers staying up) until `n` attempts have started.
fn wait_for_starts(started: &AtomicU64, n: u64, s: &Setup, workers: &mut [Child]) {
    let waiting = Instant::now();
    while started.load(Ordering::SeqCst) < n {
        s.assert_running(workers);
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "{} of {n} attempts started in 60 s:\n{}",
            started.load(Ordering::SeqCst),
            s.worker_logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publish a job the way any NATS client can: a request on the queue's subject, answered by
/// JetStream's publish ack, whose stream sequence is the job's id.
async fn publish(
    client: &async_nats::Client,
    queue: &str,
    headers: HeaderMap,
    payload: &str,
) -> String {
    let reply = client
        .request_with_headers(
            format!("spool.jobs.{queue}"),
            headers,
            payload.to_owned().into(),
        )
        .await
        .unwrap();
    let ack: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(ack["stream"], "SPOOL_JOBS", "not a publish ack: {ack}");
    ack["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("not a publish ack: {ack}"))
        .to_string()
}

/// A payload or output as `--json` prints it (its own JSON), as JSON bytes.
fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

#[test]
fn the_server_fixture_keeps_its_store_across_a_sigkill_and_a_restart() {
    let mut server = NatsServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    assert!(server.store_dir().join("jetstream").is_dir());
    let rt = runtime();
    let _context = rt.enter(); // the JetStream context spawns its acker on the runtime
    let client = rt.block_on(async_nats::connect(server.url())).unwrap();
    let js = async_nats::jetstream::new(client);
    rt.block_on(async {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "FIXTURE".into(),
            subjects: vec!["fixture.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let ack = js.publish("fixture.a", "kept".into()).await.unwrap();
        assert_eq!(ack.await.unwrap().sequence, 1);
    });

    server.kill();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    server.kill(); // a second kill is a no-op

    server.restart();
    assert_eq!(server.port(), port);
    // The same client reconnects by itself and finds the acknowledged message in the store.
    let start = Instant::now();
    let message = loop {
        let found = rt.block_on(async {
            let stream = js.get_stream("FIXTURE").await.ok()?;
            stream.get_raw_message(1).await.ok()
        });
        if let Some(message) = found {
            break message;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no reconnect to the restarted server"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(&message.payload[..], b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_finds_the_installation_and_its_jobs() {
    let (first, server) = fresh().await;
    let id = first.enqueue(jobs("q", "{}", 1)).await.unwrap()[0]
        .id
        .clone();
    // Another process connects to streams that exist: their settings are checked, not changed.
    let second = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .expect("connect to an existing installation");
    let job = second
        .job(&id)
        .await
        .unwrap()
        .expect("the job, seen from the second");
    assert_eq!(job.summary.state, JobState::Ready);
    let wanted = [QueueClaim {
        queue: "q".into(),
        limit: 10,
        ..QueueClaim::default()
    }];
    let claimed = second
        .claim("w2", &wanted, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.job_id, id);
    let job = first.job(&id).await.unwrap().unwrap();
    assert_eq!(job.summary.state, JobState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_settings_disagree_is_refused_and_changes_nothing() {
    let (first, server) = fresh().await;
    let id = first.enqueue(jobs("q", "{}", 1)).await.unwrap()[0]
        .id
        .clone();
    let memory = NatsOptions {
        storage: Storage::Memory,
        ..NatsOptions::default()
    };
    let err = NatsBackend::connect(&server.url(), memory)
        .await
        .expect_err("file streams are not memory streams");
    assert!(
        matches!(&err, QueueError::Store(message) if message.contains("storage")),
        "got {err:?}"
    );
    let again = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    assert_eq!(
        again.job(&id).await.unwrap().unwrap().summary.state,
        JobState::Ready
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_on_one_server_are_two_independent_installations() {
    let (spool, server) = fresh().await;
    let other = NatsBackend::connect(
        &server.url(),
        NatsOptions {
            prefix: "other".into(),
            ..NatsOptions::default()
        },
    )
    .await
    .unwrap();
    spool.enqueue(jobs("q", "{}", 3)).await.unwrap();
    other.enqueue(jobs("r", "{}", 1)).await.unwrap();
    let counts = |all: Vec<QueueCounts>| -> Vec<(String, u64)> {
        all.into_iter().map(|c| (c.queue, c.ready)).collect()
    };
    assert_eq!(counts(spool.queues().await.unwrap()), [("q".to_owned(), 3)]);
    assert_eq!(counts(other.queues().await.unwrap()), [("r".to_owned(), 1)]);
    let wanted = |queue: &str| {
        [QueueClaim {
            queue: queue.into(),
            limit: 10,
            ..QueueClaim::default()
        }]
    };
    let lease = Duration::from_secs(30);
    assert!(
        other
            .claim("w", &wanted("q"), lease)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        spool.claim("w", &wanted("q"), lease).await.unwrap().len(),
        3
    );
}

/// The number of lease tables stored on the server (one per connection holding leases).
async fn lease_tables(url: &str, backend: &NatsBackend) -> u64 {
    let client = async_nats::connect(url).await.unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(backend.names().leases_stream())
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_sweeper_returns_a_stopped_connections_leases_through_its_table() {
    let (holder, server) = fresh().await;
    let sweeper = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    holder.enqueue(jobs("q", "{}", 3)).await.unwrap();
    let wanted = [QueueClaim {
        queue: "q".into(),
        limit: 10,
        ..QueueClaim::default()
    }];
    let claimed = holder
        .claim("w1", &wanted, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(lease_tables(&server.url(), &holder).await, 1);
    assert!(
        sweeper.expire_leases(5).await.unwrap().is_empty(),
        "not yet"
    );
    assert_eq!(
        lease_tables(&server.url(), &holder).await,
        1,
        "a table with live leases stays"
    );

    // The holder goes quiet (as if stopped): the other connection's sweeper finds its leases
    // in its table, returns the jobs, and purges the spent table.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut returned = sweeper.expire_leases(5).await.unwrap();
    returned.sort();
    let mut ids: Vec<_> = claimed.iter().map(|c| c.lease.job_id.clone()).collect();
    ids.sort();
    assert_eq!(returned, ids);
    assert_eq!(lease_tables(&server.url(), &holder).await, 0);
    for id in &ids {
        assert_eq!(
            crate::conformance::state(&sweeper, id).await,
            JobState::Ready
        );
    }
    assert!(sweeper.expire_leases(5).await.unwrap().is_empty());

    // The late settle of the stopped holder is refused; a new claim publishes a new table.
    assert_eq!(
        holder
            .settle(vec![crate::conformance::succeeded(&claimed[0], b"late")])
            .await
            .unwrap(),
        [crate::conformance::lost(&claimed[0].lease)]
    );
    assert_eq!(
        sweeper
            .claim("w2", &wanted, Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(lease_tables(&server.url(), &holder).await, 1);
}

#[test]
fn a_job_published_by_a_plain_nats_client_runs_and_spool_job_shows_it() {
    let server = NatsServer::start();
    let s = Setup::nats(EMAIL_CONFIG, &server.url());
    let rt = runtime();
    // Spool makes its streams when it first connects; a producer publishes into them.
    drop(
        rt.block_on(NatsBackend::connect(&server.url(), email_options()))
            .unwrap(),
    );
    let run_at = spool::queue::now() + 1000;
    let (bare, full) = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let bare = publish(
            &client,
            "email",
            HeaderMap::new(),
            r#"{"to":"ada@example.com"}"#,
        )
        .await;
        let mut headers = HeaderMap::new();
        headers.insert("Spool-Tenant", "acme");
        headers.insert("Spool-Max-Attempts", "2");
        headers.insert("Spool-Run-At", run_at.to_string());
        headers.insert("Spool-Key", "order-17");
        headers.insert("Spool-Metadata", r#"[["source","plain-nats"]]"#);
        let full = publish(&client, "email", headers, r#"{"to":"grace@example.com"}"#).await;
        (bare, full)
    });
    assert_ne!(bare, full);

    let worker = s.worker(&[]);
    let finished = |j: &Value| matches!(state(j), "succeeded" | "dead");
    let job = s.wait_for(&bare, Duration::from_secs(30), finished);
    assert_eq!(state(&job), "succeeded", "{job:#}");
    assert_eq!(job["id"], bare.as_str());
    assert_eq!(job["queue"], "email");
    assert_eq!(bytes(&job["payload"]), br#"{"to":"ada@example.com"}"#);
    assert!(
        String::from_utf8(bytes(&job["output"]))
            .unwrap()
            .contains("ada@example.com")
    );
    assert_eq!(job["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(job["tenant"], Value::Null);
    // Published without one: its first claim stored the queue's (the config's default, 3).
    assert_eq!(job["max_attempts"], 3, "{job:#}");
    let kinds = event_kinds(&job);
    assert_eq!(kinds.first(), Some(&"enqueued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"succeeded"), "{kinds:?}");

    let job = s.wait_for(&full, Duration::from_secs(30), finished);
    assert_eq!(state(&job), "succeeded", "{job:#}");
    assert_eq!(job["id"], full.as_str());
    assert_eq!(job["tenant"], "acme");
    assert_eq!(job["max_attempts"], 2);
    assert_eq!(job["key"], "order-17");
    assert_eq!(
        job["metadata"],
        serde_json::json!([["source", "plain-nats"]])
    );
    assert!(job["run_at"].as_i64().unwrap() >= run_at, "{job:#}");
    let started_at = job["attempts"][0]["started_at"].as_i64().unwrap();
    assert!(
        started_at >= run_at,
        "ran {} ms before its run-at",
        run_at - started_at
    );
    stop(worker, "-TERM");
}

#[test]
fn three_worker_processes_run_twenty_thousand_jobs_exactly_once() {
    const JOBS: u64 = 20_000;
    let server = NatsServer::start();
    let s = Setup::nats(
        r#"
[worker]
concurrency = 16
prefetch = 64
[queues.noop]
plugin = "NOOP"
"#,
        &server.url(),
    );
    let rt = runtime();
    let backend = rt
        .block_on(NatsBackend::connect(&server.url(), NatsOptions::default()))
        .unwrap();
    rt.block_on(async {
        for _ in 0..JOBS / 1000 {
            let enqueued = backend.enqueue(jobs("noop", "{}", 1000)).await.unwrap();
            assert_eq!(enqueued.len(), 1000);
        }
    });
    let mut workers: Vec<Child> = (0..3).map(|_| s.worker(&[])).collect();
    wait_for_counts(
        &rt,
        &backend,
        "noop",
        &s,
        &mut workers,
        Duration::from_secs(300),
        |c| c.succeeded == JOBS,
    );
    for worker in workers {
        stop(worker, "-TERM");
    }

    let counts = rt.block_on(backend.queues()).unwrap();
    let noop = counts.iter().find(|c| c.queue == "noop").unwrap();
    assert_eq!(
        (
            noop.succeeded,
            noop.scheduled,
            noop.ready,
            noop.running,
            noop.dead
        ),
        (JOBS, 0, 0, 0, 0),
        "{noop:?}"
    );
    let events = rt.block_on(event_counts(&backend));
    let count = |kind| events.get(&kind).copied().unwrap_or(0);
    assert_eq!(
        count(EventKind::Started),
        JOBS,
        "some job started twice: {events:?}"
    );
    assert_eq!(count(EventKind::Succeeded), JOBS, "{events:?}");
    assert_eq!(count(EventKind::LeaseExpired), 0, "{events:?}");
}

#[test]
fn a_killed_workers_jobs_are_redelivered_after_the_lease_and_none_is_lost() {
    let server = NatsServer::start();
    let s = Setup::nats(EMAIL_CONFIG, &server.url());
    let ids: Vec<String> = (0..4)
        .map(|_| s.enqueue("email", r#"{"to":"a@b","mode":"hang","delay_ms":3000}"#))
        .collect();
    let rt = runtime();
    let backend = rt
        .block_on(NatsBackend::connect(&server.url(), email_options()))
        .unwrap();
    let started = count_starts(&rt, &server.url(), "email");
    let mut first = vec![s.worker(&[])];
    // All four started; each runs for 3 s, ample time to kill the worker.
    wait_for_starts(&started, 4, &s, &mut first);
    stop(first.remove(0), "-KILL");
    let second = s.worker(&[]);
    for id in &ids {
        let job = s.wait_for(id, Duration::from_secs(60), |j| {
            matches!(state(j), "succeeded" | "dead")
        });
        assert_eq!(state(&job), "succeeded", "{job:#}");
        let kinds = event_kinds(&job);
        assert!(kinds.contains(&"lease-expired"), "{kinds:?}");
        let attempts = job["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{job:#}");
        assert_eq!(attempts[0]["phase"], "lease-expired");
        assert_eq!(attempts[1]["outcome"], "succeeded");
        assert_ne!(attempts[0]["worker"], attempts[1]["worker"]);
    }
    stop(second, "-TERM");
    let events = rt.block_on(event_counts(&backend));
    assert_eq!(events.get(&EventKind::LeaseExpired), Some(&4), "{events:?}");
    assert_eq!(events.get(&EventKind::Succeeded), Some(&4), "{events:?}");
}

#[test]
fn workers_ride_out_a_server_killed_and_restarted_mid_run_and_every_job_completes() {
    const JOBS: u64 = 16;
    let mut server = NatsServer::start();
    let s = Setup::nats(
        &EMAIL_CONFIG
            .replace("concurrency = 8", "concurrency = 4")
            .replace("timeout = \"5s\"", "timeout = \"10s\"")
            .replace("max_attempts = 3", "max_attempts = 5"),
        &server.url(),
    );
    let rt = runtime();
    let backend = rt
        .block_on(NatsBackend::connect(&server.url(), email_options()))
        .unwrap();
    let payload = r#"{"to":"a@b","mode":"hang","delay_ms":3000}"#;
    rt.block_on(backend.enqueue(jobs("email", payload, JOBS as usize)))
        .unwrap();
    let started = count_starts(&rt, &server.url(), "email");
    // Two workers with four slots each: two waves of 3 s. The kill comes while the first
    // wave runs, the second still waiting in the store.
    let mut workers = vec![s.worker(&[]), s.worker(&[])];
    wait_for_starts(&started, 4, &s, &mut workers);
    server.kill();
    let before = started.load(Ordering::SeqCst);
    assert!(before < JOBS, "every job had started before the kill");

    // Down long enough for every worker to see its calls fail.
    std::thread::sleep(Duration::from_secs(1));
    server.restart();

    let after = wait_for_counts(
        &rt,
        &backend,
        "email",
        &s,
        &mut workers,
        Duration::from_secs(120),
        |c| c.succeeded + c.dead + c.cancelled == JOBS,
    );
    assert_eq!(
        (
            after.succeeded,
            after.dead,
            after.scheduled,
            after.ready,
            after.running
        ),
        (JOBS, 0, 0, 0, 0),
        "{after:?}"
    );
    // The same processes throughout: they reconnected by themselves.
    s.assert_running(&mut workers);
    for worker in workers {
        stop(worker, "-TERM");
    }
    let events = rt.block_on(event_counts(&backend));
    assert_eq!(
        events.get(&EventKind::Succeeded).copied(),
        Some(JOBS),
        "{events:?}"
    );
}

/// A pull request the server never answers (it stopped, then died) must not leave the worker
/// waiting for the answer: once the server is back, the worker claims again.
#[test]
fn a_worker_whose_fetch_went_unanswered_claims_again_after_a_restart() {
    let mut server = NatsServer::start();
    let s = Setup::nats(EMAIL_CONFIG, &server.url());
    let mut worker = s.worker(&[]);
    // One job first, so the worker's consumer is made and its claims go straight to fetches.
    let first = s.enqueue("email", r#"{"to":"a@b"}"#);
    s.wait_for(&first, Duration::from_secs(30), |j| state(j) == "succeeded");

    // Stopped, the server takes the idle worker's next pull requests into its socket buffer
    // and answers none; killed, it forgets them.
    let pid = server.pid().unwrap().to_string();
    let paused = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(paused.success());
    std::thread::sleep(Duration::from_secs(1));
    server.kill();
    server.restart();

    let second = s.enqueue("email", r#"{"to":"c@d"}"#);
    // Without a bound on the wait for the fetch's answer, the worker would wait forever.
    s.wait_for(&second, Duration::from_secs(60), |j| {
        state(j) == "succeeded"
    });
    s.assert_running(std::slice::from_mut(&mut worker));
    stop(worker, "-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_envelope_has_the_shape_of_spool_job_json() {
    let (b, server) = fresh().await;
    let id = b
        .enqueue(vec![NewJob {
            queue: "raw".into(),
            payload: vec![0xff, 0x01],
            ..NewJob::default()
        }])
        .await
        .unwrap()
        .remove(0)
        .id;
    let wanted = [QueueClaim {
        queue: "raw".into(),
        limit: 1,
        max_attempts: Some(4),
        ..QueueClaim::default()
    }];
    let claimed = b
        .claim("w1", &wanted, Duration::from_secs(30))
        .await
        .unwrap()
        .remove(0);
    let at = spool::queue::now();
    let settle = spool::queue::Settle {
        lease: claimed.lease.clone(),
        next: spool::queue::Next::Dead,
        attempt: spool::queue::AttemptRecord {
            attempt: 1,
            worker: "w1".into(),
            started_at: at,
            finished_at: at,
            outcome: "invalid-payload".into(),
            phase: Some(spool::queue::Phase::Decode),
            error: Some("not JSON".into()),
            digest: None,
            logs: Vec::new(),
            http: Default::default(),
        },
        checkpoint: None,
        children: Vec::new(),
        progress: None,
    };
    assert_eq!(b.settle(vec![settle]).await.unwrap(), [Ok(())]);

    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream("SPOOL_DLQ").await.unwrap();
    let message = stream
        .get_last_raw_message_by_subject(&format!("spool.dlq.raw.{id}"))
        .await
        .unwrap();
    let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(envelope["id"], id.0.as_str(), "{envelope:#}");
    assert_eq!(envelope["state"], "dead");
    assert_eq!(envelope["payload"], "/wE=", "{envelope:#}");
    assert_eq!(envelope["payload_encoding"], "base64");
    assert_eq!(envelope["failures"], 1);
    assert_eq!(envelope["max_attempts"], 4);
    assert_eq!(envelope["attempts"][0]["run"], 1);
    assert_eq!(envelope["attempts"][0]["phase"], "decode");
}
