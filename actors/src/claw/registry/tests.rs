//! Table tests of the registry's pure decisions: the sweep's [`decide`] and admission's
//! [`conflict_reason`]. No runtime, no clock.

use super::admission::conflict_reason;
use super::api::{ConflictReason, ReleaseReason, Reservation, ReservationStatus};
use super::sweep::{Decision, decide};
use crate::claw::instance::{AdmissionState, InstanceError};

fn reservation(status: ReservationStatus) -> Reservation {
    Reservation {
        id: 1,
        owner: "user:1".into(),
        instance_id: "i".into(),
        idempotency_key: "k".into(),
        status,
        error: None,
        created_at: 0,
        updated_at: 0,
    }
}

#[test]
fn decisions_cover_every_outcome() {
    use ReservationStatus as S;
    let failed = |infra| AdmissionState::Failed {
        infra_may_exist: infra,
        error: "boom".into(),
    };
    let cases = [
        (
            S::ProviderStarted,
            AdmissionState::Complete,
            false,
            false,
            Decision::Complete,
        ),
        (
            S::FailedRequiresReconciliation,
            AdmissionState::Complete,
            false,
            false,
            Decision::Complete,
        ),
        (
            S::Admitted,
            AdmissionState::Absent,
            true,
            false,
            Decision::Release(ReleaseReason::NeverArrived),
        ),
        (
            S::Admitted,
            AdmissionState::Absent,
            false,
            false,
            Decision::Wait,
        ),
        (
            S::ProviderStarted,
            AdmissionState::Provisioning { infra: true },
            true,
            true,
            Decision::Wait,
        ),
        (
            S::ProviderStarted,
            failed(false),
            false,
            false,
            Decision::Release(ReleaseReason::FailedBeforeInfrastructure),
        ),
        (
            S::ProviderStarted,
            failed(true),
            false,
            false,
            Decision::RequireReconciliation("boom".into()),
        ),
        (
            S::FailedRequiresReconciliation,
            failed(true),
            false,
            false,
            Decision::Wait,
        ),
        (
            S::FailedRequiresReconciliation,
            failed(true),
            false,
            true,
            Decision::Destroy,
        ),
        (
            S::FailedRequiresReconciliation,
            AdmissionState::Destroyed,
            false,
            false,
            Decision::Release(ReleaseReason::InstanceDestroyed),
        ),
        (
            S::FailedRequiresReconciliation,
            AdmissionState::Busy,
            false,
            true,
            Decision::Wait,
        ),
    ];
    for (status, state, stale, cleanup_due, expected) in cases {
        assert_eq!(
            decide(&reservation(status), &state, stale, cleanup_due),
            expected,
            "{status:?} / {state:?} / stale {stale} / cleanup due {cleanup_due}"
        );
    }
}

#[test]
fn conflicts_name_pending_completion_only_when_infrastructure_may_exist() {
    use ReservationStatus as S;
    let failed = || AdmissionState::Failed {
        infra_may_exist: true,
        error: "boom".into(),
    };
    let unreachable = || Err(InstanceError::Unavailable("unreachable".into()));
    let cases: Vec<(S, Result<AdmissionState, InstanceError>, ConflictReason)> = vec![
        (
            S::Admitted,
            Ok(AdmissionState::Absent),
            ConflictReason::InProgress,
        ),
        (
            S::ProviderStarted,
            Ok(AdmissionState::Provisioning { infra: false }),
            ConflictReason::InProgress,
        ),
        (
            S::ProviderStarted,
            Ok(AdmissionState::Provisioning { infra: true }),
            ConflictReason::CompletionPending,
        ),
        (
            S::ProviderStarted,
            Ok(AdmissionState::Busy),
            ConflictReason::InProgress,
        ),
        (
            S::ProviderStarted,
            unreachable(),
            ConflictReason::InProgress,
        ),
        (
            S::FailedRequiresReconciliation,
            Ok(failed()),
            ConflictReason::CompletionPending,
        ),
        (
            S::FailedRequiresReconciliation,
            unreachable(),
            ConflictReason::CompletionPending,
        ),
    ];
    for (status, state, expected) in cases {
        assert_eq!(
            conflict_reason(status, &state),
            expected,
            "{status:?} / {state:?}"
        );
    }
}
