//! What the host gives a running attempt: a structured log, checkpoints, step results and
//! progress.
//!
//! Each function wraps one import of the WIT `host` interface (`enqueue` has its own module).
//! Outside wasm32 (native unit tests) there is no host: logs go to stderr, checkpoints, step
//! results and progress are dropped.

use std::fmt;

use serde::Serialize;

use crate::JobError;
#[cfg(target_arch = "wasm32")]
use crate::wit::spool::job::{host, types as wit};

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Fine-grained detail.
    Trace,
    /// Detail useful while debugging a job.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the job survived.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

#[cfg(target_arch = "wasm32")]
impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// Write a structured line to the attempt's log.
///
/// `fields` are key/value pairs stored with the line; values are formatted with `Display`. The
/// host bounds how much one attempt may log. [`info!`](crate::info) and its siblings are shorter.
///
/// ```
/// use spool_sdk::Level;
/// spool_sdk::log(Level::Warn, "slow smtp server", &[("host", &"mx1"), ("ms", &1200)]);
/// ```
pub fn log(level: Level, message: &str, fields: &[(&str, &dyn fmt::Display)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_string()))
            .collect();
        host::log(level.into(), message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::fmt::Write as _;
        let mut line = format!("[{level}] {message}");
        for (key, value) in fields {
            let _ = write!(line, " {key}={value}");
        }
        eprintln!("{line}");
    }
}

/// Save `state` as JSON so that a later attempt of this job gets it from
/// [`Job::checkpoint`](crate::Job::checkpoint).
///
/// Each call replaces the previous state. Fails for good only if `state` cannot be JSON.
pub fn checkpoint<T: Serialize + ?Sized>(state: &T) -> Result<(), JobError> {
    let bytes = serde_json::to_vec(state)
        .map_err(|e| JobError::fail(format_args!("bad checkpoint: {e}")))?;
    checkpoint_bytes(&bytes);
    Ok(())
}

/// Save `state` as it is, for [`Job::checkpoint_bytes`](crate::Job::checkpoint_bytes) of a
/// later attempt. Each call replaces the previous state.
pub fn checkpoint_bytes(state: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    host::checkpoint(state);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = state;
}

/// Store `output` as the result of step `name`, for [`Job::step`](crate::Job::step).
pub(crate) fn step_done(name: &str, output: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    host::step_done(name, output);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (name, output);
}

/// Report how far the attempt has got: `percent` from 0 to 100 (larger values are clamped by
/// the host) and an optional note.
pub fn progress(percent: u8, message: Option<&str>) {
    #[cfg(target_arch = "wasm32")]
    host::progress(percent, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (percent, message);
}

/// Log a line at `level` with `key = value` fields.
///
/// The message is a format string literal (inline captures like `"{count} sent"` work) or any
/// `Display` expression; field values are `Display`.
///
/// ```
/// # let to = "a@example.com";
/// spool_sdk::log!(spool_sdk::Level::Info, "sending", to = to, attempt = 2);
/// ```
#[macro_export]
macro_rules! log {
    ($level:expr, $message:literal $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log(
            $level,
            &::std::format!($message),
            &[$((::core::stringify!($key), &$value as &dyn ::core::fmt::Display)),*],
        )
    };
    ($level:expr, $message:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log(
            $level,
            &::std::string::ToString::to_string(&$message),
            &[$((::core::stringify!($key), &$value as &dyn ::core::fmt::Display)),*],
        )
    };
}

/// Log a [`Level::Trace`] line; see [`log!`](crate::log!).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Trace, $($arg)+) };
}

/// Log a [`Level::Debug`] line; see [`log!`](crate::log!).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Debug, $($arg)+) };
}

/// Log a [`Level::Info`] line; see [`log!`](crate::log!).
///
/// ```
/// # let to = "a@example.com";
/// spool_sdk::info!("sending mail to {to}", attempt = 1, mode = "ok");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Info, $($arg)+) };
}

/// Log a [`Level::Warn`] line; see [`log!`](crate::log!).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Warn, $($arg)+) };
}

/// Log a [`Level::Error`] line; see [`log!`](crate::log!).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Error, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_calls_are_harmless_outside_wasm() {
        let to = "a@b.c";
        crate::info!("sending to {to}", mode = "ok", attempt = 1);
        crate::warn!(String::from("dynamic message"));
        progress(50, Some("half way"));
        assert_eq!(checkpoint(&[1, 2, 3]), Ok(()));
    }

    #[test]
    fn levels_print_lowercase() {
        assert_eq!(Level::Warn.to_string(), "warn");
        assert!(Level::Trace < Level::Error);
    }
}
