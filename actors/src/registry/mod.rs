//! The `registry` object class: one object per owner key (`user:<id>` / `org:<id>`) holding the
//! owner's instance routes, so an owner's instances are listed without scanning the fleet.
//!
//! Provision admission (reservations, idempotency, completion repair, destroy fencing; SPEC §5)
//! is added to this class by the registry-admission issue.

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::params;

use crate::object::{Ctx, HandlerError, Object};

const MIGRATIONS: &[Migration] = &[Migration {
    name: "routes",
    sql: include_str!("schema.sql"),
}];

/// Requests a registry understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRequest {
    /// Record that the owner has instance `instance_id` (idempotent).
    AddRoute(String),
    /// Forget instance `instance_id` (idempotent).
    RemoveRoute(String),
    /// Up to `limit` instance ids after `after`, ascending.
    ListRoutes {
        /// Cursor (exclusive).
        after: Option<String>,
        /// Page size.
        limit: usize,
    },
}

/// Replies of a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryReply {
    /// Done.
    Ok,
    /// A page of instance ids.
    Routes(Vec<String>),
    /// Storage failed; nothing changed.
    Failed(String),
}

/// The registry object.
#[derive(Debug)]
pub struct Registry;

impl Registry {
    fn serve(ctx: &mut Ctx, request: RegistryRequest) -> Result<RegistryReply, HandlerError> {
        let now = ctx.now();
        Ok(match request {
            RegistryRequest::AddRoute(id) => {
                ctx.transact(|tx| {
                    tx.execute(
                        "INSERT INTO routes (instance_id, created_at) VALUES (?1, ?2)
                         ON CONFLICT DO NOTHING",
                        params![id, now],
                    )
                    .map_err(clawdo_storage::Error::from)
                })?;
                RegistryReply::Ok
            }
            RegistryRequest::RemoveRoute(id) => {
                ctx.transact(|tx| {
                    tx.execute("DELETE FROM routes WHERE instance_id = ?1", [id])
                        .map_err(clawdo_storage::Error::from)
                })?;
                RegistryReply::Ok
            }
            RegistryRequest::ListRoutes { after, limit } => {
                let conn = ctx.store().conn()?;
                let mut stmt = conn.prepare_cached(
                    "SELECT instance_id FROM routes WHERE (?1 IS NULL OR instance_id > ?1)
                     ORDER BY instance_id LIMIT ?2",
                )?;
                let ids = stmt
                    .query_map(
                        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )?
                    .collect::<Result<Vec<String>, _>>()?;
                RegistryReply::Routes(ids)
            }
        })
    }
}

impl Object for Registry {
    const CLASS: &'static str = "registry";
    type Request = RegistryRequest;
    type Response = RegistryReply;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn activate(_ctx: &mut Ctx) -> Result<Self, HandlerError> {
        Ok(Registry)
    }

    async fn handle(&mut self, ctx: &mut Ctx, request: RegistryRequest) -> RegistryReply {
        Registry::serve(ctx, request).unwrap_or_else(|e| RegistryReply::Failed(e.to_string()))
    }
}
