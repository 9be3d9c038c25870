//! The instance's side of scheduled admin actions (SPEC §6 apply path): the upcoming target it
//! keeps (its status banner), the `action` timer armed exactly at the target's `run_at`, the
//! claim → side effect → outcome path run from its alarm, and the lost-message repair run from
//! its reconcile alarm.
//!
//! A claimed target runs as an ordinary operation of the instance (status `restarting` or
//! `updating`, busy, with the slot's lease as the operation's lease), its provider calls at
//! [`Priority::Scheduled`](crate::provider::Priority), its task keyed by the target so the
//! fleet's reaper can stop it. The instance awaits the fleet (claim, skip, due-target lookups);
//! the fleet never awaits an instance, and the outcome goes to the fleet as a notice.
//!
//! Skip rules, checked when the target is due ([`skip_reason`]): a destroyed (or destroying)
//! instance is skipped; a restart of an instance that is not running is skipped; a version
//! change of a pinned instance without a pin override is skipped, and one that would change
//! nothing is skipped. A busy instance is not skipped: its target is tried again when the
//! operation in flight ends.

use super::Instance;
use super::api::{EventKind, InstanceError, InstanceReply, OpKind, Status};
use super::lifecycle::{self, Transition};
use super::procedures::spawn_op;
use super::state::{AbandonReason, FleetLink, InFlight, Record, RunningTarget, Timer};
use crate::UnixMillis;
use crate::claw::fleet::FleetHandle;
use crate::claw::fleet::api::{
    ActionError, ActionKind, ClaimReply, FailureReason, SkipReason, TargetFailure, TargetNotice,
    TargetTicket, target_task_key,
};
use crate::object::Ctx;

/// Why `ticket` does not apply to the instance, if it does not.
pub fn skip_reason(record: Option<&Record>, ticket: &TargetTicket) -> Option<SkipReason> {
    let Some(record) = record else {
        return Some(SkipReason::InstanceDestroyed);
    };
    if matches!(record.status, Status::Destroyed | Status::Destroying) {
        return Some(SkipReason::InstanceDestroyed);
    }
    match ticket.kind {
        ActionKind::ScheduledRestart => (record.status != Status::Running
            || record.machine.is_none())
        .then_some(SkipReason::InstanceNotRunning),
        ActionKind::VersionChange => {
            if record.pinned && ticket.pin.is_none() {
                Some(SkipReason::InstancePinned)
            } else if ticket.image_tag.as_deref() == Some(record.image_tag.as_str())
                && ticket.pin.is_none_or(|p| p == record.pinned)
            {
                Some(SkipReason::AlreadyOnTag)
            } else {
                None
            }
        }
    }
}

/// Whether an operation in flight keeps a due target waiting (a destroy does not: the
/// target is skipped).
pub fn waits_for_operation(record: Option<&Record>) -> bool {
    record.is_some_and(|r| (r.op.is_some() || r.status.is_busy()) && r.status != Status::Destroying)
}

/// Start the claimed target `ticket` as an operation: busy status, the slot's lease as the
/// operation's lease, the link moved from upcoming to running — one transition.
pub fn start_target(
    record: &Record,
    ticket: &TargetTicket,
    lease_expires_at: UnixMillis,
    epoch: u64,
) -> (Transition, InFlight) {
    let kind = match ticket.kind {
        ActionKind::ScheduledRestart => OpKind::Restart,
        ActionKind::VersionChange => OpKind::ChangeVersion,
    };
    let op = InFlight {
        id: record.last_op_id + 1,
        kind,
        epoch,
        lease_expires_at,
        image: ticket.image_tag.clone(),
        pin: ticket.pin,
        prior: record.status,
    };
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
    let mut next = record.clone();
    next.last_op_id = op.id;
    next.status = kind.status();
    next.reason = String::new();
    next.op = Some(op.clone());
    let transition = Transition {
        record: Some(next),
        link: Some(FleetLink {
            upcoming: None,
            running: Some(RunningTarget {
                target_id: ticket.target_id,
                op_id: op.id,
            }),
        }),
        events: vec![(EventKind::ScheduledActionStarted, detail)],
        timers: vec![
            (Timer::Lease, Some(lease_expires_at)),
            (Timer::Action, None),
        ],
        ..Transition::default()
    };
    (transition, op)
}

/// The link with `upcoming` replaced, and the action timer moved to `timer`.
fn relink(
    link: &FleetLink,
    upcoming: Option<TargetTicket>,
    timer: Option<UnixMillis>,
) -> Transition {
    Transition {
        link: Some(FleetLink {
            upcoming,
            running: link.running.clone(),
        }),
        timers: vec![(Timer::Action, timer)],
        ..Transition::default()
    }
}

/// A fleet error as the instance reports it.
fn fleet_error(e: ActionError) -> InstanceError {
    match e {
        ActionError::Fault(fault) => InstanceError::Fault(fault),
        other => InstanceError::Internal(format!("fleet: {other}")),
    }
}

impl Instance {
    /// The fleet tells the instance about one of its targets.
    pub(super) async fn target_notice(
        &mut self,
        ctx: &mut Ctx,
        notice: TargetNotice,
    ) -> Result<InstanceReply, InstanceError> {
        match notice {
            TargetNotice::Scheduled(ticket) => {
                let running = self.link.running.as_ref();
                if running.is_none_or(|r| r.target_id != ticket.target_id) {
                    let at = ticket.run_at;
                    self.apply(ctx, relink(&self.link, Some(ticket), Some(at)))?;
                }
            }
            TargetNotice::Cancelled { target_id } => {
                let upcoming = self.link.upcoming.as_ref();
                if upcoming.is_some_and(|t| t.target_id == target_id) {
                    self.apply(ctx, relink(&self.link, None, None))?;
                }
            }
            TargetNotice::Aborted { target_id } => {
                let Some(running) = self
                    .link
                    .running
                    .clone()
                    .filter(|r| r.target_id == target_id)
                else {
                    return Ok(InstanceReply::Ack);
                };
                let op = self.record.as_ref().and_then(|r| r.op.as_ref());
                if op.is_some_and(|op| op.id == running.op_id) {
                    self.abandon(ctx, AbandonReason::LeaseExpired).await?;
                } else {
                    let link = FleetLink {
                        upcoming: self.link.upcoming.clone(),
                        running: None,
                    };
                    self.apply(
                        ctx,
                        Transition {
                            link: Some(link),
                            ..Transition::default()
                        },
                    )?;
                }
            }
        }
        Ok(InstanceReply::Ack)
    }

    /// A slot is free for `ticket`: adopt it if needed and try it now.
    pub(super) async fn wake(
        &mut self,
        ctx: &mut Ctx,
        ticket: TargetTicket,
    ) -> Result<InstanceReply, InstanceError> {
        if self.link.running.is_some() {
            return Ok(InstanceReply::Woken(false));
        }
        // Adopting the ticket commits with whatever trying it decides: one transaction.
        let mut adopt = Transition::default();
        if self.link.upcoming.as_ref() != Some(&ticket) {
            adopt.link = Some(FleetLink {
                upcoming: Some(ticket),
                running: None,
            });
        }
        Ok(InstanceReply::Woken(self.try_apply(ctx, adopt).await?))
    }

    /// The alarm's scheduled part: the action timer applies the upcoming target; the
    /// reconcile timer first repairs a lost message (a running target whose operation is gone,
    /// a due target the instance was not told about).
    pub(super) async fn scheduled_alarm(
        &mut self,
        ctx: &mut Ctx,
        action: bool,
        reconcile: bool,
    ) -> Result<(), InstanceError> {
        // What the repairs decide commits with what trying the target decides.
        let mut repair = Transition::default();
        if reconcile {
            repair = self.resolve_stale_running(ctx.now());
            let link = repair.link.clone().unwrap_or_else(|| self.link.clone());
            if link.running.is_none() {
                let due = FleetHandle::new(ctx.host())
                    .due_for(ctx.id().as_str())
                    .await
                    .map_err(fleet_error)?;
                if due != link.upcoming {
                    if let Some(ticket) = &due {
                        tracing::info!(instance = %ctx.id(), target = ticket.target_id,
                            "reconcile found a scheduled target the instance had not been told");
                    }
                    let timer = due.as_ref().map(|t| t.run_at.max(ctx.now() + 1));
                    repair = repair.then(relink(&link, due, timer));
                }
            }
        }
        if action || reconcile {
            self.try_apply(ctx, repair).await?;
        }
        Ok(())
    }

    /// A running target whose operation is not in flight (the process died between the claim
    /// and the operation's start) failed: report it.
    fn resolve_stale_running(&self, now: UnixMillis) -> Transition {
        let mut transition = Transition::default();
        let Some(running) = self.link.running.clone() else {
            return transition;
        };
        let op = self.record.as_ref().and_then(|r| r.op.as_ref());
        if op.is_some_and(|op| op.id == running.op_id) {
            return transition;
        }
        let failure = TargetFailure::new(FailureReason::Interrupted);
        lifecycle::end_target(
            &mut transition,
            &self.link,
            running.op_id,
            Err(failure),
            now,
        );
        transition
    }

    /// Apply the upcoming target if it is due: skip it, or claim a slot and start it. `base`
    /// is what the message decided before (an adopted ticket, repairs); it commits together
    /// with this decision, in one transaction. Returns whether the fleet was asked.
    async fn try_apply(&mut self, ctx: &mut Ctx, base: Transition) -> Result<bool, InstanceError> {
        let link = base.link.clone().unwrap_or_else(|| self.link.clone());
        let now = ctx.now();
        let Some(ticket) = link.upcoming.clone().filter(|_| link.running.is_none()) else {
            self.apply(ctx, base)?;
            return Ok(false);
        };
        if ticket.run_at > now {
            let timer = Transition {
                timers: vec![(Timer::Action, Some(ticket.run_at))],
                ..Transition::default()
            };
            self.apply(ctx, base.then(timer))?;
            return Ok(false);
        }
        if waits_for_operation(self.record.as_ref()) {
            // Tried again when the operation in flight ends.
            self.apply(ctx, base)?;
            return Ok(false);
        }
        let fleet = FleetHandle::new(ctx.host());
        let instance_id = ctx.id().to_string();
        if let Some(reason) = skip_reason(self.record.as_ref(), &ticket) {
            fleet
                .skip(ticket.target_id, reason)
                .await
                .map_err(fleet_error)?;
            tracing::info!(instance = %instance_id, target = ticket.target_id,
                reason = reason.as_str(), "scheduled target skipped");
            self.apply(ctx, base.then(relink(&link, None, None)))?;
            return Ok(true);
        }
        let claim = fleet
            .claim(ticket.target_id, &instance_id)
            .await
            .map_err(fleet_error)?;
        let next = match claim {
            ClaimReply::Won {
                lease_expires_at,
                ticket,
            } => {
                let target_id = ticket.target_id;
                let started = self.start_claimed(ctx, base, &ticket, lease_expires_at);
                if let Err(error) = started {
                    // Nothing ran: give the slot back as a failure rather than hold it.
                    let failure =
                        TargetFailure::with_detail(FailureReason::StartFailed, error.to_string());
                    fleet
                        .outcome(target_id, Err(failure))
                        .await
                        .map_err(fleet_error)?;
                    return Err(error);
                }
                return Ok(true);
            }
            ClaimReply::Full | ClaimReply::NotYet(None) => base,
            ClaimReply::Deferred { until } | ClaimReply::NotYet(Some(until)) => {
                base.then(Transition {
                    timers: vec![(Timer::Action, Some(until.max(now + 1)))],
                    ..Transition::default()
                })
            }
            ClaimReply::Gone(status) => {
                tracing::debug!(target = ticket.target_id, %status, "scheduled target gone");
                base.then(relink(&link, None, None))
            }
        };
        self.apply(ctx, next)?;
        Ok(true)
    }

    /// Commit the claimed target's start, then start its task.
    fn start_claimed(
        &mut self,
        ctx: &mut Ctx,
        base: Transition,
        ticket: &TargetTicket,
        lease_expires_at: UnixMillis,
    ) -> Result<(), InstanceError> {
        let record = self.committed(ctx)?;
        let (transition, op) = start_target(record, ticket, lease_expires_at, ctx.host().epoch());
        self.apply(ctx, base.then(transition))?;
        let record = self.committed(ctx)?.clone();
        let key = target_task_key(&record.id, ticket.target_id);
        spawn_op(ctx.host(), &self.deps, record, op, key, true);
        Ok(())
    }
}
