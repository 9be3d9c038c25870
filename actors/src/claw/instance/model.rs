//! The instance's data: statuses, the persisted record, what callers see, events, errors.

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::provider::{MachineId, ProviderError, VolumeId};

/// Lifecycle status of an instance (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Volume and machine are being created and started.
    Provisioning,
    /// The machine is being started.
    Starting,
    /// The machine runs.
    Running,
    /// The machine is being stopped.
    Stopping,
    /// The machine is stopped (by request, after a failure, or never started).
    Stopped,
    /// The machine is being restarted (busy).
    Restarting,
    /// The machine moves to another image (busy).
    Updating,
    /// The machine is being replaced after an unexpected stop (busy).
    Recovering,
    /// Machine and volume are being destroyed (busy).
    Destroying,
    /// Gone for good.
    Destroyed,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 10] = [
        Status::Provisioning,
        Status::Starting,
        Status::Running,
        Status::Stopping,
        Status::Stopped,
        Status::Restarting,
        Status::Updating,
        Status::Recovering,
        Status::Destroying,
        Status::Destroyed,
    ];

    /// Lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Provisioning => "provisioning",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Restarting => "restarting",
            Status::Updating => "updating",
            Status::Recovering => "recovering",
            Status::Destroying => "destroying",
            Status::Destroyed => "destroyed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether an operation is in flight in this status, so mutating calls are refused with
    /// `INSTANCE_BUSY`. SPEC §4 names `restarting`, `updating`, `recovering` and `destroying`;
    /// the other transitional statuses (`provisioning`, `starting`, `stopping`) hold an
    /// operation and a lease too and are refused the same way.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            Status::Provisioning
                | Status::Starting
                | Status::Stopping
                | Status::Restarting
                | Status::Updating
                | Status::Recovering
                | Status::Destroying
        )
    }
}

/// What the owner wants the machine to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Desired {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Destroyed.
    Destroyed,
}

impl Desired {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Destroyed => "destroyed",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Desired> {
        [Desired::Running, Desired::Stopped, Desired::Destroyed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// An operation that holds the instance busy until its outcome arrives or its lease expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Create volume + machine, start it.
    Provision,
    /// Start the machine.
    Start,
    /// Stop the machine.
    Stop,
    /// Restart the machine.
    Restart,
    /// Change the image (and restart if running).
    ChangeVersion,
    /// Destroy machine and volume.
    Destroy,
}

impl OpKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Provision => "provision",
            OpKind::Start => "start",
            OpKind::Stop => "stop",
            OpKind::Restart => "restart",
            OpKind::ChangeVersion => "change_version",
            OpKind::Destroy => "destroy",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<OpKind> {
        [
            OpKind::Provision,
            OpKind::Start,
            OpKind::Stop,
            OpKind::Restart,
            OpKind::ChangeVersion,
            OpKind::Destroy,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The status the instance shows while this operation runs.
    pub fn status(self) -> Status {
        match self {
            OpKind::Provision => Status::Provisioning,
            OpKind::Start => Status::Starting,
            OpKind::Stop => Status::Stopping,
            OpKind::Restart => Status::Restarting,
            OpKind::ChangeVersion => Status::Updating,
            OpKind::Destroy => Status::Destroying,
        }
    }
}

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

/// What callers see of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    /// Instance id.
    pub id: String,
    /// Owner key.
    pub owner: String,
    /// Sandbox id.
    pub sandbox_id: String,
    /// Image tag.
    pub image_tag: String,
    /// Pinned image.
    pub pinned: bool,
    /// Machine id, once created.
    pub machine_id: Option<String>,
    /// Volume id, once created.
    pub volume_id: Option<String>,
    /// Status.
    pub status: Status,
    /// Why (may be empty).
    pub reason: String,
    /// Desired state.
    pub desired: Desired,
    /// Created.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
    /// Last reconcile.
    pub last_reconcile_at: Option<UnixMillis>,
    /// Next reconcile.
    pub next_reconcile_at: Option<UnixMillis>,
    /// The operation in flight.
    pub operation: Option<OpKind>,
    /// The upcoming scheduled admin action (the status banner), if any.
    pub upcoming_action: Option<crate::fleet::TargetTicket>,
}

impl From<&Record> for InstanceView {
    fn from(r: &Record) -> Self {
        InstanceView {
            id: r.id.clone(),
            owner: r.owner.clone(),
            sandbox_id: r.sandbox_id.clone(),
            image_tag: r.image_tag.clone(),
            pinned: r.pinned,
            machine_id: r.machine.as_ref().map(|m| m.0.clone()),
            volume_id: r.volume.as_ref().map(|v| v.0.clone()),
            status: r.status,
            reason: r.reason.clone(),
            desired: r.desired,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_reconcile_at: r.last_reconcile_at,
            next_reconcile_at: r.next_reconcile_at,
            operation: r.op.as_ref().map(|o| o.kind),
            upcoming_action: None,
        }
    }
}

/// One entry of an instance's event log (also sent to watchers and tracing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// Instance id.
    pub instance_id: String,
    /// Position in the instance's log (increasing).
    pub seq: i64,
    /// When (clock time).
    pub at: UnixMillis,
    /// Event name, e.g. `instance.status_changed`, `instance.machine_state_drift`.
    pub kind: String,
    /// Status after the event.
    pub status: Status,
    /// Human-readable detail.
    pub detail: String,
}

/// Why an instance operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    /// A field of the request is invalid; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No such instance (or not visible to the caller).
    #[error("instance {0} not found")]
    NotFound(String),
    /// The instance already exists.
    #[error("instance {0} already exists")]
    AlreadyExists(String),
    /// An operation is in flight; try again when it finished.
    #[error("instance is busy ({status})", status = .0.as_str())]
    Busy(Status),
    /// The operation does not apply in the current status.
    #[error("cannot {op} an instance that is {status}", op = .op.as_str(), status = .status.as_str())]
    WrongStatus {
        /// The refused operation.
        op: OpKind,
        /// The status it was refused in.
        status: Status,
    },
    /// The instance was destroyed.
    #[error("instance {0} was destroyed")]
    Destroyed(String),
    /// The caller may not do this (an owner token acting for another owner).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Another fresh provision of the owner is still running; retry later, or with that
    /// provision's idempotency key to get its outcome.
    #[error("a provision of {owner} is in progress (instance {instance_id})")]
    ProvisionInProgress {
        /// Owner key.
        owner: String,
        /// The instance the running provision creates.
        instance_id: String,
    },
    /// Another fresh provision of the owner may have created infrastructure and its
    /// completion is not recorded; the registry resolves it (its alarm, or the instance's
    /// destroy) and the owner can provision again after that.
    #[error("a provision of {owner} awaits completion or cleanup (instance {instance_id})")]
    ProvisionCompletionPending {
        /// Owner key.
        owner: String,
        /// The instance of that provision.
        instance_id: String,
    },
    /// The provision of this idempotency key ended without an instance (it failed before
    /// creating infrastructure, or was cleaned up); retry with a new idempotency key.
    #[error("the provision of instance {instance_id} was released: {error}")]
    ProvisionReleased {
        /// The instance it would have created.
        instance_id: String,
        /// Why.
        error: String,
    },
    /// The idempotency key was used before for a different request.
    #[error("idempotency key {0:?} was already used for a different provision request")]
    IdempotencyKeyReused(String),
    /// The runtime cannot take the call now (shutting down, or a call timed out); retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Storage or the runtime failed; the operation did not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InstanceError {
    /// The machine-readable reason sent to clients (google.rpc.ErrorInfo).
    pub fn reason(&self) -> &'static str {
        match self {
            InstanceError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            InstanceError::NotFound(_) => "INSTANCE_NOT_FOUND",
            InstanceError::AlreadyExists(_) => "INSTANCE_EXISTS",
            InstanceError::Busy(_) => "INSTANCE_BUSY",
            InstanceError::WrongStatus { .. } => "INSTANCE_WRONG_STATUS",
            InstanceError::Destroyed(_) => "INSTANCE_DESTROYED",
            InstanceError::PermissionDenied(_) => "PERMISSION_DENIED",
            InstanceError::ProvisionInProgress { .. } => "PROVISION_IN_PROGRESS",
            InstanceError::ProvisionCompletionPending { .. } => "PROVISION_COMPLETION_PENDING",
            InstanceError::ProvisionReleased { .. } => "PROVISION_RELEASED",
            InstanceError::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            InstanceError::Unavailable(_) => "UNAVAILABLE",
            InstanceError::Internal(_) => "INTERNAL",
        }
    }
}

/// The outcome of a provider task, sent back to the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpOutcome {
    /// The operation it answers.
    pub op_id: u64,
    /// Infrastructure created along the way (kept even on failure, for cleanup).
    pub machine: Option<MachineId>,
    /// Volume created along the way.
    pub volume: Option<VolumeId>,
    /// What happened.
    pub result: Result<(), ProviderError>,
}

/// Where an instance's fresh provision stands, as its registry sees it (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionState {
    /// The instance never received the provision (when asked with `fence`, it now never will:
    /// a destroyed tombstone refuses it).
    Absent,
    /// The provision's operation is in flight; `infra`: a volume or machine is recorded.
    Provisioning {
        /// Whether infrastructure is recorded already.
        infra: bool,
    },
    /// Provisioned: the provision succeeded, or the instance runs on its machine after all.
    Complete,
    /// The provision failed or was abandoned.
    Failed {
        /// Whether infrastructure may exist (a provider call may have taken effect).
        infra_may_exist: bool,
        /// Why.
        error: String,
    },
    /// Another operation is in flight (e.g. a destroy); ask again later.
    Busy,
    /// The instance is destroyed.
    Destroyed,
    /// The instance exists but was not created by this reservation.
    Other,
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
