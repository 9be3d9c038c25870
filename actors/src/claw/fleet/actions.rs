//! Scheduled admin actions (SPEC §6): scheduling one in one transaction, reading, cancelling
//! an action or one target, run-now, and recording a target's terminal outcome together with
//! its action's counters and the promotion sweep.
//!
//! The decisions are pure functions ([`outcome_status`], [`promotion`]) with table tests in
//! `tests.rs`; the handlers apply them in one transaction and return the notices to send
//! after the commit.

use std::time::Duration;

use super::Fleet;
use super::api::{
    ActionDetail, ActionError, ActionStatus, ActionSummary, MAX_STAGES, MAX_TARGETS, NewAction,
    RunNowOutcome, SkipReason, TargetFailure, TargetNotice, TargetStatus, TargetView,
};
use super::store;
use crate::UnixMillis;
use crate::claw::outbox::Notice;
use crate::object::Ctx;

type Result<T, E = ActionError> = std::result::Result<T, E>;

/// Retry estimate of a full cap when no target finished yet.
const DEFAULT_RETRY: Duration = Duration::from_secs(30);

/// The terminal status (and stored reason) of a running target's outcome.
pub fn outcome_status(result: &Result<(), TargetFailure>) -> (TargetStatus, Option<String>) {
    match result {
        Ok(()) => (TargetStatus::Applied, None),
        Err(failure) => (TargetStatus::Failed, Some(failure.to_string())),
    }
}

/// One stage of an action, as the promotion decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageProgress {
    /// Position.
    pub index: u32,
    /// Still `scheduled` (not completed or cancelled).
    pub scheduled: bool,
    /// Whether a target of the stage is not terminal yet.
    pub open: bool,
}

/// What the promotion sweep changes after a target became terminal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Promotion {
    /// Stages (by index) whose targets are all terminal now.
    pub stages: Vec<u32>,
    /// Every target of the action is terminal: the action completes.
    pub action: bool,
}

/// The promotion sweep's decision: every still-`scheduled` stage without open targets
/// completes; the action completes when no stage has open targets.
pub fn promotion(stages: &[StageProgress]) -> Promotion {
    Promotion {
        stages: stages
            .iter()
            .filter(|s| s.scheduled && !s.open)
            .map(|s| s.index)
            .collect(),
        action: stages.iter().all(|s| !s.open),
    }
}

fn tell(instance_id: String, notice: TargetNotice) -> Notice {
    Notice::Target {
        instance_id,
        notice,
    }
}

impl Fleet {
    /// Insert an action with its stages and targets in one transaction; its targets are told
    /// after the commit.
    pub(super) fn schedule(
        &mut self,
        ctx: &mut Ctx,
        new: NewAction,
    ) -> Result<(ActionSummary, Vec<Notice>)> {
        if new.targets.is_empty() {
            return Err(ActionError::invalid(
                "targets",
                "at least one target is needed",
            ));
        }
        if new.targets.len() > MAX_TARGETS {
            return Err(ActionError::invalid(
                "targets",
                format!("at most {MAX_TARGETS} targets per action"),
            ));
        }
        if new.stages.is_empty() || new.stages.len() > MAX_STAGES {
            return Err(ActionError::invalid("stages", "1 to 16 stages"));
        }
        let now = ctx.now();
        let (action_id, tickets) = ctx.transact(|tx| -> Result<_> {
            for (instance_id, _, _) in &new.targets {
                if let Some(action_id) = store::conflicting_action(tx, instance_id)? {
                    return Err(ActionError::ConflictPendingAction {
                        instance_id: instance_id.clone(),
                        action_id,
                    });
                }
            }
            let inserted = store::insert_action(tx, &new, now)?;
            // The new action is live: keep the periodic sweep armed.
            Self::arm_sweep(tx, now, true)?;
            Ok(inserted)
        })?;
        let summary = store::summary(ctx.store().conn()?, action_id)?
            .ok_or(ActionError::NotFound(action_id))?;
        tracing::info!(
            action = action_id,
            kind = new.kind.as_str(),
            targets = tickets.len(),
            run_at = new.run_at,
            "scheduled action created"
        );
        let notices = tickets
            .into_iter()
            .map(|(instance, ticket)| tell(instance, TargetNotice::Scheduled(ticket)))
            .collect();
        Ok((summary, notices))
    }

    /// One action with its stages and every target.
    pub(super) fn detail(&self, ctx: &mut Ctx, action_id: i64) -> Result<ActionDetail> {
        let conn = ctx.store().conn()?;
        let action = store::summary(conn, action_id)?.ok_or(ActionError::NotFound(action_id))?;
        Ok(ActionDetail {
            action,
            stages: store::stages(conn, action_id)?,
            targets: store::targets(conn, action_id, None)?,
        })
    }

    /// Record a terminal outcome of target `id` (if it is still in `from`), count it and run
    /// the promotion sweep, all in one transaction. Returns whether this call made the change.
    pub(super) fn finish(
        &mut self,
        ctx: &mut Ctx,
        id: i64,
        from: TargetStatus,
        to: TargetStatus,
        reason: Option<&str>,
    ) -> Result<bool> {
        let now = ctx.now();
        let live_check = from == TargetStatus::Pending;
        ctx.transact(|tx| -> Result<bool> {
            if live_check {
                let live = store::target_row(tx, id)?
                    .map(|row| store::action_status(tx, row.action_id))
                    .transpose()?
                    .flatten()
                    .is_some_and(|s| matches!(s, ActionStatus::Scheduled | ActionStatus::Running));
                if !live {
                    return Ok(false);
                }
            }
            let Some(action_id) = store::finish_target(tx, id, from, to, reason, now)? else {
                return Ok(false);
            };
            let plan = promotion(&store::stage_progress(tx, action_id)?);
            for stage in &plan.stages {
                store::complete_stage(tx, action_id, *stage)?;
            }
            if plan.action && store::complete_action(tx, action_id, now)? {
                tracing::info!(action = action_id, "scheduled action completed");
            }
            Ok(true)
        })
    }

    /// An instance reports its running target's outcome; the freed slot is passed on.
    pub(super) fn outcome(
        &mut self,
        ctx: &mut Ctx,
        id: i64,
        result: Result<(), TargetFailure>,
    ) -> Result<Vec<Notice>> {
        let (to, reason) = outcome_status(&result);
        if !self.finish(ctx, id, TargetStatus::Running, to, reason.as_deref())? {
            tracing::debug!(
                target = id,
                "late outcome ignored: the target is no longer running"
            );
        }
        self.refresh_slots(ctx)?;
        self.drain(ctx)
    }

    /// An instance reports that its pending target does not apply.
    pub(super) fn skip(
        &mut self,
        ctx: &mut Ctx,
        id: i64,
        reason: SkipReason,
    ) -> Result<Vec<Notice>> {
        self.woken.remove(&id);
        self.declined.remove(&id);
        self.finish(
            ctx,
            id,
            TargetStatus::Pending,
            TargetStatus::Skipped,
            Some(reason.as_str()),
        )?;
        self.drain(ctx)
    }

    /// Cancel an action: its pending targets are cancelled (their instances told), running
    /// ones finish and are counted.
    pub(super) fn cancel(
        &mut self,
        ctx: &mut Ctx,
        action_id: i64,
    ) -> Result<(ActionSummary, Vec<Notice>)> {
        let now = ctx.now();
        let cancelled =
            ctx.transact(|tx| Ok::<_, ActionError>(store::cancel_action(tx, action_id, now)?))?;
        let summary = store::summary(ctx.store().conn()?, action_id)?
            .ok_or(ActionError::NotFound(action_id))?;
        let Some(pending) = cancelled else {
            return Err(ActionError::WrongStatus {
                op: "cancel",
                status: summary.status.as_str().into(),
            });
        };
        for (_, target) in &pending {
            self.woken.remove(target);
            self.declined.remove(target);
        }
        tracing::info!(
            action = action_id,
            cancelled = pending.len(),
            "scheduled action cancelled"
        );
        let mut notices: Vec<Notice> = pending
            .into_iter()
            .map(|(instance, target_id)| tell(instance, TargetNotice::Cancelled { target_id }))
            .collect();
        notices.extend(self.drain(ctx)?);
        Ok((summary, notices))
    }

    /// Cancel one pending target.
    pub(super) fn cancel_target(
        &mut self,
        ctx: &mut Ctx,
        action_id: i64,
        target_id: i64,
    ) -> Result<(TargetView, Vec<Notice>)> {
        let not_found = ActionError::TargetNotFound {
            action_id,
            target_id,
        };
        let row = store::target_row(ctx.store().conn()?, target_id)?
            .filter(|row| row.action_id == action_id)
            .ok_or_else(|| not_found.clone())?;
        let cancelled = self.finish(
            ctx,
            target_id,
            TargetStatus::Pending,
            TargetStatus::Cancelled,
            None,
        )?;
        if !cancelled {
            let status =
                store::target_row(ctx.store().conn()?, target_id)?.map_or(row.status, |r| r.status);
            return Err(ActionError::WrongStatus {
                op: "cancel target",
                status: status.as_str().into(),
            });
        }
        self.woken.remove(&target_id);
        self.declined.remove(&target_id);
        let view = store::targets(ctx.store().conn()?, action_id, Some(target_id))?
            .pop()
            .ok_or(not_found)?;
        let mut notices = vec![tell(row.instance_id, TargetNotice::Cancelled { target_id })];
        notices.extend(self.drain(ctx)?);
        Ok((view, notices))
    }

    /// When a slot is expected to free: the soonest running target's claim plus the mean run
    /// time of recent targets (at least 1 s).
    pub(super) fn retry_estimate(&self, ctx: &mut Ctx) -> Result<Duration> {
        let now = ctx.now();
        let conn = ctx.store().conn()?;
        let mean = store::mean_duration(conn)?;
        let Some(mean) = mean.filter(|m| m.is_finite() && *m > 0.0) else {
            return Ok(DEFAULT_RETRY);
        };
        #[allow(
            clippy::cast_possible_truncation,
            reason = "a mean of millisecond spans"
        )]
        let mean = mean as i64;
        let soonest = store::running_claims(conn)?
            .into_iter()
            .map(|claimed| claimed + mean - now)
            .min()
            .unwrap_or(mean);
        Ok(Duration::from_millis(
            u64::try_from(soonest.max(1_000)).unwrap_or(1_000),
        ))
    }

    /// Make an action's pending targets (or one target) due now, honouring the cap unless
    /// `force` (which writes an audit row).
    pub(super) fn run_now(
        &mut self,
        ctx: &mut Ctx,
        action_id: i64,
        target_id: Option<i64>,
        force: bool,
        actor: &str,
    ) -> Result<(RunNowOutcome, Vec<Notice>)> {
        let status = store::action_status(ctx.store().conn()?, action_id)?
            .ok_or(ActionError::NotFound(action_id))?;
        if !matches!(status, ActionStatus::Scheduled | ActionStatus::Running) {
            return Err(ActionError::WrongStatus {
                op: "run now",
                status: status.as_str().into(),
            });
        }
        if let Some(target_id) = target_id {
            let row = store::target_row(ctx.store().conn()?, target_id)?
                .filter(|row| row.action_id == action_id)
                .ok_or(ActionError::TargetNotFound {
                    action_id,
                    target_id,
                })?;
            if row.status != TargetStatus::Pending {
                return Err(ActionError::WrongStatus {
                    op: "run now",
                    status: row.status.as_str().into(),
                });
            }
        }
        let in_use = self.refresh_slots(ctx)?;
        let cap = self.deps.config.cap();
        if !force && in_use >= cap {
            return Err(ActionError::CapacityFull {
                in_use,
                cap,
                retry_after: self.retry_estimate(ctx)?,
            });
        }
        let now: UnixMillis = ctx.now();
        let tickets = ctx.transact(|tx| -> Result<_> {
            store::make_due(tx, action_id, target_id, now, force)?;
            if force {
                let detail = match target_id {
                    Some(t) => format!("action {action_id} target {t}: cap bypassed"),
                    None => format!("action {action_id}: cap bypassed"),
                };
                store::insert_audit(tx, now, actor, "run_now_forced", &detail)?;
            }
            Ok(store::pending_targets(tx, action_id, target_id)?)
        })?;
        if force {
            tracing::warn!(action = action_id, target = ?target_id, actor, "forced run-now: cap bypassed");
        }
        let outcome = RunNowOutcome {
            targets: tickets.len() as u64,
            forced: force,
        };
        let notices = tickets
            .into_iter()
            .map(|(instance, ticket)| tell(instance, TargetNotice::Scheduled(ticket)))
            .collect();
        Ok((outcome, notices))
    }
}
