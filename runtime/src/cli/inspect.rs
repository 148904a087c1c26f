//! `spool job`, `spool jobs`, `spool queues`, `spool events`: reading the queue.

use std::process::ExitCode;
use std::time::Duration;

use spool::json::{QueueLine, RetentionSecs};
use spool::queue::{
    Backend, Event, EventFilter, JobDetail, JobFilter, JobId, JobState, QueueCounts,
};

use super::store::StoreArgs;
use super::util::{parse_time, print_json, text, time};

#[derive(clap::Args)]
pub struct JobArgs {
    /// The job's id.
    id: String,
    /// Print the job as one JSON object (README: "JSON output").
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct JobsArgs {
    /// Only this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only this state (scheduled, ready, running, waiting, succeeded, dead, cancelled).
    #[arg(long, value_parser = super::util::one_of::<JobState>())]
    state: Option<JobState>,
    /// Only the children of this job (a flow).
    #[arg(long, value_name = "ID")]
    parent: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Only this tenant's jobs.
    #[arg(long)]
    tenant: Option<String>,
    /// Only jobs enqueued since this time (RFC 3339, or a duration ago like `1h`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// The next page: only jobs listed after this one (the last id of the previous page).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
    /// Print JSON: one job per line (README: "JSON output").
    #[arg(long)]
    json: bool,
}

// The queues and their handlers come from the config file (the global `--config`, default
// `spool.toml`), when there is one; the workers serving them from the worker registry.
#[derive(clap::Args)]
pub struct QueuesArgs {
    /// Print JSON: one queue per line (README: "JSON output").
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only this job's events.
    #[arg(long)]
    job: Option<String>,
    /// Only events of this queue.
    #[arg(long)]
    queue: Option<String>,
    /// Only events since this time (RFC 3339, or a duration ago like `1h`).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Print the newest this many (oldest first); a note on stderr says when older ones were
    /// left out.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Keep printing new events as they happen.
    #[arg(long)]
    follow: bool,
    /// Print JSON: one event per line (README: "JSON output").
    #[arg(long)]
    json: bool,
}

pub async fn job(store: &StoreArgs, args: JobArgs) -> anyhow::Result<ExitCode> {
    let backend = store.open_read_only().await?;
    let Some(detail) = backend.job(&JobId(args.id.clone())).await? else {
        anyhow::bail!("no job with id {}", args.id);
    };
    if args.json {
        print_json(&spool::json::JobJson::from(&detail))?;
    } else {
        print_job(&detail)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The whole job: state, attempts with errors and logs, output, timeline.
pub fn print_job(job: &JobDetail) -> std::io::Result<()> {
    let s = &job.summary;
    outln!("job {} · queue {} · {}", s.id, s.queue, s.state);
    outln!("  payload     {}", text(&job.payload));
    let max = s
        .max_attempts
        .map_or("the queue's max (set at its first claim)".to_owned(), |m| {
            format!("{m} allowed")
        });
    outln!(
        "  attempts    {} failed of {max} · {} run(s) started (a delay or a wait runs \
         again without spending an attempt) · priority {}",
        s.attempts,
        job.started,
        s.priority
    );
    if let Some(progress) = &s.progress {
        outln!("  progress    {}", progress_text(progress));
    }
    if let Some(tenant) = &s.tenant {
        outln!("  tenant      {tenant}");
    }
    if let Some(key) = &job.key {
        outln!("  key         {key}");
    }
    if let Some(group) = &s.group {
        outln!("  group       {group}");
    }
    if let Some(parent) = &s.parent {
        outln!("  parent      {parent}");
    }
    outln!("  enqueued    {}", time(s.enqueued_at));
    match s.state {
        JobState::Scheduled | JobState::Ready => outln!("  runs at     {}", time(s.run_at)),
        _ => outln!("  updated     {}", time(s.updated_at)),
    }
    if let Some(lease) = &job.lease {
        outln!(
            "  lease       {} (token {}) until {}",
            lease.worker,
            lease.token,
            time(lease.expires_at)
        );
    }
    if let Some(output) = &job.output {
        outln!("  output      {}", text(output));
    }
    if let Some(checkpoint) = &job.checkpoint {
        outln!("  checkpoint  {}", text(checkpoint));
    }
    if !job.steps.is_empty() {
        outln!("steps:");
    }
    for step in &job.steps {
        outln!(
            "  {} (attempt {}, {}): {}",
            step.name,
            step.attempt,
            time(step.at),
            text(&step.output)
        );
    }
    if !job.children.is_empty() {
        outln!("children:");
    }
    for child in &job.children {
        let mut line = format!(
            "  {} queue {} · {} · on failure {}",
            child.id, child.queue, child.state, child.on_failure
        );
        if let Some(output) = &child.output {
            line.push_str(&format!(" · output {}", text(output)));
        }
        if let Some(error) = &child.error {
            line.push_str(&format!(" · error: {error}"));
        }
        outln!("{line}");
    }
    if !job.attempts.is_empty() {
        outln!("attempts:");
    }
    for (run, a) in job.attempts.iter().enumerate() {
        let phase = a.phase.map(|p| format!(" ({p})")).unwrap_or_default();
        let digest = a
            .digest
            .as_deref()
            .map(|d| &d[..d.len().min(12)])
            .unwrap_or("-");
        outln!(
            "  run {} (attempt {}) {} {} ms {}{phase} · worker {} · plugin {digest}",
            run + 1,
            a.attempt,
            time(a.started_at),
            a.finished_at - a.started_at,
            a.outcome,
            a.worker
        );
        if let Some(error) = &a.error {
            outln!("     error: {error}");
        }
        if !a.http.is_none() {
            let h = &a.http;
            outln!(
                "     http: {} requests · {} bytes sent · {} bytes received · {} refused",
                h.requests,
                h.bytes_sent,
                h.bytes_received,
                h.refused
            );
        }
        for line in &a.logs {
            outln!("     {}", super::util::log_line(line));
        }
    }
    outln!("timeline:");
    for event in &job.events {
        outln!("  {}", event_line(event));
    }
    Ok(())
}

/// A reported progress as text: `40% copying`.
fn progress_text(p: &spool::outcome::Progress) -> String {
    match &p.message {
        Some(note) => format!("{}% {note}", p.percent),
        None => format!("{}%", p.percent),
    }
}

/// One event as a line of text.
pub fn event_line(e: &Event) -> String {
    let mut line = format!("{} {:<16}", time(e.at), e.kind.to_string());
    if let Some(id) = &e.job_id {
        line.push_str(&format!(" job {id}"));
    }
    if let Some(queue) = &e.queue {
        line.push_str(&format!(" queue {queue}"));
    }
    if let Some(attempt) = e.attempt {
        line.push_str(&format!(" attempt {attempt}"));
    }
    if let Some(phase) = e.phase {
        line.push_str(&format!(" phase {phase}"));
    }
    if let Some(ms) = e.duration_ms {
        line.push_str(&format!(" {ms} ms"));
    }
    if let Some(digest) = &e.digest {
        line.push_str(&format!(" plugin {}", &digest[..digest.len().min(12)]));
    }
    if let Some(message) = &e.message {
        line.push_str(&format!(": {message}"));
    }
    line
}

pub async fn jobs(store: &StoreArgs, args: JobsArgs) -> anyhow::Result<ExitCode> {
    let backend = store.open_read_only().await?;
    let jobs = backend
        .jobs(&JobFilter {
            queue: args.queue,
            state: args.state,
            parent: args.parent.map(JobId),
            limit: Some(args.limit),
            tenant: args.tenant,
            since: args
                .since
                .as_deref()
                .map(|t| parse_time(t, false))
                .transpose()?,
            after: args.after.map(JobId),
        })
        .await?;
    if args.json {
        for job in &jobs {
            print_json(&spool::json::JobLine::from(job))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // `failed/max`: attempts that failed so far, of those allowed (`-` until settled).
    outln!(
        "{:<10} {:<14} {:<10} {:>10}  {:<24} {:<16} last error",
        "id",
        "queue",
        "state",
        "failed/max",
        "updated",
        "progress"
    );
    for j in &jobs {
        let max = j.max_attempts.map_or("-".to_owned(), |m| m.to_string());
        let mut progress = j.progress.as_ref().map(progress_text).unwrap_or_default();
        if progress.chars().count() > 16 {
            progress = progress.chars().take(15).chain(['…']).collect();
        }
        outln!(
            "{:<10} {:<14} {:<10} {:>10}  {:<24} {:<16} {}",
            j.id.0,
            j.queue,
            j.state.to_string(),
            format!("{}/{max}", j.attempts),
            time(j.updated_at),
            progress,
            j.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn queues(store_args: &StoreArgs, args: QueuesArgs) -> anyhow::Result<ExitCode> {
    let config = store_args.config()?;
    let store = store_args.store(config.as_ref());
    let backend = store.open_read_only().await?;
    let row = |queue: &str| QueueLine {
        counts: QueueCounts {
            queue: queue.to_owned(),
            ..QueueCounts::default()
        },
        plugin: None,
        digest: None,
        handler: false,
        served: false,
        workers: 0,
        retention: None,
    };
    let mut rows: Vec<QueueLine> = backend
        .queues()
        .await?
        .into_iter()
        .map(|counts| QueueLine { counts, ..row("") })
        .collect();
    if let Some(config) = &config {
        for (name, queue) in &config.queues {
            if !rows.iter().any(|r| &r.counts.queue == name) {
                rows.push(row(name));
            }
            if let Some(row) = rows.iter_mut().find(|r| &r.counts.queue == name) {
                row.handler = true;
                row.plugin = Some(queue.plugin.display().to_string());
                row.digest = std::fs::read(&queue.plugin)
                    .ok()
                    .map(|bytes| spool::Digest::of(&bytes).as_str().to_owned());
            }
        }
    }
    // A queue a live worker serves is listed even with no jobs and no config entry here.
    for worker in backend.workers().await? {
        for name in &worker.queues {
            if !rows.iter().any(|r| &r.counts.queue == name) {
                rows.push(row(name));
            }
            if let Some(row) = rows.iter_mut().find(|r| &r.counts.queue == name) {
                row.served = true;
                row.workers += 1;
            }
        }
    }
    if let Some(config) = &config {
        let retention = &config.worker.retention;
        for row in &mut rows {
            row.retention = Some(RetentionSecs {
                succeeded_secs: retention.succeeded.as_secs(),
                cancelled_secs: retention.cancelled.as_secs(),
            });
        }
    }
    if args.json {
        for row in &rows {
            print_json(row)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    outln!("store {store}");
    if let Some(config) = &config {
        outln!("retention: {}", config.worker.retention);
    }
    outln!(
        "{:<14} {:>9} {:>7} {:>7} {:>7} {:>9} {:>6} {:>9} {:>7}  handler",
        "queue",
        "scheduled",
        "ready",
        "running",
        "waiting",
        "succeeded",
        "dead",
        "cancelled",
        "workers"
    );
    for r in &rows {
        let c = &r.counts;
        let handler = match (&r.plugin, &r.digest, &config) {
            (Some(plugin), digest, _) => format!(
                "{plugin} ({})",
                digest
                    .as_deref()
                    .map(|d| &d[..12])
                    .unwrap_or("file missing")
            ),
            (None, _, Some(_)) => "NO HANDLER: no [queues] entry in the config".to_owned(),
            (None, _, None) => {
                format!("unknown: no {} to read", store_args.config_path().display())
            }
        };
        // Jobs wait on a queue no live worker serves, whatever the config says.
        let workers = if r.served {
            r.workers.to_string()
        } else {
            "NONE".to_owned()
        };
        outln!(
            "{:<14} {:>9} {:>7} {:>7} {:>7} {:>9} {:>6} {:>9} {:>7}  {handler}",
            c.queue,
            c.scheduled,
            c.ready,
            c.running,
            c.waiting,
            c.succeeded,
            c.dead,
            c.cancelled,
            workers
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn events(store: &StoreArgs, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let backend = store.open_read_only().await?;
    if let Some(id) = &args.job
        && backend.job(&JobId(id.clone())).await?.is_none()
    {
        anyhow::bail!("no job with id {id}");
    }
    let filter = EventFilter {
        job: args.job.clone().map(JobId),
        queue: args.queue.clone(),
        since: args
            .since
            .as_deref()
            .map(|t| parse_time(t, false))
            .transpose()?,
        ..EventFilter::default()
    };
    // First the newest `--limit` (one more read tells whether older ones were left out)...
    let mut events = backend
        .events(&EventFilter {
            limit: Some(args.limit.saturating_add(1)),
            newest: true,
            ..filter.clone()
        })
        .await?;
    if events.len() > args.limit {
        events.remove(0);
        eprintln!(
            "(the newest {} events; older ones were left out: raise --limit, or narrow with --since or --queue)",
            args.limit
        );
    }
    // ... then, following, every new one.
    let mut after = None;
    loop {
        for event in &events {
            if args.json {
                print_json(event)?;
            } else {
                outln!("{}", event_line(event));
            }
        }
        if let Some(last) = events.last() {
            after = Some(last.seq);
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        if events.len() < 1000 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        events = backend
            .events(&EventFilter {
                after,
                limit: Some(1000),
                ..filter.clone()
            })
            .await?;
    }
}
