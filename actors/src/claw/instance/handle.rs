//! [`InstanceHandle`]: the typed way to call an instance. Every call to an instance — from the
//! registry, the outbox, the embedding API, the instance's own tasks — goes through it; the
//! reply matching lives here and nowhere else.

use tokio::sync::broadcast;

use super::Instance;
use super::api::{
    AdmissionState, InstanceError, InstanceEvent, InstanceReply, InstanceRequest, InstanceView,
    OpOutcome, OpRequest, ProvisionRequest,
};
use super::validate;
use crate::claw::fleet::api::{TargetNotice, TargetTicket};
use crate::provider::{MachineState, ProviderError};
use crate::{Host, Stub};

/// A typed handle to one instance. Cheap to create and clone; holds no resources.
#[derive(Debug, Clone)]
pub struct InstanceHandle {
    host: Host,
    stub: Stub<Instance>,
}

fn unexpected(reply: InstanceReply) -> InstanceError {
    InstanceError::Internal(format!("unexpected instance reply {reply:?}"))
}

impl InstanceHandle {
    /// A handle to instance `id` (validated; creates nothing).
    pub fn new(host: &Host, id: &str) -> Result<InstanceHandle, InstanceError> {
        validate::instance_id(id)?;
        Ok(InstanceHandle {
            host: host.clone(),
            stub: host.get::<Instance>(id)?,
        })
    }

    /// The instance's id.
    pub fn id(&self) -> &str {
        self.stub.id().as_str()
    }

    /// Whether the instance's object was ever created. Activates nothing.
    pub async fn exists(&self) -> Result<bool, InstanceError> {
        Ok(self.host.exists::<Instance>(self.id()).await?)
    }

    async fn call(&self, request: InstanceRequest) -> Result<InstanceReply, InstanceError> {
        self.stub.call(request).await?
    }

    /// Create the instance for an admitted provision; returns it and whether this call
    /// created it.
    pub async fn provision(
        &self,
        request: ProvisionRequest,
    ) -> Result<(InstanceView, bool), InstanceError> {
        match self.call(InstanceRequest::Provision(request)).await? {
            InstanceReply::Provisioned { view, created } => Ok((view, created)),
            other => Err(unexpected(other)),
        }
    }

    /// Where the provision of `reservation` stands; with `fence`, an instance that never
    /// received it refuses it for good.
    pub async fn admission(
        &self,
        reservation: u64,
        owner: &str,
        fence: bool,
    ) -> Result<AdmissionState, InstanceError> {
        let request = InstanceRequest::Admission {
            reservation,
            owner: owner.to_string(),
            fence,
        };
        expect_reply!(self.call(request).await?, InstanceReply::Admission)
    }

    /// The instance as `owner_scope` may see it (`None`: an admin).
    pub async fn get(&self, owner_scope: Option<String>) -> Result<InstanceView, InstanceError> {
        expect_reply!(
            self.call(InstanceRequest::Get { owner_scope }).await?,
            InstanceReply::View
        )
    }

    /// Start a user operation.
    pub async fn operate(
        &self,
        op: OpRequest,
        owner_scope: Option<String>,
    ) -> Result<InstanceView, InstanceError> {
        expect_reply!(
            self.call(InstanceRequest::Op { op, owner_scope }).await?,
            InstanceReply::View
        )
    }

    /// Up to `limit` events after `after` (exclusive), oldest first.
    pub async fn events(
        &self,
        after: i64,
        limit: usize,
        owner_scope: Option<String>,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        let request = InstanceRequest::Events {
            after,
            limit,
            owner_scope,
        };
        expect_reply!(self.call(request).await?, InstanceReply::Events)
    }

    /// The current view and a subscription to every later event.
    pub async fn watch(
        &self,
        owner_scope: Option<String>,
    ) -> Result<(InstanceView, broadcast::Receiver<InstanceEvent>), InstanceError> {
        match self.call(InstanceRequest::Watch { owner_scope }).await? {
            InstanceReply::Watch(view, events) => Ok((view, events)),
            other => Err(unexpected(other)),
        }
    }

    /// Tell the instance about one of its targets.
    pub async fn target(&self, notice: TargetNotice) -> Result<(), InstanceError> {
        self.call(InstanceRequest::Target(notice)).await.map(drop)
    }

    /// Offer a free slot for `ticket`; returns whether the instance asked the fleet (claimed
    /// or skipped).
    pub async fn wake(&self, ticket: TargetTicket) -> Result<bool, InstanceError> {
        expect_reply!(
            self.call(InstanceRequest::Wake(ticket)).await?,
            InstanceReply::Woken
        )
    }

    /// The instance's provider task finished.
    pub(crate) async fn op_finished(&self, outcome: OpOutcome) -> Result<(), InstanceError> {
        self.call(InstanceRequest::OpFinished(outcome))
            .await
            .map(drop)
    }

    /// The instance's provision task created infrastructure.
    pub(crate) async fn op_progress(&self, outcome: OpOutcome) -> Result<(), InstanceError> {
        self.call(InstanceRequest::OpProgress(outcome))
            .await
            .map(drop)
    }

    /// The instance's reconcile check came back.
    pub(crate) async fn reconciled(
        &self,
        state: Result<MachineState, ProviderError>,
    ) -> Result<(), InstanceError> {
        self.call(InstanceRequest::Reconciled(state))
            .await
            .map(drop)
    }
}
