#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
//! End-to-end tests of `clawdo.v1.InstanceService` over loopback with the sim provider: the
//! lifecycle, `Watch`, busy refusals, owner isolation and authentication, bad input on every
//! RPC (typed errors, nothing written), and instances surviving a server restart.

mod common;

use std::time::Duration;

use clawdo::actors::provider::sim::SimConfig;
use clawdo::client::{self, InstanceClient};
use clawdo::grpc::pb;
use common::grpc::{
    TestServer, WAIT, error_info, start_server, start_server_in, start_server_with, token,
    wait_status,
};
use tonic::{Code, Status};

const ADMIN: &str = "admin-token-0123456789abcdef";
const ALICE: &str = "alice-token-0123456789abcdef";
const BOB: &str = "bob-token-0123456789abcdef";

/// Asserts that `result` failed with `code` and ErrorInfo `reason`; returns the status.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, reason: &str) -> Status {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(error_info(&status).0, reason, "{status:?}");
    status
}

/// Asserts an `INVALID_ARGUMENT` naming `field`.
#[track_caller]
fn invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = refused(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        error_info(&status).1.get("field").map(String::as_str),
        Some(field),
        "{status:?}"
    );
}

/// A provision for `owner` on image `tag` of instance `id` (`None`: the server's default),
/// unpinned, without an idempotency key.
fn provision_with(owner: &str, tag: Option<&str>, id: Option<&str>) -> pb::ProvisionRequest {
    pb::ProvisionRequest {
        owner: owner.into(),
        image_tag: tag.map(String::from),
        pinned: false,
        instance_id: id.map(String::from),
        idempotency_key: None,
    }
}

async fn provision(client: &mut InstanceClient, owner: &str, id: &str) -> pb::Instance {
    client
        .provision(provision_with(owner, None, Some(id)))
        .await
        .expect("provision")
        .into_inner()
        .instance
        .expect("an instance")
}

async fn list(client: &mut InstanceClient, owner: Option<&str>) -> Vec<String> {
    client::list_all(client, owner)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// Defines, for each `name(Request) -> Reply`, an `async fn name(client, id)` calling the
/// `InstanceService` RPC `name` on instance `id` and returning its reply or refusal.
macro_rules! by_id {
    ($($name:ident($request:ident) -> $reply:ty;)+) => {$(
        #[doc = concat!("`", stringify!($name), "` on instance `id`.")]
        async fn $name(client: &mut InstanceClient, id: &str) -> Result<$reply, Status> {
            client
                .$name(pb::$request {
                    instance_id: id.into(),
                })
                .await
                .map(tonic::Response::into_inner)
        }
    )+};
}

by_id! {
    get(GetInstanceRequest) -> pb::Instance;
    restart(RestartInstanceRequest) -> pb::Instance;
    stop(StopInstanceRequest) -> pb::Instance;
    start(StartInstanceRequest) -> pb::Instance;
    destroy(DestroyInstanceRequest) -> pb::Instance;
    watch(WatchInstanceRequest) -> tonic::Streaming<pb::InstanceWatchEvent>;
}

async fn change_version(
    client: &mut InstanceClient,
    id: &str,
    tag: &str,
    pin: Option<bool>,
) -> Result<pb::Instance, Status> {
    client
        .change_version(pb::ChangeVersionRequest {
            instance_id: id.into(),
            image_tag: tag.into(),
            pin,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts that every RPC on instance `id` but `Start` (which [`start`] checks where it
/// applies) is refused as `NOT_FOUND` / `INSTANCE_NOT_FOUND`.
async fn not_found_everywhere(client: &mut InstanceClient, id: &str) {
    fn not_found<T: std::fmt::Debug>(result: Result<T, Status>) {
        refused(result, Code::NotFound, "INSTANCE_NOT_FOUND");
    }
    not_found(get(client, id).await);
    not_found(restart(client, id).await);
    not_found(stop(client, id).await);
    not_found(change_version(client, id, "claw:2", None).await);
    not_found(destroy(client, id).await);
    not_found(watch(client, id).await);
}

/// Starts a server with default options, provisions instance `id` for `owner` and waits until
/// it runs; returns the server and an unauthenticated client.
async fn serve_running(owner: &str, id: &str) -> (TestServer, InstanceClient) {
    let server = start_server().await;
    let mut client = server.instances(None).await;
    provision(&mut client, owner, id).await;
    wait_status(&mut client, id, pb::InstanceStatus::Running).await;
    (server, client)
}

/// The next message of a watch stream (`None`: the stream ended), bounded by [`WAIT`].
async fn next(
    stream: &mut tonic::Streaming<pb::InstanceWatchEvent>,
) -> Option<pb::instance_watch_event::Item> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a watch message in time")
        .expect("the watch stream stays healthy")
        .map(|message| message.item.expect("every message carries an item"))
}

fn auth_config(config: &mut clawdo::server::Config) {
    config.auth.tokens = vec![
        token(ADMIN, "admin"),
        token(ALICE, "owner:user:alice"),
        token(BOB, "owner:user:bob"),
    ];
}

#[tokio::test]
async fn the_full_lifecycle_runs_over_grpc() {
    let server = start_server().await;
    let mut client = server.instances(None).await;

    let created = client
        .provision(pb::ProvisionRequest {
            owner: "user:42".into(),
            image_tag: Some("claw:1".into()),
            pinned: false,
            instance_id: Some("life-1".into()),
            idempotency_key: Some("life-1-key".into()),
        })
        .await
        .expect("provision")
        .into_inner();
    assert!(created.created);
    assert_eq!(
        created
            .reservation
            .as_ref()
            .map(|r| r.idempotency_key.as_str()),
        Some("life-1-key")
    );
    let created = created.instance.expect("an instance");
    assert_eq!(created.id, "life-1");
    assert_eq!(created.owner, "user:42");
    assert_eq!(created.status(), pb::InstanceStatus::Provisioning);
    assert_eq!(created.operation, "provision");
    assert_eq!(created.desired(), pb::DesiredState::Running);

    let running = wait_status(&mut client, "life-1", pb::InstanceStatus::Running).await;
    assert!(
        running.machine_id.is_some() && running.volume_id.is_some(),
        "{running:?}"
    );
    assert_eq!(running.operation, "");
    assert!(running.next_reconcile_at_ms.is_some());

    // The same id for another owner, and operations that do not apply to a running instance.
    refused(
        client
            .provision(provision_with("org:42", None, Some("life-1")))
            .await,
        Code::AlreadyExists,
        "INSTANCE_EXISTS",
    );
    refused(
        start(&mut client, "life-1").await,
        Code::FailedPrecondition,
        "INSTANCE_WRONG_STATUS",
    );

    let stopping = stop(&mut client, "life-1").await.expect("stop");
    assert_eq!(stopping.status(), pb::InstanceStatus::Stopping);
    let stopped = wait_status(&mut client, "life-1", pb::InstanceStatus::Stopped).await;
    assert_eq!(stopped.desired(), pb::DesiredState::Stopped);

    let starting = start(&mut client, "life-1").await.expect("start");
    assert_eq!(starting.status(), pb::InstanceStatus::Starting);
    wait_status(&mut client, "life-1", pb::InstanceStatus::Running).await;

    let restarting = restart(&mut client, "life-1").await.expect("restart");
    assert_eq!(restarting.status(), pb::InstanceStatus::Restarting);
    wait_status(&mut client, "life-1", pb::InstanceStatus::Running).await;

    let updating = change_version(&mut client, "life-1", "claw:2", Some(true))
        .await
        .expect("change version");
    assert_eq!(updating.status(), pb::InstanceStatus::Updating);
    let updated = wait_status(&mut client, "life-1", pb::InstanceStatus::Running).await;
    assert_eq!(updated.image_tag, "claw:2");
    assert!(updated.pinned);

    let destroying = destroy(&mut client, "life-1").await.expect("destroy");
    assert_eq!(destroying.status(), pb::InstanceStatus::Destroying);
    let destroyed = wait_status(&mut client, "life-1", pb::InstanceStatus::Destroyed).await;
    assert_eq!(destroyed.desired(), pb::DesiredState::Destroyed);

    refused(
        restart(&mut client, "life-1").await,
        Code::FailedPrecondition,
        "INSTANCE_DESTROYED",
    );
    assert!(
        list(&mut client, None).await.is_empty(),
        "destroyed instances are not listed"
    );

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn watch_sends_the_snapshot_then_every_event_in_order() {
    let (server, mut client) = serve_running("user:w", "watched").await;

    let mut stream = watch(&mut client, "watched").await.expect("watch opens");
    let Some(pb::instance_watch_event::Item::Snapshot(snapshot)) = next(&mut stream).await else {
        panic!("the first message is a snapshot");
    };
    assert_eq!(snapshot.id, "watched");
    assert_eq!(snapshot.status(), pb::InstanceStatus::Running);

    restart(&mut client, "watched").await.expect("restart");
    let mut events = Vec::new();
    while events.len() < 3 {
        match next(&mut stream).await {
            Some(pb::instance_watch_event::Item::Event(event)) => events.push(event),
            other => panic!("expected an event, got {other:?}"),
        }
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "instance.restart_requested",
            "instance.restarted",
            "instance.status_changed"
        ]
    );
    let statuses: Vec<pb::InstanceStatus> = events.iter().map(|e| e.status()).collect();
    assert_eq!(
        statuses,
        [
            pb::InstanceStatus::Restarting,
            pb::InstanceStatus::Running,
            pb::InstanceStatus::Running
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.instance_id == "watched" && e.at_ms > 0)
    );

    // Destroying ends the stream after the whole destroying commit.
    destroy(&mut client, "watched").await.expect("destroy");
    let mut tail = Vec::new();
    while let Some(item) = next(&mut stream).await {
        match item {
            pb::instance_watch_event::Item::Event(event) => tail.push(event),
            pb::instance_watch_event::Item::Snapshot(s) => panic!("unexpected snapshot {s:?}"),
        }
    }
    let kinds: Vec<&str> = tail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "instance.destroy_requested",
            "instance.destroyed",
            "instance.status_changed"
        ]
    );
    assert_eq!(
        tail.last().map(pb::InstanceEvent::status),
        Some(pb::InstanceStatus::Destroyed)
    );
    assert!(events.last().unwrap().seq < tail[0].seq);
    assert!(tail.windows(2).all(|w| w[0].seq < w[1].seq), "{tail:?}");

    // Watching a destroyed instance: its snapshot, then the end.
    let mut stream = watch(&mut client, "watched").await.expect("watch opens");
    let Some(pb::instance_watch_event::Item::Snapshot(snapshot)) = next(&mut stream).await else {
        panic!("the first message is a snapshot");
    };
    assert_eq!(snapshot.status(), pb::InstanceStatus::Destroyed);
    assert!(next(&mut stream).await.is_none());

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn open_watch_streams_end_when_the_server_shuts_down() {
    // A drain deadline far beyond the wait below: the stream must end because the server
    // closes it, not because the deadline cut the connection.
    let mut server =
        start_server_with(|config| config.shutdown_deadline = Duration::from_secs(120)).await;
    let mut client = server.instances(None).await;
    provision(&mut client, "user:w", "open-watch").await;
    let mut stream = watch(&mut client, "open-watch").await.expect("watch opens");
    assert!(matches!(
        next(&mut stream).await,
        Some(pb::instance_watch_event::Item::Snapshot(_))
    ));
    wait_status(&mut client, "open-watch", pb::InstanceStatus::Running).await;

    server.begin_shutdown();
    // Drain what was sent before the shutdown; then the stream ends on its own.
    tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await
    .expect("the stream ends at shutdown, well before the drain deadline");
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_busy_instance_refuses_mutations_and_still_answers_reads() {
    let (server, mut client) = serve_running("user:busy", "busy-1").await;

    // Every provider call from now on hangs: the restart holds the instance busy.
    server
        .sim()
        .set_config(SimConfig {
            hang_rate: 1.0,
            ..server.sim().config()
        })
        .expect("a valid sim config");
    let restarting = restart(&mut client, "busy-1").await.expect("restart");
    assert_eq!(restarting.status(), pb::InstanceStatus::Restarting);

    let busy = refused(
        stop(&mut client, "busy-1").await,
        Code::FailedPrecondition,
        "INSTANCE_BUSY",
    );
    assert_eq!(
        error_info(&busy).1.get("status").map(String::as_str),
        Some("restarting")
    );
    assert_eq!(busy.message(), "instance is busy (restarting)");
    for result in [
        restart(&mut client, "busy-1").await,
        start(&mut client, "busy-1").await,
        change_version(&mut client, "busy-1", "claw:9", None).await,
        destroy(&mut client, "busy-1").await,
    ] {
        refused(result, Code::FailedPrecondition, "INSTANCE_BUSY");
    }

    let read = get(&mut client, "busy-1")
        .await
        .expect("reads stay answerable");
    assert_eq!(read.status(), pb::InstanceStatus::Restarting);
    assert_eq!(read.operation, "restart");
    assert_eq!(list(&mut client, None).await, ["busy-1"]);
    let mut stream = watch(&mut client, "busy-1").await.expect("watch opens");
    let Some(pb::instance_watch_event::Item::Snapshot(snapshot)) = next(&mut stream).await else {
        panic!("the first message is a snapshot");
    };
    assert_eq!(snapshot.status(), pb::InstanceStatus::Restarting);
    drop(stream);

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn owners_see_and_touch_only_their_own_instances() {
    let server = start_server_with(auth_config).await;
    let mut admin = server.instances(Some(ADMIN)).await;
    let mut alice = server.instances(Some(ALICE)).await;
    let mut bob = server.instances(Some(BOB)).await;

    // An owner token provisions for its own owner (named or implied), never for another.
    provision(&mut alice, "user:alice", "alice-1").await;
    let implied = alice
        .provision(pb::ProvisionRequest {
            instance_id: Some("alice-2".into()),
            ..Default::default()
        })
        .await
        .expect("an owner token implies its owner")
        .into_inner();
    // alice is at her limit of one instance: she gets alice-1 back, nothing is made.
    assert!(!implied.created);
    let implied = implied.instance.expect("an instance");
    assert_eq!(
        (implied.id.as_str(), implied.owner.as_str()),
        ("alice-1", "user:alice")
    );
    refused(
        bob.provision(provision_with("user:alice", None, Some("bob-as-alice")))
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    provision(&mut bob, "user:bob", "bob-1").await;
    provision(&mut admin, "org:acme", "acme-1").await;
    wait_status(&mut alice, "alice-1", pb::InstanceStatus::Running).await;

    // Another owner's instance does not exist for bob.
    not_found_everywhere(&mut bob, "alice-1").await;
    assert_eq!(
        get(&mut alice, "alice-1")
            .await
            .expect("alice's own")
            .status(),
        pb::InstanceStatus::Running,
        "bob's refused calls changed nothing"
    );

    assert_eq!(list(&mut alice, None).await, ["alice-1"]);
    assert_eq!(list(&mut bob, None).await, ["bob-1"]);
    assert!(
        list(&mut bob, Some("user:alice")).await.is_empty(),
        "an owner cannot list another owner"
    );
    assert_eq!(list(&mut admin, None).await, ["acme-1", "alice-1", "bob-1"]);
    assert_eq!(list(&mut admin, Some("user:bob")).await, ["bob-1"]);
    get(&mut admin, "alice-1")
        .await
        .expect("an admin sees every instance");

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_unauthenticated_and_admin_calls_need_admin() {
    let server = start_server_with(auth_config).await;

    for token in [None, Some("not-a-configured-token-0000")] {
        let mut client = server.instances(token).await;
        refused(
            get(&mut client, "any").await,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        refused(
            client.provision(provision_with("user:x", None, None)).await,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        refused(
            watch(&mut client, "any").await,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
        let mut admin = server.admin(token).await;
        refused(
            admin.stats(pb::StatsRequest {}).await,
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        );
    }

    let mut owner_admin = server.admin(Some(ALICE)).await;
    refused(
        owner_admin.stats(pb::StatsRequest {}).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    server
        .admin(Some(ADMIN))
        .await
        .stats(pb::StatsRequest {})
        .await
        .expect("an admin token may call AdminService");

    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "clawdo.v1.InstanceService".into(),
        })
        .await
        .expect("health needs no token")
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    assert!(
        server
            .runtime
            .instances()
            .list(&clawdo::instances::Caller::Admin, None, None, 10)
            .await
            .expect("list")
            .instances
            .is_empty()
    );
    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_input_on_every_rpc_is_refused_and_writes_nothing() {
    let server = start_server().await;
    let mut client = server.instances(None).await;
    let activations = server.activations();

    let long = "x".repeat(129);
    for (request, field) in [
        (provision_with("", None, None), "owner"),
        (provision_with("bob", None, None), "owner"),
        (provision_with("user:", None, None), "owner"),
        (provision_with("team:x", None, None), "owner"),
        (provision_with("user:a b", None, None), "owner"),
        (provision_with("user:ok", Some(""), None), "image_tag"),
        (provision_with("user:ok", Some("a b"), None), "image_tag"),
        (provision_with("user:ok", Some(&long), None), "image_tag"),
        (provision_with("user:ok", None, Some("")), "instance_id"),
        (provision_with("user:ok", None, Some("a/b")), "instance_id"),
        (provision_with("user:ok", None, Some("../x")), "instance_id"),
        (provision_with("user:ok", None, Some(&long)), "instance_id"),
    ] {
        invalid(client.provision(request).await, field);
    }

    for (id, field) in [
        ("", "instance_id"),
        ("a/b", "instance_id"),
        ("a b", "instance_id"),
    ] {
        invalid(get(&mut client, id).await, field);
        invalid(start(&mut client, id).await, field);
        invalid(stop(&mut client, id).await, field);
        invalid(restart(&mut client, id).await, field);
        invalid(destroy(&mut client, id).await, field);
        invalid(watch(&mut client, id).await, field);
        invalid(change_version(&mut client, id, "claw:2", None).await, field);
    }
    invalid(
        change_version(&mut client, "nope", "", None).await,
        "image_tag",
    );
    invalid(
        change_version(&mut client, "nope", "a b", None).await,
        "image_tag",
    );
    invalid(
        change_version(&mut client, "nope", &long, Some(true)).await,
        "image_tag",
    );

    for (request, field) in [
        (
            pb::ListInstancesRequest {
                owner: Some(String::new()),
                ..Default::default()
            },
            "owner",
        ),
        (
            pb::ListInstancesRequest {
                owner: Some("team:x".into()),
                ..Default::default()
            },
            "owner",
        ),
        (
            pb::ListInstancesRequest {
                page_token: "not a token".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        invalid(client.list(request).await, field);
    }

    // Well-formed ids that name nothing.
    not_found_everywhere(&mut client, "nope").await;
    refused(
        start(&mut client, "nope").await,
        Code::NotFound,
        "INSTANCE_NOT_FOUND",
    );

    // A request over the 1 MiB limit is refused before it is decoded.
    let huge = format!("user:{}", "x".repeat(2 * 1024 * 1024));
    let oversized = client
        .provision(provision_with(&huge, None, Some("huge")))
        .await
        .expect_err("an oversized request is refused");
    assert!(
        matches!(oversized.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{oversized:?}"
    );

    assert_eq!(
        server.activations(),
        activations,
        "no refused call activated an object"
    );
    assert!(
        list(&mut client, None).await.is_empty(),
        "no instance was created"
    );
    assert!(
        get(&mut client, "huge").await.is_err(),
        "the oversized provision wrote nothing"
    );
    // The connection is still usable after the refusals.
    provision(&mut client, "user:ok", "fine").await;
    assert_eq!(list(&mut client, None).await, ["fine"]);

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_restarted_server_keeps_every_instance_and_its_status() {
    let server = start_server().await;
    let mut client = server.instances(None).await;
    // One fresh provision per owner at a time: each is awaited before the owner's next.
    provision(&mut client, "org:keep", "keep-running").await;
    provision(&mut client, "org:other", "keep-updated").await;
    wait_status(&mut client, "keep-running", pb::InstanceStatus::Running).await;
    provision(&mut client, "org:keep", "keep-stopped").await;
    wait_status(&mut client, "keep-stopped", pb::InstanceStatus::Running).await;
    wait_status(&mut client, "keep-updated", pb::InstanceStatus::Running).await;
    stop(&mut client, "keep-stopped").await.expect("stop");
    wait_status(&mut client, "keep-stopped", pb::InstanceStatus::Stopped).await;
    change_version(&mut client, "keep-updated", "claw:7", Some(true))
        .await
        .expect("change version");
    wait_status(&mut client, "keep-updated", pb::InstanceStatus::Running).await;

    let before = client::list_all(&mut client, None).await.expect("list");
    assert_eq!(before.len(), 3);
    drop(client);
    let data_dir = server.stop_keeping_data().await;

    let server = start_server_in(data_dir, |_| {}).await;
    let mut client = server.instances(None).await;
    let after = client::list_all(&mut client, None).await.expect("list");
    let summary = |instances: &[pb::Instance]| -> Vec<(String, String, i32, String, bool, String)> {
        instances
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    i.owner.clone(),
                    i.status,
                    i.image_tag.clone(),
                    i.pinned,
                    i.sandbox_id.clone(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&after), summary(&before));
    assert_eq!(
        list(&mut client, Some("org:keep")).await,
        ["keep-running", "keep-stopped"],
        "the owner index survives too"
    );
    let stopped = get(&mut client, "keep-stopped").await.expect("get");
    assert_eq!(stopped.status(), pb::InstanceStatus::Stopped);
    assert_eq!(stopped.desired(), pb::DesiredState::Stopped);

    // And the instances still work.
    start(&mut client, "keep-stopped").await.expect("start");
    wait_status(&mut client, "keep-stopped", pb::InstanceStatus::Running).await;

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn provision_admission_answers_with_reasons_over_grpc() {
    // The provider never answers, so the first provision stays unresolved.
    let server = start_server_with(|config| config.provider.sim.hang_rate = 1.0).await;
    let mut client = server.instances(None).await;
    let request = |key: &str| pb::ProvisionRequest {
        owner: "user:adm".into(),
        idempotency_key: Some(key.into()),
        ..Default::default()
    };
    let first = client
        .provision(request("k-1"))
        .await
        .expect("admitted")
        .into_inner();
    assert!(first.created);
    let reservation = first.reservation.expect("a reservation");
    assert_eq!(
        (reservation.id, reservation.status()),
        (1, pb::ReservationStatus::ProviderStarted)
    );
    let id = first.instance.expect("an instance").id;

    // Another key while it runs: ABORTED / PROVISION_IN_PROGRESS naming the instance.
    let status = refused(
        client.provision(request("k-2")).await,
        Code::Aborted,
        "PROVISION_IN_PROGRESS",
    );
    assert_eq!(
        error_info(&status).1.get("instance_id"),
        Some(&id),
        "{status:?}"
    );
    // The same key: the same provision, at once.
    let again = client
        .provision(request("k-1"))
        .await
        .expect("a retry answers")
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.instance.map(|i| i.id), Some(id));
    // The same key for another request.
    let mut other = request("k-1");
    other.pinned = true;
    refused(
        client.provision(other).await,
        Code::FailedPrecondition,
        "IDEMPOTENCY_KEY_REUSED",
    );
    invalid(
        client.provision(request("bad key")).await,
        "idempotency_key",
    );
    server.stop().await.expect("clean shutdown");
}
