//! Claw instances through the embedding API, against the sim provider: lifecycle, busy
//! rejection with answerable reads, lease expiry, provider failures, owner isolation, bad input
//! writing nothing, persistence across restarts, and reconcile drift.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::time::Duration;

use clawdo::Runtime;
use clawdo::actors::ManualClock;
use clawdo::actors::instance::{InstanceError, InstanceView, OpKind, Status};
use clawdo::actors::provider::sim::SimConfig;
use clawdo::instances::{Caller, ProvisionSpec};
use common::runtime::{T0, advance, failing, hanging, runtime, set_sim, set_time, start, wait_for};

fn spec(owner: &str, id: &str) -> ProvisionSpec {
    ProvisionSpec {
        owner: owner.into(),
        image_tag: Some("claw:1.0".into()),
        pinned: false,
        instance_id: Some(id.into()),
        idempotency_key: None,
    }
}

/// Provisions instance `id` for `owner` (see [`spec`]) as an admin and waits until it runs;
/// returns its view then.
async fn provision_running(rt: &Runtime, owner: &str, id: &str) -> InstanceView {
    rt.instances()
        .provision(&Caller::Admin, spec(owner, id))
        .await
        .unwrap();
    wait_for(rt, id, Status::Running).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_lifecycle_against_the_sim_provider() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    let admin = Caller::Admin;

    let view = api
        .provision(&admin, spec("user:42", "life"))
        .await
        .unwrap()
        .instance;
    assert_eq!(
        (view.status, view.operation),
        (Status::Provisioning, Some(OpKind::Provision))
    );
    let view = wait_for(&rt, "life", Status::Running).await;
    assert!(view.machine_id.is_some() && view.volume_id.is_some());
    assert_eq!(view.image_tag, "claw:1.0");

    api.stop(&admin, "life").await.unwrap();
    wait_for(&rt, "life", Status::Stopped).await;
    api.start(&admin, "life").await.unwrap();
    wait_for(&rt, "life", Status::Running).await;
    assert_eq!(
        api.restart(&admin, "life").await.unwrap().status,
        Status::Restarting
    );
    wait_for(&rt, "life", Status::Running).await;
    let updating = api
        .change_version(&admin, "life", "claw:2.0", Some(true))
        .await
        .unwrap();
    assert_eq!(updating.status, Status::Updating);
    let view = wait_for(&rt, "life", Status::Running).await;
    assert_eq!((view.image_tag.as_str(), view.pinned), ("claw:2.0", true));
    api.destroy(&admin, "life").await.unwrap();
    wait_for(&rt, "life", Status::Destroyed).await;

    let sim = rt.sim().unwrap();
    assert_eq!(sim.machines_created(), 1);
    let calls = sim.calls();
    assert_eq!(
        (calls.start_machine, calls.stop_machine, calls.update_image),
        (2, 1, 1)
    );
    assert_eq!(
        calls.restart_machine, 2,
        "one restart + the version change's restart"
    );
    let kinds: Vec<String> = api
        .events(&admin, "life", 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    for expected in [
        "instance.provision_started",
        "instance.volume_created",
        "instance.machine_created",
        "instance.provisioned",
        "instance.version_changed",
        "instance.destroyed",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:?}"
        );
    }
    assert!(
        matches!(
            api.start(&admin, "life").await,
            Err(InstanceError::Destroyed(_))
        ),
        "a destroyed instance takes no more operations"
    );
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_instances_refuse_changes_but_answer_reads_and_a_lease_returns_them() {
    let (_tmp, clock, rt) = start().await;
    let api = rt.instances();
    let admin = Caller::Admin;
    provision_running(&rt, "user:1", "busy").await;

    set_sim(&rt, hanging());
    assert_eq!(
        api.restart(&admin, "busy").await.unwrap().status,
        Status::Restarting
    );
    for attempt in [
        api.restart(&admin, "busy").await,
        api.stop(&admin, "busy").await,
        api.destroy(&admin, "busy").await,
        api.change_version(&admin, "busy", "claw:9", None).await,
    ] {
        assert_eq!(attempt, Err(InstanceError::Busy(Status::Restarting)));
    }
    let during = api.get(&admin, "busy").await.unwrap();
    assert_eq!(
        during.status,
        Status::Restarting,
        "reads answer while the provider hangs"
    );

    // The hung call's lease runs out: the instance is returned, not wedged. (The sim keeps
    // hanging until then: the restart's task may reach it only now.)
    advance(&rt, &clock, Duration::from_secs(600)).await;
    let after = api.get(&admin, "busy").await.unwrap();
    assert_eq!(after.status, Status::Stopped);
    assert_eq!(after.reason, "lease expired during restart");
    assert_eq!(after.operation, None);
    set_sim(&rt, SimConfig::default());
    api.start(&admin, "busy").await.unwrap();
    wait_for(&rt, "busy", Status::Running).await;
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_end_in_a_clear_state_with_a_reason() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    let admin = Caller::Admin;
    set_sim(&rt, failing());
    api.provision(&admin, spec("user:1", "fails"))
        .await
        .unwrap();
    // Nothing was built: the instance is over and its reservation released.
    let view = wait_for(&rt, "fails", Status::Destroyed).await;
    assert!(
        view.reason.starts_with("provision failed: "),
        "{}",
        view.reason
    );
    assert_eq!(view.operation, None);
    assert_eq!(rt.sim().unwrap().machines_created(), 0);

    set_sim(&rt, SimConfig::default());
    provision_running(&rt, "user:2", "ok").await;
    set_sim(&rt, failing());
    api.stop(&admin, "ok").await.unwrap();
    let view = wait_for(&rt, "ok", Status::Running).await;
    assert!(
        view.reason.starts_with("stop failed: "),
        "a failed stop leaves it running: {view:?}"
    );
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_and_change_only_their_own_instances() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    let alice = Caller::Owner("user:alice".into());
    let bob = Caller::Owner("user:bob".into());
    api.provision(&alice, spec("user:alice", "a-1"))
        .await
        .unwrap();
    api.provision(&bob, spec("user:bob", "b-1")).await.unwrap();
    wait_for(&rt, "a-1", Status::Running).await;

    let not_found = Err(InstanceError::NotFound("a-1".into()));
    assert_eq!(api.get(&bob, "a-1").await, not_found);
    assert_eq!(api.restart(&bob, "a-1").await, not_found);
    assert_eq!(api.destroy(&bob, "a-1").await, not_found);
    assert!(matches!(
        api.watch(&bob, "a-1").await,
        Err(InstanceError::NotFound(_))
    ));
    assert!(matches!(
        api.provision(&bob, spec("user:alice", "b-2")).await,
        Err(InstanceError::PermissionDenied(_))
    ));
    let ids = |page: clawdo::instances::Page| {
        page.instances.into_iter().map(|v| v.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(api.list(&bob, None, None, 100).await.unwrap()), ["b-1"]);
    assert!(
        api.list(&bob, Some("user:alice"), None, 100)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    assert_eq!(
        ids(api.list(&Caller::Admin, None, None, 100).await.unwrap()),
        ["a-1", "b-1"]
    );
    assert_eq!(
        ids(api
            .list(&Caller::Admin, Some("user:alice"), None, 100)
            .await
            .unwrap()),
        ["a-1"]
    );
    assert_eq!(api.get(&alice, "a-1").await.unwrap().owner, "user:alice");
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_writes_nothing() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    let admin = Caller::Admin;
    fn field<T: std::fmt::Debug>(r: Result<T, InstanceError>) -> &'static str {
        match r {
            Err(InstanceError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(
        field(api.provision(&admin, spec("bob", "x")).await),
        "owner"
    );
    assert_eq!(
        field(api.provision(&admin, spec("user:a b", "x")).await),
        "owner"
    );
    let mut bad_tag = spec("user:1", "x");
    bad_tag.image_tag = Some("has space".into());
    assert_eq!(field(api.provision(&admin, bad_tag).await), "image_tag");
    assert_eq!(
        field(api.provision(&admin, spec("user:1", "../x")).await),
        "instance_id"
    );
    assert_eq!(field(api.get(&admin, "").await), "instance_id");
    assert_eq!(
        field(api.restart(&admin, &"x".repeat(129)).await),
        "instance_id"
    );
    assert_eq!(
        field(api.change_version(&admin, "x", "", None).await),
        "image_tag"
    );
    assert!(matches!(
        api.list(&admin, Some("nobody"), None, 10).await,
        Err(InstanceError::InvalidArgument { field: "owner", .. })
    ));
    assert_eq!(
        api.get(&admin, "never-made").await,
        Err(InstanceError::NotFound("never-made".into()))
    );
    assert_eq!(
        api.stop(&admin, "never-made").await,
        Err(InstanceError::NotFound("never-made".into()))
    );

    assert_eq!(rt.stats().activations, 0, "nothing was activated");
    assert!(
        api.list(&admin, None, None, 10)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    assert_eq!(rt.sim().unwrap().calls().create_volume, 0);
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_their_status_survive_a_restart_and_interrupted_operations_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let rt = runtime(tmp.path(), &clock).await;
        let api = rt.instances();
        for id in ["keep-1", "keep-2", "cut"] {
            provision_running(&rt, "org:acme", id).await;
        }
        api.stop(&Caller::Admin, "keep-2").await.unwrap();
        wait_for(&rt, "keep-2", Status::Stopped).await;
        set_sim(&rt, hanging());
        api.restart(&Caller::Admin, "cut").await.unwrap();
        rt.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    let rt = runtime(tmp.path(), &clock).await;
    let api = rt.instances();
    assert_eq!(
        api.get(&Caller::Admin, "keep-1").await.unwrap().status,
        Status::Running
    );
    assert_eq!(
        api.get(&Caller::Admin, "keep-2").await.unwrap().status,
        Status::Stopped
    );
    let cut = api.get(&Caller::Admin, "cut").await.unwrap();
    assert_eq!(
        (cut.status, cut.reason.as_str()),
        (Status::Stopped, "interrupted by a restart during restart")
    );
    let listed: Vec<_> = api
        .list(&Caller::Admin, Some("org:acme"), None, 10)
        .await
        .unwrap()
        .instances;
    assert_eq!(listed.len(), 3);
    assert_eq!(
        rt.sim().unwrap().machines_created(),
        3,
        "the sim provider persisted its machines"
    );
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_records_a_machine_that_stopped_unexpectedly() {
    let (_tmp, clock, rt) = start().await;
    let api = rt.instances();
    let view = provision_running(&rt, "user:9", "drift").await;
    let next = view.next_reconcile_at.expect("reconcile scheduled");
    assert_eq!(next, T0 + 300_000, "5 minutes while running");

    let machine = clawdo::actors::provider::MachineId(view.machine_id.unwrap());
    rt.sim().unwrap().stop_unexpectedly(&machine).unwrap();
    let (_, mut events) = api.watch(&Caller::Admin, "drift").await.unwrap();
    set_time(&rt, &clock, next).await;
    let drift = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == "instance.machine_state_drift" {
                return event;
            }
        }
    })
    .await
    .expect("drift recorded");
    assert_eq!(
        drift.detail,
        "status running but the provider reports stopped"
    );
    let view = api.get(&Caller::Admin, "drift").await.unwrap();
    assert_eq!(view.last_reconcile_at, Some(next));
    assert_eq!(view.next_reconcile_at, Some(next + 300_000));
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}
