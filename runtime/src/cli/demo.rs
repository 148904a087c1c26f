//! `spool demo`: the email job in four modes through an embedded worker, printed as it happens,
//! sending to a local mail API (`mail_api`) whose deliveries it shows at the end.
//!
//! `spool demo --http` runs the same worker and mail API with the HTTP server and its dashboard
//! instead, until Ctrl-C: the dashboard's email demo panel enqueues the jobs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use spool::config::{BackoffConfig, QueueConfig, SecretSource, WorkerSettings};
use spool::metrics::Metrics;
use spool::queue::sqlite::Synchronous;
use spool::queue::{AnyBackend, Backend, EventFilter, EventKind, JobId, NewJob};
use spool::server::{Auth, ServerState};
use spool::worker::Worker;

use super::cache::CacheArgs;
use super::mail_api::MailApi;
use super::store::{Store, StoreArgs};
use super::worker::sandbox_for;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the built plugins are (`cargo xtask plugins` puts them here).
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    plugins: PathBuf,
    /// Serve the dashboard and the HTTP API on ADDR (default 127.0.0.1:7070) until Ctrl-C,
    /// and enqueue the demo jobs from the dashboard's email demo panel.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:7070"
    )]
    http: Option<SocketAddr>,
}

pub async fn run(
    store_args: &StoreArgs,
    cache: &CacheArgs,
    args: DemoArgs,
) -> anyhow::Result<ExitCode> {
    let plugin = args.plugins.join("email.wasm");
    if !plugin.exists() {
        anyhow::bail!(
            "no plugin at {}: build the plugins first with `cargo xtask plugins`",
            plugin.display()
        );
    }
    let store = store_args.demo_store()?;
    // A SQLite demo starts from an empty file; on NATS it shares the server's streams, and
    // only its own jobs are followed below.
    if let Store::Sqlite(db) = &store {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
    let backend = store.open(Synchronous::Normal).await?;
    // The mail API the plugin sends to: the one address the `email` queue may reach.
    let started = Instant::now();
    let api_key = format!("demo-{:016x}", fastrand::u64(..));
    let mail = MailApi::start(started, api_key.clone())
        .await
        .context("cannot start the demo's mail API on 127.0.0.1")?;
    let mut email = QueueConfig::new(&plugin);
    email.grants.http = vec![mail.base().parse().map_err(anyhow::Error::msg)?];
    email.config.insert("api_base".to_owned(), mail.base());
    // Secrets are read from a file or the environment when the worker starts: a file of the
    // demo's own, removed at the end.
    let key_file = std::env::temp_dir().join(format!("spool-demo-{}.key", std::process::id()));
    std::fs::write(&key_file, &api_key)
        .with_context(|| format!("cannot write the demo's API key to {}", key_file.display()))?;
    let _key_file = RemoveOnDrop(key_file.clone());
    email
        .secrets
        .insert("api_key".to_owned(), SecretSource::File(key_file));
    email.timeout = Duration::from_secs(5);
    email.max_attempts = 3;
    email.backoff = BackoffConfig {
        initial: Duration::from_secs(1),
        factor: 2.0,
        max: Duration::from_secs(10),
        jitter: 0.0,
    };
    let queues = BTreeMap::from([("email".to_owned(), email)]);
    let settings = WorkerSettings {
        concurrency: 8,
        lease: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        ..WorkerSettings::default()
    };
    if let Some(addr) = args.http {
        let worker = Worker::start(
            backend.clone(),
            cache.apply(sandbox_for(8, &queues)?),
            settings,
            queues,
        )
        .await?;
        outln!(
            "Spool demo: queue `email` (timeout 5s, 3 attempts, backoff 1s then 2s), store {store}"
        );
        outln!(
            "The plugin sends each email to a mail API at {} (the only address the queue may reach)",
            mail.base()
        );
        let served = serve(backend, worker, addr).await;
        drop(mail);
        return served;
    }

    outln!("Spool demo: queue `email` (timeout 5s, 3 attempts, backoff 1s then 2s), store {store}");
    outln!(
        "The plugin sends each email to a mail API at {} (the only address the queue may reach)\n",
        mail.base()
    );
    let modes = [
        ("ok", "succeeds first time"),
        ("flaky", "fails once, then succeeds"),
        (
            "fail",
            "fails every time: dead-letter queue after 3 attempts",
        ),
        (
            "hang",
            "sleeps 8s then sends: aborted at 5s, retried, dead-letter queue",
        ),
    ];
    let jobs: Vec<NewJob> = modes
        .iter()
        .map(|(mode, _)| NewJob {
            queue: "email".to_owned(),
            payload: format!(r#"{{"to":"ada@example.com","mode":"{mode}"}}"#).into_bytes(),
            ..NewJob::default()
        })
        .collect();
    let enqueued = backend.enqueue(jobs).await?;
    let mut label: HashMap<JobId, &str> = HashMap::new();
    for ((mode, what), done) in modes.iter().zip(&enqueued) {
        outln!("enqueued job {:<4} email/{mode:<5}  ({what})", done.id.0);
        label.insert(done.id.clone(), mode);
    }
    outln!();

    let worker = Worker::start(
        backend.clone(),
        cache.apply(sandbox_for(8, &queues)?),
        settings,
        queues,
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    let mut after = None;
    let mut finished = 0;
    while finished < enqueued.len() && started.elapsed() < Duration::from_secs(50) {
        let events = backend
            .events(&EventFilter {
                after,
                ..EventFilter::default()
            })
            .await?;
        for e in &events {
            after = Some(e.seq);
            let Some(mode) = e.job_id.as_ref().and_then(|id| label.get(id)) else {
                continue;
            };
            let at = started.elapsed().as_secs_f64();
            let attempt = e
                .attempt
                .map(|a| format!("attempt {a}: "))
                .unwrap_or_default();
            let what = match e.kind {
                EventKind::Started => "started".to_owned(),
                EventKind::Succeeded => format!("succeeded in {} ms", e.duration_ms.unwrap_or(0)),
                EventKind::Failed => format!(
                    "failed ({}): {}",
                    e.phase.map(|p| p.to_string()).unwrap_or_default(),
                    e.message.as_deref().unwrap_or("")
                ),
                EventKind::RetryScheduled => format!(
                    "retry in {:.1} s",
                    e.duration_ms.unwrap_or(0) as f64 / 1000.0
                ),
                EventKind::DeadLettered => "moved to the dead-letter queue".to_owned(),
                EventKind::Enqueued => continue,
                other => other.to_string(),
            };
            outln!("{at:>5.1}s  email/{mode:<5} {attempt}{what}");
            if matches!(e.kind, EventKind::Succeeded | EventKind::DeadLettered) {
                finished += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await??;

    let deliveries = mail.deliveries();
    outln!(
        "\nThe mail API received {}:",
        plural(deliveries.len(), "delivery", "deliveries")
    );
    for d in &deliveries {
        let mode = label
            .iter()
            .find(|(id, _)| id.to_string() == d.job)
            .map_or("?", |(_, mode)| *mode);
        let key = if d.authorized {
            "with the API key"
        } else {
            "WITHOUT the API key"
        };
        outln!(
            "{:>5.1}s  email/{mode:<5} attempt {} to {} ({key})",
            d.at.as_secs_f64(),
            d.attempt,
            d.to
        );
    }
    for (mode, _) in &modes {
        let sent: Vec<u32> = deliveries
            .iter()
            .filter(|d| {
                label
                    .iter()
                    .any(|(id, m)| m == mode && id.to_string() == d.job)
            })
            .map(|d| d.attempt)
            .collect();
        let why = match *mode {
            "fail" => "every attempt failed before sending",
            "hang" => "each attempt was aborted at its 5 s timeout, before its send at 8 s",
            _ => "",
        };
        let attempts = sent
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let line = match (sent.len(), why) {
            (0, "") => "never".to_owned(),
            (0, why) => format!("never: {why}"),
            (n, _) => format!("{} (attempt {attempts})", plural(n, "time", "times")),
        };
        outln!("  email/{mode:<5} sent {line}");
    }

    let at = store.flag();
    outln!(
        "\nDone in {:.1} s. Look around with:",
        started.elapsed().as_secs_f64()
    );
    outln!("  spool {at} jobs                  # every job and its state");
    outln!(
        "  spool {at} job {}                # one job: attempts, errors, logs, timeline",
        enqueued[3].id
    );
    outln!("  spool {at} dlq list              # the dead-letter queue");
    outln!(
        "  spool {at} dlq replay {}         # give a dead job fresh attempts",
        enqueued[2].id
    );
    outln!(
        "  spool {at} events --job {}       # one job's events",
        enqueued[1].id
    );
    drop(mail);
    Ok(if finished == enqueued.len() {
        ExitCode::SUCCESS
    } else {
        eprintln!("the demo did not finish within 50 s");
        ExitCode::from(1)
    })
}

/// Run `worker` and the HTTP server (with the dashboard's demo panel) on `addr` until Ctrl-C.
async fn serve(
    backend: AnyBackend,
    worker: Worker<AnyBackend>,
    addr: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let state = ServerState::new(backend, Arc::new(Metrics::new()))
        .with_auth(Auth::from_env(None)?)
        .with_demo(true);
    let listener = spool::server::bind(addr, &state).await?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {addr}"))?;
    outln!("\nDashboard: http://{local}/  (Ctrl-C to stop)");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let served = spool::server::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .with_context(|| format!("the HTTP server on {local} failed"));
    let _ = stop.send(());
    running.await??;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `1 delivery`, `2 deliveries`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A file removed when this is dropped, however the demo ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
