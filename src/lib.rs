//! clawdo: a Durable-Object-style runtime hosting a fleet of "claw" instances.
//!
//! This crate is the product surface: the embedding API ([`Runtime`]), the gRPC services (thin
//! adapters over the embedding API), the server that runs them, and the `clawdo` binary.
//!
//! # Embedding: two entry points
//! - The claw runtime, [`Runtime::builder`]: claw instances, scheduled actions and a machine
//!   provider (the `sim` provider's database under the data directory unless one is given),
//!   plus object classes of the program's own. The names of clawdo's classes
//!   ([`runtime::CLAWDO_CLASS_NAMES`]) are taken; a class of the program's with one of them is
//!   refused at build with [`runtime::Error::ClassNameTaken`], before anything is opened.
//! - The bare object runtime, [`HostBuilder`]: only the program's own classes, no claw class
//!   and no provider; every class name is free. It takes the same [`HostConfig`] (durability,
//!   hibernation, budgets, timeouts) and [`Clock`] as the claw runtime, and gives the same
//!   [`Host`] handle [`Runtime::host`] returns, so code written against a `Host` runs on
//!   either. Its errors are [`actors::Error`].
//!
//! ```no_run
//! # async fn run() -> Result<(), clawdo::actors::Error> {
//! # struct Notes;
//! # impl clawdo::Object for Notes {
//! #     const CLASS: &'static str = "notes";
//! #     type Request = ();
//! #     type Response = ();
//! #     type Deps = ();
//! #     async fn activate(_: &mut clawdo::Ctx, _: std::sync::Arc<()>) -> Result<Self, clawdo::HandlerError> { Ok(Notes) }
//! #     async fn handle(&mut self, _: &mut clawdo::Ctx, _: ()) {}
//! # }
//! let host = clawdo::HostBuilder::new("./my-data")
//!     .register::<Notes>()
//!     .start()
//!     .await?;
//! host.get::<Notes>("user:42")?.call(()).await?;
//! host.shutdown(std::time::Duration::from_secs(10)).await?;
//! # Ok(())
//! # }
//! ```
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

// The bare object runtime and what a class of the program's own is written with.
pub use clawdo_actors::{
    AlarmInfo, Clock, Ctx, Durability, HandlerError, Host, HostBuilder, HostConfig, HostStats,
    ManualClock, Migration, Object, Stub, SystemClock, Tx, UnixMillis,
};
