//! The instance's side of scheduled admin actions (SPEC §6 apply path): the upcoming target it
//! keeps (its status banner), the `action` timer armed exactly at the target's `run_at`, the
//! claim → side effect → outcome path run from its alarm, and the lost-message repair run from
//! its reconcile alarm.
//!
//! The fleet link (upcoming target, running target) is kept under its own KV key, apart from
//! the instance record. A claimed target runs as an ordinary operation of the instance (status
//! `restarting` or `updating`, busy, with the slot's lease as the operation's lease), but its
//! provider calls are made at [`Priority::Scheduled`] and its outcome is reported to the fleet
//! when the operation ends. The instance calls the fleet from its handlers; the fleet only
//! ever answers, and tells instances things from background tasks (see [`crate::fleet`]).
//!
//! Skip rules, checked when the target is due: a destroyed (or destroying) instance is
//! skipped (`instance_destroyed`); a restart of an instance that is not running is skipped
//! (`instance_not_running`); a version change of a pinned instance without a pin override is
//! skipped (`instance_pinned`), and one that would change nothing is skipped
//! (`already_on_tag`). A busy instance is not skipped: its target is tried again when the
//! operation in flight ends.

use serde::{Deserialize, Serialize};

use super::{InFlight, InstanceRequest, InstanceView, OpKind, Record, Status};
use super::{
    Instance, InstanceError, InstanceReply, OpOutcome, TIMER_RECONCILE, Timers, internal, report,
};
use crate::fleet::{
    ActionKind, ClaimReply, FLEET_ID, Fleet, FleetReply, FleetRequest, FleetServices, TargetTicket,
};
use crate::object::{AlarmInfo, Ctx, HandlerError};
use crate::provider::{Priority, Provider, ProviderError};
use crate::{Host, UnixMillis};

/// The instance's timer for its upcoming target.
pub(super) const TIMER_ACTION: &str = "action";
/// KV key of the [`FleetLink`].
const LINK_KEY: &str = "fleet";

/// What the fleet tells an instance (internal; sent from the fleet's background tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetNotice {
    /// A target for this instance was scheduled (or made due now by run-now).
    Scheduled(TargetTicket),
    /// A slot may be free: try this target now (adopting it if the instance was not told
    /// about it yet). Answered with `InstanceReply::Fleet(attempted)`.
    Wake(TargetTicket),
    /// The target was cancelled.
    Cancelled {
        /// The target.
        target_id: i64,
    },
    /// The target's lease expired at the fleet: abort its operation.
    Aborted {
        /// The target.
        target_id: i64,
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

/// Load the link of an activating instance.
pub(super) fn load_link(ctx: &mut Ctx) -> Result<FleetLink, HandlerError> {
    Ok(ctx
        .store()
        .kv_get::<FleetLink>(LINK_KEY)?
        .unwrap_or_default())
}

async fn fleet_call(host: &Host, request: FleetRequest) -> Result<FleetReply, InstanceError> {
    host.get::<Fleet>(FLEET_ID)
        .map_err(internal)?
        .call(request)
        .await
        .map_err(internal)?
        .map_err(|e| InstanceError::Internal(format!("fleet: {e}")))
}

/// Why `ticket` does not apply to the instance, if it does not.
fn skip_reason(record: Option<&Record>, ticket: &TargetTicket) -> Option<&'static str> {
    let Some(record) = record else {
        return Some("instance_destroyed");
    };
    if matches!(record.status, Status::Destroyed | Status::Destroying) {
        return Some("instance_destroyed");
    }
    match ticket.kind {
        ActionKind::ScheduledRestart => (record.status != Status::Running
            || record.machine.is_none())
        .then_some("instance_not_running"),
        ActionKind::VersionChange => {
            if record.pinned && ticket.pin.is_none() {
                Some("instance_pinned")
            } else if ticket.image_tag.as_deref() == Some(record.image_tag.as_str())
                && ticket.pin.is_none_or(|p| p == record.pinned)
            {
                Some("already_on_tag")
            } else {
                None
            }
        }
    }
}

impl Instance {
    /// `view` with the upcoming target as its banner.
    pub(super) fn with_banner(&self, mut view: InstanceView) -> InstanceView {
        view.upcoming_action = self.fleet.upcoming.clone();
        view
    }

    /// Persist `link` and move the action timer (`None`: leave it, `Some(None)`: cancel).
    fn save_link(
        &mut self,
        ctx: &mut Ctx,
        link: FleetLink,
        action_timer: Option<Option<UnixMillis>>,
    ) -> Result<(), InstanceError> {
        ctx.transact(|tx| {
            tx.kv_put(LINK_KEY, &link)?;
            match action_timer {
                Some(Some(at)) => tx.set_timer(TIMER_ACTION, at)?,
                Some(None) => {
                    tx.cancel_timer(TIMER_ACTION)?;
                }
                None => {}
            }
            Ok::<_, clawdo_storage::Error>(())
        })
        .map_err(internal)?;
        self.fleet = link;
        Ok(())
    }

    /// Serve a message from the fleet.
    pub(super) async fn fleet_notice(
        &mut self,
        ctx: &mut Ctx,
        notice: FleetNotice,
    ) -> Result<InstanceReply, InstanceError> {
        match notice {
            FleetNotice::Scheduled(ticket) => {
                if self
                    .fleet
                    .running
                    .as_ref()
                    .is_some_and(|r| r.target_id == ticket.target_id)
                {
                    return Ok(InstanceReply::Ack);
                }
                let at = ticket.run_at;
                let mut link = self.fleet.clone();
                link.upcoming = Some(ticket);
                self.save_link(ctx, link, Some(Some(at)))?;
                Ok(InstanceReply::Ack)
            }
            FleetNotice::Wake(ticket) => {
                if self.fleet.running.is_some() {
                    return Ok(InstanceReply::Fleet(false));
                }
                if self.fleet.upcoming.as_ref() != Some(&ticket) {
                    let mut link = self.fleet.clone();
                    link.upcoming = Some(ticket);
                    self.save_link(ctx, link, None)?;
                }
                Ok(InstanceReply::Fleet(self.try_apply(ctx).await?))
            }
            FleetNotice::Cancelled { target_id } => {
                if self
                    .fleet
                    .upcoming
                    .as_ref()
                    .is_some_and(|t| t.target_id == target_id)
                {
                    let mut link = self.fleet.clone();
                    link.upcoming = None;
                    self.save_link(ctx, link, Some(None))?;
                }
                Ok(InstanceReply::Ack)
            }
            FleetNotice::Aborted { target_id } => {
                let Some(running) = self
                    .fleet
                    .running
                    .clone()
                    .filter(|r| r.target_id == target_id)
                else {
                    return Ok(InstanceReply::Ack);
                };
                let op_matches = self
                    .record
                    .as_ref()
                    .and_then(|r| r.op.as_ref())
                    .is_some_and(|op| op.id == running.op_id);
                if op_matches {
                    self.abandon(ctx, "lease expired")?;
                } else {
                    let mut link = self.fleet.clone();
                    link.running = None;
                    self.save_link(ctx, link, None)?;
                }
                Ok(InstanceReply::Ack)
            }
        }
    }

    /// The instance's alarm, fleet part: the action timer applies the upcoming target; the
    /// reconcile timer first asks the fleet for a due target it may have missed.
    pub(super) async fn fleet_alarm(
        &mut self,
        ctx: &mut Ctx,
        alarm: &AlarmInfo,
    ) -> Result<(), HandlerError> {
        let action = alarm.timers.iter().any(|t| t == TIMER_ACTION);
        let reconcile = alarm.timers.iter().any(|t| t == TIMER_RECONCILE);
        if reconcile {
            self.resolve_stale_running(ctx)?;
            if self.fleet.running.is_none() {
                let id = ctx.id().to_string();
                let due =
                    match fleet_call(ctx.host(), FleetRequest::DueFor { instance_id: id }).await? {
                        FleetReply::Due(due) => due,
                        other => return Err(format!("unexpected fleet reply {other:?}").into()),
                    };
                if due != self.fleet.upcoming {
                    if let Some(ticket) = &due {
                        tracing::info!(instance = %ctx.id(), target = ticket.target_id,
                            "reconcile found a scheduled target the instance had not been told");
                    }
                    let mut link = self.fleet.clone();
                    let timer = due.as_ref().map(|t| t.run_at.max(ctx.now() + 1));
                    link.upcoming = due;
                    self.save_link(ctx, link, Some(timer))?;
                }
            }
        }
        if action || reconcile {
            self.try_apply(ctx).await?;
        }
        Ok(())
    }

    /// A running target whose operation is not in flight (the process died between writing
    /// the link and the operation) failed: report it.
    fn resolve_stale_running(&mut self, ctx: &mut Ctx) -> Result<(), InstanceError> {
        let Some(running) = self.fleet.running.clone() else {
            return Ok(());
        };
        let in_flight = self
            .record
            .as_ref()
            .and_then(|r| r.op.as_ref())
            .is_some_and(|op| op.id == running.op_id);
        if !in_flight {
            self.fleet_op_ended(ctx, running.op_id, Err("interrupted".into()), true)?;
        }
        Ok(())
    }

    /// Apply the upcoming target if it is due: skip it, or claim a slot and start it. Returns
    /// whether the fleet was asked.
    async fn try_apply(&mut self, ctx: &mut Ctx) -> Result<bool, InstanceError> {
        let Some(ticket) = self.fleet.upcoming.clone() else {
            return Ok(false);
        };
        if self.fleet.running.is_some() {
            return Ok(false);
        }
        let now = ctx.now();
        if ticket.run_at > now {
            ctx.set_timer(TIMER_ACTION, ticket.run_at)
                .map_err(internal)?;
            return Ok(false);
        }
        let busy = self
            .record
            .as_ref()
            .is_some_and(|r| r.op.is_some() || r.status.is_busy())
            && !self
                .record
                .as_ref()
                .is_some_and(|r| r.status == Status::Destroying);
        if busy {
            // Tried again when the operation in flight ends.
            return Ok(false);
        }
        let host = ctx.host().clone();
        let instance_id = ctx.id().to_string();
        if let Some(reason) = skip_reason(self.record.as_ref(), &ticket) {
            fleet_call(
                &host,
                FleetRequest::Skip {
                    target_id: ticket.target_id,
                    reason: reason.into(),
                },
            )
            .await?;
            tracing::info!(instance = %instance_id, target = ticket.target_id, reason,
                "scheduled target skipped");
            let mut link = self.fleet.clone();
            link.upcoming = None;
            self.save_link(ctx, link, Some(None))?;
            return Ok(true);
        }
        let reply = fleet_call(
            &host,
            FleetRequest::Claim {
                target_id: ticket.target_id,
                instance_id,
            },
        )
        .await?;
        let FleetReply::Claim(claim) = reply else {
            return Err(internal(format!("unexpected fleet reply {reply:?}")));
        };
        match claim {
            ClaimReply::Won {
                lease_expires_at,
                ticket,
            } => {
                let target_id = ticket.target_id;
                if let Err(error) = self.start_scheduled(ctx, ticket, lease_expires_at) {
                    // Nothing ran: give the slot back as a failure rather than hold it.
                    fleet_call(
                        &host,
                        FleetRequest::Outcome {
                            target_id,
                            result: Err(format!("could not start: {error}")),
                        },
                    )
                    .await?;
                    return Err(error);
                }
            }
            ClaimReply::Full | ClaimReply::NotYet(None) => {}
            ClaimReply::Deferred { until } | ClaimReply::NotYet(Some(until)) => {
                ctx.set_timer(TIMER_ACTION, until.max(now + 1))
                    .map_err(internal)?;
            }
            ClaimReply::Gone(status) => {
                tracing::debug!(target = ticket.target_id, %status, "scheduled target gone");
                let mut link = self.fleet.clone();
                link.upcoming = None;
                self.save_link(ctx, link, Some(None))?;
            }
        }
        Ok(true)
    }

    /// Start the claimed target as an operation: the link first (so a crash in between is
    /// reported as interrupted), then the busy status and the lease, then the provider task.
    fn start_scheduled(
        &mut self,
        ctx: &mut Ctx,
        ticket: TargetTicket,
        lease_expires_at: UnixMillis,
    ) -> Result<(), InstanceError> {
        let mut record = self
            .record
            .clone()
            .ok_or_else(|| InstanceError::NotFound(ctx.id().to_string()))?;
        let kind = match ticket.kind {
            ActionKind::ScheduledRestart => OpKind::Restart,
            ActionKind::VersionChange => OpKind::ChangeVersion,
        };
        let op = InFlight {
            id: record.last_op_id + 1,
            kind,
            epoch: ctx.host().epoch(),
            lease_expires_at,
            image: ticket.image_tag.clone(),
            pin: ticket.pin,
            prior: record.status,
        };
        let link = FleetLink {
            upcoming: None,
            running: Some(RunningTarget {
                target_id: ticket.target_id,
                op_id: op.id,
            }),
        };
        self.save_link(ctx, link, Some(None))?;
        let detail = format!(
            "action {} target {} ({}{})",
            ticket.action_id,
            ticket.target_id,
            ticket.kind.as_str(),
            ticket
                .image_tag
                .as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default()
        );
        record.last_op_id = op.id;
        record.status = kind.status();
        record.reason = String::new();
        record.op = Some(op.clone());
        self.commit(
            ctx,
            record.clone(),
            vec![("instance.scheduled_action_started", detail)],
            Timers {
                lease: Some(Some(lease_expires_at)),
                ..Timers::default()
            },
        )?;
        let provider = self.services.provider.clone();
        let host = ctx.host().clone();
        let reporter = host.clone();
        let task = host.spawn(async move {
            let outcome = run_scheduled(&provider, &record, &op).await;
            report(&reporter, &record.id, InstanceRequest::OpFinished(outcome)).await;
        });
        if let Some(fleet) = ctx.host().service::<FleetServices>() {
            fleet.track(ticket.target_id, task.clone());
        }
        *self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Ok(())
    }

    /// An operation ended (finished, failed, or `abandoned`). If it applied a target, report
    /// the outcome to the fleet (from a task); an abandoned target's provider task is aborted
    /// first (the instance may have hibernated since it started, losing its own handle), so
    /// its slot is never reused while the call still runs. If a target waits for the
    /// operation, try that target now.
    pub(super) fn fleet_op_ended(
        &mut self,
        ctx: &mut Ctx,
        op_id: u64,
        result: Result<(), String>,
        abandoned: bool,
    ) -> Result<(), InstanceError> {
        if let Some(running) = self.fleet.running.clone().filter(|r| r.op_id == op_id) {
            let mut link = self.fleet.clone();
            link.running = None;
            self.save_link(ctx, link, None)?;
            let host = ctx.host().clone();
            let target_id = running.target_id;
            let task = host
                .service::<FleetServices>()
                .and_then(|fleet| fleet.untrack(target_id));
            if let Some(task) = task.filter(|_| abandoned) {
                task.abort();
            }
            ctx.host().spawn(async move {
                if let Err(error) =
                    fleet_call(&host, FleetRequest::Outcome { target_id, result }).await
                {
                    // The fleet's lease reaper resolves a target whose outcome was lost.
                    tracing::warn!(target = target_id, %error, "could not report a scheduled target's outcome");
                }
            });
        }
        let now = ctx.now();
        if self.fleet.running.is_none()
            && self
                .fleet
                .upcoming
                .as_ref()
                .is_some_and(|t| t.run_at <= now)
        {
            ctx.set_timer(TIMER_ACTION, now).map_err(internal)?;
        }
        Ok(())
    }
}

/// The failure reason a fleet target records for an operation's result.
pub(super) fn outcome_reason(outcome: &OpOutcome) -> Result<(), String> {
    outcome.result.clone().map_err(|e| match e {
        ProviderError::Unavailable(_) => format!("provider_unavailable: {e}"),
        _ => format!("provider_error: {e}"),
    })
}

/// The provider side of a scheduled target, at [`Priority::Scheduled`].
async fn run_scheduled(provider: &Provider, record: &Record, op: &InFlight) -> OpOutcome {
    let p = Priority::Scheduled;
    let result = match (op.kind, &record.machine, &op.image) {
        (OpKind::Restart, Some(m), _) => provider.call(p, |pr| pr.restart_machine(m)).await,
        (OpKind::ChangeVersion, Some(m), Some(image)) => {
            match provider.call(p, |pr| pr.update_image(m, image)).await {
                Ok(()) if op.prior == Status::Running => {
                    provider.call(p, |pr| pr.restart_machine(m)).await
                }
                other => other,
            }
        }
        (OpKind::ChangeVersion, None, Some(_)) => Ok(()),
        _ => Err(ProviderError::Refused("nothing to apply".into())),
    };
    OpOutcome {
        op_id: op.id,
        machine: None,
        volume: None,
        result,
    }
}
