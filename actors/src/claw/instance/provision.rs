//! An instance's fresh provision (SPEC §5): creating the instance for a reservation its
//! registry admitted, and answering the registry's questions about where that provision
//! stands (with fencing: an instance the provision never reached can be made to refuse it).
//! How a provision ends reaches the registry as a notice, after the commit that settles it.

use super::Instance;
use super::api::{AdmissionState, InstanceError, InstanceReply, ProvisionRequest};
use super::lifecycle;
use super::procedures::{op_task_key, spawn_op};
use super::validate;
use crate::object::Ctx;

impl Instance {
    /// Create the instance and start its provider work; a repeat for the same reservation
    /// answers the instance as it stands.
    pub(super) fn provision(
        &mut self,
        ctx: &mut Ctx,
        request: ProvisionRequest,
    ) -> Result<InstanceReply, InstanceError> {
        validate::owner(&request.owner)?;
        validate::image_tag(&request.image_tag)?;
        if let Some(record) = &self.record {
            return match &self.ticket {
                Some(t)
                    if t.reservation == request.reservation && record.owner == request.owner =>
                {
                    Ok(InstanceReply::Provisioned {
                        view: self.view_of(record),
                        created: false,
                    })
                }
                _ => Err(InstanceError::AlreadyExists(record.id.clone())),
            };
        }
        let id = ctx.id().to_string();
        let (transition, op) = lifecycle::provision(&id, &request, self.op_start(ctx))?;
        self.apply(ctx, transition)?;
        let record = self.committed(ctx)?;
        let key = op_task_key(&id, &self.link, &op);
        spawn_op(ctx.host(), &self.deps, record.clone(), op, key, false);
        crate::crashpoint::reached(crate::crashpoint::INSTANCE_PROVISIONING);
        Ok(InstanceReply::Provisioned {
            view: self.view_of(record),
            created: true,
        })
    }

    /// Where the provision of `reservation` stands. With `fence`, an instance without a
    /// record writes a destroyed tombstone first, so the provision is refused if it arrives.
    pub(super) fn admission(
        &mut self,
        ctx: &mut Ctx,
        reservation: u64,
        owner: &str,
        fence: bool,
    ) -> Result<AdmissionState, InstanceError> {
        if self.record.is_none() && fence {
            let id = ctx.id().to_string();
            let now = ctx.now();
            self.apply(ctx, lifecycle::fence(&id, owner, reservation, now))?;
            return Ok(AdmissionState::Absent);
        }
        Ok(lifecycle::admission_state(
            self.record.as_ref(),
            self.ticket.as_ref(),
            reservation,
        ))
    }
}
