//! `spool.toml`: the worker's settings and one section per queue.
//!
//! ```toml
//! [worker]
//! concurrency = 64          # attempts at once across all queues
//! prefetch = "auto"         # jobs per queue held claimed beyond the free slots (or a number)
//! threads = 0               # async runtime threads; 0 = one per CPU
//! lease = "30s"             # how long a claim lasts unless renewed
//! shutdown_grace = "30s"    # how long SIGINT/SIGTERM lets runs finish
//! retention = "24h"         # succeeded and cancelled jobs are pruned after this, or per
//!                           # state: retention = { succeeded = "1h", cancelled = "7d" }
//!                           # (dead jobs are kept until `spool dlq purge`)
//! synchronous = "full"      # or "normal": see `SqliteOptions`
//! max_payload = "16MiB"     # the largest payload an enqueue takes, on either backend
//! heartbeat = "5s"          # how often the worker refreshes its entry in the worker registry
//! http = "127.0.0.1:7070"   # also serve the operator HTTP API (as `spool serve` does)
//!
//! [http]                    # the operator HTTP API's bearer tokens (`spool serve`, `[worker] http`)
//! tokens = [
//!   { role = "admin", env = "OPS_ADMIN_TOKEN" },     # read from this environment variable
//!   { role = "read", value = "s3cret-read-token" },  # or given by value
//! ]
//!
//! [queues.email]                  # a queue name: 1 to 128 ASCII letters, digits, `-`, `_`
//! plugin = "plugins/email.wasm"   # relative to this file
//! timeout = "5s"                  # default 30m; "0" = none
//! max_attempts = 3
//! concurrency = 10
//! global_concurrency = 50         # across all workers (default: no limit)
//! tenant_concurrency = 5          # per tenant, across all workers
//! rate = "100/1s"                 # attempts started per interval, across all workers
//! tenant_rate = "10/1s"           # per tenant
//! fair = true                     # share claims fairly between tenants
//! memory = "64MiB"
//! backoff = { initial = "1s", factor = 2.0, max = "10m", jitter = 0.2 }
//!
//! [queues.email.grants]           # deny by default: what the queue's plugin may reach
//! http = ["https://api.mailgun.net", "http://127.0.0.1:8025", "https://*.example.com:443"]
//!
//! [queues.email.http]             # limits per attempt on granted requests (these defaults)
//! max_concurrent = 8              # requests in flight at once
//! max_request_bytes = "10MiB"     # body of one request
//! max_response_bytes = "10MiB"    # body of one response
//! connect_timeout = "10s"         # TCP and TLS
//! first_byte_timeout = "60s"      # from sending to the response's first byte
//!
//! [schedules.nightly]             # a job at every tick
//! queue = "email"
//! cron = "0 3 * * *"              # UTC; or every = "30s" (exactly one of the two)
//! payload = { to = "ops@example.com" }   # or a JSON string; default empty
//! missed = "skip"                 # or "catch-up": ticks missed while no worker ran
//! priority = 0                    # tenant, group, max_attempts as for enqueue
//!
//! [nats]                          # optional: keep the jobs in NATS JetStream, not SQLite
//! url = "nats://127.0.0.1:4222"   # `--nats`/`SPOOL_NATS_URL` override it
//! prefix = "spool"                # streams and buckets of one installation
//! replicas = 1                    # 3 on a cluster
//! storage = "file"                # or "memory"
//! ack_wait = "30s"                # server-side redelivery backstop
//!
//! [tracing]                       # optional: export each attempt as an OpenTelemetry span
//! otlp_endpoint = "http://127.0.0.1:4318"   # an OTLP/HTTP collector; spans go to /v1/traces
//! headers = { x-api-key = "..." }            # sent with every export request
//! service_name = "spool"                     # the spans' `service.name` (this default)
//! ```
//!
//! Values and secrets plugins read through `wasi:config` are described in [`values`].
//!
//! Unknown keys and bad values are refused with the key and the line.

mod values;

pub use self::values::{SecretError, SecretSource, TenantConfig, ValuesConfig};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::queue::flow::{Flow, Rate};
use crate::queue::nats::{NatsOptions, Storage};
use crate::retry::{Backoff, RetryPolicy};
use crate::sandbox::{Grants, HttpGrant, HttpLimits, HttpPattern, Limits};
use crate::schedule::{Missed, Schedule, Spec};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not also the `source`).
        error: std::io::Error,
    },
    /// The file is not valid TOML or has a bad key or value (the message names the key and
    /// the line).
    #[error("bad config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Worker-wide settings.
    #[serde(default)]
    pub worker: WorkerSettings,
    /// One entry per queue, by name.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueConfig>,
    /// The NATS JetStream backend's settings (used when a NATS URL is given).
    #[serde(default)]
    pub nats: NatsConfig,
    /// Schedules, by name: the worker stores them in the backend when it starts.
    #[serde(default)]
    pub schedules: BTreeMap<String, ScheduleConfig>,
    /// Per-tenant overlays of queues' `wasi:config` values, by tenant.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Where the worker exports its attempt spans, if anywhere.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The Prometheus metrics' settings.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The operator HTTP server's access tokens.
    #[serde(default)]
    pub http: HttpConfig,
}

/// The `[metrics]` table: whether the Prometheus metrics at `/metrics` are kept, and what
/// they label.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Keep the metrics (default on). Off, nothing is counted and `/metrics` is empty.
    pub enabled: bool,
    /// Label the job counters and attempt histograms by tenant too (default off). Each tenant
    /// then makes its own series: switch it on only for a bounded number of tenants.
    pub tenant_label: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            tenant_label: false,
        }
    }
}

/// One `[schedules.NAME]` table: a job enqueued at every tick.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The queue, one of the `[queues]`.
    pub queue: String,
    /// A cron expression (UTC; five fields, or six with seconds first). Exactly one of
    /// `cron` and `every`.
    #[serde(default)]
    pub cron: Option<String>,
    /// A fixed interval, at least `1s`; ticks fall on multiples of it since the Unix epoch.
    #[serde(default, deserialize_with = "duration_opt")]
    pub every: Option<Duration>,
    /// The payload: a string of JSON, or a TOML table (sent as JSON). Default: empty.
    #[serde(default)]
    pub payload: Option<toml::Value>,
    /// What happens to ticks missed while no worker ran: `skip` (default) or `catch-up`.
    #[serde(default)]
    pub missed: Missed,
    /// The jobs' priority.
    #[serde(default)]
    pub priority: i32,
    /// The jobs' tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The jobs' group.
    #[serde(default)]
    pub group: Option<String>,
    /// The jobs' max attempts (default: the queue's).
    #[serde(default, deserialize_with = "positive_opt")]
    pub max_attempts: Option<u32>,
}

impl ScheduleConfig {
    /// The schedule this table describes, named `name`; the error says what is wrong.
    pub fn schedule(&self, name: &str) -> Result<Schedule, String> {
        let spec = match (&self.cron, self.every) {
            (Some(expr), None) => Spec::cron(expr).map_err(|e| e.to_string())?,
            (None, Some(every)) => Spec::every(every).map_err(|e| e.to_string())?,
            (Some(_), Some(_)) => return Err("give either `cron` or `every`, not both".into()),
            (None, None) => return Err("give `cron = \"...\"` or `every = \"...\"`".into()),
        };
        let payload = match &self.payload {
            None => Vec::new(),
            Some(toml::Value::String(json)) => {
                serde_json::from_str::<serde_json::Value>(json)
                    .map_err(|e| format!("payload is not JSON: {e}"))?;
                json.clone().into_bytes()
            }
            Some(value) => serde_json::to_vec(value)
                .map_err(|e| format!("payload cannot be sent as JSON: {e}"))?,
        };
        let schedule = Schedule {
            name: name.to_owned(),
            spec,
            queue: self.queue.clone(),
            payload,
            missed: self.missed,
            priority: self.priority,
            tenant: self.tenant.clone(),
            group: self.group.clone(),
            max_attempts: self.max_attempts,
            from_config: true,
        };
        schedule.check().map_err(|e| e.to_string())?;
        Ok(schedule)
    }
}

/// Worker-wide settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Attempts at once across all queues.
    #[serde(deserialize_with = "positive")]
    pub concurrency: u32,
    /// How long a claim lasts unless renewed; the worker renews at a third of it.
    #[serde(deserialize_with = "duration")]
    pub lease: Duration,
    /// How long shutdown lets running attempts finish before releasing them.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How long succeeded and cancelled jobs are kept: `retention = "24h"` for both, or a
    /// table (`[worker.retention]`, `retention = { succeeded = "1h", cancelled = "7d" }`).
    pub retention: Retention,
    /// SQLite durability: `full` (the default) or `normal`.
    pub synchronous: Synchronous,
    /// How often an idle worker looks for new work.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How many jobs per queue a worker may hold claimed beyond its free slots, so the next
    /// jobs are at hand when a slot frees: a number, or `"auto"` (`None`, the default) for
    /// as many as the queue's slots run in a few of the store's round-trips at the attempt
    /// duration observed, none for jobs that run longer than a tenth of the lease (see
    /// [`crate::worker::adaptive_prefetch`]). A fixed number raises throughput for short jobs;
    /// for long jobs it keeps jobs waiting on a busy worker that an idle one could run.
    #[serde(deserialize_with = "prefetch")]
    pub prefetch: Option<u32>,
    /// Threads of the worker process's async runtime, which runs the attempts and talks to
    /// the store; 0 (the default) means one per CPU. Several worker processes on one machine
    /// run best with the CPUs shared out between them (one thread each for as many processes
    /// as CPUs): threads of different processes competing for the same CPUs cost more in
    /// wake-ups than they gain.
    pub threads: u32,
    /// The largest payload an enqueue takes (`spool enqueue`, a plugin's children, a
    /// schedule), on either backend; 16 MiB by default. Every process that enqueues reads it.
    #[serde(deserialize_with = "size")]
    pub max_payload: usize,
    /// How often the worker refreshes its entry in the store's worker registry (`spool
    /// workers`); it counts as gone once three have been missed. 5 s by default; from 100 ms
    /// to 60 s.
    #[serde(deserialize_with = "heartbeat")]
    pub heartbeat: Duration,
    /// Serve the operator HTTP API (the one `spool serve` serves) from the worker process on
    /// this address, e.g. `127.0.0.1:7070`; none by default.
    pub http: Option<std::net::SocketAddr>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            concurrency: 64,
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            retention: Retention::default(),
            synchronous: Synchronous::Full,
            poll_interval: Duration::from_millis(50),
            prefetch: None,
            threads: 0,
            max_payload: crate::queue::check::DEFAULT_MAX_PAYLOAD,
            heartbeat: Duration::from_secs(5),
            http: None,
        }
    }
}

/// How long finished jobs are kept, per state, before the sweeper prunes them. Dead jobs have
/// no retention: they are kept until `spool dlq purge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded jobs; 24 h by default.
    pub succeeded: Duration,
    /// Cancelled jobs; 24 h by default.
    pub cancelled: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::all(Duration::from_secs(24 * 3600))
    }
}

impl Retention {
    /// The same retention for every finished state that has one.
    pub fn all(keep: Duration) -> Retention {
        Retention {
            succeeded: keep,
            cancelled: keep,
        }
    }

    /// What to prune at `now`.
    pub fn prune(&self, now: crate::queue::Timestamp) -> crate::queue::Prune {
        let before = |keep: Duration| {
            now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
        };
        crate::queue::Prune {
            succeeded: Some(before(self.succeeded)),
            cancelled: Some(before(self.cancelled)),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "succeeded {}, cancelled {}, dead until purged",
            humantime::format_duration(self.succeeded),
            humantime::format_duration(self.cancelled)
        )
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Retention;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a duration (\"24h\") or a table of durations by state (succeeded, cancelled)",
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Retention, E> {
                crate::units::parse_duration(text)
                    .map(Retention::all)
                    .map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Retention, A::Error> {
                use serde::de::Error as _;
                let mut retention = Retention::default();
                while let Some(state) = map.next_key::<String>()? {
                    let text: String = map.next_value()?;
                    let keep = crate::units::parse_duration(&text)
                        .map_err(|e| A::Error::custom(format!("retention.{state}: {e}")))?;
                    match state.as_str() {
                        "succeeded" => retention.succeeded = keep,
                        "cancelled" => retention.cancelled = keep,
                        "dead" => {
                            return Err(A::Error::custom(
                                "retention.dead: dead jobs cannot be given a retention; they are kept until `spool dlq purge`",
                            ));
                        }
                        other => {
                            return Err(A::Error::custom(format!(
                                "retention.{other}: no retention for `{other}`; finished states with one are `succeeded` and `cancelled`"
                            )));
                        }
                    }
                }
                Ok(retention)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// SQLite's `synchronous` setting as the configuration names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit reaches the disk before it returns.
    #[default]
    Full,
    /// Commits may be lost on power loss or an OS crash (never on a process crash).
    Normal,
}

/// The `[nats]` table: where the NATS JetStream backend is and how it lays itself out. Every
/// process sharing one installation (workers, producers, `spool` commands) must agree on
/// `prefix`, `replicas`, `storage` and `ack_wait`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// The server (`nats://host:4222`, several comma-separated for a cluster). When set, the
    /// jobs are kept in NATS rather than SQLite unless a command is given `--db`.
    pub url: Option<String>,
    /// The prefix of every subject, stream and bucket name (default `spool`).
    #[serde(deserialize_with = "prefix")]
    pub prefix: String,
    /// Replicas of every stream and bucket: 1 (the default) to 5.
    #[serde(deserialize_with = "replicas")]
    pub replicas: usize,
    /// `file` (the default) or `memory`.
    pub storage: Storage,
    /// How long the server waits for a silent worker before it redelivers a job's message.
    #[serde(alias = "ack-wait", deserialize_with = "duration")]
    pub ack_wait: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        let o = NatsOptions::default();
        NatsConfig {
            url: None,
            prefix: o.prefix,
            replicas: o.replicas,
            storage: o.storage,
            ack_wait: o.ack_wait,
        }
    }
}

impl NatsConfig {
    /// The backend options these settings stand for (the rest at their defaults).
    pub fn options(&self) -> NatsOptions {
        NatsOptions {
            prefix: self.prefix.clone(),
            replicas: self.replicas,
            storage: self.storage,
            ack_wait: self.ack_wait,
            ..NatsOptions::default()
        }
    }
}

/// The `[tracing]` table: OpenTelemetry export of the worker's attempt spans (see
/// [`crate::trace`]). Without `otlp_endpoint` nothing is exported.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// An OTLP/HTTP collector's base URL (`http://127.0.0.1:4318`); spans are posted as JSON to
    /// its `/v1/traces`.
    #[serde(deserialize_with = "otlp_endpoint")]
    pub otlp_endpoint: Option<crate::trace::Endpoint>,
    /// Headers sent with every export request (an API key, say).
    #[serde(deserialize_with = "otlp_headers")]
    pub headers: BTreeMap<String, String>,
    /// The spans' `service.name` (default `spool`).
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            headers: BTreeMap::new(),
            service_name: "spool".to_owned(),
        }
    }
}

impl TracingConfig {
    /// The exporter these settings ask for; `None` without an endpoint.
    pub fn otlp(&self) -> Option<crate::trace::OtlpOptions> {
        Some(crate::trace::OtlpOptions {
            endpoint: self.otlp_endpoint.clone()?,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            service_name: self.service_name.clone(),
        })
    }
}

fn otlp_endpoint<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<crate::trace::Endpoint>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn otlp_headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let headers = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &headers {
        crate::trace::header(name, value).map_err(serde::de::Error::custom)?;
    }
    Ok(headers)
}

/// One queue's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The plugin component; a relative path is relative to the config file.
    pub plugin: PathBuf,
    /// Abort an attempt after this long; `"0"` = no timeout. Default 30 minutes.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Attempts allowed per job unless the job says otherwise. Default 3.
    #[serde(default = "default_max_attempts", deserialize_with = "positive")]
    pub max_attempts: u32,
    /// How many times a job may be started, delays included. Default 20.
    #[serde(default = "default_max_started", deserialize_with = "positive")]
    pub max_started: u32,
    /// Attempts of this queue at once. Default 10.
    #[serde(default = "default_concurrency", deserialize_with = "positive")]
    pub concurrency: u32,
    /// Memory cap per attempt. Default 128 MiB; at least
    /// [`MIN_MEMORY`](crate::sandbox::MIN_MEMORY), or the plugin is refused at start.
    #[serde(default = "default_memory", deserialize_with = "size")]
    pub memory: usize,
    /// The largest checkpoint an attempt may save. Default 1 MiB.
    #[serde(default = "default_max_checkpoint", deserialize_with = "size")]
    pub max_checkpoint: usize,
    /// The most bytes of step results one attempt may store, its steps together. Default
    /// 16 MiB.
    #[serde(default = "default_max_step_output", deserialize_with = "size")]
    pub max_step_output: usize,
    /// The most payload bytes of the children one attempt may enqueue, together. Default
    /// 16 MiB.
    #[serde(default = "default_max_child_payload", deserialize_with = "size")]
    pub max_child_payload: usize,
    /// Backoff between failed attempts.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Attempts of this queue running at once across all workers (`concurrency` is this
    /// worker's own share). Default: no limit.
    #[serde(default, deserialize_with = "positive_opt")]
    pub global_concurrency: Option<u32>,
    /// Attempts of one tenant's jobs running at once, across all workers. Default: no limit.
    #[serde(default, deserialize_with = "positive_opt")]
    pub tenant_concurrency: Option<u32>,
    /// Attempts started per interval across all workers, like `"100/1s"`. Default: no limit.
    #[serde(default, deserialize_with = "rate")]
    pub rate: Option<Rate>,
    /// Attempts of one tenant's jobs started per interval, across all workers.
    #[serde(default, deserialize_with = "rate")]
    pub tenant_rate: Option<Rate>,
    /// Share claims fairly between tenants: the tenants with the fewest attempts running are
    /// served first, so one tenant's backlog never starves another's jobs. Default false.
    #[serde(default)]
    pub fair: bool,
    /// Values the plugin reads through `wasi:config` (`[queues.Q.config]`), by key.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the plugin reads through `wasi:config` (`[queues.Q.secrets]`), by key: where
    /// each one's value is read from when the worker starts.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Each tenant's overlay of this queue's values (`[tenants.T.queues.Q]`, copied here by
    /// [`Config::parse`]), by tenant.
    #[serde(skip)]
    pub tenant_values: BTreeMap<String, ValuesConfig>,
    /// What the queue's plugin may reach (`[queues.<q>.grants]`). Default: nothing.
    #[serde(default)]
    pub grants: GrantsConfig,
    /// Limits on the granted HTTP requests of each attempt (`[queues.<q>.http]`).
    #[serde(default)]
    pub http: HttpLimitsConfig,
}

/// `[queues.<q>.grants]`: capabilities granted to the queue's plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// Outbound HTTP destinations, `scheme://host[:port]` (`*.` subdomain wildcards, `*`
    /// for any port). Empty: no `wasi:http`.
    #[serde(default)]
    pub http: Vec<HttpPattern>,
}

/// `[queues.<q>.http]`: limits per attempt on outbound HTTP, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimitsConfig {
    /// Requests in flight at once.
    #[serde(deserialize_with = "positive")]
    pub max_concurrent: u32,
    /// The largest request body.
    #[serde(deserialize_with = "size")]
    pub max_request_bytes: usize,
    /// The largest response body.
    #[serde(deserialize_with = "size")]
    pub max_response_bytes: usize,
    /// How long connecting (TCP and TLS) may take.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// How long the response's first byte may take.
    #[serde(deserialize_with = "duration")]
    pub first_byte_timeout: Duration,
}

impl Default for HttpLimitsConfig {
    fn default() -> Self {
        let d = HttpLimits::default();
        HttpLimitsConfig {
            max_concurrent: d.max_concurrent,
            max_request_bytes: usize::try_from(d.max_request_bytes).unwrap_or(usize::MAX),
            max_response_bytes: usize::try_from(d.max_response_bytes).unwrap_or(usize::MAX),
            connect_timeout: d.connect_timeout,
            first_byte_timeout: d.first_byte_timeout,
        }
    }
}

impl HttpLimitsConfig {
    /// The limits the sandbox applies.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_concurrent: self.max_concurrent,
            max_request_bytes: self.max_request_bytes as u64,
            max_response_bytes: self.max_response_bytes as u64,
            connect_timeout: self.connect_timeout,
            first_byte_timeout: self.first_byte_timeout,
        }
    }
}

/// Backoff settings as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// The wait after the first failure.
    #[serde(deserialize_with = "duration")]
    pub initial: Duration,
    /// The multiplier per further failure (at least 1).
    pub factor: f64,
    /// The longest wait.
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
    /// Spread, as a fraction (0 to 1).
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        let b = Backoff::default();
        BackoffConfig {
            initial: b.initial,
            factor: b.factor,
            max: b.max,
            jitter: b.jitter,
        }
    }
}

impl QueueConfig {
    /// A queue running `plugin` with every other setting at its default.
    pub fn new(plugin: impl Into<PathBuf>) -> Self {
        QueueConfig {
            plugin: plugin.into(),
            timeout: default_timeout(),
            max_attempts: default_max_attempts(),
            max_started: default_max_started(),
            concurrency: default_concurrency(),
            memory: default_memory(),
            max_checkpoint: default_max_checkpoint(),
            max_step_output: default_max_step_output(),
            max_child_payload: default_max_child_payload(),
            backoff: BackoffConfig::default(),
            global_concurrency: None,
            tenant_concurrency: None,
            rate: None,
            tenant_rate: None,
            fair: false,
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
            tenant_values: BTreeMap::new(),
            grants: GrantsConfig::default(),
            http: HttpLimitsConfig::default(),
        }
    }

    /// What the queue named `name` grants its plugin.
    pub fn grants(&self, name: &str) -> Grants {
        let granted_by = format!("queue `{name}`");
        Grants {
            http: (!self.grants.http.is_empty()).then(|| {
                std::sync::Arc::new(HttpGrant {
                    granted_by: format!("{granted_by}'s grants"),
                    patterns: self.grants.http.clone(),
                    limits: self.http.limits(),
                })
            }),
            granted_by,
        }
    }

    /// The queue's limits across all workers, as claims carry them.
    pub fn flow(&self) -> Flow {
        Flow {
            concurrency: self.global_concurrency,
            tenant_concurrency: self.tenant_concurrency,
            rate: self.rate,
            tenant_rate: self.tenant_rate,
            fair: self.fair,
        }
    }

    /// The sandbox limits for this queue's attempts.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: (!self.timeout.is_zero()).then_some(self.timeout),
            memory: self.memory,
            max_checkpoint: self.max_checkpoint,
            max_step_output: self.max_step_output,
            max_child_payload: self.max_child_payload,
            ..Limits::default()
        }
    }

    /// The retry policy for this queue's jobs (`max_attempts` is the queue default; a job's
    /// own overrides it).
    pub fn retry_policy(&self, job_max_attempts: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: job_max_attempts.unwrap_or(self.max_attempts),
            max_started: self.max_started,
            backoff: Backoff {
                initial: self.backoff.initial,
                factor: self.backoff.factor,
                max: self.backoff.max,
                jitter: self.backoff.jitter,
            },
        }
    }
}

impl Config {
    /// Read and check `path`. Relative plugin paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for queue in config.queues.values_mut() {
            if queue.plugin.is_relative() {
                queue.plugin = base.join(&queue.plugin);
            }
            for source in queue.secrets.values_mut() {
                source.resolve_against(base);
            }
            for values in queue.tenant_values.values_mut() {
                values.resolve_paths(base);
            }
        }
        Ok(config)
    }

    /// Parse and check configuration text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        for (name, queue) in &config.queues {
            if let Some(why) = crate::queue::check::bad_queue_name(name) {
                return Err(format!("queues.{name}: {why}"));
            }
            let b = &queue.backoff;
            if b.factor.is_nan() || b.factor < 1.0 {
                return Err(format!(
                    "queues.{name}.backoff.factor must be at least 1, got {}",
                    b.factor
                ));
            }
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err(format!(
                    "queues.{name}.backoff.jitter must be between 0 and 1, got {}",
                    b.jitter
                ));
            }
        }
        for (name, queue) in &config.queues {
            let own = ValuesConfig {
                config: queue.config.clone(),
                secrets: queue.secrets.clone(),
            };
            if let Some(key) = own.duplicate() {
                return Err(format!(
                    "queues.{name}: `{key}` is both a config value and a secret: config and secrets share one namespace"
                ));
            }
        }
        for (tenant, table) in &config.tenants {
            for (name, values) in &table.queues {
                let scope = format!("tenants.{tenant}.queues.{name}");
                let Some(queue) = config.queues.get_mut(name) else {
                    return Err(format!(
                        "{scope}: unknown queue `{name}` (add a [queues.{name}] section)"
                    ));
                };
                if let Some(key) = values.duplicate() {
                    return Err(format!(
                        "{scope}: `{key}` is both a config value and a secret: config and secrets share one namespace"
                    ));
                }
                queue.tenant_values.insert(tenant.clone(), values.clone());
            }
        }
        config.http.check()?;
        for (name, table) in &config.schedules {
            table
                .schedule(name)
                .map_err(|e| format!("schedules.{name}: {e}"))?;
            if !config.queues.contains_key(&table.queue) {
                return Err(format!(
                    "schedules.{name}: unknown queue `{}` (add a [queues.{}] section)",
                    table.queue, table.queue
                ));
            }
        }
        Ok(config)
    }

    /// The configured schedules (checked by [`Config::parse`]).
    pub fn schedules(&self) -> Result<Vec<Schedule>, String> {
        self.schedules
            .iter()
            .map(|(name, table)| {
                table
                    .schedule(name)
                    .map_err(|e| format!("schedules.{name}: {e}"))
            })
            .collect()
    }
}

/// A queue the configuration does not have, refused by an enqueue (`spool enqueue`, the HTTP
/// API) unless forced: a job on a queue no worker serves would wait for ever.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown queue `{queue}`: {}", known_queues(.known))]
pub struct UnknownQueue {
    /// The queue asked for.
    pub queue: String,
    /// The queues the configuration has.
    pub known: Vec<String>,
}

fn known_queues(known: &[String]) -> String {
    if known.is_empty() {
        "the config has no [queues]".to_owned()
    } else {
        format!("the config has {}", known.join(", "))
    }
}

impl Config {
    /// Refuse `queue` unless the configuration has it.
    pub fn known_queue(&self, queue: &str) -> Result<(), UnknownQueue> {
        if self.queues.contains_key(queue) {
            return Ok(());
        }
        Err(UnknownQueue {
            queue: queue.to_owned(),
            known: self.queues.keys().cloned().collect(),
        })
    }
}

/// The `[http]` table: who may use the operator HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Bearer tokens, each with its role. With none (and no `SPOOL_ADMIN_TOKEN` or
    /// `SPOOL_READ_TOKEN` in the environment), the server binds to loopback only and every
    /// request is admin.
    pub tokens: Vec<TokenConfig>,
}

impl HttpConfig {
    fn check(&self) -> Result<(), String> {
        for (i, token) in self.tokens.iter().enumerate() {
            match (&token.value, &token.env) {
                (Some(_), Some(_)) => {
                    return Err(format!("http.tokens[{i}]: give `value` or `env`, not both"));
                }
                (None, None) => {
                    return Err(format!(
                        "http.tokens[{i}]: give the token as `value = \"...\"` or name its environment variable with `env = \"NAME\"`"
                    ));
                }
                (Some(value), None) if value.is_empty() => {
                    return Err(format!("http.tokens[{i}]: the token is empty"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One bearer token of the HTTP API: given by value, or by the name of the environment
/// variable that holds it (read when the server starts).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// What the token may do.
    pub role: Role,
    /// The token itself.
    pub value: Option<String>,
    /// The environment variable that holds the token.
    pub env: Option<String>,
}

// The token is a secret: never printed, not even in a debug dump of the config.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("role", &self.role)
            .field("value", &self.value.as_ref().map(|_| "***"))
            .field("env", &self.env)
            .finish()
    }
}

/// What an HTTP API token may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Deserialize,
    serde::Serialize,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Read everything: jobs, queues, the dead-letter queue, schedules, events, metrics.
    Read,
    /// Read, and change: enqueue, cancel, replay, purge, schedules.
    Admin,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max_attempts() -> u32 {
    3
}
fn default_max_started() -> u32 {
    20
}
fn default_concurrency() -> u32 {
    10
}
fn default_max_checkpoint() -> usize {
    Limits::default().max_checkpoint
}

fn default_max_step_output() -> usize {
    Limits::default().max_step_output
}

fn default_max_child_payload() -> usize {
    Limits::default().max_child_payload
}

fn default_memory() -> usize {
    128 << 20
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    crate::units::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A heartbeat interval: at least 100 ms, and at most a third of the longest worker TTL.
fn heartbeat<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let interval = duration(d)?;
    let max = crate::queue::MAX_WORKER_TTL / crate::queue::WORKER_TTL_BEATS;
    if interval < Duration::from_millis(100) || interval > max {
        return Err(serde::de::Error::custom(format!(
            "heartbeat must be from 100ms to {}, got {}",
            humantime::format_duration(max),
            humantime::format_duration(interval)
        )));
    }
    Ok(interval)
}

fn duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// `prefetch`: a number of jobs, or `"auto"`.
fn prefetch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Prefetch {
        Fixed(u32),
        Word(String),
    }
    match Prefetch::deserialize(d)? {
        Prefetch::Fixed(n) => Ok(Some(n)),
        Prefetch::Word(word) if word == "auto" => Ok(None),
        Prefetch::Word(word) => Err(serde::de::Error::custom(format!(
            "bad prefetch `{word}`: use a number of jobs or \"auto\""
        ))),
    }
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let text = String::deserialize(d)?;
    crate::units::parse_size(&text).map_err(serde::de::Error::custom)
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(serde::de::Error::custom(format!(
            "bad prefix `{text}`: use letters, digits, `-` and `_`"
        )));
    }
    Ok(text)
}

fn replicas<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|n| (1..=5).contains(n))
        .ok_or_else(|| serde::de::Error::custom(format!("must be between 1 and 5, got {n}")))
}

fn positive_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    positive(d).map(Some)
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be a positive integer, got {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_reads() {
        let config = Config::parse(
            r#"
            [worker]
            concurrency = 8
            lease = "10s"
            [queues.email]
            plugin = "email.wasm"
            timeout = "5s"
            max_attempts = 3
            concurrency = 2
            memory = "64MiB"
            backoff = { initial = "250ms", factor = 3.0 }
            "#,
        )
        .unwrap();
        assert_eq!(config.worker.concurrency, 8);
        let email = &config.queues["email"];
        assert_eq!(email.timeout, Duration::from_secs(5));
        assert_eq!(email.memory, 64 << 20);
        assert_eq!(email.backoff.initial, Duration::from_millis(250));
        assert_eq!(email.backoff.max, Duration::from_secs(600));
    }

    #[test]
    fn retention_reads_as_one_duration_or_per_state() {
        let one = Config::parse("[worker]\nretention = \"2h\"").unwrap();
        assert_eq!(
            one.worker.retention,
            Retention::all(Duration::from_secs(7200))
        );
        let inline =
            Config::parse("[worker]\nretention = { succeeded = \"1h\", cancelled = \"7d\" }")
                .unwrap();
        assert_eq!(inline.worker.retention.succeeded, Duration::from_secs(3600));
        assert_eq!(
            inline.worker.retention.cancelled,
            Duration::from_secs(7 * 86_400)
        );
        let table = Config::parse("[worker.retention]\ncancelled = \"10m\"").unwrap();
        assert_eq!(
            table.worker.retention.succeeded,
            Duration::from_secs(86_400)
        );
        assert_eq!(table.worker.retention.cancelled, Duration::from_secs(600));
        let prune = table.worker.retention.prune(1_000_000_000);
        assert_eq!(prune.succeeded, Some(1_000_000_000 - 86_400_000));
        assert_eq!(prune.cancelled, Some(1_000_000_000 - 600_000));
    }

    #[test]
    fn dead_jobs_cannot_be_given_a_retention() {
        let err = Config::parse("[worker.retention]\ndead = \"30d\"").unwrap_err();
        assert!(
            err.contains("dead jobs cannot be given a retention"),
            "{err}"
        );
        assert!(err.contains("spool dlq purge"), "{err}");
        let err = Config::parse("[worker]\nretention = { running = \"1h\" }").unwrap_err();
        assert!(err.contains("no retention for `running`"), "{err}");
        let err = Config::parse("[worker]\nretention = { succeeded = \"soon\" }").unwrap_err();
        assert!(err.contains("retention.succeeded"), "{err}");
    }

    #[test]
    fn http_grants_and_limits_read_into_the_queue_grants() {
        let config = Config::parse(
            "[queues.email]\nplugin = \"e.wasm\"\n\
             [queues.email.grants]\nhttp = [\"https://api.mailgun.net\", \"http://127.0.0.1:8025\"]\n\
             [queues.email.http]\nmax_concurrent = 2\nmax_response_bytes = \"1KiB\"\n\
             connect_timeout = \"2s\"\n",
        )
        .unwrap();
        let grants = config.queues["email"].grants("email");
        let http = grants.http.unwrap();
        assert_eq!(http.patterns.len(), 2);
        assert!(http.patterns[1].matches("http", "127.0.0.1", 8025));
        assert_eq!(http.granted_by, "queue `email`'s grants");
        assert_eq!(http.limits.max_concurrent, 2);
        assert_eq!(http.limits.max_response_bytes, 1024);
        assert_eq!(http.limits.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            http.limits.max_request_bytes,
            HttpLimits::default().max_request_bytes
        );

        let none = Config::parse("[queues.email]\nplugin = \"e.wasm\"\n").unwrap();
        assert!(none.queues["email"].grants("email").http.is_none());
    }

    #[test]
    fn a_bad_http_grant_is_refused_naming_it_and_its_line() {
        let err = Config::parse(
            "[queues.email]\nplugin = \"e.wasm\"\n[queues.email.grants]\n\
             http = [\"https://ok.example.com\", \"ftp://files.example.com\"]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("bad http grant `ftp://files.example.com`"),
            "{err}"
        );
        assert!(err.contains("line 4"), "{err}");
        let err = Config::parse(
            "[queues.email]\nplugin = \"e.wasm\"\n[queues.email.grants]\nsmtp = [\"x\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("smtp"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key_and_line() {
        let err =
            Config::parse("[queues.email]\nplugin = \"e.wasm\"\nconcurency = 2\n").unwrap_err();
        assert!(err.contains("concurency"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn queue_names_follow_the_backends_rule_and_max_payload_reads_as_a_size() {
        let err = Config::parse("[queues.\"bad queue/name\"]\nplugin = \"e.wasm\"\n").unwrap_err();
        assert!(
            err.contains("queues.bad queue/name: bad queue name"),
            "{err}"
        );
        let config = Config::parse(
            "[worker]\nmax_payload = \"32MiB\"\n[queues.e-mail_2]\nplugin = \"e.wasm\"\n",
        )
        .unwrap();
        assert_eq!(config.worker.max_payload, 32 << 20);
        assert!(config.queues.contains_key("e-mail_2"));
        let defaults = Config::parse("").unwrap();
        assert_eq!(defaults.worker.max_payload, 16 << 20);
    }

    #[test]
    fn zero_or_negative_concurrency_is_refused() {
        for bad in ["0", "-3"] {
            let err = Config::parse(&format!(
                "[queues.email]\nplugin = \"e.wasm\"\nconcurrency = {bad}\n"
            ))
            .unwrap_err();
            assert!(err.contains("positive integer"), "{err}");
            assert!(err.contains("line 3"), "{err}");
        }
    }

    #[test]
    fn bad_durations_are_refused_with_the_line() {
        let err =
            Config::parse("[queues.email]\nplugin = \"e.wasm\"\ntimeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("bad duration `soon`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn the_nats_table_reads_into_backend_options() {
        let config = Config::parse(
            r#"
            [nats]
            url = "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
            prefix = "billing-prod"
            replicas = 3
            storage = "memory"
            ack_wait = "45s"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.nats.url.as_deref(),
            Some("nats://10.0.0.1:4222,nats://10.0.0.2:4222")
        );
        let options = config.nats.options();
        assert_eq!(options.prefix, "billing-prod");
        assert_eq!(options.replicas, 3);
        assert_eq!(options.storage, Storage::Memory);
        assert_eq!(options.ack_wait, Duration::from_secs(45));
        assert_eq!(
            options.duplicate_window,
            NatsOptions::default().duplicate_window
        );
    }

    #[test]
    fn a_missing_or_partial_nats_table_takes_the_backend_defaults() {
        let none = Config::parse("").unwrap();
        assert_eq!(none.nats.url, None);
        assert_eq!(none.nats.options(), NatsOptions::default());

        let partial = Config::parse("[nats]\nreplicas = 3\n").unwrap();
        assert_eq!(partial.nats.url, None);
        assert_eq!(
            partial.nats.options(),
            NatsOptions {
                replicas: 3,
                ..NatsOptions::default()
            }
        );
    }

    #[test]
    fn ack_wait_may_be_spelled_with_a_dash() {
        let config = Config::parse("[nats]\nack-wait = \"1m\"\n").unwrap();
        assert_eq!(config.nats.ack_wait, Duration::from_secs(60));
    }

    #[test]
    fn bad_nats_values_are_refused_with_the_key_and_line() {
        let cases = [
            ("replicas = 0", "between 1 and 5"),
            ("replicas = 7", "between 1 and 5"),
            ("storage = \"disk\"", "disk"),
            ("prefix = \"spool.prod\"", "bad prefix `spool.prod`"),
            ("prefix = \"\"", "bad prefix"),
            ("ack_wait = \"soon\"", "bad duration `soon`"),
            ("urls = \"nats://x\"", "urls"),
        ];
        for (line, expected) in cases {
            let err = Config::parse(&format!("[nats]\n{line}\n")).unwrap_err();
            assert!(err.contains(expected), "{line}: {err}");
            assert!(err.contains("line 2"), "{line}: {err}");
        }
    }

    #[test]
    fn schedules_read_with_json_or_table_payloads() {
        let config = Config::parse(
            r#"
            [queues.email]
            plugin = "e.wasm"
            [schedules.nightly]
            queue = "email"
            cron = "0 3 * * *"
            payload = { to = "ops", n = 2 }
            missed = "catch-up"
            [schedules.pulse]
            queue = "email"
            every = "30s"
            payload = '{"ping": true}'
            max_attempts = 1
            "#,
        )
        .unwrap();
        let schedules = config.schedules().unwrap();
        assert_eq!(schedules[0].name, "nightly");
        assert_eq!(schedules[0].missed, Missed::CatchUp);
        let payload: serde_json::Value = serde_json::from_slice(&schedules[0].payload).unwrap();
        assert_eq!(payload, serde_json::json!({"to": "ops", "n": 2}));
        assert_eq!(schedules[1].spec, Spec::EveryMs(30_000));
        assert_eq!(schedules[1].payload, br#"{"ping": true}"#);
        assert_eq!(schedules[1].max_attempts, Some(1));
    }

    #[test]
    fn bad_schedules_are_refused_naming_the_schedule_and_the_problem() {
        let cases = [
            (
                "queue = \"email\"\ncron = \"61 * * * *\"",
                "bad cron expression `61 * * * *`",
            ),
            ("queue = \"sms\"\nevery = \"1m\"", "unknown queue `sms`"),
            ("queue = \"email\"", "give `cron"),
            (
                "queue = \"email\"\ncron = \"* * * * *\"\nevery = \"1m\"",
                "not both",
            ),
            (
                "queue = \"email\"\nevery = \"100ms\"",
                "every second at most",
            ),
            (
                "queue = \"email\"\nevery = \"1m\"\npayload = \"{oops\"",
                "not JSON",
            ),
            (
                "queue = \"email\"\nevery = \"1m\"\nmissed = \"later\"",
                "later",
            ),
        ];
        for (body, expected) in cases {
            let text = format!("[queues.email]\nplugin = \"e.wasm\"\n[schedules.tick]\n{body}\n");
            let err = Config::parse(&text).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
            if !expected.contains("later") {
                assert!(err.contains("schedules.tick"), "{body}: {err}");
            }
        }
    }

    #[test]
    fn a_timeout_of_zero_means_none() {
        let config =
            Config::parse("[queues.email]\nplugin = \"e.wasm\"\ntimeout = \"0\"\n").unwrap();
        assert_eq!(config.queues["email"].limits().timeout, None);
    }

    #[test]
    fn the_heartbeat_interval_reads_within_its_bounds() {
        assert_eq!(
            Config::parse("").unwrap().worker.heartbeat,
            Duration::from_secs(5)
        );
        let fast = Config::parse("[worker]\nheartbeat = \"200ms\"").unwrap();
        assert_eq!(fast.worker.heartbeat, Duration::from_millis(200));
        for bad in ["50ms", "61s", "0"] {
            let err = Config::parse(&format!("[worker]\nheartbeat = \"{bad}\"")).unwrap_err();
            assert!(
                err.to_string()
                    .contains("heartbeat must be from 100ms to 1m"),
                "{bad}: {err}"
            );
        }
    }
}
