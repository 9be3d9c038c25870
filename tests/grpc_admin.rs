//! End-to-end tests of the gRPC skeleton over loopback: `AdminService/Stats`, gRPC health,
//! server reflection, the loopback-only listen policy, and the `clawdo serve` binary's
//! start-up and SIGTERM shutdown.

#![allow(clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use clawdo::grpc::pb;
use clawdo::server;
use common::cli::{clawdo_command, output_within};
use common::free_port;
use common::grpc::{STOP_TIMEOUT, start_server, start_server_with};
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Readiness poll for a child process: at most this many connection attempts …
const READY_ATTEMPTS: u32 = 200;
/// … this far apart.
const READY_INTERVAL: Duration = Duration::from_millis(50);

async fn health_check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<HealthCheckResponse, tonic::Status> {
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The next serving status a health `Watch` stream sends; fails the test, naming `what` was
/// expected, if the stream breaks or ends instead.
async fn next_status(
    watch: &mut tonic::Streaming<HealthCheckResponse>,
    what: &str,
) -> ServingStatus {
    watch
        .message()
        .await
        .unwrap_or_else(|e| panic!("the health Watch broke waiting for {what}: {e}"))
        .unwrap_or_else(|| panic!("the health Watch ended before {what}"))
        .status()
}

#[tokio::test]
async fn stats_are_served_and_decode() {
    let server = start_server().await;
    let mut client = pb::admin_service_client::AdminServiceClient::new(server.channel().await);

    let stats = client
        .stats(pb::StatsRequest {})
        .await
        .expect("Stats succeeds")
        .into_inner();

    // A fresh runtime over an empty data directory has fired no alarm.
    let lateness = stats
        .alarm_lateness
        .expect("alarm_lateness is always present");
    assert_eq!(lateness.count, 0);
    assert_eq!(
        (lateness.p50_ms, lateness.p99_ms, lateness.max_ms),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(stats.alarms_fired, 0);
    assert_eq!(stats.armed_alarms, 0);
    assert!(stats.resident_objects <= stats.activations);

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn health_reports_serving() {
    let server = start_server().await;
    let mut client = HealthClient::new(server.channel().await);

    for service in ["clawdo.v1.AdminService", ""] {
        let response = health_check(&mut client, service)
            .await
            .expect("health Check succeeds");
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let unknown = health_check(&mut client, "clawdo.v1.NoSuchService")
        .await
        .expect_err("an unknown service is not reported");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let server = start_server().await;
    let mut client = ServerReflectionClient::new(server.channel().await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection stream opens")
        .into_inner();
    let response: ServerReflectionResponse = responses
        .message()
        .await
        .expect("reflection answers")
        .expect("one response per request");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "expected a service list, got {:?}",
            response.message_response
        );
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "clawdo.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn reflection_v1alpha_describes_admin_service() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let server = start_server().await;
    let mut client = ServerReflectionClient::new(server.channel().await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "clawdo.v1.AdminService".to_owned(),
        )),
    };
    let response = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection stream opens")
        .into_inner()
        .message()
        .await
        .expect("reflection answers")
        .expect("one response per request");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!(
            "expected file descriptors, got {:?}",
            response.message_response
        );
    };
    assert!(
        !files.file_descriptor_proto.is_empty(),
        "the file defining clawdo.v1.AdminService is returned"
    );

    server.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn non_loopback_listen_addresses_are_refused() {
    for addr in ["0.0.0.0:50051", "[::]:0", "192.0.2.7:50051"] {
        let addr: SocketAddr = addr.parse().expect("a valid socket address");
        let refused = server::check_listen_addr(addr).expect_err("non-loopback is refused");
        assert!(
            matches!(refused, server::Error::NonLoopbackListen { addr: a } if a == addr),
            "{refused:?}"
        );
        // Refused before any socket is bound.
        let refused = server::bind(addr).await.expect_err("bind refuses too");
        assert!(
            matches!(refused, server::Error::NonLoopbackListen { .. }),
            "{refused:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_waiting_for_open_streams_at_the_deadline() {
    let mut server =
        start_server_with(|config| config.shutdown_deadline = Duration::from_secs(3)).await;
    let mut client = HealthClient::new(server.channel().await);

    // A health Watch stream stays open until the client drops it: graceful shutdown alone
    // would wait for it forever.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Watch opens")
        .into_inner();
    assert_eq!(
        next_status(&mut watch, "an initial status").await,
        ServingStatus::Serving
    );

    let started = tokio::time::Instant::now();
    server.begin_shutdown();
    assert_eq!(
        next_status(&mut watch, "a status update while draining").await,
        ServingStatus::NotServing
    );

    server.stop().await.expect("clean shutdown");
    // Paused clock: the elapsed time is the server's own drain deadline, not a real wait.
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < STOP_TIMEOUT);
    drop(watch);
}

/// `clawdo serve <args>` logging at `info` to a piped stderr.
fn clawdo_serve(args: &[&str]) -> tokio::process::Command {
    let mut command = clawdo_command();
    command
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

#[tokio::test]
async fn binary_refuses_a_non_loopback_listen_address() {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let data_dir = data_dir.path().to_str().expect("a UTF-8 temp path");

    let output = output_within(
        STOP_TIMEOUT,
        &mut clawdo_serve(&["--listen", "0.0.0.0:0", "--data-dir", data_dir]),
    )
    .await;

    assert!(!output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a loopback address"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn binary_serves_until_sigterm_then_exits_cleanly() {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = clawdo_serve(&[
        "--listen",
        &listen,
        "--data-dir",
        data_dir.path().to_str().expect("a UTF-8 temp path"),
        "--shutdown-deadline-secs",
        "5",
    ])
    .spawn()
    .expect("spawn clawdo serve");

    // Bounded readiness poll: the only wait here is for the child process to bind.
    let url = format!("http://{listen}");
    let mut ready = None;
    for _ in 0..READY_ATTEMPTS {
        let endpoint = Endpoint::from_shared(url.clone()).expect("a valid URL");
        if let Ok(channel) = endpoint.connect().await
            && let Ok(response) = health_check(&mut HealthClient::new(channel), "").await
        {
            ready = Some(response);
            break;
        }
        tokio::time::sleep(READY_INTERVAL).await;
    }
    let ready = ready.expect("clawdo serve answers health checks");
    assert_eq!(ready.status(), ServingStatus::Serving);

    let pid = child.id().expect("the child is running");
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill:?}");

    let output = tokio::time::timeout(STOP_TIMEOUT, child.wait_with_output())
        .await
        .expect("clawdo exits within the timeout after SIGTERM")
        .expect("wait for clawdo");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{:?}; stderr: {stderr}",
        output.status
    );
    for step in [
        "shutdown signal received",
        "gRPC server stopped",
        "runtime stopped",
    ] {
        assert!(
            stderr.contains(step),
            "{step:?} not logged; stderr: {stderr}"
        );
    }
}
