//! Background tasks started on behalf of objects: a provider call whose outcome comes back as
//! a message, a notice delivered after a commit. They outlive the object's hibernation but not
//! the host: shutdown aborts whatever still runs.
//!
//! A task may carry a **key** (e.g. `instance/<id>/op`). At most one task runs per key:
//! spawning under a key that is taken aborts the older task. [`Tasks::abort`] aborts the task of
//! a key and waits until it has stopped, so a caller that frees a resource after it (the
//! fleet's reaper freeing a slot) knows the task can no longer act on it. Nothing polls.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::{AbortHandle, JoinHandle};

/// The host's background tasks, keyed or not.
#[derive(Debug, Default)]
pub struct Tasks {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Increases with every spawn; tells a key's current task from one it replaced.
    next: u64,
    keyed: HashMap<String, Keyed>,
    unkeyed: HashMap<u64, AbortHandle>,
}

#[derive(Debug)]
struct Keyed {
    generation: u64,
    handle: JoinHandle<()>,
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Entries are inserted and removed whole; a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `task` in the background, without a key.
    pub fn spawn(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) -> AbortHandle {
        let tasks = Arc::clone(self);
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        // The lock is held until the handle is recorded, so the task's own removal (below)
        // cannot run first and leave a stale entry.
        let handle = tokio::spawn(async move {
            task.await;
            tasks.lock().unkeyed.remove(&id);
        })
        .abort_handle();
        state.unkeyed.insert(id, handle.clone());
        handle
    }

    /// Run `task` in the background under `key`. A task still running under the same key is
    /// aborted (not awaited): the newer one replaces it.
    pub fn spawn_keyed(
        self: &Arc<Self>,
        key: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let key = key.into();
        let tasks = Arc::clone(self);
        let mut state = self.lock();
        state.next += 1;
        let generation = state.next;
        let own_key = key.clone();
        let handle = tokio::spawn(async move {
            task.await;
            let mut state = tasks.lock();
            if state
                .keyed
                .get(&own_key)
                .is_some_and(|k| k.generation == generation)
            {
                state.keyed.remove(&own_key);
            }
        });
        let abort = handle.abort_handle();
        if let Some(replaced) = state.keyed.insert(key, Keyed { generation, handle }) {
            replaced.handle.abort();
        }
        abort
    }

    /// Abort the task of `key` and wait until it has stopped. Returns whether one was running.
    pub async fn abort(&self, key: &str) -> bool {
        let Some(keyed) = self.lock().keyed.remove(key) else {
            return false;
        };
        keyed.handle.abort();
        // Resolves once the task's future was dropped (or it had finished meanwhile).
        let _ = keyed.handle.await;
        true
    }

    /// Whether a task runs under `key`.
    pub fn is_running(&self, key: &str) -> bool {
        self.lock().keyed.contains_key(key)
    }

    /// How many tasks run now, keyed and not.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.keyed.len() + state.unkeyed.len()
    }

    /// Whether no task runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Abort every task (shutdown); returns how many there were.
    pub(crate) fn abort_all(&self) -> usize {
        let (keyed, unkeyed) = {
            let mut state = self.lock();
            (
                state.keyed.drain().map(|(_, k)| k).collect::<Vec<_>>(),
                state.unkeyed.drain().map(|(_, h)| h).collect::<Vec<_>>(),
            )
        };
        let n = keyed.len() + unkeyed.len();
        for k in keyed {
            k.handle.abort();
        }
        for h in unkeyed {
            h.abort();
        }
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    /// Sets its flag when dropped: tells that a task's future is gone.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn abort_returns_only_after_the_task_stopped() {
        let tasks = Arc::new(Tasks::default());
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(Arc::clone(&dropped));
        tasks.spawn_keyed("instance/a/op", async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        assert!(tasks.is_running("instance/a/op"));
        assert!(tasks.abort("instance/a/op").await);
        assert!(
            dropped.load(Ordering::SeqCst),
            "the future is dropped by then"
        );
        assert!(!tasks.is_running("instance/a/op"));
        assert!(!tasks.abort("instance/a/op").await, "nothing left to abort");
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn a_finished_task_removes_its_key() {
        let tasks = Arc::new(Tasks::default());
        let (done_tx, done_rx) = oneshot::channel();
        let handle = tasks.spawn_keyed("k", async move {
            let _ = done_tx.send(());
        });
        done_rx.await.unwrap();
        while !handle.is_finished() {
            tokio::task::yield_now().await;
        }
        // The removal runs right after the body, on the same task.
        assert!(!tasks.is_running("k"));
        assert!(!tasks.abort("k").await);
    }

    #[tokio::test]
    async fn spawning_under_a_taken_key_replaces_the_older_task() {
        let tasks = Arc::new(Tasks::default());
        let first_dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(Arc::clone(&first_dropped));
        let first = tasks.spawn_keyed("k", async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        });
        let (release_tx, release_rx) = oneshot::channel::<()>();
        tasks.spawn_keyed("k", async move {
            let _ = release_rx.await;
        });
        while !first.is_finished() {
            tokio::task::yield_now().await;
        }
        assert!(first_dropped.load(Ordering::SeqCst));
        // The older task's end must not remove the newer one's entry.
        assert!(tasks.is_running("k"));
        drop(release_tx);
        assert!(tasks.abort("k").await);
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn abort_all_stops_keyed_and_unkeyed_tasks() {
        let tasks = Arc::new(Tasks::default());
        let a = tasks.spawn(std::future::pending());
        let b = tasks.spawn_keyed("k", std::future::pending());
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks.abort_all(), 2);
        while !(a.is_finished() && b.is_finished()) {
            tokio::task::yield_now().await;
        }
        assert!(tasks.is_empty());
    }
}
