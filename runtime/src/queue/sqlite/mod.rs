//! The embedded SQLite backend: one database file that every worker process on a machine
//! shares, with no server to run.
//!
//! # Design
//!
//! **Schema** (`schema.sql`, version in `PRAGMA user_version`, created on open): `jobs` holds
//! one row per job, keyed by an integer id (a [`JobId`] is its decimal string); `attempts`
//! holds one row per finished attempt, keyed by `(job_id, token)`; `events` is the event log,
//! keyed by its sequence number; `counters` hands out job ids and event sequence numbers, so
//! neither is ever reused, even once the newest rows are deleted; `schedules` and
//! `leader_locks` hold the schedules and the schedulers' leader lock (see `schedule.rs`);
//! `workers` is the live worker registry (see `workers.rs`). Partial indexes keep every
//! hot statement a short index walk whatever the table size: the claimable jobs of a queue
//! in claim order (`queue, priority DESC, run_at, id WHERE state IN ('ready', 'scheduled')`),
//! running jobs by lease expiry, unfinished jobs by idempotency key (unique), dead jobs and
//! finished jobs by the time they finished.
//!
//! **Transactions.** Several processes share the file, so every guarantee comes from SQLite's
//! locking, none from memory. Every write is one `BEGIN IMMEDIATE` transaction: it takes the
//! database's write lock before reading anything, so the rows it reads cannot change before
//! it writes (a deferred transaction could read, then fail to upgrade its lock with
//! `SQLITE_BUSY` halfway through). A writer that finds the lock taken waits up to
//! [`SqliteOptions::busy_timeout`]. A claim is one `UPDATE ... WHERE id IN (SELECT ... LIMIT n)
//! RETURNING ...` statement inside that transaction: one winner per job, whatever the number
//! of processes. Batches (enqueue, claim, settle) are one transaction each, so a batch of a
//! thousand costs one commit. The events a transaction records are published through the
//! backend's [`EventSink`](crate::events::EventSink) only once it has committed.
//!
//! **Fencing.** Every claim adds one to the job's `token` column and hands the new value out in
//! the [`Lease`]; nothing ever lowers it. Every write for an attempt (renew, settle, release)
//! applies only `WHERE state = 'running' AND token = ?`; sweeping an expired lease, releasing
//! it, settling it or cancelling the job moves the job out of `running`, so the old token can
//! never match again and a late or stale attempt commits nothing.
//!
//! **Cancels** (`cancel.rs`) move the job to `cancelled` keeping its token, record a running
//! attempt as cancelled and cancel the job's unfinished children, in one transaction. A
//! worker learns of it by polling its in-flight leases every 200 ms ([`Backend::revoked`]:
//! one indexed read per lease, on a read connection, for "cancelled with this token"), so
//! no schema change and no notice table are needed.
//!
//! **Durability.** The database runs in WAL mode. With [`Synchronous::Full`] (the default) a
//! write is on disk once it returns; [`Synchronous::Normal`] trades the last few commits on a
//! power loss for fewer fsyncs.
//!
//! **Threads.** rusqlite is synchronous, so each call runs on tokio's blocking pool: writes on
//! the one write connection (behind a mutex: SQLite admits one writer at a time anyway),
//! reads on a small pool of read connections that WAL lets run alongside the writer.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
//! use spool::queue::{AttemptRecord, Backend, JobState, NewJob, Next, QueueClaim, Settle};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("spool.db");
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let backend = SqliteBackend::open(&path, SqliteOptions::default())?;
//! let job = NewJob { queue: "email".into(), payload: b"hello".to_vec(), ..NewJob::default() };
//! let id = backend.enqueue(vec![job]).await?.remove(0).id;
//!
//! let wanted = [QueueClaim { queue: "email".into(), limit: 10, ..QueueClaim::default() }];
//! for claimed in backend.claim("worker-1", &wanted, Duration::from_secs(30)).await? {
//!     let at = spool::queue::now();
//!     let attempt = AttemptRecord {
//!         attempt: claimed.attempt,
//!         worker: claimed.lease.worker.clone(),
//!         started_at: at,
//!         finished_at: at,
//!         outcome: "succeeded".into(),
//!         phase: None,
//!         error: None,
//!         digest: None,
//!         logs: Vec::new(),
//!         http: Default::default(),
//!     };
//!     let next = Next::Succeeded { output: b"sent".to_vec() };
//!     let settle = Settle { lease: claimed.lease, next, attempt, checkpoint: None, children: Vec::new(), progress: None };
//!     backend.settle(vec![settle]).await?.remove(0)?;
//! }
//! let job = backend.job(&id).await?.ok_or("no such job")?;
//! assert_eq!(job.summary.state, JobState::Succeeded);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod admin;
mod cancel;
mod columns;
mod enqueue;
mod flow;
mod journal;
mod lease;
mod limits;
mod read;
mod schedule;
mod schema;
mod settle;
mod workers;

pub use self::schema::APPLICATION_ID;

#[cfg(test)]
mod plans;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use self::journal::Journal;
use super::{
    AttemptRecord, AttemptSave, Backend, CancelFilter, Claimed, DlqFilter, Enqueued, Event,
    EventFilter, JobDetail, JobFilter, JobId, JobSummary, Lease, LeaseLost, NewEvent, NewJob,
    Prune, QueueClaim, QueueCounts, QueueError, Settle, SettledAndClaimed, Timestamp, WorkerInfo,
    now,
};
use crate::schedule::{Schedule, ScheduleFire, ScheduleState};

/// How hard SQLite works to make each commit survive a power loss (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is flushed to disk (the WAL is fsynced) before it returns: once a call
    /// returns, its write survives an application crash, an OS crash and a power loss.
    #[default]
    Full,
    /// The WAL is fsynced only when it is checkpointed, not at every commit. In WAL mode, a
    /// power loss or OS crash can lose the most recent committed transactions (an enqueue
    /// that had returned is gone; a settle that had returned is undone, so the job runs
    /// again once its lease expires), but the database stays consistent; an application
    /// crash loses nothing.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// How to open a [`SqliteBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of each commit; [`Synchronous::Full`] by default.
    pub synchronous: Synchronous,
    /// How long a write waits for another connection (or process) to release the database's
    /// write lock before failing with [`QueueError::Store`]; 30 s by default. A waiting
    /// writer tries the lock every millisecond: SQLite's locks are polled rather than queued,
    /// so a writer in one process (an enqueue) can lose the lock many times in a row to a
    /// worker in another committing back to back; the wait is long so that such a run of bad
    /// luck on a loaded machine never fails the write.
    pub busy_timeout: Duration,
    /// The largest payload an enqueue takes, in bytes;
    /// [`DEFAULT_MAX_PAYLOAD`](crate::queue::check::DEFAULT_MAX_PAYLOAD) (16 MiB) by default.
    pub max_payload: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(30),
            max_payload: super::check::DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// Read connections kept open between calls; more are opened while more reads run at once.
const IDLE_READERS: usize = 4;

/// Rows deleted per transaction by [`Backend::prune`], so a large prune never holds the write
/// lock for long.
const PRUNE_CHUNK: usize = 2_000;

/// Jobs matched per transaction by [`Backend::cancel_matching`] (each with its children).
const CANCEL_CHUNK: usize = 500;

/// A [`Backend`] on one SQLite database file. Cheap to clone: clones share the connections.
/// Its calls run on tokio's blocking pool, so they must be made inside a tokio runtime.
///
/// Listings ([`Backend::jobs`], [`Backend::dead`]) return at most 100 jobs unless the filter
/// sets a limit; [`Backend::events`] at most 1000 events.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    /// How every connection opens the file.
    access: Access,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Per queue, where the last fair claim's tenant listing stopped (see `limits`).
    fair_cursors: Arc<Mutex<std::collections::HashMap<String, Option<String>>>>,
    /// Where committed events go.
    sink: std::sync::RwLock<crate::events::EventSink>,
    /// Told of every commit of this process, for [`Backend::wait_for_jobs`].
    committed: tokio::sync::Notify,
    /// What [`Backend::wait_for_jobs`] watches for other connections' commits.
    watch: Mutex<Watch>,
}

/// A connection that only reads `PRAGMA data_version` (opened at the first wait), the last
/// version it read and when that last changed.
struct Watch {
    conn: Option<Connection>,
    version: Option<i64>,
    changed: std::time::Instant,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            conn: None,
            version: None,
            changed: std::time::Instant::now(),
        }
    }
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Open (or create) the database at `path`: switch it to WAL mode and create or check
    /// the schema. Blocks while it does; call it before serving jobs.
    /// Another application's database is refused, untouched (see the `schema` module docs
    /// for how a Spool database is recognised), and one from before the Spool marker existed
    /// is stamped with it.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, QueueError> {
        let fail = |e: Failure| e.into_queue(&format!("open {}", path.display()));
        let mut writer = connect(path, &options, Access::ReadWrite).map_err(|e| fail(e.into()))?;
        // Judge the file before anything writes to it (switching to WAL does).
        if let schema::Kind::Foreign(why) = schema::identify(&writer).map_err(fail)? {
            return Err(fail(schema::foreign(why)));
        }
        // Switching a new file to WAL takes an exclusive lock, and SQLite answers BUSY at once
        // (without its busy handler) while another process opens the same new file: retry
        // for as long as the busy timeout.
        let deadline = std::time::Instant::now() + options.busy_timeout;
        let mode: String = loop {
            match writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.map_err(|e| fail(e.into()))?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(QueueError::Store(format!(
                "sqlite open {}: cannot use WAL mode (journal mode is {mode})",
                path.display()
            )));
        }
        schema::migrate(&mut writer).map_err(fail)?;
        Ok(SqliteBackend {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                options,
                access: Access::ReadWrite,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                fair_cursors: Arc::default(),
                sink: Default::default(),
                committed: tokio::sync::Notify::new(),
                watch: Mutex::new(Watch::default()),
            }),
        })
    }

    /// Open an existing Spool database for reading only: nothing is created, migrated or
    /// written (a file the process may not write, a database of a newer or older schema
    /// version, and another application's database are all left as they are). A file that
    /// is not a Spool database, or whose schema is not this build's, is refused with the
    /// reason. Every write through the backend fails.
    pub fn open_read_only(path: &Path, options: SqliteOptions) -> Result<Self, QueueError> {
        let fail = |e: Failure| e.into_queue(&format!("open {}", path.display()));
        let open = |access| -> Result<Connection, Failure> {
            let conn = connect(path, &options, access)?;
            schema::check_readable(&conn)?;
            Ok(conn)
        };
        let mut access = Access::ReadOnly;
        let conn = match open(access) {
            // A WAL database needs its `-shm` file, which a reader creates when it is missing;
            // in a directory this process may not write, it cannot. No writer is at work then
            // (it would have made the file), so the file is read as it stands.
            Err(Failure::Sql(rusqlite::Error::SqliteFailure(e, _)))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen
                ) && !shm_path(path).exists() =>
            {
                access = Access::Immutable;
                open(access)
            }
            other => other,
        }
        .map_err(fail)?;
        Ok(SqliteBackend {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                options,
                access,
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                fair_cursors: Arc::default(),
                sink: Default::default(),
                committed: tokio::sync::Notify::new(),
                watch: Mutex::new(Watch::default()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction on the write connection, off the async
    /// executor; commit, then publish the events it recorded through the sink.
    async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut Journal) -> Result<T, Failure> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(op, move || {
            let mut conn = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let changes = conn.total_changes();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Read the clock once the write lock is ours: another process may have held it
            // for a while.
            let mut journal = Journal::new(now());
            let value = f(&tx, &mut journal)?;
            journal.finish(&tx)?;
            tx.commit()?;
            // Only a commit that wrote something may have made a job claimable.
            if conn.total_changes() != changes {
                inner.committed.notify_waiters();
            }
            // Still holding the write connection, so this process's events reach the sink in
            // the order of their sequence numbers.
            let sink = inner.sink.read().unwrap_or_else(PoisonError::into_inner);
            for event in &journal.into_events() {
                sink.emit(event);
            }
            Ok(value)
        })
        .await
    }

    /// Run `f` in one read transaction (a consistent snapshot) on a read connection.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, Timestamp) -> Result<T, Failure> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(op, move || {
            let mut conn = inner.reader()?;
            let value = {
                let tx = conn.transaction()?;
                let value = f(&tx, now())?;
                tx.finish()?;
                value
            };
            inner.give_back(conn);
            Ok(value)
        })
        .await
    }
}

impl Inner {
    fn reader(&self) -> Result<Connection, Failure> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = connect(&self.path, &self.options, self.access)?;
                conn.pragma_update(None, "query_only", true)?;
                Ok(conn)
            }
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// How a backend's connections open the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read and write, creating the file if need be.
    ReadWrite,
    /// Read an existing file.
    ReadOnly,
    /// Read an existing file that nothing writes meanwhile (SQLite's `immutable`: no locks,
    /// no `-shm`).
    Immutable,
}

/// The `-shm` file of the database at `path`.
fn shm_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

/// A connection with the per-connection settings.
fn connect(path: &Path, options: &SqliteOptions, access: Access) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let read = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = match access {
        Access::ReadWrite => Connection::open(path)?,
        Access::ReadOnly => Connection::open_with_flags(path, read)?,
        Access::Immutable => {
            // A URI, with the characters that mean something in one escaped.
            let mut uri = String::from("file:");
            for c in path.to_string_lossy().chars() {
                match c {
                    '?' | '#' | '%' => uri.push_str(&format!("%{:02X}", u32::from(c))),
                    c => uri.push(c),
                }
            }
            uri.push_str("?immutable=1");
            Connection::open_with_flags(uri, read | OpenFlags::SQLITE_OPEN_URI)?
        }
    };
    conn.busy_handler(Some(lock_poller(options.busy_timeout)))?;
    conn.pragma_update(None, "synchronous", options.synchronous.pragma())?;
    // 8 MiB of page cache (the default is 2 MiB) holds the pages every claim and settle
    // touch (the head of the claimable index, the tails of the event and attempt tables)
    // at any table size. Larger measured no faster: SQLite walks the cache's hash table at
    // every commit.
    conn.pragma_update(None, "cache_size", -8_192)?;
    // Truncate the WAL back to 64 MiB after checkpoints instead of leaving it at its peak.
    conn.pragma_update(None, "journal_size_limit", 64 << 20)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The query planner's stability guarantee: a statement's plan does not depend on the
    // values bound to it. Without it, SQLite re-prepares a cached statement whenever a value
    // its planner looked at changes — a claim's `LIMIT ?` does at nearly every claim, and
    // re-parsing the claim took a sixth of a busy worker's CPU.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

/// How long a connection sleeps between tries at a lock another connection holds.
const LOCK_POLL: Duration = Duration::from_millis(1);

/// The busy handler: try the lock again every [`LOCK_POLL`] until `timeout` has passed since
/// the first try. SQLite's own (`busy_timeout`) sleeps longer and longer between tries, up to
/// 100 ms each, so a writer beside a worker in another process that commits back to back
/// found the lock free only by luck, and an enqueue could wait for seconds; trying every
/// millisecond, it gets in at one of the worker's next gaps.
fn lock_poller(timeout: Duration) -> impl FnMut(i32) -> bool + Send + 'static {
    let mut since = std::time::Instant::now();
    move |tries| {
        if tries == 0 {
            since = std::time::Instant::now();
        }
        if since.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(LOCK_POLL);
        true
    }
}

/// Run `f` on tokio's blocking pool.
async fn blocking<T, F>(op: &'static str, f: F) -> Result<T, QueueError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Failure> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| e.into_queue(op)),
        Err(e) => Err(QueueError::Store(format!("sqlite {op}: task failed: {e}"))),
    }
}

/// Why a call failed, before it is reported as a [`QueueError`] naming the operation.
#[derive(Debug)]
enum Failure {
    Sql(rusqlite::Error),
    Json(serde_json::Error),
    Queue(QueueError),
}

impl Failure {
    fn into_queue(self, op: &str) -> QueueError {
        match self {
            Failure::Sql(e) => QueueError::Store(format!("sqlite {op}: {e}")),
            Failure::Json(e) => QueueError::Store(format!("sqlite {op}: malformed column: {e}")),
            Failure::Queue(e) => e,
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure::Json(e)
    }
}

impl From<QueueError> for Failure {
    fn from(e: QueueError) -> Self {
        Failure::Queue(e)
    }
}

/// How often an idle worker looks for another process's commit while commits come (tokio's
/// timer resolution).
const WAL_WATCH: Duration = Duration::from_millis(1);
/// How often it looks once none has come for [`WARM`].
const COLD_WATCH: Duration = Duration::from_millis(10);
/// How long after the last commit seen a worker keeps looking every [`WAL_WATCH`]: a worker
/// idle for longer spends less (a look costs a timer wake-up and a few microseconds), and
/// only its first job after the lull waits up to [`COLD_WATCH`].
const WARM: Duration = Duration::from_secs(1);

impl Inner {
    /// `PRAGMA data_version` on the watch connection, which changes whenever another
    /// connection, of this process or another, commits; and how long since it last changed.
    /// `None` if it cannot be read.
    ///
    /// Run on the async thread: it reads the write-ahead log's index, which every connection
    /// maps into memory, in microseconds, and never waits for a lock (the connection has no
    /// busy handler; a lock it cannot take counts as a change). Nothing may open and close
    /// the database's files beside SQLite instead: closing any descriptor of a file drops
    /// the process's POSIX locks on it, SQLite's included.
    fn data_version(&self) -> Option<(i64, Duration)> {
        let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        if watch.conn.is_none() {
            let conn = connect(&self.path, &self.options, self.access).ok()?;
            conn.busy_timeout(Duration::ZERO).ok()?;
            watch.conn = Some(conn);
        }
        let version: i64 = watch
            .conn
            .as_ref()?
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .ok()?;
        if watch.version != Some(version) {
            watch.version = Some(version);
            watch.changed = std::time::Instant::now();
        }
        Some((version, watch.changed.elapsed()))
    }
}

impl Backend for SqliteBackend {
    fn max_payload(&self) -> usize {
        self.inner.options.max_payload
    }

    /// Wake at once on a commit of this process (an enqueue, a settle that frees a group or a
    /// limit), within [`WAL_WATCH`] on another process's (a `spool enqueue`, another worker;
    /// [`COLD_WATCH`] after a lull):
    /// SQLite's `PRAGMA data_version` changes with every commit of another connection, and
    /// reads only the write-ahead log's index in shared memory. (The log file's size and
    /// time were not enough: a log restarted after a checkpoint keeps its size, and a file's
    /// time moves in steps of a few milliseconds.) A wake-up that finds nothing to claim is
    /// harmless.
    fn wait_for_jobs(
        &self,
        _queues: &[String],
        timeout: Duration,
    ) -> impl std::future::Future<Output = ()> + Send {
        let inner = Arc::clone(&self.inner);
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let notified = inner.committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some((before, mut quiet)) = inner.data_version() else {
                // Nothing to watch: this process's commits and the timeout wake.
                tokio::select! {
                    () = &mut notified => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
                return;
            };
            loop {
                let every = if quiet < WARM { WAL_WATCH } else { COLD_WATCH };
                let next = (tokio::time::Instant::now() + every).min(deadline);
                tokio::select! {
                    () = &mut notified => return,
                    () = tokio::time::sleep_until(next) => {}
                }
                if next >= deadline {
                    return;
                }
                match inner.data_version() {
                    Some((now, since)) if now == before => quiet = since,
                    _ => return,
                }
            }
        }
    }

    fn sink(&self) -> crate::events::EventSink {
        self.inner
            .sink
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_sink(&self, sink: crate::events::EventSink) {
        *self
            .inner
            .sink
            .write()
            .unwrap_or_else(PoisonError::into_inner) = sink;
    }

    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
        super::check::check_jobs(&jobs, self.max_payload())?;
        self.write("enqueue", move |tx, journal| {
            enqueue::enqueue(tx, journal, &jobs)
        })
        .await
    }

    async fn claim(
        &self,
        worker: &str,
        queues: &[QueueClaim],
        lease: Duration,
    ) -> Result<Vec<Claimed>, QueueError> {
        let worker = worker.to_owned();
        let queues = queues.to_vec();
        let cursors = self.inner.fair_cursors.clone();
        self.write("claim", move |tx, journal| {
            let mut cursors = cursors.lock().unwrap_or_else(PoisonError::into_inner);
            lease::claim(tx, journal, &worker, &queues, lease, &mut cursors)
        })
        .await
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>, QueueError> {
        let leases = leases.to_vec();
        self.write("renew", move |tx, journal| {
            lease::renew(tx, journal, &leases, lease)
        })
        .await
    }

    async fn settle(&self, settles: Vec<Settle>) -> Result<Vec<Result<(), LeaseLost>>, QueueError> {
        self.write("settle", move |tx, journal| {
            settle::settle(tx, journal, &settles)
        })
        .await
    }

    /// One transaction: the settles first, so the claim sees the room they free.
    async fn settle_and_claim(
        &self,
        settles: Vec<Settle>,
        worker: &str,
        queues: &[QueueClaim],
        lease: Duration,
    ) -> SettledAndClaimed {
        let worker = worker.to_owned();
        let queues = queues.to_vec();
        let cursors = self.inner.fair_cursors.clone();
        let both = self
            .write("settle and claim", move |tx, journal| {
                let settled = settle::settle(tx, journal, &settles)?;
                let claimed = if queues.is_empty() {
                    Vec::new()
                } else {
                    let mut cursors = cursors.lock().unwrap_or_else(PoisonError::into_inner);
                    lease::claim(tx, journal, &worker, &queues, lease, &mut cursors)?
                };
                Ok((settled, claimed))
            })
            .await;
        match both {
            Ok((settled, claimed)) => SettledAndClaimed {
                settled: Ok(settled),
                claimed: Ok(claimed),
            },
            Err(e) => SettledAndClaimed {
                settled: Err(e),
                claimed: Ok(Vec::new()),
            },
        }
    }

    async fn save(&self, save: AttemptSave) -> Result<Result<(), LeaseLost>, QueueError> {
        self.write("save", move |tx, journal| flow::save(tx, journal, &save))
            .await
    }

    async fn child_id(&self, lease: &Lease, index: u32) -> Result<JobId, QueueError> {
        // Ids come from the job counter: one reserved here is never handed out again, used or
        // not. The index plays no part.
        let _ = (lease, index);
        self.write("reserve a child id", |tx, journal| {
            Ok(columns::job_id(journal.next_job_id(tx)?))
        })
        .await
    }

    async fn release(&self, leases: &[Lease]) -> Result<u64, QueueError> {
        let leases = leases.to_vec();
        self.write("release", move |tx, journal| {
            lease::release(tx, journal, &leases)
        })
        .await
    }

    async fn expire_leases(&self, default_max_attempts: u32) -> Result<Vec<JobId>, QueueError> {
        self.write("expire leases", move |tx, journal| {
            lease::expire(tx, journal, default_max_attempts)
        })
        .await
    }

    async fn cancel(&self, id: &JobId, reason: &str) -> Result<bool, QueueError> {
        let id = id.clone();
        let reason = reason.to_owned();
        self.write("cancel", move |tx, journal| {
            admin::cancel(tx, journal, &id, &reason)
        })
        .await
    }

    async fn keep_cancelled(
        &self,
        lease: &Lease,
        attempt: AttemptRecord,
    ) -> Result<bool, QueueError> {
        let lease = lease.clone();
        self.write("keep a cancelled attempt", move |tx, _| {
            cancel::keep(tx, &lease, attempt)
        })
        .await
    }

    async fn cancel_matching(
        &self,
        filter: &CancelFilter,
        reason: &str,
    ) -> Result<Vec<JobId>, QueueError> {
        // In chunks, so that a large cancel never holds the write lock for long; jobs
        // enqueued after the call began are left alone.
        let started = now();
        let mut cancelled = Vec::new();
        loop {
            let filter = filter.clone();
            let reason = reason.to_owned();
            let done = self
                .write("cancel", move |tx, journal| {
                    cancel::cancel_matching(tx, journal, &filter, &reason, started, CANCEL_CHUNK)
                })
                .await?;
            if done.is_empty() {
                return Ok(cancelled);
            }
            cancelled.extend(done);
        }
    }

    async fn revoked(&self, leases: &[Lease], timeout: Duration) -> Result<Vec<JobId>, QueueError> {
        // Polling: one indexed read per lease, on a read connection.
        tokio::time::sleep(timeout).await;
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases = leases.to_vec();
        self.read("revoked", move |tx, _| cancel::revoked(tx, &leases))
            .await
    }

    async fn record(&self, event: NewEvent) -> Result<(), QueueError> {
        self.write("record", move |tx, journal| {
            admin::record(tx, journal, event)
        })
        .await
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobDetail>, QueueError> {
        let id = id.clone();
        self.read("job", move |tx, now| read::job(tx, now, &id))
            .await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, QueueError> {
        let filter = filter.clone();
        self.read("jobs", move |tx, now| read::jobs(tx, now, &filter))
            .await
    }

    async fn queues(&self) -> Result<Vec<QueueCounts>, QueueError> {
        self.read("queues", |tx, now| read::queues(tx, now)).await
    }

    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, QueueError> {
        let filter = filter.clone();
        self.read("events", move |tx, _| read::events(tx, &filter))
            .await
    }

    async fn dead(&self, filter: &DlqFilter) -> Result<Vec<JobSummary>, QueueError> {
        let filter = filter.clone();
        self.read("dead", move |tx, now| read::dead(tx, now, &filter))
            .await
    }

    async fn replay(&self, filter: &DlqFilter) -> Result<u64, QueueError> {
        let filter = filter.clone();
        self.write("replay", move |tx, journal| {
            admin::replay(tx, journal, &filter)
        })
        .await
    }

    async fn purge(&self, filter: &DlqFilter) -> Result<u64, QueueError> {
        let filter = filter.clone();
        self.write("purge", move |tx, _| admin::purge(tx, &filter))
            .await
    }

    async fn prune(&self, prune: Prune) -> Result<u64, QueueError> {
        let mut pruned = 0;
        loop {
            let deleted = self
                .write("prune", move |tx, _| admin::prune(tx, prune, PRUNE_CHUNK))
                .await?;
            pruned += deleted;
            if deleted < PRUNE_CHUNK as u64 {
                return Ok(pruned);
            }
        }
    }

    async fn put_schedule(
        &self,
        schedule: Schedule,
        next_run_at: Timestamp,
    ) -> Result<bool, QueueError> {
        schedule
            .check()
            .map_err(|e| QueueError::BadRequest(e.to_string()))?;
        super::check::check_job(&schedule.job(next_run_at), self.max_payload())?;
        self.write("put a schedule", move |tx, _| {
            schedule::put(tx, &schedule, next_run_at)
        })
        .await
    }

    async fn remove_schedule(&self, name: &str) -> Result<bool, QueueError> {
        let name = name.to_owned();
        self.write("remove a schedule", move |tx, _| {
            schedule::remove(tx, &name)
        })
        .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>, QueueError> {
        self.read("schedules", |tx, _| schedule::list(tx)).await
    }

    async fn take_leadership(
        &self,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        let holder = holder.to_owned();
        self.write("take the scheduler lock", move |tx, _| {
            schedule::take_leadership(tx, &holder, ttl, now)
        })
        .await
    }

    async fn fire_schedule(&self, fire: ScheduleFire) -> Result<Option<JobId>, QueueError> {
        self.write("fire a schedule", move |tx, journal| {
            schedule::fire(tx, journal, fire)
        })
        .await
    }

    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError> {
        super::check_heartbeat(worker, ttl)?;
        let worker = worker.clone();
        let expires_at = super::worker_expiry(worker.last_heartbeat, ttl);
        self.write("heartbeat", move |tx, journal| {
            workers::heartbeat(tx, &worker, expires_at, journal.now())
        })
        .await
    }

    async fn remove_worker(&self, id: &str) -> Result<bool, QueueError> {
        let id = id.to_owned();
        self.write("remove a worker", move |tx, journal| {
            workers::remove(tx, &id, journal.now())
        })
        .await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        self.read("workers", |tx, now| workers::live(tx, now)).await
    }
}
