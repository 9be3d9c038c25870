//! The instance class's knobs ([`InstanceConfig`], `[instance]` in the server's config) and
//! its dependencies ([`InstanceServices`], given at registration).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hub::EventHub;
use crate::UnixMillis;
use crate::provider::Provider;

/// Knobs of the instance class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct InstanceConfig {
    /// Reconcile period while running. Default 5 min.
    #[serde(with = "crate::config::serde_secs")]
    pub reconcile_running: Duration,
    /// Reconcile period while stopped. Default 30 min.
    #[serde(with = "crate::config::serde_secs")]
    pub reconcile_stopped: Duration,
    /// How long an operation may run before it is given up. Default 10 min.
    #[serde(with = "crate::config::serde_secs")]
    pub op_lease: Duration,
    /// Image tag of a provision that names none. Default `claw:latest`.
    pub default_image: String,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            reconcile_running: Duration::from_secs(300),
            reconcile_stopped: Duration::from_secs(1_800),
            op_lease: Duration::from_secs(600),
            default_image: "claw:latest".into(),
        }
    }
}

/// `d` in milliseconds, saturating far below overflow when added to a clock reading.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl InstanceConfig {
    /// When an instance in `running` (or not) should next reconcile, from `now`.
    pub fn reconcile_at(&self, now: UnixMillis, running: bool) -> UnixMillis {
        now + millis(if running {
            self.reconcile_running
        } else {
            self.reconcile_stopped
        })
    }

    /// The lease of an operation started at `now`.
    pub fn lease_at(&self, now: UnixMillis) -> UnixMillis {
        now + millis(self.op_lease)
    }
}

/// What every instance shares: the provider, the event hub and the configuration. The
/// instance class's dependencies (`Object::Deps`).
#[derive(Debug)]
pub struct InstanceServices {
    /// The machine provider (with its limiter).
    pub provider: Provider,
    /// Watchers' subscriptions.
    pub hub: EventHub,
    /// Configuration.
    pub config: InstanceConfig,
}
