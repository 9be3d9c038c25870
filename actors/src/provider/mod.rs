//! Machine providers: the only way clawdo touches machines and volumes.
//!
//! [`MachineProvider`] is the contract; [`sim`] (the default: in-process, persisted in its own
//! SQLite file, with injectable latency, failures and hangs) and [`process`] (machines are real
//! local processes, volumes are directories) implement it. Every call goes through one
//! [`Limiter`] per provider (max in-flight, rate), which serves [`Priority::Interactive`] calls
//! before [`Priority::Scheduled`] ones; [`Provider`] bundles the two.

mod ledger;
pub mod limiter;
pub mod process;
pub mod sim;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use limiter::{Limiter, LimiterConfig, LimiterStats};

/// Lock `mutex`; every critical section in the built-in providers is a single statement,
/// transaction or map update, so a poisoned lock is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who a provider call is for: users first, fleet work second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// A user is waiting for this call (start, stop, restart of their own instance).
    Interactive,
    /// Fleet work (scheduled restarts, version changes, reconcile).
    Scheduled,
}

/// A provider's id for a machine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MachineId(pub String);

/// A provider's id for a volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeId(pub String);

/// A provider's id for a volume snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotId(pub String);

macro_rules! display_id {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_id!(MachineId, VolumeId, SnapshotId);

/// What the provider says a machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MachineState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Stopped (by request, or unexpectedly).
    Stopped,
    /// Destroyed (or never existed).
    Destroyed,
}

impl MachineState {
    /// Lower-case name, as shown in events and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Created => "created",
            MachineState::Running => "running",
            MachineState::Stopped => "stopped",
            MachineState::Destroyed => "destroyed",
        }
    }
}

/// Where a new volume's contents come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    /// An empty volume.
    Empty,
    /// A copy of another volume.
    Volume(VolumeId),
    /// A copy of a snapshot.
    Snapshot(SnapshotId),
}

/// A machine to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// Image tag to run.
    pub image: String,
    /// Volume to attach.
    pub volume: VolumeId,
    /// Free-form metadata; always includes `sandbox_id`.
    pub metadata: BTreeMap<String, String>,
}

/// A machine as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Its id.
    pub id: MachineId,
    /// Its state.
    pub state: MachineState,
    /// The image it runs.
    pub image: String,
    /// The attached volume.
    pub volume: VolumeId,
    /// Metadata given at creation.
    pub metadata: BTreeMap<String, String>,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The machine, volume or snapshot does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// `machine`, `volume` or `snapshot`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The provider could not be reached or refused for now; retrying later may work.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The call was refused as invalid in the machine's current state.
    #[error("provider refused: {0}")]
    Refused(String),
    /// The call failed.
    #[error("provider call failed: {0}")]
    Failed(String),
}

/// The operations clawdo needs from a machine provider (SPEC §4). Implementations must be
/// safe to call concurrently; the [`Limiter`] bounds how many calls are in flight.
///
/// Contract: an answered `Err` means the call had no effect (a failed `create_volume` created
/// nothing). A call that never answers (a hang the operation's lease gives up on, or a task
/// lost with its process) may have taken effect. Provision admission relies on this to tell
/// a retryable failure from one that may have left infrastructure behind.
pub trait MachineProvider: Send + Sync + fmt::Debug + 'static {
    /// Short name (`sim`, `process`).
    fn name(&self) -> &'static str;

    /// Create a volume (empty, or a copy of a volume or snapshot).
    fn create_volume(
        &self,
        source: VolumeSource,
        name: &str,
    ) -> BoxFuture<'_, Result<VolumeId, ProviderError>>;

    /// Snapshots of a volume, oldest first.
    fn list_snapshots(
        &self,
        volume: &VolumeId,
    ) -> BoxFuture<'_, Result<Vec<SnapshotId>, ProviderError>>;

    /// Delete a volume (refused while a live machine uses it).
    fn delete_volume(&self, volume: &VolumeId) -> BoxFuture<'_, Result<(), ProviderError>>;

    /// Create a machine (not started).
    fn create_machine(&self, spec: MachineSpec) -> BoxFuture<'_, Result<MachineId, ProviderError>>;

    /// Start a created or stopped machine.
    fn start_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>>;

    /// Stop a running machine.
    fn stop_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>>;

    /// Restart a machine (stop if running, then start).
    fn restart_machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<(), ProviderError>>;

    /// Change the image a machine runs; takes effect at its next start.
    fn update_image(
        &self,
        machine: &MachineId,
        image: &str,
    ) -> BoxFuture<'_, Result<(), ProviderError>>;

    /// What the machine is doing.
    fn machine(&self, machine: &MachineId) -> BoxFuture<'_, Result<MachineInfo, ProviderError>>;

    /// Machines attached to a volume.
    fn machines_on_volume(
        &self,
        volume: &VolumeId,
    ) -> BoxFuture<'_, Result<Vec<MachineId>, ProviderError>>;

    /// Destroy a machine; `force` also destroys a running one.
    fn destroy_machine(
        &self,
        machine: &MachineId,
        force: bool,
    ) -> BoxFuture<'_, Result<(), ProviderError>>;
}

/// A provider together with its limiter: what object classes hold.
#[derive(Debug, Clone)]
pub struct Provider {
    inner: Arc<dyn MachineProvider>,
    limiter: Arc<Limiter>,
}

impl Provider {
    /// Wrap `inner` with a limiter built from `limits`.
    pub fn new(inner: Arc<dyn MachineProvider>, limits: LimiterConfig) -> Provider {
        Provider {
            inner,
            limiter: Arc::new(Limiter::new(limits)),
        }
    }

    /// The provider itself (for calls the limiter must not gate, e.g. chaos in tests).
    pub fn raw(&self) -> &Arc<dyn MachineProvider> {
        &self.inner
    }

    /// The limiter.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Run `call` on the provider once the limiter admits it at `priority`.
    pub async fn call<T>(
        &self,
        priority: Priority,
        call: impl for<'a> FnOnce(&'a dyn MachineProvider) -> BoxFuture<'a, Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let _permit = self.limiter.acquire(priority).await;
        call(self.inner.as_ref()).await
    }
}
