//! One backend chosen at run time: SQLite or NATS.
//!
//! [`Worker`](crate::worker::Worker) and the rest of the runtime are generic over
//! [`Backend`]; a program that picks its store from a flag or a config file (the `spool`
//! binary does) holds an [`AnyBackend`] instead of being generic itself. Every method forwards
//! to the backend inside, so an `AnyBackend` behaves exactly like the backend it wraps.
//!
//! ```no_run
//! # async fn example() -> Result<(), spool::queue::QueueError> {
//! use spool::queue::nats::{NatsBackend, NatsOptions};
//! use spool::queue::sqlite::{SqliteBackend, SqliteOptions};
//! use spool::queue::AnyBackend;
//! use std::path::Path;
//!
//! let backend: AnyBackend = match std::env::var("SPOOL_NATS_URL") {
//!     Ok(url) => NatsBackend::connect(&url, NatsOptions::default()).await?.into(),
//!     Err(_) => SqliteBackend::open(Path::new("spool.db"), SqliteOptions::default())?.into(),
//! };
//! # let _ = backend;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use super::nats::NatsBackend;
use super::sqlite::SqliteBackend;
use super::{
    AttemptRecord, AttemptSave, Backend, CancelFilter, Claimed, DlqFilter, Enqueued, Event,
    EventFilter, JobDetail, JobFilter, JobId, JobSummary, Lease, LeaseLost, NewEvent, NewJob,
    Prune, QueueClaim, QueueCounts, QueueError, Settle, SettledAndClaimed, Timestamp, WorkerInfo,
};
use crate::schedule::{Schedule, ScheduleFire, ScheduleState};

/// A queue backend chosen at run time.
#[derive(Clone, Debug)]
pub enum AnyBackend {
    /// The embedded SQLite backend: one file, one machine.
    Sqlite(SqliteBackend),
    /// The NATS JetStream backend: workers on any number of machines.
    Nats(NatsBackend),
}

impl From<SqliteBackend> for AnyBackend {
    fn from(backend: SqliteBackend) -> Self {
        AnyBackend::Sqlite(backend)
    }
}

impl From<NatsBackend> for AnyBackend {
    fn from(backend: NatsBackend) -> Self {
        AnyBackend::Nats(backend)
    }
}

/// Implements [`Backend`] for [`AnyBackend`] from the methods' signatures: each method awaits
/// the same method of the backend inside.
macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Backend for AnyBackend {
            fn max_payload(&self) -> usize {
                match self {
                    AnyBackend::Sqlite(backend) => backend.max_payload(),
                    AnyBackend::Nats(backend) => backend.max_payload(),
                }
            }

            fn sink(&self) -> crate::events::EventSink {
                match self {
                    AnyBackend::Sqlite(backend) => backend.sink(),
                    AnyBackend::Nats(backend) => backend.sink(),
                }
            }

            fn set_sink(&self, sink: crate::events::EventSink) {
                match self {
                    AnyBackend::Sqlite(backend) => backend.set_sink(sink),
                    AnyBackend::Nats(backend) => backend.set_sink(sink),
                }
            }

            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        AnyBackend::Sqlite(backend) => backend.$name($($arg),*).await,
                        AnyBackend::Nats(backend) => backend.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError>;
    fn claim(&self, worker: &str, queues: &[QueueClaim], lease: Duration)
        -> Result<Vec<Claimed>, QueueError>;
    fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>, QueueError>;
    fn settle(&self, settles: Vec<Settle>) -> Result<Vec<Result<(), LeaseLost>>, QueueError>;
    fn settle_and_claim(&self, settles: Vec<Settle>, worker: &str, queues: &[QueueClaim],
        lease: Duration) -> SettledAndClaimed;
    fn save(&self, save: AttemptSave) -> Result<Result<(), LeaseLost>, QueueError>;
    fn child_id(&self, lease: &Lease, index: u32) -> Result<JobId, QueueError>;
    fn release(&self, leases: &[Lease]) -> Result<u64, QueueError>;
    fn expire_leases(&self, default_max_attempts: u32) -> Result<Vec<JobId>, QueueError>;
    fn cancel(&self, id: &JobId, reason: &str) -> Result<bool, QueueError>;
    fn keep_cancelled(&self, lease: &Lease, attempt: AttemptRecord) -> Result<bool, QueueError>;
    fn cancel_matching(&self, filter: &CancelFilter, reason: &str)
        -> Result<Vec<JobId>, QueueError>;
    fn revoked(&self, leases: &[Lease], timeout: Duration) -> Result<Vec<JobId>, QueueError>;
    fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> ();
    fn record(&self, event: NewEvent) -> Result<(), QueueError>;
    fn job(&self, id: &JobId) -> Result<Option<JobDetail>, QueueError>;
    fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobSummary>, QueueError>;
    fn queues(&self) -> Result<Vec<QueueCounts>, QueueError>;
    fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, QueueError>;
    fn dead(&self, filter: &DlqFilter) -> Result<Vec<JobSummary>, QueueError>;
    fn replay(&self, filter: &DlqFilter) -> Result<u64, QueueError>;
    fn purge(&self, filter: &DlqFilter) -> Result<u64, QueueError>;
    fn prune(&self, prune: Prune) -> Result<u64, QueueError>;
    fn put_schedule(&self, schedule: Schedule, next_run_at: Timestamp) -> Result<bool, QueueError>;
    fn remove_schedule(&self, name: &str) -> Result<bool, QueueError>;
    fn schedules(&self) -> Result<Vec<ScheduleState>, QueueError>;
    fn take_leadership(&self, holder: &str, ttl: Duration, now: Timestamp)
        -> Result<bool, QueueError>;
    fn fire_schedule(&self, fire: ScheduleFire) -> Result<Option<JobId>, QueueError>;
    fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> Result<(), QueueError>;
    fn remove_worker(&self, id: &str) -> Result<bool, QueueError>;
    fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError>;
}
