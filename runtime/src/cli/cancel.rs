//! `spool cancel`: cancel jobs by id, or every unfinished job a filter matches.
//!
//! A job that has not started never runs; a running attempt is aborted by its worker within
//! a fraction of a second; the unfinished children of a cancelled job are cancelled with it.
//! Each job's `cancelled` event carries the reason (`--reason`, "cancelled by operator" by
//! default). Exit status 2 when an id names no job.

use std::process::ExitCode;

use serde::Serialize;
use spool::queue::{Backend, CancelFilter, JobId, JobState, QueueError};

use super::store::StoreArgs;
use super::util::print_json;

#[derive(clap::Args)]
pub struct CancelArgs {
    /// The jobs to cancel, by id.
    ids: Vec<String>,
    /// Cancel the unfinished jobs of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs in this state: scheduled, ready, queued (both), running, waiting. Repeat
    /// for several.
    #[arg(long = "state", value_name = "STATE")]
    states: Vec<String>,
    /// Only this tenant's jobs.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this group's jobs.
    #[arg(long)]
    group: Option<String>,
    /// Cancel every unfinished job (needed when neither ids nor a filter are given).
    #[arg(long)]
    all: bool,
    /// Why, recorded in each cancelled job's `cancelled` event.
    #[arg(long, default_value = "cancelled by operator")]
    reason: String,
    /// Print one JSON object: the ids cancelled, already finished and unknown (README: "JSON
    /// output").
    #[arg(long)]
    json: bool,
}

impl CancelArgs {
    fn filter(&self) -> anyhow::Result<CancelFilter> {
        let mut states = Vec::new();
        for name in &self.states {
            if name == "queued" {
                states.extend([JobState::Ready, JobState::Scheduled]);
                continue;
            }
            let state: JobState = name.parse().map_err(|_| {
                anyhow::anyhow!(
                    "bad state `{name}`: use scheduled, ready, queued, running or waiting"
                )
            })?;
            if state.is_finished() {
                anyhow::bail!(
                    "{state} jobs are finished: there is nothing to cancel (states that can be \
                     cancelled: scheduled, ready, queued, running, waiting)"
                );
            }
            states.push(state);
        }
        Ok(CancelFilter {
            queue: self.queue.clone(),
            states,
            tenant: self.tenant.clone(),
            group: self.group.clone(),
        })
    }
}

/// What became of each id given (a filter fills `cancelled` only): one JSON shape for both.
#[derive(Default, Serialize)]
struct ByIds {
    cancelled: Vec<String>,
    /// Finished before the cancel, with the state it finished in.
    finished: Vec<Finished>,
    unknown: Vec<String>,
}

/// A job that had finished before the cancel.
#[derive(Serialize)]
struct Finished {
    id: String,
    state: Option<JobState>,
}

pub async fn run(store: &StoreArgs, args: CancelArgs) -> anyhow::Result<ExitCode> {
    let filter = args.filter()?;
    if !args.ids.is_empty() && (!filter.is_empty() || args.all) {
        anyhow::bail!(
            "give job ids or a filter (--queue/--state/--tenant/--group/--all), not both"
        );
    }
    if args.ids.is_empty() && filter.is_empty() && !args.all {
        anyhow::bail!(
            "refusing to cancel every unfinished job: name job ids, or filter with \
             --queue/--state/--tenant/--group, or pass --all"
        );
    }
    let backend = store.open_existing().await?;
    if args.ids.is_empty() {
        let cancelled = backend.cancel_matching(&filter, &args.reason).await?;
        if args.json {
            print_json(&ByIds {
                cancelled: cancelled.into_iter().map(|id| id.0).collect(),
                ..ByIds::default()
            })?;
        } else {
            outln!("cancelled {} job(s)", cancelled.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut outcome = ByIds::default();
    for id in &args.ids {
        let job = JobId(id.clone());
        match backend.cancel(&job, &args.reason).await {
            Ok(true) => outcome.cancelled.push(id.clone()),
            Ok(false) => {
                let state = backend.job(&job).await?.map(|j| j.summary.state);
                outcome.finished.push(Finished {
                    id: id.clone(),
                    state,
                });
            }
            Err(QueueError::NotFound(_)) => outcome.unknown.push(id.clone()),
            Err(e) => return Err(e.into()),
        }
    }
    if args.json {
        print_json(&outcome)?;
    } else {
        for id in &outcome.cancelled {
            outln!("job {id}: cancelled");
        }
        for Finished { id, state } in &outcome.finished {
            match state {
                Some(state) => outln!("job {id}: already finished ({state})"),
                None => outln!("job {id}: already finished"),
            }
        }
        for id in &outcome.unknown {
            outln!("job {id}: unknown id");
        }
        outln!(
            "cancelled {} of {} job(s)",
            outcome.cancelled.len(),
            args.ids.len()
        );
    }
    Ok(if outcome.unknown.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
