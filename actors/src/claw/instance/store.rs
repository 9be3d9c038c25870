//! The instance's storage: its KV values (record, provision ticket, fleet link), its event
//! table, and [`commit`], which writes one [`Transition`] in one transaction.

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::params;

use super::api::{InstanceError, InstanceEvent, Status};
use super::lifecycle::Transition;
use super::state::{FleetLink, ProvisionTicket, Record};
use crate::object::Ctx;

/// The instance's schema steps.
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    name: "events",
    sql: include_str!("schema.sql"),
}];

const RECORD_KEY: &str = "record";
const TICKET_KEY: &str = "provision";
const LINK_KEY: &str = "fleet";

/// Most events one page returns.
const MAX_EVENTS: usize = 1_000;

/// What an instance keeps: its record (none before its provision), the provision that created
/// it, and its fleet link.
pub(super) type Loaded = (Option<Record>, Option<ProvisionTicket>, FleetLink);

/// Read an activating instance's state.
pub(super) fn load(ctx: &mut Ctx) -> Result<Loaded, InstanceError> {
    let store = ctx.store();
    let record = store.kv_get::<Record>(RECORD_KEY)?;
    let ticket = store.kv_get::<ProvisionTicket>(TICKET_KEY)?;
    let link = store.kv_get::<FleetLink>(LINK_KEY)?.unwrap_or_default();
    Ok((record, ticket, link))
}

/// Write `t` in one transaction: the record (the caller stamped `updated_at`), the ticket, the link, the
/// events (logged with `status`, the record's status after the transition), and the timers.
/// Returns the events as written (with their sequence numbers).
pub(super) fn commit(
    ctx: &mut Ctx,
    t: &Transition,
    status: Status,
) -> Result<Vec<InstanceEvent>, InstanceError> {
    let now = ctx.now();
    let id = ctx.id().to_string();
    let written = ctx.transact(|tx| {
        if let Some(record) = &t.record {
            tx.kv_put(RECORD_KEY, record)?;
        }
        if let Some(ticket) = &t.ticket {
            tx.kv_put(TICKET_KEY, ticket)?;
        }
        if let Some(link) = &t.link {
            tx.kv_put(LINK_KEY, link)?;
        }
        let mut written = Vec::with_capacity(t.events.len());
        for (kind, detail) in &t.events {
            tx.execute(
                "INSERT INTO events (at, kind, status, detail) VALUES (?1, ?2, ?3, ?4)",
                params![now, kind.as_str(), status.as_str(), detail],
            )?;
            written.push(InstanceEvent {
                instance_id: id.clone(),
                seq: tx.last_insert_rowid(),
                at: now,
                kind: kind.as_str().to_string(),
                status,
                detail: detail.clone(),
            });
        }
        for (timer, at) in &t.timers {
            match at {
                Some(at) => tx.set_timer(timer.as_str(), *at)?,
                None => {
                    tx.cancel_timer(timer.as_str())?;
                }
            }
        }
        Ok::<_, clawdo_storage::Error>(written)
    })?;
    Ok(written)
}

/// Up to `limit` events after `after` (exclusive), oldest first.
pub(super) fn events_page(
    ctx: &mut Ctx,
    after: i64,
    limit: usize,
) -> Result<Vec<InstanceEvent>, InstanceError> {
    let id = ctx.id().to_string();
    let conn = ctx.store().conn()?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, kind, status, detail FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit.min(MAX_EVENTS)).unwrap_or(1_000);
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok(InstanceEvent {
            instance_id: id.clone(),
            seq: r.get(0)?,
            at: r.get(1)?,
            kind: r.get(2)?,
            status: Status::parse(&r.get::<_, String>(3)?).unwrap_or(Status::Stopped),
            detail: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
