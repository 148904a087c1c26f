//! [`Job`]: the attempt a handler is running, as plain Rust.
//!
//! Besides what the producer enqueued, a job carries what earlier attempts left behind: the
//! last checkpoint, the completed [`Step`]s that [`Job::step`] replays, and the [`Child`] jobs it
//! enqueued with their outcomes.

use std::cell::RefCell;

use serde::de::DeserializeOwned;

use crate::payload::decode_json;
use crate::wit::spool::job::types as wit;
use crate::{Child, JobError, Step};

/// One attempt of one job, as handed to the handler.
///
/// Handlers receive it by reference next to their decoded payload. [`Job::new`] and the `with_*`
/// methods build one by hand, for unit tests that call a handler directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    id: String,
    queue: String,
    payload: Vec<u8>,
    attempt: u32,
    max_attempts: u32,
    checkpoint: Option<Vec<u8>>,
    tenant: Option<String>,
    metadata: Vec<(String, String)>,
    parent: Option<String>,
    /// What earlier attempts completed, as the host handed it over.
    steps: Vec<Step>,
    /// What this attempt completed. A `RefCell` because handlers only get `&Job`; it is never
    /// borrowed while a step's closure runs, so nested steps are fine.
    steps_this_attempt: RefCell<Vec<Step>>,
    children: Vec<Child>,
}

impl Job {
    /// A job on its first and only attempt, with no checkpoint, tenant, metadata, parent, steps
    /// or children.
    pub fn new(
        id: impl Into<String>,
        queue: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        Self {
            id: id.into(),
            queue: queue.into(),
            payload: payload.into(),
            attempt: 1,
            max_attempts: 1,
            checkpoint: None,
            tenant: None,
            metadata: Vec::new(),
            parent: None,
            steps: Vec::new(),
            steps_this_attempt: RefCell::default(),
            children: Vec::new(),
        }
    }

    /// This job on attempt `attempt` of `max_attempts`.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32, max_attempts: u32) -> Self {
        self.attempt = attempt;
        self.max_attempts = max_attempts;
        self
    }

    /// This job carrying `state` as the checkpoint of an earlier attempt.
    #[must_use]
    pub fn with_checkpoint(mut self, state: impl Into<Vec<u8>>) -> Self {
        self.checkpoint = Some(state.into());
        self
    }

    /// This job belonging to `tenant`.
    #[must_use]
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// This job with one more metadata pair.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// This job enqueued by the job `parent`.
    #[must_use]
    pub fn with_parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    /// This job with step `name` completed by an earlier attempt, its result stored as `output`
    /// (JSON, for [`Job::step`] to decode).
    #[must_use]
    pub fn with_step(mut self, name: impl Into<String>, output: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::new(name.into(), output.into()));
        self
    }

    /// This job woken with one more child enqueued by an earlier attempt.
    #[must_use]
    pub fn with_child(mut self, child: Child) -> Self {
        self.children.push(child);
        self
    }

    /// The job's id, stable across attempts.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue the job was enqueued on.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The payload exactly as enqueued (for Rust plugins, UTF-8 JSON).
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Which attempt this is, starting at 1. A [`JobError::delay`] does not spend an attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the job may have in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether a retryable error from this attempt sends the job to the dead-letter queue.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// The tenant the job belongs to, if it was enqueued with one.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The key/value pairs the producer attached, in order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The value of the first metadata pair named `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The state the last [`checkpoint`](crate::checkpoint_bytes) of an earlier attempt saved.
    pub fn checkpoint_bytes(&self) -> Option<&[u8]> {
        self.checkpoint.as_deref()
    }

    /// The earlier attempt's [`checkpoint`](crate::checkpoint), decoded from JSON.
    ///
    /// `None` when there is no checkpoint; a checkpoint that does not decode as `T` is a
    /// [`JobError::fail`] naming the field, like a bad payload.
    pub fn checkpoint<T: DeserializeOwned>(&self) -> Option<Result<T, JobError>> {
        self.checkpoint
            .as_deref()
            .map(|bytes| decode_json(bytes, "bad checkpoint"))
    }

    /// The job that enqueued this one with [`enqueue`](crate::enqueue), if any.
    pub fn parent(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// The steps earlier attempts completed, in the order they completed.
    ///
    /// Steps completed during this attempt are not listed, but [`Job::step`] skips them too.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The children earlier attempts of this job [enqueued](crate::enqueue), with their outcomes
    /// so far. After [`JobError::wait_for_children`] every one of them is finished.
    pub fn children(&self) -> &[Child] {
        &self.children
    }

    /// The stored output of step `name`, from this attempt or an earlier one.
    pub(crate) fn step_output(&self, name: &str) -> Option<Vec<u8>> {
        let this_attempt = self.steps_this_attempt.borrow();
        this_attempt
            .iter()
            .chain(&self.steps)
            .find(|step| step.name() == name)
            .map(|step| step.output().to_vec())
    }

    /// Remember that `step` completed during this attempt.
    pub(crate) fn remember_step(&self, step: Step) {
        self.steps_this_attempt.borrow_mut().push(step);
    }
}

thread_local! {
    /// The queue of the attempt running in this instance, for messages that name it (a request
    /// the queue's grants refused).
    static CURRENT_QUEUE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Remember `queue` as the running attempt's queue.
pub(crate) fn set_current_queue(queue: &str) {
    CURRENT_QUEUE.with(|current| *current.borrow_mut() = Some(queue.to_owned()));
}

/// The running attempt's queue, once the host has handed over a job.
#[cfg_attr(
    not(any(feature = "http", test)),
    allow(dead_code, reason = "read by the http module")
)]
pub(crate) fn current_queue() -> Option<String> {
    CURRENT_QUEUE.with(|current| current.borrow().clone())
}

impl From<wit::Job> for Job {
    fn from(job: wit::Job) -> Self {
        set_current_queue(&job.queue);
        Self {
            id: job.id,
            queue: job.queue,
            payload: job.payload,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            checkpoint: job.checkpoint,
            tenant: job.tenant,
            metadata: job.metadata,
            parent: job.parent,
            steps: job.steps.into_iter().map(Step::from).collect(),
            steps_this_attempt: RefCell::default(),
            children: job.children.into_iter().map(Child::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChildState;

    #[test]
    fn built_job_reports_what_it_was_given() {
        let job = Job::new("j1", "mail", "{}")
            .with_attempt(3, 3)
            .with_tenant("acme")
            .with_metadata("trace", "abc");
        assert_eq!(
            (job.id(), job.queue(), job.payload()),
            ("j1", "mail", &b"{}"[..])
        );
        assert!(job.is_last_attempt());
        assert_eq!(job.tenant(), Some("acme"));
        assert_eq!(job.metadata_value("trace"), Some("abc"));
        assert_eq!(job.metadata_value("missing"), None);
        assert_eq!(job.checkpoint_bytes(), None);
        assert_eq!(job.parent(), None);
        assert!(job.steps().is_empty());
        assert!(job.children().is_empty());
    }

    #[test]
    fn typed_checkpoint_decodes_json() {
        let job = Job::new("j1", "q", "{}").with_checkpoint(r#"{"sent": 4}"#);
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Progress {
            sent: u32,
        }
        assert_eq!(job.checkpoint::<Progress>(), Some(Ok(Progress { sent: 4 })));
    }

    #[test]
    fn undecodable_checkpoint_is_a_permanent_error_naming_the_field() {
        let job = Job::new("j1", "q", "{}").with_checkpoint(r#"{"sent": "four"}"#);
        #[derive(serde::Deserialize, Debug)]
        struct Progress {
            #[allow(dead_code, reason = "only decoded")]
            sent: u32,
        }
        assert_eq!(
            job.checkpoint::<Progress>().map(|r| r.map(|_| ())),
            Some(Err(JobError::fail(
                r#"bad checkpoint: sent: invalid type: string "four", expected u32"#
            )))
        );
    }

    #[test]
    fn converts_every_wit_field() {
        let job = Job::from(wit::Job {
            id: "j9".into(),
            queue: "q".into(),
            payload: b"[]".to_vec(),
            attempt: 2,
            max_attempts: 5,
            checkpoint: Some(b"1".to_vec()),
            tenant: None,
            metadata: vec![("k".into(), "v".into())],
            parent: Some("j1".into()),
            steps: vec![wit::Step {
                name: "charge".into(),
                output: b"7".to_vec(),
            }],
            children: vec![wit::Child {
                id: "c1".into(),
                queue: "thumbs".into(),
                state: wit::ChildState::Dead,
                output: None,
                error: Some("boom".into()),
            }],
        });
        let expected = Job::new("j9", "q", "[]")
            .with_attempt(2, 5)
            .with_checkpoint("1")
            .with_metadata("k", "v")
            .with_parent("j1")
            .with_step("charge", "7")
            .with_child(Child::new("c1", "thumbs", ChildState::Dead).with_error("boom"));
        assert_eq!(job, expected);
        assert_eq!(job.parent(), Some("j1"));
        assert_eq!(job.steps()[0].name(), "charge");
        assert_eq!(job.steps()[0].output(), b"7");
        assert_eq!(job.children()[0].error(), Some("boom"));
    }
}
