//! Time, injected: every time decision of the runtime reads a [`Clock`].
//!
//! Production uses [`SystemClock`]; tests use [`ManualClock`] and move time by hand, so no test
//! ever sleeps to wait for a deadline (SPEC §1.7). Persisted deadlines are wall-clock
//! milliseconds since the Unix epoch ([`UnixMillis`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::watch;

pub use clawdo_storage::UnixMillis;

/// A source of wall-clock time that can also wait for a moment in time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> UnixMillis;

    /// Complete once `now() >= at`.
    fn sleep_until(&self, at: UnixMillis) -> BoxFuture<'static, ()>;
}

/// The real clock: `SystemTime` for reading, tokio timers for waiting.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    fn sleep_until(&self, at: UnixMillis) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            loop {
                let now = SystemClock.now();
                if now >= at {
                    return;
                }
                // tokio timers have millisecond granularity and may wake a little early
                // relative to the wall clock; loop until the wall clock agrees.
                let wait = u64::try_from(at - now).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        })
    }
}

/// A clock that only moves when told to. Waiters wake as soon as it passes their time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    tick: Arc<watch::Sender<UnixMillis>>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: UnixMillis) -> ManualClock {
        let (tick, _) = watch::channel(start);
        ManualClock {
            now: Arc::new(AtomicI64::new(start)),
            tick: Arc::new(tick),
        }
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let now = self.now.fetch_add(by, Ordering::SeqCst) + by;
        self.tick.send_replace(now);
    }

    /// Set the clock to `at` (never backwards).
    pub fn set(&self, at: UnixMillis) {
        let now = self.now.fetch_max(at, Ordering::SeqCst).max(at);
        self.tick.send_replace(now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at: UnixMillis) -> BoxFuture<'static, ()> {
        let mut ticks = self.tick.subscribe();
        let now = Arc::clone(&self.now);
        Box::pin(async move {
            while now.load(Ordering::SeqCst) < at {
                if ticks.changed().await.is_err() {
                    // The clock is gone: nothing can ever move it again.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_when_the_clock_passes_its_time() {
        let clock = ManualClock::new(1_000);
        let sleeper = tokio::spawn(clock.sleep_until(1_500));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke 1 ms early");
        clock.advance(Duration::from_millis(1));
        assert!(sleeper.await.is_ok());
        assert_eq!(clock.now(), 1_500);
    }

    #[test]
    fn manual_set_never_moves_backwards() {
        let clock = ManualClock::new(10);
        clock.set(5);
        assert_eq!(clock.now(), 10);
        clock.set(50);
        assert_eq!(clock.now(), 50);
    }
}
