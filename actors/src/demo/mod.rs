//! Demo classes: scaffolding for tests, benches and the embedding example, not product features.

pub mod counter;

pub use counter::{Counter, CounterReply, CounterRequest};
