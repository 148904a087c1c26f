//! `noop`: succeeds at once with empty output, whatever the payload.
//!
//! Used to measure what one run costs the host (instantiation, call, teardown), so it skips
//! JSON entirely: the payload is taken as [`Raw`] bytes and never looked at.

use spool_sdk::{Job, JobError, Raw};

fn noop(_: &Job, _: Raw) -> Result<Raw, JobError> {
    Ok(Raw::default())
}

spool_sdk::export!(noop);
