//! The storage layer's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite reported an error.
    #[error("sqlite")]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be encoded.
    #[error("encoding a value")]
    Encode(#[source] bincode::error::EncodeError),
    /// A stored value could not be decoded.
    #[error("decoding a stored value")]
    Decode(#[source] bincode::error::DecodeError),
    /// A stored value carries a format version this build does not know.
    #[error("stored value has unknown format version {0}")]
    UnknownFormat(u8),
    /// A stored value is empty (no format version byte).
    #[error("stored value is empty")]
    EmptyValue,
    /// The database was written by a newer build (schema version above the newest migration).
    #[error("{path}: schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this build can migrate to.
        known: u32,
    },
    /// A migration failed; the database is left at the previous version.
    #[error("migration to version {version} failed")]
    Migration {
        /// The version the failing migration would have produced.
        version: u32,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file on disk belongs to a different object (hash collision or a misplaced file).
    #[error("{path} belongs to {found}, not {expected}")]
    WrongObject {
        /// The database file.
        path: PathBuf,
        /// `class/id` expected.
        expected: String,
        /// `class/id` recorded in the file.
        found: String,
    },
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another process")]
    DataDirLocked(PathBuf),
    /// The data directory has a layout this build does not understand.
    #[error("data directory {path} has unknown layout {found:?}")]
    UnknownLayout {
        /// The data directory.
        path: PathBuf,
        /// The layout marker found.
        found: String,
    },
    /// A timer name is not 1–64 characters of `[A-Za-z0-9._:-]`.
    #[error("invalid timer name {0:?}")]
    InvalidTimerName(String),
    /// A class name is not 1–32 characters of `[a-z0-9_]`.
    #[error("invalid class name {0:?}")]
    InvalidClassName(String),
    /// The index writer thread is gone (the runtime is shutting down).
    #[error("the alarm index writer has stopped")]
    IndexWriterStopped,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
