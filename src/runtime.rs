//! The embedding API: build a [`Runtime`] over a data directory, use it, shut it down.
//!
//! A `Runtime` owns the object [`Host`] (activation, hibernation, alarms) and registers the
//! classes the binary serves; embedders register their own classes with
//! [`RuntimeBuilder::register`] and call objects through [`Runtime::host`]. The gRPC services are
//! thin adapters over this type.
//!
//! A `Runtime` always opens a machine provider (the `sim` provider's database by default) and
//! takes the class names [`CLAWDO_CLASS_NAMES`] for itself. A program that wants objects of its
//! own and no claw instance builds the bare object runtime instead: [`HostBuilder`] (re-exported
//! as `clawdo::HostBuilder`), which registers only the program's classes and opens nothing but
//! the data directory.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clawdo_actors::demo::Counter;
use clawdo_actors::fleet::{Fleet, FleetConfig, FleetHandle, FleetServices, FleetStats};
use clawdo_actors::instance::{EventHub, Instance, InstanceConfig, InstanceServices};
use clawdo_actors::provider::sim::{SimConfig, SimProvider};
use clawdo_actors::provider::{LimiterConfig, MachineProvider, Provider};
use clawdo_actors::registry::{Registry, RegistryConfig};
use clawdo_actors::{Clock, Durability, Host, HostBuilder, HostConfig, Object};

use crate::actions::Actions;
use crate::instances::Instances;

pub use clawdo_actors::LatencySummary;

/// Errors from building or shutting down a [`Runtime`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object runtime failed to start or stop.
    #[error("object runtime")]
    Host(#[from] clawdo_actors::Error),
    /// An object class of the embedder's has the name of one of clawdo's own classes
    /// ([`CLAWDO_CLASS_NAMES`]). Found before anything was opened: no provider database was
    /// created and nothing was written to the data directory.
    #[error(
        "object class name {name:?} is taken by one of clawdo's own classes: rename your class, \
         or embed the bare object runtime (`clawdo::HostBuilder`), which registers only your \
         classes"
    )]
    ClassNameTaken {
        /// The name both classes have.
        name: &'static str,
    },
    /// The machine provider could not be opened.
    #[error("opening the {provider} provider: {reason}")]
    Provider {
        /// Which provider.
        provider: &'static str,
        /// Why.
        reason: String,
    },
}

/// The names of the classes a [`Runtime`] registers for itself: the claw classes `instance`,
/// `registry` and `fleet`, and the demo class `counter`. An embedder's class on
/// [`RuntimeBuilder`] cannot have one of them ([`Error::ClassNameTaken`]); on the bare object
/// runtime ([`HostBuilder`]) every name is free.
pub const CLAWDO_CLASS_NAMES: [&str; 4] = [
    Instance::CLASS,
    Registry::CLASS,
    Fleet::CLASS,
    Counter::CLASS,
];

/// A point-in-time view of the runtime's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeStats {
    /// Objects whose actor is alive right now.
    pub resident_objects: u64,
    /// Activations since start.
    pub activations: u64,
    /// Alarms armed in the dispatcher right now.
    pub armed_alarms: u64,
    /// Alarm handler invocations since start.
    pub alarms_fired: u64,
    /// Lateness of alarm fires since start (handler start minus scheduled time).
    pub alarm_lateness: LatencySummary,
    /// The fleet: slots in use, the cap, deferred and refused claims.
    pub fleet: FleetStats,
    /// The sim provider's recorded peak of concurrent mutating calls (`None`: another
    /// provider).
    pub sim_peak_concurrent_mutations: Option<u64>,
}

/// Builder for [`Runtime`]. Every setting has a default; see each method.
pub struct RuntimeBuilder {
    data_dir: PathBuf,
    config: HostConfig,
    clock: Option<Arc<dyn Clock>>,
    host: HostBuilderSlot,
    provider: Option<Arc<dyn MachineProvider>>,
    sim: SimConfig,
    limits: LimiterConfig,
    instances: InstanceConfig,
    fleet: FleetConfig,
    registry: RegistryConfig,
}

/// Class registrations are applied to the host builder as they come.
struct HostBuilderSlot(Option<Box<dyn FnOnce(HostBuilder) -> HostBuilder + Send>>);

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("data_dir", &self.data_dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            data_dir: PathBuf::from("./clawdo-data"),
            config: HostConfig::default(),
            clock: None,
            host: HostBuilderSlot(None),
            provider: None,
            sim: SimConfig::default(),
            limits: LimiterConfig::default(),
            instances: InstanceConfig::default(),
            fleet: FleetConfig::default(),
            registry: RegistryConfig::default(),
        }
    }
}

/// Builder methods that replace one whole settings section (a field of the builder) and hand
/// the builder back: `name(arg: Type) => field;`, each with its doc comment.
macro_rules! section_setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $field:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $arg: $ty) -> Self {
                self.$field = $arg;
                self
            }
        )*
    };
}

impl RuntimeBuilder {
    /// Directory holding all object files (default `./clawdo-data`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// How commits reach the disk (default [`Durability::Process`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Idle time after which an object hibernates (default 30 s).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// Most objects resident at once (default 200,000).
    pub fn resident_cap(mut self, cap: NonZeroUsize) -> Self {
        self.config.resident_cap = cap;
        self
    }

    /// The clock every time decision reads (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The machine provider (default: the `sim` provider, persisted in
    /// `<data_dir>/providers/sim.db`).
    pub fn provider(mut self, provider: Arc<dyn MachineProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    section_setters! {
        /// Replace the whole object-runtime configuration.
        host_config(config: HostConfig) => config;
        /// Settings of the default `sim` provider (latency, failure and hang rates).
        sim_config(sim: SimConfig) => sim;
        /// Limits of the provider's limiter (max in flight, rate).
        provider_limits(limits: LimiterConfig) => limits;
        /// Settings of the instance class (reconcile periods, operation lease, default image).
        instance_config(config: InstanceConfig) => instances;
        /// Settings of the fleet (cap on concurrent scheduled work, slot lease, interactive
        /// pressure deferral).
        fleet_config(config: FleetConfig) => fleet;
        /// Settings of provision admission (instance limits per owner kind, cleanup timing).
        registry_config(config: RegistryConfig) => registry;
    }

    /// Register an object class of the embedder's own that needs no dependencies. Its name
    /// must not be one of [`CLAWDO_CLASS_NAMES`] ([`Error::ClassNameTaken`] at
    /// [`build`](Self::build)).
    pub fn register<C: Object<Deps = ()>>(self) -> Self {
        self.register_with::<C>(Arc::new(()))
    }

    /// Register an object class of the embedder's own with its dependencies. Its name must not
    /// be one of [`CLAWDO_CLASS_NAMES`] ([`Error::ClassNameTaken`] at [`build`](Self::build)).
    pub fn register_with<C: Object>(mut self, deps: Arc<C::Deps>) -> Self {
        let previous = self.host.0.take();
        self.host.0 = Some(Box::new(move |builder: HostBuilder| {
            let builder = match previous {
                Some(previous) => previous(builder),
                None => builder,
            };
            builder.register_with::<C>(deps)
        }));
        self
    }

    /// Open the data directory and start the runtime.
    ///
    /// The embedder's classes are checked first, before anything is opened: a name clawdo's own
    /// classes have fails with [`Error::ClassNameTaken`], an invalid or repeated name with
    /// [`Error::Host`].
    pub async fn build(self) -> Result<Runtime, Error> {
        let mut builder = HostBuilder::new(&self.data_dir).config(self.config);
        if let Some(register) = self.host.0 {
            builder = register(builder);
        }
        if let Some(name) = CLAWDO_CLASS_NAMES
            .into_iter()
            .find(|name| builder.has_class(name))
        {
            return Err(Error::ClassNameTaken { name });
        }
        builder.check_classes()?;
        let (provider, sim): (Arc<dyn MachineProvider>, _) = match self.provider {
            Some(provider) => (provider, None),
            None => {
                let dir = self.data_dir.join("providers");
                let open = || -> Result<SimProvider, String> {
                    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                    SimProvider::open(dir.join("sim.db"), self.sim.clone())
                        .map_err(|e| e.to_string())
                };
                let sim = Arc::new(open().map_err(|reason| Error::Provider {
                    provider: "sim",
                    reason,
                })?);
                (Arc::clone(&sim) as Arc<dyn MachineProvider>, Some(sim))
            }
        };
        let services = Arc::new(InstanceServices {
            provider: Provider::new(provider, self.limits),
            hub: EventHub::default(),
            config: self.instances,
        });
        let fleet = Arc::new(FleetServices::new(
            self.fleet,
            Arc::clone(services.provider.limiter()),
        ));
        builder = builder
            .register::<Counter>()
            .register_with::<Instance>(Arc::clone(&services))
            .register_with::<Registry>(Arc::new(self.registry))
            .register_with::<Fleet>(Arc::clone(&fleet));
        if let Some(clock) = self.clock {
            builder = builder.clock(clock);
        }
        let host = builder.start().await?;
        // Activate an existing fleet now: runs orphaned by a previous process are failed and
        // their slots freed at once, and waiting targets are woken, instead of at the next
        // lease. A fresh data directory gets no fleet object until the first action.
        let fleet_handle = FleetHandle::new(&host);
        if fleet_handle.exists().await.unwrap_or(false)
            && let Err(error) = fleet_handle.ping().await
        {
            tracing::warn!(%error, "the fleet could not start cleanly");
        }
        Ok(Runtime {
            host,
            services,
            fleet,
            sim,
        })
    }
}

/// A running clawdo runtime.
#[derive(Debug, Clone)]
pub struct Runtime {
    host: Host,
    services: Arc<InstanceServices>,
    fleet: Arc<FleetServices>,
    sim: Option<Arc<SimProvider>>,
}

impl Runtime {
    /// Start configuring a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The object host: `runtime.host().get::<Class>(id)?.call(request).await`.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Claw instance operations.
    pub fn instances(&self) -> Instances {
        Instances::new(self.host.clone(), Arc::clone(&self.services))
    }

    /// Scheduled admin actions (admin operations).
    pub fn actions(&self) -> Actions {
        Actions::new(self.host.clone(), Arc::clone(&self.fleet))
    }

    /// The machine provider with its limiter.
    pub fn provider(&self) -> &Provider {
        &self.services.provider
    }

    /// The `sim` provider, when it is the one in use (chaos calls, recorded peaks).
    pub fn sim(&self) -> Option<&Arc<SimProvider>> {
        self.sim.as_ref()
    }

    /// Current counters.
    pub fn stats(&self) -> RuntimeStats {
        let s = self.host.stats();
        RuntimeStats {
            resident_objects: s.resident_objects,
            activations: s.activations,
            armed_alarms: s.armed_alarms,
            alarms_fired: s.alarms_fired,
            alarm_lateness: s.alarm_lateness,
            fleet: self.fleet.stats(),
            sim_peak_concurrent_mutations: self
                .sim
                .as_ref()
                .map(|sim| sim.peak_concurrent_mutations() as u64),
        }
    }

    /// Stop accepting calls, let in-flight handlers finish within `deadline`, close all files.
    /// Alarms stay in the index and fire after the next start.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), Error> {
        Ok(self.host.shutdown(deadline).await?)
    }
}
