#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
//! The real `clawdo` binary as a client (`clawdo instance …`) against an in-process server,
//! and `clawdo serve --print-config` with a config file and an environment override.

mod common;

use std::process::{Output, Stdio};

use clawdo::grpc::pb;
use common::cli::{
    RUN_TIMEOUT, assert_error, assert_fails_mentioning, assert_prints, assert_success, clawdo,
    clawdo_command, stderr, stdout,
};
use common::grpc::{start_server, start_server_with, token, wait_status_within};
use common::runtime::{hanging, set_sim};

const ADMIN: &str = "cli-admin-token-0123456789";

/// `clawdo instance <args> --server <url>`.
async fn instance(url: &str, args: &[&str]) -> Output {
    let mut all = vec!["instance"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", url]);
    clawdo(&all, &[]).await
}

#[tokio::test]
async fn instance_commands_drive_a_server() {
    let server = start_server().await;
    let url = server.url();

    let provisioned = instance(
        &url,
        &[
            "provision",
            "--owner",
            "user:cli",
            "--id",
            "cli-1",
            "--image",
            "claw:1",
            "--wait",
        ],
    )
    .await;
    assert_success(&provisioned);
    let text = stdout(&provisioned);
    assert!(text.contains("id:             cli-1\n"), "{text}");
    assert!(text.contains("status:         running\n"), "{text}");
    assert!(text.contains("image:          claw:1\n"), "{text}");

    let got = instance(&url, &["get", "cli-1", "--json"]).await;
    assert_success(&got);
    let json: serde_json::Value =
        serde_json::from_str(stdout(&got).trim()).expect("one JSON object");
    assert_eq!(json["id"], "cli-1");
    assert_eq!(json["owner"], "user:cli");
    assert_eq!(json["status"], "running");
    assert_eq!(json["image_tag"], "claw:1");

    // user:cli is at its limit of one instance: the CLI prints the existing one and says so.
    let again = instance(&url, &["provision", "--owner", "user:cli", "--id", "cli-2"]).await;
    assert_prints(&again, "id:             cli-1\n");
    let note = String::from_utf8_lossy(&again.stderr);
    assert!(note.contains("at its instance limit"), "{note}");

    // A second owner's provision under an idempotency key; the retry answers the same one.
    for _ in 0..2 {
        let org = instance(
            &url,
            &[
                "provision",
                "--owner",
                "org:cli",
                "--id",
                "cli-2",
                "--idempotency-key",
                "k-1",
            ],
        )
        .await;
        assert_prints(&org, "id:             cli-2\n");
    }
    let listed = instance(&url, &["list"]).await;
    assert_success(&listed);
    let lines: Vec<String> = stdout(&listed).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("ID     OWNER     STATUS"), "{lines:?}");
    assert!(
        lines[1].starts_with("cli-1  user:cli  running "),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("cli-2  org:cli   "), "{lines:?}");

    let listed = instance(&url, &["list", "--json", "--owner", "org:cli"]).await;
    assert_success(&listed);
    let ids: Vec<String> = stdout(&listed)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            value["id"].as_str().expect("an id").to_owned()
        })
        .collect();
    assert_eq!(ids, ["cli-2"]);

    // A conflicting reuse of the key is printed plainly with its reason.
    let reused = instance(
        &url,
        &[
            "provision",
            "--owner",
            "org:cli",
            "--id",
            "cli-3",
            "--idempotency-key",
            "k-1",
        ],
    )
    .await;
    assert_fails_mentioning(&reused, "IDEMPOTENCY_KEY_REUSED");

    let restarted = instance(&url, &["restart", "cli-1"]).await;
    assert_prints(&restarted, "status:         restarting\n");

    // Wait (through Watch) for the restart to finish, then destroy.
    let mut grpc = server.instances(None).await;
    wait_status_within(RUN_TIMEOUT, &mut grpc, "cli-1", pb::InstanceStatus::Running).await;

    let destroyed = instance(&url, &["destroy", "cli-1"]).await;
    assert_prints(&destroyed, "status:         destroying\n");

    let missing = instance(&url, &["get", "nope"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        "error: INSTANCE_NOT_FOUND: instance nope not found"
    );
    assert!(stdout(&missing).is_empty());

    let invalid = instance(&url, &["provision", "--owner", "bob"]).await;
    assert_error(&invalid, "error: INVALID_ARGUMENT: invalid owner:");

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn watch_prints_each_event_until_the_instance_is_destroyed() {
    let server = start_server().await;
    let url = server.url();
    assert_success(
        &instance(
            &url,
            &["provision", "--owner", "user:w", "--id", "w-1", "--wait"],
        )
        .await,
    );

    let mut watcher = clawdo_command()
        .args(["instance", "watch", "w-1", "--server", &url])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn clawdo instance watch");
    // The watch's first line (the snapshot) proves it is subscribed before the destroy.
    let mut lines = {
        use tokio::io::AsyncBufReadExt as _;
        tokio::io::BufReader::new(watcher.stdout.take().expect("piped stdout")).lines()
    };
    let first = tokio::time::timeout(RUN_TIMEOUT, lines.next_line())
        .await
        .expect("the snapshot line in time")
        .expect("read stdout")
        .expect("a line");
    assert!(
        first.contains(" snapshot ") && first.contains("running"),
        "{first}"
    );

    assert_success(&instance(&url, &["destroy", "w-1"]).await);
    let mut rest = Vec::new();
    while let Some(line) = tokio::time::timeout(RUN_TIMEOUT, lines.next_line())
        .await
        .expect("a line or the end in time")
        .expect("read stdout")
    {
        rest.push(line);
    }
    let status = tokio::time::timeout(RUN_TIMEOUT, watcher.wait())
        .await
        .expect("watch exits once the instance is destroyed")
        .expect("wait for clawdo");
    assert!(status.success(), "{status:?}");
    let kinds: Vec<&str> = rest
        .iter()
        .map(|line| line.split_whitespace().nth(1).expect("a kind column"))
        .collect();
    assert_eq!(
        kinds,
        [
            "instance.destroy_requested",
            "instance.destroyed",
            "instance.status_changed"
        ],
        "{rest:?}"
    );
    assert!(rest[1].contains("destroyed"), "{rest:?}");

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn errors_print_their_reason_and_exit_1_and_usage_errors_exit_2() {
    let server = start_server_with(|config| config.auth.tokens = vec![token(ADMIN, "admin")]).await;
    let url = server.url();

    let anonymous = instance(&url, &["list"]).await;
    assert_error(&anonymous, "error: UNAUTHENTICATED: ");

    // The token from the environment.
    let provisioned = clawdo(
        &[
            "instance",
            "provision",
            "--owner",
            "user:b",
            "--id",
            "b-1",
            "--wait",
            "--server",
            &url,
        ],
        &[("CLAWDO_TOKEN", ADMIN)],
    )
    .await;
    assert_success(&provisioned);

    // A hanging provider keeps the restart in flight: the second mutation is refused.
    set_sim(&server.runtime, hanging());
    let with_token = |args: &[&str]| {
        let mut all = vec!["instance"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--server", &url, "--token", ADMIN]);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        clawdo(&args, &[]).await
    };
    assert_success(&run(with_token(&["restart", "b-1"])).await);
    let busy = run(with_token(&["stop", "b-1"])).await;
    assert_eq!(busy.status.code(), Some(1));
    assert_eq!(
        stderr(&busy).trim(),
        "error: INSTANCE_BUSY: instance is busy (restarting)"
    );

    let usage = run(with_token(&["get"])).await;
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));

    let unreachable = clawdo(&["instance", "list", "--server", "http://127.0.0.1:1"], &[]).await;
    assert_error(
        &unreachable,
        "error: could not connect to http://127.0.0.1:1",
    );

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn print_config_shows_the_file_and_the_environment_with_tokens_redacted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("clawdo.toml");
    std::fs::write(
        &path,
        r#"
listen = "127.0.0.1:7000"
idle-timeout-secs = 7

[[auth.tokens]]
token = "very-secret-admin-token"
role = "admin"

[[auth.tokens]]
token = "very-secret-owner-token"
role = "owner:user:42"

[provider.sim]
failure-rate = 0.5
"#,
    )
    .expect("write the config file");
    let path = path.to_str().expect("a UTF-8 path");

    let output = clawdo(
        &[
            "serve",
            "--config",
            path,
            "--print-config",
            "--shutdown-deadline-secs",
            "3",
        ],
        &[
            ("CLAWDO_PROVIDER_SIM_LATENCY_MS", "5"),
            ("CLAWDO_LISTEN", "127.0.0.1:7001"),
        ],
    )
    .await;
    assert_success(&output);
    let printed = stdout(&output);
    for expected in [
        "listen = \"127.0.0.1:7001\"\n",
        "idle-timeout-secs = 7\n",
        "shutdown-deadline-secs = 3\n",
        "latency-ms = 5\n",
        "failure-rate = 0.5\n",
        "token = \"***\"\n",
        "role = \"owner:user:42\"\n",
    ] {
        assert!(
            printed.contains(expected),
            "{expected:?} missing from:\n{printed}"
        );
    }
    assert!(!printed.contains("very-secret"), "{printed}");
    let reread = clawdo::config::Config::from_toml(&printed).expect("the output is a config");
    assert_eq!(reread.provider.sim.latency_ms, 5);

    let bad_env = clawdo(
        &["serve", "--config", path, "--print-config"],
        &[("CLAWDO_PROVIDER_SIM_LATENCY_MS", "soon")],
    )
    .await;
    assert_eq!(bad_env.status.code(), Some(1));
    assert!(
        stderr(&bad_env).contains("CLAWDO_PROVIDER_SIM_LATENCY_MS"),
        "{}",
        stderr(&bad_env)
    );
    assert!(stdout(&bad_env).is_empty());
}
