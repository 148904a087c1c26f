//! `spool worker`: serve queues until SIGINT/SIGTERM.

use std::process::ExitCode;

use spool::config::{Config, QueueConfig};
use spool::queue::Backend as _;
use spool::worker::Worker;
use spool::{Sandbox, SandboxConfig};

use super::LogFormat;
use super::cache::CacheArgs;
use super::store::{Store, StoreArgs, nats_layout};

// The configuration file is the global `--config` (default `spool.toml`); the worker needs it.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Serve only these queues (comma-separated); default: every queue in the config.
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
}

/// The smallest useful `spool.toml`, shown when there is none.
const SAMPLE_CONFIG: &str = r#"[queues.email]
plugin = "plugins/email.wasm"   # the handler component, relative to spool.toml
timeout = "30s"                 # each attempt's deadline
max_attempts = 3                # then the job goes to the dead-letter queue
concurrency = 10                # attempts at once on this worker"#;

/// The sandbox a worker needs for these settings.
pub fn sandbox_for(
    concurrency: u32,
    queues: &std::collections::BTreeMap<String, QueueConfig>,
) -> anyhow::Result<Sandbox> {
    let max_memory = queues.values().map(|q| q.memory).max().unwrap_or(0);
    Ok(Sandbox::new(SandboxConfig {
        concurrency,
        max_memory: max_memory.max(SandboxConfig::default().max_memory),
        ..SandboxConfig::default()
    })?)
}

/// SQLite's durability mode for a config's `synchronous`.
pub fn synchronous(config: &Config) -> spool::queue::sqlite::Synchronous {
    match config.worker.synchronous {
        spool::config::Synchronous::Full => spool::queue::sqlite::Synchronous::Full,
        spool::config::Synchronous::Normal => spool::queue::sqlite::Synchronous::Normal,
    }
}

pub async fn run(
    store_args: &StoreArgs,
    cache: &CacheArgs,
    args: WorkerArgs,
    format: LogFormat,
) -> anyhow::Result<ExitCode> {
    let config_path = store_args.config_path();
    if !config_path.exists() {
        anyhow::bail!(
            "no config at {}: a worker serves the queues of a spool.toml (or the file --config \
             names). Write one with a section per queue, for example:\n\n{SAMPLE_CONFIG}",
            config_path.display()
        );
    }
    let mut config = Config::load(config_path)?;
    // The HTTP API applies the whole config (its enqueue accepts every configured queue),
    // whichever queues this worker serves.
    let full_config = config.clone();
    if !args.queues.is_empty() {
        for name in &args.queues {
            if !config.queues.contains_key(name) {
                anyhow::bail!(
                    "unknown queue `{name}`: {} has no [queues.{name}] section",
                    config_path.display()
                );
            }
        }
        config.queues.retain(|name, _| args.queues.contains(name));
    }
    let sandbox = cache.apply(sandbox_for(config.worker.concurrency, &config.queues)?);
    let store = store_args.store(Some(&config));
    let backend = store
        .open_with(synchronous(&config), config.worker.max_payload)
        .await?;
    let layout = match &store {
        Store::Sqlite(_) => format!("synchronous = {:?}", config.worker.synchronous),
        Store::Nats { options, .. } => nats_layout(options),
    };
    let schedules = config.schedules().map_err(anyhow::Error::msg)?;
    let scheduled = schedules.len();
    // The worker's metrics count the backend's committed events, labelled as `[metrics]` says.
    let metrics = std::sync::Arc::new(spool::metrics::Metrics::with_config(&config.metrics));
    backend.set_sink(backend.sink().with_metrics(metrics.clone()));
    // The HTTP API beside the worker exports the worker's own metrics.
    let http = match config.worker.http {
        Some(addr) => Some(http_server(addr, &backend, metrics, full_config).await?),
        None => None,
    };
    // Started before the worker, so the first attempts' spans have somewhere to go.
    let exporter = config
        .tracing
        .otlp()
        .map(spool::trace::OtlpExporter::start)
        .transpose()?;
    let mut worker = Worker::start(backend, sandbox, config.worker.clone(), config.queues).await?;
    if let Some(exporter) = &exporter {
        worker = worker.with_tracer(exporter.tracer());
    }
    let removed = worker.sync_schedules(schedules).await?;
    for line in worker.summary().lines() {
        say(format, line);
    }
    if scheduled > 0 {
        say(
            format,
            &format!("  {scheduled} schedule(s) from the config stored in the backend"),
        );
    }
    if !removed.is_empty() {
        say(
            format,
            &format!(
                "  removed schedule(s) no longer in the config: {}",
                removed.join(", ")
            ),
        );
    }
    say(format, &format!("  store {store} ({layout})"));
    if let Some(endpoint) = &config.tracing.otlp_endpoint {
        say(
            format,
            &format!("  attempt spans exported to {}", endpoint.traces_url()),
        );
    }
    if let Some((addr, _, _)) = &http {
        say(format, &format!("  HTTP API on http://{addr}/api/v1"));
    }
    let (stop, stop_now) = signals();
    let stats = worker.run_until(stop, stop_now).await;
    if let Some((_, stop_http, server)) = http {
        let _ = stop_http.send(());
        match server.await {
            Ok(Err(e)) => tracing::error!("the HTTP API failed: {e}"),
            Err(e) => tracing::error!("the HTTP API failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(exporter) = exporter {
        exporter.shutdown(std::time::Duration::from_secs(10)).await;
    }
    let stats = stats?;
    say(
        format,
        &format!(
            "stopped: {} attempts, {} succeeded, {} retried, {} delayed, {} dead, {} refused settles, {} released, {} cancelled while running",
            stats.attempts,
            stats.succeeded,
            stats.retried,
            stats.delayed,
            stats.dead,
            stats.lease_lost,
            stats.released,
            stats.cancelled
        ),
    );
    Ok(ExitCode::SUCCESS)
}

/// A running HTTP API: its address, what stops it, and its task.
type HttpServer = (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Start the HTTP API (`[worker] http`) on `addr` beside the worker, on the same store; it
/// stops when the worker has stopped. A bad address or a missing token stops the worker
/// before it claims anything.
async fn http_server(
    addr: std::net::SocketAddr,
    backend: &spool::queue::AnyBackend,
    metrics: std::sync::Arc<spool::metrics::Metrics>,
    config: Config,
) -> anyhow::Result<HttpServer> {
    use spool::server::{Auth, ServerState};
    let auth = Auth::from_env(Some(&config.http))?;
    let state = ServerState::new(backend.clone(), metrics)
        .with_config(Some(config))
        .with_auth(auth);
    let listener = spool::server::bind(addr, &state).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spool::server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Ok((addr, stop, server))
}

/// Write one line of the worker's own report on stderr: as it is in text mode, as a log line
/// (JSON) in JSON mode, so that every line a JSON worker writes is JSON.
fn say(format: LogFormat, line: &str) {
    match format {
        LogFormat::Text => eprintln!("{line}"),
        LogFormat::Json => tracing::info!("{}", line.trim()),
    }
}

/// Two futures for the worker: the first completes on the first SIGINT or SIGTERM (stop
/// claiming, let running attempts finish), the second on the next one (stop at once).
fn signals() -> (
    impl Future<Output = ()> + Send,
    impl Future<Output = ()> + Send,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let (second_tx, second_rx) = tokio::sync::oneshot::channel();
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    tokio::spawn(async move {
        let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
            tracing::error!("cannot listen for SIGINT and SIGTERM");
            return std::future::pending().await;
        };
        let mut next = async || {
            tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            }
        };
        let name = next().await;
        tracing::info!("received {name}: stopping");
        let _ = first_tx.send(());
        let name = next().await;
        tracing::info!("received {name} again: stopping at once");
        let _ = second_tx.send(());
    });
    (
        async {
            let _ = first_rx.await;
        },
        async {
            if second_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        },
    )
}
