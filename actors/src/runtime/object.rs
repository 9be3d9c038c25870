//! The object trait every class implements, and the context its handlers get.
//!
//! A class is a Rust type: [`Object::activate`] builds it from its (already opened and migrated)
//! storage and its typed dependencies ([`Object::Deps`], given once at registration); [`Object::handle`] serves one request at a time; [`Object::alarm`] runs when its alarm
//! or named timers are due. Domain errors belong in `Response`; an `Err` from `activate` fails the
//! activation and an `Err` from `alarm` schedules a retry with backoff.

use std::future::Future;
use std::sync::Arc;

use clawdo_storage::{Migration, ObjectStore, Tx, UnixMillis};

use crate::Host;
use crate::runtime::clock::Clock;
use crate::runtime::error::Error;
use crate::runtime::id::ObjectId;

/// Error type of `activate` and `alarm`: anything printable.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An object class.
pub trait Object: Sized + Send + 'static {
    /// Class name: `[a-z0-9_]{1,32}`, unique per host, stable forever (it names directories).
    const CLASS: &'static str;
    /// What callers send.
    type Request: Send + 'static;
    /// What callers get back. Domain errors go here, not in an `Err`.
    type Response: Send + 'static;
    /// What every object of the class shares (providers, configuration, other classes'
    /// handles' needs), given once with [`HostBuilder::register_with`](crate::HostBuilder::register_with)
    /// (`()` for a class that needs nothing: [`HostBuilder::register`](crate::HostBuilder::register)).
    /// A class cannot be registered without its dependencies, so none is looked up at run time.
    type Deps: Send + Sync + 'static;

    /// The class's schema steps (see [`clawdo_storage::migrate`]).
    fn migrations() -> &'static [Migration] {
        &[]
    }

    /// Load the object from its storage. No message is admitted until this returns.
    fn activate(
        ctx: &mut Ctx,
        deps: Arc<Self::Deps>,
    ) -> impl Future<Output = Result<Self, HandlerError>> + Send;

    /// Serve one request. Requests to one object are handled one at a time, in arrival order.
    fn handle(
        &mut self,
        ctx: &mut Ctx,
        request: Self::Request,
    ) -> impl Future<Output = Self::Response> + Send;

    /// The alarm (or some named timers) is due. Returning `Err` retries with backoff.
    fn alarm(
        &mut self,
        ctx: &mut Ctx,
        alarm: AlarmInfo,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = (ctx, alarm);
        async { Ok(()) }
    }
}

/// What an alarm handler learns about the fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmInfo {
    /// The object's own alarm (set with `set_alarm`) is among the due timers.
    pub alarm: bool,
    /// Names of due named timers, earliest first (the object's alarm is not listed here).
    pub timers: Vec<String>,
    /// The earliest due time among them.
    pub scheduled_at: UnixMillis,
    /// How many times this fire was already attempted and failed.
    pub retry_count: u32,
    /// `retry_count > 0`.
    pub is_retry: bool,
}

/// Everything a handler may touch: its id, storage, the clock and the host.
pub struct Ctx {
    pub(crate) id: ObjectId,
    pub(crate) store: ObjectStore,
    pub(crate) host: Host,
    pub(crate) clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// This object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// The current time from the runtime's clock.
    pub fn now(&self) -> UnixMillis {
        self.clock.now()
    }

    /// The host, to call other objects.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The object's storage, for reads (`store().conn()`, `kv_get`, `get_alarm`).
    pub fn store(&mut self) -> &mut ObjectStore {
        &mut self.store
    }

    /// Run `f` in one write transaction and commit it: SQL, KV and timers together. With
    /// `power` durability the commit's fsync runs off the async worker (`block_in_place`).
    pub fn transact<T, E>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<clawdo_storage::Error>,
    {
        let store = &mut self.store;
        crate::runtime::blocking::maybe_blocking(store.durability(), || store.transact(f))
    }

    /// Set (or move) the object's alarm, in a transaction of its own.
    pub fn set_alarm(&mut self, at: UnixMillis) -> Result<(), Error> {
        Ok(self.transact(|tx| tx.set_alarm(at))?)
    }

    /// The object's alarm, if set.
    pub fn get_alarm(&mut self) -> Result<Option<UnixMillis>, Error> {
        Ok(self.store.get_alarm()?)
    }

    /// Cancel the object's alarm; returns whether it was set.
    pub fn delete_alarm(&mut self) -> Result<bool, Error> {
        Ok(self.transact(|tx| tx.delete_alarm())?)
    }

    /// Set (or move) the named timer `name`, in a transaction of its own.
    pub fn set_timer(&mut self, name: &str, at: UnixMillis) -> Result<(), Error> {
        Ok(self.transact(|tx| tx.set_timer(name, at))?)
    }

    /// Cancel the named timer `name`; returns whether it was set.
    pub fn cancel_timer(&mut self, name: &str) -> Result<bool, Error> {
        Ok(self.transact(|tx| tx.cancel_timer(name))?)
    }
}
