//! The `fleet` object class (singleton id [`FLEET_ID`]): scheduled admin actions (SPEC §6) and
//! the fleet-wide cap on scheduled work with its leases, reaper, drain and interactive-pressure
//! deferral (SPEC §8).
//!
//! The fleet owns the tables `scheduled_actions`, `scheduled_action_stages`,
//! `scheduled_action_targets` (with the slot columns `slot_claimed_at`, `lease_expires_at`) and
//! `fleet_audit`. It never makes a provider call itself: each target instance applies its own
//! target from its alarm handler (see `instance::fleet`): it asks the fleet to claim a slot,
//! runs the side effect as a task at [`Priority::Scheduled`](crate::provider::Priority), and
//! reports the outcome here.
//!
//! # Call direction (no deadlock)
//! Instances await the fleet inside their handlers (claim, skip, due-target lookups). The
//! fleet never awaits an instance inside its own handler: everything it tells instances
//! (a new target, "a slot is free", a cancel, a lease abort) is sent after its transaction
//! committed, from a background task ([`Host::spawn`]) with bounded concurrency. So no
//! cycle of handlers waiting on each other can form.
//!
//! # Drain
//! When a claim finds the cap full, the target stays `pending`; its instance waits. Each time a
//! slot frees (an outcome, a reap, a cancel), the fleet picks the oldest claimable pending
//! targets, as many as slots are free, and wakes their instances at once. A woken target holds
//! a reservation until its instance answered, so one free slot wakes one target.
//!
//! # Layout
//! - [`model`]: kinds, statuses, views, the ticket an instance keeps, [`ActionError`].
//! - `store`: the SQL, one function per statement.

pub mod model;
mod store;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::params;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use crate::instance::fleet::FleetNotice;
use crate::instance::{Instance, InstanceReply, InstanceRequest};
use crate::object::{AlarmInfo, Ctx, HandlerError, Object};
use crate::provider::Limiter;
use crate::{Host, UnixMillis};

pub use model::{
    ActionDetail, ActionError, ActionKind, ActionStatus, ActionSummary, AuditEntry, MAX_STAGES,
    MAX_TARGETS, RunNowOutcome, ScheduleSpec, StageSpec, StageView, TargetCounts, TargetStatus,
    TargetTicket, TargetView, parse_run_at,
};

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
/// Period of [`TIMER_SWEEP`].
const SWEEP_EVERY_MS: i64 = 60_000;
/// Most instances told at once after a commit.
const TELL_CONCURRENCY: usize = 32;
/// Retry estimate when no target finished yet.
const DEFAULT_RETRY: Duration = Duration::from_secs(30);

/// Knobs of the fleet (`[fleet]` in the server's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Most scheduled operations running at once across the fleet (default 2).
    pub max_concurrent: NonZeroUsize,
    /// Default lease of a claimed slot, seconds (default 1200 = 20 min); an action may set its
    /// own.
    #[serde(with = "crate::config::serde_secs")]
    pub lease: Duration,
    /// How long a claim is deferred while interactive provider calls wait, seconds (default 30).
    #[serde(with = "crate::config::serde_secs")]
    pub pressure_delay: Duration,
    /// Most total deferral of one target by interactive pressure, seconds (default 600).
    #[serde(with = "crate::config::serde_secs")]
    pub max_pressure_deferral: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            max_concurrent: NonZeroUsize::MIN.saturating_add(1),
            lease: Duration::from_secs(1_200),
            pressure_delay: Duration::from_secs(30),
            max_pressure_deferral: Duration::from_secs(600),
        }
    }
}

/// Counters of the fleet, readable without calling it.
#[derive(Debug, Default)]
pub struct FleetCounters {
    slots_in_use: AtomicU64,
    deferred_claims: AtomicU64,
    claims_refused: AtomicU64,
}

/// A snapshot of the fleet's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStats {
    /// Slots held by running targets now (as of the fleet's last change).
    pub slots_in_use: u64,
    /// The cap.
    pub max_concurrent: u64,
    /// Claims deferred by interactive pressure since start.
    pub deferred_claims: u64,
    /// Claims refused because the cap was full since start.
    pub claims_refused: u64,
}

/// What the fleet shares with the host: its configuration, counters, the provider limiter
/// (whose waiting interactive calls defer claims), and the tasks applying running targets (so
/// the reaper can abort a hung one before it frees its slot). The fleet class's dependencies.
#[derive(Debug)]
pub struct FleetServices {
    /// Configuration.
    pub config: FleetConfig,
    /// Counters.
    pub counters: FleetCounters,
    /// The provider's limiter.
    pub limiter: Arc<Limiter>,
    /// The provider task of each running target in this process.
    tasks: Mutex<HashMap<i64, AbortHandle>>,
}

impl FleetServices {
    /// Services with `config` over the provider's `limiter`.
    pub fn new(config: FleetConfig, limiter: Arc<Limiter>) -> FleetServices {
        FleetServices {
            config,
            counters: FleetCounters::default(),
            limiter,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Record the task applying running target `target_id`.
    pub fn track(&self, target_id: i64, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target_id, task);
    }

    /// Forget (and return) the task applying target `target_id`.
    pub fn untrack(&self, target_id: i64) -> Option<AbortHandle> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&target_id)
    }

    /// The counters now.
    pub fn stats(&self) -> FleetStats {
        let c = &self.counters;
        FleetStats {
            slots_in_use: c.slots_in_use.load(Ordering::Relaxed),
            max_concurrent: self.config.max_concurrent.get() as u64,
            deferred_claims: c.deferred_claims.load(Ordering::Relaxed),
            claims_refused: c.claims_refused.load(Ordering::Relaxed),
        }
    }
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

/// Requests the fleet understands.
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
    /// An instance asks for a slot for its target (internal).
    Claim {
        /// The target.
        target_id: i64,
        /// The asking instance.
        instance_id: String,
    },
    /// An instance reports that its pending target does not apply (internal).
    Skip {
        /// The target.
        target_id: i64,
        /// Why (e.g. `instance_pinned`).
        reason: String,
    },
    /// An instance reports the outcome of its running target (internal).
    Outcome {
        /// The target.
        target_id: i64,
        /// `Err(reason)` when it failed.
        result: Result<(), String>,
    },
    /// The instance's oldest pending target, if any (internal: lost-message repair).
    DueFor {
        /// The instance.
        instance_id: String,
    },
    /// A woken instance answered without claiming (internal).
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

/// Something to tell instances once a transaction committed.
#[derive(Debug)]
enum Notice {
    Tell(String, FleetNotice),
    Wake(String, TargetTicket),
}

/// The fleet object.
pub struct Fleet {
    services: Arc<FleetServices>,
    limiter: Arc<Limiter>,
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

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn epoch_i64(epoch: u64) -> i64 {
    i64::from_ne_bytes(epoch.to_ne_bytes())
}

type Result<T, E = ActionError> = std::result::Result<T, E>;

impl Fleet {
    fn cap(&self) -> u64 {
        self.services.config.max_concurrent.get() as u64
    }

    fn refresh_slots(&self, ctx: &mut Ctx) -> Result<u64> {
        let running = store::running_count(ctx.store().conn()?)?;
        self.services
            .counters
            .slots_in_use
            .store(running, Ordering::Relaxed);
        Ok(running)
    }

    fn schedule(&mut self, ctx: &mut Ctx, new: NewAction) -> Result<(ActionSummary, Vec<Notice>)> {
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
            tx.execute(
                "INSERT INTO scheduled_actions (kind, image_tag, pin, status, run_at, lease_ms,
                     created_by, created_at, updated_at, total)
                 VALUES (?1, ?2, ?3, 'scheduled', ?4, ?5, ?6, ?7, ?7, ?8)",
                params![
                    new.kind.as_str(),
                    new.image_tag,
                    new.pin,
                    new.run_at,
                    new.lease_ms,
                    new.created_by,
                    now,
                    i64::try_from(new.targets.len()).unwrap_or(i64::MAX),
                ],
            )?;
            let action_id = tx.last_insert_rowid();
            for (idx, (name, run_at)) in new.stages.iter().enumerate() {
                tx.execute(
                    "INSERT INTO scheduled_action_stages (action_id, idx, name, run_at, status)
                     VALUES (?1, ?2, ?3, ?4, 'scheduled')",
                    params![action_id, i64::try_from(idx).unwrap_or(0), name, run_at],
                )?;
            }
            let mut tickets = Vec::with_capacity(new.targets.len());
            let mut insert = tx.prepare_cached(
                "INSERT INTO scheduled_action_targets
                     (action_id, stage_idx, instance_id, source_tag, status, run_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            )?;
            for (instance_id, source_tag, stage) in &new.targets {
                let run_at = usize::try_from(*stage)
                    .ok()
                    .and_then(|s| new.stages.get(s))
                    .map_or(new.run_at, |(_, at)| *at);
                insert.execute(params![action_id, stage, instance_id, source_tag, run_at])?;
                tickets.push((
                    instance_id.clone(),
                    TargetTicket {
                        action_id,
                        target_id: tx.last_insert_rowid(),
                        kind: new.kind,
                        image_tag: new.image_tag.clone(),
                        pin: new.pin,
                        run_at,
                    },
                ));
            }
            drop(insert);
            Ok((action_id, tickets))
        })?;
        self.arm_sweep(ctx, now)?;
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
            .map(|(instance, ticket)| Notice::Tell(instance, FleetNotice::Scheduled(ticket)))
            .collect();
        Ok((summary, notices))
    }

    fn detail(&self, ctx: &mut Ctx, action_id: i64) -> Result<ActionDetail> {
        let conn = ctx.store().conn()?;
        let action = store::summary(conn, action_id)?.ok_or(ActionError::NotFound(action_id))?;
        Ok(ActionDetail {
            action,
            stages: store::stages(conn, action_id)?,
            targets: store::targets(conn, action_id, None)?,
        })
    }

    fn claim(&mut self, ctx: &mut Ctx, target_id: i64, instance_id: &str) -> Result<ClaimReply> {
        let now = ctx.now();
        let row = store::target_row(ctx.store().conn()?, target_id)?
            .filter(|row| row.instance_id == instance_id)
            .ok_or(ActionError::TargetNotFound {
                action_id: 0,
                target_id,
            })?;
        if row.status != TargetStatus::Pending {
            return Ok(ClaimReply::Gone(row.status.as_str().into()));
        }
        match store::action_status(ctx.store().conn()?, row.action_id)? {
            Some(ActionStatus::Scheduled | ActionStatus::Running) => {}
            other => {
                return Ok(ClaimReply::Gone(
                    other.map_or("missing", ActionStatus::as_str).into(),
                ));
            }
        }
        if row.run_at > now {
            return Ok(ClaimReply::NotYet(Some(row.run_at)));
        }
        if row.not_before > now {
            return Ok(ClaimReply::Deferred {
                until: row.not_before,
            });
        }
        let config = &self.services.config;
        let delay = millis(config.pressure_delay);
        if !row.force
            && delay > 0
            && row.deferred_ms + delay <= millis(config.max_pressure_deferral)
            && self.limiter.interactive_waiting()
        {
            let until = now + delay;
            ctx.transact(|tx| {
                tx.execute(
                    "UPDATE scheduled_action_targets
                     SET not_before = ?2, deferred_ms = deferred_ms + ?3
                     WHERE id = ?1 AND status = 'pending'",
                    params![target_id, until, delay],
                )
                .map_err(clawdo_storage::Error::from)
            })?;
            self.services
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
        // Only this object changes slots, so its count is exact: a full cap needs no
        // transaction to say so (the claim below re-checks it atomically anyway).
        if !row.force && self.services.counters.slots_in_use.load(Ordering::Relaxed) >= self.cap() {
            self.services
                .counters
                .claims_refused
                .fetch_add(1, Ordering::Relaxed);
            return Ok(ClaimReply::Full);
        }
        let lease_ms: i64 = ctx
            .store()
            .conn()?
            .prepare_cached("SELECT lease_ms FROM scheduled_actions WHERE id = ?1")?
            .query_row([row.action_id], |r| r.get(0))?;
        let lease_expires_at = now + lease_ms;
        let epoch = epoch_i64(ctx.host().epoch());
        let cap = i64::try_from(self.cap()).unwrap_or(i64::MAX);
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
        self.services
            .counters
            .claims_refused
            .fetch_add(1, Ordering::Relaxed);
        Ok(ClaimReply::Full)
    }

    /// Record a terminal outcome of target `id` (if it is still in `from`), count it and run
    /// the promotion sweep, all in one transaction. Returns whether this call made the change.
    fn finish(
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
            if store::promote(tx, action_id, now)? {
                tracing::info!(action = action_id, "scheduled action completed");
            }
            Ok(true)
        })
    }

    fn outcome(
        &mut self,
        ctx: &mut Ctx,
        id: i64,
        result: Result<(), String>,
    ) -> Result<Vec<Notice>> {
        let (to, reason) = match &result {
            Ok(()) => (TargetStatus::Applied, None),
            Err(reason) => (TargetStatus::Failed, Some(reason.as_str())),
        };
        if !self.finish(ctx, id, TargetStatus::Running, to, reason)? {
            tracing::debug!(
                target = id,
                "late outcome ignored: the target is no longer running"
            );
        }
        self.refresh_slots(ctx)?;
        self.drain(ctx)
    }

    /// Wake the oldest claimable targets, one per free slot not already reserved.
    fn drain(&mut self, ctx: &mut Ctx) -> Result<Vec<Notice>> {
        let running = self.refresh_slots(ctx)?;
        let reserved = self.woken.len() as u64;
        let free = self.cap().saturating_sub(running + reserved);
        if free == 0 {
            return Ok(Vec::new());
        }
        let now = ctx.now();
        let free = usize::try_from(free).unwrap_or(usize::MAX);
        let skip = self.woken.len() + self.declined.len();
        let rows = store::claimable(ctx.store().conn()?, now, free.saturating_add(skip))?;
        let mut notices = Vec::new();
        for (target_id, instance_id) in rows {
            if notices.len() == free {
                break;
            }
            if self.woken.contains(&target_id) || self.declined.contains(&target_id) {
                continue;
            }
            // The ticket travels with the wake-up: the instance may not have been told yet.
            if let Some(ticket) = store::ticket(ctx.store().conn()?, target_id)? {
                self.woken.insert(target_id);
                notices.push(Notice::Wake(instance_id, ticket));
            }
        }
        Ok(notices)
    }

    /// Fail every running target whose lease ran out (each in its own transaction, continuing
    /// past errors), and every target orphaned by a previous process; re-arm the reaper.
    async fn reap(&mut self, ctx: &mut Ctx, orphans_too: bool) -> Result<Vec<Notice>> {
        let now = ctx.now();
        let mut rows: Vec<(i64, String, &str)> = store::expired(ctx.store().conn()?, now)?
            .into_iter()
            .map(|(id, instance)| (id, instance, "lease_expired"))
            .collect();
        if orphans_too {
            let epoch = epoch_i64(ctx.host().epoch());
            rows.extend(
                store::orphaned(ctx.store().conn()?, epoch)?
                    .into_iter()
                    .map(|(id, instance)| (id, instance, "interrupted")),
            );
        }
        let mut notices = Vec::new();
        for (id, instance, reason) in rows {
            if let Some(task) = self.services.untrack(id) {
                // Cancel the hung call before its slot is given to another target.
                task.abort();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                while !task.is_finished() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            match self.finish(
                ctx,
                id,
                TargetStatus::Running,
                TargetStatus::Failed,
                Some(reason),
            ) {
                Ok(true) => {
                    tracing::warn!(target = id, instance = %instance, reason, "scheduled target reaped");
                    notices.push(Notice::Tell(
                        instance,
                        FleetNotice::Aborted { target_id: id },
                    ));
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

    /// Keep the periodic sweep armed while any action is live.
    fn arm_sweep(&mut self, ctx: &mut Ctx, now: UnixMillis) -> Result<()> {
        let live: bool = ctx.store().conn()?.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM scheduled_actions WHERE status IN {})",
                store::LIVE
            ),
            [],
            |r| r.get(0),
        )?;
        ctx.transact(|tx| -> Result<()> {
            if live {
                if tx.timer(TIMER_SWEEP)?.is_none_or(|at| at <= now) {
                    tx.set_timer(TIMER_SWEEP, now + SWEEP_EVERY_MS)?;
                }
            } else {
                tx.cancel_timer(TIMER_SWEEP)?;
            }
            Ok(())
        })
    }

    fn cancel(&mut self, ctx: &mut Ctx, action_id: i64) -> Result<(ActionSummary, Vec<Notice>)> {
        let now = ctx.now();
        let cancelled = ctx.transact(|tx| -> Result<Option<Vec<(String, i64)>>> {
            let changed = tx.execute(
                "UPDATE scheduled_actions SET status = 'cancelled', completed_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND status IN ('scheduled', 'running')",
                params![action_id, now],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            let pending: Vec<(String, i64)> = store::pending_targets(tx, action_id, None)?
                .into_iter()
                .map(|(instance, ticket)| (instance, ticket.target_id))
                .collect();
            let n = tx.execute(
                "UPDATE scheduled_action_targets SET status = 'cancelled', completed_at = ?2
                 WHERE action_id = ?1 AND status = 'pending'",
                params![action_id, now],
            )?;
            store::count(tx, action_id, TargetStatus::Cancelled, n, now)?;
            tx.execute(
                "UPDATE scheduled_action_stages SET status = 'cancelled'
                 WHERE action_id = ?1 AND status = 'scheduled'",
                [action_id],
            )?;
            Ok(Some(pending))
        })?;
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
            .map(|(instance, target_id)| {
                Notice::Tell(instance, FleetNotice::Cancelled { target_id })
            })
            .collect();
        notices.extend(self.drain(ctx)?);
        Ok((summary, notices))
    }

    fn cancel_target(
        &mut self,
        ctx: &mut Ctx,
        action_id: i64,
        target_id: i64,
    ) -> Result<(TargetView, Vec<Notice>)> {
        let row = store::target_row(ctx.store().conn()?, target_id)?
            .filter(|row| row.action_id == action_id)
            .ok_or(ActionError::TargetNotFound {
                action_id,
                target_id,
            })?;
        if !self.finish(
            ctx,
            target_id,
            TargetStatus::Pending,
            TargetStatus::Cancelled,
            None,
        )? {
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
            .ok_or(ActionError::TargetNotFound {
                action_id,
                target_id,
            })?;
        let mut notices = vec![Notice::Tell(
            row.instance_id,
            FleetNotice::Cancelled { target_id },
        )];
        notices.extend(self.drain(ctx)?);
        Ok((view, notices))
    }

    fn retry_estimate(&self, ctx: &mut Ctx) -> Result<Duration> {
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

    fn run_now(
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
        if !force && in_use >= self.cap() {
            return Err(ActionError::CapacityFull {
                in_use,
                cap: self.cap(),
                retry_after: self.retry_estimate(ctx)?,
            });
        }
        let now = ctx.now();
        let tickets = ctx.transact(|tx| -> Result<Vec<(String, TargetTicket)>> {
            tx.execute(
                "UPDATE scheduled_action_targets
                 SET run_at = MIN(run_at, ?3), not_before = 0, force = MAX(force, ?4)
                 WHERE action_id = ?1 AND (?2 IS NULL OR id = ?2) AND status = 'pending'",
                params![action_id, target_id, now, force],
            )?;
            if target_id.is_none() {
                tx.execute(
                    "UPDATE scheduled_action_stages SET run_at = MIN(run_at, ?2) WHERE action_id = ?1",
                    params![action_id, now],
                )?;
                tx.execute(
                    "UPDATE scheduled_actions SET run_at = MIN(run_at, ?2), updated_at = ?2 WHERE id = ?1",
                    params![action_id, now],
                )?;
            }
            if force {
                tx.execute(
                    "INSERT INTO fleet_audit (at, actor, what, detail) VALUES (?1, ?2, 'run_now_forced', ?3)",
                    params![
                        now,
                        actor,
                        match target_id {
                            Some(t) => format!("action {action_id} target {t}: cap bypassed"),
                            None => format!("action {action_id}: cap bypassed"),
                        }
                    ],
                )?;
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
            .map(|(instance, ticket)| Notice::Tell(instance, FleetNotice::Scheduled(ticket)))
            .collect();
        Ok((outcome, notices))
    }

    fn serve(&mut self, ctx: &mut Ctx, request: FleetRequest) -> Result<(FleetReply, Vec<Notice>)> {
        let none = Vec::new;
        Ok(match request {
            FleetRequest::Schedule(new) => {
                let (summary, notices) = self.schedule(ctx, new)?;
                (FleetReply::Summary(summary), notices)
            }
            FleetRequest::Get { action_id } => {
                (FleetReply::Detail(self.detail(ctx, action_id)?), none())
            }
            FleetRequest::List { before, limit } => (
                FleetReply::Actions(store::list(
                    ctx.store().conn()?,
                    before,
                    limit.clamp(1, 500),
                )?),
                none(),
            ),
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
                self.woken.remove(&target_id);
                self.declined.remove(&target_id);
                self.finish(
                    ctx,
                    target_id,
                    TargetStatus::Pending,
                    TargetStatus::Skipped,
                    Some(&reason),
                )?;
                (FleetReply::Ack, self.drain(ctx)?)
            }
            FleetRequest::Outcome { target_id, result } => {
                (FleetReply::Ack, self.outcome(ctx, target_id, result)?)
            }
            FleetRequest::DueFor { instance_id } => (
                FleetReply::Due(store::due_for(ctx.store().conn()?, &instance_id)?),
                none(),
            ),
            FleetRequest::WakeDone { target_id } => {
                if self.woken.remove(&target_id) {
                    self.declined.insert(target_id);
                }
                (FleetReply::Ack, self.drain(ctx)?)
            }
            FleetRequest::Audit { limit } => (
                FleetReply::Audit(store::audit(ctx.store().conn()?, limit.clamp(1, 1_000))?),
                none(),
            ),
            FleetRequest::Ping => (FleetReply::Ack, none()),
        })
    }
}

/// Tell instances, after the commit, from a background task (never from the handler).
fn send(host: &Host, notices: Vec<Notice>) {
    if notices.is_empty() {
        return;
    }
    let runner = host.clone();
    host.spawn(async move {
        let host = &runner;
        futures::stream::iter(notices)
            .for_each_concurrent(TELL_CONCURRENCY, |notice| async move {
                match notice {
                    Notice::Tell(instance, message) => {
                        if let Err(error) = tell(host, &instance, message).await {
                            tracing::debug!(instance = %instance, %error, "could not tell an instance about its target");
                        }
                    }
                    Notice::Wake(instance, ticket) => {
                        let target_id = ticket.target_id;
                        let attempted = matches!(
                            tell(host, &instance, FleetNotice::Wake(ticket)).await,
                            Ok(InstanceReply::Fleet(true))
                        );
                        if !attempted {
                            release_wake(host, target_id).await;
                        }
                    }
                }
            })
            .await;
    });
}

async fn tell(
    host: &Host,
    instance: &str,
    message: FleetNotice,
) -> std::result::Result<InstanceReply, String> {
    let stub = host.get::<Instance>(instance).map_err(|e| e.to_string())?;
    match stub.call(InstanceRequest::Fleet(message)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn release_wake(host: &Host, target_id: i64) {
    let released = match host.get::<Fleet>(FLEET_ID) {
        Ok(stub) => stub
            .call(FleetRequest::WakeDone { target_id })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(error) = released {
        tracing::debug!(target = target_id, %error, "could not release a wake reservation");
    }
}

impl Object for Fleet {
    const CLASS: &'static str = "fleet";
    type Request = FleetRequest;
    type Response = Result<FleetReply>;
    type Deps = FleetServices;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(
        ctx: &mut Ctx,
        services: Arc<FleetServices>,
    ) -> std::result::Result<Self, HandlerError> {
        let limiter = Arc::clone(&services.limiter);
        let reaper_at = ctx.transact(|tx| tx.timer(TIMER_REAPER))?;
        let mut fleet = Fleet {
            services,
            limiter,
            woken: HashSet::new(),
            declined: HashSet::new(),
            reaper_at,
        };
        // Runs claimed by a previous process died with it: fail them now, free their slots.
        let notices = fleet.reap(ctx, true).await?;
        let now = ctx.now();
        fleet.arm_sweep(ctx, now)?;
        send(ctx.host(), notices);
        Ok(fleet)
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: FleetRequest) -> Self::Response {
        let (reply, notices) = self.serve(ctx, request)?;
        send(ctx.host(), notices);
        Ok(reply)
    }

    async fn alarm(
        &mut self,
        ctx: &mut Ctx,
        alarm: AlarmInfo,
    ) -> std::result::Result<(), HandlerError> {
        let notices = self.reap(ctx, false).await?;
        send(ctx.host(), notices);
        if alarm.timers.iter().any(|t| t == TIMER_SWEEP) {
            let now = ctx.now();
            self.arm_sweep(ctx, now)?;
        }
        Ok(())
    }
}
