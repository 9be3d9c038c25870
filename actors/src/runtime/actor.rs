//! The ractor actor that hosts one object of class `C`.
//!
//! `pre_start` is activation: open and migrate the object's file, run [`Object::activate`],
//! report the armed alarm to the dispatcher. Nothing else is admitted until it returns. Each
//! message is then handled to completion, one at a time. `post_stop` closes the file.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clawdo_storage::{ObjectKey, ObjectStore};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tracing::Instrument as _;

use crate::runtime::blocking::{may_sync, maybe_blocking};
use crate::runtime::error::Error;
use crate::runtime::host::Host;
use crate::runtime::id::ObjectId;
use crate::runtime::object::{AlarmInfo, Ctx, Object};

/// Messages an object actor accepts.
pub(crate) enum ObjectMsg<C: Object> {
    /// A request from a stub; the response goes back on the channel.
    Call(C::Request, oneshot::Sender<C::Response>),
    /// The dispatcher found the alarm due.
    Alarm(oneshot::Sender<Result<(), Error>>),
    /// Close the file to stay within the open-file budget (the actor stays resident).
    CloseFile,
}

/// Arguments of an activation.
pub(crate) struct ActivateArgs {
    pub(crate) host: Host,
    pub(crate) key: ObjectKey,
    pub(crate) id: ObjectId,
    /// Shared with the host's resident entry so the janitor can see which files are open.
    pub(crate) file_open: Arc<AtomicBool>,
}

/// The actor's mutable state: the object and its context.
pub(crate) struct ObjectState<C> {
    object: C,
    ctx: Ctx,
    file_open: Arc<AtomicBool>,
}

/// The actor behaviour (stateless; all data lives in [`ObjectState`]).
pub(crate) struct ObjectActor<C>(PhantomData<fn() -> C>);

impl<C> ObjectActor<C> {
    pub(crate) fn new() -> Self {
        ObjectActor(PhantomData)
    }
}

impl<C: Object> Actor for ObjectActor<C> {
    type Msg = ObjectMsg<C>;
    type State = ObjectState<C>;
    type Arguments = ActivateArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ActivateArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ActivateArgs {
            host,
            key,
            id,
            file_open,
        } = args;
        let inner = host.inner();
        let (store, opened) =
            ObjectStore::open(&inner.dir, Arc::clone(&inner.indexes), key, C::migrations())?;
        if opened.created {
            tracing::debug!(class = C::CLASS, %id, "created");
        }
        file_open.store(true, Ordering::Relaxed);
        host.file_opened();
        let mut ctx = Ctx {
            id,
            store,
            clock: Arc::clone(&inner.clock),
            host: host.clone(),
        };
        let activated = match host.deps::<C>() {
            Ok(deps) => C::activate(&mut ctx, deps).await,
            Err(error) => Err(error.into()),
        };
        match activated {
            Ok(object) => {
                let mut state = ObjectState {
                    object,
                    ctx,
                    file_open,
                };
                after_work(&mut state);
                Ok(state)
            }
            Err(error) => {
                close_file(&mut ctx, &file_open);
                Err(error)
            }
        }
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ObjectMsg::Call(request, reply) => {
                let span = tracing::trace_span!("call", class = C::CLASS, id = %state.ctx.id);
                let response = state
                    .object
                    .handle(&mut state.ctx, request)
                    .instrument(span)
                    .await;
                after_work(state);
                // The caller may have timed out and gone; that is not our failure.
                let _ = reply.send(response);
            }
            ObjectMsg::Alarm(reply) => {
                let span = tracing::debug_span!("alarm", class = C::CLASS, id = %state.ctx.id);
                let outcome = run_alarm(state).instrument(span).await;
                after_work(state);
                let _ = reply.send(outcome);
            }
            ObjectMsg::CloseFile => close_file(&mut state.ctx, &state.file_open),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        close_file(&mut state.ctx, &state.file_open);
        Ok(())
    }
}

/// Bookkeeping after every unit of work: note a reopened file, hand an alarm move to the
/// dispatcher, checkpoint when the WAL has grown.
fn after_work<C>(state: &mut ObjectState<C>) {
    let ctx = &mut state.ctx;
    if ctx.store.is_open() && !state.file_open.swap(true, Ordering::Relaxed) {
        ctx.host.file_opened();
    }
    if let Some(change) = ctx.store.take_alarm_change() {
        ctx.host.arm(ctx.store.key().clone(), change.armed);
    }
    if ctx.store.checkpoint_due() {
        let store = &mut ctx.store;
        if let Err(error) = may_sync(|| store.checkpoint()) {
            tracing::warn!(key = ?store.key(), error = %error_chain(&error), "checkpoint failed");
        }
    }
}

fn close_file(ctx: &mut Ctx, file_open: &AtomicBool) {
    if !ctx.store.is_open() {
        return;
    }
    let store = &mut ctx.store;
    if let Err(error) = may_sync(|| store.close_file()) {
        tracing::warn!(key = ?store.key(), error = %error_chain(&error), "closing object file failed");
    }
    if file_open.swap(false, Ordering::Relaxed) {
        ctx.host.file_closed();
    }
}

/// One alarm fire: find the due timers, run the handler, record success or schedule a retry.
async fn run_alarm<C: Object>(state: &mut ObjectState<C>) -> Result<(), Error> {
    let ctx = &mut state.ctx;
    let now = ctx.clock.now();
    let (due, retry_count) = ctx.store.due_timers(now)?;
    if due.is_empty() {
        // The index (or the dispatcher's memory) was early. Re-sync both to the truth and
        // run no handler.
        ctx.store.resync_index()?;
        ctx.host.arm(ctx.store.key().clone(), ctx.store.armed());
        return Ok(());
    }
    let scheduled_at = due.first().map_or(now, |t| t.at);
    let host = ctx.host.clone();
    let counters = &host.inner().counters;
    counters.alarms_fired.fetch_add(1, Ordering::Relaxed);
    counters.record_lateness(now - scheduled_at);
    let info = AlarmInfo {
        alarm: due.iter().any(|t| t.name.is_empty()),
        timers: due
            .iter()
            .filter(|t| !t.name.is_empty())
            .map(|t| t.name.clone())
            .collect(),
        scheduled_at,
        retry_count,
        is_retry: retry_count > 0,
    };
    let result = state.object.alarm(ctx, info).await;
    let config = &host.inner().config;
    let durability = ctx.store.durability();
    match result {
        Ok(()) => {
            let store = &mut ctx.store;
            maybe_blocking(durability, || store.alarm_succeeded(&due))?;
        }
        Err(error) => {
            let retry = retry_count.saturating_add(1);
            let retry_at = (retry <= config.alarm_max_retries).then(|| {
                let delay = config.retry_delay(retry);
                now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2)
            });
            let store = &mut ctx.store;
            maybe_blocking(durability, || {
                store.alarm_failed(&due, retry_count, retry_at)
            })?;
            let key = ctx.store.key();
            match retry_at {
                Some(at) => {
                    counters.alarm_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(class = key.class, id = %key.id, retry, retry_at = at,
                        error = %error, "alarm handler failed; retrying");
                }
                None => {
                    counters.alarms_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(class = key.class, id = %key.id, retries = retry_count,
                        error = %error, "alarm handler failed after the last retry; dropped");
                }
            }
        }
    }
    // Always report the armed time: the dispatcher popped this alarm when it fired.
    ctx.store.take_alarm_change();
    ctx.host.arm(ctx.store.key().clone(), ctx.store.armed());
    Ok(())
}

/// `error` and its sources, joined by ": ".
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
