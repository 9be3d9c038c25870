//! `counter`: a value, a log of changes, and an alarm that records when it fired.
//!
//! Used by tests (activation, alarms, crash safety), the benches and the embedding example.
//! Its alarm handler can be told to fail a number of times to exercise retries.

use std::sync::Arc;

use clawdo_storage::rusqlite::params;
use clawdo_storage::{Migration, UnixMillis};

use crate::object::{AlarmInfo, Ctx, HandlerError, Object};

const MIGRATIONS: &[Migration] = &[Migration {
    name: "log and fires",
    sql: include_str!("counter.sql"),
}];

/// Requests a counter understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterRequest {
    /// Read the value (no write).
    Get,
    /// Sum of the logged deltas: always equals the value (they commit together).
    LogTotal,
    /// Add `delta` and log it, in one transaction.
    Add(i64),
    /// Set the alarm.
    SetAlarm(UnixMillis),
    /// Set a named timer.
    SetTimer(String, UnixMillis),
    /// Read the alarm.
    GetAlarm,
    /// Make the next `n` alarm handler runs fail.
    FailNextAlarms(u32),
    /// Alarm fires seen so far: (scheduled_at, fired_at, retry_count, timers).
    Fires,
    /// Panic inside the handler (tests the runtime's recovery from a crashed actor).
    Panic,
}

/// Replies of a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterReply {
    /// The value after the request.
    Value(i64),
    /// The alarm.
    Alarm(Option<UnixMillis>),
    /// Fires seen so far.
    Fires(Vec<Fire>),
    /// Done.
    Ok,
    /// The request failed; the message says why.
    Failed(String),
}

/// One recorded alarm fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// When it was due.
    pub scheduled_at: UnixMillis,
    /// When the handler ran (clock time).
    pub fired_at: UnixMillis,
    /// Retry count passed to the handler.
    pub retry_count: u32,
    /// Due timer names, comma-separated (`""` for the alarm alone).
    pub timers: String,
}

/// The counter object.
#[derive(Debug)]
pub struct Counter {
    value: i64,
    /// Alarm handler runs still to fail (in memory only: a restart forgets it).
    fail_alarms: u32,
}

impl Counter {
    fn apply(
        &mut self,
        ctx: &mut Ctx,
        request: CounterRequest,
    ) -> Result<CounterReply, HandlerError> {
        Ok(match request {
            CounterRequest::Get => CounterReply::Value(self.value),
            CounterRequest::LogTotal => {
                let total: i64 = ctx.store().conn()?.query_row(
                    "SELECT COALESCE(SUM(delta), 0) FROM log",
                    [],
                    |r| r.get(0),
                )?;
                CounterReply::Value(total)
            }
            CounterRequest::Add(delta) => {
                let value = self.value.checked_add(delta).ok_or("counter overflow")?;
                let now = ctx.now();
                ctx.transact(|tx| {
                    tx.execute(
                        "INSERT INTO log (delta, at) VALUES (?1, ?2)",
                        params![delta, now],
                    )?;
                    tx.kv_put("value", &value)?;
                    Ok::<_, clawdo_storage::Error>(())
                })?;
                self.value = value;
                CounterReply::Value(value)
            }
            CounterRequest::SetAlarm(at) => {
                ctx.set_alarm(at)?;
                CounterReply::Ok
            }
            CounterRequest::SetTimer(name, at) => {
                ctx.set_timer(&name, at)?;
                CounterReply::Ok
            }
            CounterRequest::GetAlarm => CounterReply::Alarm(ctx.get_alarm()?),
            CounterRequest::FailNextAlarms(n) => {
                self.fail_alarms = n;
                CounterReply::Ok
            }
            CounterRequest::Fires => {
                let conn = ctx.store().conn()?;
                let mut stmt = conn.prepare(
                    "SELECT scheduled_at, fired_at, retry_count, timers FROM fires ORDER BY seq",
                )?;
                let fires = stmt
                    .query_map([], |r| {
                        Ok(Fire {
                            scheduled_at: r.get(0)?,
                            fired_at: r.get(1)?,
                            retry_count: r.get(2)?,
                            timers: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                CounterReply::Fires(fires)
            }
            CounterRequest::Panic => panic!("counter asked to panic"),
        })
    }
}

impl Object for Counter {
    const CLASS: &'static str = "counter";
    type Request = CounterRequest;
    type Response = CounterReply;
    type Deps = ();

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(ctx: &mut Ctx, _deps: Arc<()>) -> Result<Self, HandlerError> {
        let value = ctx.store().kv_get::<i64>("value")?.unwrap_or(0);
        Ok(Counter {
            value,
            fail_alarms: 0,
        })
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: CounterRequest) -> CounterReply {
        self.apply(ctx, request)
            .unwrap_or_else(|error| CounterReply::Failed(error.to_string()))
    }

    async fn alarm(&mut self, ctx: &mut Ctx, alarm: AlarmInfo) -> Result<(), HandlerError> {
        let now = ctx.now();
        let mut names = alarm.timers.clone();
        if alarm.alarm {
            names.insert(0, String::new());
        }
        ctx.transact(|tx| {
            tx.execute(
                "INSERT INTO fires (scheduled_at, fired_at, retry_count, timers)
                 VALUES (?1, ?2, ?3, ?4)",
                params![alarm.scheduled_at, now, alarm.retry_count, names.join(",")],
            )
            .map_err(clawdo_storage::Error::from)
        })?;
        if self.fail_alarms > 0 {
            self.fail_alarms -= 1;
            return Err("counter asked to fail its alarm".into());
        }
        Ok(())
    }
}
