//! The schema: created on open, versioned in `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::Failure;
use crate::queue::QueueError;

/// The schema this build writes and reads.
pub(super) const VERSION: i64 = 5;

const SCHEMA: &str = include_str!("schema.sql");

/// Create the schema if the file has none, in one `BEGIN IMMEDIATE` transaction so that
/// processes opening a new file at once take turns; refuse a file from a newer build.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > VERSION {
        return Err(Failure::Queue(QueueError::Store(format!(
            "the database has schema version {version}, newer than this build's {VERSION}"
        ))));
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
    tx.execute_batch(SCHEMA)?;
    if version < VERSION {
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
