//! Table tests of the instance's pure transitions: which operations start in which status, the
//! outcome matrix (operation × provider outcome × status before), abandonment, admission
//! states, drift, and the skip rules of scheduled targets. No runtime, no clock, no storage.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use super::api::{
    AdmissionState, Desired, EventKind, InstanceError, OpKind, OpOutcome, OpRequest,
    ProvisionRequest, Status,
};
use super::config::InstanceConfig;
use super::lifecycle::{self, Current, OpStart, Transition};
use super::scheduled::{skip_reason, start_target, waits_for_operation};
use super::state::{
    AbandonReason, FleetLink, InFlight, ProvisionTicket, Record, RunningTarget, TicketOutcome,
    Timer,
};
use crate::claw::fleet::api::{ActionKind, FailureReason, SkipReason, TargetFailure, TargetTicket};
use crate::claw::outbox::{Notice, ProvisionEnd};
use crate::provider::{MachineId, MachineState, ProviderError, VolumeId};

const NOW: i64 = 1_000_000;

fn config() -> InstanceConfig {
    InstanceConfig::default()
}

fn start() -> OpStart {
    OpStart {
        now: NOW,
        epoch: 7,
        lease_expires_at: NOW + 600_000,
    }
}

/// An idle instance in `status`, with machine and volume.
fn record(status: Status) -> Record {
    Record {
        id: "i-1".into(),
        owner: "user:1".into(),
        sandbox_id: "sbx-i-1".into(),
        image_tag: "claw:1".into(),
        pinned: false,
        machine: Some(MachineId("m-1".into())),
        volume: Some(VolumeId("v-1".into())),
        status,
        reason: String::new(),
        desired: Desired::Running,
        created_at: 0,
        updated_at: 0,
        last_reconcile_at: None,
        next_reconcile_at: None,
        op: None,
        last_op_id: 3,
    }
}

/// `record` with operation `kind` in flight, started from `prior`.
fn busy(kind: OpKind, prior: Status) -> Record {
    let mut r = record(kind.status());
    r.op = Some(InFlight {
        id: 4,
        kind,
        epoch: 7,
        lease_expires_at: NOW + 1,
        image: (kind == OpKind::ChangeVersion).then(|| "claw:2".to_string()),
        pin: None,
        prior,
    });
    r.last_op_id = 4;
    r
}

fn outcome(result: Result<(), ProviderError>) -> OpOutcome {
    OpOutcome {
        op_id: 4,
        machine: None,
        volume: None,
        result,
    }
}

fn failure() -> Result<(), ProviderError> {
    Err(ProviderError::Refused("no".into()))
}

fn kinds(t: &Transition) -> Vec<EventKind> {
    t.events.iter().map(|(k, _)| *k).collect()
}

fn timer(t: &Transition, which: Timer) -> Option<Option<i64>> {
    t.timers
        .iter()
        .find(|(w, _)| *w == which)
        .map(|(_, at)| *at)
}

#[test]
fn operations_start_only_from_the_statuses_they_apply_to() {
    use Status as S;
    let requests = [
        OpRequest::Start,
        OpRequest::Stop,
        OpRequest::Restart,
        OpRequest::ChangeVersion {
            image_tag: "claw:2".into(),
            pin: None,
        },
        OpRequest::Destroy,
    ];
    for status in Status::ALL {
        for request in &requests {
            let kind = request.kind();
            let got = lifecycle::begin_op(&record(status), request, start());
            let expected: Result<Status, InstanceError> = match (status, kind) {
                (S::Destroyed, _) => Err(InstanceError::Destroyed("i-1".into())),
                (s, _) if s.is_busy() => Err(InstanceError::Busy(s)),
                (S::Stopped, OpKind::Start)
                | (S::Running, OpKind::Stop | OpKind::Restart)
                | (_, OpKind::ChangeVersion | OpKind::Destroy) => Ok(kind.status()),
                (s, op) => Err(InstanceError::WrongStatus { op, status: s }),
            };
            let got = got.map(|(t, op)| {
                let r = t.record.clone().expect("a record");
                assert_eq!(r.op.as_ref(), Some(&op));
                assert_eq!(op.id, 4, "the next operation id");
                assert_eq!(op.prior, status);
                assert_eq!(timer(&t, Timer::Lease), Some(Some(NOW + 600_000)));
                assert!(t.notices.is_empty(), "nothing to tell before the outcome");
                r.status
            });
            assert_eq!(got, expected, "{request:?} from {status:?}");
        }
    }
}

#[test]
fn operations_set_what_the_owner_wants_and_log_the_request() {
    for (request, desired, event) in [
        (
            OpRequest::Start,
            Desired::Running,
            EventKind::StartRequested,
        ),
        (OpRequest::Stop, Desired::Stopped, EventKind::StopRequested),
        (
            OpRequest::Restart,
            Desired::Running,
            EventKind::RestartRequested,
        ),
        (
            OpRequest::Destroy,
            Desired::Destroyed,
            EventKind::DestroyRequested,
        ),
    ] {
        let from = if request == OpRequest::Start {
            Status::Stopped
        } else {
            Status::Running
        };
        let mut before = record(from);
        before.desired = Desired::Stopped;
        if request == OpRequest::Start {
            before.desired = Desired::Stopped;
        }
        let (t, _) = lifecycle::begin_op(&before, &request, start()).unwrap();
        assert_eq!(
            t.record.as_ref().map(|r| r.desired),
            Some(desired),
            "{request:?}"
        );
        assert_eq!(kinds(&t), vec![event]);
    }
}

#[test]
fn machine_operations_need_a_machine_and_images_are_validated() {
    let mut no_machine = record(Status::Running);
    no_machine.machine = None;
    assert_eq!(
        lifecycle::begin_op(&no_machine, &OpRequest::Restart, start()).map(|_| ()),
        Err(InstanceError::WrongStatus {
            op: OpKind::Restart,
            status: Status::Running
        })
    );
    let bad = OpRequest::ChangeVersion {
        image_tag: "a b".into(),
        pin: None,
    };
    assert!(matches!(
        lifecycle::begin_op(&record(Status::Running), &bad, start()),
        Err(InstanceError::InvalidArgument {
            field: "image_tag",
            ..
        })
    ));
}

/// One row of the outcome matrix: operation, status before it, provider result → status
/// after, desired after, the first event.
struct Row {
    op: OpKind,
    prior: Status,
    ok: bool,
    status: Status,
    event: EventKind,
}

#[test]
fn the_outcome_matrix() {
    use EventKind as E;
    use OpKind as K;
    use Status as S;
    let rows = [
        Row {
            op: K::Provision,
            prior: S::Provisioning,
            ok: true,
            status: S::Running,
            event: E::Provisioned,
        },
        Row {
            op: K::Provision,
            prior: S::Provisioning,
            ok: false,
            status: S::Stopped,
            event: E::OperationFailed,
        },
        Row {
            op: K::Start,
            prior: S::Stopped,
            ok: true,
            status: S::Running,
            event: E::Started,
        },
        Row {
            op: K::Start,
            prior: S::Stopped,
            ok: false,
            status: S::Stopped,
            event: E::OperationFailed,
        },
        Row {
            op: K::Stop,
            prior: S::Running,
            ok: true,
            status: S::Stopped,
            event: E::Stopped,
        },
        Row {
            op: K::Stop,
            prior: S::Running,
            ok: false,
            status: S::Running,
            event: E::OperationFailed,
        },
        Row {
            op: K::Restart,
            prior: S::Running,
            ok: true,
            status: S::Running,
            event: E::Restarted,
        },
        Row {
            op: K::Restart,
            prior: S::Running,
            ok: false,
            status: S::Stopped,
            event: E::OperationFailed,
        },
        Row {
            op: K::ChangeVersion,
            prior: S::Running,
            ok: true,
            status: S::Running,
            event: E::VersionChanged,
        },
        Row {
            op: K::ChangeVersion,
            prior: S::Stopped,
            ok: true,
            status: S::Stopped,
            event: E::VersionChanged,
        },
        Row {
            op: K::ChangeVersion,
            prior: S::Running,
            ok: false,
            status: S::Running,
            event: E::OperationFailed,
        },
        Row {
            op: K::ChangeVersion,
            prior: S::Stopped,
            ok: false,
            status: S::Stopped,
            event: E::OperationFailed,
        },
        Row {
            op: K::Destroy,
            prior: S::Running,
            ok: true,
            status: S::Destroyed,
            event: E::Destroyed,
        },
        Row {
            op: K::Destroy,
            prior: S::Stopped,
            ok: false,
            status: S::Stopped,
            event: E::OperationFailed,
        },
    ];
    for row in rows {
        let before = busy(row.op, row.prior);
        let link = FleetLink::default();
        let current = Current {
            record: &before,
            ticket: None,
            link: &link,
        };
        let result = if row.ok { Ok(()) } else { failure() };
        let t = lifecycle::on_outcome(current, &outcome(result), NOW, &config())
            .expect("the outcome of the operation in flight applies");
        let after = t.record.clone().unwrap();
        let what = format!("{:?} from {:?}, ok {}", row.op, row.prior, row.ok);
        assert_eq!(after.status, row.status, "{what}");
        assert_eq!(after.op, None, "{what}: the operation ended");
        assert_eq!(
            kinds(&t),
            vec![row.event, EventKind::StatusChanged],
            "{what}"
        );
        assert_eq!(
            after.reason.is_empty(),
            row.ok,
            "{what}: a failure says why"
        );
        assert_eq!(
            timer(&t, Timer::Lease),
            Some(None),
            "{what}: the lease goes"
        );
        let reconcile = timer(&t, Timer::Reconcile).unwrap();
        assert_eq!(reconcile.is_none(), row.status == S::Destroyed, "{what}");
        if row.op == K::ChangeVersion && row.ok {
            assert_eq!(after.image_tag, "claw:2", "{what}");
        } else {
            assert_eq!(after.image_tag, "claw:1", "{what}");
        }
        let destroyed_notice = Notice::InstanceDestroyed {
            owner: "user:1".into(),
            instance_id: "i-1".into(),
        };
        assert_eq!(
            t.notices.contains(&destroyed_notice),
            row.status == S::Destroyed,
            "{what}"
        );
    }
}

#[test]
fn a_stale_outcome_changes_nothing() {
    let before = busy(OpKind::Restart, Status::Running);
    let link = FleetLink::default();
    let current = Current {
        record: &before,
        ticket: None,
        link: &link,
    };
    let mut stale = outcome(Ok(()));
    stale.op_id = 3;
    assert_eq!(lifecycle::on_outcome(current, &stale, NOW, &config()), None);
    let idle = record(Status::Running);
    let current = Current {
        record: &idle,
        ticket: None,
        link: &link,
    };
    assert_eq!(
        lifecycle::on_outcome(current, &outcome(Ok(())), NOW, &config()),
        None
    );
}

#[test]
fn a_provision_reports_its_end_to_the_registry() {
    let ticket = ProvisionTicket {
        reservation: 9,
        outcome: TicketOutcome::Pending,
    };
    let link = FleetLink::default();
    // (infrastructure recorded, result) → status, ticket outcome, registry notice.
    let cases = [
        (true, true, Status::Running, ProvisionEnd::Completed),
        (
            true,
            false,
            Status::Stopped,
            ProvisionEnd::Failed {
                infra_may_exist: true,
                error: "provision failed: provider refused: no".into(),
            },
        ),
        (
            false,
            false,
            Status::Destroyed,
            ProvisionEnd::Failed {
                infra_may_exist: false,
                error: "provision failed: provider refused: no".into(),
            },
        ),
    ];
    for (infra, ok, status, end) in cases {
        let mut before = busy(OpKind::Provision, Status::Provisioning);
        if !infra {
            before.machine = None;
            before.volume = None;
        }
        let current = Current {
            record: &before,
            ticket: Some(&ticket),
            link: &link,
        };
        let result = if ok { Ok(()) } else { failure() };
        let t = lifecycle::on_outcome(current, &outcome(result), NOW, &config()).unwrap();
        let after = t.record.clone().unwrap();
        assert_eq!(after.status, status, "infra {infra}, ok {ok}");
        let expected_desired = match (ok, infra) {
            (true, _) => Desired::Running,
            (false, true) => Desired::Stopped,
            (false, false) => Desired::Destroyed,
        };
        assert_eq!(after.desired, expected_desired, "infra {infra}, ok {ok}");
        let stored = t.ticket.clone().unwrap();
        assert_eq!(stored.reservation, 9);
        assert_eq!(stored.outcome == TicketOutcome::Succeeded, ok);
        assert_eq!(
            t.notices,
            vec![Notice::ProvisionEnded {
                owner: "user:1".into(),
                reservation: 9,
                instance_id: "i-1".into(),
                end,
            }],
            "infra {infra}, ok {ok}: one report, and no separate destroy notice"
        );
    }
}

#[test]
fn a_scheduled_target_reports_its_outcome_to_the_fleet_in_the_same_transition() {
    let before = busy(OpKind::Restart, Status::Running);
    let link = FleetLink {
        upcoming: None,
        running: Some(RunningTarget {
            target_id: 55,
            op_id: 4,
        }),
    };
    for (result, expected) in [
        (Ok(()), Ok(())),
        (
            Err(ProviderError::Unavailable("down".into())),
            Err(FailureReason::ProviderUnavailable),
        ),
        (failure(), Err(FailureReason::ProviderError)),
    ] {
        let current = Current {
            record: &before,
            ticket: None,
            link: &link,
        };
        let t = lifecycle::on_outcome(current, &outcome(result), NOW, &config()).unwrap();
        assert_eq!(t.link.as_ref().map(|l| l.running.clone()), Some(None));
        let [Notice::TargetOutcome { target_id, result }] = t.notices.as_slice() else {
            panic!("one target outcome: {:?}", t.notices);
        };
        assert_eq!(*target_id, 55);
        assert_eq!(
            result.as_ref().map_err(|f| f.reason),
            expected.as_ref().map_err(|r| *r)
        );
    }
}

#[test]
fn a_due_target_waiting_for_the_operation_is_tried_when_it_ends() {
    let before = busy(OpKind::Stop, Status::Running);
    let link = FleetLink {
        upcoming: Some(ticket(ActionKind::ScheduledRestart, NOW - 5)),
        running: None,
    };
    let current = Current {
        record: &before,
        ticket: None,
        link: &link,
    };
    let t = lifecycle::on_outcome(current, &outcome(Ok(())), NOW, &config()).unwrap();
    assert_eq!(timer(&t, Timer::Action), Some(Some(NOW)));
    let later = FleetLink {
        upcoming: Some(ticket(ActionKind::ScheduledRestart, NOW + 5)),
        running: None,
    };
    let current = Current {
        record: &before,
        ticket: None,
        link: &later,
    };
    let t = lifecycle::on_outcome(current, &outcome(Ok(())), NOW, &config()).unwrap();
    assert_eq!(
        timer(&t, Timer::Action),
        None,
        "not due: its own timer stands"
    );
}

#[test]
fn abandoning_stops_the_instance_fails_closed_and_fails_the_target() {
    let ticket_pending = ProvisionTicket {
        reservation: 9,
        outcome: TicketOutcome::Pending,
    };
    let running = FleetLink {
        upcoming: None,
        running: Some(RunningTarget {
            target_id: 55,
            op_id: 4,
        }),
    };
    for (why, event, failure, text) in [
        (
            AbandonReason::LeaseExpired,
            EventKind::OpLeaseExpired,
            FailureReason::LeaseExpired,
            "lease expired during",
        ),
        (
            AbandonReason::Interrupted,
            EventKind::OpInterrupted,
            FailureReason::Interrupted,
            "interrupted by a restart during",
        ),
    ] {
        // A provision: the ticket fails closed (infrastructure may exist).
        let before = busy(OpKind::Provision, Status::Provisioning);
        let no_link = FleetLink::default();
        let current = Current {
            record: &before,
            ticket: Some(&ticket_pending),
            link: &no_link,
        };
        let t = lifecycle::abandon(current, why, NOW, &config()).unwrap();
        let after = t.record.clone().unwrap();
        assert_eq!(after.status, Status::Stopped);
        assert!(after.reason.starts_with(text), "{}", after.reason);
        assert_eq!(kinds(&t), vec![event, EventKind::StatusChanged]);
        assert!(matches!(
            t.ticket.as_ref().map(|t| &t.outcome),
            Some(TicketOutcome::Failed {
                infra_may_exist: true,
                ..
            })
        ));
        assert!(matches!(
            t.notices.as_slice(),
            [Notice::ProvisionEnded {
                end: ProvisionEnd::Failed {
                    infra_may_exist: true,
                    ..
                },
                ..
            }]
        ));
        // A scheduled target: the fleet hears the failure reason.
        let before = busy(OpKind::Restart, Status::Running);
        let current = Current {
            record: &before,
            ticket: None,
            link: &running,
        };
        let t = lifecycle::abandon(current, why, NOW, &config()).unwrap();
        assert_eq!(
            t.notices,
            vec![Notice::TargetOutcome {
                target_id: 55,
                result: Err(TargetFailure::new(failure)),
            }]
        );
        assert_eq!(t.link.unwrap().running, None);
    }
    let idle = record(Status::Running);
    let link = FleetLink::default();
    let current = Current {
        record: &idle,
        ticket: None,
        link: &link,
    };
    assert_eq!(
        lifecycle::abandon(current, AbandonReason::LeaseExpired, NOW, &config()),
        None,
        "nothing in flight, nothing to abandon"
    );
}

#[test]
fn admission_states_as_the_registry_sees_them() {
    let ticket = |outcome| ProvisionTicket {
        reservation: 9,
        outcome,
    };
    let failed = TicketOutcome::Failed {
        infra_may_exist: false,
        error: "x".into(),
    };
    let mut no_infra = busy(OpKind::Provision, Status::Provisioning);
    no_infra.machine = None;
    no_infra.volume = None;
    let cases: Vec<(Option<Record>, Option<ProvisionTicket>, u64, AdmissionState)> = vec![
        (None, None, 9, AdmissionState::Absent),
        (
            Some(record(Status::Running)),
            None,
            9,
            AdmissionState::Other,
        ),
        (
            Some(record(Status::Running)),
            Some(ticket(TicketOutcome::Succeeded)),
            8,
            AdmissionState::Other,
        ),
        (
            Some(record(Status::Destroyed)),
            Some(ticket(TicketOutcome::Succeeded)),
            9,
            AdmissionState::Destroyed,
        ),
        (
            Some(busy(OpKind::Provision, Status::Provisioning)),
            Some(ticket(TicketOutcome::Pending)),
            9,
            AdmissionState::Provisioning { infra: true },
        ),
        (
            Some(no_infra),
            Some(ticket(TicketOutcome::Pending)),
            9,
            AdmissionState::Provisioning { infra: false },
        ),
        (
            Some(record(Status::Stopped)),
            Some(ticket(TicketOutcome::Succeeded)),
            9,
            AdmissionState::Complete,
        ),
        (
            Some(record(Status::Running)),
            Some(ticket(TicketOutcome::Pending)),
            9,
            AdmissionState::Complete,
        ),
        (
            Some(busy(OpKind::Destroy, Status::Stopped)),
            Some(ticket(failed.clone())),
            9,
            AdmissionState::Busy,
        ),
        (
            Some(record(Status::Stopped)),
            Some(ticket(failed)),
            9,
            AdmissionState::Failed {
                infra_may_exist: false,
                error: "x".into(),
            },
        ),
        (
            Some(record(Status::Stopped)),
            Some(ticket(TicketOutcome::Pending)),
            9,
            AdmissionState::Failed {
                infra_may_exist: true,
                error: "the provision's outcome was lost".into(),
            },
        ),
    ];
    for (record, ticket, reservation, expected) in cases {
        assert_eq!(
            lifecycle::admission_state(record.as_ref(), ticket.as_ref(), reservation),
            expected,
            "{record:?} / {ticket:?} / {reservation}"
        );
    }
}

#[test]
fn provisions_and_fences_write_what_the_registry_expects() {
    let request = ProvisionRequest {
        owner: "user:1".into(),
        image_tag: "claw:1".into(),
        pinned: true,
        reservation: 9,
    };
    let (t, op) = lifecycle::provision("i-1", &request, start()).unwrap();
    let r = t.record.clone().unwrap();
    assert_eq!(
        (r.status, r.desired, r.pinned),
        (Status::Provisioning, Desired::Running, true)
    );
    assert_eq!((op.id, op.kind), (1, OpKind::Provision));
    assert_eq!(
        t.ticket.as_ref().map(|t| &t.outcome),
        Some(&TicketOutcome::Pending)
    );
    assert_eq!(kinds(&t), vec![EventKind::ProvisionStarted]);
    let bad = ProvisionRequest {
        owner: "team:x".into(),
        ..request
    };
    assert!(lifecycle::provision("i-1", &bad, start()).is_err());

    let t = lifecycle::fence("i-1", "user:1", 9, NOW);
    let r = t.record.clone().unwrap();
    assert_eq!(
        (r.status, r.desired),
        (Status::Destroyed, Desired::Destroyed)
    );
    assert!(matches!(
        t.ticket.unwrap().outcome,
        TicketOutcome::Failed {
            infra_may_exist: false,
            ..
        }
    ));
    assert!(
        t.notices.is_empty(),
        "the registry fenced it; nothing to report"
    );
}

#[test]
fn drift_is_logged_and_an_unexpected_stop_is_named() {
    use MachineState as M;
    let mut stopped_wanted = record(Status::Running);
    stopped_wanted.desired = Desired::Stopped;
    let mut never_made = record(Status::Stopped);
    never_made.machine = None;
    let cases = [
        (record(Status::Running), M::Running, vec![]),
        (
            record(Status::Running),
            M::Stopped,
            vec![
                EventKind::MachineStateDrift,
                EventKind::UnexpectedStopDetected,
            ],
        ),
        (
            stopped_wanted,
            M::Stopped,
            vec![EventKind::MachineStateDrift],
        ),
        (
            record(Status::Running),
            M::Destroyed,
            vec![EventKind::MachineStateDrift],
        ),
        (record(Status::Stopped), M::Stopped, vec![]),
        (record(Status::Stopped), M::Created, vec![]),
        (
            record(Status::Stopped),
            M::Running,
            vec![EventKind::MachineStateDrift],
        ),
        (never_made, M::Running, vec![]),
    ];
    for (r, state, expected) in cases {
        let got: Vec<EventKind> = lifecycle::drift(&r, state)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            got, expected,
            "{:?} / {:?} / {state:?}",
            r.status, r.desired
        );
    }
    // A reconcile reading arms the next check and ignores a busy instance's machine.
    let t = lifecycle::on_reconciled(
        &busy(OpKind::Restart, Status::Running),
        &Ok(M::Stopped),
        NOW,
        &config(),
    )
    .unwrap();
    assert!(t.events.is_empty());
    assert!(matches!(timer(&t, Timer::Reconcile), Some(Some(at)) if at > NOW));
    let t = lifecycle::on_reconciled(
        &record(Status::Running),
        &Err(ProviderError::Unavailable("down".into())),
        NOW,
        &config(),
    )
    .unwrap();
    assert_eq!(kinds(&t), vec![EventKind::ReconcileFailed]);
    assert_eq!(
        lifecycle::on_reconciled(&record(Status::Destroyed), &Ok(M::Running), NOW, &config()),
        None
    );
}

fn ticket(kind: ActionKind, run_at: i64) -> TargetTicket {
    TargetTicket {
        action_id: 1,
        target_id: 55,
        kind,
        image_tag: (kind == ActionKind::VersionChange).then(|| "claw:2".to_string()),
        pin: None,
        run_at,
    }
}

#[test]
fn skip_reasons_of_scheduled_targets() {
    use ActionKind::{ScheduledRestart as Restart, VersionChange as Version};
    let mut pinned = record(Status::Running);
    pinned.pinned = true;
    let mut on_tag = record(Status::Running);
    on_tag.image_tag = "claw:2".into();
    let mut no_machine = record(Status::Running);
    no_machine.machine = None;
    let with_pin = |pin| TargetTicket {
        pin: Some(pin),
        ..ticket(Version, NOW)
    };
    let cases: Vec<(Option<Record>, TargetTicket, Option<SkipReason>)> = vec![
        (
            None,
            ticket(Restart, NOW),
            Some(SkipReason::InstanceDestroyed),
        ),
        (
            Some(record(Status::Destroyed)),
            ticket(Version, NOW),
            Some(SkipReason::InstanceDestroyed),
        ),
        (
            Some(record(Status::Destroying)),
            ticket(Restart, NOW),
            Some(SkipReason::InstanceDestroyed),
        ),
        (Some(record(Status::Running)), ticket(Restart, NOW), None),
        (
            Some(record(Status::Stopped)),
            ticket(Restart, NOW),
            Some(SkipReason::InstanceNotRunning),
        ),
        (
            Some(no_machine),
            ticket(Restart, NOW),
            Some(SkipReason::InstanceNotRunning),
        ),
        (Some(record(Status::Running)), ticket(Version, NOW), None),
        (Some(record(Status::Stopped)), ticket(Version, NOW), None),
        (
            Some(pinned.clone()),
            ticket(Version, NOW),
            Some(SkipReason::InstancePinned),
        ),
        (Some(pinned), with_pin(false), None),
        (
            Some(on_tag.clone()),
            ticket(Version, NOW),
            Some(SkipReason::AlreadyOnTag),
        ),
        (
            Some(on_tag.clone()),
            with_pin(false),
            Some(SkipReason::AlreadyOnTag),
        ),
        (Some(on_tag), with_pin(true), None),
    ];
    for (r, t, expected) in cases {
        assert_eq!(
            skip_reason(r.as_ref(), &t),
            expected,
            "{:?} / {:?} pin {:?}",
            r.as_ref()
                .map(|r| (r.status, r.pinned, r.image_tag.clone())),
            t.kind,
            t.pin
        );
    }
    assert_eq!(SkipReason::InstancePinned.as_str(), "instance_pinned");
}

#[test]
fn a_busy_instance_keeps_its_due_target_waiting_except_for_a_destroy() {
    assert!(!waits_for_operation(None));
    assert!(!waits_for_operation(Some(&record(Status::Running))));
    assert!(waits_for_operation(Some(&busy(
        OpKind::Stop,
        Status::Running
    ))));
    assert!(!waits_for_operation(Some(&busy(
        OpKind::Destroy,
        Status::Running
    ))));
}

#[test]
fn a_claimed_target_starts_as_one_transition() {
    for (kind, op, status) in [
        (
            ActionKind::ScheduledRestart,
            OpKind::Restart,
            Status::Restarting,
        ),
        (
            ActionKind::VersionChange,
            OpKind::ChangeVersion,
            Status::Updating,
        ),
    ] {
        let (t, started) = start_target(&record(Status::Running), &ticket(kind, NOW), NOW + 9, 7);
        assert_eq!(
            (started.kind, started.id, started.lease_expires_at),
            (op, 4, NOW + 9)
        );
        assert_eq!(t.record.as_ref().map(|r| r.status), Some(status));
        let link = t.link.clone().unwrap();
        assert_eq!(link.upcoming, None);
        assert_eq!(
            link.running,
            Some(RunningTarget {
                target_id: 55,
                op_id: 4
            })
        );
        assert_eq!(timer(&t, Timer::Lease), Some(Some(NOW + 9)));
        assert_eq!(
            timer(&t, Timer::Action),
            Some(None),
            "the banner's timer goes"
        );
        assert_eq!(kinds(&t), vec![EventKind::ScheduledActionStarted]);
    }
}

#[test]
fn event_kinds_have_stable_unique_names() {
    let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    for kind in EventKind::ALL {
        assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        assert!(kind.as_str().starts_with("instance."));
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), EventKind::ALL.len());
    assert_eq!(
        EventKind::OpLeaseExpired.as_str(),
        "instance.op_lease_expired"
    );
}

#[test]
fn transitions_compose_into_one() {
    let first = Transition {
        link: Some(FleetLink::default()),
        events: vec![(EventKind::StatusChanged, "a".into())],
        timers: vec![(Timer::Action, Some(1))],
        ..Transition::default()
    };
    let second = Transition {
        record: Some(record(Status::Running)),
        events: vec![(EventKind::Started, String::new())],
        timers: vec![(Timer::Action, None)],
        notices: vec![Notice::TargetOutcome {
            target_id: 1,
            result: Ok(()),
        }],
        ..Transition::default()
    };
    let both = first.clone().then(second);
    assert_eq!(both.link, first.link, "kept: the second has no link");
    assert_eq!(both.record.map(|r| r.status), Some(Status::Running));
    assert_eq!(
        kinds(&Transition {
            events: both.events,
            ..Transition::default()
        }),
        vec![EventKind::StatusChanged, EventKind::Started]
    );
    assert_eq!(
        both.timers,
        vec![(Timer::Action, Some(1)), (Timer::Action, None)],
        "in order: the later wins"
    );
    assert_eq!(both.notices.len(), 1);
    assert!(Transition::default().then(Transition::default()).is_empty());
}

#[test]
fn a_provision_records_each_new_piece_of_infrastructure_once() {
    let mut bare = busy(OpKind::Provision, Status::Provisioning);
    bare.machine = None;
    bare.volume = None;
    let volume = VolumeId("v-9".into());
    let machine = MachineId("m-9".into());
    let progress = |volume: Option<&VolumeId>, machine: Option<&MachineId>| OpOutcome {
        machine: machine.cloned(),
        volume: volume.cloned(),
        ..outcome(Ok(()))
    };
    let t = lifecycle::on_progress(&bare, &progress(Some(&volume), None)).unwrap();
    assert_eq!(kinds(&t), vec![EventKind::VolumeCreated]);
    let with_volume = t.record.unwrap();
    assert_eq!(with_volume.volume.as_ref(), Some(&volume));
    let t = lifecycle::on_progress(&with_volume, &progress(Some(&volume), Some(&machine))).unwrap();
    assert_eq!(
        kinds(&t),
        vec![EventKind::MachineCreated],
        "the volume is not logged twice"
    );
    let both = t.record.unwrap();
    assert_eq!(
        (both.volume, both.machine),
        (Some(volume.clone()), Some(machine.clone()))
    );
    let mut done = bare.clone();
    done.volume = Some(volume.clone());
    assert_eq!(
        lifecycle::on_progress(&done, &progress(Some(&volume), None)),
        None,
        "nothing new"
    );
    let mut stale = progress(Some(&volume), None);
    stale.op_id = 3;
    assert_eq!(
        lifecycle::on_progress(&bare, &stale),
        None,
        "another operation's report"
    );
}
