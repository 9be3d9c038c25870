//! The claw classes: `registry` (one per owner: admission and routes), `instance` (one claw
//! instance and its machine) and `fleet` (the singleton: scheduled actions and the fleet cap).
//!
//! # The call direction
//! A class awaits only a class below it, always through that class's typed handle:
//! `registry → instance → fleet`. Anything that goes upward (an instance reporting to its
//! registry, the fleet telling an instance) or needs no answer is a notice returned by the
//! handler and delivered after the commit. A CI guard in `.ci/run` keeps the direction.
//!
//! - [`registry`], [`instance`], [`fleet`]: the classes, each folder with the same core files
//!   (`mod.rs` the `Object` impl, `api.rs`, `handle.rs`, `config.rs`, `store.rs`).
//! - [`outbox`]: the [`Notice`](outbox::Notice)s and their delivery after the commit.
//! - [`fault`]: storage and runtime failures, with the reason the edge reports.
//! - [`crashpoint`]: named provision steps a crash test can kill the process at.

pub mod crashpoint;
pub mod fault;
pub mod fleet;
pub mod instance;
pub mod outbox;
pub mod registry;
pub mod time;
