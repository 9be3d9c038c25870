//! clawdo: a Durable-Object-style runtime hosting a fleet of "claw" instances.
//!
//! This crate is the product surface: the embedding API ([`Runtime`]), the gRPC services (thin
//! adapters over the embedding API), the server that runs them, and the `clawdo` binary.
//!
//! # Layout
//! - [`runtime`]: the [`Runtime`] builder and handle embedders use.
//! - [`actions`]: scheduled admin actions (restart, version change) over many instances
//!   ([`actions::Actions`]), admin-only.
//! - [`instances`]: claw instance operations as an admin or an owner ([`instances::Instances`]).
//! - [`config`]: the server's one [`config::Config`] (TOML file, `CLAWDO_*` environment
//!   overrides, defaults) and `--print-config`.
//! - [`auth`]: bearer tokens with `admin` / `owner:<key>` roles and the interceptor that turns
//!   a call's token into an [`instances::Caller`].
//! - [`client`]: the gRPC client side of the `clawdo instance …` commands (connect with a
//!   token, call, render as text or JSON).
//! - [`server`]: the listen-address policy and [`server::run`], which builds the runtime,
//!   serves gRPC on an injected listener until an injected shutdown future completes, then
//!   shuts down in order. The binary and the integration tests both use it.
//! - [`grpc`]: tonic services, one module per service, the generated protobuf types
//!   ([`grpc::pb`]) and the single error → `Status` mapping ([`grpc::status`]).
//! - [`machine_stub`]: the `clawdo machine-stub` health-check server, the process provider's
//!   default machine ([`machine_stub::default_process_command`]).
//! - [`demo_load`]: a bounded write load on demo counters that prints each acknowledged write;
//!   the crash-recovery tests run it in a child process and SIGKILL it.
//! - [`demo_provision`]: one provision that SIGKILLs its own process at a named step; the
//!   admission crash tests run it.
//! - `src/main.rs`, `src/cli.rs` (binary only): `clawdo serve` flags and config loading,
//!   the `clawdo instance …` commands, logging, OS signals.

pub mod actions;
pub mod auth;
pub mod client;
pub mod config;
pub mod demo_load;
pub mod demo_provision;
pub mod grpc;
pub mod instances;
pub mod machine_stub;
pub mod runtime;
pub mod server;

pub use clawdo_actors as actors;
pub use clawdo_storage as storage;
pub use runtime::{LatencySummary, Runtime, RuntimeBuilder, RuntimeStats};
