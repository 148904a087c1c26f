//! Reading the values requests carry: times, states, phases, limits.

use std::str::FromStr;
use std::time::UNIX_EPOCH;

use super::error::ApiError;
use crate::queue::{Timestamp, now};

/// A point in time: RFC 3339 (`2026-11-23T10:00:00Z`), or a duration meaning that long ago
/// (`1h`), or from now when `future` is set (as the `spool` command reads them).
pub fn time(field: &str, text: &str, future: bool) -> Result<Timestamp, ApiError> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        return Ok(i64::try_from(ms).unwrap_or(i64::MAX));
    }
    let span = crate::units::parse_duration(text).map_err(|_| {
        ApiError::bad_request(format!(
            "bad {field} `{text}`: write it as RFC 3339 (2026-11-23T10:00:00Z) or a duration (1h)"
        ))
    })?;
    let span = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
    Ok(if future { now() + span } else { now() - span })
}

/// [`time`] for an optional parameter.
pub fn time_opt(field: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| time(field, t, false)).transpose()
}

/// A kebab-case name of `T` (a state, a phase), or a 400 listing the valid ones.
pub fn one_of<T>(field: &str, text: &str) -> Result<T, ApiError>
where
    T: FromStr + strum::VariantNames,
{
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "bad {field} `{text}`: use one of {}",
            T::VARIANTS.join(", ")
        ))
    })
}

/// A page size: `default` when absent, at most `max`.
pub fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) if n > max => Err(ApiError::bad_request(format!(
            "limit {n} is over the maximum of {max}"
        ))),
        Some(n) => Ok(n),
    }
}
