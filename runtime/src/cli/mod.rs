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

mod bulk;
mod cache;
mod cancel;
mod demo;
mod dlq;
mod enqueue;
mod exec;
mod inspect;
mod mail_api;
mod manual;
mod plugin;
mod schedule;
mod serve;
mod store;
mod util;
mod worker;
mod workers;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The help heading of the flags every subcommand takes, listed after the subcommand's own.
const GLOBAL: &str = "Global options";

/// Spool runs jobs whose handlers are WebAssembly components.
#[derive(Parser)]
#[command(name = "spool", version, about, propagate_version = true)]
struct Cli {
    /// Log format for the host's own diagnostics on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = GLOBAL
    )]
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
    /// Job counts per queue and state, each queue's plugin, and whether live workers serve it.
    Queues(inspect::QueuesArgs),
    /// The live workers: host, pid, version, queues, attempts running, last heartbeat.
    Workers(workers::WorkersArgs),
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
    /// Serve the operator HTTP API, /metrics and health checks until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Run the email demo job in four modes through an embedded worker.
    Demo(demo::DemoArgs),
    /// Print a shell completion script
    /// (`spool completions bash > ~/.local/share/bash-completion/completions/spool`).
    Completions(manual::CompletionsArgs),
    /// Print the man page (roff: `spool man | man -l -`), or write one per command with --dir.
    Man(manual::ManArgs),
}

pub fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // The demo narrates every event itself; the event log lines would only repeat it. A
    // worker's log says what it loaded, reloaded, released and why it stops.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn,spool::events=off",
        Command::Worker(_) | Command::Serve(_) => "warn,spool=info",
        _ => "warn",
    };
    let format = cli.log_format;
    init_tracing(format, default_filter);
    if let Err(e) = cli.store.read_env() {
        return fail(format, &e);
    }
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
            Command::Worker(args) => worker::run(store, cache, args, format).await,
            Command::Job(args) => inspect::job(store, args).await,
            Command::Jobs(args) => inspect::jobs(store, args).await,
            Command::Queues(args) => inspect::queues(store, args).await,
            Command::Workers(args) => workers::run(store, args).await,
            Command::Cancel(args) => cancel::run(store, args).await,
            Command::Dlq(command) => dlq::run(store, command).await,
            Command::Events(args) => inspect::events(store, args).await,
            Command::Schedule(command) => schedule::run(store, command).await,
            Command::Serve(args) => serve::run(store, args).await,
            Command::Demo(args) => demo::run(store, cache, args).await,
            Command::Completions(args) => manual::completions(args),
            Command::Man(args) => manual::man(args),
        }
    });
    match result {
        Ok(code) => code,
        // Whoever read the output stopped reading (`| head`): nothing more to say.
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => fail(format, &e),
    }
}

/// Report `e` (with its causes) on stderr, as a log line in JSON mode; exit status 2.
fn fail(format: LogFormat, e: &anyhow::Error) -> ExitCode {
    match format {
        LogFormat::Text => eprintln!("error: {e:#}"),
        LogFormat::Json => tracing::error!("{e:#}"),
    }
    ExitCode::from(2)
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
    let spec = std::env::var("SPOOL_LOG").map_or_else(
        |_| default_filter.to_owned(),
        |spec| log_filter(&spec, default_filter),
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only for a person at a terminal who has not asked for none.
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The filter for `SPOOL_LOG=spec`: a bare level (`debug`) applies to Spool's own targets,
/// not to the libraries under it (wasmtime and cranelift log a great deal at debug), which
/// stay at `default`'s level; a directive that names a target (`wasmtime=debug`) is kept.
fn log_filter(spec: &str, default: &str) -> String {
    let mut directives = vec![default.to_owned()];
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare_level = !directive.contains('=')
            && directive
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .is_ok();
        directives.push(if bare_level {
            format!("spool={directive}")
        } else {
            directive.to_owned()
        });
    }
    directives.join(",")
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn a_bare_level_applies_to_spool_only_and_named_targets_are_kept() {
        assert_eq!(log_filter("debug", "warn"), "warn,spool=debug");
        assert_eq!(
            log_filter("info,wasmtime=debug", "warn,spool=info"),
            "warn,spool=info,spool=info,wasmtime=debug"
        );
        assert_eq!(
            log_filter("spool::events=off", "warn"),
            "warn,spool::events=off"
        );
    }
}
