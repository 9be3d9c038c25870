//! The fleet-wide cap on scheduled work (SPEC §8): the one-statement slot claim with its
//! interactive-pressure deferral, the drain that wakes waiting targets as slots free, the
//! lease reaper, and the fleet's timers.
//!
//! # Drain
//! When a claim finds the cap full, the target stays `pending`; its instance waits. Each time a
//! slot frees (an outcome, a reap, a cancel), the fleet picks the oldest claimable pending
//! targets, as many as slots are free, and wakes their instances ([`Notice::Wake`]). A woken
//! target holds a reservation until its instance answered, so one free slot wakes one target.
//!
//! The decisions are pure ([`precheck`], [`plan_wakes`]); the claim itself is one conditional
//! statement that re-checks everything the precheck read.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use clawdo_storage::Tx;

use super::api::target_task_key;
use super::api::{
    ActionError, ActionStatus, ClaimReply, FailureReason, TargetNotice, TargetStatus,
};
use super::config::millis;
use super::store;
use super::{Fleet, TIMER_REAPER, TIMER_SWEEP};
use crate::UnixMillis;
use crate::claw::outbox::Notice;
use crate::object::Ctx;

type Result<T, E = ActionError> = std::result::Result<T, E>;

/// Period of the fleet's sweep while actions are live: reap, then drain (repairs lost
/// wake-ups).
pub(super) const SWEEP_EVERY_MS: i64 = 60_000;

/// A target row, as the claim path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRow {
    /// The action.
    pub action_id: i64,
    /// The instance.
    pub instance_id: String,
    /// Status.
    pub status: TargetStatus,
    /// Not before (scheduled time).
    pub run_at: UnixMillis,
    /// Not before (interactive-pressure deferral).
    pub not_before: UnixMillis,
    /// Total deferral so far, milliseconds.
    pub deferred_ms: i64,
    /// Run-now with force: bypasses stage order and the cap.
    pub force: bool,
}

/// Interactive pressure as a claim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// How long a claim is deferred while interactive calls wait (0: never).
    pub delay_ms: i64,
    /// Most total deferral of one target.
    pub max_deferral_ms: i64,
    /// Whether interactive provider calls wait right now.
    pub interactive_waiting: bool,
}

/// What a claim does before its one conditional statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precheck {
    /// Answer this without claiming.
    Answer(ClaimReply),
    /// Defer the target to `until` (adding `delay_ms` to its total), and say so.
    Defer {
        /// Try again then.
        until: UnixMillis,
        /// How much deferral this adds.
        delay_ms: i64,
    },
    /// Every slot is taken (counted as a refused claim).
    Full,
    /// Try the claim statement.
    Claim,
}

/// The claim's decision from what it read: the target, its action's status, the time,
/// interactive pressure, and the slots in use under `cap`.
pub fn precheck(
    row: &TargetRow,
    action: Option<ActionStatus>,
    now: UnixMillis,
    pressure: Pressure,
    in_use: u64,
    cap: u64,
) -> Precheck {
    if row.status != TargetStatus::Pending {
        return Precheck::Answer(ClaimReply::Gone(row.status.as_str().into()));
    }
    match action {
        Some(ActionStatus::Scheduled | ActionStatus::Running) => {}
        other => {
            let status = other.map_or("missing", ActionStatus::as_str);
            return Precheck::Answer(ClaimReply::Gone(status.into()));
        }
    }
    if row.run_at > now {
        return Precheck::Answer(ClaimReply::NotYet(Some(row.run_at)));
    }
    if row.not_before > now {
        return Precheck::Answer(ClaimReply::Deferred {
            until: row.not_before,
        });
    }
    let delay = pressure.delay_ms;
    if !row.force
        && delay > 0
        && row.deferred_ms + delay <= pressure.max_deferral_ms
        && pressure.interactive_waiting
    {
        return Precheck::Defer {
            until: now + delay,
            delay_ms: delay,
        };
    }
    // Only the fleet changes slots, so its count is exact: a full cap needs no transaction to
    // say so (the claim statement re-checks it atomically anyway).
    if !row.force && in_use >= cap {
        return Precheck::Full;
    }
    Precheck::Claim
}

/// Slots neither held nor reserved by a woken target.
pub fn free_slots(cap: u64, running: u64, reserved: u64) -> usize {
    usize::try_from(cap.saturating_sub(running + reserved)).unwrap_or(usize::MAX)
}

/// Of the claimable `candidates` (oldest first), the ones to wake: at most `free`, none
/// already woken or declined.
pub fn plan_wakes(
    free: usize,
    woken: &HashSet<i64>,
    declined: &HashSet<i64>,
    candidates: Vec<(i64, String)>,
) -> Vec<(i64, String)> {
    candidates
        .into_iter()
        .filter(|(id, _)| !woken.contains(id) && !declined.contains(id))
        .take(free)
        .collect()
}

fn epoch_i64(epoch: u64) -> i64 {
    i64::from_ne_bytes(epoch.to_ne_bytes())
}

impl Fleet {
    /// Slots in use now (also published in the counters).
    pub(super) fn refresh_slots(&self, ctx: &mut Ctx) -> Result<u64> {
        let running = store::running_count(ctx.store().conn()?)?;
        self.deps
            .counters
            .slots_in_use
            .store(running, Ordering::Relaxed);
        Ok(running)
    }

    /// An instance asks for a slot for its target.
    pub(super) fn claim(
        &mut self,
        ctx: &mut Ctx,
        target_id: i64,
        instance_id: &str,
    ) -> Result<ClaimReply> {
        let now = ctx.now();
        let row = store::target_row(ctx.store().conn()?, target_id)?
            .filter(|row| row.instance_id == instance_id)
            .ok_or(ActionError::TargetNotFound {
                action_id: 0,
                target_id,
            })?;
        let action = store::action_status(ctx.store().conn()?, row.action_id)?;
        let config = &self.deps.config;
        let pressure = Pressure {
            delay_ms: millis(config.pressure_delay),
            max_deferral_ms: millis(config.max_pressure_deferral),
            interactive_waiting: self.deps.limiter.interactive_waiting(),
        };
        let in_use = self.deps.counters.slots_in_use.load(Ordering::Relaxed);
        let cap = config.cap();
        match precheck(&row, action, now, pressure, in_use, cap) {
            Precheck::Answer(reply) => return Ok(reply),
            Precheck::Defer { until, delay_ms } => {
                ctx.transact(|tx| {
                    Ok::<_, ActionError>(store::defer(tx, target_id, until, delay_ms)?)
                })?;
                self.deps
                    .counters
                    .deferred_claims
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    target = target_id,
                    until,
                    "claim deferred by interactive pressure"
                );
                return Ok(ClaimReply::Deferred { until });
            }
            Precheck::Full => {
                self.deps
                    .counters
                    .claims_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(ClaimReply::Full);
            }
            Precheck::Claim => {}
        }
        let lease_expires_at = now + store::lease_ms(ctx.store().conn()?, row.action_id)?;
        let epoch = epoch_i64(ctx.host().epoch());
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let arm_reaper = self.reaper_at.is_none_or(|at| lease_expires_at < at);
        let won = ctx.transact(|tx| -> Result<bool> {
            if store::claim(tx, target_id, now, lease_expires_at, epoch, cap)? == 0 {
                return Ok(false);
            }
            store::mark_action_running(tx, row.action_id, now)?;
            if arm_reaper {
                tx.set_timer(TIMER_REAPER, lease_expires_at)?;
            }
            Ok(true)
        })?;
        if won {
            if arm_reaper {
                self.reaper_at = Some(lease_expires_at);
            }
            self.refresh_slots(ctx)?;
            let ticket = store::ticket(ctx.store().conn()?, target_id)?
                .ok_or(ActionError::NotFound(row.action_id))?;
            return Ok(ClaimReply::Won {
                lease_expires_at,
                ticket,
            });
        }
        // Lost: say why (the claim itself was atomic; this read only explains it).
        if store::earlier_stage_open(ctx.store().conn()?, target_id)? {
            return Ok(ClaimReply::NotYet(None));
        }
        self.deps
            .counters
            .claims_refused
            .fetch_add(1, Ordering::Relaxed);
        Ok(ClaimReply::Full)
    }

    /// Wake the oldest claimable targets, one per free slot not already reserved.
    pub(super) fn drain(&mut self, ctx: &mut Ctx) -> Result<Vec<Notice>> {
        let running = self.refresh_slots(ctx)?;
        let free = free_slots(self.deps.config.cap(), running, self.woken.len() as u64);
        if free == 0 {
            return Ok(Vec::new());
        }
        let now = ctx.now();
        let skip = self.woken.len() + self.declined.len();
        let candidates = store::claimable(ctx.store().conn()?, now, free.saturating_add(skip))?;
        let mut notices = Vec::new();
        for (target_id, instance_id) in plan_wakes(free, &self.woken, &self.declined, candidates) {
            // The ticket travels with the wake-up: the instance may not have been told yet.
            if let Some(ticket) = store::ticket(ctx.store().conn()?, target_id)? {
                self.woken.insert(target_id);
                notices.push(Notice::Wake {
                    instance_id,
                    ticket,
                });
            }
        }
        Ok(notices)
    }

    /// Fail every running target whose lease ran out, and (`orphans_too`) every target
    /// claimed by a previous process; each in its own transaction, continuing past errors.
    /// A target's task is stopped (and awaited) before its slot is freed. Re-arms the reaper.
    pub(super) async fn reap(&mut self, ctx: &mut Ctx, orphans_too: bool) -> Result<Vec<Notice>> {
        let now = ctx.now();
        let mut rows: Vec<(i64, String, FailureReason)> = store::expired(ctx.store().conn()?, now)?
            .into_iter()
            .map(|(id, instance)| (id, instance, FailureReason::LeaseExpired))
            .collect();
        if orphans_too {
            let epoch = epoch_i64(ctx.host().epoch());
            rows.extend(
                store::orphaned(ctx.store().conn()?, epoch)?
                    .into_iter()
                    .map(|(id, instance)| (id, instance, FailureReason::Interrupted)),
            );
        }
        let mut notices = Vec::new();
        for (id, instance, reason) in rows {
            // Stop the hung call before its slot is given to another target.
            ctx.host().abort_task(&target_task_key(&instance, id)).await;
            match self.finish(
                ctx,
                id,
                TargetStatus::Running,
                TargetStatus::Failed,
                Some(reason.as_str()),
            ) {
                Ok(true) => {
                    tracing::warn!(target = id, instance = %instance, reason = reason.as_str(),
                        "scheduled target reaped");
                    notices.push(Notice::Target {
                        instance_id: instance,
                        notice: TargetNotice::Aborted { target_id: id },
                    });
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(target = id, %error, "could not reap a scheduled target; continuing");
                }
            }
        }
        let next = store::next_lease(ctx.store().conn()?)?;
        ctx.transact(|tx| -> Result<()> {
            match next {
                Some(at) => tx.set_timer(TIMER_REAPER, at)?,
                None => {
                    tx.cancel_timer(TIMER_REAPER)?;
                }
            }
            Ok(())
        })?;
        self.reaper_at = next;
        notices.extend(self.drain(ctx)?);
        Ok(notices)
    }

    /// Keep the periodic sweep armed while any action is `live`, cancel it otherwise (in the
    /// caller's transaction).
    pub(super) fn arm_sweep(tx: &mut Tx<'_>, now: UnixMillis, live: bool) -> Result<()> {
        if live {
            if tx.timer(TIMER_SWEEP)?.is_none_or(|at| at <= now) {
                tx.set_timer(TIMER_SWEEP, now + SWEEP_EVERY_MS)?;
            }
        } else {
            tx.cancel_timer(TIMER_SWEEP)?;
        }
        Ok(())
    }

    /// [`Fleet::arm_sweep`] after reading whether any action is live, in a transaction of its
    /// own.
    pub(super) fn rearm_sweep(&self, ctx: &mut Ctx) -> Result<()> {
        let now = ctx.now();
        ctx.transact(|tx| -> Result<()> {
            let live = store::any_live(tx)?;
            Self::arm_sweep(tx, now, live)
        })
    }
}
