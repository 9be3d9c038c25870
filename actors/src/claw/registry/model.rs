//! The registry's data: reservations and their statuses, what `Begin` answers, the knobs, and
//! the registry's errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;

/// Where a fresh provision stands (SPEC §5).
///
/// `admitted → provider_started → completed` is the normal path. `released` ends a provision
/// that left no infrastructure behind (the owner may provision again);
/// `failed_requires_reconciliation` ends one that may have left some (fail closed: the owner
/// stays blocked until the registry's alarm has seen the instance cleaned up or completed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReservationStatus {
    /// Admitted; no provider call may have happened yet.
    Admitted,
    /// The instance was (or is about to be) told to create infrastructure.
    ProviderStarted,
    /// The instance was provisioned and its route is active.
    Completed,
    /// Ended without infrastructure (or its infrastructure is gone): retryable.
    Released,
    /// Failed after infrastructure may have been created: blocks the owner until resolved.
    FailedRequiresReconciliation,
}

impl ReservationStatus {
    /// Every status.
    pub const ALL: [ReservationStatus; 5] = [
        ReservationStatus::Admitted,
        ReservationStatus::ProviderStarted,
        ReservationStatus::Completed,
        ReservationStatus::Released,
        ReservationStatus::FailedRequiresReconciliation,
    ];

    /// Name as stored and shown (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationStatus::Admitted => "admitted",
            ReservationStatus::ProviderStarted => "provider_started",
            ReservationStatus::Completed => "completed",
            ReservationStatus::Released => "released",
            ReservationStatus::FailedRequiresReconciliation => "failed_requires_reconciliation",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<ReservationStatus> {
        ReservationStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
    }

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

/// The answer to [`super::RegistryRequest::Begin`].
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

/// The answer to [`super::RegistryRequest::Complete`].
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

/// Knobs of the registry class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Instances a `user:` owner may have. Default 1.
    pub user_instance_limit: u32,
    /// Instances an `org:` owner may have. Default 100.
    pub org_instance_limit: u32,
    /// An `admitted` or `provider_started` reservation whose instance never received its
    /// provision this long after admission is released by the alarm. Default 60 s.
    #[serde(with = "crate::config::serde_secs")]
    pub stale_after: Duration,
    /// How often the alarm looks at unresolved reservations, and how long after a provision
    /// failed with infrastructure the alarm has the instance destroyed. Default 60 s.
    #[serde(with = "crate::config::serde_secs")]
    pub check_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            user_instance_limit: 1,
            org_instance_limit: 100,
            stale_after: Duration::from_secs(60),
            check_interval: Duration::from_secs(60),
        }
    }
}

impl RegistryConfig {
    /// The instance limit of `owner` (by its kind prefix).
    pub fn limit_for(&self, owner: &str) -> u32 {
        if owner.starts_with("org:") {
            self.org_instance_limit
        } else {
            self.user_instance_limit
        }
    }

    /// Check the values: limits at least 1, intervals at least 1 s.
    pub fn validate(&self) -> Result<(), String> {
        if self.user_instance_limit == 0 || self.org_instance_limit == 0 {
            return Err("instance limits must be at least 1".into());
        }
        if self.stale_after < Duration::from_secs(1) || self.check_interval < Duration::from_secs(1)
        {
            return Err("stale-after and check-interval must be at least 1 s".into());
        }
        Ok(())
    }
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
    /// Storage or another object failed; nothing changed.
    #[error("registry: {0}")]
    Internal(String),
}

impl From<clawdo_storage::Error> for RegistryError {
    fn from(e: clawdo_storage::Error) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

impl From<clawdo_storage::rusqlite::Error> for RegistryError {
    fn from(e: clawdo_storage::rusqlite::Error) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

impl From<crate::Error> for RegistryError {
    fn from(e: crate::Error) -> Self {
        RegistryError::Internal(e.to_string())
    }
}
