//! `spool`'s subcommands. Exit status: 0 when the command did what was asked (for `exec`, the
//! attempt succeeded), 1 when an attempt ran and did not succeed, 2 for bad input or a refused
//! plugin.

mod exec;
mod plugin;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Spool runs jobs whose handlers are WebAssembly components.
#[derive(Parser)]
#[command(name = "spool", version, about, propagate_version = true)]
struct Cli {
    /// Log format for the host's own diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Exec(args) => exec::run(args).await,
            Command::Plugin(command) => plugin::run(command),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
