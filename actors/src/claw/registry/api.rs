//! What callers exchange with a registry: its requests and replies, reservations and their
//! statuses, what `Begin` answers, and [`RegistryError`].

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::claw::fault::Fault;

stable_names! {
    /// Where a fresh provision stands (SPEC §5).
    ///
    /// `admitted → provider_started → completed` is the normal path. `released` ends a provision
    /// that left no infrastructure behind (the owner may provision again);
    /// `failed_requires_reconciliation` ends one that may have left some (fail closed: the owner
    /// stays blocked until the registry's alarm has seen the instance cleaned up or completed).
    #[derive(Serialize, Deserialize)]
    pub enum ReservationStatus {
        /// Admitted; no provider call may have happened yet.
        Admitted = "admitted",
        /// The instance was (or is about to be) told to create infrastructure.
        ProviderStarted = "provider_started",
        /// The instance was provisioned and its route is active.
        Completed = "completed",
        /// Ended without infrastructure (or its infrastructure is gone): retryable.
        Released = "released",
        /// Failed after infrastructure may have been created: blocks the owner until resolved.
        FailedRequiresReconciliation = "failed_requires_reconciliation",
    }
}

impl ReservationStatus {
    /// Whether the reservation still holds the owner's single unresolved slot (the statuses
    /// the partial unique index covers).
    pub fn is_unresolved(self) -> bool {
        matches!(
            self,
            ReservationStatus::Admitted
                | ReservationStatus::ProviderStarted
                | ReservationStatus::FailedRequiresReconciliation
        )
    }
}

/// One row of `provision_reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Id, increasing within the owner's registry.
    pub id: u64,
    /// Owner key.
    pub owner: String,
    /// The instance this provision creates.
    pub instance_id: String,
    /// The caller's idempotency key (unique per owner).
    pub idempotency_key: String,
    /// Where it stands.
    pub status: ReservationStatus,
    /// Why it failed or was released (`None` while it goes well).
    pub error: Option<String>,
    /// Admitted at (clock time, Unix milliseconds).
    pub created_at: UnixMillis,
    /// Last status change.
    pub updated_at: UnixMillis,
}

/// Why a fresh provision was refused because another one of the owner is unresolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    /// The other provision is still running; retry later or with its idempotency key.
    InProgress,
    /// The other provision has (or may have) created infrastructure and its completion is not
    /// recorded; the registry's alarm resolves it.
    CompletionPending,
}

/// The answer to [`RegistryRequest::Begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    /// A new reservation: the caller goes on with the provision.
    Admitted(Reservation),
    /// The idempotency key was seen before: its reservation as it stands now.
    Existing(Reservation),
    /// The owner already has as many instances as allowed: one of them, nothing admitted.
    AtLimit {
        /// An active instance of the owner (the oldest).
        instance_id: String,
        /// The owner's instance limit.
        limit: u32,
    },
    /// Another fresh provision of the owner is unresolved; nothing admitted.
    Conflict {
        /// Which kind of conflict.
        reason: ConflictReason,
        /// The unresolved reservation.
        reservation: Reservation,
    },
}

/// The answer to [`RegistryRequest::Complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Recorded now: the reservation is `completed` and the route active.
    Completed,
    /// It was already recorded (a repeated report); nothing changed.
    AlreadyCompleted,
    /// Refused: the reservation ended otherwise (e.g. the instance was destroyed) and a late
    /// completion cannot revive it.
    Rejected(ReservationStatus),
}

/// Why a registry request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The idempotency key was used before for a different request (other image, pin or
    /// instance id); nothing was admitted.
    #[error("idempotency key {0:?} was already used for a different provision request")]
    KeyReused(String),
    /// The instance id is already one of the owner's instances.
    #[error("instance {0} already exists")]
    InstanceExists(String),
    /// No reservation with this id.
    #[error("no reservation {0}")]
    UnknownReservation(u64),
    /// An instance the registry asked answered with an error (other than a fault).
    #[error("registry: {0}")]
    Internal(String),
    /// Storage or the runtime failed; nothing changed. The cause is kept for the logs.
    #[error(transparent)]
    Fault(#[from] Fault),
}

fault_from!(RegistryError: clawdo_storage::Error, clawdo_storage::rusqlite::Error, crate::Error);

/// Admission of one fresh provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginRequest {
    /// The caller's idempotency key (unique per owner).
    pub idempotency_key: String,
    /// What is asked for (image, pin, explicit instance id), compared on a retry.
    pub fingerprint: String,
    /// The instance id to create if admitted.
    pub instance_id: String,
}

/// Requests a registry understands. Callers use [`super::RegistryHandle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRequest {
    /// Admit a fresh provision or say why not.
    Begin(BeginRequest),
    /// `admitted → provider_started`; answers whether this call made the move, and the
    /// reservation after it. Only the winner may go on to the instance.
    MarkStarted(u64),
    /// The instance was provisioned: `→ completed`, route active (rejected once the
    /// reservation ended otherwise).
    Complete {
        /// Reservation id.
        reservation: u64,
        /// The reporting instance (must be the reservation's).
        instance_id: String,
    },
    /// The provision failed: `→ released` when no infrastructure can exist, else
    /// `→ failed_requires_reconciliation`.
    Fail {
        /// Reservation id.
        reservation: u64,
        /// The reporting instance (must be the reservation's).
        instance_id: String,
        /// Whether infrastructure may have been created.
        infra_may_exist: bool,
        /// What went wrong.
        error: String,
    },
    /// The instance was destroyed: remove its route, release its unresolved reservation
    /// (destroy fencing). Idempotent.
    InstanceDestroyed(String),
    /// A reservation by id.
    Reservation(u64),
    /// Up to `limit` instance ids after `after`, ascending (pending and active routes).
    ListRoutes {
        /// Cursor (exclusive).
        after: Option<String>,
        /// Page size.
        limit: usize,
    },
}

/// Replies of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryReply {
    /// The answer to `Begin`.
    Begun(BeginOutcome),
    /// The answer to `MarkStarted`.
    Started {
        /// Whether this call moved the reservation to `provider_started`.
        won: bool,
        /// The reservation after the call.
        reservation: Reservation,
    },
    /// The answer to `Complete`.
    Completion(Completion),
    /// A reservation.
    Reservation(Reservation),
    /// Done.
    Ok,
    /// A page of instance ids.
    Routes(Vec<String>),
}

stable_names! {
    /// Why the registry released a reservation (stored in its `error`).
    pub enum ReleaseReason {
        /// The instance was destroyed.
        InstanceDestroyed = "instance destroyed",
        /// The instance id belongs to another provision.
        OtherProvision = "the instance belongs to another provision",
        /// The provision never reached its instance (fenced off).
        NeverArrived = "the provision never reached its instance",
        /// The provision failed before creating infrastructure.
        FailedBeforeInfrastructure = "provision failed before creating infrastructure",
    }
}
