//! `spool dlq`: the dead-letter queue.

use std::process::ExitCode;

use spool::queue::{Backend, DlqFilter, JobDetail, JobId, JobState, Phase};

use super::inspect::print_job;
use super::store::StoreArgs;
use super::util::{parse_time, print_json, time};

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// List dead jobs, most recently dead first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON: one dead job per line (README: "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Show one dead job's whole envelope.
    Show {
        /// The job's id.
        id: String,
        /// Print the job as one JSON object (README: "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Give dead jobs fresh attempts: one by id, or every one matching the filter.
    Replay {
        /// The job's id.
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete dead jobs for good: one by id, those matching the filter, or `--all`.
    Purge {
        /// The job's id.
        id: Option<String>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Purge every dead job (needed when no filter is given).
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args)]
pub struct FilterArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs whose last attempt failed in this phase (run, timeout, trap, lease-expired,
    /// decode, no-handler, max-started).
    #[arg(long, value_parser = super::util::one_of::<Phase>())]
    phase: Option<Phase>,
    /// Only jobs that died since this time (RFC 3339, or a duration ago like `1h`).
    #[arg(long)]
    since: Option<String>,
    /// Only jobs that died before this time.
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn filter(&self, id: Option<String>) -> anyhow::Result<DlqFilter> {
        Ok(DlqFilter {
            id: id.map(JobId),
            queue: self.queue.clone(),
            phase: self.phase,
            since: self
                .since
                .as_deref()
                .map(|t| parse_time(t, false))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|t| parse_time(t, false))
                .transpose()?,
            limit: None,
        })
    }

    fn is_empty(&self) -> bool {
        self.queue.is_none() && self.phase.is_none() && self.since.is_none() && self.until.is_none()
    }
}

pub async fn run(store: &StoreArgs, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let backend = match command {
        DlqCommand::List { .. } | DlqCommand::Show { .. } => store.open_read_only().await?,
        _ => store.open_existing().await?,
    };
    match command {
        DlqCommand::List {
            filter,
            limit,
            json,
        } => {
            let mut filter = filter.filter(None)?;
            filter.limit = Some(limit);
            let dead = backend.dead(&filter).await?;
            if json {
                for job in &dead {
                    print_json(&spool::json::JobLine::from(job))?;
                }
            } else {
                outln!("{} dead job(s)", dead.len());
                for j in &dead {
                    let phase = j.last_phase.map(|p| p.to_string()).unwrap_or_default();
                    outln!(
                        "{:<10} {:<14} died {} after {} attempt(s) · {phase}: {}",
                        j.id.0,
                        j.queue,
                        time(j.updated_at),
                        j.attempts,
                        j.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        DlqCommand::Show { id, json } => {
            let job = require_dead(&backend, &id).await?;
            if json {
                print_json(&spool::json::JobJson::from(&job))?;
            } else {
                print_job(&job)?;
            }
        }
        DlqCommand::Replay { id, filter } => {
            if let Some(id) = &id {
                require_dead(&backend, id).await?;
            }
            if id.is_none() && filter.is_empty() {
                anyhow::bail!(
                    "say which dead jobs to replay: an id, or --queue/--phase/--since/--until"
                );
            }
            let n = backend.replay(&filter.filter(id)?).await?;
            outln!("replayed {n} job(s)");
        }
        DlqCommand::Purge { id, filter, all } => {
            if let Some(id) = &id {
                require_dead(&backend, id).await?;
            }
            if id.is_none() && filter.is_empty() && !all {
                anyhow::bail!("say which dead jobs to purge: an id, a filter, or --all");
            }
            let n = backend.purge(&filter.filter(id)?).await?;
            outln!("purged {n} job(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The dead job `id`, or an error naming the id when there is no such job or it is not dead.
async fn require_dead(backend: &impl Backend, id: &str) -> anyhow::Result<JobDetail> {
    let Some(job) = backend.job(&JobId(id.to_owned())).await? else {
        anyhow::bail!("no job with id {id}");
    };
    if job.summary.state != JobState::Dead {
        anyhow::bail!(
            "job {id} is not in the dead-letter queue (it is {})",
            job.summary.state
        );
    }
    Ok(job)
}
