//! Provision admission (SPEC §5): `Begin` admits a fresh provision or says why not,
//! `MarkStarted` lets exactly one caller go on to the instance, and the instance's reports
//! (`Complete`, `Fail`, destroyed) settle the reservation.
//!
//! - **Idempotency**: the idempotency key is unique per owner; `Begin` with a known key answers
//!   that reservation as it stands (a different request under the same key is refused).
//! - **One unresolved provision per owner**: the partial unique index refuses a second
//!   `admitted` row; the refused insert is the conflict signal.
//! - **Completion repair**: before refusing a provision because another is unresolved, the
//!   registry asks that reservation's instance; one that is in fact provisioned is recorded as
//!   `completed` instead of blocking the owner.
//! - **Destroy fencing**: when an instance is destroyed its route is removed and its
//!   unresolved reservation released; a later `Complete` for it is rejected and cannot revive
//!   the route.

use super::api::{
    BeginOutcome, BeginRequest, Completion, ConflictReason, RegistryError, RegistryReply,
    Reservation, ReservationStatus,
};
use super::config::millis;
use super::{Registry, TIMER_SWEEP, store};
use crate::Host;
use crate::claw::instance::{AdmissionState, InstanceError, InstanceHandle, Status};
use crate::object::Ctx;

/// Why a fresh provision is refused while `unresolved` (whose instance answered `state`)
/// holds the owner's slot.
pub fn conflict_reason(
    unresolved: ReservationStatus,
    state: &Result<AdmissionState, InstanceError>,
) -> ConflictReason {
    match (unresolved, state) {
        (ReservationStatus::FailedRequiresReconciliation, _)
        | (_, Ok(AdmissionState::Provisioning { infra: true })) => {
            ConflictReason::CompletionPending
        }
        _ => ConflictReason::InProgress,
    }
}

/// Result of trying to insert an `admitted` reservation.
enum Insert {
    Admitted(Reservation),
    /// The partial unique index refused: this is the owner's unresolved reservation.
    OwnerBusy(Reservation),
}

/// An instance's error as the registry keeps it.
pub(super) fn instance_error(e: InstanceError) -> RegistryError {
    match e {
        InstanceError::Fault(fault) => RegistryError::Fault(fault),
        other => RegistryError::Internal(other.to_string()),
    }
}

/// Ask the instance of `reservation` where its provision stands; with `fence`, an instance
/// that never received the provision is made to refuse it for good.
pub(super) async fn ask(
    host: &Host,
    reservation: &Reservation,
    fence: bool,
) -> Result<AdmissionState, InstanceError> {
    let instance = InstanceHandle::new(host, &reservation.instance_id)?;
    // Not created yet: asking without fencing would create an empty object.
    if !fence && !instance.exists().await? {
        return Ok(AdmissionState::Absent);
    }
    instance
        .admission(reservation.id, &reservation.owner, fence)
        .await
}

impl Registry {
    /// Admit a fresh provision, or answer its key's reservation, the owner's instance at its
    /// limit, or a conflict.
    pub(super) async fn begin(
        &mut self,
        ctx: &mut Ctx,
        request: BeginRequest,
    ) -> Result<BeginOutcome, RegistryError> {
        if let Some((existing, fingerprint)) =
            store::by_key(ctx.store().conn()?, &request.idempotency_key)?
        {
            if fingerprint != request.fingerprint {
                return Err(RegistryError::KeyReused(request.idempotency_key));
            }
            return Ok(BeginOutcome::Existing(existing));
        }
        let owner = ctx.id().to_string();
        let limit = self.config.limit_for(&owner);
        // At most one repair per call: a repaired reservation frees the slot, then admission
        // is tried once more.
        let mut repaired = false;
        loop {
            if store::active_route_count(ctx.store().conn()?)? >= u64::from(limit) {
                let routes = store::active_routes(ctx.store().conn()?)?;
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
                    let state = ask(&ctx.host().clone(), &unresolved, false).await;
                    if !repaired && self.resolve_now(ctx, &unresolved, &state)? {
                        repaired = true;
                        continue;
                    }
                    let reason = conflict_reason(unresolved.status, &state);
                    let reservation = store::load(ctx.store().conn()?, unresolved.id)?;
                    return Ok(BeginOutcome::Conflict {
                        reason,
                        reservation,
                    });
                }
            }
        }
    }

    /// Insert an `admitted` reservation and its pending route, and make sure the sweep runs
    /// by the time it would be stale — one transaction. The partial unique index decides
    /// whether the owner already has an unresolved one.
    fn insert_admitted(
        &self,
        ctx: &mut Ctx,
        request: &BeginRequest,
    ) -> Result<Insert, RegistryError> {
        let owner = ctx.id().to_string();
        let now = ctx.now();
        let sweep_at = now + millis(self.config.stale_after);
        let inserted = ctx.transact(|tx| {
            if store::routed(tx, &request.instance_id)? {
                return Err(RegistryError::InstanceExists(request.instance_id.clone()));
            }
            let Some(id) = store::insert_admitted(
                tx,
                &owner,
                &request.instance_id,
                &request.idempotency_key,
                &request.fingerprint,
                now,
            )?
            else {
                return Ok(None);
            };
            if tx.timer(TIMER_SWEEP)?.is_none_or(|at| at > sweep_at) {
                tx.set_timer(TIMER_SWEEP, sweep_at)?;
            }
            Ok(Some(Reservation {
                id,
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
            None => match store::unresolved(ctx.store().conn()?)? {
                Some(u) => Ok(Insert::OwnerBusy(u)),
                // The key's own unique index cannot fire: the key was looked up first by this
                // single writer.
                None => Err(RegistryError::Internal(
                    "admission refused by a constraint but no reservation is unresolved".into(),
                )),
            },
        }
    }

    /// Resolve `unresolved` at once if its instance's state settles it (completion repair, or
    /// an instance destroyed meanwhile). Returns whether the owner's slot is free now.
    fn resolve_now(
        &self,
        ctx: &mut Ctx,
        unresolved: &Reservation,
        state: &Result<AdmissionState, InstanceError>,
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
            let alive = match status_of(&ctx.host().clone(), &id).await {
                Ok(Some(status)) => status != Status::Destroyed,
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

    /// `admitted → provider_started`: whether this call made the move, and the reservation.
    pub(super) fn mark_started(
        &self,
        ctx: &mut Ctx,
        id: u64,
    ) -> Result<RegistryReply, RegistryError> {
        let now = ctx.now();
        let won = ctx.transact(|tx| Ok::<_, RegistryError>(store::mark_started(tx, id, now)?))?;
        let reservation = store::load(ctx.store().conn()?, id)?;
        Ok(RegistryReply::Started { won, reservation })
    }

    /// The instance of reservation `id` was provisioned.
    pub(super) fn complete(
        &self,
        ctx: &mut Ctx,
        id: u64,
        instance_id: &str,
    ) -> Result<Completion, RegistryError> {
        let now = ctx.now();
        let done =
            ctx.transact(|tx| Ok::<_, RegistryError>(store::complete(tx, id, instance_id, now)?))?;
        if done {
            return Ok(Completion::Completed);
        }
        let current = store::load(ctx.store().conn()?, id)?;
        if current.instance_id != instance_id {
            return Err(RegistryError::UnknownReservation(id));
        }
        Ok(match current.status {
            ReservationStatus::Completed => Completion::AlreadyCompleted,
            other => Completion::Rejected(other),
        })
    }

    /// The provision of reservation `id` failed: fail closed when infrastructure may exist
    /// (and make sure the sweep looks again), else release it.
    pub(super) fn fail(
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
            store::fail(tx, id, instance_id, infra_may_exist, error, now)?;
            if infra_may_exist && tx.timer(TIMER_SWEEP)?.is_none_or(|at| at > retry_at) {
                tx.set_timer(TIMER_SWEEP, retry_at)?;
            }
            Ok::<_, RegistryError>(())
        })
    }

    /// Destroy fencing: the route goes, an unresolved reservation of the instance is released.
    pub(super) fn instance_destroyed(
        &self,
        ctx: &mut Ctx,
        instance_id: &str,
    ) -> Result<(), RegistryError> {
        let now = ctx.now();
        ctx.transact(|tx| Ok::<_, RegistryError>(store::instance_destroyed(tx, instance_id, now)?))
    }
}

/// The status of instance `id`, `None` when it does not exist (without creating it).
async fn status_of(host: &Host, id: &str) -> Result<Option<Status>, InstanceError> {
    let instance = InstanceHandle::new(host, id)?;
    if !instance.exists().await? {
        return Ok(None);
    }
    match instance.get(None).await {
        Ok(view) => Ok(Some(view.status)),
        Err(InstanceError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
