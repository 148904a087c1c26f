//! Where a command finds the jobs: a SQLite file or a NATS server, chosen by the global
//! `--db`, `--nats` and `--config` flags.
//!
//! `--nats URL` (or `SPOOL_NATS_URL`) picks NATS, `--db PATH` (or `SPOOL_DB`) picks SQLite;
//! with neither, the config's `[nats] url` picks NATS, and otherwise it is `spool.db`. The
//! config's `[nats]` table also gives the NATS layout (prefix, replicas, storage, ack wait),
//! which must be the same for every process of one installation, so every command reads it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use spool::config::Config;
use spool::queue::AnyBackend;
use spool::queue::check::DEFAULT_MAX_PAYLOAD;
use spool::queue::nats::{NatsBackend, NatsOptions, Storage};
use spool::queue::sqlite::{SqliteBackend, SqliteOptions, Synchronous};

/// The global flags that say where the jobs are kept.
#[derive(clap::Args)]
pub struct StoreArgs {
    // The variables are read by `read_env`, not by clap: clap would count a variable's value
    // as typed, showing it in usage lines and refusing `--nats` when `SPOOL_DB` is set.
    /// The SQLite database (default `spool.db`; `spool-demo.db` for `spool demo`)
    /// [env: SPOOL_DB].
    #[arg(long, global = true, help_heading = super::GLOBAL)]
    db: Option<PathBuf>,
    /// Keep the jobs in NATS JetStream on this server instead of SQLite (`nats://host:4222`,
    /// comma-separated for a cluster); overrides the config's `[nats] url` [env:
    /// SPOOL_NATS_URL].
    #[arg(
        long,
        global = true,
        value_name = "URL",
        conflicts_with = "db",
        help_heading = super::GLOBAL
    )]
    nats: Option<String>,
    /// The configuration file (default `spool.toml`): the worker's settings and queues, and
    /// the `[nats]` table every command reads.
    #[arg(long, global = true, value_name = "PATH", help_heading = super::GLOBAL)]
    config: Option<PathBuf>,
}

const DEFAULT_CONFIG: &str = "spool.toml";

impl StoreArgs {
    /// Take `--db` or `--nats` from `SPOOL_DB` or `SPOOL_NATS_URL` when neither flag was
    /// typed: a typed flag wins over both variables. Both variables set (and no flag) is an
    /// error; an empty one counts as unset.
    pub fn read_env(&mut self) -> anyhow::Result<()> {
        if self.db.is_some() || self.nats.is_some() {
            return Ok(());
        }
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
        match (var("SPOOL_DB"), var("SPOOL_NATS_URL")) {
            (Some(_), Some(_)) => anyhow::bail!(
                "SPOOL_DB and SPOOL_NATS_URL are both set: unset one, or pass --db or --nats"
            ),
            (db, nats) => {
                self.db = db.map(PathBuf::from);
                self.nats = nats
                    .map(|url| url.into_string())
                    .transpose()
                    .map_err(|_| anyhow::anyhow!("SPOOL_NATS_URL is not UTF-8"))?;
            }
        }
        Ok(())
    }

    /// The configuration file: `--config`, or `spool.toml`.
    pub fn config_path(&self) -> &Path {
        self.config.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG))
    }

    /// The configuration, if there is one: a file named by `--config` must exist; the default
    /// `spool.toml` is read only when it does.
    pub fn config(&self) -> anyhow::Result<Option<Config>> {
        let path = self.config_path();
        if self.config.is_none() && !path.exists() {
            return Ok(None);
        }
        Ok(Some(Config::load(path)?))
    }

    /// The store for a command that has read `config` (if any).
    pub fn store(&self, config: Option<&Config>) -> Store {
        let options = config.map_or_else(NatsOptions::default, |c| c.nats.options());
        if let Some(url) = &self.nats {
            return Store::Nats {
                url: url.clone(),
                options,
            };
        }
        if let Some(db) = &self.db {
            return Store::Sqlite(db.clone());
        }
        match config.and_then(|c| c.nats.url.clone()) {
            Some(url) => Store::Nats { url, options },
            None => Store::Sqlite(PathBuf::from("spool.db")),
        }
    }

    /// Open the store a command that writes uses, creating it when it does not exist yet,
    /// with the config's `[worker] max_payload` (if any).
    pub async fn open(&self, synchronous: Synchronous) -> anyhow::Result<AnyBackend> {
        let config = self.config()?;
        let max_payload = config
            .as_ref()
            .map_or(DEFAULT_MAX_PAYLOAD, |c| c.worker.max_payload);
        self.store(config.as_ref())
            .open_with(synchronous, max_payload)
            .await
    }

    /// Open the store a command that only reads uses (see [`Store::open_read_only`]).
    pub async fn open_read_only(&self) -> anyhow::Result<AnyBackend> {
        self.store(self.config()?.as_ref()).open_read_only().await
    }

    /// Open the store a reading command uses (see [`Store::open_existing`]).
    pub async fn open_existing(&self) -> anyhow::Result<AnyBackend> {
        self.store(self.config()?.as_ref()).open_existing().await
    }

    /// The store for `spool demo`: NATS only when `--nats` says so (with the config's
    /// `[nats]` layout, so the commands the demo suggests reach the same streams), else its
    /// own SQLite file.
    pub fn demo_store(&self) -> anyhow::Result<Store> {
        Ok(match &self.nats {
            Some(url) => Store::Nats {
                url: url.clone(),
                options: self
                    .config()?
                    .map_or_else(NatsOptions::default, |c| c.nats.options()),
            },
            None => Store::Sqlite(
                self.db
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("spool-demo.db")),
            ),
        })
    }
}

/// Where the jobs are kept. Displays as `sqlite PATH` or `nats URL` (without credentials).
pub enum Store {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A NATS server.
    Nats {
        /// The server URL(s), as given.
        url: String,
        /// The layout on the server.
        options: NatsOptions,
    },
}

impl Store {
    /// Open the store, creating the SQLite file (with `synchronous`) or the NATS streams when
    /// they do not exist yet.
    pub async fn open(&self, synchronous: Synchronous) -> anyhow::Result<AnyBackend> {
        self.open_with(synchronous, DEFAULT_MAX_PAYLOAD).await
    }

    /// [`Store::open`] taking payloads up to `max_payload` bytes (`[worker] max_payload`).
    pub async fn open_with(
        &self,
        synchronous: Synchronous,
        max_payload: usize,
    ) -> anyhow::Result<AnyBackend> {
        match self {
            Store::Sqlite(path) => {
                let options = SqliteOptions {
                    synchronous,
                    max_payload,
                    ..SqliteOptions::default()
                };
                let backend = SqliteBackend::open(path, options)
                    .with_context(|| format!("cannot open the database {}", path.display()))?;
                Ok(backend.into())
            }
            Store::Nats { url, options } => {
                let options = NatsOptions {
                    max_payload,
                    ..options.clone()
                };
                let backend = NatsBackend::connect(url, options).await.with_context(|| {
                    format!("cannot connect to the NATS server {}", redact(url))
                })?;
                Ok(backend.into())
            }
        }
    }

    /// Open the store for a reading command: a missing SQLite file is an error, not a new
    /// empty database.
    pub async fn open_existing(&self) -> anyhow::Result<AnyBackend> {
        if let Store::Sqlite(path) = self
            && !path.exists()
        {
            anyhow::bail!(
                "no database at {} (pass --db PATH or set SPOOL_DB, or --nats URL for NATS; `spool enqueue` or `spool worker` creates it)",
                path.display()
            );
        }
        self.open(Synchronous::Full).await
    }

    /// Open the store for a command that only reads: a SQLite file is opened read-only and
    /// must already be a Spool database (nothing is created, migrated or written, so a
    /// read-only file can be read and another application's database is refused untouched);
    /// on NATS, the installation must exist (no stream or bucket is created).
    pub async fn open_read_only(&self) -> anyhow::Result<AnyBackend> {
        match self {
            Store::Sqlite(path) => {
                if !path.exists() {
                    return self.open_existing().await;
                }
                let backend = SqliteBackend::open_read_only(path, SqliteOptions::default())
                    .with_context(|| format!("cannot read the database {}", path.display()))?;
                Ok(backend.into())
            }
            Store::Nats { url, options } => {
                let backend = NatsBackend::connect_existing(url, options.clone())
                    .await
                    .with_context(|| format!("cannot read the NATS server {}", redact(url)))?;
                Ok(backend.into())
            }
        }
    }

    /// The flag that names this store on the command line, for the commands `spool demo`
    /// suggests.
    pub fn flag(&self) -> String {
        match self {
            Store::Sqlite(path) => format!("--db {}", path.display()),
            Store::Nats { url, .. } => format!("--nats {}", redact(url)),
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Store::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            Store::Nats { url, .. } => write!(f, "nats {}", redact(url)),
        }
    }
}

/// The NATS layout in words, for the worker's summary.
pub fn nats_layout(options: &NatsOptions) -> String {
    let storage = match options.storage {
        Storage::File => "file",
        Storage::Memory => "memory",
    };
    format!(
        "prefix {}, replicas {}, {storage} storage, ack wait {}",
        options.prefix,
        options.replicas,
        humantime::format_duration(options.ack_wait)
    )
}

/// `urls` (comma-separated) with any user, password or token replaced by `***`: URLs end up
/// in logs.
fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let start = url.find("://").map_or(0, |i| i + 3);
            let rest = &url[start..];
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            match authority.rfind('@') {
                Some(at) => format!("{}***{}", &url[..start], &rest[at..]),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_left_out_of_printed_urls() {
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact("nats://ada:s3cret@a:4222,tls://tok@b:4222,c:4222"),
            "nats://***@a:4222,tls://***@b:4222,c:4222"
        );
        assert_eq!(redact("user:pw@host"), "***@host");
    }
}
