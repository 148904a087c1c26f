//! Conversions between Spool's types and SQLite columns.

use std::str::FromStr;
use std::time::Duration;

use rusqlite::Row;
use rusqlite::types::Type;

use crate::queue::{JobId, Timestamp};

/// The row id behind a [`JobId`]; `None` for an id this backend cannot have issued.
pub(super) fn row_id(id: &JobId) -> Option<i64> {
    id.0.parse().ok().filter(|n| *n > 0)
}

/// The [`JobId`] of a row id.
pub(super) fn job_id(id: i64) -> JobId {
    JobId(id.to_string())
}

/// `at + duration`, saturating.
pub(super) fn after(at: Timestamp, duration: Duration) -> Timestamp {
    at.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds from `from` to `to`, 0 if `to` is earlier.
pub(super) fn millis_between(from: Timestamp, to: Timestamp) -> u64 {
    u64::try_from(to.saturating_sub(from)).unwrap_or(0)
}

/// A count or limit as an SQL integer.
pub(super) fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A number of rows.
pub(super) fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A count read back from SQL.
pub(super) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Column `idx`, a name that `T` parses (a state, a phase, an event kind).
pub(super) fn name<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let text = row.get_ref(idx)?.as_str()?;
    T::from_str(text).map_err(|e| conversion(idx, e))
}

/// Column `idx`, an optional name that `T` parses.
pub(super) fn opt_name<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match row.get_ref(idx)?.as_str_or_null()? {
        Some(text) => T::from_str(text).map(Some).map_err(|e| conversion(idx, e)),
        None => Ok(None),
    }
}

/// Column `idx`, an optional JSON document (metadata, log lines); `T::default()` when NULL.
pub(super) fn json<T>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: serde::de::DeserializeOwned + Default,
{
    match row.get_ref(idx)?.as_str_or_null()? {
        Some(text) => serde_json::from_str(text).map_err(|e| conversion(idx, e)),
        None => Ok(T::default()),
    }
}

/// A list as an optional JSON column: NULL when empty, so the common row stays small.
pub(super) fn to_json<T: serde::Serialize>(items: &[T]) -> serde_json::Result<Option<String>> {
    if items.is_empty() {
        Ok(None)
    } else {
        serde_json::to_string(items).map(Some)
    }
}

/// Column `idx`, a non-negative integer (a count, a duration).
pub(super) fn opt_u64(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<u64>> {
    match row.get::<_, Option<i64>>(idx)? {
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, n)),
        None => Ok(None),
    }
}

fn conversion(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))
}
