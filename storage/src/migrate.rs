//! Forward-only, numbered schema migrations.
//!
//! A class declares its schema as an ordered list of [`Migration`]s (SQL, usually
//! `include_str!` of a commented `.sql` file). Migration *n* (1-based) upgrades version *n−1* to
//! *n*; the version lives in `PRAGMA user_version`. Each step runs in its own transaction
//! together with the version bump, so a failure leaves the previous version intact. A database
//! whose version is above the newest migration was written by a newer build and is refused.
//!
//! The runtime's own tables (`_clawdo_*`) are created separately by [`ensure_runtime_schema`]
//! with their own version in `_clawdo_meta`, so class versions start at 1 for every class.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::Error;

/// One schema step of an object class.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Short description, for logs.
    pub name: &'static str,
    /// SQL executed as one batch inside the step's transaction.
    pub sql: &'static str,
}

/// Version of the runtime's own tables.
const RUNTIME_SCHEMA_VERSION: i64 = 1;

const RUNTIME_SCHEMA_V1: &str = "
-- Who this file belongs to; checked on every open to catch misplaced files or hash collisions.
CREATE TABLE IF NOT EXISTS _clawdo_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- Small KV store: codec-encoded values (leading format byte).
CREATE TABLE IF NOT EXISTS _clawdo_kv (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
-- Named timers; the unnamed timer '' is the object's alarm. The armed alarm is MIN(at).
CREATE TABLE IF NOT EXISTS _clawdo_timers (
    name TEXT PRIMARY KEY,
    at   INTEGER NOT NULL
) WITHOUT ROWID;
-- Alarm retry state: one row while a failed alarm is being retried.
CREATE TABLE IF NOT EXISTS _clawdo_alarm_retry (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    retry_count INTEGER NOT NULL
);
";

/// Create or upgrade the runtime's own tables and record which object owns the file.
/// Returns the `class/id` recorded in the file (which the caller compares to the expected one).
pub fn ensure_runtime_schema(conn: &mut Connection, owner: &str) -> Result<String, Error> {
    let has_meta: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = '_clawdo_meta')",
        [],
        |r| r.get(0),
    )?;
    if has_meta {
        let version: Option<i64> = conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM _clawdo_meta WHERE key = 'runtime_schema'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let recorded: Option<String> = conn
            .query_row(
                "SELECT value FROM _clawdo_meta WHERE key = 'owner'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if version == Some(RUNTIME_SCHEMA_VERSION)
            && let Some(recorded) = recorded
        {
            return Ok(recorded);
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(RUNTIME_SCHEMA_V1)?;
    tx.execute(
        "INSERT INTO _clawdo_meta (key, value) VALUES ('owner', ?1) ON CONFLICT (key) DO NOTHING",
        [owner],
    )?;
    tx.execute(
        "INSERT INTO _clawdo_meta (key, value) VALUES ('runtime_schema', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [RUNTIME_SCHEMA_VERSION.to_string()],
    )?;
    let recorded: String = tx.query_row(
        "SELECT value FROM _clawdo_meta WHERE key = 'owner'",
        [],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(recorded)
}

/// Bring the class schema of `conn` up to `migrations.len()`. Returns the version before.
pub fn run_migrations(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<u32, Error> {
    let known = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    let found: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (index, migration) in migrations.iter().enumerate().skip(found as usize) {
        let version = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(migration.sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        step(conn).map_err(|source| Error::Migration { version, source })?;
        tracing::debug!(path = %path.display(), version, name = migration.name, "migrated");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            name: "log table",
            sql: "CREATE TABLE log (id INTEGER PRIMARY KEY, delta INTEGER NOT NULL);",
        },
        Migration {
            name: "log timestamp",
            sql: "ALTER TABLE log ADD COLUMN at INTEGER NOT NULL DEFAULT 0;",
        },
        Migration {
            name: "log index",
            sql: "CREATE INDEX log_at ON log (at);",
        },
    ];

    fn schema(conn: &Connection) -> Result<Vec<String>, Error> {
        let mut stmt = conn.prepare(
            "SELECT sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    #[test]
    fn every_upgrade_path_ends_at_the_fresh_schema() -> Result<(), Error> {
        let mut fresh = Connection::open_in_memory()?;
        run_migrations(&mut fresh, Path::new(":memory:"), STEPS)?;
        let want = schema(&fresh)?;
        for start in 0..=STEPS.len() {
            let mut conn = Connection::open_in_memory()?;
            run_migrations(&mut conn, Path::new(":memory:"), &STEPS[..start])?;
            assert_eq!(
                run_migrations(&mut conn, Path::new(":memory:"), STEPS)?,
                start as u32
            );
            assert_eq!(schema(&conn)?, want, "upgrade from version {start}");
        }
        Ok(())
    }

    #[test]
    fn a_newer_database_is_refused() -> Result<(), Error> {
        let mut conn = Connection::open_in_memory()?;
        run_migrations(&mut conn, Path::new(":memory:"), STEPS)?;
        let err = run_migrations(&mut conn, Path::new(":memory:"), &STEPS[..1]);
        assert!(matches!(
            err,
            Err(Error::SchemaTooNew {
                found: 3,
                known: 1,
                ..
            })
        ));
        Ok(())
    }

    #[test]
    fn a_failing_step_keeps_the_previous_version() -> Result<(), Error> {
        let bad = [
            STEPS[0],
            Migration {
                name: "broken",
                sql: "CREATE TABLE x (a); THIS IS NOT SQL;",
            },
        ];
        let mut conn = Connection::open_in_memory()?;
        let err = run_migrations(&mut conn, Path::new(":memory:"), &bad);
        assert!(matches!(err, Err(Error::Migration { version: 2, .. })));
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, 1);
        let x_exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'x')",
            [],
            |r| r.get(0),
        )?;
        assert!(!x_exists, "the failed step's partial work was rolled back");
        Ok(())
    }
}
