//! The job as one attempt sees it.

use serde::{Deserialize, Serialize};

/// Everything the sandbox hands a plugin for one attempt of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInput {
    /// The job's id, stable across attempts.
    pub id: String,
    /// The queue the job was enqueued on.
    pub queue: String,
    /// The payload bytes as enqueued (JSON for plugins built with the Rust SDK).
    pub payload: Vec<u8>,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// How many attempts the job may have in all.
    pub max_attempts: u32,
    /// The state an earlier attempt saved with `checkpoint`, if any.
    pub checkpoint: Option<Vec<u8>>,
    /// The tenant the job belongs to, if any.
    pub tenant: Option<String>,
    /// Key/value pairs the producer attached to the job.
    pub metadata: Vec<(String, String)>,
    /// The job that enqueued this one, if any.
    pub parent: Option<String>,
    /// Steps earlier attempts completed: name and stored result, in the order they completed.
    pub steps: Vec<(String, Vec<u8>)>,
    /// Children earlier attempts enqueued, with their outcomes so far.
    pub children: Vec<crate::queue::ChildOutcome>,
}

impl JobInput {
    /// A first attempt (of `max_attempts = 1`) of a job with this queue and payload.
    pub fn new(queue: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        JobInput {
            id: String::new(),
            queue: queue.into(),
            payload: payload.into(),
            attempt: 1,
            max_attempts: 1,
            ..JobInput::default()
        }
    }
}
