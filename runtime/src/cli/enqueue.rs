//! `spool enqueue`: put a job on a queue.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use spool::queue::sqlite::Synchronous;
use spool::queue::{Backend, NewJob};

use super::store::{Store, StoreArgs};
use super::util::{parse_time, print_json};

#[derive(clap::Args)]
pub struct EnqueueArgs {
    /// The queue.
    queue: String,
    /// The payload, as JSON.
    payload: String,
    /// Run no earlier than this long from now (`30s`, `5m`).
    #[arg(long, value_parser = spool::units::parse_duration, conflicts_with = "run_at")]
    delay: Option<Duration>,
    /// Run no earlier than this time (RFC 3339, e.g. `2026-11-23T10:00:00Z`).
    #[arg(long)]
    run_at: Option<String>,
    /// Higher runs first within the queue.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Idempotency key: while an unfinished job on the queue has it, no new job is made.
    #[arg(long)]
    key: Option<String>,
    /// Attempts allowed in all (default: the queue's `max_attempts` in the config, stored on
    /// the job now, or at its first claim when there is no config).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,
    /// The tenant the job belongs to.
    #[arg(long)]
    tenant: Option<String>,
    /// The job's group: it never runs while another job of its queue and group runs.
    #[arg(long)]
    group: Option<String>,
    /// Print one JSON object: `id` and `duplicate` (README: "JSON output").
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &StoreArgs, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    serde_json::from_str::<serde_json::Value>(&args.payload)
        .with_context(|| format!("bad payload: not JSON: {}", args.payload))?;
    if args.queue.trim().is_empty() {
        anyhow::bail!("bad queue name: it is empty");
    }
    let run_at = match (args.delay, &args.run_at) {
        (Some(delay), _) => Some(spool::queue::now() + i64::try_from(delay.as_millis())?),
        (None, Some(at)) => Some(parse_time(at, true)?),
        (None, None) => None,
    };
    let config = store.config()?;
    let target = store.store(config.as_ref());
    let new_file = match &target {
        Store::Sqlite(path) if !path.exists() => Some(path.clone()),
        _ => None,
    };
    let backend = target.open(Synchronous::Full).await?;
    if let Some(path) = new_file {
        let path = std::path::absolute(&path).unwrap_or(path);
        eprintln!("created the database {}", path.display());
    }
    // Settled now when the config knows the queue; otherwise at the job's first claim.
    let max_attempts = match args.max_attempts {
        Some(max) => Some(max),
        None => config
            .as_ref()
            .and_then(|c| c.queues.get(&args.queue).map(|q| q.max_attempts)),
    };
    let job = NewJob {
        queue: args.queue,
        payload: args.payload.into_bytes(),
        run_at,
        priority: args.priority,
        max_attempts,
        tenant: args.tenant,
        key: args.key,
        metadata: Vec::new(),
        group: args.group,
    };
    let enqueued = backend.enqueue(vec![job]).await?;
    let Some(done) = enqueued.first() else {
        anyhow::bail!("the backend returned no id");
    };
    if args.json {
        print_json(done)?;
    } else if done.duplicate {
        outln!(
            "{} (duplicate: an unfinished job already has this key)",
            done.id
        );
    } else {
        outln!("{}", done.id);
    }
    Ok(ExitCode::SUCCESS)
}
