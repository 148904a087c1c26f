//! Child jobs: [`enqueue`] starts one, [`JobError::wait_for_children`] waits for them.
//!
//! A parent enqueues its children during an attempt and then usually returns
//! `wait_for_children`. The host creates the children only when that attempt settles with
//! success, a delay or a wait. It parks the parent until every child is finished, then runs it
//! again with their outcomes in [`Job::children`](crate::Job::children). The children of an
//! attempt that fails, traps or times out are never created, so the next attempt can enqueue
//! them again without duplicates.

use std::time::Duration;

use serde::Serialize;

use crate::JobError;
use crate::error::millis;
use crate::wit::spool::job::types as wit;

/// What happens to a parent waiting for its children when this child dies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnChildFailure {
    /// The parent fails for good at once (to the dead-letter queue).
    #[default]
    FailParent,
    /// The parent runs again when all its children are finished and sees the failure in
    /// [`Job::children`](crate::Job::children).
    Report,
}

impl From<OnChildFailure> for wit::OnChildFailure {
    fn from(on_failure: OnChildFailure) -> Self {
        match on_failure {
            OnChildFailure::FailParent => Self::FailParent,
            OnChildFailure::Report => Self::Report,
        }
    }
}

/// How to enqueue a child job.
///
/// The default runs the child as soon as the parent's attempt settles, at priority 0, with the
/// child queue's default attempts, no idempotency key and no metadata, and fails the parent if
/// the child dies. Each method changes one of those:
///
/// ```
/// use std::time::Duration;
/// use spool_sdk::{EnqueueOptions, OnChildFailure};
///
/// let options = EnqueueOptions::default()
///     .delay(Duration::from_secs(30))
///     .priority(10)
///     .key("invoice-42")
///     .on_failure(OnChildFailure::Report);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    delay: Option<Duration>,
    priority: i32,
    max_attempts: Option<u32>,
    key: Option<String>,
    metadata: Vec<(String, String)>,
    on_failure: OnChildFailure,
}

impl EnqueueOptions {
    /// Do not run the child before `delay` has passed since the parent's attempt settled.
    /// Sent to the host in whole milliseconds, rounded up.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Run the child before lower-priority jobs on its queue (higher runs first; default 0).
    #[must_use]
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Allow the child `max_attempts` attempts in all, instead of its queue's default.
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Enqueue the child under idempotency key `key`, unique among the unfinished jobs of its
    /// queue.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Hand the child one more metadata pair.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// What the parent does if this child dies (default [`OnChildFailure::FailParent`]).
    #[must_use]
    pub fn on_failure(mut self, on_failure: OnChildFailure) -> Self {
        self.on_failure = on_failure;
        self
    }
}

impl From<EnqueueOptions> for wit::EnqueueOptions {
    fn from(options: EnqueueOptions) -> Self {
        Self {
            delay_ms: options.delay.map(millis),
            priority: options.priority,
            max_attempts: options.max_attempts,
            key: options.key,
            metadata: options.metadata,
            on_failure: options.on_failure.into(),
        }
    }
}

/// Enqueue a child of this job on `queue` with `payload` encoded as JSON, and return the
/// child's id.
///
/// The child is created only when this attempt settles with success, a delay or
/// [`JobError::wait_for_children`]; the children of an attempt that fails, traps or times out
/// never exist, so the next attempt may enqueue them again. A payload that cannot be JSON, or a
/// request the host refuses (an empty queue name, too many children), is a [`JobError::fail`],
/// since asking again would be refused again.
///
/// Outside wasm32 nothing is enqueued: the call returns a made-up id, `child-1`, `child-2` and
/// so on, counted per thread.
///
/// A parent that fans out and then adds up what its children return:
///
/// ```
/// use spool_sdk::{EnqueueOptions, Job, JobError};
///
/// /// Fetches every URL in a child job on `fetch`, then adds up the sizes they return.
/// fn total_size(job: &Job, urls: Vec<String>) -> Result<u64, JobError> {
///     if job.children().is_empty() && !urls.is_empty() {
///         for url in &urls {
///             spool_sdk::enqueue("fetch", url, EnqueueOptions::default())?;
///         }
///         return Err(JobError::wait_for_children());
///     }
///     let mut total = 0;
///     for child in job.children() {
///         if let Some(size) = child.output_json::<u64>() {
///             total += size?;
///         }
///     }
///     Ok(total)
/// }
/// # fn main() {
/// #     use spool_sdk::{Child, ChildState};
/// #     let job = Job::new("p", "crawl", "[]");
/// #     let urls = vec!["a".to_owned(), "b".to_owned()];
/// #     assert_eq!(total_size(&job, urls.clone()), Err(JobError::wait_for_children()));
/// #     let woken = job
/// #         .with_child(Child::new("c1", "fetch", ChildState::Succeeded).with_output("3"))
/// #         .with_child(Child::new("c2", "fetch", ChildState::Succeeded).with_output("4"));
/// #     assert_eq!(total_size(&woken, urls), Ok(7));
/// # }
/// ```
pub fn enqueue<T: Serialize + ?Sized>(
    queue: &str,
    payload: &T,
    options: EnqueueOptions,
) -> Result<String, JobError> {
    let bytes = serde_json::to_vec(payload)
        .map_err(|e| JobError::fail(format_args!("bad child payload: {e}")))?;
    enqueue_bytes(queue, &bytes, options)
}

/// Enqueue a child of this job on `queue` with `payload` exactly as given, and return the
/// child's id; [`enqueue`] without JSON.
pub fn enqueue_bytes(
    queue: &str,
    payload: &[u8],
    options: EnqueueOptions,
) -> Result<String, JobError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wit::spool::job::host::enqueue(queue, payload, &options.into())
            .map_err(|reason| JobError::fail(format_args!("cannot enqueue on {queue:?}: {reason}")))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (queue, payload, options);
        Ok(native::next_child_id())
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::Cell;

    thread_local! {
        static ENQUEUED: Cell<u64> = const { Cell::new(0) };
    }

    /// `child-N`, where N counts the calls on this thread.
    pub(super) fn next_child_id() -> String {
        let n = ENQUEUED.with(|count| {
            count.set(count.get() + 1);
            count.get()
        });
        format!("child-{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_fail_the_parent_and_leave_the_rest_to_the_host() {
        let wit = wit::EnqueueOptions::from(EnqueueOptions::default());
        assert_eq!(
            (wit.delay_ms, wit.priority, wit.max_attempts, wit.key),
            (None, 0, None, None)
        );
        assert!(wit.metadata.is_empty());
        assert!(matches!(wit.on_failure, wit::OnChildFailure::FailParent));
    }

    #[test]
    fn every_option_reaches_the_wit_record() {
        let options = EnqueueOptions::default()
            .delay(Duration::from_micros(2_500))
            .priority(-3)
            .max_attempts(7)
            .key("k1")
            .metadata("trace", "abc")
            .on_failure(OnChildFailure::Report);
        let wit = wit::EnqueueOptions::from(options);
        assert_eq!(wit.delay_ms, Some(3));
        assert_eq!(wit.priority, -3);
        assert_eq!(wit.max_attempts, Some(7));
        assert_eq!(wit.key.as_deref(), Some("k1"));
        assert_eq!(wit.metadata, vec![("trace".to_owned(), "abc".to_owned())]);
        assert!(matches!(wit.on_failure, wit::OnChildFailure::Report));
    }

    #[test]
    fn native_enqueue_hands_out_fresh_ids() {
        let first = enqueue("thumbs", &[1, 2], EnqueueOptions::default());
        let second = enqueue_bytes("thumbs", b"raw", EnqueueOptions::default());
        let (Ok(first), Ok(second)) = (first, second) else {
            panic!("native enqueue cannot fail")
        };
        assert!(first.starts_with("child-"));
        assert_ne!(first, second);
    }

    #[test]
    fn payload_that_cannot_be_json_fails() {
        let tuple_keys = std::collections::BTreeMap::from([((1, 2), 3)]);
        assert_eq!(
            enqueue("q", &tuple_keys, EnqueueOptions::default()),
            Err(JobError::fail("bad child payload: key must be a string"))
        );
    }
}
