//! The fleet's knobs ([`FleetConfig`], `[fleet]` in the server's config), its counters, and
//! its dependencies ([`FleetServices`], given at registration).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::provider::Limiter;

/// Knobs of the fleet (`[fleet]` in the server's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct FleetConfig {
    /// Most scheduled operations running at once across the fleet (default 2).
    pub max_concurrent: NonZeroUsize,
    /// Default lease of a claimed slot, seconds (default 1200 = 20 min); an action may set its
    /// own.
    #[serde(with = "crate::config::serde_secs")]
    pub lease: Duration,
    /// How long a claim is deferred while interactive provider calls wait, seconds (default 30).
    #[serde(with = "crate::config::serde_secs")]
    pub pressure_delay: Duration,
    /// Most total deferral of one target by interactive pressure, seconds (default 600).
    #[serde(with = "crate::config::serde_secs")]
    pub max_pressure_deferral: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            max_concurrent: NonZeroUsize::MIN.saturating_add(1),
            lease: Duration::from_secs(1_200),
            pressure_delay: Duration::from_secs(30),
            max_pressure_deferral: Duration::from_secs(600),
        }
    }
}

impl FleetConfig {
    /// The cap, as a count.
    pub fn cap(&self) -> u64 {
        self.max_concurrent.get() as u64
    }
}

/// Counters of the fleet, readable without calling it.
#[derive(Debug, Default)]
pub struct FleetCounters {
    pub(super) slots_in_use: AtomicU64,
    pub(super) deferred_claims: AtomicU64,
    pub(super) claims_refused: AtomicU64,
}

/// A snapshot of the fleet's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStats {
    /// Slots held by running targets now (as of the fleet's last change).
    pub slots_in_use: u64,
    /// The cap.
    pub max_concurrent: u64,
    /// Claims deferred by interactive pressure since start.
    pub deferred_claims: u64,
    /// Claims refused because the cap was full since start.
    pub claims_refused: u64,
}

/// What the fleet shares with the runtime: its configuration, its counters, and the provider
/// limiter (whose waiting interactive calls defer claims). The fleet class's dependencies.
#[derive(Debug)]
pub struct FleetServices {
    /// Configuration.
    pub config: FleetConfig,
    /// Counters.
    pub counters: FleetCounters,
    /// The provider's limiter.
    pub limiter: Arc<Limiter>,
}

impl FleetServices {
    /// Services with `config` over the provider's `limiter`.
    pub fn new(config: FleetConfig, limiter: Arc<Limiter>) -> FleetServices {
        FleetServices {
            config,
            counters: FleetCounters::default(),
            limiter,
        }
    }

    /// The counters now.
    pub fn stats(&self) -> FleetStats {
        let c = &self.counters;
        FleetStats {
            slots_in_use: c.slots_in_use.load(Ordering::Relaxed),
            max_concurrent: self.config.cap(),
            deferred_claims: c.deferred_claims.load(Ordering::Relaxed),
            claims_refused: c.claims_refused.load(Ordering::Relaxed),
        }
    }
}

/// `d` in milliseconds, saturating far below overflow when added to a clock reading.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
