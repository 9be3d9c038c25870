//! Counters of the object runtime, read by `AdminService/Stats` and the benches.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Live counters, updated lock-free except the lateness histogram.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) activations: AtomicU64,
    pub(crate) resident: AtomicU64,
    pub(crate) open_files: AtomicU64,
    pub(crate) armed_alarms: AtomicU64,
    pub(crate) alarms_fired: AtomicU64,
    pub(crate) alarm_retries: AtomicU64,
    pub(crate) alarms_dropped: AtomicU64,
    pub(crate) hibernations: AtomicU64,
    /// `None` only if the histogram could not be built (its bounds are constants, so never).
    lateness_ms: Mutex<Option<Histogram<u64>>>,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            activations: AtomicU64::new(0),
            resident: AtomicU64::new(0),
            open_files: AtomicU64::new(0),
            armed_alarms: AtomicU64::new(0),
            alarms_fired: AtomicU64::new(0),
            alarm_retries: AtomicU64::new(0),
            alarms_dropped: AtomicU64::new(0),
            hibernations: AtomicU64::new(0),
            // 1 ms .. 1 day at 3 significant digits.
            lateness_ms: Mutex::new(Histogram::new_with_bounds(1, 86_400_000, 3).ok()),
        }
    }

    pub(crate) fn record_lateness(&self, ms: i64) {
        let ms = u64::try_from(ms).unwrap_or(0);
        if let Ok(mut guard) = self.lateness_ms.lock()
            && let Some(h) = guard.as_mut()
        {
            h.saturating_record(ms);
        }
    }

    pub(crate) fn snapshot(&self) -> HostStats {
        let lateness = self
            .lateness_ms
            .lock()
            .ok()
            .and_then(|guard| {
                guard.as_ref().map(|h| LatencySummary {
                    count: h.len(),
                    p50_ms: h.value_at_quantile(0.50) as f64,
                    p99_ms: h.value_at_quantile(0.99) as f64,
                    max_ms: h.max() as f64,
                })
            })
            .unwrap_or_default();
        HostStats {
            resident_objects: self.resident.load(Ordering::Relaxed),
            open_files: self.open_files.load(Ordering::Relaxed),
            activations: self.activations.load(Ordering::Relaxed),
            hibernations: self.hibernations.load(Ordering::Relaxed),
            armed_alarms: self.armed_alarms.load(Ordering::Relaxed),
            alarms_fired: self.alarms_fired.load(Ordering::Relaxed),
            alarm_retries: self.alarm_retries.load(Ordering::Relaxed),
            alarms_dropped: self.alarms_dropped.load(Ordering::Relaxed),
            alarm_lateness: lateness,
        }
    }
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

/// A point-in-time copy of the host's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStats {
    /// Objects whose actor is alive.
    pub resident_objects: u64,
    /// Object files open right now.
    pub open_files: u64,
    /// Activations since start.
    pub activations: u64,
    /// Hibernations (idle or LRU) since start.
    pub hibernations: u64,
    /// Alarms armed in the dispatcher.
    pub armed_alarms: u64,
    /// Alarm handler invocations since start (retries included).
    pub alarms_fired: u64,
    /// Failed alarm handler runs that were rescheduled.
    pub alarm_retries: u64,
    /// Alarm fires dropped after the last retry failed.
    pub alarms_dropped: u64,
    /// Handler start minus scheduled time, since start.
    pub alarm_lateness: LatencySummary,
}
