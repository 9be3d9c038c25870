//! The `fleet` object class (singleton id [`FLEET_ID`]): scheduled admin actions (SPEC §6) and
//! the fleet-wide cap on scheduled work with its leases, reaper, drain and interactive-pressure
//! deferral (SPEC §8).
//!
//! The fleet owns the tables `scheduled_actions`, `scheduled_action_stages`,
//! `scheduled_action_targets` (with the slot columns `slot_claimed_at`, `lease_expires_at`) and
//! `fleet_audit`. It never makes a provider call itself: each target instance applies its own
//! target from its alarm handler: it asks the fleet to claim a slot, runs the side effect as a
//! keyed task, and reports the outcome here.
//!
//! # Call direction (no deadlock)
//! The fleet is the bottom class: instances await it (claim, skip, due-target lookups); it
//! awaits no other object. Everything it tells instances (a new target, "a slot is free", a
//! cancel, a lease abort) is a [`Notice`] returned by the handler and delivered by the outbox
//! after the commit. It imports nothing of the instance or registry classes (a CI guard checks).
//!
//! # Layout
//! - [`api`]: requests, replies, kinds, statuses, views, reasons, [`ActionError`].
//! - [`handle`]: [`FleetHandle`], the typed way to call the fleet.
//! - [`config`]: [`FleetConfig`], counters, the class's dependencies ([`FleetServices`]).
//! - `store`: the SQL, one function per statement (reads in `store/reads.rs`).
//! - [`actions`]: scheduling, cancelling, run-now, outcomes and the promotion sweep.
//! - [`slots`]: the cap: claims, drain, reaper, timers.

pub mod actions;
pub mod api;
pub mod config;
pub mod handle;
pub mod slots;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use clawdo_storage::Migration;

use crate::UnixMillis;
use crate::claw::outbox::{self, Notice};
use crate::object::{AlarmInfo, Ctx, HandlerError, Object};

pub use api::{
    ActionDetail, ActionError, ActionKind, ActionStatus, ActionSummary, AuditEntry, ClaimReply,
    FailureReason, FleetReply, FleetRequest, MAX_STAGES, MAX_TARGETS, NewAction, RunNowOutcome,
    ScheduleSpec, SkipReason, StageSpec, StageView, TargetCounts, TargetFailure, TargetNotice,
    TargetStatus, TargetTicket, TargetView, parse_run_at,
};
pub use config::{FleetConfig, FleetCounters, FleetServices, FleetStats};
pub use handle::FleetHandle;

/// The id of the one fleet object.
pub const FLEET_ID: &str = "global";

const MIGRATIONS: &[Migration] = &[Migration {
    name: "scheduled_actions",
    sql: include_str!("schema.sql"),
}];

/// Timer of the reaper: the earliest lease among running targets.
const TIMER_REAPER: &str = "reaper";
/// Periodic sweep while actions are live: reap, then drain (repairs lost wake-ups).
const TIMER_SWEEP: &str = "sweep";

/// The fleet object.
pub struct Fleet {
    deps: Arc<FleetServices>,
    /// Targets woken by the drain whose instance has not answered yet (each holds a slot
    /// reservation so that one free slot wakes one target).
    woken: HashSet<i64>,
    /// Woken targets whose instance declined (it was busy): not woken again; the instance
    /// tries by itself when its operation ends (or at its next reconcile).
    declined: HashSet<i64>,
    /// When the reaper timer is armed.
    reaper_at: Option<UnixMillis>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("woken", &self.woken.len())
            .field("reaper_at", &self.reaper_at)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    fn serve(
        &mut self,
        ctx: &mut Ctx,
        request: FleetRequest,
    ) -> Result<(FleetReply, Vec<Notice>), ActionError> {
        let none = Vec::new;
        Ok(match request {
            FleetRequest::Schedule(new) => {
                let (summary, notices) = self.schedule(ctx, new)?;
                (FleetReply::Summary(summary), notices)
            }
            FleetRequest::Get { action_id } => {
                (FleetReply::Detail(self.detail(ctx, action_id)?), none())
            }
            FleetRequest::List { before, limit } => {
                let conn = ctx.store().conn()?;
                let actions = store::list(conn, before, limit.clamp(1, 500))?;
                (FleetReply::Actions(actions), none())
            }
            FleetRequest::Cancel { action_id } => {
                let (summary, notices) = self.cancel(ctx, action_id)?;
                (FleetReply::Summary(summary), notices)
            }
            FleetRequest::CancelTarget {
                action_id,
                target_id,
            } => {
                let (view, notices) = self.cancel_target(ctx, action_id, target_id)?;
                (FleetReply::Target(view), notices)
            }
            FleetRequest::RunNow {
                action_id,
                target_id,
                force,
                actor,
            } => {
                let (outcome, notices) = self.run_now(ctx, action_id, target_id, force, &actor)?;
                (FleetReply::RanNow(outcome), notices)
            }
            FleetRequest::Claim {
                target_id,
                instance_id,
            } => {
                let released = self.woken.remove(&target_id);
                self.declined.remove(&target_id);
                let reply = self.claim(ctx, target_id, &instance_id)?;
                // A woken target that did not take its slot passes the wake-up on.
                let notices = if released && !matches!(reply, ClaimReply::Won { .. }) {
                    self.drain(ctx)?
                } else {
                    none()
                };
                (FleetReply::Claim(reply), notices)
            }
            FleetRequest::Skip { target_id, reason } => {
                (FleetReply::Ack, self.skip(ctx, target_id, reason)?)
            }
            FleetRequest::Outcome { target_id, result } => {
                (FleetReply::Ack, self.outcome(ctx, target_id, result)?)
            }
            FleetRequest::DueFor { instance_id } => {
                let due = store::due_for(ctx.store().conn()?, &instance_id)?;
                (FleetReply::Due(due), none())
            }
            FleetRequest::WakeDone { target_id } => {
                if self.woken.remove(&target_id) {
                    self.declined.insert(target_id);
                }
                (FleetReply::Ack, self.drain(ctx)?)
            }
            FleetRequest::Audit { limit } => {
                let rows = store::audit(ctx.store().conn()?, limit.clamp(1, 1_000))?;
                (FleetReply::Audit(rows), none())
            }
            FleetRequest::Ping => (FleetReply::Ack, none()),
        })
    }
}

impl Object for Fleet {
    const CLASS: &'static str = "fleet";
    type Request = FleetRequest;
    type Response = Result<FleetReply, ActionError>;
    type Deps = FleetServices;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(ctx: &mut Ctx, deps: Arc<FleetServices>) -> Result<Self, HandlerError> {
        let reaper_at = ctx.transact(|tx| tx.timer(TIMER_REAPER))?;
        let mut fleet = Fleet {
            deps,
            woken: HashSet::new(),
            declined: HashSet::new(),
            reaper_at,
        };
        // Runs claimed by a previous process died with it: fail them now, free their slots.
        let notices = fleet.reap(ctx, true).await?;
        fleet.rearm_sweep(ctx)?;
        outbox::deliver(ctx.host(), notices);
        Ok(fleet)
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: FleetRequest) -> Self::Response {
        let (reply, notices) = self.serve(ctx, request)?;
        outbox::deliver(ctx.host(), notices);
        Ok(reply)
    }

    async fn alarm(&mut self, ctx: &mut Ctx, alarm: AlarmInfo) -> Result<(), HandlerError> {
        let notices = self.reap(ctx, false).await?;
        outbox::deliver(ctx.host(), notices);
        if alarm.timers.iter().any(|t| t == TIMER_SWEEP) {
            self.rearm_sweep(ctx)?;
        }
        Ok(())
    }
}
