//! Helpers shared by the subcommands: reading and printing times, bytes and JSON.

use std::time::{Duration, UNIX_EPOCH};

use spool::queue::Timestamp;

/// A timestamp as RFC 3339 UTC with milliseconds.
pub fn time(ts: Timestamp) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ts).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Read a point in time: RFC 3339 (`2026-11-23T10:00:00Z`) or a duration meaning that long
/// ago (`1h`), or from now when `future` is set.
pub fn parse_time(text: &str, future: bool) -> anyhow::Result<Timestamp> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        return Ok(i64::try_from(ms).unwrap_or(i64::MAX));
    }
    let span = spool::units::parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "bad time `{text}`: write it as RFC 3339 (2026-11-23T10:00:00Z) or a duration (1h)"
        )
    })?;
    let span = i64::try_from(span.as_millis()).unwrap_or(i64::MAX);
    let now = spool::queue::now();
    Ok(if future { now + span } else { now - span })
}

/// Bytes as text when they are UTF-8.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Print `value` as one line of JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// One log line of an attempt: time since the attempt started, level, source, message, fields.
pub fn log_line(line: &spool::LogLine) -> String {
    let fields: String = line
        .fields
        .iter()
        .map(|(k, v)| format!(" {k}={v}"))
        .collect();
    format!(
        "+{:>8.2}ms {:<5} {:<6} {}{fields}",
        line.at.as_secs_f64() * 1000.0,
        line.level,
        line.source_name(),
        line.message,
    )
}

/// A value parser for an enum named in kebab-case (`--state`, `--phase`): a bad value is
/// refused with the list of valid ones, which `--help` shows too.
pub fn one_of<T>() -> impl clap::builder::TypedValueParser<Value = T>
where
    T: strum::VariantNames + std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(T::VARIANTS.iter().copied())
        .try_map(|name| name.parse::<T>())
}
