//! The per-provider call limiter: at most `max_in_flight` calls at once and, optionally, at most
//! `rate_per_sec` call starts per second, with every waiting [`Priority::Interactive`] caller
//! admitted before any waiting [`Priority::Scheduled`] one (SPEC §4, §8).
//!
//! Waiters queue in two FIFO queues, one per class. Only the head of the line (the oldest
//! interactive waiter, or the oldest scheduled waiter when no interactive one waits) may take a
//! slot; every release, admission and cancellation wakes the current head, which re-checks. A
//! slot is only ever taken by the waiter itself while it holds the lock, so a waiter whose
//! future is dropped never owns a slot and cannot leak one. The rate limit is a token bucket
//! (kept as GCRA: one "theoretical arrival time") on [`tokio::time::Instant`], so paused-time
//! tests see exact spacing.

use std::collections::VecDeque;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Priority;

/// Default for [`LimiterConfig::max_in_flight`].
const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::MIN.saturating_add(15);

/// Limits of one provider's limiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct LimiterConfig {
    /// Most provider calls in flight at once (default 16): providers throttle or fail when
    /// flooded, and a bounded number of calls keeps the queue (and its priorities) in clawdo.
    pub max_in_flight: NonZeroUsize,
    /// Most calls started per second, in bursts of up to one second's worth (default `None`:
    /// unlimited). Matches providers that publish a request rate.
    pub rate_per_sec: Option<NonZeroU32>,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            rate_per_sec: None,
        }
    }
}

/// A snapshot of a limiter's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimiterStats {
    /// Calls holding a permit now.
    pub in_flight: usize,
    /// Interactive calls holding a permit now (part of `in_flight`).
    pub in_flight_interactive: usize,
    /// Most calls that held a permit at the same time since the limiter was built.
    pub peak_in_flight: usize,
    /// Interactive callers queued now.
    pub waiting_interactive: usize,
    /// Scheduled callers queued now.
    pub waiting_scheduled: usize,
    /// Interactive calls admitted so far.
    pub admitted_interactive: u64,
    /// Scheduled calls admitted so far.
    pub admitted_scheduled: u64,
    /// Scheduled calls admitted while an interactive caller was queued: always 0, since
    /// interactive callers go first. Counted so that tests and operators can check it under
    /// real load rather than trust it.
    pub scheduled_ahead_of_interactive: u64,
}

/// Admits provider calls: bounded concurrency and rate, interactive callers first.
#[derive(Debug)]
pub struct Limiter {
    config: LimiterConfig,
    state: Arc<Mutex<State>>,
}

/// Proof that a call was admitted; dropping it frees the slot for the next waiter.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit {
    state: Arc<Mutex<State>>,
    priority: Priority,
}

impl Permit {
    /// The class this permit was admitted as.
    pub fn priority(&self) -> Priority {
        self.priority
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        state.in_flight = state.in_flight.saturating_sub(1);
        if self.priority == Priority::Interactive {
            state.in_flight_interactive = state.in_flight_interactive.saturating_sub(1);
        }
        state.wake_head();
    }
}

impl Limiter {
    /// A limiter enforcing `config`.
    pub fn new(config: LimiterConfig) -> Limiter {
        let rate = config.rate_per_sec.map(Rate::new);
        let state = State {
            max_in_flight: config.max_in_flight.get(),
            in_flight: 0,
            in_flight_interactive: 0,
            peak_in_flight: 0,
            interactive: VecDeque::new(),
            scheduled: VecDeque::new(),
            admitted_interactive: 0,
            admitted_scheduled: 0,
            scheduled_ahead_of_interactive: 0,
            next_waiter: 0,
            rate,
        };
        Limiter {
            config,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The limits this limiter enforces.
    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Wait until a call at `priority` may start. Cancellation-safe: dropping the future while
    /// it waits gives up its place in the queue and takes no slot. Like any fair queue, a
    /// waiter that is first in line but no longer polled holds up those behind it, so await
    /// the future directly (or drop it).
    pub async fn acquire(&self, priority: Priority) -> Permit {
        let (id, wake) = {
            let mut state = lock(&self.state);
            if state.nobody_ahead(priority) && state.try_admit(priority) == Admit::Now {
                return self.permit(priority);
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            let wake = Arc::new(Notify::new());
            state.queue_mut(priority).push_back(Waiter {
                id,
                wake: Arc::clone(&wake),
            });
            (id, wake)
        };
        let mut queued = Queued {
            state: &self.state,
            priority,
            id,
            waiting: true,
        };
        loop {
            let outcome = {
                let mut state = lock(&self.state);
                if state.head_id() == Some(id) {
                    let outcome = state.try_admit(priority);
                    if outcome == Admit::Now {
                        state.queue_mut(priority).pop_front();
                        queued.waiting = false;
                        // Capacity may remain (several slots freed at once, burst tokens).
                        state.wake_head();
                    }
                    outcome
                } else {
                    Admit::NoSlot
                }
            };
            match outcome {
                Admit::Now => return self.permit(priority),
                Admit::NoSlot => wake.notified().await,
                Admit::NotBefore(at) => {
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
        }
    }

    /// The limiter's counters now.
    pub fn stats(&self) -> LimiterStats {
        let state = lock(&self.state);
        LimiterStats {
            in_flight: state.in_flight,
            in_flight_interactive: state.in_flight_interactive,
            peak_in_flight: state.peak_in_flight,
            waiting_interactive: state.interactive.len(),
            waiting_scheduled: state.scheduled.len(),
            admitted_interactive: state.admitted_interactive,
            admitted_scheduled: state.admitted_scheduled,
            scheduled_ahead_of_interactive: state.scheduled_ahead_of_interactive,
        }
    }

    /// Whether interactive callers are queued because the limiter is saturated (all slots
    /// taken, or the rate exhausted). The fleet defers new scheduled claims while this holds
    /// (SPEC §8).
    pub fn interactive_waiting(&self) -> bool {
        !lock(&self.state).interactive.is_empty()
    }

    fn permit(&self, priority: Priority) -> Permit {
        Permit {
            state: Arc::clone(&self.state),
            priority,
        }
    }
}

/// Lock the state; a panic elsewhere never leaves it half-updated (every critical section
/// is a few field updates), so a poisoned lock is still usable.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything that changes, behind one lock.
#[derive(Debug)]
struct State {
    max_in_flight: usize,
    in_flight: usize,
    in_flight_interactive: usize,
    peak_in_flight: usize,
    /// Interactive waiters, oldest first.
    interactive: VecDeque<Waiter>,
    /// Scheduled waiters, oldest first.
    scheduled: VecDeque<Waiter>,
    admitted_interactive: u64,
    admitted_scheduled: u64,
    scheduled_ahead_of_interactive: u64,
    /// Next waiter id; ids grow, so each queue is sorted by id.
    next_waiter: u64,
    rate: Option<Rate>,
}

/// One queued caller.
#[derive(Debug)]
struct Waiter {
    id: u64,
    /// Woken whenever this waiter may have become able to proceed.
    wake: Arc<Notify>,
}

/// Whether a call may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Admitted: the slot (and rate token) is taken.
    Now,
    /// Every slot is taken.
    NoSlot,
    /// A slot is free but the rate allows the next start only at this instant.
    NotBefore(Instant),
}

impl State {
    fn queue_mut(&mut self, priority: Priority) -> &mut VecDeque<Waiter> {
        match priority {
            Priority::Interactive => &mut self.interactive,
            Priority::Scheduled => &mut self.scheduled,
        }
    }

    /// No queued caller goes before a new caller of `priority`.
    fn nobody_ahead(&self, priority: Priority) -> bool {
        match priority {
            Priority::Interactive => self.interactive.is_empty(),
            Priority::Scheduled => self.interactive.is_empty() && self.scheduled.is_empty(),
        }
    }

    /// The waiter that is next in line, if any.
    fn head(&self) -> Option<&Waiter> {
        self.interactive.front().or_else(|| self.scheduled.front())
    }

    fn head_id(&self) -> Option<u64> {
        self.head().map(|w| w.id)
    }

    fn wake_head(&self) {
        if let Some(head) = self.head() {
            head.wake.notify_one();
        }
    }

    /// Take a slot (and a rate token) for `priority` if both are available.
    fn try_admit(&mut self, priority: Priority) -> Admit {
        if self.in_flight >= self.max_in_flight {
            return Admit::NoSlot;
        }
        if let Some(rate) = &mut self.rate {
            let now = Instant::now();
            if let Some(at) = rate.not_before(now) {
                return Admit::NotBefore(at);
            }
            rate.take(now);
        }
        self.in_flight += 1;
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight);
        match priority {
            Priority::Interactive => {
                self.in_flight_interactive += 1;
                self.admitted_interactive += 1;
            }
            Priority::Scheduled => {
                self.admitted_scheduled += 1;
                if !self.interactive.is_empty() {
                    self.scheduled_ahead_of_interactive += 1;
                }
            }
        }
        Admit::Now
    }
}

/// A token bucket of `rate` tokens refilled continuously, holding at most `rate` tokens,
/// expressed as GCRA: `tat` is when the bucket would be full again.
#[derive(Debug)]
struct Rate {
    /// Time one token takes to refill.
    interval: Duration,
    /// How far `tat` may run ahead of now: the bucket's capacity minus one token.
    burst: Duration,
    /// Theoretical arrival time; `None` until the first call (full bucket).
    tat: Option<Instant>,
}

impl Rate {
    fn new(per_sec: NonZeroU32) -> Rate {
        let interval = Duration::from_secs(1) / per_sec.get();
        Rate {
            interval,
            burst: interval.saturating_mul(per_sec.get() - 1),
            tat: None,
        }
    }

    /// `None` when a token is available at `now`, else when the next one is.
    fn not_before(&self, now: Instant) -> Option<Instant> {
        let tat = self.tat?;
        let at = tat.checked_sub(self.burst)?;
        (at > now).then_some(at)
    }

    fn take(&mut self, now: Instant) {
        let base = self.tat.map_or(now, |tat| tat.max(now));
        self.tat = Some(base + self.interval);
    }
}

/// A caller's place in a queue; dropping it while still queued (the `acquire` future was
/// cancelled) removes the entry and passes any wake-up on to the new head.
struct Queued<'a> {
    state: &'a Mutex<State>,
    priority: Priority,
    id: u64,
    waiting: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if !self.waiting {
            return;
        }
        let mut state = lock(self.state);
        let queue = state.queue_mut(self.priority);
        if let Ok(at) = queue.binary_search_by_key(&self.id, |w| w.id) {
            queue.remove(at);
        }
        state.wake_head();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt as _;

    use super::*;

    fn limiter(max: usize, rate: Option<u32>) -> Arc<Limiter> {
        Arc::new(Limiter::new(LimiterConfig {
            max_in_flight: NonZeroUsize::new(max).unwrap(),
            rate_per_sec: rate.map(|r| NonZeroU32::new(r).unwrap()),
        }))
    }

    /// Yield until `done(stats)` holds; the spawned tasks need turns to enqueue themselves.
    async fn until(limiter: &Limiter, done: impl Fn(&LimiterStats) -> bool) {
        for _ in 0..10_000 {
            if done(&limiter.stats()) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "limiter never reached the expected state: {:?}",
            limiter.stats()
        );
    }

    /// Spawn a task that acquires at `priority`, then appends `label` to `order`.
    fn spawn_waiter(
        limiter: &Arc<Limiter>,
        order: &Arc<Mutex<Vec<String>>>,
        priority: Priority,
        label: String,
    ) -> tokio::task::JoinHandle<()> {
        let limiter = Arc::clone(limiter);
        let order = Arc::clone(order);
        tokio::spawn(async move {
            let _permit = limiter.acquire(priority).await;
            order.lock().unwrap().push(label);
        })
    }

    #[test]
    fn config_defaults_and_kebab_case() {
        let config = LimiterConfig::default();
        assert_eq!(config.max_in_flight.get(), 16);
        assert_eq!(config.rate_per_sec, None);
        let json = r#"{"max-in-flight": 4, "rate-per-sec": 10}"#;
        let parsed: LimiterConfig = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.max_in_flight.get(), 4);
        assert_eq!(parsed.rate_per_sec.map(NonZeroU32::get), Some(10));
        assert!(serde_json::from_str::<LimiterConfig>(r#"{"max-in-flight": 0}"#).is_err());
        let empty: LimiterConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, config);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_max_in_flight() {
        let limiter = limiter(8, None);
        let current = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let limiter = Arc::clone(&limiter);
            let current = Arc::clone(&current);
            let seen = Arc::clone(&seen);
            let priority = if i % 3 == 0 {
                Priority::Interactive
            } else {
                Priority::Scheduled
            };
            tasks.push(tokio::spawn(async move {
                let _permit = limiter.acquire(priority).await;
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                seen.fetch_max(now, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                current.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let stats = limiter.stats();
        assert!(seen.load(Ordering::SeqCst) <= 8);
        assert!(stats.peak_in_flight <= 8, "{stats:?}");
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.waiting_interactive + stats.waiting_scheduled, 0);
        assert_eq!(stats.admitted_interactive, 67);
        assert_eq!(stats.admitted_scheduled, 133);
    }

    #[tokio::test]
    async fn interactive_waiters_go_before_earlier_scheduled_ones() {
        let limiter = limiter(1, None);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = limiter.acquire(Priority::Scheduled).await;
        let mut tasks = Vec::new();
        for i in 0..3 {
            tasks.push(spawn_waiter(
                &limiter,
                &order,
                Priority::Scheduled,
                format!("s{i}"),
            ));
            until(&limiter, |s| s.waiting_scheduled == i + 1).await;
        }
        assert!(!limiter.interactive_waiting());
        for i in 0..2 {
            tasks.push(spawn_waiter(
                &limiter,
                &order,
                Priority::Interactive,
                format!("i{i}"),
            ));
            until(&limiter, |s| s.waiting_interactive == i + 1).await;
        }
        assert!(limiter.interactive_waiting());
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["i0", "i1", "s0", "s1", "s2"]);
        assert!(!limiter.interactive_waiting());
        let stats = limiter.stats();
        assert_eq!(
            (stats.admitted_interactive, stats.admitted_scheduled),
            (2, 4)
        );
        assert_eq!(stats.peak_in_flight, 1);
    }

    #[tokio::test]
    async fn a_new_interactive_caller_skips_queued_scheduled_ones() {
        let limiter = limiter(1, None);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = limiter.acquire(Priority::Interactive).await;
        let scheduled = spawn_waiter(&limiter, &order, Priority::Scheduled, "s".into());
        until(&limiter, |s| s.waiting_scheduled == 1).await;
        drop(held);
        // The freed slot was handed to the queued scheduled caller's wake-up, but an
        // interactive caller arriving before it runs still goes first.
        let interactive = limiter.acquire(Priority::Interactive).await;
        order.lock().unwrap().push("i".into());
        drop(interactive);
        scheduled.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["i", "s"]);
    }

    #[tokio::test]
    async fn fifo_within_a_class() {
        for priority in [Priority::Interactive, Priority::Scheduled] {
            let limiter = limiter(1, None);
            let order = Arc::new(Mutex::new(Vec::new()));
            let held = limiter.acquire(priority).await;
            let mut tasks = Vec::new();
            for i in 0..6 {
                tasks.push(spawn_waiter(&limiter, &order, priority, i.to_string()));
                until(&limiter, |s| {
                    s.waiting_interactive + s.waiting_scheduled == i + 1
                })
                .await;
            }
            drop(held);
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), ["0", "1", "2", "3", "4", "5"]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaks_nothing() {
        let limiter = limiter(1, None);
        let held = limiter.acquire(Priority::Scheduled).await;

        // Cancelled while queued: an aborted task.
        let aborted = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let _permit = limiter.acquire(Priority::Interactive).await;
            })
        };
        until(&limiter, |s| s.waiting_interactive == 1).await;
        aborted.abort();
        assert!(aborted.await.unwrap_err().is_cancelled());
        assert_eq!(limiter.stats().waiting_interactive, 0);

        // Cancelled after being woken for the freed slot but before it ran.
        let mut woken = Box::pin(limiter.acquire(Priority::Interactive));
        assert!(futures::poll!(&mut woken).is_pending());
        let mut next = Box::pin(limiter.acquire(Priority::Scheduled));
        assert!(futures::poll!(&mut next).is_pending());
        assert_eq!(limiter.stats().waiting_scheduled, 1);
        drop(held);
        drop(woken);
        let permit = tokio::time::timeout(Duration::from_secs(60), next)
            .await
            .expect("the next waiter must get the slot the cancelled one gave up");
        drop(permit);

        // Cancelled by a timeout: the slot is still usable afterwards.
        let held = limiter.acquire(Priority::Scheduled).await;
        let timed_out =
            tokio::time::timeout(Duration::from_secs(1), limiter.acquire(Priority::Scheduled))
                .await;
        assert!(timed_out.is_err());
        drop(held);
        let again = limiter.acquire(Priority::Scheduled).now_or_never();
        assert!(again.is_some(), "a free slot is taken without waiting");
        drop(again);

        let stats = limiter.stats();
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.waiting_interactive + stats.waiting_scheduled, 0);
        assert_eq!(stats.peak_in_flight, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_call_starts() {
        let limiter = limiter(100, Some(10));
        let start = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..25 {
            let _permit = limiter.acquire(Priority::Scheduled).await;
            starts.push(start.elapsed());
        }
        // A full bucket (one second's worth) first, then one start every 100 ms.
        for (i, at) in starts.iter().enumerate() {
            let expected = Duration::from_millis(100 * (i.saturating_sub(9)) as u64);
            assert!(
                *at >= expected && *at < expected + Duration::from_millis(5),
                "call {i} started at {at:?}, expected {expected:?}",
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_serves_interactive_first() {
        let limiter = limiter(100, Some(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        drop(limiter.acquire(Priority::Scheduled).await);
        let scheduled = spawn_waiter(&limiter, &order, Priority::Scheduled, "s".into());
        until(&limiter, |s| s.waiting_scheduled == 1).await;
        let interactive = spawn_waiter(&limiter, &order, Priority::Interactive, "i".into());
        until(&limiter, |s| s.waiting_interactive == 1).await;
        assert!(
            limiter.interactive_waiting(),
            "rate-limited counts as saturated"
        );
        interactive.await.unwrap();
        let first = start.elapsed();
        scheduled.await.unwrap();
        let second = start.elapsed();
        assert_eq!(*order.lock().unwrap(), ["i", "s"]);
        assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1005));
        assert!(second >= Duration::from_secs(2) && second < Duration::from_millis(2005));
    }
}
