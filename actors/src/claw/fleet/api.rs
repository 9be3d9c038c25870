//! What callers exchange with the fleet: its requests and replies, action kinds and statuses,
//! what callers see, the ticket an instance keeps for its upcoming target, what the fleet tells
//! instances ([`TargetNotice`]), typed failure and skip reasons, and [`ActionError`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::claw::fault::Fault;

/// Most targets one action may have (SPEC §6).
pub const MAX_TARGETS: usize = 10_000;
/// Most stages one action may have.
pub const MAX_STAGES: usize = 16;

stable_names! {
    /// What an action does to each target instance.
    #[derive(Serialize, Deserialize)]
    pub enum ActionKind {
        /// Redeploy on the current image (restart a running machine).
        ScheduledRestart = "scheduled_restart",
        /// Redeploy on a chosen image tag, with an optional pin override.
        VersionChange = "version_change",
    }
}

stable_names! {
    /// Lifecycle of an action (the parent row).
    #[derive(Serialize, Deserialize)]
    pub enum ActionStatus {
        /// No target claimed yet.
        Scheduled = "scheduled",
        /// At least one target was claimed; not every target is terminal.
        Running = "running",
        /// Every target is terminal.
        Completed = "completed",
        /// Cancelled: pending targets were cancelled; running ones finish.
        Cancelled = "cancelled",
    }
}

stable_names! {
    /// Lifecycle of one target.
    #[derive(Serialize, Deserialize)]
    pub enum TargetStatus {
        /// Waiting for its time, its stage, or a slot.
        Pending = "pending",
        /// Holds a slot; the side effect runs.
        Running = "running",
        /// The side effect succeeded.
        Applied = "applied",
        /// Did not apply to the instance (destroyed, pinned, not running, ...).
        Skipped = "skipped",
        /// The side effect failed or its lease expired.
        Failed = "failed",
        /// Cancelled before it was claimed.
        Cancelled = "cancelled",
    }
}

impl TargetStatus {
    /// Whether the target is done for good.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TargetStatus::Pending | TargetStatus::Running)
    }
}

/// One stage of a new action: the next `count` targets (in the order given), not before
/// `run_at`. Targets left over after every stage's count go to the last stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Label, e.g. `canary` (1-64 printable characters).
    pub name: String,
    /// How many targets this stage takes (at least 1).
    pub count: usize,
    /// Not before this time (`None`: the action's `run_at`; never earlier than it).
    pub run_at: Option<UnixMillis>,
}

/// A new action, as the embedding API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Restart or version change.
    pub kind: ActionKind,
    /// Target image of a version change (required for it, refused for a restart).
    pub image_tag: Option<String>,
    /// Pin override of a version change (`None`: unchanged; pinned instances are skipped).
    pub pin: Option<bool>,
    /// When to start (`None`: now).
    pub run_at: Option<UnixMillis>,
    /// Lease of each claimed slot (`None`: the configured default).
    pub lease: Option<Duration>,
    /// Instance ids (1 to [`MAX_TARGETS`], duplicates are dropped).
    pub targets: Vec<String>,
    /// Stages (empty: one stage with every target).
    pub stages: Vec<StageSpec>,
}

/// What a target instance keeps about its upcoming target (and shows as its banner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetTicket {
    /// The action.
    pub action_id: i64,
    /// The target row.
    pub target_id: i64,
    /// What it will do.
    pub kind: ActionKind,
    /// Target image of a version change.
    pub image_tag: Option<String>,
    /// Pin override of a version change.
    pub pin: Option<bool>,
    /// Not before this time.
    pub run_at: UnixMillis,
}

/// Target counts of an action by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCounts {
    /// Every target.
    pub total: u64,
    /// Waiting.
    pub pending: u64,
    /// Holding a slot.
    pub running: u64,
    /// Applied.
    pub applied: u64,
    /// Skipped.
    pub skipped: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl TargetCounts {
    /// Targets that are done for good.
    pub fn terminal(&self) -> u64 {
        self.applied + self.skipped + self.failed + self.cancelled
    }
}

/// An action as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSummary {
    /// Action id.
    pub id: i64,
    /// Restart or version change.
    pub kind: ActionKind,
    /// Target image of a version change.
    pub image_tag: Option<String>,
    /// Pin override.
    pub pin: Option<bool>,
    /// Status.
    pub status: ActionStatus,
    /// Scheduled start.
    pub run_at: UnixMillis,
    /// Lease of each slot, milliseconds.
    pub lease_ms: i64,
    /// Who scheduled it.
    pub created_by: String,
    /// When.
    pub created_at: UnixMillis,
    /// Last change.
    pub updated_at: UnixMillis,
    /// When every target became terminal (or the action was cancelled).
    pub completed_at: Option<UnixMillis>,
    /// Targets by status.
    pub counts: TargetCounts,
}

/// One stage as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageView {
    /// Position (0 first).
    pub index: u32,
    /// Label.
    pub name: String,
    /// Not before.
    pub run_at: UnixMillis,
    /// `scheduled`, `completed` or `cancelled`.
    pub status: String,
}

/// One target as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    /// Target id.
    pub id: i64,
    /// Instance id.
    pub instance_id: String,
    /// Stage index.
    pub stage: u32,
    /// Status.
    pub status: TargetStatus,
    /// Not before.
    pub run_at: UnixMillis,
    /// The instance's image when scheduled.
    pub source_tag: String,
    /// When its slot was claimed.
    pub slot_claimed_at: Option<UnixMillis>,
    /// When its slot's lease runs out (while running).
    pub lease_expires_at: Option<UnixMillis>,
    /// When it became terminal.
    pub completed_at: Option<UnixMillis>,
    /// Why it failed or was skipped.
    pub failure_reason: Option<String>,
    /// Total interactive-pressure deferral, milliseconds.
    pub deferred_ms: i64,
}

/// An action with its stages and every target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDetail {
    /// The action.
    pub action: ActionSummary,
    /// Its stages.
    pub stages: Vec<StageView>,
    /// Its targets, by id.
    pub targets: Vec<TargetView>,
}

/// What a run-now did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunNowOutcome {
    /// Targets moved to "due now".
    pub targets: u64,
    /// Whether the cap was bypassed (an audit row was written).
    pub forced: bool,
}

/// One audit row: who did what outside the normal rules, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id (increasing).
    pub id: i64,
    /// When.
    pub at: UnixMillis,
    /// Who.
    pub actor: String,
    /// What, e.g. `run_now_forced`.
    pub what: String,
    /// Details (action, target).
    pub detail: String,
}

/// Why a fleet call was refused. Nothing was written when a call returns one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A field of the request is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A target instance does not exist.
    #[error("instance {0} not found")]
    InstanceNotFound(String),
    /// Every target instance is destroyed.
    #[error("every target instance is destroyed")]
    AllDestroyed,
    /// An instance already has a pending target under a scheduled or running action.
    #[error("instance {instance_id} already has a pending target in action {action_id}")]
    ConflictPendingAction {
        /// The instance.
        instance_id: String,
        /// The action holding it.
        action_id: i64,
    },
    /// No such action.
    #[error("action {0} not found")]
    NotFound(i64),
    /// No such target in the action.
    #[error("target {target_id} not found in action {action_id}")]
    TargetNotFound {
        /// The action.
        action_id: i64,
        /// The target.
        target_id: i64,
    },
    /// The action or target is past the point where this call applies.
    #[error("cannot {op}: it is {status}")]
    WrongStatus {
        /// The refused call, e.g. `cancel`.
        op: &'static str,
        /// The status it was refused in.
        status: String,
    },
    /// Every fleet slot is taken; retry after the estimate.
    #[error("the fleet's scheduled-work slots are full ({in_use}/{cap})")]
    CapacityFull {
        /// Slots in use.
        in_use: u64,
        /// The cap.
        cap: u64,
        /// When a slot is expected to free.
        retry_after: Duration,
    },
    /// A rule of the protocol between objects was broken (e.g. a reply of the wrong shape).
    #[error("internal error: {0}")]
    Internal(String),
    /// Storage or the runtime failed; nothing happened. The cause is kept for the logs.
    #[error(transparent)]
    Fault(#[from] Fault),
}

fault_from!(ActionError: clawdo_storage::Error, clawdo_storage::rusqlite::Error, crate::Error);

impl ActionError {
    /// The machine-readable reason sent to clients (google.rpc.ErrorInfo).
    pub fn reason(&self) -> &'static str {
        match self {
            ActionError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            ActionError::InstanceNotFound(_) => "INSTANCE_NOT_FOUND",
            ActionError::AllDestroyed => "ALL_TARGETS_DESTROYED",
            ActionError::ConflictPendingAction { .. } => "CONFLICT_PENDING_ACTION",
            ActionError::NotFound(_) => "ACTION_NOT_FOUND",
            ActionError::TargetNotFound { .. } => "TARGET_NOT_FOUND",
            ActionError::WrongStatus { .. } => "ACTION_WRONG_STATUS",
            ActionError::CapacityFull { .. } => "CAPACITY_FULL",
            ActionError::Internal(_) => "INTERNAL",
            ActionError::Fault(fault) => fault.reason(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ActionError {
        ActionError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

stable_names! {
    /// Why a target failed. The string forms are stable: they are stored in the target's
    /// `failure_reason` (followed by `: <detail>` when there is one) and sent to clients.
    pub enum FailureReason {
        /// Its slot's lease ran out before its outcome arrived.
        LeaseExpired = "lease_expired",
        /// Its run died with the previous process.
        Interrupted = "interrupted",
        /// The provider answered with an error.
        ProviderError = "provider_error",
        /// The provider could not be reached.
        ProviderUnavailable = "provider_unavailable",
        /// The instance could not record the start of its operation.
        StartFailed = "could not start",
    }
}

/// A target's failure: the reason and, for provider errors, what the provider said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFailure {
    /// Why.
    pub reason: FailureReason,
    /// Details (the provider's error), if any.
    pub detail: Option<String>,
}

impl TargetFailure {
    /// A failure without details.
    pub fn new(reason: FailureReason) -> TargetFailure {
        TargetFailure {
            reason,
            detail: None,
        }
    }

    /// A failure with details.
    pub fn with_detail(reason: FailureReason, detail: impl Into<String>) -> TargetFailure {
        TargetFailure {
            reason,
            detail: Some(detail.into()),
        }
    }
}

impl std::fmt::Display for TargetFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.reason.as_str()),
            None => f.write_str(self.reason.as_str()),
        }
    }
}

stable_names! {
    /// Why a target did not apply to its instance. The string forms are stable (stored in the
    /// target's `failure_reason`).
    pub enum SkipReason {
        /// The instance is destroyed (or being destroyed).
        InstanceDestroyed = "instance_destroyed",
        /// A restart of an instance that does not run.
        InstanceNotRunning = "instance_not_running",
        /// A version change of a pinned instance without a pin override.
        InstancePinned = "instance_pinned",
        /// A version change that would change nothing.
        AlreadyOnTag = "already_on_tag",
    }
}

/// What the fleet tells an instance about one of its targets (delivered after the fleet's
/// commit, never awaited inside the fleet's handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetNotice {
    /// A target for this instance was scheduled (or made due now by run-now).
    Scheduled(TargetTicket),
    /// The target was cancelled.
    Cancelled {
        /// The target.
        target_id: i64,
    },
    /// The target's lease expired at the fleet (its task was stopped first): give up its
    /// operation.
    Aborted {
        /// The target.
        target_id: i64,
    },
}

/// The key of the background task applying target `target_id` on instance `instance_id`: the
/// instance spawns it under this key, the fleet's reaper aborts it by it before it frees the
/// target's slot.
pub fn target_task_key(instance_id: &str, target_id: i64) -> String {
    format!("instance/{instance_id}/target/{target_id}")
}

/// A new action, validated by the caller (the embedding API checked the instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAction {
    /// Restart or version change.
    pub kind: ActionKind,
    /// Target image of a version change.
    pub image_tag: Option<String>,
    /// Pin override.
    pub pin: Option<bool>,
    /// Start.
    pub run_at: UnixMillis,
    /// Slot lease, milliseconds.
    pub lease_ms: i64,
    /// Stages: name and run_at, in order.
    pub stages: Vec<(String, UnixMillis)>,
    /// Targets: instance id, its current image, stage index.
    pub targets: Vec<(String, String, u32)>,
    /// Who scheduled it.
    pub created_by: String,
}

/// Requests the fleet understands. Callers use [`super::FleetHandle`].
#[derive(Debug)]
pub enum FleetRequest {
    /// Insert an action with its stages and targets in one transaction.
    Schedule(NewAction),
    /// One action with stages and targets.
    Get {
        /// The action.
        action_id: i64,
    },
    /// Actions, newest first.
    List {
        /// Cursor: only ids below it.
        before: Option<i64>,
        /// Page size.
        limit: usize,
    },
    /// Cancel an action: its pending targets are cancelled, running ones finish.
    Cancel {
        /// The action.
        action_id: i64,
    },
    /// Cancel one pending target.
    CancelTarget {
        /// The action.
        action_id: i64,
        /// The target.
        target_id: i64,
    },
    /// Make an action's (or one target's) pending targets due now.
    RunNow {
        /// The action.
        action_id: i64,
        /// Only this target.
        target_id: Option<i64>,
        /// Bypass the cap (and stage order), with an audit row.
        force: bool,
        /// Who asked (for the audit row).
        actor: String,
    },
    /// An instance asks for a slot for its target.
    Claim {
        /// The target.
        target_id: i64,
        /// The asking instance.
        instance_id: String,
    },
    /// An instance reports that its pending target does not apply.
    Skip {
        /// The target.
        target_id: i64,
        /// Why.
        reason: SkipReason,
    },
    /// An instance reports the outcome of its running target.
    Outcome {
        /// The target.
        target_id: i64,
        /// `Err` when it failed.
        result: Result<(), TargetFailure>,
    },
    /// The instance's oldest pending target, if any (lost-message repair).
    DueFor {
        /// The instance.
        instance_id: String,
    },
    /// A woken instance answered without claiming.
    WakeDone {
        /// The target.
        target_id: i64,
    },
    /// The newest audit rows, newest first.
    Audit {
        /// How many.
        limit: usize,
    },
    /// Activate (reaping runs orphaned by a restart) and do nothing else.
    Ping,
}

/// How a claim ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimReply {
    /// The slot is the caller's until `lease_expires_at`: run the side effect now.
    Won {
        /// Lease end.
        lease_expires_at: UnixMillis,
        /// The target.
        ticket: TargetTicket,
    },
    /// Every slot is taken; the instance is woken when one frees.
    Full,
    /// Deferred by interactive pressure (or a previous deferral); try again at `until`.
    Deferred {
        /// When to try again.
        until: UnixMillis,
    },
    /// Not due yet: at `Some(time)`, or (`None`) when its stage opens (the fleet wakes it).
    NotYet(Option<UnixMillis>),
    /// The target is no longer pending (cancelled, finished, or its action ended).
    Gone(String),
}

/// Replies of the fleet.
#[derive(Debug)]
pub enum FleetReply {
    /// An action.
    Summary(ActionSummary),
    /// An action with stages and targets.
    Detail(ActionDetail),
    /// A page of actions.
    Actions(Vec<ActionSummary>),
    /// One target.
    Target(TargetView),
    /// What a run-now did.
    RanNow(RunNowOutcome),
    /// A claim's outcome.
    Claim(ClaimReply),
    /// The instance's oldest pending target.
    Due(Option<TargetTicket>),
    /// Audit rows.
    Audit(Vec<AuditEntry>),
    /// Done.
    Ack,
}
/// Parse an RFC 3339 time (`2026-05-01T12:00:00Z`, `2026-05-01T14:00:00.250+02:00`) into Unix
/// milliseconds. Anything else is [`ActionError::InvalidArgument`] on `run_at` (the message
/// quotes at most a short prefix of the input).
pub fn parse_run_at(text: &str) -> Result<UnixMillis, ActionError> {
    crate::claw::time::parse_rfc3339(text)
        .map_err(|e| ActionError::invalid("run_at", e.to_string()))
}
