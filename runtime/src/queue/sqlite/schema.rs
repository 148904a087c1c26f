//! The schema: created on open, versioned in `PRAGMA user_version`, and marked as Spool's
//! with `PRAGMA application_id`.
//!
//! A file is Spool's when its `application_id` is [`APPLICATION_ID`], or (a database made
//! before the marker existed) when it has no `application_id`, a `user_version` this build
//! knows and Spool's `jobs`, `events` and `counters` tables; such a file is stamped with the
//! marker by the next open that may write. An empty file (no tables, no version) becomes a
//! Spool database on an open that may write. Anything else is another application's
//! database and is refused before a byte of it is written.

use rusqlite::{Connection, TransactionBehavior};

use super::Failure;
use crate::queue::QueueError;

/// The schema this build writes and reads.
pub(super) const VERSION: i64 = 6;

/// Spool's `PRAGMA application_id`: the bytes `SPOL`.
pub const APPLICATION_ID: i32 = 0x5350_4F4C;

const SCHEMA: &str = include_str!("schema.sql");

/// What a database file holds, judged by reading it only.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A Spool database with this schema version (marked, or from before the marker).
    Spool {
        /// `PRAGMA user_version`.
        version: i64,
        /// Whether it carries the marker.
        marked: bool,
    },
    /// No tables and no version: a new file.
    Empty,
    /// Another application's database: why it is not Spool's.
    Foreign(String),
}

/// Read what the file at the other end of `conn` holds.
pub(super) fn identify(conn: &Connection) -> Result<Kind, Failure> {
    // One statement, so one snapshot: read apart, another process creating the schema
    // between the reads would show tables without the marker that came with them.
    let (id, version, names): (i32, i64, Option<String>) = conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id), \
                (SELECT user_version FROM pragma_user_version), \
                (SELECT group_concat(name, char(31)) FROM sqlite_master \
                 WHERE type = 'table' AND name NOT LIKE 'sqlite_%')",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    if id == APPLICATION_ID {
        return Ok(Kind::Spool {
            version,
            marked: true,
        });
    }
    if id != 0 {
        return Ok(Kind::Foreign(format!(
            "its application_id is {id:#010x}, not Spool's {APPLICATION_ID:#010x}"
        )));
    }
    let mut tables: Vec<String> = names
        .as_deref()
        .map(|names| names.split('\u{1f}').map(str::to_owned).collect())
        .unwrap_or_default();
    tables.sort();
    if tables.is_empty() && version == 0 {
        return Ok(Kind::Empty);
    }
    let has = |name: &str| tables.iter().any(|t| t == name);
    if version >= 1 && has("jobs") && has("events") && has("counters") {
        return Ok(Kind::Spool {
            version,
            marked: false,
        });
    }
    let mut listed = tables
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if tables.len() > 5 {
        listed.push_str(", ...");
    }
    Ok(Kind::Foreign(if tables.is_empty() {
        format!("it has user_version {version} and no Spool marker")
    } else {
        format!("it has tables of its own ({listed}) and no Spool marker")
    }))
}

/// The refusal of a file that is not a Spool database.
pub(super) fn foreign(why: String) -> Failure {
    Failure::Queue(QueueError::Store(format!(
        "not a Spool database: {why}; it was left untouched"
    )))
}

/// Check a file opened read-only: Spool's, with the schema this build reads.
pub(super) fn check_readable(conn: &Connection) -> Result<(), Failure> {
    match identify(conn)? {
        Kind::Spool { version, .. } if version == VERSION => Ok(()),
        Kind::Spool { version, .. } if version > VERSION => Err(newer(version)),
        Kind::Spool { version, .. } => Err(Failure::Queue(QueueError::Store(format!(
            "the database has schema version {version}, older than this build's {VERSION}: \
             a command that writes (`spool worker`, `spool enqueue`) migrates it"
        )))),
        Kind::Empty => Err(foreign("it is empty".to_owned())),
        Kind::Foreign(why) => Err(foreign(why)),
    }
}

fn newer(version: i64) -> Failure {
    Failure::Queue(QueueError::Store(format!(
        "the database has schema version {version}, newer than this build's {VERSION}"
    )))
}

/// Whether `table` has a column `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

/// Create the schema if the file has none, in one `BEGIN IMMEDIATE` transaction so that
/// processes opening a new file at once take turns; refuse a file from a newer build or
/// another application; stamp the marker on a Spool file made before it existed.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (version, marked) = match identify(&tx)? {
        Kind::Spool { version, marked } => (version, marked),
        Kind::Empty => (0, false),
        Kind::Foreign(why) => return Err(foreign(why)),
    };
    if version > VERSION {
        return Err(newer(version));
    }
    if version == 1 {
        // Version 2 added flows: the parent link and what a child's death does to its parent
        // (the `steps` table and the `jobs_parent` index come from the schema itself).
        tx.execute_batch(
            "ALTER TABLE jobs ADD COLUMN parent_id INTEGER; \
             ALTER TABLE jobs ADD COLUMN on_parent_failure TEXT;",
        )?;
    }
    if (1..3).contains(&version) {
        // Version 3 added job groups (the flow-control indexes and the rate buckets come
        // from the schema itself).
        tx.execute_batch("ALTER TABLE jobs ADD COLUMN group_key TEXT;")?;
    }
    // Version 4 added schedules and leader locks: new tables only, which the schema creates.
    if (1..5).contains(&version) {
        // Version 5 added the attempts' outbound HTTP counts and keeps the last progress a
        // job's attempt reported.
        tx.execute_batch(
            "ALTER TABLE attempts ADD COLUMN http TEXT; \
             ALTER TABLE jobs ADD COLUMN progress TEXT;",
        )?;
    }
    if version >= 1 && !has_column(&tx, "jobs", "traceparent")? {
        // Version 6 keeps the W3C trace context a job was enqueued in (judged by the column
        // itself rather than the version, so the step stands on its own) ...
        tx.execute_batch("ALTER TABLE jobs ADD COLUMN traceparent TEXT;")?;
    }
    // ... and adds the worker registry: a new table only, which the schema creates.
    tx.execute_batch(SCHEMA)?;
    if version < VERSION {
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    if !marked {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    tx.commit()?;
    Ok(())
}
