//! [`RegistryHandle`]: the typed way to call an owner's registry (the embedding API's
//! provisions, the outbox's reports from instances). The reply matching lives here.

use super::Registry;
use super::api::{
    BeginOutcome, BeginRequest, Completion, RegistryError, RegistryReply, RegistryRequest,
    Reservation,
};
use crate::{Host, Stub};

/// A typed handle to one owner's registry. Cheap to create and clone; holds no resources.
#[derive(Debug, Clone)]
pub struct RegistryHandle {
    stub: Stub<Registry>,
}

fn unexpected(reply: RegistryReply) -> RegistryError {
    RegistryError::Internal(format!("unexpected registry reply {reply:?}"))
}

impl RegistryHandle {
    /// A handle to the registry of `owner` (an owner key; the caller validated it).
    pub fn new(host: &Host, owner: &str) -> Result<RegistryHandle, RegistryError> {
        Ok(RegistryHandle {
            stub: host.get::<Registry>(owner)?,
        })
    }

    async fn call(&self, request: RegistryRequest) -> Result<RegistryReply, RegistryError> {
        self.stub.call(request).await?
    }

    /// Admit a fresh provision or say why not.
    pub async fn begin(&self, request: BeginRequest) -> Result<BeginOutcome, RegistryError> {
        expect_reply!(
            self.call(RegistryRequest::Begin(request)).await?,
            RegistryReply::Begun
        )
    }

    /// `admitted → provider_started`: whether this call made the move, and the reservation.
    pub async fn mark_started(&self, id: u64) -> Result<(bool, Reservation), RegistryError> {
        match self.call(RegistryRequest::MarkStarted(id)).await? {
            RegistryReply::Started { won, reservation } => Ok((won, reservation)),
            other => Err(unexpected(other)),
        }
    }

    /// The instance of reservation `reservation` was provisioned.
    pub async fn complete(
        &self,
        reservation: u64,
        instance_id: &str,
    ) -> Result<Completion, RegistryError> {
        let request = RegistryRequest::Complete {
            reservation,
            instance_id: instance_id.to_owned(),
        };
        expect_reply!(self.call(request).await?, RegistryReply::Completion)
    }

    /// The provision of `reservation` failed.
    pub async fn fail(
        &self,
        reservation: u64,
        instance_id: &str,
        infra_may_exist: bool,
        error: &str,
    ) -> Result<(), RegistryError> {
        let request = RegistryRequest::Fail {
            reservation,
            instance_id: instance_id.to_owned(),
            infra_may_exist,
            error: error.to_owned(),
        };
        self.call(request).await.map(drop)
    }

    /// The instance was destroyed (destroy fencing).
    pub async fn instance_destroyed(&self, instance_id: &str) -> Result<(), RegistryError> {
        self.call(RegistryRequest::InstanceDestroyed(instance_id.to_owned()))
            .await
            .map(drop)
    }

    /// Reservation `id`.
    pub async fn reservation(&self, id: u64) -> Result<Reservation, RegistryError> {
        expect_reply!(
            self.call(RegistryRequest::Reservation(id)).await?,
            RegistryReply::Reservation
        )
    }

    /// Up to `limit` routed instance ids after `after`, ascending.
    pub async fn routes(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<String>, RegistryError> {
        match self
            .call(RegistryRequest::ListRoutes { after, limit })
            .await?
        {
            RegistryReply::Routes(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }
}
