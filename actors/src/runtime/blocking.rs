//! Where blocking disk work may run.
//!
//! SQLite calls are synchronous. Ordinary commits (WAL, `synchronous=NORMAL`) do not sync and
//! run inline on the actor's task; work that may fsync (commits at `power` durability,
//! checkpoints, closing a file) runs under `block_in_place` so the worker's other tasks move
//! to another thread. On a current-thread runtime there is no other worker, so it runs inline.

use clawdo_storage::Durability;
use tokio::runtime::{Handle, RuntimeFlavor};

/// Run `f`, which may fsync, without stalling other tasks on this worker where possible.
pub fn may_sync<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Run a commit: inline at `process` durability, through [`may_sync`] at `power`.
pub fn maybe_blocking<T>(durability: Durability, f: impl FnOnce() -> T) -> T {
    match durability {
        Durability::Process => f(),
        Durability::Power => may_sync(f),
    }
}
