#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
//! The built-in providers end to end: the process provider with real child processes, and the
//! sim provider behind its limiter.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawdo_actors::provider::process::{ProcessConfig, ProcessProvider};
use clawdo_actors::provider::sim::{SimConfig, SimProvider};
use clawdo_actors::provider::{
    LimiterConfig, MachineId, MachineProvider, MachineSpec, MachineState, Priority, Provider,
    ProviderError, VolumeId, VolumeSource,
};

/// Attempts × pause while waiting for a child process to react to a signal.
const PROCESS_POLLS: u32 = 200;
const PROCESS_POLL: Duration = Duration::from_millis(25);

fn open_process(root: &Path) -> ProcessProvider {
    ProcessProvider::open(ProcessConfig {
        root: root.to_owned(),
        command: ["sh", "-c", "exec sleep 600"].map(String::from).to_vec(),
    })
    .unwrap()
}

fn spec(volume: &VolumeId) -> MachineSpec {
    MachineSpec {
        image: "claw:1".into(),
        volume: volume.clone(),
        metadata: BTreeMap::from([("sandbox_id".to_owned(), "sb-1".to_owned())]),
    }
}

/// Whether `pid` is a live process (a zombie is dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn state(provider: &dyn MachineProvider, id: &MachineId) -> MachineState {
    provider.machine(id).await.unwrap().state
}

/// Wait (bounded) for a signalled child process to be reported in `want`.
async fn until_state(provider: &dyn MachineProvider, id: &MachineId, want: MachineState) {
    for _ in 0..PROCESS_POLLS {
        if state(provider, id).await == want {
            return;
        }
        tokio::time::sleep(PROCESS_POLL).await;
    }
    panic!("machine {id} never became {}", want.as_str());
}

fn running_pid(provider: &ProcessProvider, id: &MachineId) -> u32 {
    let pid = provider
        .machine_pid(id)
        .unwrap()
        .expect("a running machine has a pid");
    assert!(alive(pid));
    pid
}

#[tokio::test]
async fn process_machines_are_child_processes() {
    let dir = tempfile::tempdir().unwrap();
    let provider = open_process(dir.path());
    let mut pids = Vec::new();

    let volume = provider
        .create_volume(VolumeSource::Empty, "data")
        .await
        .unwrap();
    let id = provider.create_machine(spec(&volume)).await.unwrap();
    assert_eq!(state(&provider, &id).await, MachineState::Created);
    assert_eq!(provider.machine_pid(&id).unwrap(), None);

    provider.start_machine(&id).await.unwrap();
    assert_eq!(state(&provider, &id).await, MachineState::Running);
    let pid = running_pid(&provider, &id);
    pids.push(pid);
    assert!(provider.machine_port(&id).unwrap().is_some());
    provider.start_machine(&id).await.unwrap();
    assert_eq!(
        running_pid(&provider, &id),
        pid,
        "start on a running machine is a no-op"
    );

    // A process that dies on its own is a stopped machine: the unexpected stop.
    kill9(pid);
    until_state(&provider, &id, MachineState::Stopped).await;
    assert_eq!(provider.machine_pid(&id).unwrap(), None);

    provider.start_machine(&id).await.unwrap();
    let pid = running_pid(&provider, &id);
    pids.push(pid);
    provider.stop_machine(&id).await.unwrap();
    assert!(!alive(pid), "stop waits for the process to exit");
    assert_eq!(state(&provider, &id).await, MachineState::Stopped);
    provider.stop_machine(&id).await.unwrap();

    provider.restart_machine(&id).await.unwrap();
    let first = running_pid(&provider, &id);
    provider.restart_machine(&id).await.unwrap();
    let second = running_pid(&provider, &id);
    pids.extend([first, second]);
    assert_ne!(first, second);
    assert!(!alive(first), "restart stops the old process");

    provider.update_image(&id, "claw:2").await.unwrap();
    let info = provider.machine(&id).await.unwrap();
    assert_eq!(info.image, "claw:2");
    assert_eq!(info.metadata["sandbox_id"], "sb-1");
    assert_eq!(
        provider.machines_on_volume(&volume).await.unwrap(),
        vec![id.clone()]
    );
    assert!(matches!(
        provider.delete_volume(&volume).await,
        Err(ProviderError::Refused(_))
    ));
    assert!(matches!(
        provider.destroy_machine(&id, false).await,
        Err(ProviderError::Refused(_))
    ));
    assert!(alive(second), "a refused destroy changes nothing");
    provider.destroy_machine(&id, true).await.unwrap();
    provider.destroy_machine(&id, true).await.unwrap();
    assert_eq!(state(&provider, &id).await, MachineState::Destroyed);
    assert!(matches!(
        provider.start_machine(&id).await,
        Err(ProviderError::NotFound {
            kind: "machine",
            ..
        })
    ));
    assert!(
        provider
            .machines_on_volume(&volume)
            .await
            .unwrap()
            .is_empty()
    );
    provider.delete_volume(&volume).await.unwrap();
    assert!(provider.volume_path(&volume).is_err());

    let volume_dir = dir.path().join("volumes").join(&volume.0);
    assert!(
        !volume_dir.exists(),
        "a deleted volume's directory is removed"
    );
    for pid in pids {
        assert!(!alive(pid), "process {pid} leaked");
    }
}

#[tokio::test]
async fn process_volumes_and_snapshots_are_copies() {
    let dir = tempfile::tempdir().unwrap();
    let provider = open_process(dir.path());
    let v1 = provider
        .create_volume(VolumeSource::Empty, "data")
        .await
        .unwrap();
    let v1_path = provider.volume_path(&v1).unwrap();
    std::fs::create_dir(v1_path.join("nested")).unwrap();
    std::fs::write(v1_path.join("nested/state.txt"), "one").unwrap();

    let snapshot = provider.snapshot_volume(&v1).await.unwrap();
    assert_eq!(
        provider.list_snapshots(&v1).await.unwrap(),
        vec![snapshot.clone()]
    );
    std::fs::write(v1_path.join("nested/state.txt"), "two").unwrap();

    let v2 = provider
        .create_volume(VolumeSource::Volume(v1.clone()), "copy")
        .await
        .unwrap();
    let v3 = provider
        .create_volume(VolumeSource::Snapshot(snapshot.clone()), "restore")
        .await
        .unwrap();
    let read = |v: &VolumeId| {
        std::fs::read_to_string(provider.volume_path(v).unwrap().join("nested/state.txt")).unwrap()
    };
    assert_eq!(read(&v2), "two");
    assert_eq!(read(&v3), "one");
    std::fs::write(
        provider.volume_path(&v2).unwrap().join("nested/state.txt"),
        "three",
    )
    .unwrap();
    assert_eq!(read(&v1), "two", "a copy is independent of its source");

    assert!(matches!(
        provider
            .create_volume(VolumeSource::Volume(VolumeId("v-404".into())), "x")
            .await,
        Err(ProviderError::NotFound { kind: "volume", .. })
    ));
    assert!(matches!(
        provider
            .create_volume(VolumeSource::Volume(VolumeId("../../etc".into())), "x")
            .await,
        Err(ProviderError::NotFound { .. })
    ));
    for v in [&v1, &v2, &v3] {
        provider.delete_volume(v).await.unwrap();
    }
    // Snapshots outlive their volume.
    let v4 = provider
        .create_volume(VolumeSource::Snapshot(snapshot), "again")
        .await
        .unwrap();
    assert_eq!(read(&v4), "one");
}

#[tokio::test]
async fn process_machines_survive_a_provider_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (id, pid) = {
        let provider = open_process(dir.path());
        let volume = provider
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        let id = provider.create_machine(spec(&volume)).await.unwrap();
        provider.start_machine(&id).await.unwrap();
        (id.clone(), running_pid(&provider, &id))
    };
    assert!(
        alive(pid),
        "machines outlive the provider that started them"
    );

    let provider = open_process(dir.path());
    assert_eq!(state(&provider, &id).await, MachineState::Running);
    assert_eq!(provider.machine_pid(&id).unwrap(), Some(pid));
    provider.stop_machine(&id).await.unwrap();
    assert!(!alive(pid), "a machine from an earlier run is stopped too");
    assert_eq!(state(&provider, &id).await, MachineState::Stopped);

    // And one that died while no provider watched is reported stopped after a restart.
    provider.start_machine(&id).await.unwrap();
    let pid = running_pid(&provider, &id);
    drop(provider);
    kill9(pid);
    let provider = open_process(dir.path());
    until_state(&provider, &id, MachineState::Stopped).await;
    provider.destroy_machine(&id, false).await.unwrap();
    assert!(!alive(pid));
}

#[tokio::test(start_paused = true)]
async fn the_limiter_caps_concurrent_provider_calls() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(
        SimProvider::open(
            dir.path().join("sim.db"),
            SimConfig {
                latency_ms: 50,
                ..SimConfig::default()
            },
        )
        .unwrap(),
    );
    let provider = Provider::new(
        Arc::clone(&sim) as Arc<dyn MachineProvider>,
        LimiterConfig {
            max_in_flight: NonZeroUsize::new(3).unwrap(),
            rate_per_sec: None,
        },
    );
    let volume = provider
        .call(Priority::Interactive, |p| {
            p.create_volume(VolumeSource::Empty, "data")
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let provider = provider.clone();
        let volume = volume.clone();
        let priority = if i % 4 == 0 {
            Priority::Interactive
        } else {
            Priority::Scheduled
        };
        tasks.push(tokio::spawn(async move {
            let id = provider
                .call(priority, |p| p.create_machine(spec(&volume)))
                .await?;
            provider.call(priority, |p| p.start_machine(&id)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(sim.peak_concurrent_mutations(), 3);
    assert_eq!(sim.machines_created(), 20);
    let stats = provider.limiter().stats();
    assert_eq!(stats.peak_in_flight, 3);
    assert_eq!(stats.admitted_interactive + stats.admitted_scheduled, 41);
    assert_eq!(stats.in_flight, 0);
}
