//! The registry's alarm: resolve unresolved reservations by asking their instances.
//!
//! One pass looks at up to `BATCH` (16) unresolved reservations, oldest change first. Each row is
//! handled on its own: an instance that cannot be reached, or a storage error on one row, is
//! logged and the row is looked at again on the next pass. While any reservation stays
//! unresolved the sweep re-arms itself `check_interval` later, so no owner is blocked forever
//! by a lost report: every unresolved reservation ends `completed` or `released`, or its
//! instance is destroyed (which releases it).

use super::admission::{ask, instance_error};
use super::api::{RegistryError, ReleaseReason, Reservation, ReservationStatus};
use super::config::millis;
use super::{Registry, TIMER_SWEEP, store};
use crate::claw::instance::{AdmissionState, InstanceError, InstanceHandle, OpRequest};
use crate::object::Ctx;

/// Most reservations one pass looks at (an owner has at most one unresolved at a time; the
/// bound keeps a pass short whatever the table holds).
pub(super) const BATCH: usize = 16;

/// What the sweep decided for one reservation.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Record the completion (repair).
    Complete,
    /// Release it.
    Release(ReleaseReason),
    /// Fail it closed: infrastructure may exist.
    RequireReconciliation(String),
    /// Have the instance destroyed (its infrastructure is cleaned up; the destroy report then
    /// releases the reservation).
    Destroy,
    /// Look again on the next pass.
    Wait,
}

/// The sweep's decision for `r`, whose instance answered `state`; `stale`: admitted longer
/// than `stale_after` ago; `cleanup_due`: unchanged for a `check_interval`.
pub fn decide(r: &Reservation, state: &AdmissionState, stale: bool, cleanup_due: bool) -> Decision {
    use ReservationStatus as S;
    match (r.status, state) {
        (_, AdmissionState::Complete) => Decision::Complete,
        (_, AdmissionState::Destroyed) => Decision::Release(ReleaseReason::InstanceDestroyed),
        (_, AdmissionState::Other) => Decision::Release(ReleaseReason::OtherProvision),
        (_, AdmissionState::Absent) if stale => Decision::Release(ReleaseReason::NeverArrived),
        (
            _,
            AdmissionState::Failed {
                infra_may_exist: false,
                ..
            },
        ) => Decision::Release(ReleaseReason::FailedBeforeInfrastructure),
        (S::Admitted | S::ProviderStarted, AdmissionState::Failed { error, .. }) => {
            Decision::RequireReconciliation(error.clone())
        }
        (S::FailedRequiresReconciliation, AdmissionState::Failed { .. }) if cleanup_due => {
            Decision::Destroy
        }
        _ => Decision::Wait,
    }
}

impl Registry {
    /// One pass of the alarm (see the module docs).
    pub(super) async fn sweep(&mut self, ctx: &mut Ctx) -> Result<(), RegistryError> {
        let rows = store::unresolved_batch(ctx.store().conn()?, BATCH)?;
        for r in &rows {
            if let Err(error) = self.sweep_one(ctx, r).await {
                tracing::warn!(owner = %r.owner, reservation = r.id, %error,
                    "registry sweep: reservation left for the next pass");
            }
        }
        if store::any_unresolved(ctx.store().conn()?)? {
            let at = ctx.now() + millis(self.config.check_interval);
            ctx.set_timer(TIMER_SWEEP, at)?;
        }
        Ok(())
    }

    async fn sweep_one(&mut self, ctx: &mut Ctx, r: &Reservation) -> Result<(), RegistryError> {
        let now = ctx.now();
        let stale = now - r.created_at >= millis(self.config.stale_after);
        let cleanup_due = now - r.updated_at >= millis(self.config.check_interval);
        let host = ctx.host().clone();
        let state = ask(&host, r, stale).await.map_err(instance_error)?;
        let decision = decide(r, &state, stale, cleanup_due);
        tracing::debug!(owner = %r.owner, reservation = r.id, status = r.status.as_str(),
            ?state, ?decision, "registry sweep");
        match decision {
            Decision::Complete => {
                self.complete(ctx, r.id, &r.instance_id)?;
                tracing::info!(owner = %r.owner, reservation = r.id, "completion repaired");
            }
            Decision::Release(why) => {
                if state == AdmissionState::Destroyed {
                    self.instance_destroyed(ctx, &r.instance_id)?;
                } else {
                    self.fail(ctx, r.id, &r.instance_id, false, why.as_str())?;
                }
                tracing::info!(owner = %r.owner, reservation = r.id, why = why.as_str(),
                    "reservation released");
            }
            Decision::RequireReconciliation(error) => {
                self.fail(ctx, r.id, &r.instance_id, true, &error)?;
            }
            Decision::Destroy => {
                let instance =
                    InstanceHandle::new(ctx.host(), &r.instance_id).map_err(instance_error)?;
                match instance.operate(OpRequest::Destroy, None).await {
                    Ok(_) => {
                        tracing::info!(owner = %r.owner, reservation = r.id,
                            instance = %r.instance_id, "destroying a failed provision's instance");
                    }
                    // Busy (e.g. a destroy already runs) or gone: the next pass looks again.
                    Err(InstanceError::Busy(_) | InstanceError::Destroyed(_)) => {}
                    Err(e) => return Err(instance_error(e)),
                }
                // Count the attempt so the next destroy waits a full interval.
                let now = ctx.now();
                ctx.transact(|tx| Ok::<_, RegistryError>(store::touch_failed(tx, r.id, now)?))?;
            }
            Decision::Wait => {}
        }
        Ok(())
    }
}
