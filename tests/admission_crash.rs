//! SIGKILL between each step of the provision path, then restart (SPEC §5, §12): the owner is
//! never blocked forever (the provision completes, is released, or is resolved by the
//! registry's alarm) and never has two machines.
//!
//! A child `clawdo demo-provision --crash-at <step>` kills itself with SIGKILL the moment the
//! provision reaches the step (see `clawdo_actors::crashpoint`). The test then opens the same
//! data directory in-process on a manual clock, retries with the same idempotency key (which
//! must answer at once), lets time pass alarm by alarm until a provision under a new key is
//! admitted or answered with the owner's instance, and checks the provider's machines.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use clawdo::Runtime;
use clawdo::actors::crashpoint;
use clawdo::actors::instance::{InstanceError, Status};
use clawdo::actors::registry::ReservationStatus;
use clawdo::actors::{Clock as _, ManualClock, SystemClock};
use clawdo::instances::{Caller, ProvisionSpec, Provisioned};
use common::cli::{clawdo_command, output_within};
use common::runtime::{builder, live_machines, spec_with_key};

const OWNER: &str = "user:crash";
/// Bound on the child's run and on every single call after the restart.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Rounds of "advance the clock, deliver due alarms" before the owner must be unblocked.
const ROUNDS: usize = 8;

/// A provision for [`OWNER`] under the idempotency key `key`.
fn spec(key: &str) -> ProvisionSpec {
    spec_with_key(OWNER, key)
}

/// Run the child until it kills itself at `point`.
async fn provision_and_die_at(dir: &std::path::Path, point: &str) {
    let output = output_within(
        CALL_TIMEOUT,
        clawdo_command()
            .args(["demo-provision", "--data-dir"])
            .arg(dir)
            .args([
                "--owner",
                OWNER,
                "--idempotency-key",
                "k-1",
                "--crash-at",
                point,
            ])
            .env("RUST_LOG", "warn"),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.signal(),
        Some(9),
        "the child was SIGKILLed at {point}: {:?}; stdout {stdout}; stderr {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("crash {point}")), "{stdout}");
}

/// The instance id a provision answer or refusal is about.
fn instance_of(result: &Result<Provisioned, InstanceError>) -> Option<String> {
    match result {
        Ok(p) => Some(p.instance.id.clone()),
        Err(
            InstanceError::ProvisionInProgress { instance_id, .. }
            | InstanceError::ProvisionCompletionPending { instance_id, .. }
            | InstanceError::ProvisionReleased { instance_id, .. },
        ) => Some(instance_id.clone()),
        Err(_) => None,
    }
}

/// Wait (bounded) until instance `id` holds no operation.
async fn settle(runtime: &Runtime, id: &str) {
    let api = runtime.instances();
    let Ok((view, mut events)) = api.watch(&Caller::Admin, id).await else {
        return; // never created
    };
    if !view.status.is_busy() {
        return;
    }
    tokio::time::timeout(CALL_TIMEOUT, async {
        while let Ok(event) = events.recv().await {
            if !event.status.is_busy() {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} stayed busy"));
}

async fn crash_then_recover(point: &'static str) {
    let tmp = tempfile::tempdir().unwrap();
    provision_and_die_at(tmp.path(), point).await;

    let clock = ManualClock::new(SystemClock.now());
    let runtime = builder(tmp.path(), &clock)
        .build()
        .await
        .expect("the runtime reopens the crashed data directory");
    let api = runtime.instances();

    // A retry with the same key answers at once, whatever the step.
    let retry = tokio::time::timeout(CALL_TIMEOUT, api.provision(&Caller::Admin, spec("k-1")))
        .await
        .unwrap_or_else(|_| panic!("{point}: the same-key retry hung"));
    let first = instance_of(&retry)
        .unwrap_or_else(|| panic!("{point}: unexpected retry outcome {retry:?}"));
    settle(&runtime, &first).await;

    // Let time pass, alarm by alarm, until the owner can provision (or gets its instance).
    let mut unblocked = None;
    for round in 0..ROUNDS {
        let attempt =
            tokio::time::timeout(CALL_TIMEOUT, api.provision(&Caller::Admin, spec("k-2")))
                .await
                .unwrap_or_else(|_| panic!("{point}: a provision hung"));
        match attempt {
            Ok(p) => {
                eprintln!(
                    "{point}: retry answered {:?}; a new key got {} (created {}) after {round} \
                     rounds",
                    retry.as_ref().map(|p| (p.created, p.instance.status)),
                    p.instance.id,
                    p.created
                );
                unblocked = Some(p);
                break;
            }
            Err(
                InstanceError::ProvisionInProgress { .. }
                | InstanceError::ProvisionCompletionPending { .. },
            ) => {}
            Err(other) => panic!("{point}: unexpected refusal {other:?}"),
        }
        clock.advance(Duration::from_secs(300));
        runtime.host().settle_alarms().await.unwrap();
        settle(&runtime, &first).await;
    }
    let unblocked = unblocked
        .unwrap_or_else(|| panic!("{point}: the owner stayed blocked for {ROUNDS} rounds"));
    settle(&runtime, &unblocked.instance.id).await;
    let view = api
        .get(&Caller::Admin, &unblocked.instance.id)
        .await
        .unwrap();
    assert_eq!(view.status, Status::Running, "{point}: {view:?}");

    // The first provision is resolved, never left unresolved.
    let reservation = api.reservation(OWNER, 1).await.unwrap();
    assert!(
        matches!(
            reservation.status,
            ReservationStatus::Completed | ReservationStatus::Released
        ),
        "{point}: {reservation:?}"
    );
    // One machine for the owner, whatever happened.
    let machines = live_machines(&runtime, OWNER);
    assert_eq!(machines.len(), 1, "{point}: {machines:?}");
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Defines one test `name` per `name => POINT` (running [`crash_then_recover`] at
/// `crashpoint::POINT`), and [`TESTED`], the points those tests cover, in order.
macro_rules! crash_tests {
    ($($name:ident => $point:ident,)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_then_recover(crashpoint::$point).await;
            }
        )+

        /// The crash points the tests above cover.
        const TESTED: &[&str] = &[$(crashpoint::$point),+];
    };
}

crash_tests! {
    sigkill_after_admission => ADMITTED,
    sigkill_after_provider_work_was_marked_started => PROVIDER_STARTED,
    sigkill_after_the_instance_started_provisioning => INSTANCE_PROVISIONING,
    sigkill_after_the_volume_was_created => VOLUME_RECORDED,
    sigkill_after_the_instance_ran_but_before_the_registry_knew => PROVISIONED,
}

#[test]
fn every_crash_point_has_a_test() {
    assert_eq!(TESTED, crashpoint::ALL);
}
