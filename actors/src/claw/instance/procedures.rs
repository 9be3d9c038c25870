//! The provider side of an instance's operations. Each runs as a keyed background task (never
//! in the instance's mailbox) and reports back to its instance through the instance's own
//! handle: progress of a provision (each piece of infrastructure, recorded before the next
//! step), the outcome, or a reconcile reading.
//!
//! Task keys: a user operation runs under `instance/<id>/op`, a scheduled target under
//! [`target_task_key`] (so the fleet's reaper can stop exactly that task and no later one),
//! a reconcile check under `instance/<id>/reconcile`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Instance;
use super::api::{InstanceError, InstanceView, OpKind, OpOutcome, OpRequest, Status};
use super::config::InstanceServices;
use super::handle::InstanceHandle;
use super::lifecycle::{self, Current, OpStart};
use super::state::{AbandonReason, FleetLink, InFlight, Record};
use crate::Host;
use crate::claw::fleet::api::target_task_key;
use crate::object::Ctx;
use crate::provider::{MachineId, MachineSpec, Priority, Provider, ProviderError, VolumeSource};

impl Instance {
    /// When a new operation starts and its lease ends, in this process.
    pub(super) fn op_start(&self, ctx: &Ctx) -> OpStart {
        let now = ctx.now();
        OpStart {
            now,
            epoch: ctx.host().epoch(),
            lease_expires_at: self.deps.config.lease_at(now),
        }
    }

    /// Start user operation `request`: commit the intent, then start its task.
    pub(super) fn operate(
        &mut self,
        ctx: &mut Ctx,
        request: OpRequest,
    ) -> Result<InstanceView, InstanceError> {
        let record = self
            .record
            .as_ref()
            .ok_or_else(|| InstanceError::NotFound(ctx.id().to_string()))?;
        let (transition, op) = lifecycle::begin_op(record, &request, self.op_start(ctx))?;
        self.apply(ctx, transition)?;
        let record = self.committed(ctx)?;
        let key = op_task_key(&record.id, &self.link, &op);
        spawn_op(ctx.host(), &self.deps, record.clone(), op, key, false);
        Ok(self.view_of(record))
    }

    /// The record after a commit that wrote one.
    pub(super) fn committed(&self, ctx: &Ctx) -> Result<&Record, InstanceError> {
        self.record
            .as_ref()
            .ok_or_else(|| InstanceError::NotFound(ctx.id().to_string()))
    }

    fn current(&self) -> Option<Current<'_>> {
        Some(Current {
            record: self.record.as_ref()?,
            ticket: self.ticket.as_ref(),
            link: &self.link,
        })
    }

    /// The operation's task reported its outcome.
    pub(super) fn finish(
        &mut self,
        ctx: &mut Ctx,
        outcome: OpOutcome,
    ) -> Result<(), InstanceError> {
        let now = ctx.now();
        let Some(transition) = self
            .current()
            .and_then(|c| lifecycle::on_outcome(c, &outcome, now, &self.deps.config))
        else {
            tracing::debug!(instance = %ctx.id(), op = outcome.op_id, "stale operation outcome ignored");
            return Ok(());
        };
        let provisioned = transition
            .ticket
            .as_ref()
            .is_some_and(|t| t.outcome == super::state::TicketOutcome::Succeeded);
        self.apply(ctx, transition)?;
        if provisioned {
            crate::crashpoint::reached(crate::crashpoint::PROVISIONED);
        }
        Ok(())
    }

    /// A provision's task created infrastructure: record it before the task goes on.
    pub(super) fn progress(
        &mut self,
        ctx: &mut Ctx,
        outcome: OpOutcome,
    ) -> Result<(), InstanceError> {
        let Some(transition) = self
            .record
            .as_ref()
            .and_then(|r| lifecycle::on_progress(r, &outcome))
        else {
            return Ok(());
        };
        let volume = transition
            .events
            .iter()
            .any(|(kind, _)| *kind == super::api::EventKind::VolumeCreated);
        self.apply(ctx, transition)?;
        if volume {
            crate::crashpoint::reached(crate::crashpoint::VOLUME_RECORDED);
        }
        Ok(())
    }

    /// Give up the operation in flight: stop its task (and wait until it stopped), then commit
    /// the instance's `stopped` state and the failure of a target it applied.
    pub(super) async fn abandon(
        &mut self,
        ctx: &mut Ctx,
        why: AbandonReason,
    ) -> Result<(), InstanceError> {
        let Some((record, op)) = self.record.as_ref().and_then(|r| Some((r, r.op.as_ref()?)))
        else {
            return Ok(());
        };
        let key = op_task_key(&record.id, &self.link, op);
        ctx.host().abort_task(&key).await;
        let now = ctx.now();
        let Some(transition) = self
            .current()
            .and_then(|c| lifecycle::abandon(c, why, now, &self.deps.config))
        else {
            return Ok(());
        };
        self.apply(ctx, transition)
    }
}

/// The key of the task running instance `id`'s operation: the target's key while the
/// operation applies a scheduled target, else `instance/<id>/op`.
pub(super) fn op_task_key(id: &str, link: &FleetLink, op: &InFlight) -> String {
    match link.running.as_ref().filter(|r| r.op_id == op.id) {
        Some(running) => target_task_key(id, running.target_id),
        None => format!("instance/{id}/op"),
    }
}

/// Run `op` of `record` as a task under `key`: user operations at
/// [`Priority::Interactive`], a scheduled target (`scheduled`) at [`Priority::Scheduled`].
pub(super) fn spawn_op(
    host: &Host,
    deps: &Arc<InstanceServices>,
    record: Record,
    op: InFlight,
    key: String,
    scheduled: bool,
) {
    let provider = deps.provider.clone();
    let reporter = host.clone();
    host.spawn_keyed(key, async move {
        let outcome = if scheduled {
            run_scheduled(&provider, &record, &op).await
        } else {
            run_op(&provider, &reporter, &record, &op).await
        };
        report(&reporter, &record.id, Report::Finished(outcome)).await;
    });
}

/// Ask the provider for `machine`'s state as a task, and report it to instance `id`.
pub(super) fn spawn_reconcile(
    host: &Host,
    deps: &Arc<InstanceServices>,
    id: String,
    machine: MachineId,
) {
    let provider = deps.provider.clone();
    let reporter = host.clone();
    host.spawn_keyed(format!("instance/{id}/reconcile"), async move {
        let state = provider
            .call(Priority::Scheduled, |p| p.machine(&machine))
            .await
            .map(|info| info.state);
        report(&reporter, &id, Report::Reconciled(state)).await;
    });
}

enum Report {
    Progress(OpOutcome),
    Finished(OpOutcome),
    Reconciled(Result<crate::provider::MachineState, ProviderError>),
}

/// Tell instance `id` what its task found; failures only log (the lease or the next
/// activation resolves an operation whose outcome was lost).
async fn report(host: &Host, id: &str, report: Report) {
    let sent = match InstanceHandle::new(host, id) {
        Ok(instance) => match report {
            Report::Progress(outcome) => instance.op_progress(outcome).await,
            Report::Finished(outcome) => instance.op_finished(outcome).await,
            Report::Reconciled(state) => instance.reconciled(state).await,
        },
        Err(e) => Err(e),
    };
    if let Err(error) = sent {
        tracing::warn!(instance = %id, %error, "could not report an operation outcome");
    }
}

/// The provider side of one user operation.
async fn run_op(provider: &Provider, host: &Host, record: &Record, op: &InFlight) -> OpOutcome {
    let mut outcome = OpOutcome {
        op_id: op.id,
        machine: None,
        volume: None,
        result: Ok(()),
    };
    let p = Priority::Interactive;
    let machine = record.machine.clone();
    let result = match op.kind {
        OpKind::Provision => {
            let name = format!("vol-{}", record.id);
            let volume = match provider
                .call(p, |m| m.create_volume(VolumeSource::Empty, &name))
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    outcome.result = Err(e);
                    return outcome;
                }
            };
            outcome.volume = Some(volume.clone());
            report(host, &record.id, Report::Progress(outcome.clone())).await;
            let spec = MachineSpec {
                image: record.image_tag.clone(),
                volume,
                metadata: BTreeMap::from([
                    ("sandbox_id".to_string(), record.sandbox_id.clone()),
                    ("instance_id".to_string(), record.id.clone()),
                    ("owner".to_string(), record.owner.clone()),
                ]),
            };
            match provider.call(p, |m| m.create_machine(spec)).await {
                Ok(machine) => {
                    outcome.machine = Some(machine.clone());
                    report(host, &record.id, Report::Progress(outcome.clone())).await;
                    provider.call(p, |m| m.start_machine(&machine)).await
                }
                Err(e) => Err(e),
            }
        }
        OpKind::Start => match &machine {
            Some(m) => provider.call(p, |pr| pr.start_machine(m)).await,
            None => Err(ProviderError::Refused("no machine".into())),
        },
        OpKind::Stop => match &machine {
            Some(m) => provider.call(p, |pr| pr.stop_machine(m)).await,
            None => Ok(()),
        },
        OpKind::Restart => match &machine {
            Some(m) => provider.call(p, |pr| pr.restart_machine(m)).await,
            None => Err(ProviderError::Refused("no machine".into())),
        },
        OpKind::ChangeVersion => change_version(provider, p, machine.as_ref(), op).await,
        OpKind::Destroy => {
            let destroyed = match &machine {
                Some(m) => match provider.call(p, |pr| pr.destroy_machine(m, true)).await {
                    Err(ProviderError::NotFound { .. }) => Ok(()),
                    other => other,
                },
                None => Ok(()),
            };
            match (destroyed, &record.volume) {
                (Ok(()), Some(v)) => match provider.call(p, |pr| pr.delete_volume(v)).await {
                    Err(ProviderError::NotFound { .. }) => Ok(()),
                    other => other,
                },
                (other, _) => other,
            }
        }
    };
    outcome.result = result;
    outcome
}

/// Update the image, and restart the machine if it was running.
async fn change_version(
    provider: &Provider,
    p: Priority,
    machine: Option<&MachineId>,
    op: &InFlight,
) -> Result<(), ProviderError> {
    match (machine, &op.image) {
        (Some(m), Some(image)) => match provider.call(p, |pr| pr.update_image(m, image)).await {
            Ok(()) if op.prior == Status::Running => {
                provider.call(p, |pr| pr.restart_machine(m)).await
            }
            other => other,
        },
        (None, Some(_)) => Ok(()),
        (_, None) => Err(ProviderError::Refused("no target image".into())),
    }
}

/// The provider side of a scheduled target, at [`Priority::Scheduled`].
async fn run_scheduled(provider: &Provider, record: &Record, op: &InFlight) -> OpOutcome {
    let p = Priority::Scheduled;
    let result = match (op.kind, &record.machine) {
        (OpKind::Restart, Some(m)) => provider.call(p, |pr| pr.restart_machine(m)).await,
        (OpKind::ChangeVersion, machine) if op.image.is_some() => {
            change_version(provider, p, machine.as_ref(), op).await
        }
        _ => Err(ProviderError::Refused("nothing to apply".into())),
    };
    OpOutcome {
        op_id: op.id,
        machine: None,
        volume: None,
        result,
    }
}
