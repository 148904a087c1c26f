//! Every subject, stream, bucket and consumer name the backend uses, derived from one prefix.

use crate::queue::{JobId, QueueError};

/// A job's priority band: the subject its messages go to and the consumer that serves them.
/// Claims take the high band first, then normal, then low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Band {
    /// Priority above 0.
    High,
    /// Priority 0.
    Normal,
    /// Priority below 0.
    Low,
}

impl Band {
    /// Claim order.
    pub const ALL: [Band; 3] = [Band::High, Band::Normal, Band::Low];

    /// The band of a priority.
    pub fn of(priority: i32) -> Band {
        match priority {
            p if p > 0 => Band::High,
            0 => Band::Normal,
            _ => Band::Low,
        }
    }

    /// The band's name in subjects and consumer names.
    pub fn name(self) -> &'static str {
        match self {
            Band::High => "high",
            Band::Normal => "normal",
            Band::Low => "low",
        }
    }
}

/// Where a queue's job messages wait: one of its priority bands, either the band shared by
/// the queue's jobs without a tenant (and by jobs any producer published on the queue's own
/// subject) or one tenant's lane of that band. Each has its own consumer, so a claim can take
/// from every tenant in turn however deep another tenant's backlog is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    /// The tenant's subject token ([`tenant_token`]); `None` for the shared band.
    pub tenant: Option<String>,
    /// The priority band.
    pub band: Band,
}

impl Lane {
    /// The lane a job of `tenant` with `priority` goes to.
    pub fn of(tenant: Option<&str>, priority: i32) -> Lane {
        Lane {
            tenant: tenant.map(tenant_token),
            band: Band::of(priority),
        }
    }

    /// The shared lane of a band.
    pub fn shared(band: Band) -> Lane {
        Lane { tenant: None, band }
    }
}

/// A tenant's token in subjects and consumer names: the tenant itself when it is letters,
/// digits, `-` and `_` (at most 64, not starting with `_x`), otherwise `_x` and 32 hex digits
/// of its SHA-256 (a token starting with `_x` is always such a digest).
pub fn tenant_token(tenant: &str) -> String {
    if is_token(tenant) && tenant.len() <= 64 && !tenant.starts_with("_x") {
        return tenant.to_owned();
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(tenant.as_bytes());
    format!("_x{}", hex::encode(&digest[..16]))
}

/// The names of one Spool installation on a NATS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// The names under `prefix`.
    pub fn new(prefix: &str) -> Result<Names, QueueError> {
        if !is_token(prefix) {
            return Err(QueueError::BadRequest(format!(
                "bad NATS prefix `{prefix}`: use letters, digits, `-` and `_`"
            )));
        }
        Ok(Names {
            prefix: prefix.to_owned(),
        })
    }

    /// The work-queue stream holding every queue's job messages.
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.prefix.to_uppercase())
    }

    /// The events stream.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.prefix.to_uppercase())
    }

    /// The dead-letter stream.
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.prefix.to_uppercase())
    }

    /// The stream of the connections' lease tables (the running leases, for the sweeper).
    pub fn leases_stream(&self) -> String {
        format!("{}_LEASES", self.prefix.to_uppercase())
    }

    /// The bucket of job records.
    pub fn records_bucket(&self) -> String {
        format!("{}-jobs", self.prefix)
    }

    /// The bucket of idempotency keys.
    pub fn keys_bucket(&self) -> String {
        format!("{}-keys", self.prefix)
    }

    /// The bucket of staged children: written by a settle before it commits, read back once
    /// it has.
    pub fn staging_bucket(&self) -> String {
        format!("{}-staged", self.prefix)
    }

    /// The KV subject of a staged child (for purging it outright).
    pub fn staged_subject(&self, key: &str) -> String {
        format!("$KV.{}.{key}", self.staging_bucket())
    }

    /// The core-NATS subject of cancel notices (`<job id> <token>`): every worker listens,
    /// to abort a cancelled attempt at once. Not stored by any stream.
    pub fn cancel_notices(&self) -> String {
        format!("{}.cancel", self.prefix)
    }

    /// Every job subject.
    pub fn jobs_all(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }

    /// The subject of a queue's band.
    pub fn job_subject(&self, queue: &str, band: Band) -> String {
        match band {
            Band::Normal => format!("{}.jobs.{queue}", self.prefix),
            other => format!("{}.jobs.{queue}.{}", self.prefix, other.name()),
        }
    }

    /// The durable consumer serving a queue's band.
    pub fn consumer(&self, queue: &str, band: Band) -> String {
        format!("{}-{queue}", band.name())
    }

    /// The subject of a queue's lane: its band's subject, or for a tenant's lane
    /// `<prefix>.jobs.<queue>.t.<tenant token>` with `.high` / `.low` for those bands.
    pub fn lane_subject(&self, queue: &str, lane: &Lane) -> String {
        match (&lane.tenant, lane.band) {
            (None, band) => self.job_subject(queue, band),
            (Some(t), Band::Normal) => format!("{}.jobs.{queue}.t.{t}", self.prefix),
            (Some(t), band) => format!("{}.jobs.{queue}.t.{t}.{}", self.prefix, band.name()),
        }
    }

    /// The durable consumer serving a queue's lane.
    pub fn lane_consumer(&self, queue: &str, lane: &Lane) -> String {
        match &lane.tenant {
            None => self.consumer(queue, lane.band),
            Some(t) => format!("t-{}-{t}-{queue}", lane.band.name()),
        }
    }

    /// Every tenant lane's subject of a queue.
    pub fn tenant_lanes(&self, queue: &str) -> String {
        format!("{}.jobs.{queue}.t.>", self.prefix)
    }

    /// Every subject of a queue's jobs but the normal band's own (which `.>` does not match).
    pub fn queue_lanes(&self, queue: &str) -> String {
        format!("{}.jobs.{queue}.>", self.prefix)
    }

    /// The queue and lane of a job subject (`None` for a subject that is not one).
    pub fn lane_of(&self, subject: &str) -> Option<(String, Lane)> {
        let rest = subject.strip_prefix(&format!("{}.jobs.", self.prefix))?;
        let parts: Vec<&str> = rest.split('.').collect();
        let band = |name: Option<&&str>| match name.copied() {
            None => Some(Band::Normal),
            Some("high") => Some(Band::High),
            Some("low") => Some(Band::Low),
            Some(_) => None,
        };
        let (queue, lane) = match parts.as_slice() {
            [queue] | [queue, _] => (
                *queue,
                Lane {
                    tenant: None,
                    band: band(parts.get(1))?,
                },
            ),
            [queue, "t", tenant, ..] if parts.len() <= 4 => (
                *queue,
                Lane {
                    tenant: Some((*tenant).to_owned()),
                    band: band(parts.get(3))?,
                },
            ),
            _ => return None,
        };
        Some((queue.to_owned(), lane))
    }

    /// The bucket of flow-control state: group locks, concurrency slots and rate buckets.
    pub fn flow_bucket(&self) -> String {
        format!("{}-flow", self.prefix)
    }

    /// The bucket of schedules and the schedulers' leader lock.
    pub fn schedules_bucket(&self) -> String {
        format!("{}-schedules", self.prefix)
    }

    /// The bucket of the worker registry: one key per live worker, dropped by the bucket's
    /// max age once its worker stops heartbeating.
    pub fn workers_bucket(&self) -> String {
        format!("{}-workers", self.prefix)
    }

    /// Every event subject.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The event-log subject of `queue`'s events (`_` for events about no queue, and for a
    /// name that is no subject token: a child enqueued on a queue NATS cannot name).
    pub fn event_subject(&self, queue: Option<&str>) -> String {
        format!(
            "{}.events.{}",
            self.prefix,
            queue.filter(|q| is_token(q)).unwrap_or("_")
        )
    }

    /// Every dead-letter subject.
    pub fn dlq_all(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// The dead-letter subject of a job.
    pub fn dlq_subject(&self, queue: &str, job: &JobId) -> String {
        format!("{}.dlq.{queue}.{job}", self.prefix)
    }

    /// A job's dead-letter subject, whatever its queue.
    pub fn job_dlq(&self, job: &JobId) -> String {
        format!("{}.dlq.*.{job}", self.prefix)
    }

    /// Every lease subject.
    pub fn leases_all(&self) -> String {
        format!("{}.leases.>", self.prefix)
    }

    /// The subject of one connection's lease table (`process` names the connection).
    pub fn lease_table(&self, process: &str) -> String {
        format!("{}.leases.{process}", self.prefix)
    }

    /// The KV subject of a job's record (for purging it outright).
    pub fn record_subject(&self, job: &JobId) -> String {
        format!("$KV.{}.{job}", self.records_bucket())
    }
}

/// Whether `s` can be one subject token and part of a stream or consumer name.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Check a queue name (it becomes a subject token and part of a consumer name) by the rule
/// both backends share.
pub fn check_queue(queue: &str) -> Result<(), QueueError> {
    crate::queue::check::check_queue_name(queue)
}

/// A job id as the backend hands it out: the decimal stream sequence of its first message.
pub fn seq_of(id: &JobId) -> Option<u64> {
    number(&id.0)
}

/// A positive decimal number written the one way Spool writes it (no sign, no leading zero).
fn number(s: &str) -> Option<u64> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n > 0 && s == n.to_string())
}

/// The numbers an id is made of: a stream sequence, then one child index per generation
/// (`12-1-3` is the third child of the first child of job 12). `None` for anything else, so
/// a string that is not an id never reaches a KV key or a subject.
pub fn id_path(id: &JobId) -> Option<Vec<u64>> {
    id.0.split('-').map(number).collect()
}

/// Whether `id` is one this backend can have handed out.
pub fn is_job_id(id: &JobId) -> bool {
    id_path(id).is_some()
}

/// The id of a job's `index`-th child, counting from 1. A sequence id has no `-`, so a child
/// id never names a job enqueued by a producer.
pub fn child_of(parent: &JobId, index: usize) -> JobId {
    JobId(format!("{parent}-{index}"))
}

/// The parent and index of a child id.
pub fn parent_of(id: &JobId) -> Option<(JobId, usize)> {
    let (parent, index) = id.0.rsplit_once('-')?;
    let index = usize::try_from(number(index)?).ok()?;
    Some((JobId(parent.to_owned()), index))
}

/// The key of a child staged by the attempt holding `token`.
pub fn staged_key(child: &JobId, token: i64) -> String {
    format!("{child}.{token}")
}

/// The child and token of a staged key.
pub fn staged_of(key: &str) -> Option<(JobId, i64)> {
    let (child, token) = key.rsplit_once('.')?;
    let child = JobId(child.to_owned());
    (is_job_id(&child) && parent_of(&child).is_some())
        .then_some(())
        .and(token.parse().ok())
        .map(|token| (child, token))
}
