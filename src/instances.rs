//! The embedding API for claw instances: provision, read, list, operate and watch, as a
//! [`Caller`] (an admin, or one owner who sees only its own instances).
//!
//! Every method validates its input before anything is written, answers unknown or invisible
//! instances with `NotFound` without creating anything, and returns the domain
//! [`InstanceError`]; the gRPC `InstanceService` is a thin adapter over this type.

use futures::StreamExt as _;
use tokio::sync::broadcast;

use clawdo_actors::Host;
use clawdo_actors::instance::{
    Instance, InstanceError, InstanceEvent, InstanceReply, InstanceRequest, InstanceServices,
    InstanceView, OpRequest, Status, validate,
};
use clawdo_actors::registry::{Registry, RegistryReply, RegistryRequest};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Sees and changes every instance.
    Admin,
    /// Sees and changes only the instances of this owner key.
    Owner(String),
}

impl Caller {
    fn scope(&self) -> Option<String> {
        match self {
            Caller::Admin => None,
            Caller::Owner(owner) => Some(owner.clone()),
        }
    }
}

/// A new instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisionSpec {
    /// Owner key (`user:<id>` or `org:<id>`).
    pub owner: String,
    /// Image tag (`None`: the configured default).
    pub image_tag: Option<String>,
    /// Pin the image against fleet version changes.
    pub pinned: bool,
    /// Instance id (`None`: generated, `inst-` + 16 hex digits).
    pub instance_id: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Instances, by id.
    pub instances: Vec<InstanceView>,
    /// Cursor for the next page (`None`: this was the last).
    pub next: Option<String>,
}

/// Largest page a listing returns.
pub const MAX_PAGE: usize = 500;

/// Instance operations over a runtime's host.
#[derive(Debug, Clone)]
pub struct Instances {
    host: Host,
}

fn internal(e: impl std::fmt::Display) -> InstanceError {
    InstanceError::Internal(e.to_string())
}

impl Instances {
    /// Instance operations on `host` (which must have the instance and registry classes and
    /// [`InstanceServices`]).
    pub fn new(host: Host) -> Instances {
        Instances { host }
    }

    /// Create an instance and start provisioning its machine. Returns at once with status
    /// `provisioning`; watch or poll for `running`.
    pub async fn provision(
        &self,
        caller: &Caller,
        spec: ProvisionSpec,
    ) -> Result<InstanceView, InstanceError> {
        validate::owner(&spec.owner)?;
        if let Caller::Owner(own) = caller
            && *own != spec.owner
        {
            return Err(InstanceError::PermissionDenied(format!(
                "an owner token for {own} cannot provision for {}",
                spec.owner
            )));
        }
        let services = self.services()?;
        let image_tag = spec
            .image_tag
            .unwrap_or_else(|| services.config.default_image.clone());
        validate::image_tag(&image_tag)?;
        let id = match spec.instance_id {
            Some(id) => {
                validate::instance_id(&id)?;
                id
            }
            None => format!("inst-{:016x}", rand::random::<u64>()),
        };
        if self.host.exists::<Instance>(&id).await.map_err(internal)? {
            return Err(InstanceError::AlreadyExists(id));
        }
        match self
            .registry(&spec.owner, RegistryRequest::AddRoute(id.clone()))
            .await?
        {
            RegistryReply::Ok => {}
            other => return Err(internal(format!("registry: {other:?}"))),
        }
        let reply = self
            .call(
                &id,
                InstanceRequest::Provision {
                    owner: spec.owner,
                    image_tag,
                    pinned: spec.pinned,
                },
            )
            .await?;
        view(reply)
    }

    /// Read one instance.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<InstanceView, InstanceError> {
        self.existing(id).await?;
        view(
            self.call(
                id,
                InstanceRequest::Get {
                    owner_scope: caller.scope(),
                },
            )
            .await?,
        )
    }

    /// List instances, by id, `limit` at most ([`MAX_PAGE`] cap), after the cursor `after`.
    /// An owner caller lists its own; an admin lists one owner's (`owner`) or every instance.
    /// Destroyed instances are not listed.
    pub async fn list(
        &self,
        caller: &Caller,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, InstanceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        if let Some(owner) = owner {
            validate::owner(owner)?;
        }
        if let Some(after) = after {
            validate::instance_id(after)?;
        }
        let owner = match (caller, owner) {
            (Caller::Owner(own), Some(asked)) if own != asked => {
                return Ok(Page {
                    instances: Vec::new(),
                    next: None,
                });
            }
            (Caller::Owner(own), _) => Some(own.clone()),
            (Caller::Admin, asked) => asked.map(str::to_string),
        };
        let ids: Vec<String> = match &owner {
            Some(owner) => match self
                .registry(
                    owner,
                    RegistryRequest::ListRoutes {
                        after: after.map(str::to_string),
                        limit,
                    },
                )
                .await?
            {
                RegistryReply::Routes(ids) => ids,
                other => return Err(internal(format!("registry: {other:?}"))),
            },
            None => self
                .host
                .list_ids::<Instance>(after, limit)
                .await
                .map_err(internal)?
                .into_iter()
                .map(|id| id.to_string())
                .collect(),
        };
        let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
        let scope = caller.scope();
        let views: Vec<Result<InstanceView, InstanceError>> = futures::stream::iter(ids)
            .map(|id| {
                let scope = scope.clone();
                async move {
                    view(
                        self.call(&id, InstanceRequest::Get { owner_scope: scope })
                            .await?,
                    )
                }
            })
            .buffered(32)
            .collect()
            .await;
        let mut instances = Vec::new();
        for v in views {
            match v {
                Ok(v) if v.status != Status::Destroyed => instances.push(v),
                Ok(_) | Err(InstanceError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Page { instances, next })
    }

    /// Start a stopped instance.
    pub async fn start(&self, caller: &Caller, id: &str) -> Result<InstanceView, InstanceError> {
        self.op(caller, id, OpRequest::Start).await
    }

    /// Stop a running instance.
    pub async fn stop(&self, caller: &Caller, id: &str) -> Result<InstanceView, InstanceError> {
        self.op(caller, id, OpRequest::Stop).await
    }

    /// Restart a running instance.
    pub async fn restart(&self, caller: &Caller, id: &str) -> Result<InstanceView, InstanceError> {
        self.op(caller, id, OpRequest::Restart).await
    }

    /// Move an instance to another image; `pin` sets the pin when given.
    pub async fn change_version(
        &self,
        caller: &Caller,
        id: &str,
        image_tag: &str,
        pin: Option<bool>,
    ) -> Result<InstanceView, InstanceError> {
        validate::image_tag(image_tag)?;
        self.op(
            caller,
            id,
            OpRequest::ChangeVersion {
                image_tag: image_tag.to_string(),
                pin,
            },
        )
        .await
    }

    /// Destroy an instance's machine and volume.
    pub async fn destroy(&self, caller: &Caller, id: &str) -> Result<InstanceView, InstanceError> {
        self.op(caller, id, OpRequest::Destroy).await
    }

    /// The current view and a subscription to every later event of the instance.
    pub async fn watch(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<(InstanceView, broadcast::Receiver<InstanceEvent>), InstanceError> {
        self.existing(id).await?;
        match self
            .call(
                id,
                InstanceRequest::Watch {
                    owner_scope: caller.scope(),
                },
            )
            .await?
        {
            InstanceReply::Watch(view, events) => Ok((view, events)),
            other => Err(internal(format!("unexpected reply {other:?}"))),
        }
    }

    /// Up to `limit` events after `after` (exclusive), oldest first.
    pub async fn events(
        &self,
        caller: &Caller,
        id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        self.existing(id).await?;
        let request = InstanceRequest::Events {
            after,
            limit: limit.clamp(1, MAX_PAGE),
            owner_scope: caller.scope(),
        };
        match self.call(id, request).await? {
            InstanceReply::Events(events) => Ok(events),
            other => Err(internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn op(
        &self,
        caller: &Caller,
        id: &str,
        op: OpRequest,
    ) -> Result<InstanceView, InstanceError> {
        self.existing(id).await?;
        view(
            self.call(
                id,
                InstanceRequest::Op {
                    op,
                    owner_scope: caller.scope(),
                },
            )
            .await?,
        )
    }

    /// `NotFound` for an invalid or never-created id, without creating anything.
    async fn existing(&self, id: &str) -> Result<(), InstanceError> {
        validate::instance_id(id)?;
        if self.host.exists::<Instance>(id).await.map_err(internal)? {
            Ok(())
        } else {
            Err(InstanceError::NotFound(id.to_string()))
        }
    }

    async fn call(
        &self,
        id: &str,
        request: InstanceRequest,
    ) -> Result<InstanceReply, InstanceError> {
        self.host
            .get::<Instance>(id)
            .map_err(internal)?
            .call(request)
            .await
            .map_err(internal)?
    }

    async fn registry(
        &self,
        owner: &str,
        request: RegistryRequest,
    ) -> Result<RegistryReply, InstanceError> {
        self.host
            .get::<Registry>(owner)
            .map_err(internal)?
            .call(request)
            .await
            .map_err(internal)
    }

    fn services(&self) -> Result<std::sync::Arc<InstanceServices>, InstanceError> {
        self.host
            .service::<InstanceServices>()
            .ok_or_else(|| internal("the runtime has no instance services"))
    }
}

fn view(reply: InstanceReply) -> Result<InstanceView, InstanceError> {
    match reply {
        InstanceReply::View(v) => Ok(v),
        other => Err(internal(format!("unexpected reply {other:?}"))),
    }
}
