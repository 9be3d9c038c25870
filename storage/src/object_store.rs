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

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Serialize, de::DeserializeOwned};

use crate::data_dir::{DataDir, Durability};
use crate::index::{ShardIndexes, open_sqlite, set_synchronous};
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

/// A WAL found larger than this when a file is opened is checkpointed soon (files are closed
/// without a checkpoint, and the commit count does not survive hibernation).
const WAL_CHECKPOINT_BYTES: u64 = 1 << 20;

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
        if created {
            set_synchronous(&conn, dir.durability())?;
        }
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
        let mut store = store;
        store.note_wal_size();
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
            // The transaction is committed: whatever happens to the index now must not turn
            // it into an error. A raise or delete that cannot be queued leaves the index
            // early, which is allowed; the next fire or activation re-syncs it.
            if let Err(error) = self.settle_index() {
                tracing::warn!(key = ?self.key, %error, "could not queue an alarm index update");
            }
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

    /// Bring the index up to the committed alarm if it is known to be early (after a fire that
    /// found nothing due, or a commit that failed after the index was written).
    pub fn resync_index(&mut self) -> Result<(), Error> {
        self.settle_index()
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
                        [retry_count.saturating_add(1)],
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
        if let Some(conn) = &self.conn {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            self.commits_since_checkpoint = 0;
        }
        Ok(())
    }

    /// Close the file (without a checkpoint: the WAL stays and is replayed at the next open);
    /// the next use reopens it.
    pub fn close_file(&mut self) -> Result<(), Error> {
        if let Some(conn) = self.conn.take() {
            conn.close().map_err(|(_, e)| Error::Sqlite(e))?;
        }
        Ok(())
    }

    fn ensure_open(&mut self) -> Result<(), Error> {
        if self.conn.is_none() {
            self.conn = Some(open_object_file(&self.path, self.durability)?);
            self.note_wal_size();
        }
        Ok(())
    }

    /// Ask for a checkpoint if the WAL left by earlier closes has grown large.
    fn note_wal_size(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_CHECKPOINT_BYTES) {
            self.commits_since_checkpoint = CHECKPOINT_EVERY;
        }
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
             WHERE key >= ?1 AND (?2 IS NULL OR key > ?2) AND substr(key, 1, length(?1)) = ?1
             ORDER BY key LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![prefix, after, i64::try_from(limit).unwrap_or(i64::MAX)],
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
    // Closing must stay cheap: files are closed to stay within the open-file budget and
    // reopened on the next use, and a checkpoint at close would fsync every time. The WAL is
    // left in place (it is replayed at the next open) and checkpointed by `checkpoint`.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde::Deserialize;

    use super::*;

    const ITEMS_STEP: Migration = Migration {
        name: "items and a deferred foreign key",
        sql: "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
              CREATE TABLE parent (id INTEGER PRIMARY KEY);
              CREATE TABLE child (
                  id     INTEGER PRIMARY KEY,
                  parent INTEGER NOT NULL REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
              );",
    };
    const NOTES_STEP: Migration = Migration {
        name: "notes",
        sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    };
    const MIGRATIONS: &[Migration] = &[ITEMS_STEP];
    const MIGRATIONS_V2: &[Migration] = &[ITEMS_STEP, NOTES_STEP];

    /// A data directory with its shard indexes. `_tmp` is declared last so it is removed last.
    struct Env {
        dir: DataDir,
        indexes: Arc<ShardIndexes>,
        _tmp: tempfile::TempDir,
    }

    fn env() -> Result<Env, Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let (dir, indexes) = open_dir(tmp.path())?;
        Ok(Env {
            dir,
            indexes,
            _tmp: tmp,
        })
    }

    fn open_dir(root: &Path) -> Result<(DataDir, Arc<ShardIndexes>), Error> {
        let dir = DataDir::open(root, Durability::Process)?;
        let indexes = Arc::new(ShardIndexes::open(&dir)?);
        Ok((dir, indexes))
    }

    fn key(id: &str) -> ObjectKey {
        ObjectKey::new("counter", id)
    }

    fn open_in(
        dir: &DataDir,
        indexes: &Arc<ShardIndexes>,
        id: &str,
        migrations: &'static [Migration],
    ) -> Result<(ObjectStore, Opened), Error> {
        ObjectStore::open(dir, Arc::clone(indexes), key(id), migrations)
    }

    impl Env {
        fn open(&self, id: &str) -> Result<(ObjectStore, Opened), Error> {
            open_in(&self.dir, &self.indexes, id, MIGRATIONS)
        }

        /// Open `id` and consume the alarm change every `open` reports.
        fn open_quiet(&self, id: &str) -> Result<ObjectStore, Error> {
            let (mut store, _) = self.open(id)?;
            store.take_alarm_change();
            Ok(store)
        }
    }

    /// A closure error that is not a storage failure.
    fn abort() -> Error {
        Error::InvalidClassName("test abort".into())
    }

    fn is_abort(result: &Result<(), Error>) -> bool {
        matches!(result, Err(Error::InvalidClassName(s)) if s == "test abort")
    }

    /// Whether `result` is the refusal of timer name `bad`.
    fn refused<T>(result: &Result<T, Error>, bad: &str) -> bool {
        matches!(result, Err(Error::InvalidTimerName(name)) if name == bad)
    }

    /// Every timer row, by name.
    fn timers(store: &mut ObjectStore) -> Result<Vec<(String, UnixMillis)>, Error> {
        let conn = store.conn()?;
        let mut stmt = conn.prepare("SELECT name, at FROM _clawdo_timers ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The armed time as the object's database says (the truth).
    fn min_at_in_db(store: &mut ObjectStore) -> Result<Option<UnixMillis>, Error> {
        Ok(store
            .conn()?
            .query_row("SELECT MIN(at) FROM _clawdo_timers", [], |r| r.get(0))?)
    }

    fn count_rows(store: &mut ObjectStore, table: &str) -> Result<i64, Error> {
        Ok(store
            .conn()?
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
    }

    fn table_exists(store: &mut ObjectStore, table: &str) -> Result<bool, Error> {
        Ok(store.conn()?.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |r| r.get(0),
        )?)
    }

    fn wal_path(path: &Path) -> PathBuf {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    fn due(name: &str, at: UnixMillis) -> DueTimer {
        DueTimer {
            name: name.to_string(),
            at,
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item {
        name: String,
        count: u64,
        tags: Vec<String>,
        note: Option<String>,
    }

    fn item(n: u64) -> Item {
        Item {
            name: format!("item-{n}"),
            count: n,
            tags: (0..n % 3).map(|t| format!("t{t}")).collect(),
            note: n.is_multiple_of(2).then(|| "even".to_string()),
        }
    }

    fn list(
        store: &mut ObjectStore,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Item)>, Error> {
        store.transact(|tx| tx.kv_list::<Item>(prefix, after, limit))
    }

    fn list_keys(store: &mut ObjectStore, prefix: &str) -> Result<Vec<String>, Error> {
        Ok(list(store, prefix, None, 1000)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    // ---- 1. transactions -----------------------------------------------------------------

    #[test]
    fn transact_commits_on_ok_and_writes_nothing_on_err() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("tx")?;
        let key = store.key().clone();

        let out = store.transact(|tx| {
            tx.execute("INSERT INTO items (id, name) VALUES (1, 'one')", [])?;
            tx.kv_put("kept", &item(1))?;
            tx.kv_put("doomed", &item(2))?;
            Ok::<_, Error>("committed")
        })?;
        assert_eq!(out, "committed", "transact returns the closure's value");

        let result = store.transact(|tx| {
            tx.execute("INSERT INTO items (id, name) VALUES (2, 'two')", [])?;
            tx.execute("UPDATE items SET name = 'changed' WHERE id = 1", [])?;
            tx.kv_put("new", &item(3))?;
            tx.kv_put("kept", &item(4))?;
            assert!(tx.kv_delete("doomed")?);
            tx.set_alarm(1_000)?;
            tx.set_timer("named", 2_000)?;
            // Inside the transaction its own writes are visible...
            assert_eq!(tx.kv_get::<Item>("new")?, Some(item(3)));
            assert_eq!(tx.get_alarm()?, Some(1_000));
            // ...and then the closure fails.
            Err::<(), _>(abort())
        });
        assert!(is_abort(&result), "the closure's own error comes back");

        // Close and reopen the file so the checks read what is on disk.
        store.close_file()?;
        let rows: Vec<(i64, String)> = {
            let conn = store.conn()?;
            let mut stmt = conn.prepare("SELECT id, name FROM items ORDER BY id")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        assert_eq!(rows, vec![(1, "one".to_string())], "SQL of the Err closure");
        assert_eq!(store.kv_get::<Item>("kept")?, Some(item(1)));
        assert_eq!(store.kv_get::<Item>("doomed")?, Some(item(2)));
        assert_eq!(store.kv_get::<Item>("new")?, None);
        assert_eq!(timers(&mut store)?, vec![], "no timer of the Err closure");
        assert_eq!(store.armed(), None);
        assert_eq!(store.get_alarm()?, None);
        assert_eq!(store.take_alarm_change(), None);
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, None);
        Ok(())
    }

    // ---- 2. KV -----------------------------------------------------------------------------

    #[test]
    fn kv_put_get_delete_round_trip_serde_values() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("kv")?;
        assert_eq!(store.kv_get::<Item>("missing")?, None);
        store.transact(|tx| {
            for n in 0..5 {
                tx.kv_put(&format!("k{n}"), &item(n))?;
            }
            Ok::<_, Error>(())
        })?;
        for n in 0..5 {
            assert_eq!(store.kv_get::<Item>(&format!("k{n}"))?, Some(item(n)));
        }
        // Overwrite, delete (reporting whether the key existed).
        let (first, second) = store.transact(|tx| {
            tx.kv_put("k1", &item(41))?;
            let first = tx.kv_delete("k2")?;
            let second = tx.kv_delete("k2")?;
            Ok::<_, Error>((first, second))
        })?;
        assert!(first, "deleting an existing key reports true");
        assert!(!second, "deleting a missing key reports false");
        assert_eq!(store.kv_get::<Item>("k1")?, Some(item(41)));
        assert_eq!(store.kv_get::<Item>("k2")?, None);
        // Other value types go through the same codec.
        store.transact(|tx| {
            tx.kv_put("str", "text")?;
            tx.kv_put("num", &-7i64)?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(store.kv_get::<String>("str")?.as_deref(), Some("text"));
        assert_eq!(store.kv_get::<i64>("num")?, Some(-7));
        Ok(())
    }

    #[test]
    fn kv_list_pages_by_cursor_within_the_prefix_only() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("kv-list")?;
        let inside: Vec<String> = (0..10).map(|n| format!("a:{n:02}")).collect();
        let outside = ["a", "a9", "a;", "ab", "b:", "b:1", "A:1", "`:1", ""];
        store.transact(|tx| {
            for (n, k) in inside.iter().enumerate() {
                tx.kv_put(k, &item(n as u64))?;
            }
            for (n, k) in outside.iter().enumerate() {
                tx.kv_put(k, &item(100 + n as u64))?;
            }
            assert!(tx.kv_delete("a:05")?);
            Ok::<_, Error>(())
        })?;
        let mut want: Vec<(String, Item)> = inside
            .iter()
            .enumerate()
            .map(|(n, k)| (k.clone(), item(n as u64)))
            .collect();
        want.retain(|(k, _)| k != "a:05");

        // Page through with limit 3.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = Vec::new();
        loop {
            let page = list(&mut store, "a:", cursor.as_deref(), 3)?;
            if page.is_empty() {
                break;
            }
            pages.push(page.len());
            cursor = page.last().map(|(k, _)| k.clone());
            seen.extend(page);
        }
        assert_eq!(pages, vec![3, 3, 3]);
        assert_eq!(
            seen, want,
            "every key of the prefix once, in order, values intact"
        );

        // One big page is the same; limit 0 is empty.
        assert_eq!(list(&mut store, "a:", None, 100)?, want);
        assert_eq!(list(&mut store, "a:", None, 0)?, vec![]);
        // The cursor is strict and may lie outside the prefix.
        let after =
            |page: Vec<(String, Item)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            after(list(&mut store, "a:", Some("a:04"), 2)?),
            vec!["a:06", "a:07"]
        );
        assert_eq!(after(list(&mut store, "a:", Some("a"), 100)?).len(), 9);
        assert_eq!(after(list(&mut store, "a:", Some("a:zz"), 100)?).len(), 0);
        assert_eq!(after(list(&mut store, "a:", Some("b"), 100)?).len(), 0);
        // `b:` sees only its own keys, `b:1` sees exactly itself.
        assert_eq!(list_keys(&mut store, "b:")?, vec!["b:", "b:1"]);
        assert_eq!(list_keys(&mut store, "b:1")?, vec!["b:1"]);
        Ok(())
    }

    #[test]
    fn kv_list_prefix_is_literal_even_with_like_metacharacters() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("kv-like")?;
        let keys = [
            "50%_off",
            "50%_off:1",
            "50%_off:2",
            "50%Xoff:3",
            "50abcoff:4",
            "50%",
            "x_y",
            "xzy",
            "x%y",
            "xay",
            "X_Y",
            "a\\b",
            "a\\\\b",
            "ab",
            "é:1",
            "é:2",
            "éx",
            "e:1",
        ];
        store.transact(|tx| {
            for (n, k) in keys.iter().enumerate() {
                tx.kv_put(k, &item(n as u64))?;
            }
            Ok::<_, Error>(())
        })?;
        assert_eq!(
            list_keys(&mut store, "50%_off:")?,
            vec!["50%_off:1", "50%_off:2"]
        );
        assert_eq!(
            list_keys(&mut store, "50%_")?,
            vec!["50%_off", "50%_off:1", "50%_off:2"]
        );
        assert_eq!(
            list_keys(&mut store, "50%")?,
            vec!["50%", "50%Xoff:3", "50%_off", "50%_off:1", "50%_off:2"]
        );
        assert_eq!(
            list_keys(&mut store, "x_")?,
            vec!["x_y"],
            "`_` is not a wildcard"
        );
        assert_eq!(
            list_keys(&mut store, "x%")?,
            vec!["x%y"],
            "`%` is not a wildcard"
        );
        assert_eq!(list_keys(&mut store, "X_")?, vec!["X_Y"], "case-sensitive");
        assert_eq!(list_keys(&mut store, "a\\")?, vec!["a\\\\b", "a\\b"]);
        assert_eq!(
            list_keys(&mut store, "é:")?,
            vec!["é:1", "é:2"],
            "non-ASCII prefix"
        );
        Ok(())
    }

    #[test]
    fn kv_list_without_a_cursor_includes_the_empty_key() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("kv-empty")?;
        store.transact(|tx| {
            tx.kv_put("", &item(0))?;
            tx.kv_put("a", &item(1))?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(
            store.kv_get::<Item>("")?,
            Some(item(0)),
            "the empty key is stored"
        );
        assert_eq!(list_keys(&mut store, "")?, vec!["", "a"]);
        Ok(())
    }

    // ---- 3. early, never late ---------------------------------------------------------------

    #[test]
    fn an_earlier_alarm_is_indexed_before_the_commit() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("early")?;
        let key = store.key().clone();
        store.conn()?.execute_batch("PRAGMA foreign_keys = ON")?;

        // The closure succeeds but the COMMIT fails (a deferred foreign key is checked only at
        // commit): the index already holds the alarm, although the object never got it. That
        // is the allowed direction (early).
        let result = store.transact(|tx| {
            tx.set_alarm(1_000)?;
            tx.execute("INSERT INTO child (id, parent) VALUES (1, 999)", [])?;
            Ok::<_, Error>(())
        });
        assert!(
            matches!(result, Err(Error::Sqlite(_))),
            "commit must fail: {result:?}"
        );
        assert_eq!(store.get_alarm()?, None, "the object has no alarm");
        assert_eq!(store.armed(), None);
        assert_eq!(count_rows(&mut store, "child")?, 0, "rolled back");
        assert_eq!(store.take_alarm_change(), None);
        assert_eq!(
            env.indexes.lookup(&key)?,
            Some(1_000),
            "the index was written before the commit was attempted"
        );

        // A closure that sets an earlier alarm and then fails: the object is unchanged and the
        // index is never later than the truth.
        store.transact(|tx| tx.set_alarm(5_000))?;
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(5_000));
        let result = store.transact(|tx| {
            tx.set_alarm(2_000)?;
            Err::<(), _>(abort())
        });
        assert!(is_abort(&result));
        assert_eq!(store.get_alarm()?, Some(5_000));
        assert_eq!(store.armed(), Some(5_000));
        let seen = env.indexes.lookup(&key)?;
        assert!(
            seen.is_some_and(|i| i <= 5_000),
            "index {seen:?} later than 5000"
        );

        // Never the reverse: once `transact` returned, a committed earlier alarm is in the
        // index without waiting for the lazy writer.
        store.transact(|tx| tx.set_alarm(3_000))?;
        assert_eq!(env.indexes.lookup(&key)?, Some(3_000));
        store.transact(|tx| tx.set_timer("sooner", 2_500))?;
        assert_eq!(env.indexes.lookup(&key)?, Some(2_500));
        Ok(())
    }

    #[test]
    fn moving_later_or_deleting_updates_the_index_lazily_and_never_late() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("lazy")?;
        let key = store.key().clone();

        store.transact(|tx| tx.set_alarm(1_000))?;
        assert_eq!(env.indexes.lookup(&key)?, Some(1_000));

        // Later: before the flush the index shows the old earlier time or the truth.
        store.transact(|tx| tx.set_alarm(5_000))?;
        let seen = env.indexes.lookup(&key)?;
        assert!(
            matches!(seen, Some(1_000 | 5_000)),
            "before flush: {seen:?}"
        );
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(5_000));

        // The earliest named timer cancelled: the armed time moves later.
        store.transact(|tx| {
            tx.set_timer("a", 2_000)?;
            tx.set_timer("b", 7_000)?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(env.indexes.lookup(&key)?, Some(2_000));
        store.transact(|tx| tx.cancel_timer("a").map(|_| ()))?;
        assert_eq!(store.armed(), Some(5_000));
        let seen = env.indexes.lookup(&key)?;
        assert!(
            matches!(seen, Some(2_000 | 5_000)),
            "before flush: {seen:?}"
        );
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(5_000));

        // Deleted: until the flush the row may stay (early: there is no alarm at all).
        store.transact(|tx| {
            tx.delete_alarm()?;
            tx.cancel_timer("b")?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(store.armed(), None);
        let seen = env.indexes.lookup(&key)?;
        assert!(matches!(seen, None | Some(5_000)), "before flush: {seen:?}");
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, None);

        // A new alarm after the delete is not lost to the queued delete.
        store.transact(|tx| tx.set_alarm(9_000))?;
        assert_eq!(env.indexes.lookup(&key)?, Some(9_000));
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(9_000));
        Ok(())
    }

    /// A small deterministic generator (no `rand` in this crate).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a>(&mut self, names: &[&'a str]) -> &'a str {
            names[self.below(names.len() as u64) as usize]
        }

        fn time(&mut self) -> UnixMillis {
            1_000 + self.below(10_000) as i64
        }
    }

    #[test]
    fn the_index_is_never_late_across_random_timer_operations() -> Result<(), Error> {
        const NAMES: &[&str] = &["reconcile", "action", "cleanup"];
        let env = env()?;
        let mut objects = Vec::new();
        for id in ["rand-0", "rand-1", "rand-2"] {
            objects.push((env.open_quiet(id)?, BTreeMap::<String, UnixMillis>::new()));
        }
        let mut rng = Lcg(0x5eed_c1a0);
        for step in 0..500 {
            let which = rng.below(objects.len() as u64) as usize;
            let (store, model) = &mut objects[which];
            match rng.below(9) {
                0 => {
                    let at = rng.time();
                    store.transact(|tx| tx.set_alarm(at))?;
                    model.insert(String::new(), at);
                }
                1 => {
                    let existed = store.transact(|tx| tx.delete_alarm())?;
                    assert_eq!(existed, model.remove("").is_some(), "step {step}");
                }
                2 | 3 => {
                    let (name, at) = (rng.pick(NAMES), rng.time());
                    store.transact(|tx| tx.set_timer(name, at))?;
                    model.insert(name.to_string(), at);
                }
                4 => {
                    let name = rng.pick(NAMES);
                    let existed = store.transact(|tx| tx.cancel_timer(name))?;
                    assert_eq!(existed, model.remove(name).is_some(), "step {step}");
                }
                5 => {
                    // Several moves in one transaction.
                    let (a, t1, b, t2, c) = (
                        rng.pick(NAMES),
                        rng.time(),
                        rng.pick(NAMES),
                        rng.time(),
                        rng.pick(NAMES),
                    );
                    store.transact(|tx| {
                        tx.set_timer(a, t1)?;
                        tx.set_timer(b, t2)?;
                        tx.cancel_timer(c)?;
                        Ok::<_, Error>(())
                    })?;
                    model.insert(a.to_string(), t1);
                    model.insert(b.to_string(), t2);
                    model.remove(c);
                }
                6 => {
                    // Aborted: nothing changes.
                    let (at, name) = (rng.time(), rng.pick(NAMES));
                    let result = store.transact(|tx| {
                        tx.set_alarm(at)?;
                        tx.cancel_timer(name)?;
                        Err::<(), _>(abort())
                    });
                    assert!(is_abort(&result), "step {step}");
                }
                7 => {
                    // The alarm fires and succeeds.
                    let now = rng.time();
                    let (fired, _) = store.due_timers(now)?;
                    let mut want: Vec<DueTimer> = model
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(name, at)| due(name, *at))
                        .collect();
                    want.sort_by(|x, y| (x.at, &x.name).cmp(&(y.at, &y.name)));
                    assert_eq!(fired, want, "step {step}");
                    store.alarm_succeeded(&fired)?;
                    for timer in &fired {
                        model.remove(&timer.name);
                    }
                }
                _ => {
                    // The alarm fires and fails; its timers are retried later.
                    let now = rng.time();
                    let (fired, retries) = store.due_timers(now)?;
                    let retry_at = now + 1 + rng.below(5_000) as i64;
                    assert!(store.alarm_failed(&fired, retries, Some(retry_at))?);
                    for timer in &fired {
                        model.insert(timer.name.clone(), retry_at);
                    }
                }
            }
            for (store, model) in &mut objects {
                let truth = model.values().min().copied();
                assert_eq!(
                    min_at_in_db(store)?,
                    truth,
                    "step {step}: database vs model"
                );
                assert_eq!(store.armed(), truth, "step {step}: armed()");
                let seen = env.indexes.lookup(store.key())?;
                if let Some(armed) = truth {
                    assert!(
                        seen.is_some_and(|i| i <= armed),
                        "step {step}: index {seen:?} is later than the armed {armed}"
                    );
                }
            }
            if step % 50 == 49 {
                env.indexes.flush()?;
                for (store, _) in &objects {
                    assert_eq!(
                        env.indexes.lookup(store.key())?,
                        store.armed(),
                        "step {step}"
                    );
                }
            }
        }
        env.indexes.flush()?;
        for (store, _) in &objects {
            assert_eq!(env.indexes.lookup(store.key())?, store.armed());
        }
        Ok(())
    }

    #[test]
    fn transact_never_reports_a_committed_transaction_as_failed() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("after-close")?;
        let key = store.key().clone();
        store.transact(|tx| tx.set_alarm(1_000))?;
        // The index writer stops (as in a shutdown whose deadline passed with objects running).
        env.indexes.close();

        let later = store.transact(|tx| {
            tx.kv_put("later", &1u8)?;
            tx.set_alarm(5_000)
        });
        let committed = store.kv_get::<u8>("later")?.is_some();
        assert_eq!(
            later.is_ok(),
            committed,
            "moving later: transact returned {later:?} but committed = {committed}"
        );
        // Skipping the lazy raise is safe: the index stays early.
        assert_eq!(env.indexes.lookup(&key)?, Some(1_000));

        let deleted = store.transact(|tx| {
            tx.kv_put("deleted", &1u8)?;
            tx.delete_alarm().map(|_| ())
        });
        let committed = store.kv_get::<u8>("deleted")?.is_some();
        assert_eq!(
            deleted.is_ok(),
            committed,
            "deleting: transact returned {deleted:?} but committed = {committed}"
        );
        Ok(())
    }

    // ---- 4. alarm changes ---------------------------------------------------------------------

    #[test]
    fn take_alarm_change_reports_exactly_when_the_armed_time_moved() -> Result<(), Error> {
        let env = env()?;
        let (mut store, _) = env.open("changes")?;
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: None }),
            "open reports the initial state"
        );
        assert_eq!(store.take_alarm_change(), None, "taken once");

        store.transact(|tx| tx.kv_put("k", &1u8))?;
        assert_eq!(store.take_alarm_change(), None, "no timer touched");

        store.transact(|tx| tx.set_alarm(1_000))?;
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(1_000) })
        );
        store.transact(|tx| tx.set_alarm(1_000))?;
        assert_eq!(store.take_alarm_change(), None, "set to the same time");

        store.transact(|tx| tx.set_timer("later", 2_000))?;
        assert_eq!(store.take_alarm_change(), None, "not the earliest timer");
        store.transact(|tx| tx.set_timer("later", 3_000))?;
        assert_eq!(store.take_alarm_change(), None, "not the earliest timer");

        store.transact(|tx| tx.set_timer("later", 500))?;
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(500) })
        );
        store.transact(|tx| tx.cancel_timer("later").map(|_| ()))?;
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(1_000) })
        );

        let result = store.transact(|tx| {
            tx.set_alarm(10)?;
            Err::<(), _>(abort())
        });
        assert!(is_abort(&result));
        assert_eq!(
            store.take_alarm_change(),
            None,
            "an aborted change is no change"
        );

        // Moved and moved back inside one transaction: MIN is unchanged.
        store.transact(|tx| {
            tx.set_alarm(50)?;
            tx.set_alarm(1_000)?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(store.take_alarm_change(), None);

        // Two changes before a take: the latest armed time is reported.
        store.transact(|tx| tx.set_alarm(700))?;
        store.transact(|tx| tx.set_alarm(800))?;
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(800) })
        );

        store.transact(|tx| tx.delete_alarm().map(|_| ()))?;
        assert_eq!(store.take_alarm_change(), Some(AlarmChange { armed: None }));
        store.transact(|tx| tx.delete_alarm().map(|_| ()))?;
        assert_eq!(store.take_alarm_change(), None, "nothing to delete");

        // A reopened object reports its armed state once.
        store.transact(|tx| tx.set_timer("t", 4_000))?;
        drop(store);
        let (mut store, _) = env.open("changes")?;
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(4_000) })
        );
        assert_eq!(store.take_alarm_change(), None);
        Ok(())
    }

    // ---- 5. named timers ----------------------------------------------------------------------

    #[test]
    fn the_armed_alarm_is_the_earliest_timer_and_set_alarm_is_the_unnamed_one() -> Result<(), Error>
    {
        let env = env()?;
        let mut store = env.open_quiet("timers")?;
        let key = store.key().clone();

        store.transact(|tx| {
            tx.set_timer("reconcile", 3_000)?;
            tx.set_timer("action", 2_000)?;
            tx.set_alarm(2_500)?;
            assert_eq!(tx.timer("action")?, Some(2_000));
            assert_eq!(tx.timer("nope")?, None);
            assert_eq!(tx.get_alarm()?, Some(2_500));
            Ok::<_, Error>(())
        })?;
        assert_eq!(store.armed(), Some(2_000));
        assert_eq!(store.get_alarm()?, Some(2_500));
        assert_eq!(
            timers(&mut store)?,
            vec![
                (String::new(), 2_500),
                ("action".into(), 2_000),
                ("reconcile".into(), 3_000)
            ],
            "the alarm is the timer named \"\""
        );
        assert_eq!(env.indexes.lookup(&key)?, Some(2_000));

        // cancel_timer reports whether the timer existed.
        let (first, second, never) = store.transact(|tx| {
            Ok::<_, Error>((
                tx.cancel_timer("action")?,
                tx.cancel_timer("action")?,
                tx.cancel_timer("never-set")?,
            ))
        })?;
        assert!(first && !second && !never);
        assert_eq!(store.armed(), Some(2_500));

        let (first, second) =
            store.transact(|tx| Ok::<_, Error>((tx.delete_alarm()?, tx.delete_alarm()?)))?;
        assert!(first && !second);
        assert_eq!(store.get_alarm()?, None);
        assert_eq!(
            store.armed(),
            Some(3_000),
            "the named timer still arms the alarm"
        );

        // A named timer does not touch the unnamed alarm, and vice versa.
        store.transact(|tx| tx.set_alarm(9_000))?;
        store.transact(|tx| tx.set_timer("reconcile", 8_000))?;
        assert_eq!(store.get_alarm()?, Some(9_000));
        assert_eq!(store.armed(), Some(8_000));

        // Names at the limits of the rule are accepted.
        let longest = "x".repeat(64);
        store.transact(|tx| {
            tx.set_timer(&longest, 100)?;
            tx.set_timer("a.b_c:d-E9", 200)?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(store.armed(), Some(100));
        Ok(())
    }

    #[test]
    fn invalid_timer_names_are_refused_and_write_nothing() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("bad-names")?;
        let key = store.key().clone();
        let too_long = "x".repeat(65);
        for bad in ["", too_long.as_str(), "a/b", "a b", "é", "a\nb"] {
            // Propagated: the whole transaction is refused.
            let result = store.transact(|tx| {
                tx.kv_put("marker", &1u8)?;
                tx.set_timer(bad, 100)?;
                Ok::<_, Error>(())
            });
            assert!(refused(&result, bad), "{bad:?}: {result:?}");
            // Swallowed: the calls themselves wrote nothing.
            store.transact(|tx| {
                assert!(refused(&tx.set_timer(bad, 100), bad), "set_timer({bad:?})");
                assert!(refused(&tx.cancel_timer(bad), bad), "cancel_timer({bad:?})");
                assert!(refused(&tx.timer(bad), bad), "timer({bad:?})");
                Ok::<_, Error>(())
            })?;
        }
        assert_eq!(store.kv_get::<u8>("marker")?, None);
        assert_eq!(timers(&mut store)?, vec![]);
        assert_eq!(store.armed(), None);
        assert_eq!(store.take_alarm_change(), None);
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, None);
        Ok(())
    }

    // ---- 6. firing -------------------------------------------------------------------------

    #[test]
    fn due_timers_are_returned_earliest_first_with_the_retry_count() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("due")?;
        store.transact(|tx| {
            tx.set_timer("c", 1_000)?;
            tx.set_timer("b2", 300)?;
            tx.set_timer("b", 300)?;
            tx.set_alarm(200)?;
            tx.set_timer("a", 100)?;
            Ok::<_, Error>(())
        })?;
        assert_eq!(store.due_timers(99)?, (vec![], 0), "nothing due yet");
        let want = vec![due("a", 100), due("", 200), due("b", 300), due("b2", 300)];
        assert_eq!(store.due_timers(300)?, (want.clone(), 0), "ties by name");
        assert_eq!(
            store.due_timers(300)?,
            (want.clone(), 0),
            "reading changes nothing"
        );
        let mut all = want;
        all.push(due("c", 1_000));
        assert_eq!(store.due_timers(5_000)?, (all, 0));
        Ok(())
    }

    #[test]
    fn alarm_succeeded_deletes_fired_timers_but_keeps_ones_the_handler_moved() -> Result<(), Error>
    {
        let env = env()?;
        let mut store = env.open_quiet("succeed")?;
        let key = store.key().clone();
        store.transact(|tx| {
            tx.set_timer("a", 100)?;
            tx.set_alarm(200)?;
            tx.set_timer("b", 300)?;
            tx.set_timer("c", 1_000)?;
            Ok::<_, Error>(())
        })?;
        store.take_alarm_change();
        let (fired, retries) = store.due_timers(300)?;
        assert_eq!(fired, vec![due("a", 100), due("", 200), due("b", 300)]);
        assert_eq!(retries, 0);

        // The handler re-arms `b` later and the alarm a bit later.
        store.transact(|tx| {
            tx.set_timer("b", 5_000)?;
            tx.set_alarm(700)?;
            Ok::<_, Error>(())
        })?;
        store.alarm_succeeded(&fired)?;

        assert_eq!(
            timers(&mut store)?,
            vec![
                (String::new(), 700),
                ("b".into(), 5_000),
                ("c".into(), 1_000)
            ],
            "`a` is gone; the moved `b` and alarm survive"
        );
        assert_eq!(store.armed(), Some(700));
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(700) })
        );
        assert_eq!(store.due_timers(699)?, (vec![], 0));
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(700));

        // Firing again with nothing moved deletes everything due.
        let (fired, _) = store.due_timers(10_000)?;
        store.alarm_succeeded(&fired)?;
        assert_eq!(timers(&mut store)?, vec![]);
        assert_eq!(store.armed(), None);
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, None);
        Ok(())
    }

    #[test]
    fn alarm_failed_retries_at_the_given_time_or_drops_the_fired_timers() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("fail")?;
        let key = store.key().clone();
        store.transact(|tx| {
            tx.set_timer("x", 100)?;
            tx.set_timer("y", 200)?;
            tx.set_timer("z", 9_000)?;
            Ok::<_, Error>(())
        })?;

        let (fired, retries) = store.due_timers(250)?;
        assert_eq!(
            (fired.clone(), retries),
            (vec![due("x", 100), due("y", 200)], 0)
        );
        assert!(store.alarm_failed(&fired, retries, Some(1_000))?);
        assert_eq!(
            store.due_timers(999)?,
            (vec![], 1),
            "not due before retry_at"
        );
        let (fired, retries) = store.due_timers(1_000)?;
        assert_eq!(fired, vec![due("x", 1_000), due("y", 1_000)]);
        assert_eq!(retries, 1, "the retry count grew");
        assert_eq!(store.armed(), Some(1_000));
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(1_000));

        assert!(store.alarm_failed(&fired, retries, Some(2_000))?);
        let (fired, retries) = store.due_timers(2_000)?;
        assert_eq!(fired, vec![due("x", 2_000), due("y", 2_000)]);
        assert_eq!(retries, 2);

        // Out of retries: the fired timers are dropped, the count reset, others kept.
        assert!(!store.alarm_failed(&fired, retries, None)?);
        assert_eq!(timers(&mut store)?, vec![("z".into(), 9_000)]);
        assert_eq!(store.due_timers(10_000)?, (vec![due("z", 9_000)], 0));
        assert_eq!(store.armed(), Some(9_000));
        env.indexes.flush()?;
        assert_eq!(env.indexes.lookup(&key)?, Some(9_000));
        Ok(())
    }

    #[test]
    fn alarm_succeeded_after_a_retry_resets_the_retry_count() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("retry-then-ok")?;
        store.transact(|tx| tx.set_alarm(100))?;
        let (fired, retries) = store.due_timers(100)?;
        assert!(store.alarm_failed(&fired, retries, Some(400))?);
        let (fired, retries) = store.due_timers(400)?;
        assert_eq!((fired.clone(), retries), (vec![due("", 400)], 1));
        store.alarm_succeeded(&fired)?;
        store.transact(|tx| tx.set_alarm(500))?;
        assert_eq!(store.due_timers(500)?, (vec![due("", 500)], 0));
        Ok(())
    }

    // ---- 7. reopen -------------------------------------------------------------------------

    #[test]
    fn data_timers_and_the_armed_alarm_persist_across_reopen() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let k = key("persist");
        {
            let (dir, indexes) = open_dir(tmp.path())?;
            let (mut store, opened) = open_in(&dir, &indexes, "persist", MIGRATIONS)?;
            assert_eq!(
                opened,
                Opened {
                    created: true,
                    from_version: 0
                }
            );
            store.transact(|tx| {
                tx.execute("INSERT INTO items (id, name) VALUES (1, 'one')", [])?;
                tx.kv_put("k", &item(7))?;
                tx.set_alarm(3_000)?;
                tx.set_timer("a", 7_000)?;
                tx.set_timer("b", 9_000)?;
                Ok::<_, Error>(())
            })?;
            // Leave retry state behind as well.
            let (fired, retries) = store.due_timers(3_000)?;
            assert!(store.alarm_failed(&fired, retries, Some(4_000))?);
        }
        {
            let (dir, indexes) = open_dir(tmp.path())?;
            let (mut store, opened) = open_in(&dir, &indexes, "persist", MIGRATIONS)?;
            assert_eq!(
                opened,
                Opened {
                    created: false,
                    from_version: 1
                }
            );
            assert_eq!(store.armed(), Some(4_000));
            assert_eq!(
                store.take_alarm_change(),
                Some(AlarmChange { armed: Some(4_000) })
            );
            assert_eq!(
                indexes.lookup(&k)?,
                Some(4_000),
                "open re-asserts the index"
            );
            assert_eq!(
                timers(&mut store)?,
                vec![
                    (String::new(), 4_000),
                    ("a".into(), 7_000),
                    ("b".into(), 9_000)
                ]
            );
            assert_eq!(store.due_timers(4_000)?, (vec![due("", 4_000)], 1));
            assert_eq!(store.kv_get::<Item>("k")?, Some(item(7)));
            assert_eq!(count_rows(&mut store, "items")?, 1);
            assert!(!table_exists(&mut store, "notes")?);
        }
        {
            // A build with one more migration upgrades the file.
            let (dir, indexes) = open_dir(tmp.path())?;
            let (mut store, opened) = open_in(&dir, &indexes, "persist", MIGRATIONS_V2)?;
            assert_eq!(
                opened,
                Opened {
                    created: false,
                    from_version: 1
                }
            );
            assert!(table_exists(&mut store, "notes")?);
            store.transact(|tx| {
                tx.execute("INSERT INTO notes (body) VALUES ('hi')", [])?;
                Ok::<_, Error>(())
            })?;
            assert_eq!(count_rows(&mut store, "items")?, 1, "old data kept");
            assert_eq!(store.armed(), Some(4_000));
        }
        let (dir, indexes) = open_dir(tmp.path())?;
        let (mut store, opened) = open_in(&dir, &indexes, "persist", MIGRATIONS_V2)?;
        assert_eq!(
            opened,
            Opened {
                created: false,
                from_version: 2
            }
        );
        assert_eq!(count_rows(&mut store, "notes")?, 1);
        let version: u32 = store
            .conn()?
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        assert_eq!(version, 2);
        Ok(())
    }

    // ---- 8. closing and checkpoints ----------------------------------------------------------

    #[test]
    fn a_closed_file_reopens_transparently_with_data_intact() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("close")?;
        let wal = wal_path(&env.dir.object_path(store.key()));
        store.transact(|tx| {
            tx.kv_put("k", &item(1))?;
            tx.set_timer("t", 5_000)?;
            Ok::<_, Error>(())
        })?;
        assert!(store.is_open());

        store.close_file()?;
        assert!(!store.is_open());
        assert!(wal.exists(), "closing leaves the WAL (no fsync at close)");
        assert_eq!(store.armed(), Some(5_000), "armed survives closing");
        assert_eq!(store.kv_get::<Item>("k")?, Some(item(1)), "a read reopens");
        assert!(store.is_open());

        store.close_file()?;
        assert!(!store.is_open());
        store.transact(|tx| {
            assert_eq!(tx.kv_get::<Item>("k")?, Some(item(1)));
            tx.kv_put("k2", &item(2))?;
            tx.set_timer("t", 4_000)?;
            Ok::<_, Error>(())
        })?;
        assert!(store.is_open(), "a transaction reopens");
        assert_eq!(store.armed(), Some(4_000));

        store.close_file()?;
        assert_eq!(store.due_timers(4_000)?, (vec![due("t", 4_000)], 0));
        assert!(store.is_open());
        store.close_file()?;
        store.close_file()?; // idempotent
        assert_eq!(store.kv_get::<Item>("k2")?, Some(item(2)));
        assert_eq!(
            store.take_alarm_change(),
            Some(AlarmChange { armed: Some(4_000) })
        );
        assert_eq!(
            store.take_alarm_change(),
            None,
            "reopening the file is no change"
        );
        Ok(())
    }

    #[test]
    fn checkpoint_is_due_after_512_commits_and_clears_the_wal() -> Result<(), Error> {
        let env = env()?;
        let mut store = env.open_quiet("checkpoint")?;
        let wal = wal_path(&env.dir.object_path(store.key()));
        assert!(!store.checkpoint_due());
        for n in 0..511u64 {
            store.transact(|tx| tx.kv_put("n", &n))?;
        }
        // Neither aborted transactions nor reads count.
        let result = store.transact(|tx| {
            tx.kv_put("n", &0u64)?;
            Err::<(), _>(abort())
        });
        assert!(is_abort(&result));
        assert_eq!(store.kv_get::<u64>("n")?, Some(510));
        assert!(!store.checkpoint_due(), "511 commits");
        store.transact(|tx| tx.kv_put("n", &511u64))?;
        assert!(store.checkpoint_due(), "512 commits");
        let wal_len = std::fs::metadata(&wal)
            .map_err(|e| Error::io("stat", &wal, e))?
            .len();
        assert!(wal_len > 0, "automatic checkpoints are off: the WAL grew");

        store.checkpoint()?;
        assert!(!store.checkpoint_due());
        let wal_len = std::fs::metadata(&wal)
            .map_err(|e| Error::io("stat", &wal, e))?
            .len();
        assert_eq!(wal_len, 0, "TRUNCATE checkpoint empties the WAL");
        assert_eq!(store.kv_get::<u64>("n")?, Some(511));

        // Closing the file does not checkpoint, and the pending checkpoint is not forgotten.
        for n in 0..600u64 {
            store.transact(|tx| tx.kv_put("n", &n))?;
        }
        assert!(store.checkpoint_due());
        store.close_file()?;
        assert!(store.checkpoint_due(), "still due after a close");
        store.checkpoint()?; // on a closed file: nothing to do
        assert!(!store.is_open());
        assert!(store.checkpoint_due(), "a closed file was not checkpointed");
        assert_eq!(
            store.kv_get::<u64>("n")?,
            Some(599),
            "the WAL is replayed on reopen"
        );
        store.checkpoint()?;
        assert!(!store.checkpoint_due());
        Ok(())
    }

    // ---- 9. wrong object ---------------------------------------------------------------------

    #[test]
    fn a_file_of_another_object_is_refused() -> Result<(), Error> {
        let env = env()?;
        let (a_path, b_path) = (
            env.dir.object_path(&key("a")),
            env.dir.object_path(&key("b")),
        );
        {
            let mut a = env.open_quiet("a")?;
            a.transact(|tx| tx.kv_put("who", "a"))?;
            a.checkpoint()?;
            let mut b = env.open_quiet("b")?;
            b.checkpoint()?;
            drop((a, b));
        }
        for p in [&a_path, &b_path] {
            let len = std::fs::metadata(wal_path(p)).map(|m| m.len()).unwrap_or(0);
            assert_eq!(len, 0, "checkpointed stores leave an empty WAL");
        }
        std::fs::copy(&a_path, &b_path).map_err(|e| Error::io("copy", &b_path, e))?;
        match env.open("b") {
            Err(Error::WrongObject {
                path,
                expected,
                found,
            }) => {
                assert_eq!(path, b_path);
                assert_eq!(expected, "counter/b");
                assert_eq!(found, "counter/a");
            }
            other => panic!("expected WrongObject, got {other:?}"),
        }

        // A file placed where no object was ever created is refused too, and not catalogued.
        let c_path = env.dir.object_path(&key("c"));
        if let Some(parent) = c_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        std::fs::copy(&a_path, &c_path).map_err(|e| Error::io("copy", &c_path, e))?;
        assert!(matches!(
            env.open("c"),
            Err(Error::WrongObject { ref found, .. }) if found == "counter/a"
        ));
        assert!(!env.indexes.contains_object(&key("c"))?);

        // The original is untouched.
        let mut a = env.open_quiet("a")?;
        assert_eq!(a.kv_get::<String>("who")?.as_deref(), Some("a"));
        Ok(())
    }

    // ---- 10. catalog ---------------------------------------------------------------------

    #[test]
    fn open_registers_the_object_in_the_catalog() -> Result<(), Error> {
        let env = env()?;
        assert!(!env.indexes.contains_object(&key("cat-1"))?);
        assert_eq!(
            env.indexes.list_ids("counter", None, 10)?,
            Vec::<String>::new()
        );

        let first = env.open_quiet("cat-1")?;
        assert!(env.indexes.contains_object(&key("cat-1"))?);
        assert_eq!(env.indexes.list_ids("counter", None, 10)?, vec!["cat-1"]);

        let second = env.open_quiet("cat-2")?;
        let (other, _) = ObjectStore::open(
            &env.dir,
            Arc::clone(&env.indexes),
            ObjectKey::new("other", "cat-3"),
            MIGRATIONS,
        )?;
        drop((first, second, other));
        // Reopening does not list an object twice.
        let _again = env.open_quiet("cat-1")?;
        assert_eq!(
            env.indexes.list_ids("counter", None, 10)?,
            vec!["cat-1", "cat-2"]
        );
        assert_eq!(
            env.indexes.list_ids("counter", Some("cat-1"), 10)?,
            vec!["cat-2"]
        );
        assert_eq!(env.indexes.list_ids("other", None, 10)?, vec!["cat-3"]);
        assert!(
            !env.indexes.contains_object(&key("cat-3"))?,
            "class matters"
        );
        Ok(())
    }

    #[test]
    fn closing_keeps_the_wal_and_a_large_one_is_checkpointed_after_reopening() -> Result<(), Error>
    {
        let env = env()?;
        let (dir, indexes) = (&env.dir, &env.indexes);
        let key = key("wal");
        let (mut store, _) = open_in(dir, indexes, "wal", MIGRATIONS)?;
        let blob = vec![7u8; 4_000];
        for i in 0..300 {
            store.transact(|tx| tx.kv_put(&format!("k{i:03}"), &blob))?;
        }
        store.close_file()?;
        let wal = {
            let mut p = dir.object_path(&key).into_os_string();
            p.push("-wal");
            std::path::PathBuf::from(p)
        };
        let wal_len = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(
            wal_len(&wal) > WAL_CHECKPOINT_BYTES,
            "closing did not checkpoint"
        );
        drop(store);
        let (mut store, _) = open_in(dir, indexes, "wal", MIGRATIONS)?;
        assert_eq!(store.kv_get::<Vec<u8>>("k299")?, Some(blob));
        assert!(
            store.checkpoint_due(),
            "a large WAL found at open asks for a checkpoint"
        );
        store.checkpoint()?;
        assert_eq!(wal_len(&wal), 0);
        assert!(!store.checkpoint_due());
        Ok(())
    }
}
