#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
//! The process provider running the real `clawdo machine-stub`: a machine is healthy over
//! TCP while it runs, stops on SIGTERM, and leaves no process behind.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use clawdo::actors::provider::process::{ProcessConfig, ProcessProvider};
use clawdo::actors::provider::{MachineProvider, MachineSpec, MachineState, VolumeSource};
use clawdo::machine_stub::HEALTH_RESPONSE;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use common::cli::clawdo_command;
use common::free_port;

/// Attempts × pause while waiting for a child process to bind its port.
const BIND_POLLS: u32 = 200;
const BIND_POLL: Duration = Duration::from_millis(25);

fn stub_command() -> Vec<String> {
    [
        env!("CARGO_BIN_EXE_clawdo"),
        "machine-stub",
        "--port",
        "{port}",
    ]
    .map(String::from)
    .to_vec()
}

/// One health request; `None` while nothing listens.
async fn probe(port: u16) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: machine\r\n\r\n")
        .await
        .ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.ok()?;
    Some(reply)
}

/// Wait (bounded) for the child to bind and answer.
async fn wait_healthy(port: u16) -> Vec<u8> {
    for _ in 0..BIND_POLLS {
        if let Some(reply) = probe(port).await {
            return reply;
        }
        tokio::time::sleep(BIND_POLL).await;
    }
    panic!("machine stub on port {port} never answered");
}

/// Whether `pid` is a live process (a zombie is dead).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[tokio::test]
async fn a_process_machine_serves_its_health_check() {
    let dir = tempfile::tempdir().unwrap();
    let provider = ProcessProvider::open(ProcessConfig {
        root: dir.path().to_owned(),
        command: stub_command(),
    })
    .unwrap();
    let volume = provider
        .create_volume(VolumeSource::Empty, "data")
        .await
        .unwrap();
    let id = provider
        .create_machine(MachineSpec {
            image: "claw:1".into(),
            volume,
            metadata: BTreeMap::from([("sandbox_id".to_owned(), "sb-1".to_owned())]),
        })
        .await
        .unwrap();
    provider.start_machine(&id).await.unwrap();
    let pid = provider.machine_pid(&id).unwrap().expect("running");
    let port = provider.machine_port(&id).unwrap().expect("running");
    assert_eq!(wait_healthy(port).await, HEALTH_RESPONSE);
    assert_eq!(
        provider.machine(&id).await.unwrap().state,
        MachineState::Running
    );

    provider.stop_machine(&id).await.unwrap();
    assert!(!alive(pid), "the stub exits on SIGTERM");
    assert!(probe(port).await.is_none());
    assert_eq!(
        provider.machine(&id).await.unwrap().state,
        MachineState::Stopped
    );

    provider.start_machine(&id).await.unwrap();
    let pid = provider.machine_pid(&id).unwrap().expect("running");
    let port = provider.machine_port(&id).unwrap().expect("running");
    assert_eq!(wait_healthy(port).await, HEALTH_RESPONSE);
    provider.destroy_machine(&id, true).await.unwrap();
    assert!(!alive(pid), "no machine process is left behind");
    assert_eq!(
        provider.machine(&id).await.unwrap().state,
        MachineState::Destroyed
    );
}

#[tokio::test]
async fn the_machine_stub_exits_zero_on_sigterm() {
    let port = free_port();
    let mut child = clawdo_command()
        .args(["machine-stub", "--port", &port.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_healthy(port).await, HEALTH_RESPONSE);
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the stub stops on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// The instance lifecycle through the embedding API on the process provider: the machine is
/// a real child process that answers its health check, and destroy leaves none behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_the_process_provider_runs_a_real_machine() {
    use std::sync::Arc;

    use clawdo::Runtime;
    use clawdo::actors::instance::Status;
    use clawdo::actors::provider::MachineId;
    use clawdo::instances::{Caller, ProvisionSpec};
    use common::runtime::wait_for_within;

    let tmp = tempfile::tempdir().unwrap();
    let provider = Arc::new(
        ProcessProvider::open(ProcessConfig {
            root: tmp.path().join("providers/process"),
            command: stub_command(),
        })
        .unwrap(),
    );
    let runtime = Runtime::builder()
        .data_dir(tmp.path().join("data"))
        .provider(Arc::clone(&provider) as Arc<dyn MachineProvider>)
        .build()
        .await
        .unwrap();
    let api = runtime.instances();
    let admin = Caller::Admin;
    let wait_for =
        |status: Status| wait_for_within(&runtime, "proc-1", status, Duration::from_secs(20));
    api.provision(
        &admin,
        ProvisionSpec {
            owner: "user:proc".into(),
            instance_id: Some("proc-1".into()),
            ..ProvisionSpec::default()
        },
    )
    .await
    .unwrap();
    let view = wait_for(Status::Running).await;
    let machine = MachineId(view.machine_id.clone().unwrap());
    let port = provider
        .machine_port(&machine)
        .unwrap()
        .expect("a running machine has a port");
    assert_eq!(wait_healthy(port).await, HEALTH_RESPONSE);
    let pid = provider
        .machine_pid(&machine)
        .unwrap()
        .expect("a running machine has a pid");

    api.restart(&admin, "proc-1").await.unwrap();
    wait_for(Status::Running).await;
    assert!(!alive(pid), "the restart replaced the process");
    let pid = provider.machine_pid(&machine).unwrap().unwrap();
    let port = provider.machine_port(&machine).unwrap().unwrap();
    assert_eq!(wait_healthy(port).await, HEALTH_RESPONSE);

    api.destroy(&admin, "proc-1").await.unwrap();
    wait_for(Status::Destroyed).await;
    assert!(!alive(pid), "destroy stopped the machine process");
    runtime.shutdown(Duration::from_secs(5)).await.unwrap();
}
