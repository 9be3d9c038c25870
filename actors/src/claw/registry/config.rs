//! The registry class's knobs ([`RegistryConfig`], `[registry]` in the server's config): the
//! class's dependencies, given at registration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Knobs of the registry class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Instances a `user:` owner may have. Default 1.
    pub user_instance_limit: u32,
    /// Instances an `org:` owner may have. Default 100.
    pub org_instance_limit: u32,
    /// An `admitted` or `provider_started` reservation whose instance never received its
    /// provision this long after admission is released by the alarm. Default 60 s.
    #[serde(with = "crate::config::serde_secs")]
    pub stale_after: Duration,
    /// How often the alarm looks at unresolved reservations, and how long after a provision
    /// failed with infrastructure the alarm has the instance destroyed. Default 60 s.
    #[serde(with = "crate::config::serde_secs")]
    pub check_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            user_instance_limit: 1,
            org_instance_limit: 100,
            stale_after: Duration::from_secs(60),
            check_interval: Duration::from_secs(60),
        }
    }
}

impl RegistryConfig {
    /// The instance limit of `owner` (by its kind prefix).
    pub fn limit_for(&self, owner: &str) -> u32 {
        if owner.starts_with("org:") {
            self.org_instance_limit
        } else {
            self.user_instance_limit
        }
    }

    /// Check the values: limits at least 1, intervals at least 1 s.
    pub fn validate(&self) -> Result<(), String> {
        if self.user_instance_limit == 0 || self.org_instance_limit == 0 {
            return Err("instance limits must be at least 1".into());
        }
        if self.stale_after < Duration::from_secs(1) || self.check_interval < Duration::from_secs(1)
        {
            return Err("stale-after and check-interval must be at least 1 s".into());
        }
        Ok(())
    }
}

/// `d` in milliseconds, saturating far below overflow when added to a clock reading.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
