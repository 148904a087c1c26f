//! `spool exec`: one attempt of one job, no queue.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use super::cache::CacheArgs;
use super::store::StoreArgs;
use super::util::print_json;
use anyhow::Context as _;
use spool::sandbox::{ConfigStore, ConfigValues, Secret};
use spool::units::{parse_duration, parse_size};
use spool::{
    AttemptReport, Grants, HttpGrant, HttpLimits, HttpPattern, JobInput, Limits, Sandbox,
    SandboxConfig,
};

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The plugin component (`.wasm`).
    plugin: PathBuf,
    /// The job's payload, as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Abort the attempt after this long (`5s`, `250ms`, `30m`; `0` for no timeout). Default:
    /// the queue's (see `--queue`), or 30m.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Memory cap for the instance (`64MiB`; at least 2MiB). Default: the queue's, or 128MiB.
    #[arg(long, value_parser = parse_size)]
    memory: Option<usize>,
    /// Allow outbound HTTP to `scheme://host[:port]` (`*.` subdomain wildcard, `*` any port),
    /// as a queue's `http` grant does; repeatable.
    #[arg(long = "allow-http", value_name = "PATTERN", value_parser = parse_pattern)]
    allow_http: Vec<HttpPattern>,
    /// Fuel budget (instructions, roughly); enables fuel metering.
    #[arg(long)]
    fuel: Option<u64>,
    /// The attempt number the plugin sees.
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// The max-attempts the plugin sees.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// The queue name the plugin sees. When the config (`--config`, or `spool.toml`) has this
    /// queue, the attempt runs with its limits and grants.
    #[arg(long, default_value = "exec")]
    queue: String,
    /// A checkpoint to hand the plugin, as if an earlier attempt had saved it.
    #[arg(long)]
    checkpoint: Option<String>,
    /// Print one JSON object instead of text (README: "JSON output").
    #[arg(long)]
    json: bool,
    /// A value the plugin reads through `wasi:config` (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = key_value)]
    vars: Vec<(String, String)>,
    /// A secret the plugin reads through `wasi:config`, taken from the environment variable
    /// ENV (repeatable); redacted from the printed logs and error.
    #[arg(long = "secret-env", value_name = "KEY=ENV", value_parser = key_value)]
    secret_envs: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

/// The `--var` and `--secret-env` values, each secret read from its environment variable.
fn config_values(args: &ExecArgs) -> anyhow::Result<ConfigStore> {
    let mut secrets = std::collections::BTreeMap::new();
    for (key, var) in &args.secret_envs {
        let value = std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .with_context(|| format!("secret `{key}`: environment variable `{var}` is not set"))?;
        secrets.insert(key.clone(), Secret::new(value));
    }
    let values = ConfigValues::new(args.vars.iter().cloned().collect(), secrets)?;
    Ok(ConfigStore::new(values, Default::default()))
}

fn parse_pattern(text: &str) -> Result<HttpPattern, String> {
    text.parse()
}

pub async fn run(store: &StoreArgs, cache: &CacheArgs, args: ExecArgs) -> anyhow::Result<ExitCode> {
    serde_json::from_str::<serde_json::Value>(&args.payload)
        .with_context(|| format!("bad payload: not JSON: {}", args.payload))?;
    let config = store.config()?;
    let queue = config.as_ref().and_then(|c| c.queues.get(&args.queue));
    let (mut limits, mut grants) = match queue {
        Some(q) => (q.limits(), q.grants(&args.queue)),
        None => (
            Limits::default(),
            Grants {
                granted_by: "`spool exec` without --allow-http".to_owned(),
                http: None,
            },
        ),
    };
    if let Some(timeout) = args.timeout {
        limits.timeout = (!timeout.is_zero()).then_some(timeout);
    }
    if let Some(memory) = args.memory {
        limits.memory = memory;
    }
    limits.fuel = args.fuel;
    if !args.allow_http.is_empty() {
        let mut patterns = args.allow_http.clone();
        let http_limits = match &grants.http {
            Some(granted) => {
                patterns.extend(granted.patterns.iter().cloned());
                granted.limits
            }
            None => queue.map_or_else(HttpLimits::default, |q| q.http.limits()),
        };
        let granted_by = match queue {
            Some(_) => format!("queue `{}`'s grants and --allow-http", args.queue),
            None => "--allow-http".to_owned(),
        };
        grants.http = Some(Arc::new(HttpGrant {
            granted_by,
            patterns,
            limits: http_limits,
        }));
    }
    let sandbox = Sandbox::new(SandboxConfig {
        concurrency: 1,
        max_memory: limits.memory.max(SandboxConfig::default().max_memory),
        fuel: args.fuel.is_some(),
        ..SandboxConfig::default()
    })?;
    let sandbox = cache.apply(sandbox);
    let plugin = sandbox
        .load_plugin_with(&args.plugin, limits, grants)
        .with_context(|| format!("plugin {} refused", args.plugin.display()))?
        .with_config(config_values(&args)?);
    let job = JobInput {
        id: "exec".to_owned(),
        queue: args.queue,
        payload: args.payload.into_bytes(),
        attempt: args.attempt,
        max_attempts: args.max_attempts,
        checkpoint: args.checkpoint.map(String::into_bytes),
        ..JobInput::default()
    };
    let report = sandbox.run(&plugin, &job).await?;
    if args.json {
        print_json(&spool::json::ExecJson::from(&report))?;
    } else {
        print_report(&report)?;
    }
    Ok(if report.outcome.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_report(report: &AttemptReport) -> std::io::Result<()> {
    let t = &report.timings;
    outln!(
        "{} in {:.1} ms (instantiate {:.2} ms, run {:.1} ms) · plugin {}",
        report.outcome.name(),
        t.elapsed.as_secs_f64() * 1000.0,
        t.instantiate.as_secs_f64() * 1000.0,
        t.run.as_secs_f64() * 1000.0,
        report.digest.short(),
    );
    match &report.outcome {
        spool::Outcome::Succeeded { output } => {
            outln!("output: {}", String::from_utf8_lossy(output));
        }
        outcome => {
            if let Some(error) = outcome.error() {
                outln!("error: {error}");
            }
        }
    }
    if let Some(checkpoint) = &report.checkpoint {
        outln!("checkpoint: {}", String::from_utf8_lossy(checkpoint));
    }
    if !report.http.is_none() {
        let h = &report.http;
        outln!(
            "http: {} requests · {} bytes sent · {} bytes received · {} refused",
            h.requests,
            h.bytes_sent,
            h.bytes_received,
            h.refused
        );
    }
    if let Some(progress) = &report.progress {
        let note = progress.message.as_deref().unwrap_or("");
        outln!("progress: {}% {note}", progress.percent);
    }
    if !report.logs.is_empty() {
        outln!("log:");
    }
    for line in &report.logs {
        outln!("  {}", super::util::log_line(line));
    }
    Ok(())
}
