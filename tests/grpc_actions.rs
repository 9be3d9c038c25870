//! `clawdo.v1.ActionService` end to end over loopback: admin-only auth, typed errors (reasons
//! and RetryInfo) for bad input and a full cap, `Get` with per-target detail, `List` counts,
//! the new `Stats` fields, the `clawdo action schedule|watch|get|list|cancel` commands of the
//! real binary, and a SIGKILL of a serving child process in the middle of a bulk restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::process::Stdio;
use std::time::Duration;

use clawdo::actors::provider::sim::SimConfig;
use clawdo::client;
use clawdo::client::actions::{self as ac, ActionClient};
use clawdo::grpc::pb;
use common::cli::{assert_fails_mentioning, assert_success, clawdo_command, clawdo_within};
use common::grpc::{provision_running, reason, start_server_with, token};
use common::runtime::{hang_restart, started_events};
use common::{END_TO_END, eventually_with, free_port};
use tonic::Code;
use tonic_types::StatusExt as _;

const ADMIN: &str = "actions-admin-token-0123456789";
const OWNER: &str = "actions-owner-token-0123456789";
/// Longest a single `clawdo action …` invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn restart(ids: &[String]) -> pb::ScheduleActionRequest {
    pb::ScheduleActionRequest {
        kind: pb::ActionKind::ScheduledRestart.into(),
        instance_ids: ids.to_vec(),
        ..Default::default()
    }
}

async fn actions(server: &common::grpc::TestServer) -> ActionClient {
    ac::action_client(server.channel().await, Some(ADMIN)).unwrap()
}

/// `Get` of action `action_id`; it must be answered.
async fn get_action(client: &mut ActionClient, action_id: i64) -> pb::ActionDetail {
    client
        .get(pb::GetActionRequest { action_id })
        .await
        .unwrap()
        .into_inner()
}

/// `List` of the actions with default paging; it must be answered.
async fn list_actions(client: &mut ActionClient) -> pb::ListActionsResponse {
    client
        .list(pb::ListActionsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// The `field` an `INVALID_ARGUMENT` refusal names in its `ErrorInfo`.
fn field(status: &tonic::Status) -> Option<String> {
    reason(status).2.remove("field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_service_schedules_reports_and_refuses_with_reasons() {
    let server = start_server_with(|config| {
        config.auth.tokens = vec![token(ADMIN, "admin"), token(OWNER, "owner:user:7")];
        config.fleet.max_concurrent = std::num::NonZeroUsize::MIN;
    })
    .await;
    let mut instances = server.instances(Some(ADMIN)).await;
    let ids = provision_running(&mut instances, "g", 4).await;
    let mut client = actions(&server).await;

    // Admin only.
    let mut owner = ac::action_client(server.channel().await, Some(OWNER)).unwrap();
    let refused = owner
        .list(pb::ListActionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut anonymous = ac::action_client(server.channel().await, None).unwrap();
    let refused = anonymous
        .list(pb::ListActionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Bad input: typed errors, nothing written.
    let mut bad_time = restart(&ids);
    bad_time.run_at = "next tuesday".into();
    let status = client.schedule(bad_time).await.unwrap_err();
    let (code, why, meta) = reason(&status);
    assert_eq!(
        (code, why.as_str()),
        (Code::InvalidArgument, "INVALID_ARGUMENT")
    );
    assert_eq!(meta.get("field").map(String::as_str), Some("run_at"));
    let status = client.schedule(restart(&[])).await.unwrap_err();
    assert_eq!(field(&status).as_deref(), Some("targets"));
    let many: Vec<String> = (0..10_001).map(|i| format!("x{i}")).collect();
    let status = client.schedule(restart(&many)).await.unwrap_err();
    assert_eq!(field(&status).as_deref(), Some("targets"));
    let mut bad_tag = restart(&ids);
    bad_tag.kind = pb::ActionKind::VersionChange.into();
    bad_tag.image_tag = Some("bad tag".into());
    let status = client.schedule(bad_tag).await.unwrap_err();
    assert_eq!(field(&status).as_deref(), Some("image_tag"));
    let mut no_kind = restart(&ids);
    no_kind.kind = 0;
    assert_eq!(
        client.schedule(no_kind).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let status = client
        .schedule(restart(&["nobody".to_string()]))
        .await
        .unwrap_err();
    assert_eq!(reason(&status).1, "INSTANCE_NOT_FOUND");
    let listed = list_actions(&mut client).await;
    assert!(listed.actions.is_empty(), "nothing was written");

    // A long-running action holds the only slot (the sim hangs its call).
    let busy = hang_restart(server.sim(), END_TO_END, "the hung call", async {
        client
            .schedule(restart(&ids[..1]))
            .await
            .unwrap()
            .into_inner()
    })
    .await;
    server.sim().set_config(SimConfig::default()).unwrap();
    let mut later = restart(&ids[1..]);
    later.run_at = "2099-01-01T00:00:00Z".into();
    let later = client.schedule(later).await.unwrap().into_inner();
    let status = client.schedule(restart(&ids[1..2])).await.unwrap_err();
    let (code, why, meta) = reason(&status);
    assert_eq!(
        (code, why.as_str()),
        (Code::Aborted, "CONFLICT_PENDING_ACTION")
    );
    assert_eq!(meta.get("instance_id").map(String::as_str), Some("g-1"));

    // The instance shows its upcoming action.
    let banner = eventually_with(END_TO_END, "the banner", || {
        let mut instances = instances.clone();
        async move {
            instances
                .get(pb::GetInstanceRequest {
                    instance_id: "g-2".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .upcoming_action
        }
    })
    .await;
    assert_eq!(banner.action_id, later.id);
    assert_eq!(banner.kind, "scheduled_restart");

    // Run now with the cap full: RESOURCE_EXHAUSTED, CAPACITY_FULL, RetryInfo.
    let status = client
        .run_now(pb::RunNowRequest {
            action_id: later.id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (code, why, _) = reason(&status);
    assert_eq!(
        (code, why.as_str()),
        (Code::ResourceExhausted, "CAPACITY_FULL")
    );
    let retry = status.get_details_retry_info().expect("a RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d >= Duration::from_secs(1))
    );

    // Stats report the slot, the cap and the sim's peak.
    let stats = server
        .admin(Some(ADMIN))
        .await
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.fleet_slots_in_use, stats.fleet_max_concurrent),
        (1, 1)
    );
    assert!(stats.sim_peak_concurrent_mutations.is_some());

    // Forced run-now bypasses the cap; Get shows every target.
    let forced = client
        .run_now(pb::RunNowRequest {
            action_id: later.id,
            force: true,
            requested_by: "oncall".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((forced.targets, forced.forced), (3, true));
    let detail = eventually_with(END_TO_END, "the forced action", || {
        let mut client = client.clone();
        async move {
            let d = get_action(&mut client, later.id).await;
            d.action.as_ref().is_some_and(ac::is_done).then_some(d)
        }
    })
    .await;
    assert_eq!(detail.targets.len(), 3);
    assert!(
        detail
            .targets
            .iter()
            .all(|t| t.status() == pb::TargetStatus::Applied && t.slot_claimed_at_ms.is_some())
    );
    let audit = server.runtime.actions().audit(5).await.unwrap();
    assert_eq!(audit[0].actor, "admin (oncall)");

    // Cancel the busy action: its running target finishes (at its lease), nothing pending.
    let cancelled = client
        .cancel(pb::CancelActionRequest { action_id: busy.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), pb::ActionStatus::Cancelled);
    let status = client
        .cancel_target(pb::CancelTargetRequest {
            action_id: later.id,
            target_id: detail.targets[0].id,
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).1, "ACTION_WRONG_STATUS");
    let status = client
        .get(pb::GetActionRequest { action_id: 999 })
        .await
        .unwrap_err();
    assert_eq!(reason(&status).1, "ACTION_NOT_FOUND");

    // List: newest first, with counts.
    let listed = list_actions(&mut client).await;
    assert_eq!(listed.actions.len(), 2);
    assert_eq!(listed.actions[0].id, later.id);
    assert_eq!(listed.actions[0].counts.unwrap().applied, 3);
    server.stop().await.unwrap();
}

/// `clawdo <args>` with a clean environment, run to completion within [`CLI_TIMEOUT`].
async fn clawdo(args: &[&str]) -> std::process::Output {
    clawdo_within(CLI_TIMEOUT, args, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_schedules_a_bulk_restart_and_watches_it_finish() {
    let server = start_server_with(|config| {
        config.provider.sim.latency_ms = 20;
    })
    .await;
    let mut instances = server.instances(None).await;
    let ids = provision_running(&mut instances, "cli", 6).await;
    let url = server.url();
    let file = server.data_dir.path().join("targets.txt");
    std::fs::write(&file, format!("# bulk\n{}\n", ids[2..].join("\n"))).unwrap();
    let mut args = vec![
        "action",
        "schedule",
        "--restart",
        "--at",
        "+1s",
        "--server",
        &url,
    ];
    args.extend(["--stage", "canary:1", "--instances-file"]);
    let file = file.to_str().unwrap().to_owned();
    args.push(&file);
    args.extend([ids[0].as_str(), ids[1].as_str(), "--json"]);
    let out = clawdo(&args).await;
    assert_success(&out);
    let scheduled: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(scheduled["counts"]["total"], 6);
    let id = scheduled["id"].as_i64().unwrap().to_string();

    let out = clawdo(&[
        "action",
        "watch",
        &id,
        "--interval-ms",
        "100",
        "--server",
        &url,
    ])
    .await;
    assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status:     completed"), "{text}");
    assert!(text.contains("6/6 terminal: 6 applied"), "{text}");

    let out = clawdo(&["action", "get", &id, "--server", &url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stage 0 canary"), "{text}");
    assert_eq!(text.matches("applied").count(), 1 + 6, "{text}");
    let out = clawdo(&["action", "list", "--server", &url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().nth(1).unwrap().contains("completed"), "{text}");
    let out = clawdo(&["action", "cancel", &id, "--server", &url]).await;
    assert_fails_mentioning(&out, "ACTION_WRONG_STATUS");
    let out = clawdo(&[
        "action",
        "schedule",
        "--restart",
        "--at",
        "soon",
        "x",
        "--server",
        &url,
    ])
    .await;
    assert_fails_mentioning(&out, "INVALID_ARGUMENT");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_action_then_restart_applies_no_target_twice_and_finishes() {
    let data_dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = clawdo_command()
        .args(["serve", "--listen", &listen, "--data-dir"])
        .arg(data_dir.path())
        .env("CLAWDO_FLEET_MAX_CONCURRENT", "2")
        .env("CLAWDO_PROVIDER_SIM_LATENCY_MS", "40")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    // Bounded readiness poll: the only wait is for the child to bind.
    let channel = eventually_with(END_TO_END, "the child server", || {
        let url = url.clone();
        async move { client::connect(&url).await.ok() }
    })
    .await;
    let mut instances = client::instance_client(channel.clone(), None).unwrap();
    let ids = provision_running(&mut instances, "k", 12).await;
    let mut client = ac::action_client(channel, None).unwrap();
    let action = client.schedule(restart(&ids)).await.unwrap().into_inner();
    // Kill it once some targets are done and others are running or waiting.
    eventually_with(END_TO_END, "progress", || {
        let mut client = client.clone();
        async move {
            let d = get_action(&mut client, action.id).await;
            let c = d.action.unwrap().counts.unwrap();
            (c.applied >= 3 && c.pending > 0).then_some(())
        }
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // Restart in-process on the same data directory (system clock).
    let runtime = clawdo::Runtime::builder()
        .data_dir(data_dir.path())
        .fleet_config(clawdo::actors::fleet::FleetConfig {
            max_concurrent: std::num::NonZeroUsize::new(2).unwrap(),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let detail = eventually_with(END_TO_END, "the action to finish after the restart", || {
        let actions = runtime.actions();
        async move {
            let d = actions.get(action.id).await.unwrap();
            (d.action.status == clawdo::actors::fleet::ActionStatus::Completed).then_some(d)
        }
    })
    .await;
    let c = detail.action.counts;
    assert_eq!(c.terminal(), 12, "{detail:#?}");
    // A run cut by the kill is failed as interrupted, never run again; the rest applied.
    for t in &detail.targets {
        match t.status {
            clawdo::actors::fleet::TargetStatus::Applied => {}
            clawdo::actors::fleet::TargetStatus::Failed => {
                assert_eq!(t.failure_reason.as_deref(), Some("interrupted"), "{t:?}");
            }
            other => panic!("target {t:?} ended {other:?}"),
        }
    }
    assert!(c.applied >= 10, "{detail:#?}");
    // No target started twice; every applied one started exactly once (a claim cut by the
    // kill before the instance recorded its start never ran at all).
    let mut counts = Vec::new();
    for id in &ids {
        counts.push(started_events(&runtime, id).await);
    }
    for t in &detail.targets {
        let n = ids
            .iter()
            .position(|id| *id == t.instance_id)
            .map(|i| counts[i])
            .unwrap();
        if t.status == clawdo::actors::fleet::TargetStatus::Applied {
            assert_eq!(n, 1, "{t:?}: {counts:?}");
        } else {
            assert!(n <= 1, "{t:?}: {counts:?}");
        }
    }
    runtime.shutdown(Duration::from_secs(10)).await.unwrap();
}
