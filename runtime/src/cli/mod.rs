//! `spool`'s subcommands. Exit status: 0 when the command did what was asked (for `exec`, the
//! attempt succeeded), 1 when an attempt ran and did not succeed, 2 for bad input, a refused
//! plugin or any other error.

/// `println!` for a command's output: a closed stdout (`spool events --follow | head`) ends
/// the command through `?` with the write's error, which [`main`] takes as a quiet end,
/// instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod cache;
mod cancel;
mod demo;
mod dlq;
mod enqueue;
mod exec;
mod inspect;
mod mail_api;
mod plugin;
mod schedule;
mod store;
mod util;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Spool runs jobs whose handlers are WebAssembly components.
#[derive(Parser)]
#[command(name = "spool", version, about, propagate_version = true)]
struct Cli {
    /// Log format for the host's own diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    store: store::StoreArgs,
    #[command(flatten)]
    cache: cache::CacheArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one attempt of a job on a plugin and print its outcome.
    Exec(exec::ExecArgs),
    /// Inspect plugin files.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Put a job on a queue.
    Enqueue(enqueue::EnqueueArgs),
    /// Serve the configured queues until SIGINT/SIGTERM.
    Worker(worker::WorkerArgs),
    /// Show one job: state, attempts with errors and logs, output, timeline.
    Job(inspect::JobArgs),
    /// List jobs.
    Jobs(inspect::JobsArgs),
    /// Job counts per queue and state, each queue's plugin, and queues with no handler.
    Queues(inspect::QueuesArgs),
    /// Cancel jobs by id, or the unfinished jobs a filter matches.
    Cancel(cancel::CancelArgs),
    /// The dead-letter queue: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Print events, optionally following new ones.
    Events(inspect::EventsArgs),
    /// Repeating jobs: add, list and remove schedules kept in the backend.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Run the email demo job in four modes through an embedded worker.
    Demo(demo::DemoArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates every event itself; the event log lines would only repeat it.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn,spool::events=off",
        _ => "warn",
    };
    init_tracing(cli.log_format, default_filter);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads(&cli) {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let store = &cli.store;
    let cache = &cli.cache;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Exec(args) => exec::run(store, cache, args).await,
            Command::Plugin(command) => plugin::run(store, cache, command),
            Command::Enqueue(args) => enqueue::run(store, args).await,
            Command::Worker(args) => worker::run(store, cache, args).await,
            Command::Job(args) => inspect::job(store, args).await,
            Command::Jobs(args) => inspect::jobs(store, args).await,
            Command::Queues(args) => inspect::queues(store, args).await,
            Command::Cancel(args) => cancel::run(store, args).await,
            Command::Dlq(command) => dlq::run(store, command).await,
            Command::Events(args) => inspect::events(store, args).await,
            Command::Schedule(command) => schedule::run(store, command).await,
            Command::Demo(args) => demo::run(store, cache, args).await,
        }
    });
    match result {
        Ok(code) => code,
        // Whoever read the output stopped reading (`| head`): nothing more to say.
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether `e` is a write to a stdout whose reader has gone.
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The runtime threads `spool worker` is configured for (`[worker] threads`), if any. A
/// config that does not load is reported by the worker itself.
fn worker_threads(cli: &Cli) -> Option<usize> {
    if !matches!(cli.command, Command::Worker(_)) {
        return None;
    }
    let config = spool::config::Config::load(cli.store.config_path()).ok()?;
    usize::try_from(config.worker.threads)
        .ok()
        .filter(|&n| n > 0)
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
