//! The alarm dispatcher: one task, one min-heap of due times, for every object of every class.
//!
//! Objects report their armed time after every change ([`DispatchMsg::Set`]); the heap keeps
//! the earliest entry on top and stale entries are skipped lazily. When the top is due the
//! dispatcher pops every due entry and delivers each fire through the host (activating
//! hibernated objects), at most `alarm_concurrency` at once. No task per object; no polling.
//! A fire that cannot be delivered is re-armed one second later in memory; the index still
//! holds it, so it also survives a restart.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clawdo_storage::{ObjectKey, UnixMillis};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::runtime::actor::error_chain;
use crate::runtime::host::Host;

/// Messages to the dispatcher.
pub(crate) enum DispatchMsg {
    /// The object's armed alarm is now `at` (`None`: no alarm).
    Set {
        key: ObjectKey,
        at: Option<UnixMillis>,
    },
    /// Fire everything due now, then answer once every delivery started so far has finished.
    Settle(oneshot::Sender<()>),
    /// Stop firing; the index keeps every alarm.
    Stop,
}

/// How long an undeliverable fire waits before the next attempt.
const REDELIVERY_DELAY_MS: i64 = 1_000;

struct Schedule {
    heap: BinaryHeap<Reverse<(UnixMillis, ObjectKey)>>,
    armed: HashMap<ObjectKey, UnixMillis>,
}

impl Schedule {
    fn set(&mut self, key: ObjectKey, at: Option<UnixMillis>) {
        match at {
            Some(at) => {
                if self.armed.insert(key.clone(), at) != Some(at) {
                    self.heap.push(Reverse((at, key)));
                }
            }
            None => {
                self.armed.remove(&key);
            }
        }
    }

    /// The earliest live entry, dropping stale heap entries on the way.
    fn next_due(&mut self) -> Option<UnixMillis> {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if self.armed.get(key) == Some(at) {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Remove and return one entry due at `now`, if any.
    fn pop_due(&mut self, now: UnixMillis) -> Option<ObjectKey> {
        let at = self.next_due()?;
        if at > now {
            return None;
        }
        let Reverse((_, key)) = self.heap.pop()?;
        self.armed.remove(&key);
        Some(key)
    }
}

pub(crate) async fn run(
    host: Host,
    mut rx: mpsc::UnboundedReceiver<DispatchMsg>,
    initial: Vec<(ObjectKey, UnixMillis)>,
) {
    let inner = host.inner();
    let clock = Arc::clone(&inner.clock);
    let permits = Arc::new(Semaphore::new(inner.config.alarm_concurrency.get()));
    let mut schedule = Schedule {
        heap: BinaryHeap::with_capacity(initial.len()),
        armed: HashMap::with_capacity(initial.len()),
    };
    for (key, at) in initial {
        schedule.set(key, Some(at));
    }
    inner
        .counters
        .armed_alarms
        .store(schedule.armed.len() as u64, Ordering::Relaxed);
    let concurrency = u32::try_from(inner.config.alarm_concurrency.get()).unwrap_or(u32::MAX);
    loop {
        let sleep = schedule.next_due().map(|at| clock.sleep_until(at));
        let mut settle = Vec::new();
        tokio::select! {
            biased;
            message = rx.recv() => {
                let mut next = message;
                // Apply everything already queued before looking at the clock again.
                loop {
                    match next {
                        None | Some(DispatchMsg::Stop) => return,
                        Some(DispatchMsg::Set { key, at }) => schedule.set(key, at),
                        Some(DispatchMsg::Settle(reply)) => settle.push(reply),
                    }
                    match rx.try_recv() {
                        Ok(message) => next = Some(message),
                        Err(_) => break,
                    }
                }
            }
            () = async { if let Some(sleep) = sleep { sleep.await } else { std::future::pending().await } } => {}
        }
        if !fire_due(&host, &mut schedule, &permits).await {
            return;
        }
        inner
            .counters
            .armed_alarms
            .store(schedule.armed.len() as u64, Ordering::Relaxed);
        for reply in settle {
            // Every permit back means every delivery started so far has finished.
            let permits = Arc::clone(&permits);
            tokio::spawn(async move {
                if let Ok(all) = permits.acquire_many_owned(concurrency).await {
                    drop(all);
                }
                let _ = reply.send(());
            });
        }
    }
}

/// Start a delivery for every entry due at the clock's current reading. Returns `false` when
/// the runtime is going away (the semaphore closed).
async fn fire_due(host: &Host, schedule: &mut Schedule, permits: &Arc<Semaphore>) -> bool {
    let now = host.clock().now();
    while let Some(key) = schedule.pop_due(now) {
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
            return false;
        };
        let Some(fire) = host.fire(key.clone()) else {
            tracing::warn!(class = key.class, id = %key.id, "alarm for an unregistered class");
            continue;
        };
        let host = host.clone();
        tokio::spawn(async move {
            if let Err(error) = fire.await {
                tracing::warn!(class = key.class, id = %key.id,
                    error = %error_chain(&error), "alarm delivery failed; redelivering");
                let at = host.clock().now() + REDELIVERY_DELAY_MS;
                host.arm(key, Some(at));
            }
            drop(permit);
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> ObjectKey {
        ObjectKey::new("counter", id)
    }

    #[test]
    fn pops_in_time_order_and_skips_moved_entries() {
        let mut s = Schedule {
            heap: BinaryHeap::new(),
            armed: HashMap::new(),
        };
        s.set(key("a"), Some(30));
        s.set(key("b"), Some(10));
        s.set(key("c"), Some(20));
        s.set(key("b"), Some(40)); // moved later: the entry at 10 is stale
        s.set(key("c"), None); // cancelled
        assert_eq!(s.next_due(), Some(30));
        assert_eq!(s.pop_due(29), None);
        assert_eq!(s.pop_due(100), Some(key("a")));
        assert_eq!(s.pop_due(100), Some(key("b")));
        assert_eq!(s.pop_due(100), None);
        assert!(s.armed.is_empty());
    }
}
