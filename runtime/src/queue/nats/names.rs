//! Every subject, stream, bucket and consumer name the backend uses, derived from one prefix.

use crate::queue::{JobId, QueueError};

/// A job's priority band: the subject its messages go to and the consumer that serves them.
/// Claims take the high band first, then normal, then low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    fn name(self) -> &'static str {
        match self {
            Band::High => "high",
            Band::Normal => "normal",
            Band::Low => "low",
        }
    }
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

    /// Every event subject.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The subject of an event about `job` on `queue` (`_` for none).
    pub fn event_subject(&self, queue: Option<&str>, job: Option<&JobId>) -> String {
        format!(
            "{}.events.{}.{}",
            self.prefix,
            queue.unwrap_or("_"),
            job.map_or("_", |id| id.0.as_str())
        )
    }

    /// Every event of one job, whatever its queue.
    pub fn job_events(&self, job: &JobId) -> String {
        format!("{}.events.*.{job}", self.prefix)
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

/// Check a queue name: it becomes a subject token and part of a consumer name.
pub fn check_queue(queue: &str) -> Result<(), QueueError> {
    if queue.is_empty() {
        return Err(QueueError::BadRequest("empty queue name".into()));
    }
    if !is_token(queue) {
        return Err(QueueError::BadRequest(format!(
            "bad queue name `{queue}` for NATS: use letters, digits, `-` and `_` (at most 128)"
        )));
    }
    Ok(())
}

/// A job id as the backend hands it out: the decimal stream sequence of its first message.
pub fn seq_of(id: &JobId) -> Option<u64> {
    id.0.parse::<u64>()
        .ok()
        .filter(|&n| n > 0 && id.0 == n.to_string())
}
