//! The `registry` object class: one object per owner key (`user:<id>` / `org:<id>`). It owns
//! the owner's instance routes and admits fresh provisions (SPEC §5).
//!
//! A fresh provision goes `Begin` (admit or refuse) → `MarkStarted` → the instance's own
//! `Provision` → the instance reports `Complete` or `Fail` (a notice, after its commit). The
//! table `provision_reservations` has a partial unique index that allows one unresolved
//! (`admitted`, `provider_started`, `failed_requires_reconciliation`) reservation per owner, so
//! two fresh provisions of one owner cannot both be admitted whatever the code above does.
//! The alarm (timer `sweep`) resolves what reports were lost (see `sweep`).
//!
//! # Call direction
//! The registry is the top class: its handlers may await an instance (admission questions,
//! reads, a cleanup destroy) through [`InstanceHandle`](crate::claw::instance::InstanceHandle);
//! an instance never awaits its registry, it reports with a notice. So the two never wait on
//! each other.
//!
//! # Layout
//! - [`api`]: requests, replies, reservations, [`RegistryError`].
//! - [`handle`]: [`RegistryHandle`], the typed way to call a registry.
//! - [`config`]: [`RegistryConfig`] (the class's dependencies).
//! - `store`: the SQL.
//! - [`admission`]: `Begin`, `MarkStarted`, the reports, completion repair, fencing.
//! - [`sweep`]: the alarm's pure decision and its pass.

pub mod admission;
pub mod api;
pub mod config;
pub mod handle;
mod store;
pub mod sweep;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use clawdo_storage::Migration;

use crate::claw::crashpoint;
use crate::object::{AlarmInfo, Ctx, HandlerError, Object};

pub use api::{
    BeginOutcome, BeginRequest, Completion, ConflictReason, RegistryError, RegistryReply,
    RegistryRequest, ReleaseReason, Reservation, ReservationStatus,
};
pub use config::RegistryConfig;
pub use handle::RegistryHandle;

/// The registry's alarm timer.
const TIMER_SWEEP: &str = "sweep";

/// The registry object.
#[derive(Debug)]
pub struct Registry {
    config: Arc<RegistryConfig>,
}

impl Registry {
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
            RegistryRequest::Reservation(id) => {
                RegistryReply::Reservation(store::load(ctx.store().conn()?, id)?)
            }
            RegistryRequest::ListRoutes { after, limit } => {
                let conn = ctx.store().conn()?;
                RegistryReply::Routes(store::list_routes(conn, after.as_deref(), limit)?)
            }
        })
    }
}

impl Object for Registry {
    const CLASS: &'static str = "registry";
    type Request = RegistryRequest;
    type Response = Result<RegistryReply, RegistryError>;
    type Deps = RegistryConfig;

    fn migrations() -> &'static [Migration] {
        store::MIGRATIONS
    }

    async fn activate(_ctx: &mut Ctx, config: Arc<RegistryConfig>) -> Result<Self, HandlerError> {
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
