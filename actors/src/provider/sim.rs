//! The simulated provider: machines, volumes and snapshots are rows in the provider's own
//! SQLite file (WAL), so they survive a server restart like a real provider's would.
//!
//! It behaves like a real provider's state machine (a start on a running machine is a no-op,
//! a destroyed machine is gone, a volume in use cannot be deleted) and adds what tests and
//! benches need: a per-call latency, seeded random failures and hangs decided *before* any
//! state changes, a chaos call that stops a machine "unexpectedly", counters of calls per
//! operation, and the peak number of mutating calls in flight at once (which proves the
//! fleet's concurrency cap, SPEC §12).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::{self, Connection, Transaction, params};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use super::ledger::{
    self, Db, Ledger, delete_volume_row, insert_machine, live_machine, load_machine, not_found,
    set_state,
};
use super::{
    MachineId, MachineInfo, MachineProvider, MachineSpec, MachineState, ProviderError, SnapshotId,
    VolumeId, VolumeSource, lock,
};

/// The schema of a sim provider file.
const SCHEMA: &str = "
    -- Last number issued per id kind (machine, volume, snapshot): ids are never reused.
    CREATE TABLE counters (kind TEXT PRIMARY KEY, last INTEGER NOT NULL);
    -- Volumes that exist; a deleted volume's row is removed.
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL          -- 'empty', 'volume:<id>' or 'snapshot:<id>'
    );
    -- Snapshots outlive their volume.
    CREATE TABLE snapshots (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, volume TEXT NOT NULL);
    CREATE INDEX snapshots_by_volume ON snapshots (volume, seq);
    -- Every machine ever created; a destroyed one keeps its row in state 'destroyed'.
    CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,          -- MachineState::as_str
        image TEXT NOT NULL,
        volume TEXT NOT NULL,
        metadata BLOB NOT NULL        -- BTreeMap<String, String> through the storage codec
    );
    CREATE INDEX machines_by_volume ON machines (volume, seq);
";

/// Schema steps, run by the storage crate's migration runner (`PRAGMA user_version`; a file
/// written by a newer build is refused). The ledger's tests run its queries on it.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    name: "sim provider state",
    sql: SCHEMA,
}];

/// Why the sim provider could not be opened or reconfigured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range; nothing was changed.
    #[error("invalid sim provider config: {0}")]
    InvalidConfig(String),
    /// The provider's database could not be opened or initialized.
    #[error("sim provider database")]
    Database(#[from] rusqlite::Error),
    /// The schema could not be brought up to date (e.g. the file was written by a newer
    /// clawdo).
    #[error("sim provider database schema")]
    Schema(#[from] clawdo_storage::Error),
}

/// Behaviour of the sim provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct SimConfig {
    /// Milliseconds every call takes (default 0), like a real provider's API round trip.
    pub latency_ms: u64,
    /// Probability in `0.0..=1.0` that a call fails with `injected failure` before changing
    /// anything (default 0).
    pub failure_rate: f64,
    /// Probability in `0.0..=1.0` that a call never completes (default 0): exercises leases
    /// and reapers.
    pub hang_rate: f64,
    /// Seed of the random generator deciding failures and hangs (default 0), so a run can be
    /// replayed.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency_ms: 0,
            failure_rate: 0.0,
            hang_rate: 0.0,
            seed: 0,
        }
    }
}

impl SimConfig {
    /// Check that both rates are probabilities.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, rate) in [
            ("failure-rate", self.failure_rate),
            ("hang-rate", self.hang_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be between 0.0 and 1.0, got {rate}"
                )));
            }
        }
        Ok(())
    }
}

/// Calls received per operation since the provider was opened (failed and hung calls too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCallCounts {
    /// `create_volume` calls.
    pub create_volume: u64,
    /// `list_snapshots` calls.
    pub list_snapshots: u64,
    /// `delete_volume` calls.
    pub delete_volume: u64,
    /// `create_machine` calls.
    pub create_machine: u64,
    /// `start_machine` calls.
    pub start_machine: u64,
    /// `stop_machine` calls.
    pub stop_machine: u64,
    /// `restart_machine` calls.
    pub restart_machine: u64,
    /// `update_image` calls.
    pub update_image: u64,
    /// `machine` calls.
    pub machine: u64,
    /// `machines_on_volume` calls.
    pub machines_on_volume: u64,
    /// `destroy_machine` calls.
    pub destroy_machine: u64,
}

/// The trait's operations, for counting and for telling mutations from reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateVolume,
    ListSnapshots,
    DeleteVolume,
    CreateMachine,
    Start,
    Stop,
    Restart,
    UpdateImage,
    Machine,
    MachinesOnVolume,
    Destroy,
}

impl Op {
    const ALL: usize = 11;

    fn mutates(self) -> bool {
        !matches!(self, Op::ListSnapshots | Op::Machine | Op::MachinesOnVolume)
    }
}

/// The dice thrown for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Proceed,
    Fail,
    Hang,
}

/// The knobs and the generator that reads them, behind one lock.
#[derive(Debug)]
struct Chaos {
    config: SimConfig,
    rng: StdRng,
}

/// The in-process simulated provider (see the module docs).
#[derive(Debug)]
pub struct SimProvider {
    /// The provider's file: its volumes, snapshots and machines.
    ledger: Ledger,
    chaos: Mutex<Chaos>,
    /// Mutating calls in flight now.
    mutations: AtomicUsize,
    /// Most mutating calls in flight at once since open or the last [`SimProvider::reset_peak`].
    peak_mutations: AtomicUsize,
    /// Calls per [`Op`], indexed by discriminant.
    calls: [AtomicU64; Op::ALL],
    /// Machines ever created in this file (the machine id counter).
    machines_created: AtomicU64,
}

impl SimProvider {
    /// Open (or create) the provider's database at `path` with behaviour `config`.
    pub fn open(path: impl AsRef<Path>, config: SimConfig) -> Result<SimProvider, Error> {
        config.validate()?;
        let mut conn = Connection::open(path)?;
        ledger::prepare(&mut conn, MIGRATIONS)?;
        let created = ledger::last_issued(&conn, "machine")?;
        Ok(SimProvider {
            ledger: Ledger::new(conn, "sim"),
            chaos: Mutex::new(Chaos {
                rng: StdRng::seed_from_u64(config.seed),
                config,
            }),
            mutations: AtomicUsize::new(0),
            peak_mutations: AtomicUsize::new(0),
            calls: std::array::from_fn(|_| AtomicU64::new(0)),
            machines_created: AtomicU64::new(u64::try_from(created).unwrap_or(0)),
        })
    }

    /// The current behaviour.
    pub fn config(&self) -> SimConfig {
        lock(&self.chaos).config.clone()
    }

    /// Change latency, failure and hang rates at run time; a new seed restarts the generator.
    /// Calls already sleeping keep the latency they started with.
    pub fn set_config(&self, config: SimConfig) -> Result<(), Error> {
        config.validate()?;
        let mut chaos = lock(&self.chaos);
        if chaos.config.seed != config.seed {
            chaos.rng = StdRng::seed_from_u64(config.seed);
        }
        chaos.config = config;
        Ok(())
    }

    /// Most mutating calls (create, delete, start, stop, restart, update, destroy) that were
    /// in flight at the same time since open or the last [`SimProvider::reset_peak`].
    pub fn peak_concurrent_mutations(&self) -> usize {
        self.peak_mutations.load(Ordering::SeqCst)
    }

    /// Restart peak recording from the number of mutations in flight now.
    pub fn reset_peak(&self) {
        self.peak_mutations
            .store(self.mutations.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Calls received per operation since open.
    pub fn calls(&self) -> SimCallCounts {
        let n = |op: Op| self.calls[op as usize].load(Ordering::Relaxed);
        SimCallCounts {
            create_volume: n(Op::CreateVolume),
            list_snapshots: n(Op::ListSnapshots),
            delete_volume: n(Op::DeleteVolume),
            create_machine: n(Op::CreateMachine),
            start_machine: n(Op::Start),
            stop_machine: n(Op::Stop),
            restart_machine: n(Op::Restart),
            update_image: n(Op::UpdateImage),
            machine: n(Op::Machine),
            machines_on_volume: n(Op::MachinesOnVolume),
            destroy_machine: n(Op::Destroy),
        }
    }

    /// Machines successfully created in this provider's file, across restarts.
    pub fn machines_created(&self) -> u64 {
        self.machines_created.load(Ordering::SeqCst)
    }

    /// Every machine not destroyed, by id (for checks: "never two machines for one owner").
    pub fn live_machines(&self) -> Result<Vec<MachineInfo>, ProviderError> {
        self.ledger.transact(|tx| ledger::live_machines(tx).map(Ok))
    }

    /// Chaos: a running machine stops on its own (no latency, no failure injection, not
    /// counted as a call). Refused unless the machine is running.
    pub fn stop_unexpectedly(&self, machine: &MachineId) -> Result<(), ProviderError> {
        let id = machine.0.clone();
        self.ledger.transact(move |tx| {
            let Some(info) = load_machine(tx, &id)? else {
                return Ok(Err(not_found("machine", &id)));
            };
            match info.state {
                MachineState::Running => {
                    set_state(tx, &id, MachineState::Stopped)?;
                    Ok(Ok(()))
                }
                MachineState::Destroyed => Ok(Err(not_found("machine", &id))),
                other => Ok(Err(ProviderError::Refused(format!(
                    "machine {id} is {}, not running",
                    other.as_str()
                )))),
            }
        })
    }

    /// Take a snapshot of a volume (what a real provider does on its own schedule).
    pub fn snapshot_volume(&self, volume: &VolumeId) -> Result<SnapshotId, ProviderError> {
        let volume = volume.0.clone();
        self.ledger.transact(move |tx| {
            let (seq, id) = match ledger::reserve_snapshot(tx, &volume)? {
                Ok(reserved) => reserved,
                Err(e) => return Ok(Err(e)),
            };
            ledger::insert_snapshot(tx, seq, &id, &volume)?;
            Ok(Ok(SnapshotId(id)))
        })
    }

    /// Throw the dice for one call: its latency and whether it proceeds, fails or hangs.
    fn roll(&self) -> (Duration, Fate) {
        let mut chaos = lock(&self.chaos);
        let Chaos { config, rng } = &mut *chaos;
        let latency = Duration::from_millis(config.latency_ms);
        let fate = if config.hang_rate > 0.0 && rng.random_bool(config.hang_rate) {
            Fate::Hang
        } else if config.failure_rate > 0.0 && rng.random_bool(config.failure_rate) {
            Fate::Fail
        } else {
            Fate::Proceed
        };
        (latency, fate)
    }

    /// One trait call: count it, track mutations in flight, apply latency and the dice, then
    /// run `work` in a transaction.
    fn call<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        work: impl FnOnce(&Transaction<'_>) -> Db<T> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ProviderError>> {
        Box::pin(async move {
            self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
            let _mutation = op.mutates().then(|| InFlight::enter(self));
            let (latency, fate) = self.roll();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match fate {
                Fate::Proceed => self.ledger.transact(work),
                Fate::Fail => Err(ProviderError::Failed("injected failure".to_owned())),
                Fate::Hang => std::future::pending().await,
            }
        })
    }
}

/// A mutating call in flight; counted until dropped (also when a hung call is cancelled).
struct InFlight<'a>(&'a SimProvider);

impl<'a> InFlight<'a> {
    fn enter(sim: &'a SimProvider) -> InFlight<'a> {
        let now = sim.mutations.fetch_add(1, Ordering::SeqCst) + 1;
        sim.peak_mutations.fetch_max(now, Ordering::SeqCst);
        InFlight(sim)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.mutations.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MachineProvider for SimProvider {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn create_volume(
        &self,
        source: VolumeSource,
        name: &str,
    ) -> BoxFuture<'_, Result<VolumeId, ProviderError>> {
        let name = name.to_owned();
        self.call(Op::CreateVolume, move |tx| {
            let (seq, id) = match ledger::reserve_volume(tx, &source)? {
                Ok(reserved) => reserved,
                Err(e) => return Ok(Err(e)),
            };
            let source_text = match &source {
                VolumeSource::Empty => "empty".to_owned(),
                VolumeSource::Volume(from) => format!("volume:{from}"),
                VolumeSource::Snapshot(from) => format!("snapshot:{from}"),
            };
            tx.execute(
                "INSERT INTO volumes (id, seq, name, source) VALUES (?1, ?2, ?3, ?4)",
                params![id, seq, name, source_text],
            )?;
            Ok(Ok(VolumeId(id)))
        })
    }

    fn list_snapshots(
        &self,
        volume: &VolumeId,
    ) -> BoxFuture<'_, Result<Vec<SnapshotId>, ProviderError>> {
        let volume = volume.0.clone();
        self.call(Op::ListSnapshots, move |tx| {
            ledger::snapshots_of(tx, &volume)
        })
    }

    fn delete_volume(&self, volume: &VolumeId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let volume = volume.0.clone();
        self.call(Op::DeleteVolume, move |tx| delete_volume_row(tx, &volume))
    }

    fn create_machine(&self, spec: MachineSpec) -> BoxFuture<'_, Result<MachineId, ProviderError>> {
        Box::pin(async move {
            let id = self
                .call(Op::CreateMachine, move |tx| insert_machine(tx, &spec))
                .await?;
            self.machines_created.fetch_add(1, Ordering::SeqCst);
            Ok(id)
        })
    }

    fn start_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        self.call(Op::Start, move |tx| {
            let info = match live_machine(tx, &id)? {
                Ok(info) => info,
                Err(e) => return Ok(Err(e)),
            };
            if info.state != MachineState::Running {
                set_state(tx, &id, MachineState::Running)?;
            }
            Ok(Ok(()))
        })
    }

    fn stop_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        self.call(Op::Stop, move |tx| {
            let info = match live_machine(tx, &id)? {
                Ok(info) => info,
                Err(e) => return Ok(Err(e)),
            };
            if info.state == MachineState::Running {
                set_state(tx, &id, MachineState::Stopped)?;
            }
            Ok(Ok(()))
        })
    }

    fn restart_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        self.call(Op::Restart, move |tx| {
            if let Err(e) = live_machine(tx, &id)? {
                return Ok(Err(e));
            }
            set_state(tx, &id, MachineState::Running)?;
            Ok(Ok(()))
        })
    }

    fn update_image(
        &self,
        machine: &MachineId,
        image: &str,
    ) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        let image = image.to_owned();
        self.call(Op::UpdateImage, move |tx| {
            if let Err(e) = live_machine(tx, &id)? {
                return Ok(Err(e));
            }
            ledger::set_image(tx, &id, &image)?;
            Ok(Ok(()))
        })
    }

    fn machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<MachineInfo, ProviderError>> {
        let id = machine.0.clone();
        self.call(Op::Machine, move |tx| {
            Ok(load_machine(tx, &id)?.ok_or_else(|| not_found("machine", &id)))
        })
    }

    fn machines_on_volume(
        &self,
        volume: &VolumeId,
    ) -> BoxFuture<'_, Result<Vec<MachineId>, ProviderError>> {
        let volume = volume.0.clone();
        self.call(Op::MachinesOnVolume, move |tx| {
            ledger::machines_on(tx, &volume)
        })
    }

    fn destroy_machine(
        &self,
        machine: &MachineId,
        force: bool,
    ) -> BoxFuture<'_, Result<(), ProviderError>> {
        let id = machine.0.clone();
        self.call(Op::Destroy, move |tx| {
            let Some(info) = load_machine(tx, &id)? else {
                return Ok(Err(not_found("machine", &id)));
            };
            match info.state {
                MachineState::Destroyed => return Ok(Ok(())),
                MachineState::Running if !force => {
                    return Ok(Err(ProviderError::Refused(format!(
                        "machine {id} is running; stop it or destroy with force"
                    ))));
                }
                _ => set_state(tx, &id, MachineState::Destroyed)?,
            }
            Ok(Ok(()))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;

    fn open(dir: &tempfile::TempDir, config: SimConfig) -> SimProvider {
        SimProvider::open(dir.path().join("sim.db"), config).unwrap()
    }

    fn spec(volume: &VolumeId) -> MachineSpec {
        MachineSpec {
            image: "claw:1".into(),
            volume: volume.clone(),
            metadata: BTreeMap::from([("sandbox_id".to_owned(), "sb-1".to_owned())]),
        }
    }

    async fn state(sim: &SimProvider, id: &MachineId) -> MachineState {
        sim.machine(id).await.unwrap().state
    }

    #[tokio::test]
    async fn machines_follow_a_realistic_state_machine() {
        let dir = tempfile::tempdir().unwrap();
        let sim = open(&dir, SimConfig::default());
        let volume = sim
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        assert_eq!(volume, VolumeId("v-1".into()));
        let id = sim.create_machine(spec(&volume)).await.unwrap();
        assert_eq!(id, MachineId("m-1".into()));
        let info = sim.machine(&id).await.unwrap();
        assert_eq!(info.state, MachineState::Created);
        assert_eq!(info.metadata["sandbox_id"], "sb-1");
        assert_eq!(info.volume, volume);

        sim.stop_machine(&id).await.unwrap();
        assert_eq!(
            state(&sim, &id).await,
            MachineState::Created,
            "stopping a created machine is a no-op"
        );
        sim.start_machine(&id).await.unwrap();
        sim.start_machine(&id).await.unwrap();
        assert_eq!(state(&sim, &id).await, MachineState::Running);
        sim.stop_machine(&id).await.unwrap();
        sim.stop_machine(&id).await.unwrap();
        assert_eq!(state(&sim, &id).await, MachineState::Stopped);
        sim.restart_machine(&id).await.unwrap();
        assert_eq!(state(&sim, &id).await, MachineState::Running);
        sim.update_image(&id, "claw:2").await.unwrap();
        assert_eq!(sim.machine(&id).await.unwrap().image, "claw:2");

        assert!(matches!(
            sim.delete_volume(&volume).await,
            Err(ProviderError::Refused(_))
        ));
        assert!(matches!(
            sim.destroy_machine(&id, false).await,
            Err(ProviderError::Refused(_))
        ));
        assert_eq!(
            sim.machines_on_volume(&volume).await.unwrap(),
            vec![id.clone()]
        );
        sim.destroy_machine(&id, true).await.unwrap();
        sim.destroy_machine(&id, false).await.unwrap();
        assert_eq!(state(&sim, &id).await, MachineState::Destroyed);
        assert!(sim.machines_on_volume(&volume).await.unwrap().is_empty());
        for result in [
            sim.start_machine(&id).await,
            sim.stop_machine(&id).await,
            sim.restart_machine(&id).await,
            sim.update_image(&id, "x").await,
        ] {
            assert!(
                matches!(
                    result,
                    Err(ProviderError::NotFound {
                        kind: "machine",
                        ..
                    })
                ),
                "{result:?}"
            );
        }
        sim.delete_volume(&volume).await.unwrap();
        assert!(matches!(
            sim.delete_volume(&volume).await,
            Err(ProviderError::NotFound { kind: "volume", .. })
        ));
        assert!(matches!(
            sim.machine(&MachineId("m-99".into())).await,
            Err(ProviderError::NotFound { .. })
        ));
        assert!(matches!(
            sim.create_machine(spec(&volume)).await,
            Err(ProviderError::NotFound { kind: "volume", .. })
        ));
        assert_eq!(sim.machines_created(), 1);
    }

    #[tokio::test]
    async fn volumes_copy_volumes_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let sim = open(&dir, SimConfig::default());
        let v1 = sim.create_volume(VolumeSource::Empty, "a").await.unwrap();
        assert!(sim.list_snapshots(&v1).await.unwrap().is_empty());
        let s1 = sim.snapshot_volume(&v1).unwrap();
        let s2 = sim.snapshot_volume(&v1).unwrap();
        assert_eq!(
            sim.list_snapshots(&v1).await.unwrap(),
            vec![s1.clone(), s2.clone()]
        );
        let v2 = sim
            .create_volume(VolumeSource::Volume(v1.clone()), "b")
            .await
            .unwrap();
        let v3 = sim
            .create_volume(VolumeSource::Snapshot(s2), "c")
            .await
            .unwrap();
        assert_ne!(v2, v3);
        assert!(matches!(
            sim.create_volume(VolumeSource::Snapshot(SnapshotId("s-9".into())), "d")
                .await,
            Err(ProviderError::NotFound {
                kind: "snapshot",
                ..
            })
        ));
        assert!(matches!(
            sim.snapshot_volume(&VolumeId("v-9".into())),
            Err(ProviderError::NotFound { kind: "volume", .. })
        ));
        // Snapshots outlive their volume.
        sim.delete_volume(&v1).await.unwrap();
        sim.create_volume(VolumeSource::Snapshot(s1), "e")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (volume, id) = {
            let sim = open(&dir, SimConfig::default());
            let volume = sim
                .create_volume(VolumeSource::Empty, "data")
                .await
                .unwrap();
            let id = sim.create_machine(spec(&volume)).await.unwrap();
            sim.start_machine(&id).await.unwrap();
            (volume, id)
        };
        let sim = open(&dir, SimConfig::default());
        let info = sim.machine(&id).await.unwrap();
        assert_eq!(info.state, MachineState::Running);
        assert_eq!(info.volume, volume);
        assert_eq!(sim.machines_created(), 1);
        let next = sim.create_machine(spec(&volume)).await.unwrap();
        assert_eq!(next, MachineId("m-2".into()), "ids are never reused");
        assert_eq!(sim.machines_created(), 2);
    }

    #[tokio::test]
    async fn chaos_stops_only_running_machines() {
        let dir = tempfile::tempdir().unwrap();
        let sim = open(&dir, SimConfig::default());
        let volume = sim
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        let id = sim.create_machine(spec(&volume)).await.unwrap();
        assert!(matches!(
            sim.stop_unexpectedly(&id),
            Err(ProviderError::Refused(_))
        ));
        sim.start_machine(&id).await.unwrap();
        let before = sim.calls();
        sim.stop_unexpectedly(&id).unwrap();
        assert_eq!(sim.calls(), before, "chaos is not a provider call");
        assert_eq!(state(&sim, &id).await, MachineState::Stopped);
        assert!(matches!(
            sim.stop_unexpectedly(&MachineId("m-7".into())),
            Err(ProviderError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn injected_failures_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sim = open(&dir, SimConfig::default());
        let volume = sim
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        let id = sim.create_machine(spec(&volume)).await.unwrap();
        sim.set_config(SimConfig {
            failure_rate: 1.0,
            ..SimConfig::default()
        })
        .unwrap();
        let injected = ProviderError::Failed("injected failure".into());
        assert_eq!(
            sim.create_volume(VolumeSource::Empty, "x").await,
            Err(injected.clone())
        );
        assert_eq!(
            sim.create_machine(spec(&volume)).await,
            Err(injected.clone())
        );
        let injected = Err(injected);
        assert_eq!(sim.start_machine(&id).await, injected);
        assert_eq!(sim.destroy_machine(&id, true).await, injected);
        assert_eq!(sim.delete_volume(&volume).await, injected);
        assert_eq!(sim.calls().create_machine, 2);

        sim.set_config(SimConfig::default()).unwrap();
        assert_eq!(state(&sim, &id).await, MachineState::Created);
        assert_eq!(sim.machines_created(), 1);
        let next = sim.create_volume(VolumeSource::Empty, "y").await.unwrap();
        assert_eq!(
            next,
            VolumeId("v-2".into()),
            "a failed create consumed no id"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hung_calls_never_complete_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sim = open(&dir, SimConfig::default());
        let volume = sim
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        sim.set_config(SimConfig {
            hang_rate: 1.0,
            ..SimConfig::default()
        })
        .unwrap();
        let hung =
            tokio::time::timeout(Duration::from_secs(3600), sim.create_machine(spec(&volume)))
                .await;
        assert!(hung.is_err(), "a hung call must not complete");
        assert_eq!(sim.peak_concurrent_mutations(), 1);
        sim.reset_peak();
        assert_eq!(sim.peak_concurrent_mutations(), 0, "the dropped call left");
        sim.set_config(SimConfig::default()).unwrap();
        assert!(sim.machines_on_volume(&volume).await.unwrap().is_empty());
        assert_eq!(sim.machines_created(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_applies_to_every_call() {
        let dir = tempfile::tempdir().unwrap();
        let sim = open(
            &dir,
            SimConfig {
                latency_ms: 250,
                ..SimConfig::default()
            },
        );
        let start = Instant::now();
        let volume = sim
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        sim.list_snapshots(&volume).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn peak_counts_concurrent_mutations_only() {
        let dir = tempfile::tempdir().unwrap();
        let sim = Arc::new(open(&dir, SimConfig::default()));
        let volume = sim
            .create_volume(VolumeSource::Empty, "data")
            .await
            .unwrap();
        let mut machines = Vec::new();
        for _ in 0..5 {
            machines.push(sim.create_machine(spec(&volume)).await.unwrap());
        }
        assert_eq!(sim.peak_concurrent_mutations(), 1);
        sim.set_config(SimConfig {
            latency_ms: 100,
            ..SimConfig::default()
        })
        .unwrap();
        sim.reset_peak();
        let reads = machines.iter().map(|id| sim.machine(id));
        futures::future::join_all(reads).await;
        assert_eq!(
            sim.peak_concurrent_mutations(),
            0,
            "reads are not mutations"
        );
        let starts = machines.iter().map(|id| sim.start_machine(id));
        for result in futures::future::join_all(starts).await {
            result.unwrap();
        }
        assert_eq!(sim.peak_concurrent_mutations(), 5);
        assert_eq!(sim.calls().start_machine, 5);
        assert_eq!(sim.calls().machine, 5);
    }

    #[tokio::test]
    async fn the_seed_makes_failures_reproducible() {
        let config = SimConfig {
            failure_rate: 0.5,
            seed: 42,
            ..SimConfig::default()
        };
        let mut runs = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let sim = open(&dir, config.clone());
            let mut outcomes = Vec::new();
            for _ in 0..64 {
                outcomes.push(sim.create_volume(VolumeSource::Empty, "v").await.is_ok());
            }
            runs.push(outcomes);
        }
        assert_eq!(runs[0], runs[1]);
        let failures = runs[0].iter().filter(|ok| !**ok).count();
        assert!((10..=54).contains(&failures), "{failures} failures of 64");
    }

    #[test]
    fn bad_rates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (failure_rate, hang_rate) in [(1.5, 0.0), (-0.1, 0.0), (0.0, f64::NAN), (0.0, 2.0)] {
            let config = SimConfig {
                failure_rate,
                hang_rate,
                ..SimConfig::default()
            };
            assert!(matches!(
                SimProvider::open(dir.path().join("sim.db"), config.clone()),
                Err(Error::InvalidConfig(_))
            ));
        }
        let sim = open(&dir, SimConfig::default());
        assert!(
            sim.set_config(SimConfig {
                failure_rate: 7.0,
                ..SimConfig::default()
            })
            .is_err()
        );
        assert_eq!(sim.config(), SimConfig::default());
    }

    #[test]
    fn config_is_kebab_case_with_defaults() {
        let config: SimConfig =
            serde_json::from_str(r#"{"latency-ms": 5, "failure-rate": 0.25}"#).unwrap();
        assert_eq!(config.latency_ms, 5);
        assert_eq!(config.failure_rate, 0.25);
        assert_eq!(config.hang_rate, 0.0);
        assert!(serde_json::from_str::<SimConfig>(r#"{"latency_ms": 5}"#).is_err());
    }
}
