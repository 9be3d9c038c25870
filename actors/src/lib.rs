//! The clawdo object runtime: Durable-Object-style actors over per-object SQLite files.
//!
//! Each object (one instance of a class implementing [`Object`]) is a ractor actor with its own
//! SQLite database and its own alarm. The [`Host`] activates objects on first use (one
//! activation per id, however many callers race), hibernates idle ones, and runs one alarm
//! dispatcher for all of them. Time comes from an injected [`Clock`].
//!
//! # Layout
//! - [`runtime`]: the generic object runtime ([`Host`], [`Object`], [`Ctx`], [`Clock`], ids,
//!   alarms, timers, hibernation). It imports nothing from `provider` or `claw`.
//! - [`provider`]: the outbound port to machines and volumes: the
//!   [`provider::MachineProvider`] contract, its limiter (interactive calls first) and the
//!   `sim` and `process` providers.
//! - [`claw`]: the claw classes, `registry → instance → fleet` (each awaits only the one below
//!   it, through its typed handle), and what they share.
//! - [`demo`]: a small counter class used by tests, benches and the embedding example.
//!
//! The old flat paths (`clawdo_actors::host`, `::instance`, `::fleet`, …) are re-exports.

pub mod claw;
pub mod demo;
pub mod provider;
pub mod runtime;

// The old flat paths keep compiling.
pub use claw::{crashpoint, fleet, instance, registry};
pub(crate) use runtime::stats;
pub use runtime::{blocking, clock, config, error, host, id, object};

pub use clawdo_storage::{Durability, Migration, Tx, UnixMillis};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::HostConfig;
pub use error::Error;
pub use host::{Host, HostBuilder, Stub};
pub use id::{InvalidId, ObjectId};
pub use object::{AlarmInfo, Ctx, HandlerError, Object};
pub use stats::{HostStats, LatencySummary};
