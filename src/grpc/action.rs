//! `clawdo.v1.ActionService`: scheduled admin actions, each call a thin adapter over one
//! [`Actions`] call. Admin-only (the interceptor refuses other tokens before a call gets here).
//!
//! Requests are decoded with `TryFrom` (an unknown kind, an unparsable `run_at`, a missing id
//! are `INVALID_ARGUMENT` naming the field, before anything is called); domain errors go
//! through the one mapping in [`super::status`].

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use clawdo_actors::fleet::{
    ActionDetail, ActionError, ActionKind, ActionStatus, ActionSummary, RunNowOutcome,
    ScheduleSpec, StageSpec, TargetStatus, TargetView, parse_run_at,
};

use super::status::action_error;
use super::{pb, reply};
use crate::actions::Actions;
use crate::runtime::Runtime;

/// Page size of a `List` that asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// Serves `clawdo.v1.ActionService` over a shared [`Runtime`].
#[derive(Debug, Clone)]
pub struct ActionHandler {
    /// The runtime every call is answered from.
    runtime: Arc<Runtime>,
}

impl ActionHandler {
    /// An `ActionService` answering from `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }

    fn actions(&self) -> Actions {
        self.runtime.actions()
    }
}

fn invalid(field: &'static str, reason: &str) -> ActionError {
    ActionError::InvalidArgument {
        field,
        reason: reason.to_owned(),
    }
}

fn positive(field: &'static str, id: i64) -> Result<i64, ActionError> {
    if id > 0 {
        Ok(id)
    } else {
        Err(invalid(field, "a positive id is required"))
    }
}

impl TryFrom<pb::ScheduleActionRequest> for ScheduleSpec {
    type Error = ActionError;

    fn try_from(request: pb::ScheduleActionRequest) -> Result<Self, ActionError> {
        let kind = match request.kind() {
            pb::ActionKind::ScheduledRestart => ActionKind::ScheduledRestart,
            pb::ActionKind::VersionChange => ActionKind::VersionChange,
            pb::ActionKind::Unspecified => {
                return Err(invalid("kind", "scheduled_restart or version_change"));
            }
        };
        let run_at = match request.run_at.trim() {
            "" => None,
            text => Some(parse_run_at(text)?),
        };
        let stages = request
            .stages
            .into_iter()
            .map(|stage| {
                Ok(StageSpec {
                    name: stage.name,
                    count: usize::try_from(stage.count).unwrap_or(usize::MAX),
                    run_at: match stage.run_at.trim() {
                        "" => None,
                        text => Some(parse_run_at(text)?),
                    },
                })
            })
            .collect::<Result<Vec<_>, ActionError>>()?;
        Ok(ScheduleSpec {
            kind,
            image_tag: request.image_tag,
            pin: request.pin,
            run_at,
            lease: request
                .lease_secs
                .map(|s| Duration::from_secs(u64::from(s))),
            targets: request.instance_ids,
            stages,
        })
    }
}

impl From<ActionKind> for pb::ActionKind {
    fn from(kind: ActionKind) -> Self {
        match kind {
            ActionKind::ScheduledRestart => pb::ActionKind::ScheduledRestart,
            ActionKind::VersionChange => pb::ActionKind::VersionChange,
        }
    }
}

impl From<ActionStatus> for pb::ActionStatus {
    fn from(status: ActionStatus) -> Self {
        match status {
            ActionStatus::Scheduled => pb::ActionStatus::Scheduled,
            ActionStatus::Running => pb::ActionStatus::Running,
            ActionStatus::Completed => pb::ActionStatus::Completed,
            ActionStatus::Cancelled => pb::ActionStatus::Cancelled,
        }
    }
}

impl From<TargetStatus> for pb::TargetStatus {
    fn from(status: TargetStatus) -> Self {
        match status {
            TargetStatus::Pending => pb::TargetStatus::Pending,
            TargetStatus::Running => pb::TargetStatus::Running,
            TargetStatus::Applied => pb::TargetStatus::Applied,
            TargetStatus::Skipped => pb::TargetStatus::Skipped,
            TargetStatus::Failed => pb::TargetStatus::Failed,
            TargetStatus::Cancelled => pb::TargetStatus::Cancelled,
        }
    }
}

impl From<ActionSummary> for pb::Action {
    fn from(a: ActionSummary) -> Self {
        let c = a.counts;
        pb::Action {
            id: a.id,
            kind: pb::ActionKind::from(a.kind).into(),
            image_tag: a.image_tag,
            pin: a.pin,
            status: pb::ActionStatus::from(a.status).into(),
            run_at_ms: a.run_at,
            lease_ms: a.lease_ms,
            created_by: a.created_by,
            created_at_ms: a.created_at,
            updated_at_ms: a.updated_at,
            completed_at_ms: a.completed_at,
            counts: Some(pb::TargetCounts {
                total: c.total,
                pending: c.pending,
                running: c.running,
                applied: c.applied,
                skipped: c.skipped,
                failed: c.failed,
                cancelled: c.cancelled,
            }),
        }
    }
}

impl From<TargetView> for pb::ActionTarget {
    fn from(t: TargetView) -> Self {
        pb::ActionTarget {
            id: t.id,
            instance_id: t.instance_id,
            stage: t.stage,
            status: pb::TargetStatus::from(t.status).into(),
            run_at_ms: t.run_at,
            source_tag: t.source_tag,
            slot_claimed_at_ms: t.slot_claimed_at,
            lease_expires_at_ms: t.lease_expires_at,
            completed_at_ms: t.completed_at,
            failure_reason: t.failure_reason.unwrap_or_default(),
            deferred_ms: t.deferred_ms,
        }
    }
}

impl From<ActionDetail> for pb::ActionDetail {
    fn from(d: ActionDetail) -> Self {
        pb::ActionDetail {
            action: Some(d.action.into()),
            stages: d
                .stages
                .into_iter()
                .map(|s| pb::ActionStage {
                    index: s.index,
                    name: s.name,
                    run_at_ms: s.run_at,
                    status: s.status,
                })
                .collect(),
            targets: d.targets.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<RunNowOutcome> for pb::RunNowResponse {
    fn from(outcome: RunNowOutcome) -> Self {
        pb::RunNowResponse {
            targets: outcome.targets,
            forced: outcome.forced,
        }
    }
}

#[tonic::async_trait]
impl pb::action_service_server::ActionService for ActionHandler {
    async fn schedule(
        &self,
        request: Request<pb::ScheduleActionRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let spec = ScheduleSpec::try_from(request.into_inner()).map_err(action_error)?;
        reply(self.actions().schedule("admin", spec).await, action_error)
    }

    async fn get(
        &self,
        request: Request<pb::GetActionRequest>,
    ) -> Result<Response<pb::ActionDetail>, Status> {
        let id = positive("action_id", request.get_ref().action_id).map_err(action_error)?;
        reply(self.actions().get(id).await, action_error)
    }

    async fn list(
        &self,
        request: Request<pb::ListActionsRequest>,
    ) -> Result<Response<pb::ListActionsResponse>, Status> {
        let request = request.into_inner();
        if request.before_id < 0 {
            return Err(action_error(invalid("before_id", "must not be negative")));
        }
        let before = (request.before_id > 0).then_some(request.before_id);
        let limit = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => usize::try_from(n).unwrap_or(crate::actions::MAX_PAGE),
        }
        .min(crate::actions::MAX_PAGE);
        let actions = self
            .actions()
            .list(before, limit)
            .await
            .map_err(action_error)?;
        let next_before_id = if actions.len() == limit {
            actions.last().map_or(0, |a| a.id)
        } else {
            0
        };
        Ok(Response::new(pb::ListActionsResponse {
            actions: actions.into_iter().map(Into::into).collect(),
            next_before_id,
        }))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelActionRequest>,
    ) -> Result<Response<pb::Action>, Status> {
        let id = positive("action_id", request.get_ref().action_id).map_err(action_error)?;
        reply(self.actions().cancel(id).await, action_error)
    }

    async fn cancel_target(
        &self,
        request: Request<pb::CancelTargetRequest>,
    ) -> Result<Response<pb::ActionTarget>, Status> {
        let r = request.get_ref();
        let action_id = positive("action_id", r.action_id).map_err(action_error)?;
        let target_id = positive("target_id", r.target_id).map_err(action_error)?;
        let target = self.actions().cancel_target(action_id, target_id).await;
        reply(target, action_error)
    }

    async fn run_now(
        &self,
        request: Request<pb::RunNowRequest>,
    ) -> Result<Response<pb::RunNowResponse>, Status> {
        let r = request.into_inner();
        let action_id = positive("action_id", r.action_id).map_err(action_error)?;
        let target_id = r
            .target_id
            .map(|t| positive("target_id", t))
            .transpose()
            .map_err(action_error)?;
        let who = r.requested_by.trim();
        if who.chars().count() > 128 || who.chars().any(char::is_control) {
            return Err(action_error(invalid(
                "requested_by",
                "at most 128 printable characters",
            )));
        }
        let actor = if who.is_empty() {
            "admin".to_owned()
        } else {
            format!("admin ({who})")
        };
        let outcome = self
            .actions()
            .run_now(&actor, action_id, target_id, r.force)
            .await;
        reply(outcome, action_error)
    }
}
