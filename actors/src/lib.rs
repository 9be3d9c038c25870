//! The clawdo object runtime: Durable-Object-style actors over per-object SQLite files.
//!
//! Each object (one instance of a class implementing [`Object`]) is a ractor actor with its own
//! SQLite database and its own alarm. The [`Host`] activates objects on first use (one
//! activation per id, however many callers race), hibernates idle ones, and runs one alarm
//! dispatcher for all of them. Time comes from an injected [`Clock`].
//!
//! # Layout
//! - [`host`]: the [`Host`], its builder, the resident table and the [`Stub`] handles.
//! - [`object`]: the [`Object`] trait, the handler context [`Ctx`] and [`AlarmInfo`].
//! - `actor`: the generic ractor actor that hosts one object.
//! - `dispatcher`: the single alarm dispatcher (a min-heap).
//! - [`clock`]: [`Clock`], [`SystemClock`], [`ManualClock`].
//! - [`id`]: validated [`ObjectId`]s.
//! - [`config`]: [`HostConfig`] and its defaults.
//! - [`provider`]: the [`provider::MachineProvider`] contract, its limiter (interactive calls
//!   first) and the `sim` and `process` providers.
//! - [`instance`]: the `instance` class: one claw instance and its machine's lifecycle.
//! - [`fleet`]: the `fleet` class (singleton): scheduled admin actions, the fleet-wide cap on
//!   scheduled work, leases, reaper and drain.
//! - [`registry`]: the `registry` class: one per owner, the owner's instance routes and
//!   provision admission.
//! - [`crashpoint`]: named provision steps a crash test can kill the process at.
//! - [`demo`]: a small counter class used by tests, benches and the embedding example.
//! - [`error`]: this layer's [`Error`].

mod actor;
pub mod blocking;
pub mod clock;
pub mod config;
pub mod crashpoint;
pub mod demo;
mod dispatcher;
pub mod error;
pub mod fleet;
pub mod host;
pub mod id;
pub mod instance;
pub mod object;
pub mod provider;
pub mod registry;
mod stats;

pub use clawdo_storage::{Durability, Migration, Tx, UnixMillis};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::HostConfig;
pub use error::Error;
pub use host::{Host, HostBuilder, Stub};
pub use id::{InvalidId, ObjectId};
pub use object::{AlarmInfo, Ctx, HandlerError, Object};
pub use stats::{HostStats, LatencySummary};
