//! The embedding API for claw instances: provision, read, list, operate and watch, as a
//! [`Caller`] (an admin, or one owner who sees only its own instances).
//!
//! Every method validates its input before anything is written, answers unknown or invisible
//! instances with `NotFound` without creating anything, and returns the domain
//! [`InstanceError`]; the gRPC `InstanceService` is a thin adapter over this type.
//!
//! # Provisioning
//! [`Instances::provision`] goes through the owner's registry (SPEC §5): `Begin` admits the
//! provision (or answers the idempotency key's earlier outcome, the owner's existing instance
//! at its limit, or a conflict), `MarkStarted` moves the reservation to `provider_started` —
//! only the call that made that move goes on — and the instance's `Provision` creates the
//! instance and starts its provider work. The instance reports completion or failure to the
//! registry itself. A retry with the same key resumes a provision a crash interrupted at
//! any step; the steps are conditional, so resuming twice creates one instance.

use futures::StreamExt as _;
use tokio::sync::broadcast;

use clawdo_actors::Host;
use clawdo_actors::claw::crashpoint;
use clawdo_actors::claw::instance::{
    Instance, InstanceError, InstanceEvent, InstanceHandle, InstanceServices, InstanceView,
    OpRequest, ProvisionRequest, Status, validate,
};
use clawdo_actors::claw::registry::{
    BeginOutcome, BeginRequest, ConflictReason, RegistryError, RegistryHandle, Reservation,
    ReservationStatus,
};

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
    /// Idempotency key, unique per owner (`None`: a fresh random key, so the call is not
    /// retryable). A retry with the same key answers the same provision.
    pub idempotency_key: Option<String>,
}

/// What a provision answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The instance (status `provisioning` for a new one).
    pub instance: InstanceView,
    /// Whether this call created the instance. `false` for a retry of an earlier provision,
    /// and for an owner already at its instance limit (then `instance` is its existing one and
    /// no machine was made).
    pub created: bool,
    /// The registry's reservation of this provision (`None` when the owner was at its limit).
    pub reservation: Option<Reservation>,
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
    /// The instance class's dependencies (the default image of a provision).
    services: std::sync::Arc<InstanceServices>,
}

/// A registry error as the instance API reports it.
fn registry_error(e: RegistryError) -> InstanceError {
    match e {
        RegistryError::KeyReused(key) => InstanceError::IdempotencyKeyReused(key),
        RegistryError::InstanceExists(id) => InstanceError::AlreadyExists(id),
        RegistryError::UnknownReservation(id) => {
            InstanceError::NotFound(format!("reservation {id}"))
        }
        RegistryError::Internal(detail) => InstanceError::Internal(detail),
        RegistryError::Fault(fault) => InstanceError::Fault(fault),
    }
}

/// What a fresh provision asks for, once validated.
#[derive(Debug)]
struct FreshProvision {
    owner: String,
    image_tag: String,
    pinned: bool,
}

impl Instances {
    /// Instance operations on `host` (which must have the instance and registry classes,
    /// the instance class registered with `services`).
    pub fn new(host: Host, services: std::sync::Arc<InstanceServices>) -> Instances {
        Instances { host, services }
    }

    /// Admit and start a fresh provision through the owner's registry (see the module docs).
    /// Returns at once with status `provisioning`; watch or poll for `running`.
    ///
    /// Errors: `ProvisionInProgress` / `ProvisionCompletionPending` when another provision of
    /// the owner is unresolved, `ProvisionReleased` when this key's provision ended without an
    /// instance, `IdempotencyKeyReused` when the key was used for a different request,
    /// `AlreadyExists` for an instance id in use, and invalid input.
    pub async fn provision(
        &self,
        caller: &Caller,
        spec: ProvisionSpec,
    ) -> Result<Provisioned, InstanceError> {
        validate::owner(&spec.owner)?;
        if let Caller::Owner(own) = caller
            && *own != spec.owner
        {
            return Err(InstanceError::PermissionDenied(format!(
                "an owner token for {own} cannot provision for {}",
                spec.owner
            )));
        }
        if let Some(tag) = &spec.image_tag {
            validate::image_tag(tag)?;
        }
        if let Some(id) = &spec.instance_id {
            validate::instance_id(id)?;
        }
        let idempotency_key = match spec.idempotency_key {
            Some(key) => {
                validate::idempotency_key(&key)?;
                key
            }
            None => format!("auto-{:032x}", rand::random::<u128>()),
        };
        let fingerprint = format!(
            "image={};pinned={};id={}",
            spec.image_tag.as_deref().unwrap_or("<default>"),
            spec.pinned,
            spec.instance_id.as_deref().unwrap_or("<generated>")
        );
        let image_tag = spec
            .image_tag
            .unwrap_or_else(|| self.services.config.default_image.clone());
        let instance_id = spec
            .instance_id
            .unwrap_or_else(|| format!("inst-{:016x}", rand::random::<u64>()));
        let begin = BeginRequest {
            idempotency_key,
            fingerprint,
            instance_id,
        };
        let outcome = self
            .registry(&spec.owner)?
            .begin(begin)
            .await
            .map_err(registry_error)?;
        let fresh = FreshProvision {
            owner: spec.owner,
            image_tag,
            pinned: spec.pinned,
        };
        match outcome {
            BeginOutcome::Admitted(r) | BeginOutcome::Existing(r) => self.advance(&fresh, r).await,
            BeginOutcome::AtLimit { instance_id, .. } => Ok(Provisioned {
                instance: self.get(&Caller::Admin, &instance_id).await?,
                created: false,
                reservation: None,
            }),
            BeginOutcome::Conflict {
                reason,
                reservation,
            } => Err(match reason {
                ConflictReason::InProgress => InstanceError::ProvisionInProgress {
                    owner: fresh.owner,
                    instance_id: reservation.instance_id,
                },
                ConflictReason::CompletionPending => InstanceError::ProvisionCompletionPending {
                    owner: fresh.owner,
                    instance_id: reservation.instance_id,
                },
            }),
        }
    }

    /// Take reservation `r` as far as this call may: the winner of `admitted →
    /// provider_started` (or anyone at `provider_started`, which the instance makes
    /// idempotent) asks the instance to provision; a settled reservation answers its outcome.
    async fn advance(
        &self,
        fresh: &FreshProvision,
        mut r: Reservation,
    ) -> Result<Provisioned, InstanceError> {
        if r.status == ReservationStatus::Admitted {
            let (won, reservation) = self
                .registry(&fresh.owner)?
                .mark_started(r.id)
                .await
                .map_err(registry_error)?;
            r = reservation;
            if won {
                crashpoint::reached(crashpoint::PROVIDER_STARTED);
            }
        }
        match r.status {
            ReservationStatus::ProviderStarted => self.create(fresh, r).await,
            ReservationStatus::Completed | ReservationStatus::FailedRequiresReconciliation => {
                Ok(Provisioned {
                    instance: self.get(&Caller::Admin, &r.instance_id).await?,
                    created: false,
                    reservation: Some(r),
                })
            }
            ReservationStatus::Released => Err(InstanceError::ProvisionReleased {
                instance_id: r.instance_id,
                error: r.error.unwrap_or_default(),
            }),
            // Lost the move to `provider_started` to a call that is still on its way.
            ReservationStatus::Admitted => Err(InstanceError::ProvisionInProgress {
                owner: fresh.owner.clone(),
                instance_id: r.instance_id,
            }),
        }
    }

    /// The instance side of reservation `r` (status `provider_started`).
    async fn create(
        &self,
        fresh: &FreshProvision,
        r: Reservation,
    ) -> Result<Provisioned, InstanceError> {
        let request = ProvisionRequest {
            owner: fresh.owner.clone(),
            image_tag: fresh.image_tag.clone(),
            pinned: fresh.pinned,
            reservation: r.id,
        };
        match self.instance(&r.instance_id)?.provision(request).await {
            Ok((view, _)) if view.status == Status::Destroyed => {
                // Fenced by the registry's alarm before it arrived.
                Err(InstanceError::ProvisionReleased {
                    instance_id: r.instance_id,
                    error: view.reason,
                })
            }
            Ok((view, created)) => Ok(Provisioned {
                instance: view,
                created,
                reservation: Some(r),
            }),
            Err(InstanceError::AlreadyExists(id)) => {
                // The id belongs to an instance this reservation did not create: nothing was
                // built, so the reservation is released at once.
                let error = format!("instance id {id} is already in use");
                self.registry(&fresh.owner)?
                    .fail(r.id, &id, false, &error)
                    .await
                    .map_err(registry_error)?;
                Err(InstanceError::AlreadyExists(id))
            }
            Err(e) => Err(e),
        }
    }

    /// A reservation of `owner`'s registry.
    pub async fn reservation(&self, owner: &str, id: u64) -> Result<Reservation, InstanceError> {
        validate::owner(owner)?;
        self.registry(owner)?
            .reservation(id)
            .await
            .map_err(registry_error)
    }

    /// Read one instance.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<InstanceView, InstanceError> {
        self.existing(id).await?.get(caller.scope()).await
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
            Some(owner) => self
                .registry(owner)?
                .routes(after.map(str::to_string), limit)
                .await
                .map_err(registry_error)?,
            None => self
                .host
                .list_ids::<Instance>(after, limit)
                .await?
                .into_iter()
                .map(|id| id.to_string())
                .collect(),
        };
        let next = (ids.len() == limit).then(|| ids.last().cloned()).flatten();
        let scope = caller.scope();
        let views: Vec<Result<InstanceView, InstanceError>> = futures::stream::iter(ids)
            .map(|id| {
                let scope = scope.clone();
                async move { self.instance(&id)?.get(scope).await }
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
        self.existing(id).await?.watch(caller.scope()).await
    }

    /// Up to `limit` events after `after` (exclusive), oldest first.
    pub async fn events(
        &self,
        caller: &Caller,
        id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InstanceEvent>, InstanceError> {
        self.existing(id)
            .await?
            .events(after, limit.clamp(1, MAX_PAGE), caller.scope())
            .await
    }

    async fn op(
        &self,
        caller: &Caller,
        id: &str,
        op: OpRequest,
    ) -> Result<InstanceView, InstanceError> {
        self.existing(id).await?.operate(op, caller.scope()).await
    }

    /// The handle of instance `id` if it was ever created (`NotFound` otherwise, for an
    /// invalid id too), without creating anything.
    async fn existing(&self, id: &str) -> Result<InstanceHandle, InstanceError> {
        let instance = self.instance(id)?;
        if instance.exists().await? {
            Ok(instance)
        } else {
            Err(InstanceError::NotFound(id.to_string()))
        }
    }

    fn instance(&self, id: &str) -> Result<InstanceHandle, InstanceError> {
        InstanceHandle::new(&self.host, id)
    }

    fn registry(&self, owner: &str) -> Result<RegistryHandle, InstanceError> {
        RegistryHandle::new(&self.host, owner).map_err(registry_error)
    }
}
