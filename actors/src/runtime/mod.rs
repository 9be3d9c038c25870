//! The generic Durable-Object runtime: classes, activation, hibernation, storage access, alarms
//! and timers. It knows no domain: nothing here imports `provider`, `notify` or `claw` (a CI
//! guard in `.ci/run` keeps it so).
//!
//! - [`host`]: the [`Host`](host::Host), its builder, the resident table and the
//!   [`Stub`](host::Stub) handles.
//! - [`object`]: the [`Object`](object::Object) trait, the handler context [`Ctx`](object::Ctx)
//!   and [`AlarmInfo`](object::AlarmInfo).
//! - `actor`: the generic ractor actor that hosts one object.
//! - `dispatcher`: the single alarm dispatcher (a min-heap).
//! - [`clock`]: [`Clock`](clock::Clock), [`SystemClock`](clock::SystemClock),
//!   [`ManualClock`](clock::ManualClock).
//! - [`id`]: validated [`ObjectId`](id::ObjectId)s.
//! - [`config`]: [`HostConfig`](config::HostConfig) and its defaults.
//! - [`blocking`]: where disk syncs may block a worker thread.
//! - `stats`: the host's counters.
//! - [`tasks`]: background tasks of objects, optionally keyed (`spawn_keyed`, `abort`).
//! - [`error`]: this layer's [`Error`](error::Error).

pub(crate) mod actor;
pub mod blocking;
pub mod clock;
pub mod config;
pub(crate) mod dispatcher;
pub mod error;
pub mod host;
pub mod id;
pub mod object;
pub(crate) mod stats;
pub mod tasks;
