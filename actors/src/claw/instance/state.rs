//! What an instance persists: its record, the operation in flight, the provision that created
//! it, and its link to the fleet (the upcoming and the running scheduled target). Each is one
//! codec-encoded KV value; `store.rs` reads and writes them.

use serde::{Deserialize, Serialize};

use super::api::{Desired, OpKind, Status};
use crate::UnixMillis;
use crate::claw::fleet::api::TargetTicket;
use crate::provider::{MachineId, VolumeId};

/// The operation in flight, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// Increasing per instance; an outcome for another id is stale and ignored.
    pub id: u64,
    /// What it does.
    pub kind: OpKind,
    /// Which process started it: an activation in another process epoch means the task died
    /// with that process and the operation is resolved at once.
    pub epoch: u64,
    /// When the lease runs out and the operation is given up.
    pub lease_expires_at: UnixMillis,
    /// Target image of a version change.
    pub image: Option<String>,
    /// Pin of a version change (`None`: unchanged).
    pub pin: Option<bool>,
    /// The status before the operation (a version change restarts only a running machine and
    /// returns to it; a failed stop leaves the machine running).
    pub prior: Status,
}

/// The instance's persisted state (one row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Instance id.
    pub id: String,
    /// `user:<id>` or `org:<id>`.
    pub owner: String,
    /// The sandbox id given to the machine (stable for the instance's life).
    pub sandbox_id: String,
    /// Image tag the machine runs (or will run).
    pub image_tag: String,
    /// Whether the image is pinned (fleet version changes skip pinned instances by default).
    pub pinned: bool,
    /// Machine at the provider, once created.
    pub machine: Option<MachineId>,
    /// Volume at the provider, once created.
    pub volume: Option<VolumeId>,
    /// Current status.
    pub status: Status,
    /// Why the status is what it is (failures, lease expiry); empty when nothing to say.
    pub reason: String,
    /// What the owner wants.
    pub desired: Desired,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
    /// Last reconcile with the provider.
    pub last_reconcile_at: Option<UnixMillis>,
    /// Next reconcile.
    pub next_reconcile_at: Option<UnixMillis>,
    /// The operation in flight, if any.
    pub op: Option<InFlight>,
    /// Last operation id used.
    pub last_op_id: u64,
}

/// The fresh provision that created an instance, kept beside its record (KV `provision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionTicket {
    /// The registry's reservation id.
    pub reservation: u64,
    /// How the provision ended, as far as the instance knows.
    pub outcome: TicketOutcome,
}

/// How an instance's provision ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketOutcome {
    /// Still running.
    Pending,
    /// Succeeded.
    Succeeded,
    /// Failed or abandoned.
    Failed {
        /// Whether infrastructure may exist.
        infra_may_exist: bool,
        /// Why.
        error: String,
    },
}

/// The instance's fleet state, persisted under its own KV key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLink {
    /// The target waiting for its time or a slot (the banner).
    pub upcoming: Option<TargetTicket>,
    /// The target whose operation runs now.
    pub running: Option<RunningTarget>,
}

/// A claimed target and the operation applying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTarget {
    /// The target.
    pub target_id: i64,
    /// The instance operation applying it.
    pub op_id: u64,
}

stable_names! {
    /// Why an operation in flight is given up without its outcome. The text is how the
    /// instance's `reason` says it (`… during <operation>` follows).
    pub enum AbandonReason {
        /// Its lease ran out (the instance's own, or the fleet's for a scheduled target).
        LeaseExpired = "lease expired",
        /// Its task died with the previous process.
        Interrupted = "interrupted by a restart",
    }
}

stable_names! {
    /// The instance's named timers; the text is the stored timer name.
    pub enum Timer {
        /// The operation in flight's lease.
        Lease = "op-lease",
        /// The next reconcile with the provider.
        Reconcile = "reconcile",
        /// The upcoming scheduled target's `run_at` (or its next try).
        Action = "action",
    }
}

impl Timer {
    /// Whether the named timer `name` is this one.
    pub fn is(self, name: &str) -> bool {
        self.as_str() == name
    }
}
