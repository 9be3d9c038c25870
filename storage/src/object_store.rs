//! One object's database: transactions, the KV API, named timers and the object's alarm.
//!
//! [`ObjectStore::transact`] is the only place a write transaction begins and commits. Inside
//! it the object gets a [`Tx`]: plain SQL (it derefs to [`rusqlite::Transaction`]), the KV API
//! and the timer API. The armed alarm is always the earliest timer (`MIN(at)`); the unnamed
//! timer `""` is the object's alarm of [`Tx::set_alarm`]. When a transaction moves the armed
//! time, `transact` keeps the shard index early-never-late (see [`crate::index`]) and leaves an
//! [`AlarmChange`] for the runtime to hand to its dispatcher.
//!
//! The connection can be closed while the object stays resident ([`ObjectStore::close_file`],
//! used to bound open files); it is reopened on the next use.

use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Serialize, de::DeserializeOwned};

use crate::data_dir::{DataDir, Durability};
use crate::index::{ShardIndexes, open_sqlite};
use crate::migrate::{Migration, ensure_runtime_schema, run_migrations};
use crate::shard::ShardId;
use crate::{Error, UnixMillis, codec};

/// Name of the unnamed timer that is the object's alarm.
pub const ALARM_TIMER: &str = "";

/// Identity of one object: its class, id and shard.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Class name (a compile-time constant of the class, `[a-z0-9_]{1,32}`).
    pub class: &'static str,
    /// Object id (validated by the runtime before it gets here).
    pub id: String,
    /// The shard, derived from `id`.
    pub shard: ShardId,
}

impl ObjectKey {
    /// The key of object `id` of class `class`.
    pub fn new(class: &'static str, id: &str) -> ObjectKey {
        ObjectKey {
            class,
            id: id.to_string(),
            shard: ShardId::of(id),
        }
    }

    fn owner(&self) -> String {
        format!("{}/{}", self.class, self.id)
    }
}

/// The armed alarm moved; the runtime must tell its dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmChange {
    /// The new armed time (`None`: no alarm).
    pub armed: Option<UnixMillis>,
}

/// Commits after which [`ObjectStore::checkpoint_due`] asks for a WAL checkpoint.
const CHECKPOINT_EVERY: u32 = 512;

/// One object's open database.
pub struct ObjectStore {
    key: ObjectKey,
    path: PathBuf,
    durability: Durability,
    indexes: Arc<ShardIndexes>,
    conn: Option<Connection>,
    /// The earliest timer as committed (`MIN(at)` of `_clawdo_timers`).
    armed: Option<UnixMillis>,
    /// The index row once every queued index write is applied; `None` when no row is promised.
    /// Anything below it is safe to queue; anything earlier must be written before the commit.
    indexed: Option<UnixMillis>,
    pending_change: Option<AlarmChange>,
    commits_since_checkpoint: u32,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore")
            .field("key", &self.key)
            .field("open", &self.conn.is_some())
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

/// What [`ObjectStore::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The file did not exist before.
    pub created: bool,
    /// The class schema version before migrations ran.
    pub from_version: u32,
}

impl ObjectStore {
    /// Open (creating if needed) the database of `key`, migrate it, and re-assert its alarm in
    /// the shard index. The object is recorded in the catalog before its file is created.
    pub fn open(
        dir: &DataDir,
        indexes: Arc<ShardIndexes>,
        key: ObjectKey,
        migrations: &'static [Migration],
    ) -> Result<(ObjectStore, Opened), Error> {
        let path = dir.object_path(&key);
        let created = !path.exists();
        if created {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            indexes.register_object(&key)?;
        }
        let mut conn = open_object_file(&path, dir.durability())?;
        let owner = key.owner();
        let recorded = ensure_runtime_schema(&mut conn, &owner)?;
        if recorded != owner {
            return Err(Error::WrongObject {
                path,
                expected: owner,
                found: recorded,
            });
        }
        let from_version = run_migrations(&mut conn, &path, migrations)?;
        let armed = min_timer(&conn)?;
        // Re-assert the alarm with a generation newer than anything a previous activation may
        // still have queued, so that what we believe the index holds is exactly `armed`.
        match armed {
            Some(at) => indexes.write_now(&key, at)?,
            None => {
                if indexes.lookup(&key)?.is_some() {
                    indexes.delete_later(&key)?;
                }
            }
        }
        let store = ObjectStore {
            key,
            path,
            durability: dir.durability(),
            indexes,
            conn: Some(conn),
            armed,
            indexed: armed,
            pending_change: Some(AlarmChange { armed }),
            commits_since_checkpoint: 0,
        };
        Ok((
            store,
            Opened {
                created,
                from_version,
            },
        ))
    }

    /// This object's key.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// The durability commits are made with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The connection, reopening the file if it was closed. Use it for reads; writes go
    /// through [`ObjectStore::transact`].
    pub fn conn(&mut self) -> Result<&Connection, Error> {
        self.ensure_open()?;
        self.conn.as_ref().ok_or(Error::IndexWriterStopped)
    }

    /// Whether the file is open right now.
    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// Run `f` in one write transaction and commit it. On `Err` nothing is written. If `f`
    /// moved the armed alarm earlier, the shard index is updated before the commit.
    pub fn transact<T, E>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        let armed_before = self.armed;
        self.ensure_open()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Error::IndexWriterStopped.into());
        };
        let (out, armed) = run_transaction(
            conn,
            &self.indexes,
            &self.key,
            armed_before,
            &mut self.indexed,
            f,
        )?;
        self.commits_since_checkpoint = self.commits_since_checkpoint.saturating_add(1);
        if armed != armed_before {
            self.armed = armed;
            self.pending_change = Some(AlarmChange { armed });
            self.settle_index()?;
        }
        Ok(out)
    }

    /// Queue the index write that brings it up to the committed alarm (it is already ≤ it).
    fn settle_index(&mut self) -> Result<(), Error> {
        match (self.armed, self.indexed) {
            (Some(at), Some(i)) if at > i => {
                self.indexes.raise_later(&self.key, at)?;
                self.indexed = Some(at);
            }
            (None, Some(_)) => {
                self.indexes.delete_later(&self.key)?;
                self.indexed = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// The alarm change left by the last transactions, if any (taken once).
    pub fn take_alarm_change(&mut self) -> Option<AlarmChange> {
        self.pending_change.take()
    }

    /// The armed alarm: the earliest timer.
    pub fn armed(&self) -> Option<UnixMillis> {
        self.armed
    }

    /// Read a KV value.
    pub fn kv_get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error> {
        kv_get(self.conn()?, key)
    }

    /// The object's alarm (the unnamed timer), if set.
    pub fn get_alarm(&mut self) -> Result<Option<UnixMillis>, Error> {
        timer_at(self.conn()?, ALARM_TIMER)
    }

    /// Timers due at `now`, earliest first, with the current retry count.
    pub fn due_timers(&mut self, now: UnixMillis) -> Result<(Vec<DueTimer>, u32), Error> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, at FROM _clawdo_timers WHERE at <= ?1 ORDER BY at, name",
        )?;
        let due = stmt
            .query_map([now], |r| {
                Ok(DueTimer {
                    name: r.get(0)?,
                    at: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let retry_count: Option<u32> = conn
            .query_row(
                "SELECT retry_count FROM _clawdo_alarm_retry WHERE singleton = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok((due, retry_count.unwrap_or(0)))
    }

    /// Record a successful alarm: delete the fired timers the handler did not re-set, clear
    /// the retry state.
    pub fn alarm_succeeded(&mut self, fired: &[DueTimer]) -> Result<(), Error> {
        self.transact(|tx| {
            for timer in fired {
                tx.execute(
                    "DELETE FROM _clawdo_timers WHERE name = ?1 AND at = ?2",
                    params![timer.name, timer.at],
                )?;
            }
            tx.execute("DELETE FROM _clawdo_alarm_retry", [])?;
            tx.timers_touched = true;
            Ok::<_, Error>(())
        })
    }

    /// Record a failed alarm. With retries left, the fired timers move to `retry_at` and the
    /// retry count grows; otherwise they are dropped and the retry state cleared. Returns
    /// whether a retry was scheduled.
    pub fn alarm_failed(
        &mut self,
        fired: &[DueTimer],
        retry_count: u32,
        retry_at: Option<UnixMillis>,
    ) -> Result<bool, Error> {
        self.transact(|tx| {
            match retry_at {
                Some(at) => {
                    for timer in fired {
                        tx.execute(
                            "UPDATE _clawdo_timers SET at = ?3 WHERE name = ?1 AND at = ?2",
                            params![timer.name, timer.at, at],
                        )?;
                    }
                    tx.execute(
                        "INSERT INTO _clawdo_alarm_retry (singleton, retry_count) VALUES (1, ?1)
                         ON CONFLICT (singleton) DO UPDATE SET retry_count = excluded.retry_count",
                        [retry_count + 1],
                    )?;
                }
                None => {
                    for timer in fired {
                        tx.execute(
                            "DELETE FROM _clawdo_timers WHERE name = ?1 AND at = ?2",
                            params![timer.name, timer.at],
                        )?;
                    }
                    tx.execute("DELETE FROM _clawdo_alarm_retry", [])?;
                }
            }
            tx.timers_touched = true;
            Ok::<_, Error>(retry_at.is_some())
        })
    }

    /// Whether enough commits piled up in the WAL that a checkpoint is worth running.
    pub fn checkpoint_due(&self) -> bool {
        self.commits_since_checkpoint >= CHECKPOINT_EVERY
    }

    /// Copy the WAL into the database file and truncate it. May fsync: call off the async
    /// runtime's hot path.
    pub fn checkpoint(&mut self) -> Result<(), Error> {
        self.commits_since_checkpoint = 0;
        if let Some(conn) = &self.conn {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// Close the file (checkpointing it); the next use reopens it. May fsync.
    pub fn close_file(&mut self) -> Result<(), Error> {
        self.commits_since_checkpoint = 0;
        if let Some(conn) = self.conn.take() {
            conn.close().map_err(|(_, e)| Error::Sqlite(e))?;
        }
        Ok(())
    }

    fn ensure_open(&mut self) -> Result<(), Error> {
        if self.conn.is_none() {
            self.conn = Some(open_object_file(&self.path, self.durability)?);
        }
        Ok(())
    }
}

/// A timer that was due when an alarm fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// Timer name (`""` for the object's alarm).
    pub name: String,
    /// The time it was due.
    pub at: UnixMillis,
}

/// An open write transaction of one object. Derefs to [`rusqlite::Transaction`] for SQL.
pub struct Tx<'a> {
    tx: Transaction<'a>,
    timers_touched: bool,
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl Tx<'_> {
    /// Read a KV value.
    pub fn kv_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        kv_get(&self.tx, key)
    }

    /// Write a KV value.
    pub fn kv_put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = codec::encode(value)?;
        self.tx.execute(
            "INSERT INTO _clawdo_kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, bytes],
        )?;
        Ok(())
    }

    /// Delete a KV value; returns whether it existed.
    pub fn kv_delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self
            .tx
            .execute("DELETE FROM _clawdo_kv WHERE key = ?1", [key])?
            > 0)
    }

    /// Up to `limit` KV entries whose key starts with `prefix`, in key order, strictly after
    /// `after` (paging cursor).
    pub fn kv_list<T: DeserializeOwned>(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, T)>, Error> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT key, value FROM _clawdo_kv
             WHERE key >= ?1 AND key > ?2 AND substr(key, 1, length(?1)) = ?1
             ORDER BY key LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![
                prefix,
                after.unwrap_or(""),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (key, bytes) = row?;
            out.push((key, codec::decode(&bytes)?));
        }
        Ok(out)
    }

    /// Set (or move) the object's alarm.
    pub fn set_alarm(&mut self, at: UnixMillis) -> Result<(), Error> {
        self.put_timer(ALARM_TIMER, at)
    }

    /// The object's alarm, if set.
    pub fn get_alarm(&self) -> Result<Option<UnixMillis>, Error> {
        timer_at(&self.tx, ALARM_TIMER)
    }

    /// Cancel the object's alarm; returns whether it was set.
    pub fn delete_alarm(&mut self) -> Result<bool, Error> {
        self.remove_timer(ALARM_TIMER)
    }

    /// Set (or move) the named timer `name`.
    pub fn set_timer(&mut self, name: &str, at: UnixMillis) -> Result<(), Error> {
        validate_timer_name(name)?;
        self.put_timer(name, at)
    }

    /// Cancel the named timer `name`; returns whether it was set.
    pub fn cancel_timer(&mut self, name: &str) -> Result<bool, Error> {
        validate_timer_name(name)?;
        self.remove_timer(name)
    }

    /// When the named timer `name` is due, if set.
    pub fn timer(&self, name: &str) -> Result<Option<UnixMillis>, Error> {
        validate_timer_name(name)?;
        timer_at(&self.tx, name)
    }

    fn put_timer(&mut self, name: &str, at: UnixMillis) -> Result<(), Error> {
        self.tx.execute(
            "INSERT INTO _clawdo_timers (name, at) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET at = excluded.at",
            params![name, at],
        )?;
        self.timers_touched = true;
        Ok(())
    }

    fn remove_timer(&mut self, name: &str) -> Result<bool, Error> {
        let removed = self
            .tx
            .execute("DELETE FROM _clawdo_timers WHERE name = ?1", [name])?
            > 0;
        self.timers_touched |= removed;
        Ok(removed)
    }
}

/// The body of [`ObjectStore::transact`]: run `f`, keep the index early, commit. Returns `f`'s
/// output and the armed time after the commit.
fn run_transaction<T, E: From<Error>>(
    conn: &mut Connection,
    indexes: &ShardIndexes,
    key: &ObjectKey,
    armed_before: Option<UnixMillis>,
    indexed: &mut Option<UnixMillis>,
    f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
) -> Result<(T, Option<UnixMillis>), E> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(Error::from)?;
    let mut tx = Tx {
        tx,
        timers_touched: false,
    };
    let out = f(&mut tx)?;
    let armed = if tx.timers_touched {
        min_timer(&tx.tx)?
    } else {
        armed_before
    };
    if let Some(at) = armed
        && indexed.is_none_or(|i| at < i)
    {
        // Early, never late: the index learns of an earlier alarm before the commit.
        indexes.write_now(key, at)?;
        *indexed = Some(at);
    }
    tx.tx.commit().map_err(Error::from)?;
    Ok((out, armed))
}

fn validate_timer_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTimerName(name.to_string()))
    }
}

fn open_object_file(path: &std::path::Path, durability: Durability) -> Result<Connection, Error> {
    let conn = open_sqlite(path, durability)?;
    // The runtime checkpoints when it can do so off the hot path (see `checkpoint_due`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

fn min_timer(conn: &Connection) -> Result<Option<UnixMillis>, Error> {
    Ok(conn.query_row("SELECT MIN(at) FROM _clawdo_timers", [], |r| r.get(0))?)
}

fn timer_at(conn: &Connection, name: &str) -> Result<Option<UnixMillis>, Error> {
    Ok(conn
        .query_row(
            "SELECT at FROM _clawdo_timers WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?)
}

fn kv_get<T: DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>, Error> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT value FROM _clawdo_kv WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?;
    bytes.map(|b| codec::decode(&b)).transpose()
}
