//! [`Child`]: a job this one [enqueued](crate::enqueue), and how it ended.

use serde::de::DeserializeOwned;

use crate::JobError;
use crate::payload::decode_json;
use crate::wit::spool::job::types as wit;

/// Where a child job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildState {
    /// Not finished yet: scheduled, ready, running or waiting for its own children.
    Pending,
    /// Finished with output.
    Succeeded,
    /// Failed for good: in the dead-letter queue.
    Dead,
    /// Cancelled.
    Cancelled,
}

impl ChildState {
    /// Whether the child is done, one way or another: anything but [`ChildState::Pending`].
    pub fn is_finished(self) -> bool {
        self != Self::Pending
    }
}

impl From<wit::ChildState> for ChildState {
    fn from(state: wit::ChildState) -> Self {
        match state {
            wit::ChildState::Pending => Self::Pending,
            wit::ChildState::Succeeded => Self::Succeeded,
            wit::ChildState::Dead => Self::Dead,
            wit::ChildState::Cancelled => Self::Cancelled,
        }
    }
}

/// A child job an earlier attempt enqueued, and its outcome so far.
///
/// Handlers find them in [`Job::children`](crate::Job::children). [`Child::new`] and the
/// `with_*` methods build one by hand, for unit tests that wake a parent with
/// [`Job::with_child`](crate::Job::with_child).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    id: String,
    queue: String,
    state: ChildState,
    output: Option<Vec<u8>>,
    error: Option<String>,
}

impl Child {
    /// Child `id` on `queue` in `state`, with no output or error.
    pub fn new(id: impl Into<String>, queue: impl Into<String>, state: ChildState) -> Self {
        Self {
            id: id.into(),
            queue: queue.into(),
            state,
            output: None,
            error: None,
        }
    }

    /// This child having returned `output`.
    #[must_use]
    pub fn with_output(mut self, output: impl Into<Vec<u8>>) -> Self {
        self.output = Some(output.into());
        self
    }

    /// This child having last failed with `error`.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// The child's id, as [`enqueue`](crate::enqueue) returned it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The queue the child was enqueued on.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Where the child is.
    pub fn state(&self) -> ChildState {
        self.state
    }

    /// The child's output bytes, once it has succeeded.
    pub fn output(&self) -> Option<&[u8]> {
        self.output.as_deref()
    }

    /// The child's output decoded from JSON, once it has succeeded.
    ///
    /// `None` when there is no output; output that does not decode as `T` is a
    /// [`JobError::fail`] naming the child and the field.
    pub fn output_json<T: DeserializeOwned>(&self) -> Option<Result<T, JobError>> {
        self.output
            .as_deref()
            .map(|bytes| decode_json(bytes, &format!("bad output of child {:?}", self.id)))
    }

    /// The child's last error, once it is dead.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl From<wit::Child> for Child {
    fn from(child: wit::Child) -> Self {
        Self {
            id: child.id,
            queue: child.queue,
            state: child.state.into(),
            output: child.output,
            error: child.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Square {
        value: i64,
    }

    #[test]
    fn succeeded_child_output_decodes_as_json() {
        let child =
            Child::new("c1", "squares", ChildState::Succeeded).with_output(r#"{"value": 9}"#);
        assert_eq!(child.output_json::<Square>(), Some(Ok(Square { value: 9 })));
        assert!(child.state().is_finished());
    }

    #[test]
    fn child_without_output_has_nothing_to_decode() {
        let child = Child::new("c1", "squares", ChildState::Dead).with_error("boom");
        assert_eq!(child.output_json::<Square>(), None);
        assert_eq!(child.error(), Some("boom"));
    }

    #[test]
    fn undecodable_output_fails_naming_the_child_and_field() {
        let child =
            Child::new("c1", "squares", ChildState::Succeeded).with_output(r#"{"value": "9"}"#);
        assert_eq!(
            child.output_json::<Square>(),
            Some(Err(JobError::fail(
                r#"bad output of child "c1": value: invalid type: string "9", expected i64"#
            )))
        );
    }

    #[test]
    fn only_pending_is_unfinished() {
        assert!(!ChildState::Pending.is_finished());
        for state in [
            ChildState::Succeeded,
            ChildState::Dead,
            ChildState::Cancelled,
        ] {
            assert!(state.is_finished());
        }
    }
}
