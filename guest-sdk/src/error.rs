//! [`JobError`]: why an attempt did not succeed, and what the host should do next.

use std::fmt;
use std::time::Duration;

use crate::wit::spool::job::types as wit;

/// Why an attempt did not succeed, and what the host should do next.
///
/// Each variant maps onto a case of the WIT `job-error`. Build one with [`JobError::retry`],
/// [`JobError::retry_after`], [`JobError::fail`], [`JobError::delay`] or
/// [`JobError::wait_for_children`]; the constructors take any [`Display`](fmt::Display) value,
/// so `.map_err(JobError::fail)?` works on any error.
///
/// The `?` operator converts any [`std::error::Error`] into a retryable error whose message is
/// the error followed by its sources, because an unexpected error is usually transient. (That
/// blanket conversion is why `JobError` does not itself implement `std::error::Error`.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// Try again later, as long as attempts remain; after the last the job is dead.
    Retry {
        /// What went wrong, for the job's log and the dead-letter queue.
        message: String,
        /// Wait at least this long before the next attempt; `None` lets the host's backoff
        /// policy decide.
        retry_after: Option<Duration>,
    },
    /// A permanent failure: no further attempt can succeed, the job is dead at once.
    Fail {
        /// What went wrong.
        message: String,
    },
    /// Not ready yet: run the job again after this long without spending an attempt.
    Delay {
        /// How long to wait; sent to the host in whole milliseconds, rounded up.
        after: Duration,
    },
    /// The payload does not decode into what the handler expects: permanent, and reported as a
    /// decode failure rather than a run failure. [`export!`](crate::export) returns it for
    /// payloads that do not deserialize.
    InvalidPayload {
        /// What is wrong with the payload, naming the field.
        message: String,
    },
    /// Park the job until every child it [enqueued](crate::enqueue) is finished, then run it again
    /// (without spending an attempt) with their outcomes in [`Job::children`](crate::Job::children).
    WaitForChildren,
}

impl JobError {
    /// A transient failure; the host's backoff policy picks when to try again.
    pub fn retry(message: impl fmt::Display) -> Self {
        Self::Retry {
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A transient failure that should not be retried before `after` has passed.
    pub fn retry_after(message: impl fmt::Display, after: Duration) -> Self {
        Self::Retry {
            message: message.to_string(),
            retry_after: Some(after),
        }
    }

    /// A permanent failure: the job goes to the dead-letter queue without another attempt.
    pub fn fail(message: impl fmt::Display) -> Self {
        Self::Fail {
            message: message.to_string(),
        }
    }

    /// The payload cannot be handled: permanent, reported as a decode failure.
    pub fn invalid_payload(message: impl fmt::Display) -> Self {
        Self::InvalidPayload {
            message: message.to_string(),
        }
    }

    /// Run the job again after `after`, without spending an attempt.
    pub fn delay(after: Duration) -> Self {
        Self::Delay { after }
    }

    /// Wait until every child this job enqueued is finished, then run again without spending an
    /// attempt; the next run sees the children's outcomes in
    /// [`Job::children`](crate::Job::children).
    ///
    /// A child that dies makes the parent fail for good at once, unless it was enqueued with
    /// [`OnChildFailure::Report`](crate::OnChildFailure::Report).
    pub fn wait_for_children() -> Self {
        Self::WaitForChildren
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retry {
                message,
                retry_after: None,
            } => write!(f, "retryable: {message}"),
            Self::Retry {
                message,
                retry_after: Some(after),
            } => {
                write!(f, "retryable after {} ms: {message}", millis(*after))
            }
            Self::Fail { message } => write!(f, "failed: {message}"),
            Self::Delay { after } => write!(f, "delayed by {} ms", millis(*after)),
            Self::InvalidPayload { message } => write!(f, "invalid payload: {message}"),
            Self::WaitForChildren => f.write_str("waiting for children"),
        }
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::retry(message)
    }
}

impl From<JobError> for wit::JobError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Retry {
                message,
                retry_after,
            } => wit::JobError::Retry(wit::RetryError {
                message,
                retry_after_ms: retry_after.map(millis),
            }),
            JobError::Fail { message } => wit::JobError::Fail(message),
            JobError::Delay { after } => wit::JobError::Delay(millis(after)),
            JobError::InvalidPayload { message } => wit::JobError::InvalidPayload(message),
            JobError::WaitForChildren => wit::JobError::WaitForChildren,
        }
    }
}

/// Whole milliseconds, rounded up so that "at least this long" stays true, saturating at
/// `u64::MAX`.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_maps_to_wit_retry_without_delay() {
        let wit = wit::JobError::from(JobError::retry("smtp down"));
        let wit::JobError::Retry(retry) = wit else {
            panic!("expected retry, got {wit:?}")
        };
        assert_eq!(retry.message, "smtp down");
        assert_eq!(retry.retry_after_ms, None);
    }

    #[test]
    fn retry_after_sends_whole_milliseconds_rounded_up() {
        let error = JobError::retry_after("rate limited", Duration::from_micros(1_500));
        let wit = wit::JobError::from(error);
        let wit::JobError::Retry(retry) = wit else {
            panic!("expected retry, got {wit:?}")
        };
        assert_eq!(retry.retry_after_ms, Some(2));
    }

    #[test]
    fn fail_delay_and_wait_map_to_their_wit_cases() {
        assert!(matches!(
            wit::JobError::from(JobError::fail("invalid recipient")),
            wit::JobError::Fail(message) if message == "invalid recipient"
        ));
        assert!(matches!(
            wit::JobError::from(JobError::delay(Duration::from_secs(5))),
            wit::JobError::Delay(5_000)
        ));
        assert!(matches!(
            wit::JobError::from(JobError::wait_for_children()),
            wit::JobError::WaitForChildren
        ));
    }

    #[test]
    fn huge_durations_saturate() {
        assert!(matches!(
            wit::JobError::from(JobError::delay(Duration::MAX)),
            wit::JobError::Delay(u64::MAX)
        ));
    }

    #[test]
    fn std_errors_become_retryable_with_their_sources() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("sending mail")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(
            JobError::from(Outer(io)),
            JobError::retry("sending mail: connection refused")
        );
    }

    #[test]
    fn map_err_works_with_any_displayable_error() {
        let parsed: Result<u32, JobError> = "x".parse::<u32>().map_err(JobError::fail);
        assert_eq!(parsed, Err(JobError::fail("invalid digit found in string")));
    }

    #[test]
    fn display_says_what_happens_next() {
        assert_eq!(
            JobError::retry("smtp down").to_string(),
            "retryable: smtp down"
        );
        assert_eq!(
            JobError::retry_after("slow down", Duration::from_secs(1)).to_string(),
            "retryable after 1000 ms: slow down"
        );
        assert_eq!(JobError::fail("bad").to_string(), "failed: bad");
        assert_eq!(
            JobError::delay(Duration::from_millis(30)).to_string(),
            "delayed by 30 ms"
        );
        assert_eq!(
            JobError::wait_for_children().to_string(),
            "waiting for children"
        );
    }
}
