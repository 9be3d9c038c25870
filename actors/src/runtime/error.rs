//! The object runtime's error type.

use crate::runtime::id::InvalidId;

/// Errors a caller of the object runtime can see.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object id is not valid; nothing was created.
    #[error("invalid object id")]
    InvalidId(#[from] InvalidId),
    /// The class was not registered with the host before it started.
    #[error("object class {0:?} is not registered")]
    UnknownClass(&'static str),
    /// Two classes were registered under one name; the host did not start.
    #[error("object class name {0:?} is registered twice: each class needs a name of its own")]
    DuplicateClass(&'static str),
    /// A class was called or activated as a Rust type other than the one registered under its
    /// name.
    #[error("object class {0:?} is registered as another Rust type")]
    ClassTypeMismatch(&'static str),
    /// Storage failed.
    #[error("storage")]
    Storage(#[from] clawdo_storage::Error),
    /// The object could not be activated (its `activate` returned an error or panicked).
    #[error("activating {class}/{id} failed: {reason}")]
    Activation {
        /// Class name.
        class: &'static str,
        /// Object id.
        id: String,
        /// What went wrong (the whole chain, for messages and logs).
        reason: String,
        /// The error activation failed with, when it returned one (not when it panicked), so
        /// callers can tell damaged storage from other failures.
        cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The object's actor stopped while handling this call (e.g. its handler panicked); the
    /// call may or may not have taken effect.
    #[error("object {class}/{id} failed while handling the call")]
    ObjectFailed {
        /// Class name.
        class: &'static str,
        /// Object id.
        id: String,
    },
    /// The call did not complete within the call timeout.
    #[error("call to {class}/{id} timed out")]
    Timeout {
        /// Class name.
        class: &'static str,
        /// Object id.
        id: String,
    },
    /// The runtime is shutting down and accepts no new calls.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// A blocking storage task could not be joined.
    #[error("a blocking storage task failed")]
    Blocking(#[from] tokio::task::JoinError),
}
