//! The embedding API: build a [`Runtime`] over a data directory, use it, shut it down.
//!
//! STUB: the real implementation lands with the object runtime; the signatures are fixed.

use std::path::PathBuf;
use std::time::Duration;

/// Errors from building or shutting down a [`Runtime`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory could not be used.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

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
}

/// Builder for [`Runtime`].
#[derive(Debug, Default)]
pub struct RuntimeBuilder {
    data_dir: Option<PathBuf>,
    idle_timeout: Option<Duration>,
}

impl RuntimeBuilder {
    /// Directory holding all object files (default `./clawdo-data`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Idle time after which an object hibernates (default 30 s).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Open the data directory and start the runtime.
    pub async fn build(self) -> Result<Runtime, Error> {
        Ok(Runtime {})
    }
}

/// A running clawdo runtime.
#[derive(Debug)]
pub struct Runtime {}

impl Runtime {
    /// Start configuring a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Current counters.
    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats::default()
    }

    /// Stop accepting calls, let in-flight handlers finish within `deadline`, close all files.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), Error> {
        let _ = deadline;
        Ok(())
    }
}
