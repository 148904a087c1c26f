//! `spool enqueue`: put a job on a queue, or one job per line of a file (`--bulk`).
//!
//! The payload is an argument, `-` for standard input or `@PATH` for a file, so payloads of
//! any size up to the store's `max_payload` get in (an argument is limited to ~128 KiB by
//! the OS). The queue must be one of the config's, when there is a config, unless `--force`.

use std::io::Read as _;
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
    /// The payload, as JSON: the text itself, `-` to read it from standard input, or `@PATH`
    /// to read it from a file.
    #[arg(required_unless_present = "bulk", conflicts_with = "bulk")]
    payload: Option<String>,
    /// Enqueue one job per line of FILE (`-`: standard input), each line a JSON payload
    /// (blank lines are skipped), in batches of 1,000; every other option applies to each.
    #[arg(long, value_name = "FILE", conflicts_with = "key")]
    bulk: Option<String>,
    /// Enqueue even though the config has no such queue (a worker with another config
    /// serves it).
    #[arg(long)]
    force: bool,
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
    /// The W3C trace context the job belongs to (`00-<32 hex trace id>-<16 hex parent span
    /// id>-<2 hex flags>`): its attempts are spans of that trace, children of that span.
    #[arg(long, value_name = "TRACEPARENT")]
    traceparent: Option<spool::trace::TraceParent>,
    /// Print one JSON object: `id` and `duplicate` (README: "JSON output").
    #[arg(long)]
    json: bool,
}

pub async fn run(store: &StoreArgs, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    known_queue(store, &args.queue, args.force)?;
    spool::queue::check::check_queue_name(&args.queue)?;
    let run_at = match (args.delay, &args.run_at) {
        (Some(delay), _) => Some(spool::queue::now() + i64::try_from(delay.as_millis())?),
        (None, Some(at)) => Some(parse_time(at, true)?),
        (None, None) => None,
    };
    let config = store.config()?;
    // Settled now when the config knows the queue; otherwise at the job's first claim.
    let max_attempts = match args.max_attempts {
        Some(max) => Some(max),
        None => config
            .as_ref()
            .and_then(|c| c.queues.get(&args.queue).map(|q| q.max_attempts)),
    };
    let template = NewJob {
        queue: args.queue.clone(),
        payload: Vec::new(),
        run_at,
        priority: args.priority,
        max_attempts,
        tenant: args.tenant.clone(),
        key: args.key.clone(),
        metadata: Vec::new(),
        group: args.group.clone(),
        traceparent: args.traceparent,
    };
    let target = store.store(config.as_ref());
    let new_file = match &target {
        Store::Sqlite(path) if !path.exists() => Some(path.clone()),
        _ => None,
    };
    // Read before the store is opened, so a bad payload creates no database.
    let payload = match &args.bulk {
        Some(_) => Vec::new(),
        None => read_payload(args.payload.as_deref().unwrap_or("-"))?,
    };
    let max_payload = config
        .as_ref()
        .map_or(spool::queue::check::DEFAULT_MAX_PAYLOAD, |c| {
            c.worker.max_payload
        });
    let backend = target.open_with(Synchronous::Full, max_payload).await?;
    if let Some(path) = new_file {
        let path = std::path::absolute(&path).unwrap_or(path);
        eprintln!("created the database {}", path.display());
    }
    if let Some(source) = &args.bulk {
        return super::bulk::run(&backend, source, template, args.json).await;
    }
    let job = NewJob {
        payload,
        ..template
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

/// The payload an argument stands for: the text, standard input (`-`) or a file (`@PATH`),
/// checked to be JSON.
fn read_payload(arg: &str) -> anyhow::Result<Vec<u8>> {
    let (payload, from) = if arg == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("cannot read the payload from standard input")?;
        (bytes, "standard input".to_owned())
    } else if let Some(path) = arg.strip_prefix('@') {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read the payload from {path}"))?;
        (bytes, path.to_owned())
    } else {
        return check_json(arg.as_bytes(), || format!("bad payload: not JSON: {arg}"))
            .map(|()| arg.as_bytes().to_vec());
    };
    check_json(&payload, || format!("bad payload in {from}: not JSON"))?;
    Ok(payload)
}

/// Check that `bytes` are one JSON value (without building it: payloads can be large).
pub(super) fn check_json(bytes: &[u8], what: impl FnOnce() -> String) -> anyhow::Result<()> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map(|_| ())
        .with_context(what)
}

/// Refuse a queue the config does not have, unless `force`: a job on a queue no worker
/// serves would wait for ever (the rule the HTTP API's enqueue applies too).
fn known_queue(store: &StoreArgs, queue: &str, force: bool) -> anyhow::Result<()> {
    let Some(config) = store.config()? else {
        return Ok(());
    };
    if force {
        return Ok(());
    }
    let Err(unknown) = config.known_queue(queue) else {
        return Ok(());
    };
    let path = store.config_path().display();
    if unknown.known.is_empty() {
        anyhow::bail!(
            "unknown queue `{queue}`: {path} has no [queues] (pass --force if a worker with another config serves it)"
        );
    }
    let known = unknown.known.join(", ");
    anyhow::bail!(
        "unknown queue `{queue}`: {path} has {known} (pass --force if a worker with another config serves it)"
    )
}
