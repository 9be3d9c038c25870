//! The instance's transitions, as pure functions: given the persisted state, a request or an
//! outcome, and the time, they return the [`Transition`] to commit (record, events, timers,
//! ticket, fleet link, notices) — or a typed refusal. No clock, no storage, no runtime: the
//! class's handlers read the state, call one of these, and apply the result in ONE
//! transaction (`store::commit`); the table tests in `tests.rs` check them directly.

use super::api::{
    AdmissionState, Desired, EventKind, InstanceError, OpKind, OpOutcome, OpRequest,
    ProvisionRequest, Status,
};
use super::config::InstanceConfig;
use super::state::{
    AbandonReason, FleetLink, InFlight, ProvisionTicket, Record, TicketOutcome, Timer,
};
use super::validate;
use crate::UnixMillis;
use crate::claw::fleet::api::{FailureReason, TargetFailure};
use crate::claw::outbox::{Notice, ProvisionEnd};
use crate::provider::{MachineState, ProviderError};

/// Everything one message changes, committed together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transition {
    /// The new record (`None`: unchanged).
    pub record: Option<Record>,
    /// The new provision ticket (`None`: unchanged).
    pub ticket: Option<ProvisionTicket>,
    /// The new fleet link (`None`: unchanged).
    pub link: Option<FleetLink>,
    /// Events to append, in order (logged with the record's status after the transition).
    pub events: Vec<(EventKind, String)>,
    /// Timers to set (`Some`) or cancel (`None`).
    pub timers: Vec<(Timer, Option<UnixMillis>)>,
    /// What to tell other objects once this committed.
    pub notices: Vec<Notice>,
}

impl Transition {
    /// This transition followed by `next`, as one: `next`'s record, ticket and link replace
    /// this one's where it has them; events, timers and notices are appended in order (a
    /// later timer change of the same timer wins when applied).
    pub fn then(mut self, next: Transition) -> Transition {
        if next.record.is_some() {
            self.record = next.record;
        }
        if next.ticket.is_some() {
            self.ticket = next.ticket;
        }
        if next.link.is_some() {
            self.link = next.link;
        }
        self.events.extend(next.events);
        self.timers.extend(next.timers);
        self.notices.extend(next.notices);
        self
    }

    /// Whether applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.record.is_none()
            && self.ticket.is_none()
            && self.link.is_none()
            && self.events.is_empty()
            && self.timers.is_empty()
            && self.notices.is_empty()
    }
}

/// What a new operation needs to know besides the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpStart {
    /// Now.
    pub now: UnixMillis,
    /// This process's epoch (an operation of another epoch died with its process).
    pub epoch: u64,
    /// When the operation's lease runs out.
    pub lease_expires_at: UnixMillis,
}

/// The record of a new instance for `request`, and its first transition: status
/// `provisioning`, the provision operation in flight with its lease, the ticket pending.
pub fn provision(
    id: &str,
    request: &ProvisionRequest,
    start: OpStart,
) -> Result<(Transition, InFlight), InstanceError> {
    validate::owner(&request.owner)?;
    validate::image_tag(&request.image_tag)?;
    let op = InFlight {
        id: 1,
        kind: OpKind::Provision,
        epoch: start.epoch,
        lease_expires_at: start.lease_expires_at,
        image: None,
        pin: None,
        prior: Status::Provisioning,
    };
    let record = Record {
        sandbox_id: format!("sbx-{id}"),
        id: id.to_string(),
        owner: request.owner.clone(),
        image_tag: request.image_tag.clone(),
        pinned: request.pinned,
        machine: None,
        volume: None,
        status: Status::Provisioning,
        reason: String::new(),
        desired: Desired::Running,
        created_at: start.now,
        updated_at: start.now,
        last_reconcile_at: None,
        next_reconcile_at: None,
        last_op_id: op.id,
        op: Some(op.clone()),
    };
    let transition = Transition {
        record: Some(record),
        ticket: Some(ProvisionTicket {
            reservation: request.reservation,
            outcome: TicketOutcome::Pending,
        }),
        events: vec![(EventKind::ProvisionStarted, String::new())],
        timers: vec![(Timer::Lease, Some(start.lease_expires_at))],
        ..Transition::default()
    };
    Ok((transition, op))
}

/// A destroyed tombstone for a provision that never arrived, so it never will.
pub fn fence(id: &str, owner: &str, reservation: u64, now: UnixMillis) -> Transition {
    let reason =
        format!("provision abandoned before it reached the instance (reservation {reservation})");
    let record = Record {
        sandbox_id: format!("sbx-{id}"),
        id: id.to_string(),
        owner: owner.to_string(),
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
    Transition {
        record: Some(record),
        ticket: Some(ProvisionTicket {
            reservation,
            outcome: TicketOutcome::Failed {
                infra_may_exist: false,
                error: reason.clone(),
            },
        }),
        events: vec![(EventKind::ProvisionAbandoned, reason)],
        ..Transition::default()
    }
}

/// Where the provision of `reservation` stands, as its registry sees it (see
/// [`AdmissionState`]). `None` record: the provision never arrived.
pub fn admission_state(
    record: Option<&Record>,
    ticket: Option<&ProvisionTicket>,
    reservation: u64,
) -> AdmissionState {
    let Some(record) = record else {
        return AdmissionState::Absent;
    };
    let Some(ticket) = ticket.filter(|t| t.reservation == reservation) else {
        return AdmissionState::Other;
    };
    let infra = record.machine.is_some() || record.volume.is_some();
    match (&record.op, &ticket.outcome) {
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
    }
}

/// Start the user operation `request` on `record`, or say why it cannot start.
pub fn begin_op(
    record: &Record,
    request: &OpRequest,
    start: OpStart,
) -> Result<(Transition, InFlight), InstanceError> {
    let kind = request.kind();
    if record.status == Status::Destroyed {
        return Err(InstanceError::Destroyed(record.id.clone()));
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
    let needs_machine = matches!(kind, OpKind::Start | OpKind::Stop | OpKind::Restart);
    if !allowed || (needs_machine && record.machine.is_none()) {
        return Err(InstanceError::WrongStatus {
            op: kind,
            status: record.status,
        });
    }
    let (image, pin) = match request {
        OpRequest::ChangeVersion { image_tag, pin } => {
            validate::image_tag(image_tag)?;
            (Some(image_tag.clone()), *pin)
        }
        _ => (None, None),
    };
    let op = InFlight {
        id: record.last_op_id + 1,
        kind,
        epoch: start.epoch,
        lease_expires_at: start.lease_expires_at,
        image,
        pin,
        prior: record.status,
    };
    let mut next = record.clone();
    next.last_op_id = op.id;
    next.status = kind.status();
    next.reason = String::new();
    match kind {
        OpKind::Start | OpKind::Restart => next.desired = Desired::Running,
        OpKind::Stop => next.desired = Desired::Stopped,
        OpKind::Destroy => next.desired = Desired::Destroyed,
        OpKind::ChangeVersion | OpKind::Provision => {}
    }
    next.op = Some(op.clone());
    let detail = match &op.image {
        Some(image) => format!("{} -> {image}", record.image_tag),
        None => String::new(),
    };
    let event = match kind {
        OpKind::Start => EventKind::StartRequested,
        OpKind::Stop => EventKind::StopRequested,
        OpKind::Restart => EventKind::RestartRequested,
        OpKind::ChangeVersion => EventKind::VersionChangeRequested,
        OpKind::Destroy => EventKind::DestroyRequested,
        OpKind::Provision => EventKind::ProvisionStarted,
    };
    let transition = Transition {
        record: Some(next),
        events: vec![(event, detail)],
        timers: vec![(Timer::Lease, Some(op.lease_expires_at))],
        ..Transition::default()
    };
    Ok((transition, op))
}

/// The state an outcome applies to.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The record.
    pub record: &'a Record,
    /// The provision that created the instance, if any.
    pub ticket: Option<&'a ProvisionTicket>,
    /// The fleet link.
    pub link: &'a FleetLink,
}

/// The operation's provider work ended with `outcome`: the new status, events, timers, the
/// provision's end reported to the registry, a scheduled target's outcome reported to the
/// fleet. `None`: the outcome is stale (another operation is in flight, or none).
pub fn on_outcome(
    current: Current<'_>,
    outcome: &OpOutcome,
    now: UnixMillis,
    config: &InstanceConfig,
) -> Option<Transition> {
    let record = current.record;
    let op = record.op.clone().filter(|op| op.id == outcome.op_id)?;
    let mut next = record.clone();
    if outcome.machine.is_some() {
        next.machine = outcome.machine.clone();
    }
    if outcome.volume.is_some() {
        next.volume = outcome.volume.clone();
    }
    next.op = None;
    let (event, detail) = match (&outcome.result, op.kind) {
        (Ok(()), kind @ (OpKind::Provision | OpKind::Start | OpKind::Restart | OpKind::Stop)) => {
            let (status, event) = match kind {
                OpKind::Provision => (Status::Running, EventKind::Provisioned),
                OpKind::Start => (Status::Running, EventKind::Started),
                OpKind::Restart => (Status::Running, EventKind::Restarted),
                _ => (Status::Stopped, EventKind::Stopped),
            };
            next.status = status;
            (event, String::new())
        }
        (Ok(()), OpKind::ChangeVersion) => {
            let from = std::mem::take(&mut next.image_tag);
            next.image_tag = op.image.clone().unwrap_or_else(|| from.clone());
            if let Some(pin) = op.pin {
                next.pinned = pin;
            }
            next.status = op.prior;
            (
                EventKind::VersionChanged,
                format!("{from} -> {}", next.image_tag),
            )
        }
        (Ok(()), OpKind::Destroy) => {
            next.status = Status::Destroyed;
            (EventKind::Destroyed, String::new())
        }
        (Err(e), kind) => {
            let no_infra = next.machine.is_none() && next.volume.is_none();
            next.status = match kind {
                // The machine was not stopped; it still runs as far as we know.
                OpKind::Stop => Status::Running,
                OpKind::ChangeVersion => op.prior,
                // Nothing was built (an answered error means the call had no effect): the
                // instance is over, and its reservation is released.
                OpKind::Provision if no_infra => Status::Destroyed,
                _ => Status::Stopped,
            };
            if kind == OpKind::Provision {
                next.desired = if no_infra {
                    Desired::Destroyed
                } else {
                    Desired::Stopped
                };
            }
            next.reason = format!("{} failed: {e}", kind.as_str());
            (EventKind::OperationFailed, next.reason.clone())
        }
    };
    let reconcile = (next.status != Status::Destroyed)
        .then(|| config.reconcile_at(now, next.status == Status::Running));
    next.next_reconcile_at = reconcile;
    let infra_may_exist = next.machine.is_some() || next.volume.is_some();
    let ticket = current
        .ticket
        .filter(|_| op.kind == OpKind::Provision)
        .map(|t| ProvisionTicket {
            outcome: match &outcome.result {
                Ok(()) => TicketOutcome::Succeeded,
                Err(e) => TicketOutcome::Failed {
                    infra_may_exist,
                    error: format!("provision failed: {e}"),
                },
            },
            ..t.clone()
        });
    let mut transition = Transition {
        events: vec![
            (event, detail),
            (EventKind::StatusChanged, next.status.as_str().to_string()),
        ],
        timers: vec![(Timer::Lease, None), (Timer::Reconcile, reconcile)],
        ..Transition::default()
    };
    match &ticket {
        // Also covers a provision that ended destroyed: its release removes the route.
        Some(ticket) => transition.notices.extend(ticket_notice(&next, ticket)),
        None if next.status == Status::Destroyed => {
            transition.notices.push(Notice::InstanceDestroyed {
                owner: next.owner.clone(),
                instance_id: next.id.clone(),
            });
        }
        None => {}
    }
    transition.ticket = ticket;
    end_target(
        &mut transition,
        current.link,
        op.id,
        target_result(&outcome.result),
        now,
    );
    transition.record = Some(next);
    Some(transition)
}

/// Give up the operation in flight without its outcome. `None`: nothing is in flight.
pub fn abandon(
    current: Current<'_>,
    why: AbandonReason,
    now: UnixMillis,
    config: &InstanceConfig,
) -> Option<Transition> {
    let mut next = current.record.clone();
    let op = next.op.take()?;
    next.status = Status::Stopped;
    next.reason = format!("{} during {}", why.as_str(), op.kind.as_str());
    let reconcile = config.reconcile_at(now, false);
    next.next_reconcile_at = Some(reconcile);
    let (event, failure) = match why {
        AbandonReason::LeaseExpired => (EventKind::OpLeaseExpired, FailureReason::LeaseExpired),
        AbandonReason::Interrupted => (EventKind::OpInterrupted, FailureReason::Interrupted),
    };
    let detail = next.reason.clone();
    // A provider call may have taken effect before the task was lost: fail closed.
    let ticket = current
        .ticket
        .filter(|_| op.kind == OpKind::Provision)
        .map(|t| ProvisionTicket {
            outcome: TicketOutcome::Failed {
                infra_may_exist: true,
                error: detail.clone(),
            },
            ..t.clone()
        });
    let mut transition = Transition {
        events: vec![
            (event, detail),
            (EventKind::StatusChanged, Status::Stopped.as_str().into()),
        ],
        timers: vec![(Timer::Lease, None), (Timer::Reconcile, Some(reconcile))],
        ..Transition::default()
    };
    if let Some(ticket) = &ticket {
        transition.notices.extend(ticket_notice(&next, ticket));
    }
    transition.ticket = ticket;
    end_target(
        &mut transition,
        current.link,
        op.id,
        Err(TargetFailure::new(failure)),
        now,
    );
    transition.record = Some(next);
    Some(transition)
}

/// Infrastructure a provision task created, recorded before the task goes on. `None`: stale
/// or nothing new.
pub fn on_progress(record: &Record, outcome: &OpOutcome) -> Option<Transition> {
    if record.op.as_ref().is_none_or(|op| op.id != outcome.op_id) {
        return None;
    }
    let volume = outcome
        .volume
        .clone()
        .filter(|v| record.volume.as_ref() != Some(v));
    let machine = outcome
        .machine
        .clone()
        .filter(|m| record.machine.as_ref() != Some(m));
    let events: Vec<(EventKind, String)> = [
        volume
            .as_ref()
            .map(|v| (EventKind::VolumeCreated, v.0.clone())),
        machine
            .as_ref()
            .map(|m| (EventKind::MachineCreated, m.0.clone())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut next = record.clone();
    next.volume = volume.or(next.volume);
    next.machine = machine.or(next.machine);
    if events.is_empty() {
        return None;
    }
    Some(Transition {
        record: Some(next),
        events,
        ..Transition::default()
    })
}

/// A reconcile check came back: record it, log drift, arm the next one. `None`: the instance
/// is destroyed.
pub fn on_reconciled(
    record: &Record,
    state: &Result<MachineState, ProviderError>,
    now: UnixMillis,
    config: &InstanceConfig,
) -> Option<Transition> {
    if record.status == Status::Destroyed {
        return None;
    }
    let mut next = record.clone();
    next.last_reconcile_at = Some(now);
    let at = config.reconcile_at(now, record.status == Status::Running);
    next.next_reconcile_at = Some(at);
    let mut events = Vec::new();
    match state {
        Ok(state) if record.op.is_none() => events.extend(drift(record, *state)),
        Ok(_) => {}
        Err(e) => events.push((EventKind::ReconcileFailed, e.to_string())),
    }
    Some(Transition {
        record: Some(next),
        events,
        timers: vec![(Timer::Reconcile, Some(at))],
        ..Transition::default()
    })
}

/// The events a provider's `state` raises against an idle `record`.
pub fn drift(record: &Record, state: MachineState) -> Vec<(EventKind, String)> {
    let expected = match record.status {
        Status::Running => Some(MachineState::Running),
        Status::Stopped if record.machine.is_some() => Some(MachineState::Stopped),
        _ => None,
    };
    let Some(expected) = expected else {
        return Vec::new();
    };
    if expected == state || (expected == MachineState::Stopped && state == MachineState::Created) {
        return Vec::new();
    }
    let mut events = vec![(
        EventKind::MachineStateDrift,
        format!(
            "status {} but the provider reports {}",
            record.status.as_str(),
            state.as_str()
        ),
    )];
    if record.status == Status::Running
        && record.desired == Desired::Running
        && state == MachineState::Stopped
    {
        // Unexpected-stop recovery (SPEC §9) starts here in a later issue.
        events.push((
            EventKind::UnexpectedStopDetected,
            "recovery is not available yet".into(),
        ));
    }
    events
}

/// The registry notice for a settled provision ticket (`None` while it is pending).
pub fn ticket_notice(record: &Record, ticket: &ProvisionTicket) -> Option<Notice> {
    let end = match &ticket.outcome {
        TicketOutcome::Pending => return None,
        TicketOutcome::Succeeded => ProvisionEnd::Completed,
        TicketOutcome::Failed {
            infra_may_exist,
            error,
        } => ProvisionEnd::Failed {
            infra_may_exist: *infra_may_exist,
            error: error.clone(),
        },
    };
    Some(Notice::ProvisionEnded {
        owner: record.owner.clone(),
        reservation: ticket.reservation,
        instance_id: record.id.clone(),
        end,
    })
}

/// The fleet's failure for an operation's provider result.
pub fn target_result(result: &Result<(), ProviderError>) -> Result<(), TargetFailure> {
    result.clone().map_err(|e| {
        let reason = match e {
            ProviderError::Unavailable(_) => FailureReason::ProviderUnavailable,
            _ => FailureReason::ProviderError,
        };
        TargetFailure::with_detail(reason, e.to_string())
    })
}

/// Operation `op_id` ended: if it applied the running target, the link lets go of it and the
/// fleet is told the outcome; if a due target waits, the action timer fires now.
pub fn end_target(
    transition: &mut Transition,
    link: &FleetLink,
    op_id: u64,
    result: Result<(), TargetFailure>,
    now: UnixMillis,
) {
    let mut link = transition.link.clone().unwrap_or_else(|| link.clone());
    if let Some(running) = link.running.clone().filter(|r| r.op_id == op_id) {
        link.running = None;
        transition.notices.push(Notice::TargetOutcome {
            target_id: running.target_id,
            result,
        });
        transition.link = Some(link.clone());
    }
    if link.running.is_none() && link.upcoming.as_ref().is_some_and(|t| t.run_at <= now) {
        transition.timers.push((Timer::Action, Some(now)));
    }
}
