//! Knobs of the object runtime, with their defaults.

use std::num::NonZeroUsize;
use std::time::Duration;

use clawdo_storage::Durability;

/// Configuration of a [`crate::Host`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// How commits reach the disk. Default: [`Durability::Process`].
    pub durability: Durability,
    /// An object with no work in flight for this long hibernates. Default 30 s.
    pub idle_timeout: Duration,
    /// Most objects kept resident; past it the least recently used idle ones hibernate.
    /// Default 200,000.
    pub resident_cap: NonZeroUsize,
    /// Most object files kept open; past it the least recently used idle residents close their
    /// file (and reopen it on next use). Bounded by the process's file limit. Default 4,096.
    pub max_open_files: NonZeroUsize,
    /// How long one call may take before the caller gets [`crate::Error::Timeout`]. Default 30 s.
    pub call_timeout: Duration,
    /// First alarm retry delay; each further retry doubles it. Default 2 s.
    pub alarm_retry_base: Duration,
    /// Retries after a failed alarm handler before the fire is dropped. Default 6.
    pub alarm_max_retries: u32,
    /// Most alarm deliveries in flight at once. Default 1,024.
    pub alarm_concurrency: NonZeroUsize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            durability: Durability::Process,
            idle_timeout: Duration::from_secs(30),
            resident_cap: NonZeroUsize::new(200_000).unwrap_or(NonZeroUsize::MIN),
            max_open_files: NonZeroUsize::new(4_096).unwrap_or(NonZeroUsize::MIN),
            call_timeout: Duration::from_secs(30),
            alarm_retry_base: Duration::from_secs(2),
            alarm_max_retries: 6,
            alarm_concurrency: NonZeroUsize::new(1_024).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl HostConfig {
    /// Delay before retry number `retry` (1-based): `base · 2^(retry−1)`, capped at one day.
    pub fn retry_delay(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.alarm_retry_base
            .saturating_mul(factor)
            .min(Duration::from_secs(86_400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_two_seconds() {
        let config = HostConfig::default();
        let delays: Vec<u64> = (1..=6).map(|r| config.retry_delay(r).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64]);
        assert_eq!(config.retry_delay(200), Duration::from_secs(86_400));
    }
}

/// Serde for a [`Duration`] as whole seconds (config files say `op-lease = 600`).
pub mod serde_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Deserialize from seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
