//! Human-friendly durations (`5s`, `250ms`, `30m`) and sizes (`64MiB`), as the CLI and the
//! configuration read them.

use std::time::Duration;

/// A duration or size that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("bad {what} `{input}`: {reason}")]
pub struct UnitError {
    what: &'static str,
    input: String,
    reason: String,
}

/// Read a duration like `5s`, `250ms`, `30m` or `1h 30m`. A bare `0` is zero.
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let trimmed = input.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(trimmed).map_err(|e| UnitError {
        what: "duration",
        input: input.to_owned(),
        reason: format!("{e} (write it like 5s, 250ms or 30m)"),
    })
}

/// Read a size like `64MiB`, `512KiB`, `1GB` or a plain number of bytes.
pub fn parse_size(input: &str) -> Result<usize, UnitError> {
    let err = |reason: String| UnitError {
        what: "size",
        input: input.to_owned(),
        reason,
    };
    let size: bytesize::ByteSize = input
        .trim()
        .parse()
        .map_err(|e: String| err(format!("{e} (write it like 64MiB or 512KiB)")))?;
    usize::try_from(size.as_u64()).map_err(|_| err("too large".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        let err = parse_duration("5 parsecs").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bad duration `5 parsecs`")));
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(parse_size("64MiB").ok(), Some(64 << 20));
        assert_eq!(parse_size("512KiB").ok(), Some(512 << 10));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("lots").is_err());
    }
}
