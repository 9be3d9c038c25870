//! What callers exchange with an instance: its requests and replies, what they see of it
//! (statuses, the view, events), the event kinds it logs, and its [`InstanceError`].

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::state::Record;
use crate::UnixMillis;
use crate::claw::fault::Fault;
use crate::claw::fleet::api::{TargetNotice, TargetTicket};
use crate::provider::{MachineId, MachineState, ProviderError, VolumeId};

stable_names! {
    /// Lifecycle status of an instance (SPEC §4).
    #[derive(Serialize, Deserialize)]
    pub enum Status {
        /// Volume and machine are being created and started.
        Provisioning = "provisioning",
        /// The machine is being started.
        Starting = "starting",
        /// The machine runs.
        Running = "running",
        /// The machine is being stopped.
        Stopping = "stopping",
        /// The machine is stopped (by request, after a failure, or never started).
        Stopped = "stopped",
        /// The machine is being restarted (busy).
        Restarting = "restarting",
        /// The machine moves to another image (busy).
        Updating = "updating",
        /// The machine is being replaced after an unexpected stop (busy).
        Recovering = "recovering",
        /// Machine and volume are being destroyed (busy).
        Destroying = "destroying",
        /// Gone for good.
        Destroyed = "destroyed",
    }
}

impl Status {
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

stable_names! {
    /// What the owner wants the machine to be doing.
    #[derive(Serialize, Deserialize)]
    pub enum Desired {
        /// Running.
        Running = "running",
        /// Stopped.
        Stopped = "stopped",
        /// Destroyed.
        Destroyed = "destroyed",
    }
}

stable_names! {
    /// An operation that holds the instance busy until its outcome arrives or its lease expires.
    #[derive(Serialize, Deserialize)]
    pub enum OpKind {
        /// Create volume + machine, start it.
        Provision = "provision",
        /// Start the machine.
        Start = "start",
        /// Stop the machine.
        Stop = "stop",
        /// Restart the machine.
        Restart = "restart",
        /// Change the image (and restart if running).
        ChangeVersion = "change_version",
        /// Destroy machine and volume.
        Destroy = "destroy",
    }
}

impl OpKind {
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
    pub upcoming_action: Option<TargetTicket>,
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
    /// Event name as stored: an [`EventKind`]'s string form, e.g. `instance.status_changed`
    /// (a string so that a log written by a newer build still reads).
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
    /// A rule of the protocol between objects was broken (e.g. a reply of the wrong shape).
    #[error("internal error: {0}")]
    Internal(String),
    /// Storage or the runtime failed; the operation did not happen (or, for a storage failure
    /// of a commit, was not acknowledged). The cause is kept for the logs.
    #[error(transparent)]
    Fault(#[from] Fault),
}

fault_from!(InstanceError: clawdo_storage::Error, clawdo_storage::rusqlite::Error);

impl From<crate::Error> for InstanceError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::ShuttingDown | crate::Error::Timeout { .. } => {
                InstanceError::Unavailable(e.to_string())
            }
            other => InstanceError::Fault(other.into()),
        }
    }
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
            InstanceError::Fault(fault) => fault.reason(),
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

stable_names! {
    /// Every kind of event an instance logs. The string forms are stable: they are stored in the
    /// instance's event table and sent to watchers.
    pub enum EventKind {
        /// A provision was accepted; its provider work starts.
        ProvisionStarted = "instance.provision_started",
        /// A provision was fenced off before it reached the instance (a destroyed tombstone).
        ProvisionAbandoned = "instance.provision_abandoned",
        /// The provision's volume was created.
        VolumeCreated = "instance.volume_created",
        /// The provision's machine was created.
        MachineCreated = "instance.machine_created",
        /// The provision finished: the machine runs.
        Provisioned = "instance.provisioned",
        /// A user asked to start the machine.
        StartRequested = "instance.start_requested",
        /// A user asked to stop the machine.
        StopRequested = "instance.stop_requested",
        /// A user asked to restart the machine.
        RestartRequested = "instance.restart_requested",
        /// A user asked to change the image.
        VersionChangeRequested = "instance.version_change_requested",
        /// A user (or the registry's cleanup) asked to destroy the instance.
        DestroyRequested = "instance.destroy_requested",
        /// The machine was started.
        Started = "instance.started",
        /// The machine was restarted.
        Restarted = "instance.restarted",
        /// The machine was stopped.
        Stopped = "instance.stopped",
        /// The image changed.
        VersionChanged = "instance.version_changed",
        /// Machine and volume are gone.
        Destroyed = "instance.destroyed",
        /// An operation's provider call failed.
        OperationFailed = "instance.operation_failed",
        /// An operation's lease ran out before its outcome arrived.
        OpLeaseExpired = "instance.op_lease_expired",
        /// An operation's task died with the previous process.
        OpInterrupted = "instance.op_interrupted",
        /// The status changed (detail: the new status).
        StatusChanged = "instance.status_changed",
        /// The provider reports another machine state than the instance expects.
        MachineStateDrift = "instance.machine_state_drift",
        /// The machine stopped although the instance should run.
        UnexpectedStopDetected = "instance.unexpected_stop_detected",
        /// The reconcile check could not ask the provider.
        ReconcileFailed = "instance.reconcile_failed",
        /// A scheduled admin action's target started on this instance.
        ScheduledActionStarted = "instance.scheduled_action_started",
    }
}

/// A user operation on an existing instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpRequest {
    /// Start a stopped instance.
    Start,
    /// Stop a running instance.
    Stop,
    /// Restart a running instance.
    Restart,
    /// Move to another image; `pin` changes the pin when given.
    ChangeVersion {
        /// Target image tag.
        image_tag: String,
        /// New pin (`None`: unchanged).
        pin: Option<bool>,
    },
    /// Destroy machine and volume.
    Destroy,
}

impl OpRequest {
    /// The operation this request starts.
    pub fn kind(&self) -> OpKind {
        match self {
            OpRequest::Start => OpKind::Start,
            OpRequest::Stop => OpKind::Stop,
            OpRequest::Restart => OpKind::Restart,
            OpRequest::ChangeVersion { .. } => OpKind::ChangeVersion,
            OpRequest::Destroy => OpKind::Destroy,
        }
    }
}

/// A fresh provision, as the registry admitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionRequest {
    /// Owner key.
    pub owner: String,
    /// Image tag.
    pub image_tag: String,
    /// Pin the image.
    pub pinned: bool,
    /// The owner registry's reservation id (admitted and marked `provider_started`).
    pub reservation: u64,
}

/// Requests an instance understands. Callers use [`super::InstanceHandle`].
#[derive(Debug)]
pub enum InstanceRequest {
    /// Create the instance and provision its machine. Repeating it for the same reservation
    /// answers the instance as it stands (`created: false`).
    Provision(ProvisionRequest),
    /// The registry asks where the provision of `reservation` stands. With `fence`, an
    /// instance without a record writes a destroyed tombstone first, so a provision that
    /// arrives later is refused.
    Admission {
        /// Reservation id.
        reservation: u64,
        /// The reservation's owner (for the tombstone).
        owner: String,
        /// Refuse the provision from now on if it has not arrived.
        fence: bool,
    },
    /// Read it. With `owner_scope`, an instance of another owner is `NotFound`.
    Get {
        /// Only an instance of this owner is visible.
        owner_scope: Option<String>,
    },
    /// Start, stop, restart, change version or destroy.
    Op {
        /// Which operation.
        op: OpRequest,
        /// Only an instance of this owner may be changed.
        owner_scope: Option<String>,
    },
    /// Events after `after` (exclusive), oldest first.
    Events {
        /// Cursor.
        after: i64,
        /// Page size.
        limit: usize,
        /// Only an instance of this owner is visible.
        owner_scope: Option<String>,
    },
    /// The current view and a subscription to every later event.
    Watch {
        /// Only an instance of this owner is visible.
        owner_scope: Option<String>,
    },
    /// A provider task finished (sent by the instance's own task).
    OpFinished(OpOutcome),
    /// A provision task created infrastructure (recorded before the task goes on).
    OpProgress(OpOutcome),
    /// A reconcile check finished (sent by the instance's own task).
    Reconciled(Result<MachineState, ProviderError>),
    /// The fleet tells the instance about one of its targets.
    Target(TargetNotice),
    /// The fleet has a slot for this target: try it now (adopting it if the instance was not
    /// told yet). Answered with [`InstanceReply::Woken`].
    Wake(TargetTicket),
}

/// Replies of an instance.
#[derive(Debug)]
pub enum InstanceReply {
    /// The instance after the request.
    View(InstanceView),
    /// The answer to `Provision`.
    Provisioned {
        /// The instance.
        view: InstanceView,
        /// Whether this request created it.
        created: bool,
    },
    /// The answer to `Admission`.
    Admission(AdmissionState),
    /// A page of events.
    Events(Vec<InstanceEvent>),
    /// The current view and a live subscription.
    Watch(InstanceView, broadcast::Receiver<InstanceEvent>),
    /// Internal message applied.
    Ack,
    /// The answer to `Wake`: whether the instance asked the fleet (claimed or skipped).
    Woken(bool),
}
