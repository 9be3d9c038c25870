//! Provision admission through the owner's registry (SPEC §5), in-process against the sim
//! provider: racing provisions make one machine, idempotent retries, instance limits per owner
//! kind, released and fail-closed reservations, the registry's alarm (stale admissions,
//! cleanup of failed provisions), destroy fencing, and bad input writing nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::time::Duration;

use clawdo::Runtime;
use clawdo::actors::ManualClock;
use clawdo::actors::instance::{InstanceError, Status};
use clawdo::actors::provider::sim::SimConfig;
use clawdo::actors::registry::{
    BeginOutcome, BeginRequest, Completion, Registry, RegistryConfig, RegistryReply,
    RegistryRequest, ReservationStatus,
};
use clawdo::instances::{Caller, Provisioned};
use common::runtime::{
    advance, failing, hanging, live_machines, set_sim, spec_with_key, start, start_with, wait_for,
};

/// Wait (bounded) until `owner`'s reservation `id` has `status` (the instance reports to its
/// registry from a task, so the report may trail the instance's own status by a moment).
async fn wait_reservation(runtime: &Runtime, owner: &str, id: u64, status: ReservationStatus) {
    let api = runtime.instances();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if api.reservation(owner, id).await.unwrap().status == status {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("reservation {owner}/{id} never became {status:?}"));
}

/// Provision for `owner` under key `first` against a provider that never answers, and let the
/// operation's lease expire: the reservation fails closed. Returns the instance id; the sim is
/// left hanging.
async fn fail_closed(rt: &Runtime, clock: &ManualClock, owner: &str) -> String {
    set_sim(rt, hanging());
    let hung = provision(rt, owner, "first").await;
    advance(rt, clock, Duration::from_secs(600)).await; // the operation's lease
    wait_for(rt, &hung.instance.id, Status::Stopped).await;
    wait_reservation(
        rt,
        owner,
        1,
        ReservationStatus::FailedRequiresReconciliation,
    )
    .await;
    hung.instance.id
}

/// 64 concurrent provisions for `owner`, call `i` under the key `key(i)`, with 5 ms of
/// provider latency so that the first provision is still open while the others arrive.
async fn race(
    rt: &Runtime,
    owner: &str,
    key: impl Fn(usize) -> String,
) -> Vec<Result<Provisioned, InstanceError>> {
    set_sim(
        rt,
        SimConfig {
            latency_ms: 5,
            ..SimConfig::default()
        },
    );
    let api = rt.instances();
    let calls = (0..64).map(|i| {
        let api = api.clone();
        let spec = spec_with_key(owner, &key(i));
        tokio::spawn(async move { api.provision(&Caller::Admin, spec).await })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Provisions for `owner` under the idempotency key `key`; the provision must be answered.
async fn provision(rt: &Runtime, owner: &str, key: &str) -> Provisioned {
    rt.instances()
        .provision(&Caller::Admin, spec_with_key(owner, key))
        .await
        .unwrap()
}

/// Provisions for `owner` under `key`, which must create a new instance, and waits until it
/// runs; returns its id.
async fn provision_new(rt: &Runtime, owner: &str, key: &str) -> String {
    let p = provision(rt, owner, key).await;
    assert!(p.created);
    wait_for(rt, &p.instance.id, Status::Running).await;
    p.instance.id
}

async fn registry(runtime: &Runtime, owner: &str, request: RegistryRequest) -> RegistryReply {
    runtime
        .host()
        .get::<Registry>(owner)
        .unwrap()
        .call(request)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_racing_provisions_with_distinct_keys_make_one_machine() {
    let (_tmp, _clock, rt) = start().await;
    let results = race(&rt, "user:race", |i| format!("k-{i}")).await;
    let winners: Vec<&Provisioned> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().filter(|p| p.created))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one provision is admitted: {results:?}"
    );
    let winner = winners[0].instance.id.clone();
    let (mut conflicts, mut at_limit) = (0, 0);
    for result in &results {
        match result {
            Ok(p) if p.created => {}
            // The winner completed first: the owner is at its limit and gets it back.
            Ok(p) => {
                assert_eq!(
                    (p.instance.id.as_str(), &p.reservation),
                    (winner.as_str(), &None)
                );
                at_limit += 1;
            }
            Err(
                InstanceError::ProvisionInProgress { instance_id, .. }
                | InstanceError::ProvisionCompletionPending { instance_id, .. },
            ) => {
                assert_eq!(instance_id, &winner);
                conflicts += 1;
            }
            Err(other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(conflicts + at_limit, 63);

    wait_for(&rt, &winner, Status::Running).await;
    wait_reservation(&rt, "user:race", 1, ReservationStatus::Completed).await;
    assert_eq!(rt.sim().unwrap().machines_created(), 1);
    assert_eq!(live_machines(&rt, "user:race").len(), 1);
    // Afterwards every new key gets the existing instance, and still no machine is made.
    let later = provision(&rt, "user:race", "k-later").await;
    assert_eq!((later.instance.id, later.created), (winner, false));
    assert_eq!(rt.sim().unwrap().machines_created(), 1);
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_retries_with_one_key_all_get_the_same_instance() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    let results: Vec<Provisioned> = race(&rt, "user:same", |_| "the-key".into())
        .await
        .into_iter()
        .map(|r| r.expect("a retry with the same key never conflicts"))
        .collect();
    let id = results[0].instance.id.clone();
    assert!(results.iter().all(|p| p.instance.id == id), "{results:?}");
    assert_eq!(results.iter().filter(|p| p.created).count(), 1);
    assert!(
        results
            .iter()
            .all(|p| p.reservation.as_ref().map(|r| r.id) == Some(1))
    );
    wait_for(&rt, &id, Status::Running).await;
    assert_eq!(rt.sim().unwrap().machines_created(), 1);

    // The same key with a different request is refused, and changes nothing.
    let mut other = spec_with_key("user:same", "the-key");
    other.image_tag = Some("claw:2".into());
    assert_eq!(
        api.provision(&Caller::Admin, other).await,
        Err(InstanceError::IdempotencyKeyReused("the-key".into()))
    );
    let again = provision(&rt, "user:same", "the-key").await;
    assert_eq!((again.instance.id, again.created), (id, false));
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_owners_have_their_own_limit_and_clean_up_only_their_key() {
    let config = RegistryConfig {
        org_instance_limit: 2,
        ..RegistryConfig::default()
    };
    let (_tmp, _clock, rt) = start_with(|b| b.registry_config(config)).await;
    let api = rt.instances();
    let admin = Caller::Admin;

    let user = provision(&rt, "user:acme", "u-1").await;
    wait_for(&rt, &user.instance.id, Status::Running).await;
    let mut org = Vec::new();
    for key in ["o-1", "o-2"] {
        org.push(provision_new(&rt, "org:acme", key).await);
    }
    // At the limit: the oldest instance comes back and nothing is made.
    let full = provision(&rt, "org:acme", "o-3").await;
    assert_eq!(
        (full.instance.id.as_str(), full.created),
        (org[0].as_str(), false)
    );
    assert_eq!(rt.sim().unwrap().machines_created(), 3);

    // Destroying an org instance frees one place in the org, and touches no user route.
    api.destroy(&admin, &org[0]).await.unwrap();
    wait_for(&rt, &org[0], Status::Destroyed).await;
    let next = provision(&rt, "org:acme", "o-4").await;
    assert!(next.created);
    let user_page = api.list(&admin, Some("user:acme"), None, 10).await.unwrap();
    assert_eq!(
        user_page
            .instances
            .iter()
            .map(|v| v.id.clone())
            .collect::<Vec<_>>(),
        [user.instance.id]
    );
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_infrastructure_is_released_and_retryable_at_once() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    set_sim(&rt, failing());
    let failed = provision(&rt, "user:f", "first").await;
    wait_for(&rt, &failed.instance.id, Status::Destroyed).await;
    wait_reservation(&rt, "user:f", 1, ReservationStatus::Released).await;
    let reservation = api.reservation("user:f", 1).await.unwrap();
    assert!(
        reservation
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("provision failed: ")),
        "{reservation:?}"
    );
    // The same key answers its outcome; a new key provisions at once.
    match api
        .provision(&Caller::Admin, spec_with_key("user:f", "first"))
        .await
    {
        Err(InstanceError::ProvisionReleased { instance_id, .. }) => {
            assert_eq!(instance_id, failed.instance.id);
        }
        other => panic!("expected ProvisionReleased, got {other:?}"),
    }
    set_sim(&rt, SimConfig::default());
    provision_new(&rt, "user:f", "second").await;
    assert_eq!(rt.sim().unwrap().machines_created(), 1);
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_infrastructure_may_exist_fails_closed_until_the_alarm_cleans_up() {
    let (_tmp, clock, rt) = start().await;
    let api = rt.instances();
    // The provider never answers: whatever it did is unknown.
    let id = fail_closed(&rt, &clock, "user:h").await;

    // Fail closed: the owner cannot start another provision yet; the same key answers.
    match api
        .provision(&Caller::Admin, spec_with_key("user:h", "second"))
        .await
    {
        Err(InstanceError::ProvisionCompletionPending { instance_id, .. }) => {
            assert_eq!(instance_id, id);
        }
        other => panic!("expected ProvisionCompletionPending, got {other:?}"),
    }
    let same = provision(&rt, "user:h", "first").await;
    assert_eq!(
        (
            same.instance.id.as_str(),
            same.created,
            same.reservation.map(|r| r.status)
        ),
        (
            id.as_str(),
            false,
            Some(ReservationStatus::FailedRequiresReconciliation)
        )
    );

    // The registry's alarm has the instance destroyed; the destroy releases the reservation.
    set_sim(&rt, SimConfig::default());
    advance(&rt, &clock, Duration::from_secs(120)).await;
    wait_for(&rt, &id, Status::Destroyed).await;
    wait_reservation(&rt, "user:h", 1, ReservationStatus::Released).await;
    provision_new(&rt, "user:h", "second").await;
    assert_eq!(live_machines(&rt, "user:h").len(), 1);
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_admission_is_fenced_and_released_by_the_alarm() {
    let (_tmp, clock, rt) = start().await;
    let api = rt.instances();
    // A caller admitted and then vanished (its process died before telling the instance).
    let begun = registry(
        &rt,
        "user:s",
        RegistryRequest::Begin(BeginRequest {
            idempotency_key: "lost".into(),
            fingerprint: "image=<default>;pinned=false;id=<generated>".into(),
            instance_id: "inst-lost".into(),
        }),
    )
    .await;
    assert!(matches!(
        begun,
        RegistryReply::Begun(BeginOutcome::Admitted(_))
    ));
    assert!(matches!(
        api.provision(&Caller::Admin, spec_with_key("user:s", "other"))
            .await,
        Err(InstanceError::ProvisionInProgress { .. })
    ));

    advance(&rt, &clock, Duration::from_secs(61)).await;
    let released = api.reservation("user:s", 1).await.unwrap();
    assert_eq!(released.status, ReservationStatus::Released);
    // The instance was fenced: the vanished caller's retry cannot create it any more.
    match api
        .provision(&Caller::Admin, spec_with_key("user:s", "lost"))
        .await
    {
        Err(InstanceError::ProvisionReleased { instance_id, .. }) => {
            assert_eq!(instance_id, "inst-lost");
        }
        other => panic!("expected ProvisionReleased, got {other:?}"),
    }
    assert_eq!(
        api.get(&Caller::Admin, "inst-lost").await.unwrap().status,
        Status::Destroyed
    );
    provision_new(&rt, "user:s", "other").await;
    assert_eq!(
        rt.sim().unwrap().calls().create_volume,
        1,
        "only the new provision built"
    );
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_completion_after_destroy_is_rejected_and_revives_nothing() {
    let (_tmp, clock, rt) = start().await;
    let api = rt.instances();
    // A provision fails closed (hung provider, lease expired), then the owner destroys it.
    let id = fail_closed(&rt, &clock, "user:d").await;
    set_sim(&rt, SimConfig::default());
    api.destroy(&Caller::Admin, &id).await.unwrap();
    wait_for(&rt, &id, Status::Destroyed).await;
    wait_reservation(&rt, "user:d", 1, ReservationStatus::Released).await;

    // The hung task's completion arrives late: rejected, no route comes back.
    let late = registry(
        &rt,
        "user:d",
        RegistryRequest::Complete {
            reservation: 1,
            instance_id: id.clone(),
        },
    )
    .await;
    assert_eq!(
        late,
        RegistryReply::Completion(Completion::Rejected(ReservationStatus::Released))
    );
    assert!(
        api.list(&Caller::Admin, Some("user:d"), None, 10)
            .await
            .unwrap()
            .instances
            .is_empty()
    );

    // A completed provision whose instance is destroyed: a repeated completion is a no-op.
    let ok = provision(&rt, "user:d", "second").await;
    wait_for(&rt, &ok.instance.id, Status::Running).await;
    wait_reservation(&rt, "user:d", 2, ReservationStatus::Completed).await;
    api.destroy(&Caller::Admin, &ok.instance.id).await.unwrap();
    wait_for(&rt, &ok.instance.id, Status::Destroyed).await;
    let complete_again = || {
        registry(
            &rt,
            "user:d",
            RegistryRequest::Complete {
                reservation: 2,
                instance_id: ok.instance.id.clone(),
            },
        )
    };
    assert_eq!(
        complete_again().await,
        RegistryReply::Completion(Completion::AlreadyCompleted)
    );
    // The destroy report (sent from a task) removes the route; the repeat did not revive it.
    let routes = || {
        registry(
            &rt,
            "user:d",
            RegistryRequest::ListRoutes {
                after: None,
                limit: 10,
            },
        )
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while routes().await != RegistryReply::Routes(Vec::new()) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the destroyed instance's route is removed");
    assert_eq!(
        complete_again().await,
        RegistryReply::Completion(Completion::AlreadyCompleted)
    );
    assert_eq!(routes().await, RegistryReply::Routes(Vec::new()));
    // And the owner is free to provision again.
    assert!(provision(&rt, "user:d", "third").await.created);
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_provision_input_is_refused_and_writes_nothing() {
    let (_tmp, _clock, rt) = start().await;
    let api = rt.instances();
    for key in ["", "has space", "slash/key", &"k".repeat(129)] {
        match api
            .provision(&Caller::Admin, spec_with_key("user:bad", key))
            .await
        {
            Err(InstanceError::InvalidArgument { field, .. }) => {
                assert_eq!(field, "idempotency_key");
            }
            other => panic!("{key:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    let mut bad_tag = spec_with_key("user:bad", "k");
    bad_tag.image_tag = Some("no spaces".into());
    assert!(matches!(
        api.provision(&Caller::Admin, bad_tag).await,
        Err(InstanceError::InvalidArgument {
            field: "image_tag",
            ..
        })
    ));
    assert!(
        !rt.host().exists::<Registry>("user:bad").await.unwrap(),
        "no registry was created for refused input"
    );
    assert_eq!(rt.sim().unwrap().calls().create_volume, 0);
    rt.shutdown(Duration::from_secs(5)).await.unwrap();
}
