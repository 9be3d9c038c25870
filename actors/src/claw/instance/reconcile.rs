//! The instance's alarm: an operation whose lease ran out is given up; the reconcile timer
//! re-arms itself and asks the provider, from a keyed task, what the machine is doing (the
//! answer comes back as [`InstanceRequest::Reconciled`](super::InstanceRequest::Reconciled));
//! then the scheduled-action part runs (see `scheduled`).

use super::Instance;
use super::api::{InstanceError, Status};
use super::lifecycle;
use super::procedures::spawn_reconcile;
use super::state::{AbandonReason, Timer};
use crate::object::{AlarmInfo, Ctx};
use crate::provider::{MachineState, ProviderError};

impl Instance {
    /// The alarm fired with `alarm`'s timers due.
    pub(super) async fn on_alarm(
        &mut self,
        ctx: &mut Ctx,
        alarm: &AlarmInfo,
    ) -> Result<(), InstanceError> {
        let now = ctx.now();
        let due = |timer: Timer| alarm.timers.iter().any(|t| timer.is(t));
        if due(Timer::Lease)
            && self
                .record
                .as_ref()
                .and_then(|r| r.op.as_ref())
                .is_some_and(|op| op.lease_expires_at <= now)
        {
            self.abandon(ctx, AbandonReason::LeaseExpired).await?;
        }
        let reconcile = due(Timer::Reconcile);
        if reconcile
            && let Some(record) = self.record.clone()
            && record.status != Status::Destroyed
        {
            // Re-armed first: if the check's result is lost, the next period looks again.
            let next = self
                .deps
                .config
                .reconcile_at(now, record.status == Status::Running);
            ctx.set_timer(Timer::Reconcile.as_str(), next)?;
            if let Some(machine) = record.machine.filter(|_| record.op.is_none()) {
                spawn_reconcile(ctx.host(), &self.deps, record.id, machine);
            }
        }
        self.scheduled_alarm(ctx, due(Timer::Action), reconcile)
            .await
    }

    /// A reconcile check came back.
    pub(super) fn reconciled(
        &mut self,
        ctx: &mut Ctx,
        state: Result<MachineState, ProviderError>,
    ) -> Result<(), InstanceError> {
        let now = ctx.now();
        let Some(transition) = self
            .record
            .as_ref()
            .and_then(|r| lifecycle::on_reconciled(r, &state, now, &self.deps.config))
        else {
            return Ok(());
        };
        self.apply(ctx, transition)
    }
}
