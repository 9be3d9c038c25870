//! The `registry` object class: one object per owner key (`user:<id>` / `org:<id>`). It owns
//! the owner's instance routes and admits fresh provisions (SPEC §5).
//!
//! # Admission
//! A fresh provision goes `Begin` (admit or refuse) → `MarkStarted` → the instance's own
//! `Provision` → the instance reports `Complete` or `Fail`. The table `provision_reservations`
//! has a partial unique index that allows one unresolved (`admitted`, `provider_started`,
//! `failed_requires_reconciliation`) reservation per owner, so two fresh provisions of one
//! owner cannot both be admitted whatever the code above does. Every transition is one
//! conditional `UPDATE … WHERE status IN (…)`; `changes() == 0` means another path got there
//! first.
//!
//! - **Idempotency**: the idempotency key is unique per owner; `Begin` with a known key answers
//!   that reservation as it stands (a different request under the same key is refused).
//! - **Completion repair**: before refusing a provision because another is unresolved, the
//!   registry asks that reservation's instance; one that is in fact provisioned is recorded as
//!   `completed` instead of blocking the owner.
//! - **Destroy fencing**: when an instance is destroyed its route is removed and its
//!   unresolved reservation released; a later `Complete` for it is rejected and cannot revive
//!   the route.
//! - **Alarm** (timer `sweep`): while unresolved reservations exist, it asks their instances
//!   and resolves what it can: completes repaired ones, releases ones whose instance never
//!   received the provision (after fencing it so it never will) or is gone, marks ones that
//!   failed after creating infrastructure `failed_requires_reconciliation` and has their
//!   instance destroyed. Bounded per pass, idempotent, and a failing row does not stop the
//!   others.
//!
//! # Call direction
//! A registry handler may await an instance (`Admission`, `Get`, `Destroy`); an instance
//! never awaits its registry inside a handler: it reports from a spawned task. So the two
//! never wait on each other.

pub mod model;
mod sweep;

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::{self, OptionalExtension as _, Row, params};

use crate::crashpoint;
use crate::instance::{AdmissionState, Instance, InstanceReply, InstanceRequest, Status};
use crate::object::{AlarmInfo, Ctx, HandlerError, Object};
use crate::{Host, UnixMillis};

pub use model::{
    BeginOutcome, Completion, ConflictReason, RegistryConfig, RegistryError, Reservation,
    ReservationStatus,
};

const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "routes",
        sql: include_str!("schema.sql"),
    },
    Migration {
        name: "provision reservations",
        sql: include_str!("reservations.sql"),
    },
];

/// The registry's alarm timer.
const TIMER_SWEEP: &str = "sweep";

/// The unresolved statuses, as an SQL list (the partial unique index's predicate).
const UNRESOLVED: &str = "('admitted', 'provider_started', 'failed_requires_reconciliation')";

const RESERVATION_COLUMNS: &str = "id, owner_key, instance_id, idempotency_key, status, error, \
                                   created_at, updated_at";

/// Admission of one fresh provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginRequest {
    /// The caller's idempotency key (unique per owner).
    pub idempotency_key: String,
    /// What is asked for (image, pin, explicit instance id), compared on a retry.
    pub fingerprint: String,
    /// The instance id to create if admitted.
    pub instance_id: String,
}

/// Requests a registry understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRequest {
    /// Admit a fresh provision or say why not.
    Begin(BeginRequest),
    /// `admitted → provider_started`; answers whether this call made the move, and the
    /// reservation after it. Only the winner may go on to the instance.
    MarkStarted(u64),
    /// The instance was provisioned: `→ completed`, route active (rejected once the
    /// reservation ended otherwise).
    Complete {
        /// Reservation id.
        reservation: u64,
        /// The reporting instance (must be the reservation's).
        instance_id: String,
    },
    /// The provision failed: `→ released` when no infrastructure can exist, else
    /// `→ failed_requires_reconciliation`.
    Fail {
        /// Reservation id.
        reservation: u64,
        /// The reporting instance (must be the reservation's).
        instance_id: String,
        /// Whether infrastructure may have been created.
        infra_may_exist: bool,
        /// What went wrong.
        error: String,
    },
    /// The instance was destroyed: remove its route, release its unresolved reservation
    /// (destroy fencing). Idempotent.
    InstanceDestroyed(String),
    /// A reservation by id.
    Reservation(u64),
    /// Up to `limit` instance ids after `after`, ascending (pending and active routes).
    ListRoutes {
        /// Cursor (exclusive).
        after: Option<String>,
        /// Page size.
        limit: usize,
    },
}

/// Replies of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryReply {
    /// The answer to `Begin`.
    Begun(BeginOutcome),
    /// The answer to `MarkStarted`.
    Started {
        /// Whether this call moved the reservation to `provider_started`.
        won: bool,
        /// The reservation after the call.
        reservation: Reservation,
    },
    /// The answer to `Complete`.
    Completion(Completion),
    /// A reservation.
    Reservation(Reservation),
    /// Done.
    Ok,
    /// A page of instance ids.
    Routes(Vec<String>),
}

/// The registry object.
#[derive(Debug)]
pub struct Registry {
    config: std::sync::Arc<RegistryConfig>,
}

pub(crate) fn reservation_from_row(row: &Row<'_>) -> rusqlite::Result<Reservation> {
    let status: String = row.get(4)?;
    Ok(Reservation {
        id: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
        owner: row.get(1)?,
        instance_id: row.get(2)?,
        idempotency_key: row.get(3)?,
        status: ReservationStatus::parse(&status)
            .unwrap_or(ReservationStatus::FailedRequiresReconciliation),
        error: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// Result of trying to insert an `admitted` reservation.
enum Insert {
    Admitted(Reservation),
    /// The partial unique index refused: this is the owner's unresolved reservation.
    OwnerBusy(Reservation),
}

impl Registry {
    fn owner(ctx: &Ctx) -> String {
        ctx.id().to_string()
    }

    fn by_key(ctx: &mut Ctx, key: &str) -> Result<Option<(Reservation, String)>, RegistryError> {
        let conn = ctx.store().conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RESERVATION_COLUMNS}, request FROM provision_reservations
             WHERE idempotency_key = ?1"
        ))?;
        Ok(stmt
            .query_row([key], |row| Ok((reservation_from_row(row)?, row.get(8)?)))
            .optional()?)
    }

    pub(crate) fn load(ctx: &mut Ctx, id: u64) -> Result<Reservation, RegistryError> {
        let conn = ctx.store().conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM provision_reservations WHERE id = ?1"
        ))?;
        stmt.query_row([sql_id(id)], reservation_from_row)
            .optional()?
            .ok_or(RegistryError::UnknownReservation(id))
    }

    fn unresolved(ctx: &mut Ctx) -> Result<Option<Reservation>, RegistryError> {
        let conn = ctx.store().conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RESERVATION_COLUMNS} FROM provision_reservations WHERE status IN {UNRESOLVED}"
        ))?;
        Ok(stmt.query_row([], reservation_from_row).optional()?)
    }

    fn active_route_count(ctx: &mut Ctx) -> Result<u64, RegistryError> {
        let conn = ctx.store().conn()?;
        let count: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM routes WHERE state = 'active'")?
            .query_row([], |r| r.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn active_routes(ctx: &mut Ctx) -> Result<Vec<String>, RegistryError> {
        let conn = ctx.store().conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT instance_id FROM routes WHERE state = 'active'
             ORDER BY created_at, reservation_id, instance_id",
        )?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?)
    }

    /// Insert an `admitted` reservation and its pending route, and make sure the sweep runs
    /// by the time it would be stale. The partial unique index decides whether the owner
    /// already has an unresolved one.
    fn insert_admitted(
        &self,
        ctx: &mut Ctx,
        request: &BeginRequest,
    ) -> Result<Insert, RegistryError> {
        let owner = Self::owner(ctx);
        let now = ctx.now();
        let sweep_at = now + millis(self.config.stale_after);
        let inserted = ctx.transact(|tx| {
            let routed: bool = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM routes WHERE instance_id = ?1)")?
                .query_row([&request.instance_id], |r| r.get(0))?;
            if routed {
                return Err(RegistryError::InstanceExists(request.instance_id.clone()));
            }
            let insert = tx.execute(
                "INSERT INTO provision_reservations
                     (owner_key, instance_id, idempotency_key, request, status, created_at,
                      updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'admitted', ?5, ?5)",
                params![
                    owner,
                    request.instance_id,
                    request.idempotency_key,
                    request.fingerprint,
                    now
                ],
            );
            match insert {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO routes (instance_id, created_at, state, reservation_id)
                 VALUES (?1, ?2, 'pending', ?3)",
                params![request.instance_id, now, id],
            )?;
            if tx.timer(TIMER_SWEEP)?.is_none_or(|at| at > sweep_at) {
                tx.set_timer(TIMER_SWEEP, sweep_at)?;
            }
            Ok(Some(Reservation {
                id: u64::try_from(id).unwrap_or(0),
                owner: owner.clone(),
                instance_id: request.instance_id.clone(),
                idempotency_key: request.idempotency_key.clone(),
                status: ReservationStatus::Admitted,
                error: None,
                created_at: now,
                updated_at: now,
            }))
        })?;
        match inserted {
            Some(r) => Ok(Insert::Admitted(r)),
            None => match Self::unresolved(ctx)? {
                Some(u) => Ok(Insert::OwnerBusy(u)),
                // The key's own unique index cannot fire: the key was looked up first by this
                // single writer.
                None => Err(RegistryError::Internal(
                    "admission refused by a constraint but no reservation is unresolved".into(),
                )),
            },
        }
    }

    async fn begin(
        &mut self,
        ctx: &mut Ctx,
        request: BeginRequest,
    ) -> Result<BeginOutcome, RegistryError> {
        if let Some((existing, fingerprint)) = Self::by_key(ctx, &request.idempotency_key)? {
            if fingerprint != request.fingerprint {
                return Err(RegistryError::KeyReused(request.idempotency_key));
            }
            return Ok(BeginOutcome::Existing(existing));
        }
        let owner = Self::owner(ctx);
        let limit = self.config.limit_for(&owner);
        // At most one repair per call: a repaired reservation frees the slot, then admission
        // is tried once more.
        let mut repaired = false;
        loop {
            if Self::active_route_count(ctx)? >= u64::from(limit) {
                let routes = Self::active_routes(ctx)?;
                let live = self.prune_routes(ctx, routes).await?;
                if live.len() >= usize::try_from(limit).unwrap_or(usize::MAX)
                    && let Some(first) = live.into_iter().next()
                {
                    return Ok(BeginOutcome::AtLimit {
                        instance_id: first,
                        limit,
                    });
                }
            }
            match self.insert_admitted(ctx, &request)? {
                Insert::Admitted(r) => return Ok(BeginOutcome::Admitted(r)),
                Insert::OwnerBusy(unresolved) => {
                    let state = ask(ctx.host(), &unresolved, false).await;
                    if !repaired && self.resolve_now(ctx, &unresolved, &state)? {
                        repaired = true;
                        continue;
                    }
                    let reason = match (&unresolved.status, &state) {
                        (ReservationStatus::FailedRequiresReconciliation, _)
                        | (_, Ok(AdmissionState::Provisioning { infra: true })) => {
                            ConflictReason::CompletionPending
                        }
                        _ => ConflictReason::InProgress,
                    };
                    let reservation = Self::load(ctx, unresolved.id)?;
                    return Ok(BeginOutcome::Conflict {
                        reason,
                        reservation,
                    });
                }
            }
        }
    }

    /// Resolve `unresolved` at once if its instance's state settles it (completion repair, or
    /// an instance destroyed meanwhile). Returns whether the owner's slot is free now.
    fn resolve_now(
        &self,
        ctx: &mut Ctx,
        unresolved: &Reservation,
        state: &Result<AdmissionState, String>,
    ) -> Result<bool, RegistryError> {
        match state {
            Ok(AdmissionState::Complete) => {
                tracing::info!(owner = %unresolved.owner, reservation = unresolved.id,
                    instance = %unresolved.instance_id, "completion repaired");
                self.complete(ctx, unresolved.id, &unresolved.instance_id)?;
                Ok(true)
            }
            Ok(AdmissionState::Destroyed) => {
                self.instance_destroyed(ctx, &unresolved.instance_id)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Of the owner's active routes, the ones whose instance still lives; routes of destroyed
    /// or missing instances are removed (a lost destroy report).
    async fn prune_routes(
        &self,
        ctx: &mut Ctx,
        routes: Vec<String>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut live = Vec::with_capacity(routes.len());
        for id in routes {
            let alive = match get_view(ctx.host(), &id).await {
                Ok(Some(view)) => view.status != Status::Destroyed,
                Ok(None) => false,
                // Unknown is alive: never admit past the limit on a failed read.
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "route check failed");
                    true
                }
            };
            if alive {
                live.push(id);
            } else {
                self.instance_destroyed(ctx, &id)?;
            }
        }
        Ok(live)
    }

    fn mark_started(&self, ctx: &mut Ctx, id: u64) -> Result<RegistryReply, RegistryError> {
        let now = ctx.now();
        let won = ctx.transact(|tx| {
            Ok::<_, RegistryError>(
                tx.execute(
                    "UPDATE provision_reservations SET status = 'provider_started', updated_at = ?2
                     WHERE id = ?1 AND status = 'admitted'",
                    params![sql_id(id), now],
                )? == 1,
            )
        })?;
        let reservation = Self::load(ctx, id)?;
        Ok(RegistryReply::Started { won, reservation })
    }

    pub(crate) fn complete(
        &self,
        ctx: &mut Ctx,
        id: u64,
        instance_id: &str,
    ) -> Result<Completion, RegistryError> {
        let now = ctx.now();
        let done = ctx.transact(|tx| {
            let changed = tx.execute(
                &format!(
                    "UPDATE provision_reservations SET status = 'completed', error = NULL,
                         updated_at = ?3
                     WHERE id = ?1 AND instance_id = ?2 AND status IN {UNRESOLVED}"
                ),
                params![sql_id(id), instance_id, now],
            )?;
            if changed == 1 {
                tx.execute(
                    "INSERT INTO routes (instance_id, created_at, state, reservation_id)
                     VALUES (?1, ?2, 'active', ?3)
                     ON CONFLICT (instance_id) DO UPDATE SET state = 'active'",
                    params![instance_id, now, sql_id(id)],
                )?;
            }
            Ok::<_, RegistryError>(changed == 1)
        })?;
        if done {
            return Ok(Completion::Completed);
        }
        let current = Self::load(ctx, id)?;
        if current.instance_id != instance_id {
            return Err(RegistryError::UnknownReservation(id));
        }
        Ok(match current.status {
            ReservationStatus::Completed => Completion::AlreadyCompleted,
            other => Completion::Rejected(other),
        })
    }

    pub(crate) fn fail(
        &self,
        ctx: &mut Ctx,
        id: u64,
        instance_id: &str,
        infra_may_exist: bool,
        error: &str,
    ) -> Result<(), RegistryError> {
        let now = ctx.now();
        let retry_at = now + millis(self.config.check_interval);
        ctx.transact(|tx| {
            if infra_may_exist {
                tx.execute(
                    "UPDATE provision_reservations
                     SET status = 'failed_requires_reconciliation', error = ?3, updated_at = ?4
                     WHERE id = ?1 AND instance_id = ?2
                       AND status IN ('admitted', 'provider_started')",
                    params![sql_id(id), instance_id, error, now],
                )?;
                if tx.timer(TIMER_SWEEP)?.is_none_or(|at| at > retry_at) {
                    tx.set_timer(TIMER_SWEEP, retry_at)?;
                }
            } else {
                let released = tx.execute(
                    &format!(
                        "UPDATE provision_reservations
                         SET status = 'released', error = ?3, updated_at = ?4
                         WHERE id = ?1 AND instance_id = ?2 AND status IN {UNRESOLVED}"
                    ),
                    params![sql_id(id), instance_id, error, now],
                )?;
                if released == 1 {
                    tx.execute(
                        "DELETE FROM routes WHERE instance_id = ?1 AND state = 'pending'",
                        [instance_id],
                    )?;
                }
            }
            Ok::<_, RegistryError>(())
        })
    }

    /// Destroy fencing: the route goes, an unresolved reservation of the instance is released.
    pub(crate) fn instance_destroyed(
        &self,
        ctx: &mut Ctx,
        instance_id: &str,
    ) -> Result<(), RegistryError> {
        let now = ctx.now();
        ctx.transact(|tx| {
            tx.execute("DELETE FROM routes WHERE instance_id = ?1", [instance_id])?;
            tx.execute(
                &format!(
                    "UPDATE provision_reservations
                     SET status = 'released',
                         error = COALESCE(error || '; ', '') || 'instance destroyed',
                         updated_at = ?2
                     WHERE instance_id = ?1 AND status IN {UNRESOLVED}"
                ),
                params![instance_id, now],
            )?;
            Ok::<_, RegistryError>(())
        })
    }

    fn list_routes(
        ctx: &mut Ctx,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<String>, RegistryError> {
        let conn = ctx.store().conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT instance_id FROM routes WHERE (?1 IS NULL OR instance_id > ?1)
             ORDER BY instance_id LIMIT ?2",
        )?;
        Ok(stmt
            .query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| r.get(0),
            )?
            .collect::<Result<Vec<String>, _>>()?)
    }

    async fn serve(
        &mut self,
        ctx: &mut Ctx,
        request: RegistryRequest,
    ) -> Result<RegistryReply, RegistryError> {
        Ok(match request {
            RegistryRequest::Begin(begin) => {
                let outcome = self.begin(ctx, begin).await?;
                if matches!(outcome, BeginOutcome::Admitted(_)) {
                    crashpoint::reached(crashpoint::ADMITTED);
                }
                RegistryReply::Begun(outcome)
            }
            RegistryRequest::MarkStarted(id) => self.mark_started(ctx, id)?,
            RegistryRequest::Complete {
                reservation,
                instance_id,
            } => RegistryReply::Completion(self.complete(ctx, reservation, &instance_id)?),
            RegistryRequest::Fail {
                reservation,
                instance_id,
                infra_may_exist,
                error,
            } => {
                self.fail(ctx, reservation, &instance_id, infra_may_exist, &error)?;
                RegistryReply::Ok
            }
            RegistryRequest::InstanceDestroyed(instance_id) => {
                self.instance_destroyed(ctx, &instance_id)?;
                RegistryReply::Ok
            }
            RegistryRequest::Reservation(id) => RegistryReply::Reservation(Self::load(ctx, id)?),
            RegistryRequest::ListRoutes { after, limit } => {
                RegistryReply::Routes(Self::list_routes(ctx, after, limit)?)
            }
        })
    }
}

pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Ask the instance of `reservation` where its provision stands; with `fence`, an instance
/// that never received the provision is made to refuse it for good.
pub(crate) async fn ask(
    host: &Host,
    reservation: &Reservation,
    fence: bool,
) -> Result<AdmissionState, String> {
    if !fence
        && !host
            .exists::<Instance>(&reservation.instance_id)
            .await
            .map_err(|e| e.to_string())?
    {
        // Not created yet; asking would create an empty object.
        return Ok(AdmissionState::Absent);
    }
    let request = InstanceRequest::Admission {
        reservation: reservation.id,
        owner: reservation.owner.clone(),
        fence,
    };
    match host.get::<Instance>(&reservation.instance_id) {
        Ok(stub) => match stub.call(request).await {
            Ok(Ok(InstanceReply::Admission(state))) => Ok(state),
            Ok(Ok(other)) => Err(format!("unexpected reply {other:?}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The instance's view, `None` when it does not exist (without creating it).
async fn get_view(host: &Host, id: &str) -> Result<Option<crate::instance::InstanceView>, String> {
    if !host
        .exists::<Instance>(id)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(None);
    }
    let stub = host.get::<Instance>(id).map_err(|e| e.to_string())?;
    match stub
        .call(InstanceRequest::Get { owner_scope: None })
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(InstanceReply::View(view)) => Ok(Some(view)),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(crate::instance::InstanceError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl Object for Registry {
    const CLASS: &'static str = "registry";
    type Request = RegistryRequest;
    type Response = Result<RegistryReply, RegistryError>;
    type Deps = RegistryConfig;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(
        _ctx: &mut Ctx,
        config: std::sync::Arc<RegistryConfig>,
    ) -> Result<Self, HandlerError> {
        Ok(Registry { config })
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: RegistryRequest) -> Self::Response {
        self.serve(ctx, request).await
    }

    async fn alarm(&mut self, ctx: &mut Ctx, alarm: AlarmInfo) -> Result<(), HandlerError> {
        if alarm.timers.iter().any(|t| t == TIMER_SWEEP) {
            self.sweep(ctx).await?;
        }
        Ok(())
    }
}

/// When the sweep should next run given `now`.
fn next_sweep(config: &RegistryConfig, now: UnixMillis) -> UnixMillis {
    now + millis(config.check_interval)
}
