//! The on-disk layout of a data directory.
//!
//! ```text
//! <root>/LAYOUT                          "clawdo-data 1": refuse anything else
//! <root>/LOCK                            held (flock) by the one process using the directory
//! <root>/shards/<xx>/index.db            catalog + alarm index of shard xx (created on first use)
//! <root>/shards/<xx>/<class>/<hash>.db   one object's database (ObjectStore)
//! ```

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::shard::{ShardId, object_file_name};
use crate::{Error, ObjectKey};

const LAYOUT_MARKER: &str = "clawdo-data 1";

/// How hard commits are pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// WAL with `synchronous=NORMAL`: a commit survives a process crash (SIGKILL); the last
    /// transactions may be lost on power failure. The default.
    #[default]
    Process,
    /// WAL with `synchronous=FULL`: every commit is fsynced and survives power failure.
    Power,
}

impl Durability {
    pub(crate) fn synchronous_pragma(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Durability::Process),
            "power" => Ok(Durability::Power),
            other => Err(format!(
                "unknown durability {other:?} (expected process or power)"
            )),
        }
    }
}

/// An opened data directory, locked against other processes for as long as this value lives.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    durability: Durability,
    /// Holds the advisory lock on `<root>/LOCK`; released by [`DataDir::unlock`] or on drop.
    lock: std::sync::Mutex<Option<File>>,
}

impl DataDir {
    /// Open (creating if needed) the data directory at `root` and lock it.
    pub fn open(root: impl Into<PathBuf>, durability: Durability) -> Result<DataDir, Error> {
        let root = root.into();
        fs::create_dir_all(root.join("shards")).map_err(|e| Error::io("create", &root, e))?;
        let marker = root.join("LAYOUT");
        match fs::read_to_string(&marker) {
            Ok(found) if found.trim() == LAYOUT_MARKER => {}
            Ok(found) => {
                return Err(Error::UnknownLayout {
                    path: root,
                    found: found.trim().to_string(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::write(&marker, format!("{LAYOUT_MARKER}\n"))
                    .map_err(|e| Error::io("write", &marker, e))?;
            }
            Err(e) => return Err(Error::io("read", &marker, e)),
        }
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::DataDirLocked(root)),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        Ok(DataDir {
            root,
            durability,
            lock: std::sync::Mutex::new(Some(lock)),
        })
    }

    /// Release the directory lock now (at the end of a shutdown), so another runtime in the
    /// same process may open the directory although this value is still referenced.
    pub fn unlock(&self) {
        let lock = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(lock);
    }

    /// The directory's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The durability every file in this directory is opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Directory of one shard.
    pub fn shard_dir(&self, shard: ShardId) -> PathBuf {
        self.root.join("shards").join(shard.dir_name())
    }

    /// Path of a shard's index file.
    pub fn index_path(&self, shard: ShardId) -> PathBuf {
        self.shard_dir(shard).join("index.db")
    }

    /// Path of an object's database file.
    pub fn object_path(&self, key: &ObjectKey) -> PathBuf {
        self.shard_dir(key.shard)
            .join(key.class)
            .join(object_file_name(key.class, &key.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_lock() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let first = DataDir::open(tmp.path(), Durability::Process)?;
        assert!(matches!(
            DataDir::open(tmp.path(), Durability::Process),
            Err(Error::DataDirLocked(_))
        ));
        drop(first);
        DataDir::open(tmp.path(), Durability::Process)?;
        Ok(())
    }

    #[test]
    fn an_unknown_layout_is_refused() -> Result<(), Error> {
        let tmp = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        fs::write(tmp.path().join("LAYOUT"), "something else 9\n")
            .map_err(|e| Error::io("write", tmp.path(), e))?;
        assert!(matches!(
            DataDir::open(tmp.path(), Durability::Process),
            Err(Error::UnknownLayout { .. })
        ));
        Ok(())
    }
}
