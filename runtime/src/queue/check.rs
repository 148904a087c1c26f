//! The rules a job must meet before any backend stores it, written once: what a queue name
//! may be and how large a payload may be.
//!
//! Both backends call [`check_jobs`] at the top of every enqueue (and a schedule's fire), the
//! configuration loader calls [`check_queue_name`] on every `[queues.NAME]`, and the worker
//! checks a child job with [`check_job`] when a plugin enqueues it, so the CLI, a plugin's
//! children and the configuration all meet the same rule on either backend.
//!
//! ```
//! use spool::queue::check::{check_payload, check_queue_name};
//!
//! assert!(check_queue_name("email-v2_eu").is_ok());
//! assert!(check_queue_name("bad queue/name").is_err());
//! assert!(check_payload(2048, 1024).is_err());
//! ```

use super::{NewJob, QueueError};

/// The longest queue name, in bytes.
pub const MAX_QUEUE_NAME: usize = 128;

/// The largest payload a backend takes unless configured otherwise (`[worker] max_payload`):
/// 16 MiB. A NATS backend takes less when its server's `max_payload` leaves less room.
pub const DEFAULT_MAX_PAYLOAD: usize = 16 << 20;

/// Check a queue name: 1 to [`MAX_QUEUE_NAME`] ASCII letters, digits, `-` and `_`. On NATS a
/// queue name is one subject token and part of consumer names, so nothing else can be
/// allowed there, and SQLite follows the same rule so a queue can move between backends.
pub fn check_queue_name(name: &str) -> Result<(), QueueError> {
    match bad_queue_name(name) {
        Some(why) => Err(QueueError::BadRequest(why)),
        None => Ok(()),
    }
}

/// What is wrong with a queue name ([`check_queue_name`]'s rule), in words; `None` for a
/// good one.
pub fn bad_queue_name(name: &str) -> Option<String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_QUEUE_NAME {
        "it is longer than 128 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "use ASCII letters, digits, `-` and `_`"
    } else {
        return None;
    };
    Some(format!("bad queue name `{name}`: {why}"))
}

/// Check a payload's size against `limit` bytes.
pub fn check_payload(size: usize, limit: usize) -> Result<(), QueueError> {
    if size > limit {
        return Err(QueueError::PayloadTooLarge {
            size,
            limit,
            why: None,
        });
    }
    Ok(())
}

/// Check one job: its queue name and its payload's size.
pub fn check_job(job: &NewJob, max_payload: usize) -> Result<(), QueueError> {
    check_queue_name(&job.queue)?;
    check_payload(job.payload.len(), max_payload)
}

/// Check every job of a batch; the error names the first job that fails (counting from 0).
pub fn check_jobs(jobs: &[NewJob], max_payload: usize) -> Result<(), QueueError> {
    for (n, job) in jobs.iter().enumerate() {
        check_job(job, max_payload).map_err(|e| match e {
            QueueError::BadRequest(why) => {
                QueueError::BadRequest(format!("job {n} of the batch: {why}"))
            }
            other => other,
        })?;
    }
    Ok(())
}

/// A size in words: `20971520 bytes (20.0 MiB)`.
pub(crate) fn bytes(n: usize) -> String {
    if n < 1024 {
        return format!("{n} bytes");
    }
    let size = bytesize::ByteSize(u64::try_from(n).unwrap_or(u64::MAX));
    format!("{n} bytes ({})", size.display().iec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_letters_digits_dashes_and_underscores() {
        for good in ["email", "Email-2", "a_b", &"q".repeat(128)] {
            assert!(check_queue_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "bad queue/name",
            "a.b",
            "a*",
            "a>",
            "é",
            &"q".repeat(129),
        ] {
            let err = check_queue_name(bad).unwrap_err().to_string();
            assert!(err.contains("bad queue name"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_naming_the_limit() {
        assert!(check_payload(1024, 1024).is_ok());
        let err = check_payload(20 << 20, 16 << 20).unwrap_err().to_string();
        assert!(err.contains("16777216 bytes (16.0 MiB)"), "{err}");
        assert!(err.contains("20971520 bytes (20.0 MiB)"), "{err}");
    }
}
