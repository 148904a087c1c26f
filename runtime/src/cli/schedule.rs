//! `spool schedule`: add, list and remove the schedules kept in the backend.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use spool::queue::sqlite::Synchronous;
use spool::queue::{Backend, now};
use spool::schedule::{Missed, Schedule, Spec};

use super::store::StoreArgs;
use super::util::{print_json, time};

#[derive(clap::Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule (or replace the one of that name).
    Add(AddArgs),
    /// List the schedules: spec, queue, next tick, last fire.
    List(ListArgs),
    /// Delete a schedule: it fires no more.
    Remove(RemoveArgs),
}

#[derive(clap::Args)]
pub struct AddArgs {
    /// The schedule's name: letters, digits, `-` and `_`.
    name: String,
    /// The queue its jobs go to.
    #[arg(long)]
    queue: String,
    /// A cron expression, in UTC: five fields (`0 3 * * *`) or six with seconds first.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    cron: Option<String>,
    /// A fixed interval (`30s`, `1h`), at least `1s`; ticks fall on multiples of it.
    #[arg(long, value_parser = spool::units::parse_duration)]
    every: Option<Duration>,
    /// Every job's payload, as JSON (default: empty).
    #[arg(long)]
    payload: Option<String>,
    /// What to do with ticks missed while no worker ran.
    #[arg(long, default_value = "skip", value_parser = parse_missed)]
    missed: Missed,
    /// The jobs' priority.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// The jobs' tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The jobs' group.
    #[arg(long)]
    group: Option<String>,
    /// The jobs' max attempts (default: the queue's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Print JSON: one schedule per line (README: "JSON output").
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The schedule.
    name: String,
}

fn parse_missed(text: &str) -> Result<Missed, String> {
    text.parse()
        .map_err(|_| format!("`{text}`: use `skip` or `catch-up`"))
}

pub async fn run(store: &StoreArgs, command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Add(args) => add(store, args).await,
        ScheduleCommand::List(args) => list(store, args).await,
        ScheduleCommand::Remove(args) => remove(store, args).await,
    }
}

async fn add(store: &StoreArgs, args: AddArgs) -> anyhow::Result<ExitCode> {
    let spec = match (&args.cron, args.every) {
        (Some(expr), _) => Spec::cron(expr)?,
        (None, Some(every)) => Spec::every(every)?,
        (None, None) => anyhow::bail!("give --cron EXPR or --every DURATION"),
    };
    let payload = match args.payload {
        Some(json) => {
            serde_json::from_str::<serde_json::Value>(&json)
                .with_context(|| format!("bad payload: not JSON: {json}"))?;
            json.into_bytes()
        }
        None => Vec::new(),
    };
    let schedule = Schedule {
        name: args.name.clone(),
        spec,
        queue: args.queue,
        payload,
        missed: args.missed,
        priority: args.priority,
        tenant: args.tenant,
        group: args.group,
        max_attempts: args.max_attempts,
        from_config: false,
    };
    schedule
        .check()
        .with_context(|| format!("cannot add schedule {}", args.name))?;
    // The workers' config may live elsewhere: a queue it does not name is worth a warning,
    // not a refusal.
    if let Some(config) = store.config()?
        && !config.queues.is_empty()
        && !config.queues.contains_key(&schedule.queue)
    {
        eprintln!(
            "warning: {} has no [queues.{}]: its jobs wait until a worker serves that queue",
            store.config_path().display(),
            schedule.queue
        );
    }
    let next = schedule.spec.next_after(now())?;
    let spec = schedule.spec.to_string();
    let backend = store.open(Synchronous::Full).await?;
    let new = backend.put_schedule(schedule, next).await?;
    let state = backend
        .schedules()
        .await?
        .into_iter()
        .find(|s| s.schedule.name == args.name);
    let next = state.map_or(next, |s| s.next_run_at);
    outln!(
        "{} schedule {} ({spec}); next tick {}",
        if new { "added" } else { "updated" },
        args.name,
        time(next)
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &StoreArgs, args: ListArgs) -> anyhow::Result<ExitCode> {
    let backend = store.open_read_only().await?;
    let schedules = backend.schedules().await?;
    if args.json {
        for state in &schedules {
            let line = spool::json::schedule(state);
            print_json(&line)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if schedules.is_empty() {
        outln!("no schedules");
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<20} {:<26} {:<14} {:<9} {:<7} {:<25} LAST FIRE",
        "NAME",
        "SPEC",
        "QUEUE",
        "MISSED",
        "FROM",
        "NEXT TICK"
    );
    for state in schedules {
        let last = match (state.last_run_at, &state.last_job) {
            (Some(at), Some(job)) => format!("{} (job {job})", time(at)),
            (Some(at), None) => time(at),
            _ => "never".to_owned(),
        };
        outln!(
            "{:<20} {:<26} {:<14} {:<9} {:<7} {:<25} {last}",
            state.schedule.name,
            state.schedule.spec.to_string(),
            state.schedule.queue,
            state.schedule.missed.to_string(),
            if state.schedule.from_config {
                "config"
            } else {
                "added"
            },
            time(state.next_run_at),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(store: &StoreArgs, args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let backend = store.open_existing().await?;
    if backend.remove_schedule(&args.name).await? {
        outln!("removed schedule {}", args.name);
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("no schedule named {}", args.name)
    }
}
