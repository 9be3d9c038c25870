//! Storage for clawdo objects: one SQLite file per object, the KV codec, schema migrations and
//! the per-shard alarm index.
//!
//! This crate is synchronous and owns no async runtime: every function here may block on disk.
//! The object runtime (`clawdo-actors`) decides where blocking is acceptable.
//!
//! # Layout
//! - [`data_dir`]: the on-disk layout of a data directory (256 shards, lock file, layout marker).
//! - [`shard`]: object ids → shard numbers and file names by a stable hash (never raw id text).
//! - [`object_store`]: one object's database: transactions, KV, named timers and its alarm.
//! - [`migrate`]: forward-only, numbered schema migrations kept in `PRAGMA user_version`.
//! - [`index`]: the per-shard index files (object catalog + alarm index) and their writer thread.
//! - [`codec`]: the one place values are encoded (bincode 2, serde mode, leading version byte).
//! - [`error`]: this layer's [`Error`].

pub mod codec;
pub mod data_dir;
pub mod error;
pub mod index;
pub mod migrate;
pub mod object_store;
pub mod shard;

/// The SQLite binding object classes write their SQL with.
pub use rusqlite;

pub use data_dir::{DataDir, Durability};
pub use error::Error;
pub use index::{IndexedAlarm, ShardIndexes};
pub use migrate::Migration;
pub use object_store::{AlarmChange, ObjectKey, ObjectStore, Tx};
pub use shard::ShardId;

/// Wall-clock time in milliseconds since the Unix epoch, as every persisted deadline is stored.
pub type UnixMillis = i64;
