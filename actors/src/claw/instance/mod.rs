//! The `instance` object class: one claw instance and its machine's lifecycle (SPEC §4).
//!
//! Operations never block the mailbox on the provider: a mutating call validates, commits the
//! intent (busy status, operation id, lease timer) and returns at once; a task makes the
//! provider calls and reports back with [`InstanceRequest::OpFinished`]. Reads stay answerable
//! meanwhile. An operation ends when its outcome arrives, when its lease expires (the task is
//! aborted and the instance returns to `stopped` with a reason), or, after a restart of the
//! process, at activation (its task died with the old process). A periodic reconcile compares
//! the provider's view with the desired state and records drift.
//!
//! # Layout
//! - [`model`]: statuses, the record, the view, events and errors.
//! - [`validate`]: input checks used by every entry point.
//! - [`hub`]: fan-out of events to watchers.
//! - [`fleet`]: the instance's side of scheduled admin actions (apply path, banner, repair).

pub mod fleet;
pub mod hub;
pub mod model;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::params;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::object::{AlarmInfo, Ctx, HandlerError, Object};
use crate::provider::{MachineSpec, MachineState, Priority, Provider, ProviderError, VolumeSource};
use crate::registry::{Registry, RegistryRequest};
use crate::{Host, UnixMillis};

pub use hub::EventHub;
pub use model::{
    AdmissionState, Desired, InFlight, InstanceError, InstanceEvent, InstanceView, OpKind,
    OpOutcome, ProvisionTicket, Record, Status, TicketOutcome,
};

const MIGRATIONS: &[Migration] = &[Migration {
    name: "events",
    sql: include_str!("schema.sql"),
}];

const RECORD_KEY: &str = "record";
const TICKET_KEY: &str = "provision";
const TIMER_RECONCILE: &str = "reconcile";
const TIMER_LEASE: &str = "op-lease";

/// Knobs of the instance class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct InstanceConfig {
    /// Reconcile period while running. Default 5 min.
    #[serde(with = "crate::config::serde_secs")]
    pub reconcile_running: Duration,
    /// Reconcile period while stopped. Default 30 min.
    #[serde(with = "crate::config::serde_secs")]
    pub reconcile_stopped: Duration,
    /// How long an operation may run before it is given up. Default 10 min.
    #[serde(with = "crate::config::serde_secs")]
    pub op_lease: Duration,
    /// Image tag of a provision that names none. Default `claw:latest`.
    pub default_image: String,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            reconcile_running: Duration::from_secs(300),
            reconcile_stopped: Duration::from_secs(1_800),
            op_lease: Duration::from_secs(600),
            default_image: "claw:latest".into(),
        }
    }
}

/// What instances share: the provider, the event hub and the configuration. Given to the host
/// with [`crate::HostBuilder::service`].
#[derive(Debug)]
pub struct InstanceServices {
    /// The machine provider (with its limiter).
    pub provider: Provider,
    /// Watchers' subscriptions.
    pub hub: EventHub,
    /// Configuration.
    pub config: InstanceConfig,
}

/// Requests an instance understands.
#[derive(Debug)]
pub enum InstanceRequest {
    /// Create the instance and provision its machine, for the registry's reservation
    /// `reservation` (admitted and marked `provider_started`). Repeating it for the same
    /// reservation answers the instance as it stands (`created: false`).
    Provision {
        /// Owner key.
        owner: String,
        /// Image tag.
        image_tag: String,
        /// Pin the image.
        pinned: bool,
        /// The owner registry's reservation id.
        reservation: u64,
    },
    /// The registry asks where the provision of `reservation` stands (internal). With
    /// `fence`, an instance without a record writes a destroyed tombstone first, so a
    /// provision that arrives later is refused.
    Admission {
        /// Reservation id.
        reservation: u64,
        /// The reservation's owner (for the tombstone).
        owner: String,
        /// Refuse the provision from now on if it has not arrived.
        fence: bool,
    },
    /// Read it. With `owner_scope`, an instance of another owner is `NotFound`.
    Get {
        /// Only an instance of this owner is visible.
        owner_scope: Option<String>,
    },
    /// Start, stop, restart, change version or destroy.
    Op {
        /// Which operation.
        op: OpRequest,
        /// Only an instance of this owner may be changed.
        owner_scope: Option<String>,
    },
    /// Events after `after` (exclusive), oldest first.
    Events {
        /// Cursor.
        after: i64,
        /// Page size.
        limit: usize,
        /// Only an instance of this owner is visible.
        owner_scope: Option<String>,
    },
    /// The current view and a subscription to every later event.
    Watch {
        /// Only an instance of this owner is visible.
        owner_scope: Option<String>,
    },
    /// A provider task finished (internal).
    OpFinished(OpOutcome),
    /// A provision task created infrastructure (internal; recorded before the next step).
    OpProgress(OpOutcome),
    /// A reconcile check finished (internal).
    Reconciled(Result<MachineState, ProviderError>),
    /// A message from the fleet about a scheduled target (internal).
    Fleet(fleet::FleetNotice),
}

/// A user operation on an existing instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpRequest {
    /// Start a stopped instance.
    Start,
    /// Stop a running instance.
    Stop,
    /// Restart a running instance.
    Restart,
    /// Move to another image; `pin` changes the pin when given.
    ChangeVersion {
        /// Target image tag.
        image_tag: String,
        /// New pin (`None`: unchanged).
        pin: Option<bool>,
    },
    /// Destroy machine and volume.
    Destroy,
}

impl OpRequest {
    fn kind(&self) -> OpKind {
        match self {
            OpRequest::Start => OpKind::Start,
            OpRequest::Stop => OpKind::Stop,
            OpRequest::Restart => OpKind::Restart,
            OpRequest::ChangeVersion { .. } => OpKind::ChangeVersion,
            OpRequest::Destroy => OpKind::Destroy,
        }
    }
}

/// Replies of an instance.
#[derive(Debug)]
pub enum InstanceReply {
    /// The instance after the request.
    View(InstanceView),
    /// The answer to `Provision`.
    Provisioned {
        /// The instance.
        view: InstanceView,
        /// Whether this request created it.
        created: bool,
    },
    /// The answer to `Admission`.
    Admission(AdmissionState),
    /// A page of events.
    Events(Vec<InstanceEvent>),
    /// The current view and a live subscription.
    Watch(InstanceView, broadcast::Receiver<InstanceEvent>),
    /// Internal message applied.
    Ack,
    /// A fleet wake-up was answered: whether the instance asked the fleet (claimed or skipped).
    Fleet(bool),
}

/// The instance object.
pub struct Instance {
    services: Arc<InstanceServices>,
    record: Option<Record>,
    /// The fresh provision that created the instance.
    ticket: Option<ProvisionTicket>,
    /// The provider task of the operation in flight (this process only).
    task: Mutex<Option<AbortHandle>>,
    /// Scheduled-action state (its own KV key, not part of the record).
    fleet: fleet::FleetLink,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> InstanceError {
    InstanceError::Internal(e.to_string())
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Instance {
    fn visible(&self, owner_scope: Option<&str>, id: &str) -> Result<&Record, InstanceError> {
        match &self.record {
            Some(r) if owner_scope.is_none_or(|o| o == r.owner) => Ok(r),
            _ => Err(InstanceError::NotFound(id.to_string())),
        }
    }

    /// Persist `record` (with `events`) in one transaction, then publish the events.
    fn commit(
        &mut self,
        ctx: &mut Ctx,
        mut record: Record,
        events: Vec<(&'static str, String)>,
        timers: Timers,
    ) -> Result<(), InstanceError> {
        let now = ctx.now();
        record.updated_at = now;
        let status = record.status;
        let id = record.id.clone();
        let written = ctx
            .transact(|tx| {
                tx.kv_put(RECORD_KEY, &record)?;
                let mut written = Vec::new();
                for (kind, detail) in &events {
                    tx.execute(
                        "INSERT INTO events (at, kind, status, detail) VALUES (?1, ?2, ?3, ?4)",
                        params![now, kind, status.as_str(), detail],
                    )?;
                    written.push(InstanceEvent {
                        instance_id: id.clone(),
                        seq: tx.last_insert_rowid(),
                        at: now,
                        kind: (*kind).to_string(),
                        status,
                        detail: detail.clone(),
                    });
                }
                if let Some(ticket) = &timers.ticket {
                    tx.kv_put(TICKET_KEY, ticket)?;
                }
                match timers.lease {
                    Some(Some(at)) => tx.set_timer(TIMER_LEASE, at)?,
                    Some(None) => {
                        tx.cancel_timer(TIMER_LEASE)?;
                    }
                    None => {}
                }
                match timers.reconcile {
                    Some(Some(at)) => tx.set_timer(TIMER_RECONCILE, at)?,
                    Some(None) => {
                        tx.cancel_timer(TIMER_RECONCILE)?;
                    }
                    None => {}
                }
                Ok::<_, clawdo_storage::Error>(written)
            })
            .map_err(internal)?;
        for event in &written {
            tracing::info!(instance = %event.instance_id, kind = %event.kind,
                status = event.status.as_str(), detail = %event.detail, "instance event");
            self.services.hub.publish(event);
        }
        self.record = Some(record);
        if let Some(ticket) = timers.ticket {
            self.ticket = Some(ticket);
        }
        Ok(())
    }

    fn reconcile_at(&self, now: UnixMillis, status: Status) -> UnixMillis {
        let c = &self.services.config;
        now + millis(if status == Status::Running {
            c.reconcile_running
        } else {
            c.reconcile_stopped
        })
    }

    fn provision(
        &mut self,
        ctx: &mut Ctx,
        owner: String,
        image_tag: String,
        pinned: bool,
        reservation: u64,
    ) -> Result<InstanceReply, InstanceError> {
        validate::owner(&owner)?;
        validate::image_tag(&image_tag)?;
        if let Some(r) = &self.record {
            return match &self.ticket {
                Some(t) if t.reservation == reservation && r.owner == owner => {
                    Ok(InstanceReply::Provisioned {
                        view: InstanceView::from(r),
                        created: false,
                    })
                }
                _ => Err(InstanceError::AlreadyExists(r.id.clone())),
            };
        }
        let now = ctx.now();
        let id = ctx.id().to_string();
        let op = InFlight {
            id: 1,
            kind: OpKind::Provision,
            epoch: ctx.host().epoch(),
            lease_expires_at: now + millis(self.services.config.op_lease),
            image: None,
            pin: None,
            prior: Status::Provisioning,
        };
        let record = Record {
            sandbox_id: format!("sbx-{id}"),
            id,
            owner,
            image_tag,
            pinned,
            machine: None,
            volume: None,
            status: Status::Provisioning,
            reason: String::new(),
            desired: Desired::Running,
            created_at: now,
            updated_at: now,
            last_reconcile_at: None,
            next_reconcile_at: None,
            last_op_id: op.id,
            op: Some(op.clone()),
        };
        let lease = op.lease_expires_at;
        self.commit(
            ctx,
            record,
            vec![("instance.provision_started", String::new())],
            Timers {
                lease: Some(Some(lease)),
                reconcile: None,
                ticket: Some(ProvisionTicket {
                    reservation,
                    outcome: TicketOutcome::Pending,
                }),
            },
        )?;
        self.spawn_op(ctx.host(), op);
        crate::crashpoint::reached(crate::crashpoint::INSTANCE_PROVISIONING);
        Ok(InstanceReply::Provisioned {
            view: self.view()?,
            created: true,
        })
    }

    /// Where the provision of `reservation` stands (see [`AdmissionState`]).
    fn admission(
        &mut self,
        ctx: &mut Ctx,
        reservation: u64,
        owner: String,
        fence: bool,
    ) -> Result<AdmissionState, InstanceError> {
        let Some(record) = &self.record else {
            if fence {
                self.fence(ctx, reservation, owner)?;
            }
            return Ok(AdmissionState::Absent);
        };
        let Some(ticket) = self
            .ticket
            .as_ref()
            .filter(|t| t.reservation == reservation)
        else {
            return Ok(AdmissionState::Other);
        };
        let infra = record.machine.is_some() || record.volume.is_some();
        Ok(match (&record.op, &ticket.outcome) {
            _ if record.status == Status::Destroyed => AdmissionState::Destroyed,
            (Some(op), _) if op.kind == OpKind::Provision => AdmissionState::Provisioning { infra },
            (_, TicketOutcome::Succeeded) => AdmissionState::Complete,
            _ if record.status == Status::Running && record.machine.is_some() => {
                AdmissionState::Complete
            }
            (Some(_), _) => AdmissionState::Busy,
            (
                None,
                TicketOutcome::Failed {
                    infra_may_exist,
                    error,
                },
            ) => AdmissionState::Failed {
                infra_may_exist: *infra_may_exist,
                error: error.clone(),
            },
            (None, TicketOutcome::Pending) => AdmissionState::Failed {
                infra_may_exist: true,
                error: "the provision's outcome was lost".into(),
            },
        })
    }

    /// Write a destroyed tombstone for a provision that never arrived, so it never will.
    fn fence(
        &mut self,
        ctx: &mut Ctx,
        reservation: u64,
        owner: String,
    ) -> Result<(), InstanceError> {
        let now = ctx.now();
        let id = ctx.id().to_string();
        let reason = format!(
            "provision abandoned before it reached the instance (reservation {reservation})"
        );
        let record = Record {
            sandbox_id: format!("sbx-{id}"),
            id,
            owner,
            image_tag: String::new(),
            pinned: false,
            machine: None,
            volume: None,
            status: Status::Destroyed,
            reason: reason.clone(),
            desired: Desired::Destroyed,
            created_at: now,
            updated_at: now,
            last_reconcile_at: None,
            next_reconcile_at: None,
            last_op_id: 0,
            op: None,
        };
        self.commit(
            ctx,
            record,
            vec![("instance.provision_abandoned", reason.clone())],
            Timers {
                ticket: Some(ProvisionTicket {
                    reservation,
                    outcome: TicketOutcome::Failed {
                        infra_may_exist: false,
                        error: reason,
                    },
                }),
                ..Timers::default()
            },
        )
    }

    /// Report to the owner's registry, from a task (an instance never awaits its registry
    /// inside a handler; see [`crate::registry`]). A lost report is repaired by the
    /// registry's alarm.
    fn tell_registry(&self, ctx: &Ctx, request: RegistryRequest) {
        let Some(owner) = self.record.as_ref().map(|r| r.owner.clone()) else {
            return;
        };
        let host = ctx.host().clone();
        ctx.host().spawn(async move {
            let sent = match host.get::<Registry>(&owner) {
                Ok(stub) => stub.call(request).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                tracing::warn!(%owner, %error, "could not report to the registry");
            }
        });
    }

    /// Tell the registry how the provision of `ticket` ended.
    fn report_ticket(&self, ctx: &Ctx, id: &str, ticket: ProvisionTicket) {
        let request = match ticket.outcome {
            TicketOutcome::Pending => return,
            TicketOutcome::Succeeded => RegistryRequest::Complete {
                reservation: ticket.reservation,
                instance_id: id.to_string(),
            },
            TicketOutcome::Failed {
                infra_may_exist,
                error,
            } => RegistryRequest::Fail {
                reservation: ticket.reservation,
                instance_id: id.to_string(),
                infra_may_exist,
                error,
            },
        };
        self.tell_registry(ctx, request);
    }

    fn operate(
        &mut self,
        ctx: &mut Ctx,
        request: OpRequest,
    ) -> Result<InstanceView, InstanceError> {
        let id = ctx.id().to_string();
        let mut record = self
            .record
            .clone()
            .ok_or_else(|| InstanceError::NotFound(id.clone()))?;
        let kind = request.kind();
        if record.status == Status::Destroyed {
            return Err(InstanceError::Destroyed(id));
        }
        if record.status.is_busy() {
            return Err(InstanceError::Busy(record.status));
        }
        let allowed = match kind {
            OpKind::Start => record.status == Status::Stopped,
            OpKind::Stop | OpKind::Restart => record.status == Status::Running,
            OpKind::ChangeVersion | OpKind::Destroy => true,
            OpKind::Provision => false,
        };
        if !allowed {
            return Err(InstanceError::WrongStatus {
                op: kind,
                status: record.status,
            });
        }
        if record.machine.is_none()
            && matches!(kind, OpKind::Start | OpKind::Stop | OpKind::Restart)
        {
            return Err(InstanceError::WrongStatus {
                op: kind,
                status: record.status,
            });
        }
        let (image, pin) = match &request {
            OpRequest::ChangeVersion { image_tag, pin } => {
                validate::image_tag(image_tag)?;
                (Some(image_tag.clone()), *pin)
            }
            _ => (None, None),
        };
        let now = ctx.now();
        let op = InFlight {
            id: record.last_op_id + 1,
            kind,
            epoch: ctx.host().epoch(),
            lease_expires_at: now + millis(self.services.config.op_lease),
            image,
            pin,
            prior: record.status,
        };
        record.last_op_id = op.id;
        record.status = kind.status();
        record.reason = String::new();
        match kind {
            OpKind::Start | OpKind::Restart => record.desired = Desired::Running,
            OpKind::Stop => record.desired = Desired::Stopped,
            OpKind::Destroy => record.desired = Desired::Destroyed,
            OpKind::ChangeVersion | OpKind::Provision => {}
        }
        record.op = Some(op.clone());
        let detail = match &op.image {
            Some(image) => format!("{} -> {image}", record.image_tag),
            None => String::new(),
        };
        let event = match kind {
            OpKind::Start => "instance.start_requested",
            OpKind::Stop => "instance.stop_requested",
            OpKind::Restart => "instance.restart_requested",
            OpKind::ChangeVersion => "instance.version_change_requested",
            OpKind::Destroy => "instance.destroy_requested",
            OpKind::Provision => "instance.provision_started",
        };
        self.commit(
            ctx,
            record,
            vec![(event, detail)],
            Timers {
                lease: Some(Some(op.lease_expires_at)),
                reconcile: None,
                ticket: None,
            },
        )?;
        self.spawn_op(ctx.host(), op);
        self.view()
    }

    fn view(&self) -> Result<InstanceView, InstanceError> {
        self.record
            .as_ref()
            .map(|r| self.with_banner(InstanceView::from(r)))
            .ok_or_else(|| InstanceError::Internal("no record".into()))
    }

    /// Run the provider side of `op` as a task that reports back to this instance.
    fn spawn_op(&self, host: &Host, op: InFlight) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let provider = self.services.provider.clone();
        let host = host.clone();
        let reporter = host.clone();
        let task = host.spawn(async move {
            let outcome = run_op(&provider, &reporter, &record, &op).await;
            report(&reporter, &record.id, InstanceRequest::OpFinished(outcome)).await;
        });
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    fn finish(&mut self, ctx: &mut Ctx, outcome: OpOutcome) -> Result<(), InstanceError> {
        let Some(mut record) = self.record.clone() else {
            return Ok(());
        };
        let Some(op) = record.op.clone().filter(|op| op.id == outcome.op_id) else {
            tracing::debug!(instance = %record.id, op = outcome.op_id, "stale operation outcome ignored");
            return Ok(());
        };
        if outcome.machine.is_some() {
            record.machine = outcome.machine.clone();
        }
        if outcome.volume.is_some() {
            record.volume = outcome.volume.clone();
        }
        record.op = None;
        let (kind, detail) = match (&outcome.result, op.kind) {
            (Ok(()), OpKind::Provision) => {
                record.status = Status::Running;
                ("instance.provisioned", String::new())
            }
            (Ok(()), OpKind::Start | OpKind::Restart) => {
                record.status = Status::Running;
                (
                    if op.kind == OpKind::Start {
                        "instance.started"
                    } else {
                        "instance.restarted"
                    },
                    String::new(),
                )
            }
            (Ok(()), OpKind::Stop) => {
                record.status = Status::Stopped;
                ("instance.stopped", String::new())
            }
            (Ok(()), OpKind::ChangeVersion) => {
                let from = std::mem::take(&mut record.image_tag);
                record.image_tag = op.image.clone().unwrap_or_else(|| from.clone());
                if let Some(pin) = op.pin {
                    record.pinned = pin;
                }
                record.status = op.prior;
                (
                    "instance.version_changed",
                    format!("{from} -> {}", record.image_tag),
                )
            }
            (Ok(()), OpKind::Destroy) => {
                record.status = Status::Destroyed;
                ("instance.destroyed", String::new())
            }
            (Err(e), kind) => {
                let no_infra = record.machine.is_none() && record.volume.is_none();
                record.status = match kind {
                    // The machine was not stopped; it still runs as far as we know.
                    OpKind::Stop => Status::Running,
                    OpKind::ChangeVersion => op.prior,
                    // Nothing was built (an answered error means the call had no effect):
                    // the instance is over, and its reservation is released.
                    OpKind::Provision if no_infra => Status::Destroyed,
                    _ => Status::Stopped,
                };
                if kind == OpKind::Provision {
                    record.desired = if no_infra {
                        Desired::Destroyed
                    } else {
                        Desired::Stopped
                    };
                }
                record.reason = format!("{} failed: {e}", kind.as_str());
                ("instance.operation_failed", record.reason.clone())
            }
        };
        let now = ctx.now();
        let reconcile =
            (record.status != Status::Destroyed).then(|| self.reconcile_at(now, record.status));
        record.next_reconcile_at = reconcile;
        let events = vec![
            (kind, detail),
            (
                "instance.status_changed",
                record.status.as_str().to_string(),
            ),
        ];
        let infra_may_exist = record.machine.is_some() || record.volume.is_some();
        let ticket = self
            .ticket
            .clone()
            .filter(|_| op.kind == OpKind::Provision)
            .map(|t| ProvisionTicket {
                outcome: match &outcome.result {
                    Ok(()) => TicketOutcome::Succeeded,
                    Err(e) => TicketOutcome::Failed {
                        infra_may_exist,
                        error: format!("provision failed: {e}"),
                    },
                },
                ..t
            });
        let id = record.id.clone();
        let destroyed = record.status == Status::Destroyed;
        self.commit(
            ctx,
            record,
            events,
            Timers {
                lease: Some(None),
                reconcile: Some(reconcile),
                ticket: ticket.clone(),
            },
        )?;
        if let Some(ticket) = ticket {
            if ticket.outcome == TicketOutcome::Succeeded {
                crate::crashpoint::reached(crate::crashpoint::PROVISIONED);
            }
            // Also covers a provision that ended destroyed: its release removes the route.
            self.report_ticket(ctx, &id, ticket);
        } else if destroyed {
            self.tell_registry(ctx, RegistryRequest::InstanceDestroyed(id));
        }
        self.fleet_op_ended(ctx, op.id, fleet::outcome_reason(&outcome), false)
    }

    /// Record infrastructure a provision task created, before it goes on.
    fn progress(&mut self, ctx: &mut Ctx, outcome: OpOutcome) -> Result<(), InstanceError> {
        let Some(mut record) = self.record.clone() else {
            return Ok(());
        };
        if record.op.as_ref().is_none_or(|op| op.id != outcome.op_id) {
            return Ok(());
        }
        let mut events = Vec::new();
        let new_volume = outcome.volume.filter(|v| record.volume.as_ref() != Some(v));
        let volume_recorded = new_volume.is_some();
        if let Some(volume) = new_volume {
            events.push(("instance.volume_created", volume.0.clone()));
            record.volume = Some(volume);
        }
        if let Some(machine) = outcome
            .machine
            .filter(|m| record.machine.as_ref() != Some(m))
        {
            events.push(("instance.machine_created", machine.0.clone()));
            record.machine = Some(machine);
        }
        self.commit(ctx, record, events, Timers::default())?;
        if volume_recorded {
            crate::crashpoint::reached(crate::crashpoint::VOLUME_RECORDED);
        }
        Ok(())
    }

    /// Give up the operation in flight: its lease ran out, or its task died with the process.
    fn abandon(&mut self, ctx: &mut Ctx, why: &str) -> Result<(), InstanceError> {
        let Some(mut record) = self.record.clone() else {
            return Ok(());
        };
        let Some(op) = record.op.take() else {
            return Ok(());
        };
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        record.status = Status::Stopped;
        record.reason = format!("{why} during {}", op.kind.as_str());
        let now = ctx.now();
        let reconcile = self.reconcile_at(now, Status::Stopped);
        record.next_reconcile_at = Some(reconcile);
        let event = if why == "lease expired" {
            "instance.op_lease_expired"
        } else {
            "instance.op_interrupted"
        };
        let detail = record.reason.clone();
        // A provider call may have taken effect before the task was lost: fail closed.
        let ticket = self
            .ticket
            .clone()
            .filter(|_| op.kind == OpKind::Provision)
            .map(|t| ProvisionTicket {
                outcome: TicketOutcome::Failed {
                    infra_may_exist: true,
                    error: detail.clone(),
                },
                ..t
            });
        let id = record.id.clone();
        self.commit(
            ctx,
            record,
            vec![
                (event, detail),
                ("instance.status_changed", "stopped".into()),
            ],
            Timers {
                lease: Some(None),
                reconcile: Some(Some(reconcile)),
                ticket: ticket.clone(),
            },
        )?;
        if let Some(ticket) = ticket {
            self.report_ticket(ctx, &id, ticket);
        }
        let reason = if why == "lease expired" {
            "lease_expired"
        } else {
            "interrupted"
        };
        self.fleet_op_ended(ctx, op.id, Err(reason.into()), true)
    }

    fn reconciled(
        &mut self,
        ctx: &mut Ctx,
        state: Result<MachineState, ProviderError>,
    ) -> Result<(), InstanceError> {
        let Some(mut record) = self.record.clone() else {
            return Ok(());
        };
        if record.status == Status::Destroyed {
            return Ok(());
        }
        let now = ctx.now();
        record.last_reconcile_at = Some(now);
        let next = self.reconcile_at(now, record.status);
        record.next_reconcile_at = Some(next);
        let mut events = Vec::new();
        match state {
            Ok(state) if record.op.is_none() => {
                let expected = match record.status {
                    Status::Running => Some(MachineState::Running),
                    Status::Stopped if record.machine.is_some() => Some(MachineState::Stopped),
                    _ => None,
                };
                if let Some(expected) = expected
                    && expected != state
                    && !(expected == MachineState::Stopped && state == MachineState::Created)
                {
                    events.push((
                        "instance.machine_state_drift",
                        format!(
                            "status {} but the provider reports {}",
                            record.status.as_str(),
                            state.as_str()
                        ),
                    ));
                    if record.status == Status::Running
                        && record.desired == Desired::Running
                        && state == MachineState::Stopped
                    {
                        // Unexpected-stop recovery (SPEC §9) starts here in a later issue.
                        events.push((
                            "instance.unexpected_stop_detected",
                            "recovery is not available yet".into(),
                        ));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => events.push(("instance.reconcile_failed", e.to_string())),
        }
        self.commit(
            ctx,
            record,
            events,
            Timers {
                lease: None,
                reconcile: Some(Some(next)),
                ticket: None,
            },
        )
    }

    fn serve(
        &mut self,
        ctx: &mut Ctx,
        request: InstanceRequest,
    ) -> Result<InstanceReply, InstanceError> {
        let id = ctx.id().to_string();
        match request {
            InstanceRequest::Provision {
                owner,
                image_tag,
                pinned,
                reservation,
            } => self.provision(ctx, owner, image_tag, pinned, reservation),
            InstanceRequest::Admission {
                reservation,
                owner,
                fence,
            } => self
                .admission(ctx, reservation, owner, fence)
                .map(InstanceReply::Admission),
            InstanceRequest::Get { owner_scope } => Ok(InstanceReply::View(self.with_banner(
                InstanceView::from(self.visible(owner_scope.as_deref(), &id)?),
            ))),
            InstanceRequest::Op { op, owner_scope } => {
                self.visible(owner_scope.as_deref(), &id)?;
                self.operate(ctx, op).map(InstanceReply::View)
            }
            InstanceRequest::Events {
                after,
                limit,
                owner_scope,
            } => {
                self.visible(owner_scope.as_deref(), &id)?;
                events_page(ctx, &id, after, limit).map(InstanceReply::Events)
            }
            InstanceRequest::Watch { owner_scope } => {
                let view = self.with_banner(InstanceView::from(
                    self.visible(owner_scope.as_deref(), &id)?,
                ));
                Ok(InstanceReply::Watch(view, self.services.hub.subscribe(&id)))
            }
            InstanceRequest::OpFinished(outcome) => {
                self.finish(ctx, outcome).map(|()| InstanceReply::Ack)
            }
            InstanceRequest::OpProgress(outcome) => {
                self.progress(ctx, outcome).map(|()| InstanceReply::Ack)
            }
            InstanceRequest::Reconciled(state) => {
                self.reconciled(ctx, state).map(|()| InstanceReply::Ack)
            }
            InstanceRequest::Fleet(_) => Err(internal("fleet notices are served by handle")),
        }
    }
}

/// What a commit writes besides the record and events. Timers: `None` leaves it,
/// `Some(None)` cancels, `Some(Some(t))` sets. `ticket`: replaces the provision ticket.
#[derive(Debug, Default, Clone)]
struct Timers {
    lease: Option<Option<UnixMillis>>,
    reconcile: Option<Option<UnixMillis>>,
    ticket: Option<ProvisionTicket>,
}

fn events_page(
    ctx: &mut Ctx,
    id: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<InstanceEvent>, InstanceError> {
    let conn = ctx.store().conn().map_err(internal)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at, kind, status, detail FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(
            params![after, i64::try_from(limit.min(1_000)).unwrap_or(1_000)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get(4)?,
                ))
            },
        )
        .map_err(internal)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at, kind, status, detail) = row.map_err(internal)?;
        out.push(InstanceEvent {
            instance_id: id.to_string(),
            seq,
            at,
            kind,
            status: Status::parse(&status).unwrap_or(Status::Stopped),
            detail,
        });
    }
    Ok(out)
}

/// The provider side of one operation.
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
            report(
                host,
                &record.id,
                InstanceRequest::OpProgress(outcome.clone()),
            )
            .await;
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
                    report(
                        host,
                        &record.id,
                        InstanceRequest::OpProgress(outcome.clone()),
                    )
                    .await;
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
        OpKind::ChangeVersion => match (&machine, &op.image) {
            (Some(m), Some(image)) => {
                match provider.call(p, |pr| pr.update_image(m, image)).await {
                    Ok(()) if op.prior == Status::Running => {
                        provider.call(p, |pr| pr.restart_machine(m)).await
                    }
                    other => other,
                }
            }
            (None, Some(_)) => Ok(()),
            (_, None) => Err(ProviderError::Refused("no target image".into())),
        },
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

/// Send an internal message to instance `id`; failures only log (the lease or the next
/// activation resolves an operation whose outcome was lost).
async fn report(host: &Host, id: &str, message: InstanceRequest) {
    let sent = match host.get::<Instance>(id) {
        Ok(stub) => stub.call(message).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(error) = sent {
        tracing::warn!(instance = %id, %error, "could not report an operation outcome");
    }
}

impl Object for Instance {
    const CLASS: &'static str = "instance";
    type Request = InstanceRequest;
    type Response = Result<InstanceReply, InstanceError>;
    type Deps = InstanceServices;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(
        ctx: &mut Ctx,
        services: Arc<InstanceServices>,
    ) -> Result<Self, HandlerError> {
        let record = ctx.store().kv_get::<Record>(RECORD_KEY)?;
        let ticket = ctx.store().kv_get::<ProvisionTicket>(TICKET_KEY)?;
        let mut instance = Instance {
            services,
            record,
            ticket,
            task: Mutex::new(None),
            fleet: fleet::load_link(ctx)?,
        };
        let epoch = ctx.host().epoch();
        if instance
            .record
            .as_ref()
            .and_then(|r| r.op.as_ref())
            .is_some_and(|op| op.epoch != epoch)
        {
            // Its task died with the previous process.
            instance.abandon(ctx, "interrupted by a restart")?;
        }
        Ok(instance)
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: InstanceRequest) -> Self::Response {
        match request {
            InstanceRequest::Fleet(notice) => self.fleet_notice(ctx, notice).await,
            request => self.serve(ctx, request),
        }
    }

    async fn alarm(&mut self, ctx: &mut Ctx, alarm: AlarmInfo) -> Result<(), HandlerError> {
        let now = ctx.now();
        if alarm.timers.iter().any(|t| t == TIMER_LEASE)
            && self
                .record
                .as_ref()
                .and_then(|r| r.op.as_ref())
                .is_some_and(|op| op.lease_expires_at <= now)
        {
            self.abandon(ctx, "lease expired")?;
        }
        if alarm.timers.iter().any(|t| t == TIMER_RECONCILE)
            && let Some(record) = self.record.clone()
            && record.status != Status::Destroyed
        {
            // Re-armed first: if the check's result is lost, the next period looks again.
            let next = self.reconcile_at(now, record.status);
            ctx.set_timer(TIMER_RECONCILE, next)?;
            if let Some(machine) = record.machine.filter(|_| record.op.is_none()) {
                {
                    let provider = self.services.provider.clone();
                    let host = ctx.host().clone();
                    ctx.host().spawn(async move {
                        let state = provider
                            .call(Priority::Scheduled, |p| p.machine(&machine))
                            .await
                            .map(|info| info.state);
                        report(&host, &record.id, InstanceRequest::Reconciled(state)).await;
                    });
                }
            }
        }
        self.fleet_alarm(ctx, &alarm).await
    }
}
