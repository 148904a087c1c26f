//! `spool enqueue Q --bulk FILE|-`: one job per line, in batches.
//!
//! Each non-blank line is one JSON payload. Lines are sent in batches of [`BATCH`] jobs, one
//! backend call (one transaction on SQLite) each. A bad line (not JSON, or larger than the
//! store's `max_payload`) stops the run: every line before it is enqueued (the partial batch
//! is sent first), nothing from it on, and the error names the line, how many jobs were
//! enqueued and their ids, so they can be found (`spool jobs --queue Q --after ID`) or
//! cancelled. A failed batch stops the run the same way. On a terminal, a progress line on
//! stderr counts the jobs as they go; the count is printed at the end.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use spool::queue::{AnyBackend, Backend, JobId, NewJob};

use super::enqueue::check_json;
use super::util::print_json;

/// Jobs per backend call.
const BATCH: usize = 1_000;

/// What a run enqueued so far.
#[derive(Default, serde::Serialize)]
struct Tally {
    /// Jobs enqueued (duplicates included).
    enqueued: u64,
    /// Of which duplicates of an unfinished job with the same key.
    duplicates: u64,
    /// The first job's id.
    first_id: Option<JobId>,
    /// The last job's id.
    last_id: Option<JobId>,
}

impl Tally {
    fn ids(&self) -> String {
        match (&self.first_id, &self.last_id) {
            (Some(first), Some(last)) if first == last => format!(" (job {first})"),
            (Some(first), Some(last)) => format!(" (jobs {first} to {last})"),
            _ => String::new(),
        }
    }
}

/// Enqueue one job per line of `source` (a path, or `-` for standard input), each `template`
/// with the line as its payload.
pub async fn run(
    backend: &AnyBackend,
    source: &str,
    template: NewJob,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let reader: Box<dyn std::io::BufRead> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(source)
            .with_context(|| format!("cannot read the bulk file {source}"))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    let max_payload = backend.max_payload();
    let mut progress = Progress::new();
    let mut tally = Tally::default();
    let mut batch: Vec<NewJob> = Vec::with_capacity(BATCH);
    let mut first_line = 1;
    for (n, line) in reader.split(b'\n').enumerate() {
        let number = n + 1;
        let mut line = line.with_context(|| format!("cannot read line {number} of {source}"))?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = if line.len() > max_payload {
            Some(
                spool::queue::check::check_payload(line.len(), max_payload)
                    .err()
                    .map_or_else(String::new, |e| e.to_string()),
            )
        } else {
            check_json(&line, String::new)
                .err()
                .map(|e| format!("not JSON: {}", e.root_cause()))
        };
        if let Some(why) = bad {
            let flushed = send(backend, &mut batch, &mut tally, &mut progress).await;
            progress.done();
            let unsent = match flushed {
                Ok(()) => String::new(),
                Err(e) => format!(" (the batch of lines {first_line} on failed: {e:#})"),
            };
            anyhow::bail!(
                "line {number} of {source}: {why}; nothing from it on was enqueued, {} job(s) from the lines before it were enqueued{}{unsent}",
                tally.enqueued,
                tally.ids()
            );
        }
        if batch.is_empty() {
            first_line = number;
        }
        batch.push(NewJob {
            payload: line,
            ..template.clone()
        });
        if batch.len() == BATCH {
            sent(
                send(backend, &mut batch, &mut tally, &mut progress).await,
                &tally,
                first_line,
                number,
                &mut progress,
            )?;
        }
    }
    sent(
        send(backend, &mut batch, &mut tally, &mut progress).await,
        &tally,
        first_line,
        usize::MAX,
        &mut progress,
    )?;
    progress.done();
    if json {
        print_json(&tally)?;
    } else {
        let duplicates = match tally.duplicates {
            0 => String::new(),
            d => format!(", {d} of them duplicates"),
        };
        outln!(
            "enqueued {} job(s) on {}{}{duplicates}",
            tally.enqueued,
            template.queue,
            tally.ids()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Send `batch` (emptying it) and count what it enqueued.
async fn send(
    backend: &AnyBackend,
    batch: &mut Vec<NewJob>,
    tally: &mut Tally,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let jobs = std::mem::replace(batch, Vec::with_capacity(BATCH));
    let enqueued = backend.enqueue(jobs).await?;
    for e in enqueued {
        tally.enqueued += 1;
        tally.duplicates += u64::from(e.duplicate);
        if tally.first_id.is_none() {
            tally.first_id = Some(e.id.clone());
        }
        tally.last_id = Some(e.id);
    }
    progress.show(tally.enqueued);
    Ok(())
}

/// A batch's failure, as the error that ends the run.
fn sent(
    result: anyhow::Result<()>,
    tally: &Tally,
    first: usize,
    last: usize,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let Err(e) = result else { return Ok(()) };
    progress.done();
    let lines = if last == usize::MAX {
        format!("lines {first} on")
    } else {
        format!("lines {first} to {last}")
    };
    Err(e.context(format!(
        "the batch of {lines} was not enqueued; {} job(s) from the lines before it were enqueued{}",
        tally.enqueued,
        tally.ids()
    )))
}

/// A progress line on stderr, only when stderr is a terminal.
struct Progress {
    started: Instant,
    shown: bool,
    on: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            started: Instant::now(),
            shown: false,
            on: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, count: u64) {
        if !self.on {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        // Precision loss is irrelevant for a rate shown to a person.
        #[allow(clippy::cast_precision_loss)]
        let rate = count as f64 / secs;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\renqueued {count} jobs ({rate:.0}/s)");
        let _ = err.flush();
        self.shown = true;
    }

    fn done(&mut self) {
        if self.shown {
            let _ = writeln!(std::io::stderr().lock());
            self.shown = false;
        }
    }
}
