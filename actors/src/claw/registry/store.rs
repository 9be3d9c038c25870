//! The registry's SQL: its tables (`routes`, `provision_reservations`), one function per
//! statement. Every transition of a reservation is one conditional
//! `UPDATE … WHERE status IN (…)`; a result of 0 rows means another path got there first.

use clawdo_storage::Migration;
use clawdo_storage::rusqlite::{self, Connection, OptionalExtension as _, Row, params};

use super::api::{RegistryError, Reservation, ReservationStatus};
use crate::UnixMillis;

/// The registry's schema steps.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "routes",
        sql: include_str!("schema.sql"),
    },
    Migration {
        name: "provision reservations",
        sql: include_str!("reservations.sql"),
    },
];

/// The unresolved statuses, as an SQL list (the partial unique index's predicate).
const UNRESOLVED: &str = "('admitted', 'provider_started', 'failed_requires_reconciliation')";

const RESERVATION_COLUMNS: &str = "id, owner_key, instance_id, idempotency_key, status, error, \
                                   created_at, updated_at";

fn reservation_from_row(row: &Row<'_>) -> rusqlite::Result<Reservation> {
    let status: String = row.get(4)?;
    Ok(Reservation {
        id: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
        owner: row.get(1)?,
        instance_id: row.get(2)?,
        idempotency_key: row.get(3)?,
        status: ReservationStatus::parse(&status)
            .unwrap_or(ReservationStatus::FailedRequiresReconciliation),
        error: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// The reservation of idempotency key `key`, with the request fingerprint it was made for.
pub(super) fn by_key(
    conn: &Connection,
    key: &str,
) -> rusqlite::Result<Option<(Reservation, String)>> {
    conn.prepare_cached(&format!(
        "SELECT {RESERVATION_COLUMNS}, request FROM provision_reservations
         WHERE idempotency_key = ?1"
    ))?
    .query_row([key], |row| Ok((reservation_from_row(row)?, row.get(8)?)))
    .optional()
}

/// Reservation `id`.
pub(super) fn load(conn: &Connection, id: u64) -> Result<Reservation, RegistryError> {
    conn.prepare_cached(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM provision_reservations WHERE id = ?1"
    ))?
    .query_row([sql_id(id)], reservation_from_row)
    .optional()?
    .ok_or(RegistryError::UnknownReservation(id))
}

/// The owner's unresolved reservation, if any (at most one: the partial unique index).
pub(super) fn unresolved(conn: &Connection) -> rusqlite::Result<Option<Reservation>> {
    conn.prepare_cached(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM provision_reservations WHERE status IN {UNRESOLVED}"
    ))?
    .query_row([], reservation_from_row)
    .optional()
}

/// Up to `limit` unresolved reservations, oldest change first.
pub(super) fn unresolved_batch(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<Reservation>> {
    conn.prepare_cached(&format!(
        "SELECT {RESERVATION_COLUMNS} FROM provision_reservations
         WHERE status IN {UNRESOLVED} ORDER BY updated_at, id LIMIT ?1"
    ))?
    .query_map([i64::try_from(limit).unwrap_or(16)], reservation_from_row)?
    .collect()
}

/// Whether any reservation is unresolved.
pub(super) fn any_unresolved(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM provision_reservations WHERE status IN {UNRESOLVED})"
    ))?
    .query_row([], |row| row.get(0))
}

/// How many routes are active.
pub(super) fn active_route_count(conn: &Connection) -> rusqlite::Result<u64> {
    let count: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM routes WHERE state = 'active'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// The active routes' instance ids, oldest first.
pub(super) fn active_routes(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT instance_id FROM routes WHERE state = 'active'
         ORDER BY created_at, reservation_id, instance_id",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Whether `instance_id` has a route (pending or active).
pub(super) fn routed(conn: &Connection, instance_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM routes WHERE instance_id = ?1)")?
        .query_row([instance_id], |r| r.get(0))
}

/// Insert an `admitted` reservation and its pending route. `None`: the partial unique index
/// refused it (the owner has an unresolved reservation).
pub(super) fn insert_admitted(
    conn: &Connection,
    owner: &str,
    instance_id: &str,
    idempotency_key: &str,
    fingerprint: &str,
    now: UnixMillis,
) -> rusqlite::Result<Option<u64>> {
    let insert = conn
        .prepare_cached(
            "INSERT INTO provision_reservations
                 (owner_key, instance_id, idempotency_key, request, status, created_at,
                  updated_at)
             VALUES (?1, ?2, ?3, ?4, 'admitted', ?5, ?5)",
        )?
        .execute(params![
            owner,
            instance_id,
            idempotency_key,
            fingerprint,
            now
        ]);
    match insert {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let id = conn.last_insert_rowid();
    conn.prepare_cached(
        "INSERT INTO routes (instance_id, created_at, state, reservation_id)
         VALUES (?1, ?2, 'pending', ?3)",
    )?
    .execute(params![instance_id, now, id])?;
    Ok(Some(u64::try_from(id).unwrap_or(0)))
}

/// `admitted → provider_started`; whether this call made the move.
pub(super) fn mark_started(conn: &Connection, id: u64, now: UnixMillis) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE provision_reservations SET status = 'provider_started', updated_at = ?2
             WHERE id = ?1 AND status = 'admitted'",
        )?
        .execute(params![sql_id(id), now])?
        == 1)
}

/// `unresolved → completed` and the route active; whether this call made the move.
pub(super) fn complete(
    conn: &Connection,
    id: u64,
    instance_id: &str,
    now: UnixMillis,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(&format!(
            "UPDATE provision_reservations SET status = 'completed', error = NULL, updated_at = ?3
             WHERE id = ?1 AND instance_id = ?2 AND status IN {UNRESOLVED}"
        ))?
        .execute(params![sql_id(id), instance_id, now])?;
    if changed == 1 {
        conn.prepare_cached(
            "INSERT INTO routes (instance_id, created_at, state, reservation_id)
             VALUES (?1, ?2, 'active', ?3)
             ON CONFLICT (instance_id) DO UPDATE SET state = 'active'",
        )?
        .execute(params![instance_id, now, sql_id(id)])?;
    }
    Ok(changed == 1)
}

/// A failed provision: `admitted | provider_started → failed_requires_reconciliation` when
/// infrastructure may exist (fail closed), else `unresolved → released` with its pending route
/// removed; `error` says why.
pub(super) fn fail(
    conn: &Connection,
    id: u64,
    instance_id: &str,
    infra_may_exist: bool,
    error: &str,
    now: UnixMillis,
) -> rusqlite::Result<()> {
    let (status, from) = if infra_may_exist {
        (
            "failed_requires_reconciliation",
            "('admitted', 'provider_started')",
        )
    } else {
        ("released", UNRESOLVED)
    };
    let changed = conn
        .prepare_cached(&format!(
            "UPDATE provision_reservations SET status = '{status}', error = ?3, updated_at = ?4
             WHERE id = ?1 AND instance_id = ?2 AND status IN {from}"
        ))?
        .execute(params![sql_id(id), instance_id, error, now])?;
    if changed == 1 && !infra_may_exist {
        conn.prepare_cached("DELETE FROM routes WHERE instance_id = ?1 AND state = 'pending'")?
            .execute([instance_id])?;
    }
    Ok(())
}

/// Destroy fencing: the route goes, an unresolved reservation of the instance is released.
pub(super) fn instance_destroyed(
    conn: &Connection,
    instance_id: &str,
    now: UnixMillis,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM routes WHERE instance_id = ?1")?
        .execute([instance_id])?;
    conn.prepare_cached(&format!(
        "UPDATE provision_reservations
         SET status = 'released',
             error = COALESCE(error || '; ', '') || 'instance destroyed',
             updated_at = ?2
         WHERE instance_id = ?1 AND status IN {UNRESOLVED}"
    ))?
    .execute(params![instance_id, now])?;
    Ok(())
}

/// Count a cleanup attempt on a `failed_requires_reconciliation` reservation (so the next
/// one waits a full interval).
pub(super) fn touch_failed(conn: &Connection, id: u64, now: UnixMillis) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE provision_reservations SET updated_at = ?2
         WHERE id = ?1 AND status = 'failed_requires_reconciliation'",
    )?
    .execute(params![sql_id(id), now])?;
    Ok(())
}

/// Up to `limit` routed instance ids after `after`, ascending.
pub(super) fn list_routes(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT instance_id FROM routes WHERE (?1 IS NULL OR instance_id > ?1)
         ORDER BY instance_id LIMIT ?2",
    )?
    .query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| r.get(0),
    )?
    .collect()
}
