//! The registry's alarm: resolve unresolved reservations by asking their instances.
//!
//! One pass looks at up to [`BATCH`] unresolved reservations, oldest change first. Each row is
//! handled on its own: an instance that cannot be reached, or a storage error on one row, is
//! logged and the row is looked at again on the next pass. While any reservation stays
//! unresolved the sweep re-arms itself `check_interval` later, so no owner is blocked forever
//! by a lost report: every unresolved reservation ends `completed` or `released`, or its
//! instance is destroyed (which releases it).

use clawdo_storage::rusqlite::params;

use super::{
    RESERVATION_COLUMNS, Registry, RegistryError, Reservation, ReservationStatus, TIMER_SWEEP,
    UNRESOLVED, ask, millis, next_sweep, reservation_from_row,
};
use crate::instance::{AdmissionState, Instance, InstanceError, InstanceRequest, OpRequest};
use crate::object::Ctx;

/// Most reservations one pass looks at (an owner has at most one unresolved at a time; the
/// bound keeps a pass short whatever the table holds).
pub(super) const BATCH: usize = 16;

/// What the sweep decided for one reservation.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Complete,
    Release(&'static str),
    RequireReconciliation(String),
    /// Have the instance destroyed (its infrastructure is cleaned up; the destroy report then
    /// releases the reservation).
    Destroy,
    Wait,
}

fn decide(r: &Reservation, state: &AdmissionState, stale: bool, cleanup_due: bool) -> Decision {
    use ReservationStatus as S;
    match (r.status, state) {
        (_, AdmissionState::Complete) => Decision::Complete,
        (_, AdmissionState::Destroyed) => Decision::Release("instance destroyed"),
        (_, AdmissionState::Other) => {
            Decision::Release("the instance belongs to another provision")
        }
        (_, AdmissionState::Absent) if stale => {
            Decision::Release("the provision never reached its instance")
        }
        (
            _,
            AdmissionState::Failed {
                infra_may_exist: false,
                ..
            },
        ) => Decision::Release("provision failed before creating infrastructure"),
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
        let rows: Vec<Reservation> = {
            let conn = ctx.store().conn()?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RESERVATION_COLUMNS} FROM provision_reservations
                 WHERE status IN {UNRESOLVED} ORDER BY updated_at, id LIMIT ?1"
            ))?;
            stmt.query_map([i64::try_from(BATCH).unwrap_or(16)], reservation_from_row)?
                .collect::<Result<_, _>>()?
        };
        for r in &rows {
            if let Err(error) = self.sweep_one(ctx, r).await {
                tracing::warn!(owner = %r.owner, reservation = r.id, %error,
                    "registry sweep: reservation left for the next pass");
            }
        }
        let remaining: bool = {
            let conn = ctx.store().conn()?;
            conn.prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM provision_reservations WHERE status IN {UNRESOLVED})"
            ))?
            .query_row([], |row| row.get(0))?
        };
        if remaining {
            let at = next_sweep(&self.config, ctx.now());
            ctx.set_timer(TIMER_SWEEP, at)?;
        }
        Ok(())
    }

    async fn sweep_one(&mut self, ctx: &mut Ctx, r: &Reservation) -> Result<(), RegistryError> {
        let now = ctx.now();
        let stale = now - r.created_at >= millis(self.config.stale_after);
        let cleanup_due = now - r.updated_at >= millis(self.config.check_interval);
        let state = ask(ctx.host(), r, stale)
            .await
            .map_err(RegistryError::Internal)?;
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
                    self.fail(ctx, r.id, &r.instance_id, false, why)?;
                }
                tracing::info!(owner = %r.owner, reservation = r.id, why, "reservation released");
            }
            Decision::RequireReconciliation(error) => {
                self.fail(ctx, r.id, &r.instance_id, true, &error)?;
            }
            Decision::Destroy => {
                let stub = ctx
                    .host()
                    .get::<Instance>(&r.instance_id)
                    .map_err(|e| RegistryError::Internal(e.to_string()))?;
                let destroy = InstanceRequest::Op {
                    op: OpRequest::Destroy,
                    owner_scope: None,
                };
                match stub.call(destroy).await {
                    Ok(Ok(_)) => {
                        tracing::info!(owner = %r.owner, reservation = r.id,
                            instance = %r.instance_id, "destroying a failed provision's instance");
                    }
                    // Busy (e.g. a destroy already runs) or gone: the next pass looks again.
                    Ok(Err(InstanceError::Busy(_) | InstanceError::Destroyed(_))) => {}
                    Ok(Err(e)) => return Err(RegistryError::Internal(e.to_string())),
                    Err(e) => return Err(RegistryError::Internal(e.to_string())),
                }
                // Count the attempt so the next destroy waits a full interval.
                let now = ctx.now();
                ctx.transact(|tx| {
                    tx.execute(
                        "UPDATE provision_reservations SET updated_at = ?2
                         WHERE id = ?1 AND status = 'failed_requires_reconciliation'",
                        params![super::sql_id(r.id), now],
                    )?;
                    Ok::<_, RegistryError>(())
                })?;
            }
            Decision::Wait => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation(status: ReservationStatus) -> Reservation {
        Reservation {
            id: 1,
            owner: "user:1".into(),
            instance_id: "i".into(),
            idempotency_key: "k".into(),
            status,
            error: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn decisions_cover_every_outcome() {
        use ReservationStatus as S;
        let failed = |infra| AdmissionState::Failed {
            infra_may_exist: infra,
            error: "boom".into(),
        };
        let cases = [
            (
                S::ProviderStarted,
                AdmissionState::Complete,
                false,
                false,
                Decision::Complete,
            ),
            (
                S::FailedRequiresReconciliation,
                AdmissionState::Complete,
                false,
                false,
                Decision::Complete,
            ),
            (
                S::Admitted,
                AdmissionState::Absent,
                true,
                false,
                Decision::Release("the provision never reached its instance"),
            ),
            (
                S::Admitted,
                AdmissionState::Absent,
                false,
                false,
                Decision::Wait,
            ),
            (
                S::ProviderStarted,
                AdmissionState::Provisioning { infra: true },
                true,
                true,
                Decision::Wait,
            ),
            (
                S::ProviderStarted,
                failed(false),
                false,
                false,
                Decision::Release("provision failed before creating infrastructure"),
            ),
            (
                S::ProviderStarted,
                failed(true),
                false,
                false,
                Decision::RequireReconciliation("boom".into()),
            ),
            (
                S::FailedRequiresReconciliation,
                failed(true),
                false,
                false,
                Decision::Wait,
            ),
            (
                S::FailedRequiresReconciliation,
                failed(true),
                false,
                true,
                Decision::Destroy,
            ),
            (
                S::FailedRequiresReconciliation,
                AdmissionState::Destroyed,
                false,
                false,
                Decision::Release("instance destroyed"),
            ),
            (
                S::FailedRequiresReconciliation,
                AdmissionState::Busy,
                false,
                true,
                Decision::Wait,
            ),
        ];
        for (status, state, stale, cleanup_due, expected) in cases {
            assert_eq!(
                decide(&reservation(status), &state, stale, cleanup_due),
                expected,
                "{status:?} / {state:?} / stale {stale} / cleanup due {cleanup_due}"
            );
        }
    }
}
