//! `spool serve`: the operator HTTP API, `/metrics` and health checks, on the store the
//! global flags name, until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use spool::queue::Backend as _;
use spool::queue::sqlite::Synchronous;
use spool::server::{Auth, ServerState};

use super::store::StoreArgs;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The address to listen on. One that is not loopback needs a token (`[http] tokens`,
    /// `SPOOL_ADMIN_TOKEN` or `SPOOL_READ_TOKEN`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    http: SocketAddr,
}

pub async fn run(store_args: &StoreArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = store_args.config()?;
    let auth = Auth::from_env(config.as_ref().map(|c| &c.http))?;
    let store = store_args.store(config.as_ref());
    // A server writes (enqueue, cancel, replay): read-write, created when missing, as
    // `spool enqueue` opens it.
    let backend = store_args.open(Synchronous::Full).await?;
    // `/metrics` here: the jobs this server enqueues, cancels and replays (its backend's
    // committed events), and the queue depths read from the store every few seconds. A
    // worker's own counters are on the worker's `/metrics` (`[worker] http`).
    let metrics = Arc::new(match &config {
        Some(config) => spool::metrics::Metrics::with_config(&config.metrics),
        None => spool::metrics::Metrics::new(),
    });
    backend.set_sink(backend.sink().with_metrics(metrics.clone()));
    let depths = tokio::spawn(
        metrics
            .clone()
            .refresh_queue_depth(backend.clone(), spool::metrics::DEPTH_REFRESH),
    );
    let state = ServerState::new(backend, metrics)
        .with_config(config)
        .with_auth(auth);
    let listener = spool::server::bind(args.http, &state).await?;
    let addr = listener.local_addr()?;
    let tokens = if state.auth().required() {
        "bearer tokens required"
    } else {
        "no token configured: every local caller is admin"
    };
    tracing::info!("serving the HTTP API on http://{addr}/api/v1 (store {store}; {tokens})");
    let served = spool::server::serve(listener, state, stop_signal()).await;
    depths.abort();
    served?;
    tracing::info!("stopped serving the HTTP API");
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot listen for SIGINT and SIGTERM");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}
