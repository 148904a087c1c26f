//! `spool worker`: serve queues until SIGINT/SIGTERM.

use std::process::ExitCode;

use spool::config::{Config, QueueConfig};
use spool::worker::Worker;
use spool::{Sandbox, SandboxConfig};

use super::cache::CacheArgs;
use super::store::{Store, StoreArgs, nats_layout};

// The configuration file is the global `--config` (default `spool.toml`); the worker needs it.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Serve only these queues (comma-separated); default: every queue in the config.
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
}

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
) -> anyhow::Result<ExitCode> {
    let config_path = store_args.config_path();
    let mut config = Config::load(config_path)?;
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
    let worker = Worker::start(backend, sandbox, config.worker.clone(), config.queues).await?;
    let removed = worker.sync_schedules(schedules).await?;
    eprint!("{}", worker.summary());
    if scheduled > 0 {
        eprintln!("  {scheduled} schedule(s) from the config stored in the backend");
    }
    if !removed.is_empty() {
        eprintln!(
            "  removed schedule(s) no longer in the config: {}",
            removed.join(", ")
        );
    }
    eprintln!("  store {store} ({layout})");
    let stats = worker.run(shutdown_signal()).await?;
    eprintln!(
        "stopped: {} attempts, {} succeeded, {} retried, {} delayed, {} dead, {} refused settles, {} released, {} cancelled while running",
        stats.attempts,
        stats.succeeded,
        stats.retried,
        stats.delayed,
        stats.dead,
        stats.lease_lost,
        stats.released,
        stats.cancelled
    );
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
