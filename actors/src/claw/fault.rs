//! Failures below the claw domain: an object's storage, or the runtime a call went through.
//!
//! Every class's error has one variant holding a [`Fault`]. A fault keeps its cause (for the
//! logs: the gRPC edge logs the whole chain) and a [`FaultKind`] read off that cause once, so
//! the edge can answer a specific reason — a full disk is `STORAGE_FULL`, a file that lost its
//! content is `OBJECT_DAMAGED` — instead of a bare "internal error".

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use clawdo_storage::rusqlite;

/// What kind of failure a [`Fault`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The disk (or SQLite's file) is full; nothing was written.
    StorageFull,
    /// An object's file cannot be read as what it should hold (corrupt, not a database, a
    /// stored value that does not decode).
    ObjectDamaged,
    /// Any other storage failure (I/O, SQLite).
    Storage,
    /// The runtime could not take the call now (shutting down, a call timed out); retry.
    Unavailable,
    /// The runtime or an object broke a rule it should not (an actor died, a reply of the
    /// wrong shape).
    Runtime,
}

impl FaultKind {
    /// The machine-readable reason sent to clients (google.rpc.ErrorInfo).
    pub fn reason(self) -> &'static str {
        match self {
            FaultKind::StorageFull => "STORAGE_FULL",
            FaultKind::ObjectDamaged => "OBJECT_DAMAGED",
            FaultKind::Storage => "STORAGE_ERROR",
            FaultKind::Unavailable => "UNAVAILABLE",
            FaultKind::Runtime => "INTERNAL",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            FaultKind::StorageFull => "storage is full",
            FaultKind::ObjectDamaged => "an object's storage is damaged",
            FaultKind::Storage => "storage failed",
            FaultKind::Unavailable => "the runtime is unavailable",
            FaultKind::Runtime => "the runtime failed",
        }
    }
}

/// A storage or runtime failure with its cause. Cheap to clone (the cause is shared).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", kind.describe())]
pub struct Fault {
    kind: FaultKind,
    #[source]
    cause: Arc<dyn StdError + Send + Sync>,
}

impl PartialEq for Fault {
    fn eq(&self, other: &Fault) -> bool {
        self.kind == other.kind && self.cause.to_string() == other.cause.to_string()
    }
}

impl Eq for Fault {}

/// A broken rule, as a cause.
#[derive(Debug)]
struct Invariant(String);

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Invariant {}

impl Fault {
    /// A fault of `kind` caused by `cause`.
    pub fn new(kind: FaultKind, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Fault {
        Fault {
            kind,
            cause: Arc::from(cause.into()),
        }
    }

    /// A broken rule (kind [`FaultKind::Runtime`]), e.g. a reply of the wrong shape.
    pub fn invariant(what: impl Into<String>) -> Fault {
        Fault::new(FaultKind::Runtime, Invariant(what.into()))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// The reason sent to clients.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The cause and its sources, `: `-separated (for logs).
    pub fn chain(&self) -> String {
        let mut out = self.cause.to_string();
        let mut next = self.cause.source();
        while let Some(source) = next {
            out.push_str(": ");
            out.push_str(&source.to_string());
            next = source.source();
        }
        out
    }
}

/// The kind of the first error in `error`'s chain that tells one.
fn classify(error: &(dyn StdError + 'static)) -> FaultKind {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    let mut storage = false;
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<rusqlite::Error>() {
            storage = true;
            if let rusqlite::Error::SqliteFailure(failure, _) = e {
                match failure.code {
                    rusqlite::ErrorCode::DiskFull => return FaultKind::StorageFull,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase => {
                        return FaultKind::ObjectDamaged;
                    }
                    _ => {}
                }
            }
        } else if let Some(e) = e.downcast_ref::<std::io::Error>() {
            storage = true;
            if e.kind() == std::io::ErrorKind::StorageFull {
                return FaultKind::StorageFull;
            }
        } else if let Some(e) = e.downcast_ref::<clawdo_storage::Error>() {
            storage = true;
            match e {
                clawdo_storage::Error::Decode(_)
                | clawdo_storage::Error::UnknownFormat(_)
                | clawdo_storage::Error::EmptyValue
                | clawdo_storage::Error::WrongObject { .. } => return FaultKind::ObjectDamaged,
                clawdo_storage::Error::IndexWriterStopped => return FaultKind::Unavailable,
                _ => {}
            }
        } else if let Some(e) = e.downcast_ref::<crate::Error>() {
            match e {
                crate::Error::ShuttingDown | crate::Error::Timeout { .. } => {
                    return FaultKind::Unavailable;
                }
                crate::Error::Activation {
                    cause: Some(cause), ..
                } => return classify(cause.as_ref()),
                _ => {}
            }
        }
        next = e.source();
    }
    if storage {
        FaultKind::Storage
    } else {
        FaultKind::Runtime
    }
}

impl From<clawdo_storage::Error> for Fault {
    fn from(e: clawdo_storage::Error) -> Fault {
        Fault {
            kind: classify(&e),
            cause: Arc::new(e),
        }
    }
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Fault {
        Fault {
            kind: classify(&e),
            cause: Arc::new(e),
        }
    }
}

impl From<crate::Error> for Fault {
    fn from(e: crate::Error) -> Fault {
        Fault {
            kind: classify(&e),
            cause: Arc::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn kinds_are_read_off_the_cause() {
        let cases: Vec<(Fault, FaultKind)> = vec![
            (
                sqlite(rusqlite::ffi::SQLITE_FULL).into(),
                FaultKind::StorageFull,
            ),
            (
                sqlite(rusqlite::ffi::SQLITE_CORRUPT).into(),
                FaultKind::ObjectDamaged,
            ),
            (
                sqlite(rusqlite::ffi::SQLITE_NOTADB).into(),
                FaultKind::ObjectDamaged,
            ),
            (
                sqlite(rusqlite::ffi::SQLITE_IOERR).into(),
                FaultKind::Storage,
            ),
            (
                clawdo_storage::Error::from(sqlite(rusqlite::ffi::SQLITE_FULL)).into(),
                FaultKind::StorageFull,
            ),
            (
                clawdo_storage::Error::UnknownFormat(9).into(),
                FaultKind::ObjectDamaged,
            ),
            (crate::Error::ShuttingDown.into(), FaultKind::Unavailable),
            (
                crate::Error::Storage(clawdo_storage::Error::EmptyValue).into(),
                FaultKind::ObjectDamaged,
            ),
            (
                crate::Error::Activation {
                    class: "instance",
                    id: "i".into(),
                    reason: "file is not a database".into(),
                    cause: Some(Arc::new(clawdo_storage::Error::from(sqlite(
                        rusqlite::ffi::SQLITE_NOTADB,
                    )))),
                }
                .into(),
                FaultKind::ObjectDamaged,
            ),
            (
                crate::Error::ObjectFailed {
                    class: "fleet",
                    id: "global".into(),
                }
                .into(),
                FaultKind::Runtime,
            ),
            (
                Fault::invariant("a reply of the wrong shape"),
                FaultKind::Runtime,
            ),
        ];
        for (fault, kind) in cases {
            assert_eq!(fault.kind(), kind, "{}", fault.chain());
        }
    }

    #[test]
    fn reasons_are_stable() {
        assert_eq!(FaultKind::StorageFull.reason(), "STORAGE_FULL");
        assert_eq!(FaultKind::ObjectDamaged.reason(), "OBJECT_DAMAGED");
        assert_eq!(FaultKind::Storage.reason(), "STORAGE_ERROR");
        assert_eq!(FaultKind::Unavailable.reason(), "UNAVAILABLE");
        assert_eq!(FaultKind::Runtime.reason(), "INTERNAL");
    }

    #[test]
    fn the_cause_is_kept_as_the_source() {
        let fault = Fault::from(sqlite(rusqlite::ffi::SQLITE_FULL));
        assert_eq!(fault.to_string(), "storage is full");
        assert!(fault.source().is_some());
        assert!(fault.chain().contains("full"), "{}", fault.chain());
    }
}
