//! The host: the registry of classes, the table of resident objects, activation, hibernation,
//! and the handles ([`Stub`]) callers use.
//!
//! # Activation is serialized (invariant 2)
//! The resident table maps each object to one `Entry`. The first caller of an absent object
//! inserts `Activating` under the shard's lock and activates; every concurrent caller finds
//! `Activating` and waits for it to finish, then uses the one actor. Hibernation marks an entry
//! `Stopping` under the same lock, and only when no call is in flight; callers that arrive meanwhile
//! wait until the old actor has stopped and closed its file before activating a new one. So at no
//! time do two live actors serve one object.
//!
//! # Hibernation and budgets
//! One janitor task hibernates objects idle for `idle_timeout`, hibernates the least recently
//! used idle objects while more than `resident_cap` are resident, and asks the least recently
//! used idle residents to close their files while more than `max_open_files` are open.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use clawdo_storage::{DataDir, ObjectKey, ShardId, ShardIndexes, UnixMillis};
use futures::StreamExt;
use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, MessagingErr, SpawnErr};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::runtime::actor::{ActivateArgs, ObjectActor, ObjectMsg, error_chain};
use crate::runtime::clock::{Clock, SystemClock};
use crate::runtime::config::HostConfig;
use crate::runtime::dispatcher::{self, DispatchMsg};
use crate::runtime::error::Error;
use crate::runtime::id::ObjectId;
use crate::runtime::object::Object;
use crate::runtime::stats::{Counters, HostStats};
use crate::runtime::tasks::Tasks;

/// A resident object: its actor and what the janitor needs to decide about it.
pub(crate) struct Resident {
    /// Which object (kept here so the janitor's passes need no key copies).
    key: ObjectKey,
    cell: ActorCell,
    /// Calls and alarm deliveries holding a lease on this object.
    inflight: AtomicUsize,
    /// Clock time of the last lease taken or returned.
    last_used: AtomicI64,
    /// Whether the object's file is open (shared with its actor).
    file_open: Arc<AtomicBool>,
    /// Sends the class's `CloseFile` message (the janitor does not know the class).
    close_file: fn(&ActorCell),
}

fn send_close_file<C: Object>(cell: &ActorCell) {
    // A stopped actor has closed its file already.
    let _ = cell.send_message(ObjectMsg::<C>::CloseFile);
}

/// State of one object in the resident table.
enum Entry {
    /// An activation is running; wait for the sender to drop.
    Activating(watch::Receiver<()>),
    /// The actor is alive.
    Active(Arc<Resident>),
    /// The actor is stopping; wait for the sender to drop, then activate afresh.
    Stopping(watch::Receiver<()>),
}

/// Type-erased operations on one registered class.
trait ClassDriver: Send + Sync {
    fn fire(&self, host: Host, key: ObjectKey) -> BoxFuture<'static, Result<(), Error>>;
    /// The class's `Arc<C::Deps>`, erased.
    fn deps(&self) -> Arc<dyn Any + Send + Sync>;
}

struct Driver<C: Object> {
    deps: Arc<C::Deps>,
}

impl<C: Object> ClassDriver for Driver<C> {
    fn fire(&self, host: Host, key: ObjectKey) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move { host.deliver_alarm::<C>(&key).await })
    }

    fn deps(&self) -> Arc<dyn Any + Send + Sync> {
        Arc::clone(&self.deps) as Arc<dyn Any + Send + Sync>
    }
}

pub(crate) struct Inner {
    pub(crate) config: HostConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) dir: Arc<DataDir>,
    pub(crate) indexes: Arc<ShardIndexes>,
    pub(crate) counters: Counters,
    classes: HashMap<&'static str, Arc<dyn ClassDriver>>,
    table: Vec<Mutex<HashMap<ObjectKey, Entry>>>,
    accepting: AtomicBool,
    /// Leases held right now, across all objects; shutdown waits for zero.
    inflight_total: AtomicUsize,
    idle: Notify,
    dispatcher: mpsc::UnboundedSender<DispatchMsg>,
    janitor_wake: Notify,
    /// One janitor pass at a time, so `run_janitor` returns after any pass in progress too.
    sweep_lock: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
    /// The dispatcher and the janitor, awaited at shutdown.
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Random per start: work tagged with another epoch was interrupted by a restart.
    epoch: u64,
    /// Background tasks started by objects ([`Host::spawn`], [`Host::spawn_keyed`]), aborted
    /// at shutdown.
    tasks: Arc<Tasks>,
}

/// The object host. Cheap to clone; all clones share one runtime.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("data_dir", &self.inner.dir.root())
            .finish_non_exhaustive()
    }
}

/// Builder for [`Host`]: data directory, configuration, clock and classes.
pub struct HostBuilder {
    data_dir: PathBuf,
    config: HostConfig,
    clock: Arc<dyn Clock>,
    classes: Vec<(&'static str, Arc<dyn ClassDriver>)>,
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostBuilder")
            .field("data_dir", &self.data_dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HostBuilder {
    /// A builder for a host over `data_dir` with default configuration and the system clock.
    pub fn new(data_dir: impl Into<PathBuf>) -> HostBuilder {
        HostBuilder {
            data_dir: data_dir.into(),
            config: HostConfig::default(),
            clock: Arc::new(SystemClock),
            classes: Vec::new(),
        }
    }

    /// Replace the configuration.
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// Replace the clock (tests pass a [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Register object class `C`, which needs no dependencies.
    pub fn register<C: Object<Deps = ()>>(self) -> Self {
        self.register_with::<C>(Arc::new(()))
    }

    /// Register object class `C` with the dependencies every object of it gets at activation.
    pub fn register_with<C: Object>(mut self, deps: Arc<C::Deps>) -> Self {
        self.classes
            .push((C::CLASS, Arc::new(Driver::<C> { deps })));
        self
    }

    /// Whether a class named `name` is registered already.
    pub fn has_class(&self, name: &str) -> bool {
        self.classes.iter().any(|(n, _)| *n == name)
    }

    /// Check the registered classes without opening anything: each name is a valid class name
    /// (`[a-z0-9_]{1,32}`) and no name is registered twice ([`Error::DuplicateClass`]).
    /// [`HostBuilder::start`] runs this check before it touches the data directory.
    pub fn check_classes(&self) -> Result<(), Error> {
        let mut seen = std::collections::HashSet::new();
        for &(name, _) in &self.classes {
            let valid = (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(Error::Storage(clawdo_storage::Error::InvalidClassName(
                    name.to_string(),
                )));
            }
            if !seen.insert(name) {
                return Err(Error::DuplicateClass(name));
            }
        }
        Ok(())
    }

    /// Check the classes ([`HostBuilder::check_classes`]), then open the data directory, load
    /// the alarm index and start the dispatcher and janitor.
    pub async fn start(self) -> Result<Host, Error> {
        self.check_classes()?;
        let classes: HashMap<&'static str, Arc<dyn ClassDriver>> =
            self.classes.into_iter().collect();
        let durability = self.config.durability;
        let data_dir = self.data_dir;
        let (dir, indexes, alarms) = tokio::task::spawn_blocking(move || {
            let dir = DataDir::open(data_dir, durability)?;
            let indexes = ShardIndexes::open(&dir)?;
            let alarms = indexes.load_alarms()?;
            Ok::<_, clawdo_storage::Error>((dir, indexes, alarms))
        })
        .await??;
        let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config: self.config,
            clock: self.clock,
            dir: Arc::new(dir),
            indexes: Arc::new(indexes),
            counters: Counters::new(),
            table: (0..clawdo_storage::shard::SHARD_COUNT)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            classes,
            accepting: AtomicBool::new(true),
            inflight_total: AtomicUsize::new(0),
            idle: Notify::new(),
            dispatcher: dispatch_tx,
            janitor_wake: Notify::new(),
            sweep_lock: tokio::sync::Mutex::new(()),
            stop,
            workers: Mutex::new(Vec::new()),
            epoch: rand::random(),
            tasks: Arc::new(Tasks::default()),
        });
        let host = Host { inner };
        let mut initial = Vec::with_capacity(alarms.len());
        for alarm in alarms {
            match host.inner.classes.get_key_value(alarm.class.as_str()) {
                Some((&class, _)) => initial.push((ObjectKey::new(class, &alarm.id), alarm.at)),
                None => tracing::warn!(class = %alarm.class, id = %alarm.id,
                    "alarm of an unregistered class left in the index"),
            }
        }
        tracing::info!(
            data_dir = %host.inner.dir.root().display(),
            alarms = initial.len(),
            "object host started"
        );
        host.inner
            .counters
            .armed_alarms
            .store(initial.len() as u64, Ordering::Relaxed);
        let dispatcher = tokio::spawn(dispatcher::run(host.clone(), dispatch_rx, initial));
        let janitor = tokio::spawn(janitor(host.clone()));
        host.inner.lock_workers().extend([dispatcher, janitor]);
        Ok(host)
    }
}

impl Inner {
    fn lock_workers(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A call in flight on one resident object; returning it records the object as used.
struct Lease<'a> {
    resident: Arc<Resident>,
    host: &'a Host,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let inner = &self.host.inner;
        self.resident
            .last_used
            .store(inner.clock.now(), Ordering::Relaxed);
        self.resident.inflight.fetch_sub(1, Ordering::AcqRel);
        if inner.inflight_total.fetch_sub(1, Ordering::AcqRel) == 1 {
            inner.idle.notify_waiters();
        }
    }
}

impl Host {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// A stub for object `id` of class `C`. Validates the id; creates nothing.
    pub fn get<C: Object>(&self, id: &str) -> Result<Stub<C>, Error> {
        let id = ObjectId::parse(id)?;
        self.class_registered::<C>()?;
        Ok(Stub {
            host: self.clone(),
            key: ObjectKey::new(C::CLASS, id.as_str()),
            id,
            _class: PhantomData,
        })
    }

    /// Whether object `id` of class `C` was ever created. Activates nothing.
    pub async fn exists<C: Object>(&self, id: &str) -> Result<bool, Error> {
        let id = ObjectId::parse(id)?;
        self.class_registered::<C>()?;
        let key = ObjectKey::new(C::CLASS, id.as_str());
        if matches!(self.table(key.shard).get(&key), Some(Entry::Active(_))) {
            return Ok(true);
        }
        // One indexed read of a small, already open file: quick enough to run inline.
        Ok(self.inner.indexes.contains_object(&key)?)
    }

    /// Up to `limit` ids of class `C` in ascending order, strictly after `after`. Activates
    /// nothing. Page by passing the last id of one page as `after` of the next.
    pub async fn list_ids<C: Object>(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectId>, Error> {
        self.class_registered::<C>()?;
        let indexes = Arc::clone(&self.inner.indexes);
        let after = after.map(str::to_string);
        let ids = tokio::task::spawn_blocking(move || {
            indexes.list_ids(C::CLASS, after.as_deref(), limit)
        })
        .await??;
        Ok(ids
            .iter()
            .filter_map(|id| ObjectId::parse(id).ok())
            .collect())
    }

    /// The dependencies class `C` was registered with. An `Err` means another type was
    /// registered under `C`'s name (or none): activation of `C` fails loudly then.
    pub(crate) fn deps<C: Object>(&self) -> Result<Arc<C::Deps>, Error> {
        let driver = self
            .inner
            .classes
            .get(C::CLASS)
            .ok_or(Error::UnknownClass(C::CLASS))?;
        driver
            .deps()
            .downcast::<C::Deps>()
            .map_err(|_| Error::ClassTypeMismatch(C::CLASS))
    }

    /// Run `task` in the background on behalf of an object (e.g. a provider call whose
    /// outcome comes back as a message). It outlives the object's hibernation but not the
    /// host: shutdown aborts whatever is still running.
    pub fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        self.inner.tasks.spawn(task)
    }

    /// Run `task` in the background under `key` (see [`Tasks`]): a task still running under
    /// the same key is aborted, and [`Host::abort_task`] can stop this one by its key.
    pub fn spawn_keyed(
        &self,
        key: impl Into<String>,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        self.inner.tasks.spawn_keyed(key, task)
    }

    /// Abort the background task of `key` and wait until it has stopped. Returns whether one
    /// was running.
    pub async fn abort_task(&self, key: &str) -> bool {
        self.inner.tasks.abort(key).await
    }

    /// Whether a background task runs under `key`.
    pub fn task_running(&self, key: &str) -> bool {
        self.inner.tasks.is_running(key)
    }

    /// This start's epoch (random): persisted work tagged with another epoch belonged to a
    /// previous process and was interrupted.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// Current counters.
    pub fn stats(&self) -> HostStats {
        self.inner.counters.snapshot()
    }

    /// The clock every time decision reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Wait until every alarm due at the clock's current reading has been delivered and its
    /// handler has finished. For tests
    /// driving a [`crate::ManualClock`], and for tools.
    pub async fn settle_alarms(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .dispatcher
            .send(DispatchMsg::Settle(tx))
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Run one janitor pass now (hibernate idle objects, enforce the resident cap and the
    /// open-file budget) and return how many objects it hibernated. The janitor also runs on its
    /// own; tests call this after moving a manual clock to observe a pass deterministically.
    pub async fn run_janitor(&self) -> usize {
        self.sweep().await
    }

    /// Stop accepting calls, let in-flight calls finish within `deadline`, stop every object
    /// (closing its file), stop the dispatcher and flush the alarm index. Alarms stay in the
    /// index and fire after the next start. Idempotent.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), Error> {
        if !self.inner.accepting.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        self.inner.stop.send_replace(true);
        let _ = self.inner.dispatcher.send(DispatchMsg::Stop);
        self.inner.janitor_wake.notify_one();
        let drained = tokio::time::timeout(deadline, async {
            loop {
                let notified = self.inner.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.inner.inflight_total.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        })
        .await
        .is_ok();
        if !drained {
            tracing::warn!(
                in_flight = self.inner.inflight_total.load(Ordering::Acquire),
                "shutdown deadline passed with calls in flight; stopping objects anyway"
            );
        }
        let residents = self.all_residents();
        let remaining = deadline.saturating_sub(started.elapsed());
        let stopped = futures::stream::iter(residents)
            .map(|(key, resident)| async move {
                self.stop_resident(&key, &resident, remaining).await;
            })
            .buffer_unordered(64)
            .count()
            .await;
        let tasks: Vec<_> = self.inner.lock_workers().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        let aborted = self.inner.tasks.abort_all();
        if aborted > 0 {
            tracing::info!(tasks = aborted, "aborting background tasks");
        }
        let indexes = Arc::clone(&self.inner.indexes);
        tokio::task::spawn_blocking(move || indexes.close()).await?;
        self.inner.dir.unlock();
        tracing::info!(objects = stopped, "object host stopped");
        Ok(())
    }

    fn class_registered<C: Object>(&self) -> Result<(), Error> {
        if self.inner.classes.contains_key(C::CLASS) {
            Ok(())
        } else {
            Err(Error::UnknownClass(C::CLASS))
        }
    }

    fn table(&self, shard: ShardId) -> MutexGuard<'_, HashMap<ObjectKey, Entry>> {
        // Entries are replaced whole under the lock, so a panic elsewhere cannot leave one
        // half-written; a poisoned lock is still consistent.
        self.inner.table[shard.0 as usize]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn arm(&self, key: ObjectKey, at: Option<UnixMillis>) {
        let _ = self.inner.dispatcher.send(DispatchMsg::Set { key, at });
    }

    pub(crate) fn file_opened(&self) {
        let open = self
            .inner
            .counters
            .open_files
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if open > self.inner.config.max_open_files.get() as u64 {
            self.inner.janitor_wake.notify_one();
        }
    }

    pub(crate) fn file_closed(&self) {
        self.inner
            .counters
            .open_files
            .fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn fire(&self, key: ObjectKey) -> Option<BoxFuture<'static, Result<(), Error>>> {
        let driver = self.inner.classes.get(key.class)?;
        Some(driver.fire(self.clone(), key))
    }

    /// Take a lease on the resident actor of `key`, activating it first if needed.
    async fn acquire<C: Object>(&self, key: &ObjectKey, id: &ObjectId) -> Result<Lease<'_>, Error> {
        loop {
            if !self.inner.accepting.load(Ordering::Acquire) {
                return Err(Error::ShuttingDown);
            }
            let decision = {
                let mut table = self.table(key.shard);
                match table.get(key) {
                    Some(Entry::Active(resident)) => {
                        resident.inflight.fetch_add(1, Ordering::AcqRel);
                        self.inner.inflight_total.fetch_add(1, Ordering::AcqRel);
                        return Ok(Lease {
                            resident: Arc::clone(resident),
                            host: self,
                        });
                    }
                    Some(Entry::Activating(rx)) | Some(Entry::Stopping(rx)) => Err(rx.clone()),
                    None => {
                        let (done, rx) = watch::channel(());
                        table.insert(key.clone(), Entry::Activating(rx));
                        // Counted before the table lock is released so shutdown waits for it.
                        self.inner.inflight_total.fetch_add(1, Ordering::AcqRel);
                        Ok(done)
                    }
                }
            };
            let mut wait = match decision {
                Ok(done) => {
                    return match self.activate::<C>(key.clone(), id.clone(), done).await {
                        Ok(resident) => Ok(Lease {
                            resident,
                            host: self,
                        }),
                        Err(error) => {
                            if self.inner.inflight_total.fetch_sub(1, Ordering::AcqRel) == 1 {
                                self.inner.idle.notify_waiters();
                            }
                            Err(error)
                        }
                    };
                }
                Err(wait) => wait,
            };
            // Err means the sender is gone: the activation or stop finished. Look again.
            let _ = wait.changed().await;
        }
    }

    /// Spawn the actor of `key` and publish it. Runs in its own task so that a caller giving up
    /// cannot leave the entry stuck in `Activating`.
    async fn activate<C: Object>(
        &self,
        key: ObjectKey,
        id: ObjectId,
        done: watch::Sender<()>,
    ) -> Result<Arc<Resident>, Error> {
        let host = self.clone();
        let task = tokio::spawn(async move {
            let file_open = Arc::new(AtomicBool::new(false));
            let args = ActivateArgs {
                host: host.clone(),
                key: key.clone(),
                id: id.clone(),
                file_open: Arc::clone(&file_open),
            };
            let spawned = ObjectActor::<C>::spawn(None, ObjectActor::new(), args).await;
            let mut table = host.table(key.shard);
            let outcome = match spawned {
                Ok((actor, _join)) => {
                    let resident = Arc::new(Resident {
                        key: key.clone(),
                        cell: actor.get_cell(),
                        inflight: AtomicUsize::new(1),
                        last_used: AtomicI64::new(host.inner.clock.now()),
                        file_open,
                        close_file: send_close_file::<C>,
                    });
                    table.insert(key.clone(), Entry::Active(Arc::clone(&resident)));
                    let counters = &host.inner.counters;
                    counters.activations.fetch_add(1, Ordering::Relaxed);
                    let resident_now = counters.resident.fetch_add(1, Ordering::Relaxed) + 1;
                    if resident_now > host.inner.config.resident_cap.get() as u64 {
                        host.inner.janitor_wake.notify_one();
                    }
                    Ok(resident)
                }
                Err(error) => {
                    table.remove(&key);
                    let (reason, cause) = match error {
                        SpawnErr::StartupFailed(inner) => {
                            (error_chain(inner.as_ref()), Some(Arc::from(inner)))
                        }
                        other => (other.to_string(), None),
                    };
                    tracing::warn!(class = C::CLASS, %id, %reason, "activation failed");
                    Err(Error::Activation {
                        class: C::CLASS,
                        id: id.to_string(),
                        reason,
                        cause,
                    })
                }
            };
            drop(table);
            drop(done);
            outcome
        });
        task.await?
    }

    /// Deliver an alarm fire to object `key` of class `C`.
    async fn deliver_alarm<C: Object>(&self, key: &ObjectKey) -> Result<(), Error> {
        let id = ObjectId::parse(&key.id)?;
        let mut attempts = 0;
        loop {
            let lease = self.acquire::<C>(key, &id).await?;
            let (tx, rx) = oneshot::channel();
            match lease.resident.cell.send_message(ObjectMsg::<C>::Alarm(tx)) {
                Ok(()) => {}
                Err(_) if attempts == 0 => {
                    attempts += 1;
                    self.evict_dead(key, &lease.resident).await;
                    continue;
                }
                Err(_) => return Err(self.object_failed(key)),
            }
            return match tokio::time::timeout(self.inner.config.call_timeout, rx).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => {
                    self.evict_dead(key, &lease.resident).await;
                    Err(self.object_failed(key))
                }
                Err(_) => Err(Error::Timeout {
                    class: key.class,
                    id: key.id.clone(),
                }),
            };
        }
    }

    fn object_failed(&self, key: &ObjectKey) -> Error {
        Error::ObjectFailed {
            class: key.class,
            id: key.id.clone(),
        }
    }

    /// The actor of `key` died (its handler panicked): wait for it to finish exiting (its file
    /// is closed then) and remove its entry so the next call activates afresh.
    async fn evict_dead(&self, key: &ObjectKey, dead: &Arc<Resident>) {
        let done = {
            let mut table = self.table(key.shard);
            match table.get(key) {
                Some(Entry::Active(current)) if Arc::ptr_eq(current, dead) => {
                    let (done, rx) = watch::channel(());
                    table.insert(key.clone(), Entry::Stopping(rx));
                    done
                }
                _ => return,
            }
        };
        let _ = dead.cell.wait(None).await;
        self.table(key.shard).remove(key);
        self.inner.counters.resident.fetch_sub(1, Ordering::Relaxed);
        drop(done);
    }

    fn all_residents(&self) -> Vec<(ObjectKey, Arc<Resident>)> {
        let mut out = Vec::new();
        for shard in ShardId::all() {
            let table = self.table(shard);
            for (key, entry) in table.iter() {
                if let Entry::Active(resident) = entry {
                    out.push((key.clone(), Arc::clone(resident)));
                }
            }
        }
        out
    }

    /// Stop the actor of `key` if it is still `resident` and idle (or unconditionally when
    /// shutting down). Returns whether it stopped.
    async fn stop_resident(
        &self,
        key: &ObjectKey,
        resident: &Arc<Resident>,
        wait: Duration,
    ) -> bool {
        let done = {
            let mut table = self.table(key.shard);
            match table.get(key) {
                Some(Entry::Active(current))
                    if Arc::ptr_eq(current, resident)
                        && (resident.inflight.load(Ordering::Acquire) == 0
                            || !self.inner.accepting.load(Ordering::Acquire)) =>
                {
                    let (done, rx) = watch::channel(());
                    table.insert(key.clone(), Entry::Stopping(rx));
                    done
                }
                _ => return false,
            }
        };
        if resident.cell.stop_and_wait(None, Some(wait)).await.is_err() {
            tracing::warn!(class = key.class, id = %key.id, "object did not stop in time; killing it");
            let _ = resident.cell.kill_and_wait(None).await;
        }
        self.table(key.shard).remove(key);
        self.inner.counters.resident.fetch_sub(1, Ordering::Relaxed);
        drop(done);
        true
    }

    /// One janitor pass; returns how many objects were hibernated.
    async fn sweep(&self) -> usize {
        let _one_pass = self.inner.sweep_lock.lock().await;
        let config = &self.inner.config;
        let now = self.inner.clock.now();
        let idle_ms = i64::try_from(config.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let counters = &self.inner.counters;
        let resident = counters.resident.load(Ordering::Relaxed) as usize;
        let open = counters.open_files.load(Ordering::Relaxed) as usize;
        // Past a budget, go down to its low watermark (90 %), so that a steady stream of new
        // activations costs one pass per tenth of the budget rather than one per activation.
        let low = |budget: usize| budget - budget / 10;
        let over_cap = if resident > config.resident_cap.get() {
            resident - low(config.resident_cap.get())
        } else {
            0
        };
        let over_files = if open > config.max_open_files.get() {
            open - low(config.max_open_files.get())
        } else {
            0
        };
        let mut evict: Vec<Arc<Resident>> = Vec::new();
        let mut recent: Vec<(i64, Arc<Resident>)> = Vec::new();
        for shard in ShardId::all() {
            let table = self.table(shard);
            for entry in table.values() {
                let Entry::Active(r) = entry else { continue };
                if r.inflight.load(Ordering::Acquire) != 0 {
                    continue;
                }
                let last = r.last_used.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= idle_ms {
                    evict.push(Arc::clone(r));
                } else if over_cap > evict.len() || over_files > 0 {
                    recent.push((last, Arc::clone(r)));
                }
            }
        }
        // The least recently used of the rest, without sorting them all.
        let lru = over_cap.saturating_sub(evict.len()).min(recent.len());
        if lru > 0 && lru < recent.len() {
            recent.select_nth_unstable_by_key(lru, |(last, _)| *last);
        }
        evict.extend(recent.drain(..lru).map(|(_, r)| r));
        // Files: ask the least recently used of the remaining residents to close theirs.
        let closing = over_files.saturating_sub(evict.len());
        if closing > 0 {
            recent.retain(|(_, r)| r.file_open.load(Ordering::Relaxed));
            if closing < recent.len() {
                recent.select_nth_unstable_by_key(closing, |(last, _)| *last);
            }
            for (_, r) in recent.iter().take(closing) {
                (r.close_file)(&r.cell);
            }
        }
        let wait = config.call_timeout;
        let hibernated = futures::stream::iter(evict)
            .map(|r| async move { self.stop_resident(&r.key, &r, wait).await })
            .buffer_unordered(64)
            .filter(|stopped| std::future::ready(*stopped))
            .count()
            .await;
        counters
            .hibernations
            .fetch_add(hibernated as u64, Ordering::Relaxed);
        if hibernated > 0 {
            tracing::debug!(hibernated, "janitor pass");
        }
        hibernated
    }
}

/// Least time between two janitor passes woken by a budget overflow.
const MIN_BUDGET_PASS_SPACING: Duration = Duration::from_millis(100);

/// The janitor task: a pass every quarter idle timeout (clamped to 100 ms – 5 s of clock time),
/// and at once when a budget is exceeded.
async fn janitor(host: Host) {
    let mut stop = host.inner.stop.subscribe();
    let period = (host.inner.config.idle_timeout / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(5_000);
    // A budget overflow wakes the janitor at once, but closes it requested land only as the
    // actors get to them: passes triggered that way are spaced (wall time, not clock time: this
    // paces work, it is not a deadline) so they do not run back to back over the same residents.
    let mut last_pass = tokio::time::Instant::now();
    loop {
        let next = host.inner.clock.now() + period_ms;
        let woken = tokio::select! {
            _ = host.inner.clock.sleep_until(next) => false,
            _ = host.inner.janitor_wake.notified() => true,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        if woken {
            tokio::time::sleep_until(last_pass + MIN_BUDGET_PASS_SPACING).await;
        }
        if *stop.borrow() {
            return;
        }
        host.sweep().await;
        last_pass = tokio::time::Instant::now();
    }
}

/// A typed handle to one object. Cheap to create and clone; holds no resources.
pub struct Stub<C: Object> {
    host: Host,
    key: ObjectKey,
    id: ObjectId,
    _class: PhantomData<fn() -> C>,
}

impl<C: Object> Clone for Stub<C> {
    fn clone(&self) -> Self {
        Stub {
            host: self.host.clone(),
            key: self.key.clone(),
            id: self.id.clone(),
            _class: PhantomData,
        }
    }
}

impl<C: Object> std::fmt::Debug for Stub<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("class", &C::CLASS)
            .field("id", &self.id)
            .finish()
    }
}

impl<C: Object> Stub<C> {
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// Send `request` and wait for the response, activating the object first if needed.
    pub async fn call(&self, request: C::Request) -> Result<C::Response, Error> {
        let host = &self.host;
        let mut request = request;
        let mut retried = false;
        loop {
            let lease = host.acquire::<C>(&self.key, &self.id).await?;
            let (tx, rx) = oneshot::channel();
            match lease
                .resident
                .cell
                .send_message(ObjectMsg::<C>::Call(request, tx))
            {
                Ok(()) => {}
                Err(MessagingErr::SendErr(ObjectMsg::Call(returned, _))) if !retried => {
                    // The actor had died (a handler panicked). Replace it and try once more;
                    // the request never reached it, so this cannot apply it twice.
                    retried = true;
                    request = returned;
                    host.evict_dead(&self.key, &lease.resident).await;
                    continue;
                }
                Err(_) => return Err(host.object_failed(&self.key)),
            }
            return match tokio::time::timeout(host.inner.config.call_timeout, rx).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(_)) => {
                    // The reply was dropped: the actor died handling this call. Remove it now
                    // so the next call activates a fresh one instead of queueing on a corpse.
                    host.evict_dead(&self.key, &lease.resident).await;
                    Err(host.object_failed(&self.key))
                }
                Err(_) => Err(Error::Timeout {
                    class: C::CLASS,
                    id: self.key.id.clone(),
                }),
            };
        }
    }
}

/// Default resident cap as a `NonZeroUsize` (for builders).
pub fn default_resident_cap() -> NonZeroUsize {
    HostConfig::default().resident_cap
}

/// Counter for tests and benches: how many leases are held right now.
#[doc(hidden)]
pub fn inflight(host: &Host) -> usize {
    host.inner.inflight_total.load(Ordering::Acquire)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Host>();
    let _ = AtomicU64::new(0);
}
