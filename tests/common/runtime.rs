//! The in-process [`Runtime`] over a temporary data directory on a [`ManualClock`] (and moving
//! that clock with the alarms it makes due), its sim provider (configuration, live machines, a
//! call left hanging), waiting for an instance's status through its watch stream or by polling,
//! the provision specs the tests share, and provisioning N running instances.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clawdo::actors::ManualClock;
use clawdo::actors::instance::{InstanceView, Status};
use clawdo::actors::provider::MachineInfo;
use clawdo::actors::provider::sim::{SimConfig, SimProvider};
use clawdo::instances::{Caller, ProvisionSpec};
use clawdo::{Runtime, RuntimeBuilder};
use tempfile::TempDir;

use super::{Poll, eventually, eventually_with};

/// Where the tests' manual clocks start (epoch milliseconds, January 2027).
pub const T0: i64 = 1_800_000_000_000;

/// How long [`wait_for`] follows an instance's watch stream before failing the test.
pub const WATCH_BOUND: Duration = Duration::from_secs(10);

/// A runtime builder over `dir` on the manual `clock`, every other setting at its default
/// (the sim provider persisted under `dir`).
pub fn builder(dir: &Path, clock: &ManualClock) -> RuntimeBuilder {
    Runtime::builder()
        .data_dir(dir)
        .clock(Arc::new(clock.clone()))
}

/// Starts a runtime over `dir` on `clock` with default settings.
pub async fn runtime(dir: &Path, clock: &ManualClock) -> Runtime {
    runtime_with(dir, clock, |builder| builder).await
}

/// Starts a runtime over `dir` on `clock`, with the [`builder`] adjusted by `configure`
/// (fleet, registry, provider limits…).
pub async fn runtime_with(
    dir: &Path,
    clock: &ManualClock,
    configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
) -> Runtime {
    configure(builder(dir, clock))
        .build()
        .await
        .expect("runtime starts")
}

/// Starts a runtime with default settings over a fresh temporary directory, on a manual clock
/// at [`T0`]; returns the directory (the data lives as long as it does), the clock and the
/// runtime.
pub async fn start() -> (TempDir, ManualClock, Runtime) {
    start_with(|builder| builder).await
}

/// Like [`start`], with the [`builder`] adjusted by `configure`.
pub async fn start_with(
    configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
) -> (TempDir, ManualClock, Runtime) {
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let clock = ManualClock::new(T0);
    let runtime = runtime_with(dir.path(), &clock, configure).await;
    (dir, clock, runtime)
}

/// Moves the manual `clock` on by `by` and delivers every alarm then due.
pub async fn advance(runtime: &Runtime, clock: &ManualClock, by: Duration) {
    clock.advance(by);
    settle(runtime).await;
}

/// Sets the manual `clock` to `at` (epoch milliseconds) and delivers every alarm then due.
pub async fn set_time(runtime: &Runtime, clock: &ManualClock, at: i64) {
    clock.set(at);
    settle(runtime).await;
}

/// Delivers every alarm due at the clock's current time.
async fn settle(runtime: &Runtime) {
    runtime
        .host()
        .settle_alarms()
        .await
        .expect("deliver the due alarms");
}

/// A sim configuration under which every provider call hangs (never answers).
pub fn hanging() -> SimConfig {
    SimConfig {
        hang_rate: 1.0,
        ..SimConfig::default()
    }
}

/// A sim configuration under which every provider call fails.
pub fn failing() -> SimConfig {
    SimConfig {
        failure_rate: 1.0,
        ..SimConfig::default()
    }
}

/// Reconfigures the runtime's sim provider.
pub fn set_sim(runtime: &Runtime, config: SimConfig) {
    runtime
        .sim()
        .expect("sim provider")
        .set_config(config)
        .expect("a valid sim config");
}

/// Machines at the sim provider that are not destroyed and belong to `owner`.
pub fn live_machines(runtime: &Runtime, owner: &str) -> Vec<MachineInfo> {
    runtime
        .sim()
        .expect("sim provider")
        .live_machines()
        .expect("the sim lists its machines")
        .into_iter()
        .filter(|m| m.metadata.get("owner").map(String::as_str) == Some(owner))
        .collect()
}

/// Makes every call to the sim provider hang, runs `start` (which leads to a machine restart)
/// and polls, paced by `poll`, until the provider has received that restart (which hangs
/// there); returns what `start` returned.
pub async fn hang_restart<T>(
    sim: &SimProvider,
    poll: Poll,
    what: &str,
    start: impl Future<Output = T>,
) -> T {
    let before = sim.calls().restart_machine;
    sim.set_config(hanging()).expect("a valid sim config");
    let started = start.await;
    eventually_with(poll, what, || async {
        (sim.calls().restart_machine > before).then_some(())
    })
    .await;
    started
}

/// Polls ([`eventually`]) instance `id` through the embedding API until its view satisfies
/// `ready`; returns that view.
pub async fn eventually_view(
    runtime: &Runtime,
    what: &str,
    id: &str,
    ready: impl Fn(&InstanceView) -> bool,
) -> InstanceView {
    let api = runtime.instances();
    eventually(what, || async {
        let view = api
            .get(&Caller::Admin, id)
            .await
            .expect("read the instance");
        ready(&view).then_some(view)
    })
    .await
}

/// Waits until the instance shows `status`, following its watch stream for at most
/// [`WATCH_BOUND`]; returns its view then.
pub async fn wait_for(runtime: &Runtime, id: &str, status: Status) -> InstanceView {
    wait_for_within(runtime, id, status, WATCH_BOUND).await
}

/// Waits until the instance shows `status`, following its watch stream for at most `within`;
/// returns its view then.
pub async fn wait_for_within(
    runtime: &Runtime,
    id: &str,
    status: Status,
    within: Duration,
) -> InstanceView {
    let instances = runtime.instances();
    let (view, mut events) = instances
        .watch(&Caller::Admin, id)
        .await
        .expect("watch the instance");
    if view.status == status {
        return view;
    }
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) if event.status == status => {
                    return instances
                        .get(&Caller::Admin, id)
                        .await
                        .expect("read the instance");
                }
                Ok(_) => {}
                Err(e) => panic!("watch of {id} ended: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} never became {}", status.as_str()))
}

/// A provision for `owner` under the idempotency key `key`, everything else defaulted.
pub fn spec_with_key(owner: &str, key: &str) -> ProvisionSpec {
    ProvisionSpec {
        owner: owner.into(),
        idempotency_key: Some(key.into()),
        ..ProvisionSpec::default()
    }
}

/// The ids `<prefix>-0` … `<prefix>-<n-1>`.
pub fn instance_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A provision of instance `id` on image `claw:1` for an owner of its own, `user:<id>`: a
/// user may hold one instance (admission limit), so one owner per instance.
pub fn one_owner_spec(id: &str) -> ProvisionSpec {
    ProvisionSpec {
        owner: format!("user:{id}"),
        image_tag: Some("claw:1".into()),
        pinned: false,
        instance_id: Some(id.to_owned()),
        idempotency_key: None,
    }
}

/// Provisions `n` instances `<prefix>-<i>` through the embedding API, one owner each (see
/// [`one_owner_spec`]), and polls ([`eventually`]) until every one runs; returns their ids.
pub async fn provision_running(rt: &Runtime, prefix: &str, n: usize) -> Vec<String> {
    let api = rt.instances();
    let ids = instance_ids(prefix, n);
    for id in &ids {
        api.provision(&Caller::Admin, one_owner_spec(id))
            .await
            .expect("provision");
    }
    for id in &ids {
        eventually_view(rt, "provisioned", id, |v| v.status == Status::Running).await;
    }
    ids
}

/// How many `instance.scheduled_action_started` events instance `id` has recorded (among its
/// first 500 events).
pub async fn started_events(rt: &Runtime, id: &str) -> usize {
    rt.instances()
        .events(&Caller::Admin, id, 0, 500)
        .await
        .expect("read the instance's events")
        .iter()
        .filter(|e| e.kind == "instance.scheduled_action_started")
        .count()
}
