//! clawdo: a Durable-Object-style runtime hosting a fleet of "claw" instances.
//!
//! This crate is the product surface: the embedding API ([`Runtime`]), the gRPC services (thin
//! adapters over the embedding API) and the `clawdo` binary.
//!
//! # Layout
//! - [`runtime`]: the [`Runtime`] builder and handle embedders use.
//! - [`grpc`]: tonic services, one module per service, the generated protobuf types
//!   ([`grpc::pb`]) and the single error → `Status` mapping ([`grpc::status`]).

pub mod grpc;
pub mod runtime;

pub use runtime::{LatencySummary, Runtime, RuntimeBuilder, RuntimeStats};
