//! [`FleetHandle`]: the typed way to call the fleet (the singleton [`FLEET_ID`]). Instances,
//! the outbox and the embedding API all go through it; the reply matching lives here.

use super::api::{
    ActionDetail, ActionError, ActionSummary, AuditEntry, ClaimReply, FleetReply, FleetRequest,
    NewAction, RunNowOutcome, SkipReason, TargetFailure, TargetTicket, TargetView,
};
use super::{FLEET_ID, Fleet};
use crate::Host;

/// A typed handle to the fleet. Cheap to create and clone; holds no resources.
#[derive(Debug, Clone)]
pub struct FleetHandle {
    host: Host,
}

fn unexpected(reply: FleetReply) -> ActionError {
    ActionError::Internal(format!("unexpected fleet reply {reply:?}"))
}

impl FleetHandle {
    /// A handle to the fleet of `host`.
    pub fn new(host: &Host) -> FleetHandle {
        FleetHandle { host: host.clone() }
    }

    /// Whether the fleet object was ever created. Activates nothing.
    pub async fn exists(&self) -> Result<bool, ActionError> {
        Ok(self.host.exists::<Fleet>(FLEET_ID).await?)
    }

    async fn call(&self, request: FleetRequest) -> Result<FleetReply, ActionError> {
        self.host.get::<Fleet>(FLEET_ID)?.call(request).await?
    }

    /// Insert an action with its stages and targets.
    pub async fn schedule(&self, new: NewAction) -> Result<ActionSummary, ActionError> {
        expect_reply!(
            self.call(FleetRequest::Schedule(new)).await?,
            FleetReply::Summary
        )
    }

    /// One action with stages and targets.
    pub async fn get(&self, action_id: i64) -> Result<ActionDetail, ActionError> {
        expect_reply!(
            self.call(FleetRequest::Get { action_id }).await?,
            FleetReply::Detail
        )
    }

    /// Up to `limit` actions with an id below `before`, newest first.
    pub async fn list(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActionSummary>, ActionError> {
        expect_reply!(
            self.call(FleetRequest::List { before, limit }).await?,
            FleetReply::Actions
        )
    }

    /// Cancel an action.
    pub async fn cancel(&self, action_id: i64) -> Result<ActionSummary, ActionError> {
        expect_reply!(
            self.call(FleetRequest::Cancel { action_id }).await?,
            FleetReply::Summary
        )
    }

    /// Cancel one pending target.
    pub async fn cancel_target(
        &self,
        action_id: i64,
        target_id: i64,
    ) -> Result<TargetView, ActionError> {
        let request = FleetRequest::CancelTarget {
            action_id,
            target_id,
        };
        expect_reply!(self.call(request).await?, FleetReply::Target)
    }

    /// Make an action's (or one target's) pending targets due now.
    pub async fn run_now(
        &self,
        action_id: i64,
        target_id: Option<i64>,
        force: bool,
        actor: &str,
    ) -> Result<RunNowOutcome, ActionError> {
        let request = FleetRequest::RunNow {
            action_id,
            target_id,
            force,
            actor: actor.to_owned(),
        };
        expect_reply!(self.call(request).await?, FleetReply::RanNow)
    }

    /// The newest `limit` audit rows, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, ActionError> {
        expect_reply!(
            self.call(FleetRequest::Audit { limit }).await?,
            FleetReply::Audit
        )
    }

    /// Ask for a slot for `instance_id`'s target.
    pub async fn claim(
        &self,
        target_id: i64,
        instance_id: &str,
    ) -> Result<ClaimReply, ActionError> {
        let request = FleetRequest::Claim {
            target_id,
            instance_id: instance_id.to_owned(),
        };
        expect_reply!(self.call(request).await?, FleetReply::Claim)
    }

    /// Report that a pending target does not apply.
    pub async fn skip(&self, target_id: i64, reason: SkipReason) -> Result<(), ActionError> {
        self.call(FleetRequest::Skip { target_id, reason })
            .await
            .map(drop)
    }

    /// Report the outcome of a running target.
    pub async fn outcome(
        &self,
        target_id: i64,
        result: Result<(), TargetFailure>,
    ) -> Result<(), ActionError> {
        self.call(FleetRequest::Outcome { target_id, result })
            .await
            .map(drop)
    }

    /// The instance's oldest pending target, if any.
    pub async fn due_for(&self, instance_id: &str) -> Result<Option<TargetTicket>, ActionError> {
        let request = FleetRequest::DueFor {
            instance_id: instance_id.to_owned(),
        };
        expect_reply!(self.call(request).await?, FleetReply::Due)
    }

    /// A woken instance answered without claiming: its reservation passes on.
    pub async fn wake_done(&self, target_id: i64) -> Result<(), ActionError> {
        self.call(FleetRequest::WakeDone { target_id })
            .await
            .map(drop)
    }

    /// Activate the fleet (runs orphaned by a restart are reaped at activation).
    pub async fn ping(&self) -> Result<(), ActionError> {
        self.call(FleetRequest::Ping).await.map(drop)
    }
}
