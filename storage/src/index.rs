//! The per-shard index files: the object catalog and the alarm index.
//!
//! Each of the 256 shards has one small SQLite file holding
//! - `objects(class, id)`: every object ever created, so a class's ids can be listed without
//!   opening object files;
//! - `alarms(class, id, at, gen)`: when each object's alarm is due, so hibernated objects can be
//!   woken without opening every file.
//!
//! **The index may be early, never late.** An object's own database is the truth. Writes that
//! move an alarm *earlier* (or create one) go to the index synchronously, before the object's
//! commit ([`ShardIndexes::write_now`]). Writes that move it later or delete it are queued
//! ([`ShardIndexes::raise_later`], [`ShardIndexes::delete_later`]) and group-committed by one
//! writer thread. Every write carries a generation number from one process-wide counter; a
//! queued write applies only if it is newer than the row's generation, so a queued raise can
//! never overwrite a later eager write. See `docs/runtime-semantics.md`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::data_dir::DataDir;
use crate::shard::ShardId;
use crate::{Error, ObjectKey, UnixMillis};

const INDEX_SCHEMA: &str = "
-- Every object ever created in this shard; listed without opening object files.
CREATE TABLE IF NOT EXISTS objects (
    class TEXT NOT NULL,
    id    TEXT NOT NULL,
    PRIMARY KEY (class, id)
) WITHOUT ROWID;
-- When each object's alarm is due (early, never late); gen orders writes to one row.
CREATE TABLE IF NOT EXISTS alarms (
    class TEXT NOT NULL,
    id    TEXT NOT NULL,
    at    INTEGER NOT NULL,
    gen   INTEGER NOT NULL,
    PRIMARY KEY (class, id)
) WITHOUT ROWID;
";

const UPSERT_ALARM: &str = "INSERT INTO alarms (class, id, at, gen) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (class, id) DO UPDATE SET at = excluded.at, gen = excluded.gen
     WHERE excluded.gen > alarms.gen";
const DELETE_ALARM: &str = "DELETE FROM alarms WHERE class = ?1 AND id = ?2 AND gen < ?3";

/// An alarm as recorded in the index (possibly earlier than the object's true alarm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedAlarm {
    /// Class name.
    pub class: String,
    /// Object id.
    pub id: String,
    /// Due time.
    pub at: UnixMillis,
}

/// A queued write for the writer thread.
enum Op {
    Upsert {
        shard: ShardId,
        class: &'static str,
        id: String,
        at: UnixMillis,
        generation: u64,
    },
    Delete {
        shard: ShardId,
        class: &'static str,
        id: String,
        generation: u64,
    },
    /// Acknowledged once every op queued before it is committed.
    Flush(Sender<()>),
}

struct Shared {
    /// One slot per shard; `None` until the shard's file exists (created on first write).
    shards: Vec<Mutex<Option<Connection>>>,
    /// Where the files live and how they sync.
    paths: Vec<std::path::PathBuf>,
    durability: crate::Durability,
    /// Next generation number; larger means written later.
    generation: AtomicU64,
}

impl Shared {
    fn lock(&self, shard: ShardId) -> MutexGuard<'_, Option<Connection>> {
        // A panic while holding the lock cannot leave a half-applied SQLite transaction behind
        // (rusqlite rolls back on drop), so a poisoned lock is still safe to use.
        self.shards[shard.0 as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` on the shard's connection, creating the file first if needed.
    fn write<T>(
        &self,
        shard: ShardId,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let mut slot = self.lock(shard);
        if slot.is_none() {
            let path = &self.paths[shard.0 as usize];
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            }
            let conn = open_sqlite(path, self.durability)?;
            conn.execute_batch(INDEX_SCHEMA)?;
            set_synchronous(&conn, self.durability)?;
            *slot = Some(conn);
        }
        match slot.as_mut() {
            Some(conn) => Ok(f(conn)?),
            None => Err(Error::IndexWriterStopped),
        }
    }

    /// Run `f` on the shard's connection; a shard without a file reads as empty (`None`).
    fn read<T>(
        &self,
        shard: ShardId,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, Error> {
        match self.lock(shard).as_ref() {
            Some(conn) => Ok(Some(f(conn)?)),
            None => Ok(None),
        }
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }
}

/// The 256 shard index files of one data directory and the thread that writes queued updates.
pub struct ShardIndexes {
    shared: Arc<Shared>,
    queue: Mutex<Option<Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ShardIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardIndexes").finish_non_exhaustive()
    }
}

impl ShardIndexes {
    /// Open (creating if needed) every shard's index file and start the writer thread.
    pub fn open(dir: &DataDir) -> Result<ShardIndexes, Error> {
        let mut shards = Vec::with_capacity(crate::shard::SHARD_COUNT);
        let mut paths = Vec::with_capacity(crate::shard::SHARD_COUNT);
        let mut max_generation = 0u64;
        for shard in ShardId::all() {
            let path = dir.index_path(shard);
            // Only shards that were ever written have a file; the rest are created on demand.
            let conn = if path.exists() {
                let conn = open_sqlite(&path, dir.durability())?;
                conn.execute_batch(INDEX_SCHEMA)?;
                set_synchronous(&conn, dir.durability())?;
                let top: Option<i64> =
                    conn.query_row("SELECT MAX(gen) FROM alarms", [], |r| r.get(0))?;
                max_generation = max_generation.max(u64::try_from(top.unwrap_or(0)).unwrap_or(0));
                Some(conn)
            } else {
                None
            };
            shards.push(Mutex::new(conn));
            paths.push(path);
        }
        let shared = Arc::new(Shared {
            shards,
            paths,
            durability: dir.durability(),
            generation: AtomicU64::new(max_generation + 1),
        });
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("clawdo-index-writer".into())
            .spawn(move || writer_loop(&writer_shared, &rx))
            .map_err(|e| Error::io("spawn index writer", dir.root(), e))?;
        Ok(ShardIndexes {
            shared,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Record that `key` exists (idempotent). Called before the object's file is created.
    pub fn register_object(&self, key: &ObjectKey) -> Result<(), Error> {
        self.shared.write(key.shard, |conn| {
            conn.execute(
                "INSERT INTO objects (class, id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![key.class, key.id],
            )
        })?;
        Ok(())
    }

    /// Whether `key` was ever created.
    pub fn contains_object(&self, key: &ObjectKey) -> Result<bool, Error> {
        Ok(self
            .shared
            .read(key.shard, |conn| {
                conn.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM objects WHERE class = ?1 AND id = ?2)",
                )?
                .query_row(params![key.class, key.id], |r| r.get(0))
            })?
            .unwrap_or(false))
    }

    /// Up to `limit` ids of `class` in ascending order, strictly after `after` (paging cursor).
    pub fn list_ids(
        &self,
        class: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut merged = Vec::new();
        for shard in ShardId::all() {
            let page = self.shared.read(shard, |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id FROM objects WHERE class = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![class, after.unwrap_or(""), limit_sql], |r| {
                    r.get::<_, String>(0)
                })?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })?;
            merged.extend(page.unwrap_or_default());
        }
        merged.sort_unstable();
        merged.truncate(limit);
        Ok(merged)
    }

    /// Every alarm in every shard (used once at start-up to fill the dispatcher).
    pub fn load_alarms(&self) -> Result<Vec<IndexedAlarm>, Error> {
        let mut all = Vec::new();
        for shard in ShardId::all() {
            let alarms = self.shared.read(shard, |conn| {
                let mut stmt = conn.prepare("SELECT class, id, at FROM alarms")?;
                let rows = stmt.query_map([], |r| {
                    Ok(IndexedAlarm {
                        class: r.get(0)?,
                        id: r.get(1)?,
                        at: r.get(2)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })?;
            all.extend(alarms.unwrap_or_default());
        }
        Ok(all)
    }

    /// The alarm time the index holds for `key` right now (queued writes not yet applied).
    pub fn lookup(&self, key: &ObjectKey) -> Result<Option<UnixMillis>, Error> {
        Ok(self
            .shared
            .read(key.shard, |conn| {
                conn.query_row(
                    "SELECT at FROM alarms WHERE class = ?1 AND id = ?2",
                    params![key.class, key.id],
                    |r| r.get(0),
                )
                .optional()
            })?
            .flatten())
    }

    /// Write `at` for `key` now, durably, superseding every earlier or queued write.
    pub fn write_now(&self, key: &ObjectKey, at: UnixMillis) -> Result<(), Error> {
        let generation = self.shared.next_generation();
        self.shared.write(key.shard, |conn| {
            conn.execute(
                UPSERT_ALARM,
                params![key.class, key.id, at, generation as i64],
            )
        })?;
        Ok(())
    }

    /// Queue a move of `key`'s alarm to the later time `at`.
    pub fn raise_later(&self, key: &ObjectKey, at: UnixMillis) -> Result<(), Error> {
        self.enqueue(Op::Upsert {
            shard: key.shard,
            class: key.class,
            id: key.id.clone(),
            at,
            generation: self.shared.next_generation(),
        })
    }

    /// Queue the removal of `key`'s alarm.
    pub fn delete_later(&self, key: &ObjectKey) -> Result<(), Error> {
        self.enqueue(Op::Delete {
            shard: key.shard,
            class: key.class,
            id: key.id.clone(),
            generation: self.shared.next_generation(),
        })
    }

    /// Block until every write queued so far is committed.
    pub fn flush(&self) -> Result<(), Error> {
        let (ack, done) = mpsc::channel();
        self.enqueue(Op::Flush(ack))?;
        done.recv().map_err(|_| Error::IndexWriterStopped)
    }

    /// Commit queued writes and stop the writer thread. Idempotent.
    pub fn close(&self) {
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(queue);
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("the alarm index writer thread panicked");
        }
    }

    fn enqueue(&self, op: Op) -> Result<(), Error> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue
            .as_ref()
            .ok_or(Error::IndexWriterStopped)?
            .send(op)
            .map_err(|_| Error::IndexWriterStopped)
    }
}

impl Drop for ShardIndexes {
    fn drop(&mut self) {
        self.close();
    }
}

/// Most ops one group commit takes.
const MAX_BATCH: usize = 8192;

fn writer_loop(shared: &Shared, rx: &Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut by_shard: BTreeMap<ShardId, Vec<&Op>> = BTreeMap::new();
        let mut acks = Vec::new();
        for op in &batch {
            match op {
                Op::Upsert { shard, .. } | Op::Delete { shard, .. } => {
                    by_shard.entry(*shard).or_default().push(op);
                }
                Op::Flush(ack) => acks.push(ack),
            }
        }
        for (shard, ops) in by_shard {
            if let Err(error) = shared.write(shard, |conn| apply(conn, &ops)) {
                // Leaving a queued raise or delete unapplied only leaves the index early,
                // which is allowed: the next fire re-syncs it.
                tracing::error!(shard = shard.0, %error, "alarm index group commit failed");
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

fn apply(conn: &mut Connection, ops: &[&Op]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT_ALARM)?;
        let mut delete = tx.prepare_cached(DELETE_ALARM)?;
        for op in ops {
            match op {
                Op::Upsert {
                    class,
                    id,
                    at,
                    generation,
                    ..
                } => {
                    upsert.execute(params![class, id, at, *generation as i64])?;
                }
                Op::Delete {
                    class,
                    id,
                    generation,
                    ..
                } => {
                    delete.execute(params![class, id, *generation as i64])?;
                }
                Op::Flush(_) => {}
            }
        }
    }
    tx.commit()
}

/// Open a SQLite file the way every clawdo file is opened: WAL with exclusive locking (one
/// process, one connection; no shared-memory file) and the durability's `synchronous` level.
///
/// A file that does not exist yet is created with `synchronous=OFF` at `process` durability:
/// a new file holds nothing acknowledged, and creating it (the switch to WAL, the first schema)
/// would otherwise sync the file, its journal and its directory several times. The caller
/// restores the durability's level with [`set_synchronous`] once the file's schema is in place.
/// At `power` durability files are created fully synced.
pub(crate) fn open_sqlite(
    path: &std::path::Path,
    durability: crate::Durability,
) -> Result<Connection, Error> {
    let creating = !path.exists();
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    // Before the switch to WAL, so that the switch itself syncs at the chosen level.
    let synchronous = match (creating, durability) {
        (true, crate::Durability::Process) => "OFF",
        _ => durability.synchronous_pragma(),
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Sqlite(rusqlite::Error::InvalidQuery));
    }
    conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

/// Set the durability's `synchronous` level (after a file was created at a lower one).
pub(crate) fn set_synchronous(
    conn: &Connection,
    durability: crate::Durability,
) -> Result<(), Error> {
    conn.pragma_update(None, "synchronous", durability.synchronous_pragma())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    fn setup() -> Result<(tempfile::TempDir, DataDir, ShardIndexes), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let dir = DataDir::open(tmp.path(), Durability::Process)?;
        let indexes = ShardIndexes::open(&dir)?;
        Ok((tmp, dir, indexes))
    }

    #[test]
    fn a_queued_raise_never_overwrites_a_later_eager_write() -> Result<(), Error> {
        let (_tmp, _dir, idx) = setup()?;
        let key = ObjectKey::new("counter", "a");
        idx.write_now(&key, 100)?;
        idx.raise_later(&key, 500)?; // queued, older generation
        idx.write_now(&key, 200)?; // newer: must win whenever the queue drains
        idx.flush()?;
        assert_eq!(idx.lookup(&key)?, Some(200));
        idx.delete_later(&key)?;
        idx.flush()?;
        assert_eq!(idx.lookup(&key)?, None);
        Ok(())
    }

    #[test]
    fn a_queued_delete_never_removes_a_later_eager_write() -> Result<(), Error> {
        let (_tmp, _dir, idx) = setup()?;
        let key = ObjectKey::new("counter", "b");
        idx.write_now(&key, 100)?;
        idx.delete_later(&key)?;
        idx.write_now(&key, 300)?;
        idx.flush()?;
        assert_eq!(idx.lookup(&key)?, Some(300));
        Ok(())
    }

    #[test]
    fn generations_survive_reopen() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let key = ObjectKey::new("counter", "c");
        {
            let dir = DataDir::open(tmp.path(), Durability::Process)?;
            let idx = ShardIndexes::open(&dir)?;
            for at in 0..50 {
                idx.write_now(&key, 1000 - at)?;
            }
        }
        let dir = DataDir::open(tmp.path(), Durability::Process)?;
        let idx = ShardIndexes::open(&dir)?;
        // A write after reopening must be newer than every write before it.
        idx.raise_later(&key, 5000)?;
        idx.flush()?;
        assert_eq!(idx.lookup(&key)?, Some(5000));
        assert_eq!(
            idx.load_alarms()?,
            vec![IndexedAlarm {
                class: "counter".into(),
                id: "c".into(),
                at: 5000
            }]
        );
        Ok(())
    }

    #[test]
    fn lists_ids_of_one_class_in_pages_across_shards() -> Result<(), Error> {
        let (_tmp, _dir, idx) = setup()?;
        for i in 0..300 {
            idx.register_object(&ObjectKey::new("counter", &format!("c-{i:04}")))?;
            idx.register_object(&ObjectKey::new("other", &format!("o-{i:04}")))?;
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = idx.list_ids("counter", cursor.as_deref(), 64)?;
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 64);
            cursor = page.last().cloned();
            seen.extend(page);
        }
        let want: Vec<String> = (0..300).map(|i| format!("c-{i:04}")).collect();
        assert_eq!(seen, want);
        Ok(())
    }
}
