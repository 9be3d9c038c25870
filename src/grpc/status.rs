//! The one place where domain errors become [`tonic::Status`].
//!
//! Every error status clawdo sends carries a `google.rpc.ErrorInfo` detail whose `reason` is a
//! stable, machine-readable `UPPER_SNAKE` constant (for example `INSTANCE_BUSY`) and whose
//! `domain` is [`ERROR_DOMAIN`], so clients branch on the reason instead of parsing messages.
//! Conversions from each layer's `Error` are added here as those layers appear.
//!
//! | domain error | gRPC code | reason | metadata |
//! | --- | --- | --- | --- |
//! | [`InstanceError::InvalidArgument`] | `INVALID_ARGUMENT` | `INVALID_ARGUMENT` | `field` |
//! | [`InstanceError::NotFound`] | `NOT_FOUND` | `INSTANCE_NOT_FOUND` | `instance_id` |
//! | [`InstanceError::AlreadyExists`] | `ALREADY_EXISTS` | `INSTANCE_EXISTS` | `instance_id` |
//! | [`InstanceError::Busy`] | `FAILED_PRECONDITION` | `INSTANCE_BUSY` | `status` |
//! | [`InstanceError::WrongStatus`] | `FAILED_PRECONDITION` | `INSTANCE_WRONG_STATUS` | `operation`, `status` |
//! | [`InstanceError::Destroyed`] | `FAILED_PRECONDITION` | `INSTANCE_DESTROYED` | `instance_id` |
//! | [`InstanceError::PermissionDenied`] | `PERMISSION_DENIED` | `PERMISSION_DENIED` | |
//! | [`InstanceError::ProvisionInProgress`] | `ABORTED` | `PROVISION_IN_PROGRESS` | `owner`, `instance_id` |
//! | [`InstanceError::ProvisionCompletionPending`] | `ABORTED` | `PROVISION_COMPLETION_PENDING` | `owner`, `instance_id` |
//! | [`InstanceError::ProvisionReleased`] | `FAILED_PRECONDITION` | `PROVISION_RELEASED` | `instance_id` |
//! | [`InstanceError::IdempotencyKeyReused`] | `FAILED_PRECONDITION` | `IDEMPOTENCY_KEY_REUSED` | `idempotency_key` |
//! | [`InstanceError::Unavailable`] | `UNAVAILABLE` | `UNAVAILABLE` | |
//! | [`InstanceError::Internal`] | `INTERNAL` | `INTERNAL` | |
//! | [`InstanceError::Fault`] | see [`Fault`]s below | | |
//!
//! Scheduled-action errors ([`action_error`]):
//!
//! | domain error | gRPC code | reason | metadata |
//! | --- | --- | --- | --- |
//! | [`ActionError::InvalidArgument`] | `INVALID_ARGUMENT` | `INVALID_ARGUMENT` | `field` |
//! | [`ActionError::InstanceNotFound`] | `NOT_FOUND` | `INSTANCE_NOT_FOUND` | `instance_id` |
//! | [`ActionError::AllDestroyed`] | `FAILED_PRECONDITION` | `ALL_TARGETS_DESTROYED` | |
//! | [`ActionError::ConflictPendingAction`] | `ABORTED` | `CONFLICT_PENDING_ACTION` | `instance_id`, `action_id` |
//! | [`ActionError::NotFound`] | `NOT_FOUND` | `ACTION_NOT_FOUND` | `action_id` |
//! | [`ActionError::TargetNotFound`] | `NOT_FOUND` | `TARGET_NOT_FOUND` | `action_id`, `target_id` |
//! | [`ActionError::WrongStatus`] | `FAILED_PRECONDITION` | `ACTION_WRONG_STATUS` | `status` |
//! | [`ActionError::CapacityFull`] | `RESOURCE_EXHAUSTED` | `CAPACITY_FULL` | `in_use`, `cap`; plus `google.rpc.RetryInfo` |
//! | [`ActionError::Internal`] | `INTERNAL` | `INTERNAL` | |
//! | [`ActionError::Fault`] | see [`Fault`]s below | | |
//!
//! A [`Fault`] (storage or runtime failure) of any layer is sent by its kind, and its whole
//! cause chain is logged (never sent):
//!
//! | fault kind | gRPC code | reason |
//! | --- | --- | --- |
//! | [`FaultKind::StorageFull`] | `RESOURCE_EXHAUSTED` | `STORAGE_FULL` |
//! | [`FaultKind::ObjectDamaged`] | `DATA_LOSS` | `OBJECT_DAMAGED` |
//! | [`FaultKind::Storage`] | `INTERNAL` | `STORAGE_ERROR` |
//! | [`FaultKind::Unavailable`] | `UNAVAILABLE` | `UNAVAILABLE` |
//! | [`FaultKind::Runtime`] | `INTERNAL` | `INTERNAL` |
//!
//! Authentication failures ([`unauthenticated`]) carry the reason `UNAUTHENTICATED`.

use std::collections::HashMap;

use clawdo_actors::claw::fault::{Fault, FaultKind};
use clawdo_actors::fleet::ActionError;
use clawdo_actors::instance::InstanceError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The reason of every `UNAUTHENTICATED` status.
pub const REASON_UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// The reason of a `PERMISSION_DENIED` status.
pub const REASON_PERMISSION_DENIED: &str = "PERMISSION_DENIED";
/// The reason of an `INVALID_ARGUMENT` status.
pub const REASON_INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";

/// The `google.rpc.ErrorInfo.domain` of every error clawdo reports.
pub const ERROR_DOMAIN: &str = "clawdo.dev";

/// A status with `code` and `message` whose details hold a `google.rpc.ErrorInfo` with
/// `reason`, domain [`ERROR_DOMAIN`] and `metadata` (structured context such as the id the
/// error is about; keys should match `[a-zA-Z0-9-_]{1,64}`).
pub fn status_with_reason(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// `UNAUTHENTICATED` with reason [`REASON_UNAUTHENTICATED`]: the call carried no bearer token,
/// or one the server does not know.
pub fn unauthenticated(message: impl Into<String>) -> Status {
    status_with_reason(
        Code::Unauthenticated,
        message,
        REASON_UNAUTHENTICATED,
        HashMap::new(),
    )
}

/// `PERMISSION_DENIED` with reason [`REASON_PERMISSION_DENIED`]: the caller is known but may
/// not make this call.
pub fn permission_denied(message: impl Into<String>) -> Status {
    status_with_reason(
        Code::PermissionDenied,
        message,
        REASON_PERMISSION_DENIED,
        HashMap::new(),
    )
}

/// The code a fault is sent with; logs its cause chain (the client sees only the reason).
fn fault_code(fault: &Fault, call: &'static str) -> Code {
    tracing::error!(reason = fault.reason(), cause = %fault.chain(), "{call} failed");
    match fault.kind() {
        FaultKind::StorageFull => Code::ResourceExhausted,
        FaultKind::ObjectDamaged => Code::DataLoss,
        FaultKind::Unavailable => Code::Unavailable,
        FaultKind::Storage | FaultKind::Runtime => Code::Internal,
    }
}

/// The status an instance error is sent as (see the table in the module docs). A function
/// rather than a `From` impl: neither type is this crate's.
pub fn instance_error(error: InstanceError) -> Status {
    {
        let (code, metadata): (Code, Vec<(&str, String)>) = match &error {
            InstanceError::InvalidArgument { field, .. } => {
                (Code::InvalidArgument, vec![("field", (*field).to_owned())])
            }
            InstanceError::NotFound(id) => (Code::NotFound, vec![("instance_id", id.clone())]),
            InstanceError::AlreadyExists(id) => {
                (Code::AlreadyExists, vec![("instance_id", id.clone())])
            }
            InstanceError::Busy(status) => (
                Code::FailedPrecondition,
                vec![("status", status.as_str().to_owned())],
            ),
            InstanceError::WrongStatus { op, status } => (
                Code::FailedPrecondition,
                vec![
                    ("operation", op.as_str().to_owned()),
                    ("status", status.as_str().to_owned()),
                ],
            ),
            InstanceError::Destroyed(id) => {
                (Code::FailedPrecondition, vec![("instance_id", id.clone())])
            }
            InstanceError::PermissionDenied(_) => (Code::PermissionDenied, Vec::new()),
            InstanceError::ProvisionInProgress { owner, instance_id }
            | InstanceError::ProvisionCompletionPending { owner, instance_id } => (
                Code::Aborted,
                vec![
                    ("owner", owner.clone()),
                    ("instance_id", instance_id.clone()),
                ],
            ),
            InstanceError::ProvisionReleased { instance_id, .. } => (
                Code::FailedPrecondition,
                vec![("instance_id", instance_id.clone())],
            ),
            InstanceError::IdempotencyKeyReused(key) => (
                Code::FailedPrecondition,
                vec![("idempotency_key", key.clone())],
            ),
            InstanceError::Unavailable(_) => (Code::Unavailable, Vec::new()),
            InstanceError::Internal(detail) => {
                tracing::error!(%detail, "instance call failed");
                (Code::Internal, Vec::new())
            }
            InstanceError::Fault(fault) => (fault_code(fault, "instance call"), Vec::new()),
        };
        let metadata = metadata
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        status_with_reason(code, error.to_string(), error.reason(), metadata)
    }
}

/// The status a scheduled-action error is sent as (see the second table in the module docs).
/// `CAPACITY_FULL` also carries a `google.rpc.RetryInfo` with the fleet's estimate of when a
/// slot frees.
pub fn action_error(error: ActionError) -> Status {
    let (code, metadata): (Code, Vec<(&str, String)>) = match &error {
        ActionError::InvalidArgument { field, .. } => {
            (Code::InvalidArgument, vec![("field", (*field).to_owned())])
        }
        ActionError::InstanceNotFound(id) => (Code::NotFound, vec![("instance_id", id.clone())]),
        ActionError::AllDestroyed => (Code::FailedPrecondition, Vec::new()),
        ActionError::ConflictPendingAction {
            instance_id,
            action_id,
        } => (
            Code::Aborted,
            vec![
                ("instance_id", instance_id.clone()),
                ("action_id", action_id.to_string()),
            ],
        ),
        ActionError::NotFound(id) => (Code::NotFound, vec![("action_id", id.to_string())]),
        ActionError::TargetNotFound {
            action_id,
            target_id,
        } => (
            Code::NotFound,
            vec![
                ("action_id", action_id.to_string()),
                ("target_id", target_id.to_string()),
            ],
        ),
        ActionError::WrongStatus { status, .. } => {
            (Code::FailedPrecondition, vec![("status", status.clone())])
        }
        ActionError::CapacityFull { in_use, cap, .. } => (
            Code::ResourceExhausted,
            vec![("in_use", in_use.to_string()), ("cap", cap.to_string())],
        ),
        ActionError::Internal(detail) => {
            tracing::error!(%detail, "fleet call failed");
            (Code::Internal, Vec::new())
        }
        ActionError::Fault(fault) => (fault_code(fault, "fleet call"), Vec::new()),
    };
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    let mut details = ErrorDetails::with_error_info(error.reason(), ERROR_DOMAIN, metadata);
    if let ActionError::CapacityFull { retry_after, .. } = &error {
        details.set_retry_info(Some(*retry_after));
    }
    Status::with_error_details(code, error.to_string(), details)
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use clawdo_actors::instance::{OpKind, Status as InstanceStatus};

    use super::*;

    /// The code, reason and metadata a domain error is sent with.
    fn sent(error: InstanceError) -> (Code, String, HashMap<String, String>, String) {
        let status = instance_error(error);
        let info = status
            .get_details_error_info()
            .expect("every mapped error carries an ErrorInfo");
        assert_eq!(info.domain, ERROR_DOMAIN);
        (
            status.code(),
            info.reason,
            info.metadata,
            status.message().to_owned(),
        )
    }

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let (code, reason, metadata, message) = sent(InstanceError::InvalidArgument {
            field: "owner",
            reason: "must be user:<id> or org:<id>".into(),
        });
        assert_eq!(code, Code::InvalidArgument);
        assert_eq!(reason, "INVALID_ARGUMENT");
        assert_eq!(metadata, meta(&[("field", "owner")]));
        assert_eq!(message, "invalid owner: must be user:<id> or org:<id>");
    }

    #[test]
    fn not_found() {
        let (code, reason, metadata, _) = sent(InstanceError::NotFound("i-1".into()));
        assert_eq!(code, Code::NotFound);
        assert_eq!(reason, "INSTANCE_NOT_FOUND");
        assert_eq!(metadata, meta(&[("instance_id", "i-1")]));
    }

    #[test]
    fn already_exists() {
        let (code, reason, metadata, _) = sent(InstanceError::AlreadyExists("i-1".into()));
        assert_eq!(code, Code::AlreadyExists);
        assert_eq!(reason, "INSTANCE_EXISTS");
        assert_eq!(metadata, meta(&[("instance_id", "i-1")]));
    }

    #[test]
    fn busy_names_the_status() {
        let (code, reason, metadata, message) =
            sent(InstanceError::Busy(InstanceStatus::Restarting));
        assert_eq!(code, Code::FailedPrecondition);
        assert_eq!(reason, "INSTANCE_BUSY");
        assert_eq!(metadata, meta(&[("status", "restarting")]));
        assert_eq!(message, "instance is busy (restarting)");
    }

    #[test]
    fn wrong_status() {
        let (code, reason, metadata, _) = sent(InstanceError::WrongStatus {
            op: OpKind::Start,
            status: InstanceStatus::Running,
        });
        assert_eq!(code, Code::FailedPrecondition);
        assert_eq!(reason, "INSTANCE_WRONG_STATUS");
        assert_eq!(
            metadata,
            meta(&[("operation", "start"), ("status", "running")])
        );
    }

    #[test]
    fn destroyed() {
        let (code, reason, metadata, _) = sent(InstanceError::Destroyed("i-1".into()));
        assert_eq!(code, Code::FailedPrecondition);
        assert_eq!(reason, "INSTANCE_DESTROYED");
        assert_eq!(metadata, meta(&[("instance_id", "i-1")]));
    }

    #[test]
    fn permission_denied_maps() {
        let (code, reason, metadata, _) = sent(InstanceError::PermissionDenied("not yours".into()));
        assert_eq!(code, Code::PermissionDenied);
        assert_eq!(reason, "PERMISSION_DENIED");
        assert!(metadata.is_empty());
    }

    #[test]
    fn provision_conflicts_are_aborted_with_their_reasons() {
        let in_progress = InstanceError::ProvisionInProgress {
            owner: "user:1".into(),
            instance_id: "i-1".into(),
        };
        let pending = InstanceError::ProvisionCompletionPending {
            owner: "user:1".into(),
            instance_id: "i-1".into(),
        };
        for (error, expected) in [
            (in_progress, "PROVISION_IN_PROGRESS"),
            (pending, "PROVISION_COMPLETION_PENDING"),
        ] {
            let (code, reason, metadata, _) = sent(error);
            assert_eq!((code, reason.as_str()), (Code::Aborted, expected));
            assert_eq!(
                metadata,
                meta(&[("owner", "user:1"), ("instance_id", "i-1")])
            );
        }
        let (code, reason, metadata, message) = sent(InstanceError::ProvisionReleased {
            instance_id: "i-1".into(),
            error: "provision failed: no capacity".into(),
        });
        assert_eq!(
            (code, reason.as_str()),
            (Code::FailedPrecondition, "PROVISION_RELEASED")
        );
        assert_eq!(metadata, meta(&[("instance_id", "i-1")]));
        assert!(message.contains("no capacity"), "{message}");
        let (code, reason, metadata, _) = sent(InstanceError::IdempotencyKeyReused("k".into()));
        assert_eq!(
            (code, reason.as_str()),
            (Code::FailedPrecondition, "IDEMPOTENCY_KEY_REUSED")
        );
        assert_eq!(metadata, meta(&[("idempotency_key", "k")]));
        let (code, reason, _, _) = sent(InstanceError::Unavailable("shutting down".into()));
        assert_eq!((code, reason.as_str()), (Code::Unavailable, "UNAVAILABLE"));
    }

    #[test]
    fn internal() {
        let (code, reason, metadata, _) = sent(InstanceError::Internal("disk".into()));
        assert_eq!(code, Code::Internal);
        assert_eq!(reason, "INTERNAL");
        assert!(metadata.is_empty());
    }

    #[test]
    fn faults_are_sent_by_kind_with_a_specific_reason() {
        use clawdo_storage::rusqlite;
        let sqlite = |code| {
            clawdo_storage::Error::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        for (fault, code, reason) in [
            (
                Fault::from(sqlite(rusqlite::ffi::SQLITE_FULL)),
                Code::ResourceExhausted,
                "STORAGE_FULL",
            ),
            (
                Fault::from(sqlite(rusqlite::ffi::SQLITE_NOTADB)),
                Code::DataLoss,
                "OBJECT_DAMAGED",
            ),
            (
                Fault::from(sqlite(rusqlite::ffi::SQLITE_IOERR)),
                Code::Internal,
                "STORAGE_ERROR",
            ),
            (
                Fault::from(clawdo_actors::Error::ShuttingDown),
                Code::Unavailable,
                "UNAVAILABLE",
            ),
        ] {
            let (sent_code, sent_reason, _, message) = sent(InstanceError::Fault(fault.clone()));
            assert_eq!((sent_code, sent_reason.as_str()), (code, reason));
            assert!(!message.contains("internal error"), "{message}");
            let status = action_error(ActionError::Fault(fault));
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("an ErrorInfo");
            assert_eq!(info.reason, reason);
        }
    }

    #[test]
    fn auth_failures_carry_their_reasons() {
        let status = unauthenticated("missing bearer token");
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "UNAUTHENTICATED");

        let status = permission_denied("admin only");
        assert_eq!(status.code(), Code::PermissionDenied);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "PERMISSION_DENIED");
    }

    #[test]
    fn error_info_round_trips_through_status_details() {
        let metadata = HashMap::from([("instance_id".to_owned(), "i-42".to_owned())]);
        let status = status_with_reason(
            Code::FailedPrecondition,
            "instance i-42 is restarting",
            "INSTANCE_BUSY",
            metadata.clone(),
        );

        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "instance i-42 is restarting");
        let info = status
            .get_details_error_info()
            .expect("status details carry an ErrorInfo");
        assert_eq!(info.reason, "INSTANCE_BUSY");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata, metadata);
    }

    #[test]
    fn error_info_survives_the_wire_encoding() {
        let status = status_with_reason(
            Code::ResourceExhausted,
            "the fleet's scheduled-work slots are full",
            "CAPACITY_FULL",
            HashMap::new(),
        );

        // What a server sends as trailers and a client rebuilds from them.
        let response = status.into_http::<()>();
        let received =
            Status::from_header_map(response.headers()).expect("the headers hold a status");

        assert_eq!(received.code(), Code::ResourceExhausted);
        assert_eq!(
            received.message(),
            "the fleet's scheduled-work slots are full"
        );
        let info = received
            .get_details_error_info()
            .expect("received details carry an ErrorInfo");
        assert_eq!(info.reason, "CAPACITY_FULL");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert!(info.metadata.is_empty());
    }

    #[test]
    fn capacity_full_carries_a_retry_delay() {
        let status = action_error(ActionError::CapacityFull {
            in_use: 2,
            cap: 2,
            retry_after: std::time::Duration::from_secs(42),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "CAPACITY_FULL");
        assert_eq!(info.metadata.get("cap").map(String::as_str), Some("2"));
        let retry = status.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(42)));
    }

    #[test]
    fn action_errors_map_to_their_codes() {
        for (error, code, reason) in [
            (
                ActionError::ConflictPendingAction {
                    instance_id: "i".into(),
                    action_id: 3,
                },
                Code::Aborted,
                "CONFLICT_PENDING_ACTION",
            ),
            (
                ActionError::InvalidArgument {
                    field: "run_at",
                    reason: "bad".into(),
                },
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                ActionError::InstanceNotFound("i".into()),
                Code::NotFound,
                "INSTANCE_NOT_FOUND",
            ),
            (ActionError::NotFound(1), Code::NotFound, "ACTION_NOT_FOUND"),
            (
                ActionError::AllDestroyed,
                Code::FailedPrecondition,
                "ALL_TARGETS_DESTROYED",
            ),
            (
                ActionError::Internal("x".into()),
                Code::Internal,
                "INTERNAL",
            ),
        ] {
            let status = action_error(error);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("an ErrorInfo");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn a_status_without_details_has_no_error_info() {
        assert!(Status::internal("boom").get_details_error_info().is_none());
    }
}
