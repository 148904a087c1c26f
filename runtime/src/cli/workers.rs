//! `spool workers`: the live workers in the store's worker registry.

use std::process::ExitCode;

use spool::queue::{Backend, now};

use super::store::StoreArgs;
use super::util::{print_json, time};

#[derive(clap::Args)]
pub struct WorkersArgs {
    /// Print JSON: one worker per line (README: "JSON output").
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &StoreArgs, args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let backend = store.open_read_only().await?;
    let workers = backend.workers().await?;
    if args.json {
        for worker in &workers {
            print_json(worker)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        outln!("no live workers");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<22} {:<16} {:>8} {:<8} {:>9}  {:<24} {:>9}  queues",
        "id",
        "host",
        "pid",
        "version",
        "running",
        "started",
        "heartbeat"
    );
    let at = now();
    for w in &workers {
        let ago = u64::try_from(at.saturating_sub(w.last_heartbeat)).unwrap_or(0);
        outln!(
            "{:<22} {:<16} {:>8} {:<8} {:>9}  {:<24} {:>9}  {}",
            w.id,
            w.host,
            w.pid,
            w.version,
            format!("{}/{}", w.running, w.concurrency),
            time(w.started_at),
            format!("{:.1}s ago", ago as f64 / 1000.0),
            w.queues.join(",")
        );
    }
    Ok(ExitCode::SUCCESS)
}
