//! The `instance` object class: one claw instance and its machine's lifecycle (SPEC §4).
//!
//! Operations never block the mailbox on the provider: a mutating call validates, commits the
//! intent (busy status, operation id, lease timer) and returns at once; a keyed task makes the
//! provider calls and reports back ([`InstanceRequest::OpFinished`]). Reads stay answerable
//! meanwhile. An operation ends when its outcome arrives, when its lease expires (the task is
//! stopped and the instance returns to `stopped` with a reason), or, after a restart of the
//! process, at activation (its task died with the old process). A periodic reconcile compares
//! the provider's view with the desired state and records drift.
//!
//! Every handler has the same shape: read the state, call a pure function of [`lifecycle`]
//! (or of `scheduled`) that returns a transition, commit it in ONE transaction, then act
//! (start a task) and hand the transition's notices to the outbox once the handler is done.
//! An instance awaits only the fleet (below it); what it tells its registry is a notice.
//!
//! # Layout
//! - [`api`]: requests, replies, statuses, the view, event kinds, [`InstanceError`].
//! - [`handle`]: [`InstanceHandle`], the typed way to call an instance.
//! - [`config`]: [`InstanceConfig`] and the class's dependencies ([`InstanceServices`]).
//! - [`state`]: what an instance persists (record, operation, ticket, fleet link, timers).
//! - `store`: its storage; one transaction per transition.
//! - [`lifecycle`]: the pure transitions.
//! - `procedures`: user operations and the provider side of every operation (keyed tasks).
//! - `provision`: provision and admission (the registry's questions, fencing).
//! - `scheduled`: the instance's side of scheduled admin actions.
//! - `reconcile`: the alarm: lease expiry, reconcile checks.
//! - [`hub`]: fan-out of events to watchers. [`validate`]: input checks.

pub mod api;
pub mod config;
pub mod handle;
pub mod hub;
pub mod lifecycle;
mod procedures;
mod provision;
mod reconcile;
mod scheduled;
pub mod state;
mod store;
#[cfg(test)]
mod tests;
pub mod validate;

use std::sync::Arc;

use clawdo_storage::Migration;

use crate::claw::outbox::{self, Notice};
use crate::object::{AlarmInfo, Ctx, HandlerError, Object};

pub use api::{
    AdmissionState, Desired, EventKind, InstanceError, InstanceEvent, InstanceReply,
    InstanceRequest, InstanceView, OpKind, OpOutcome, OpRequest, ProvisionRequest, Status,
};
pub use config::{InstanceConfig, InstanceServices};
pub use handle::InstanceHandle;
pub use hub::EventHub;
pub use lifecycle::Transition;
pub use state::{AbandonReason, FleetLink, InFlight, ProvisionTicket, Record, TicketOutcome};

/// The instance object.
#[derive(Debug)]
pub struct Instance {
    deps: Arc<InstanceServices>,
    /// `None` until a provision (or a fence) created it.
    record: Option<Record>,
    /// The fresh provision that created the instance.
    ticket: Option<ProvisionTicket>,
    /// Scheduled-action state (its own KV value, not part of the record).
    link: FleetLink,
    /// Notices of committed transitions, delivered when the handler is done.
    outbox: Vec<Notice>,
}

impl Instance {
    /// Commit `t` in one transaction, then publish its events and keep its notices for the
    /// outbox.
    fn apply(&mut self, ctx: &mut Ctx, mut t: Transition) -> Result<(), InstanceError> {
        if t.is_empty() {
            return Ok(());
        }
        if let Some(record) = t.record.as_mut() {
            record.updated_at = ctx.now();
        }
        let status = t
            .record
            .as_ref()
            .or(self.record.as_ref())
            .map_or(Status::Provisioning, |r| r.status);
        let written = store::commit(ctx, &t, status)?;
        for event in &written {
            tracing::info!(instance = %event.instance_id, kind = %event.kind,
                status = event.status.as_str(), detail = %event.detail, "instance event");
            self.deps.hub.publish(event);
        }
        if t.record.is_some() {
            self.record = t.record;
        }
        if t.ticket.is_some() {
            self.ticket = t.ticket;
        }
        if let Some(link) = t.link {
            self.link = link;
        }
        self.outbox.extend(t.notices);
        Ok(())
    }

    /// The record as `owner_scope` may see it.
    fn visible(&self, ctx: &Ctx, owner_scope: Option<&str>) -> Result<&Record, InstanceError> {
        match &self.record {
            Some(r) if owner_scope.is_none_or(|o| o == r.owner) => Ok(r),
            _ => Err(InstanceError::NotFound(ctx.id().to_string())),
        }
    }

    /// `record`'s view with the upcoming target as its banner.
    fn view_of(&self, record: &Record) -> InstanceView {
        let mut view = InstanceView::from(record);
        view.upcoming_action = self.link.upcoming.clone();
        view
    }

    async fn serve(
        &mut self,
        ctx: &mut Ctx,
        request: InstanceRequest,
    ) -> Result<InstanceReply, InstanceError> {
        Ok(match request {
            InstanceRequest::Provision(request) => self.provision(ctx, request)?,
            InstanceRequest::Admission {
                reservation,
                owner,
                fence,
            } => InstanceReply::Admission(self.admission(ctx, reservation, &owner, fence)?),
            InstanceRequest::Get { owner_scope } => {
                let record = self.visible(ctx, owner_scope.as_deref())?;
                InstanceReply::View(self.view_of(record))
            }
            InstanceRequest::Op { op, owner_scope } => {
                self.visible(ctx, owner_scope.as_deref())?;
                InstanceReply::View(self.operate(ctx, op)?)
            }
            InstanceRequest::Events {
                after,
                limit,
                owner_scope,
            } => {
                self.visible(ctx, owner_scope.as_deref())?;
                InstanceReply::Events(store::events_page(ctx, after, limit)?)
            }
            InstanceRequest::Watch { owner_scope } => {
                let record = self.visible(ctx, owner_scope.as_deref())?;
                let view = self.view_of(record);
                InstanceReply::Watch(view, self.deps.hub.subscribe(ctx.id().as_str()))
            }
            InstanceRequest::OpFinished(outcome) => {
                self.finish(ctx, outcome)?;
                InstanceReply::Ack
            }
            InstanceRequest::OpProgress(outcome) => {
                self.progress(ctx, outcome)?;
                InstanceReply::Ack
            }
            InstanceRequest::Reconciled(state) => {
                self.reconciled(ctx, state)?;
                InstanceReply::Ack
            }
            InstanceRequest::Target(notice) => self.target_notice(ctx, notice).await?,
            InstanceRequest::Wake(ticket) => self.wake(ctx, ticket).await?,
        })
    }
}

impl Object for Instance {
    const CLASS: &'static str = "instance";
    type Request = InstanceRequest;
    type Response = Result<InstanceReply, InstanceError>;
    type Deps = InstanceServices;

    fn migrations() -> &'static [Migration] {
        store::MIGRATIONS
    }

    async fn activate(ctx: &mut Ctx, deps: Arc<InstanceServices>) -> Result<Self, HandlerError> {
        let (record, ticket, link) = store::load(ctx)?;
        let mut instance = Instance {
            deps,
            record,
            ticket,
            link,
            outbox: Vec::new(),
        };
        let epoch = ctx.host().epoch();
        if instance
            .record
            .as_ref()
            .and_then(|r| r.op.as_ref())
            .is_some_and(|op| op.epoch != epoch)
        {
            // Its task died with the previous process.
            instance.abandon(ctx, AbandonReason::Interrupted).await?;
        }
        outbox::deliver(ctx.host(), std::mem::take(&mut instance.outbox));
        Ok(instance)
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: InstanceRequest) -> Self::Response {
        let reply = self.serve(ctx, request).await;
        outbox::deliver(ctx.host(), std::mem::take(&mut self.outbox));
        reply
    }

    async fn alarm(&mut self, ctx: &mut Ctx, alarm: AlarmInfo) -> Result<(), HandlerError> {
        let result = self.on_alarm(ctx, &alarm).await;
        outbox::deliver(ctx.host(), std::mem::take(&mut self.outbox));
        Ok(result?)
    }
}
