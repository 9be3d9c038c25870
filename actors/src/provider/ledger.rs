//! The ledger both built-in providers keep in their own SQLite file: which volumes, snapshots
//! and machines exist.
//!
//! [`sim`](super::sim) and [`process`](super::process) each write their own schema text (and
//! migrations) with the same four tables: `counters` (last number issued per id kind),
//! `volumes`, `snapshots` and `machines`; each may add columns of its own (the sim's volume
//! `source`, the process provider's `pid`, `port` and `start_ticks`). This module owns what
//! they share: opening the file in shape ([`prepare`]), one connection behind a lock with
//! immediate transactions ([`Ledger`]), id allocation, and every query on the shared columns
//! (existence checks, inserting and loading machines with their codec-encoded metadata,
//! machine state and image updates, listings by volume, deleting a volume that no live
//! machine uses). A provider keeps only the statements that touch its own columns.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use clawdo_storage::rusqlite::{
    self, Connection, OptionalExtension as _, Params, Transaction, params,
};
use clawdo_storage::{Migration, codec};

use super::{
    MachineId, MachineInfo, MachineSpec, MachineState, ProviderError, SnapshotId, VolumeId,
    VolumeSource, lock,
};

/// Domain outcome inside, storage failure outside.
pub(super) type Db<T> = rusqlite::Result<Result<T, ProviderError>>;

/// The shared `machines` columns, in the order [`machine_info`] reads them (0 to 3); a
/// provider's own columns follow from index [`MACHINE_COLUMN_COUNT`].
const MACHINE_COLUMNS: &str = "state, image, volume, metadata";

/// How many of a `machines` row's leading columns [`machine_info`] reads.
pub(super) const MACHINE_COLUMN_COUNT: usize = 4;

/// A provider's open ledger file: one connection, used one transaction at a time.
#[derive(Debug)]
pub(super) struct Ledger {
    /// The connection; statements are short, so a blocking lock is fine.
    conn: Mutex<Connection>,
    /// The provider's short name, for storage failures (`sim`, `process`).
    provider: &'static str,
}

impl Ledger {
    /// Wrap a connection that [`prepare`] has put in shape; `provider` names the provider in
    /// storage failures.
    pub(super) fn new(conn: Connection, provider: &'static str) -> Ledger {
        Ledger {
            conn: Mutex::new(conn),
            provider,
        }
    }

    /// Run `work` in one immediate transaction, committed only if it returns `Ok(Ok(_))`. A
    /// storage failure becomes [`ProviderError::Failed`].
    pub(super) fn transact<T>(
        &self,
        work: impl FnOnce(&Transaction<'_>) -> Db<T>,
    ) -> Result<T, ProviderError> {
        let mut conn = lock(&self.conn);
        let run = || -> Db<T> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let outcome = work(&tx)?;
            if outcome.is_ok() {
                tx.commit()?;
            }
            Ok(outcome)
        };
        run().unwrap_or_else(|error| {
            Err(ProviderError::Failed(format!(
                "{} provider database: {error}",
                self.provider
            )))
        })
    }
}

/// Put a provider's state file in shape: WAL, `synchronous=NORMAL`, a busy timeout, and the
/// schema migrated with the storage crate's runner.
pub(super) fn prepare(
    conn: &mut Connection,
    migrations: &[Migration],
) -> Result<(), clawdo_storage::Error> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let path = conn
        .path()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    clawdo_storage::migrate::run_migrations(conn, &path, migrations)?;
    Ok(())
}

/// The error for a missing machine, volume or snapshot.
pub(super) fn not_found(kind: &'static str, id: &str) -> ProviderError {
    ProviderError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

/// Issue the next id of `kind` (`<prefix>-<n>`) from the `counters` table: its sequence
/// number and its text.
fn next_id(tx: &Transaction<'_>, kind: &str, prefix: &str) -> rusqlite::Result<(i64, String)> {
    let n: i64 = tx.query_row(
        "INSERT INTO counters (kind, last) VALUES (?1, 1)
         ON CONFLICT (kind) DO UPDATE SET last = last + 1 RETURNING last",
        [kind],
        |row| row.get(0),
    )?;
    Ok((n, format!("{prefix}-{n}")))
}

/// The last number issued for ids of `kind` (0 before the first).
pub(super) fn last_issued(conn: &Connection, kind: &str) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row("SELECT last FROM counters WHERE kind = ?1", [kind], |row| {
            row.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// Whether a row with key `id` exists in `table` (a fixed table name, never input).
fn row_exists(tx: &Transaction<'_>, table: &str, id: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        &format!("SELECT 1 FROM {table} WHERE id = ?1"),
        [id],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// Whether volume `id` exists (a deleted volume's row is gone).
fn volume_exists(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    row_exists(tx, "volumes", id)
}

/// Whether snapshot `id` exists.
fn snapshot_exists(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    row_exists(tx, "snapshots", id)
}

/// `Ok(())` if volume `id` exists, else its not-found error.
pub(super) fn require_volume(tx: &Transaction<'_>, id: &str) -> Db<()> {
    Ok(if volume_exists(tx, id)? {
        Ok(())
    } else {
        Err(not_found("volume", id))
    })
}

/// Issue the id (sequence number and text) of a new volume copying `source`, once the volume
/// or snapshot it copies is found to exist. The caller records the volume.
pub(super) fn reserve_volume(tx: &Transaction<'_>, source: &VolumeSource) -> Db<(i64, String)> {
    let found = match source {
        VolumeSource::Empty => Ok(()),
        VolumeSource::Volume(from) => require_volume(tx, &from.0)?,
        VolumeSource::Snapshot(from) if !snapshot_exists(tx, &from.0)? => {
            Err(not_found("snapshot", &from.0))
        }
        VolumeSource::Snapshot(_) => Ok(()),
    };
    match found {
        Ok(()) => next_id(tx, "volume", "v").map(Ok),
        Err(e) => Ok(Err(e)),
    }
}

/// Issue the id (sequence number and text) of a new snapshot of existing volume `volume`; the
/// caller records it with [`insert_snapshot`].
pub(super) fn reserve_snapshot(tx: &Transaction<'_>, volume: &str) -> Db<(i64, String)> {
    match require_volume(tx, volume)? {
        Ok(()) => next_id(tx, "snapshot", "s").map(Ok),
        Err(e) => Ok(Err(e)),
    }
}

/// Record snapshot `id` (sequence number `seq`) of `volume`.
pub(super) fn insert_snapshot(
    tx: &Transaction<'_>,
    seq: i64,
    id: &str,
    volume: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO snapshots (id, seq, volume) VALUES (?1, ?2, ?3)",
        params![id, seq, volume],
    )?;
    Ok(())
}

/// The ids that `sql` (one `id` column) selects with `params`, in its order.
fn ids<T>(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl Params,
    wrap: fn(String) -> T,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = tx.prepare(sql)?;
    stmt.query_map(params, |row| row.get(0).map(wrap))?
        .collect()
}

/// The ids that `sql` selects for an existing `volume` (bound to `?1`).
fn ids_on_volume<T>(
    tx: &Transaction<'_>,
    volume: &str,
    sql: &str,
    wrap: fn(String) -> T,
) -> Db<Vec<T>> {
    if let Err(e) = require_volume(tx, volume)? {
        return Ok(Err(e));
    }
    ids(tx, sql, [volume], wrap).map(Ok)
}

/// Snapshots of an existing volume, oldest first.
pub(super) fn snapshots_of(tx: &Transaction<'_>, volume: &str) -> Db<Vec<SnapshotId>> {
    let sql = "SELECT id FROM snapshots WHERE volume = ?1 ORDER BY seq";
    ids_on_volume(tx, volume, sql, SnapshotId)
}

/// Machines not destroyed on an existing volume, oldest first.
pub(super) fn machines_on(tx: &Transaction<'_>, volume: &str) -> Db<Vec<MachineId>> {
    let sql = "SELECT id FROM machines WHERE volume = ?1 AND state != 'destroyed' ORDER BY seq";
    ids_on_volume(tx, volume, sql, MachineId)
}

/// Every machine not destroyed, oldest first.
pub(super) fn live_machines(tx: &Transaction<'_>) -> rusqlite::Result<Vec<MachineInfo>> {
    let sql = "SELECT id FROM machines WHERE state != 'destroyed' ORDER BY seq";
    let ids = ids(tx, sql, [], MachineId)?;
    let mut machines = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(info) = load_machine(tx, &id.0)? {
            machines.push(info);
        }
    }
    Ok(machines)
}

/// Delete a volume's row unless a machine that is not destroyed still uses it.
pub(super) fn delete_volume_row(tx: &Transaction<'_>, volume: &str) -> Db<()> {
    if let Err(e) = require_volume(tx, volume)? {
        return Ok(Err(e));
    }
    let user: Option<String> = tx
        .query_row(
            "SELECT id FROM machines WHERE volume = ?1 AND state != 'destroyed'
             ORDER BY seq LIMIT 1",
            [volume],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(machine) = user {
        return Ok(Err(ProviderError::Refused(format!(
            "volume {volume} is attached to machine {machine}"
        ))));
    }
    tx.execute("DELETE FROM volumes WHERE id = ?1", [volume])?;
    Ok(Ok(()))
}

/// Record a new machine, `Created`, on an existing volume (a provider's own columns stay
/// `NULL`).
pub(super) fn insert_machine(tx: &Transaction<'_>, spec: &MachineSpec) -> Db<MachineId> {
    if let Err(e) = require_volume(tx, &spec.volume.0)? {
        return Ok(Err(e));
    }
    let metadata = codec::encode(&spec.metadata)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    let (seq, id) = next_id(tx, "machine", "m")?;
    tx.execute(
        "INSERT INTO machines (id, seq, state, image, volume, metadata)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            seq,
            MachineState::Created.as_str(),
            spec.image,
            spec.volume.0,
            metadata
        ],
    )?;
    Ok(Ok(MachineId(id)))
}

/// The state a `MachineState::as_str` column holds.
fn parse_state(text: &str) -> rusqlite::Result<MachineState> {
    match text {
        "created" => Ok(MachineState::Created),
        "running" => Ok(MachineState::Running),
        "stopped" => Ok(MachineState::Stopped),
        "destroyed" => Ok(MachineState::Destroyed),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            format!("machine state {other:?}"),
            rusqlite::types::Type::Text,
        )),
    }
}

/// Machine `id` from the shared columns of its row, selected as [`MACHINE_COLUMNS`] first.
fn machine_info(id: &str, row: &rusqlite::Row<'_>) -> rusqlite::Result<MachineInfo> {
    let state: String = row.get(0)?;
    let image: String = row.get(1)?;
    let volume: String = row.get(2)?;
    let metadata: Vec<u8> = row.get(3)?;
    let metadata: BTreeMap<String, String> = codec::decode(&metadata).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Blob, e.into())
    })?;
    Ok(MachineInfo {
        id: MachineId(id.to_owned()),
        state: parse_state(&state)?,
        image,
        volume: VolumeId(volume),
        metadata,
    })
}

/// Load machine `id` with `extra` columns of the provider's own (`""` or `", a, b"`), which
/// `read` gets from index [`MACHINE_COLUMN_COUNT`] on, after the shared ones were read into
/// the [`MachineInfo`] it is given. `None` if no such machine was ever created.
pub(super) fn load_machine_with<T>(
    tx: &Transaction<'_>,
    id: &str,
    extra: &str,
    read: impl FnOnce(MachineInfo, &rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    tx.query_row(
        &format!("SELECT {MACHINE_COLUMNS}{extra} FROM machines WHERE id = ?1"),
        [id],
        |row| read(machine_info(id, row)?, row),
    )
    .optional()
}

/// Load machine `id` (destroyed ones too); `None` if it was never created.
pub(super) fn load_machine(
    tx: &Transaction<'_>,
    id: &str,
) -> rusqlite::Result<Option<MachineInfo>> {
    load_machine_with(tx, id, "", |info, _| Ok(info))
}

/// Load a machine that must exist and not be destroyed.
pub(super) fn live_machine(tx: &Transaction<'_>, id: &str) -> Db<MachineInfo> {
    Ok(match load_machine(tx, id)? {
        Some(info) if info.state != MachineState::Destroyed => Ok(info),
        _ => Err(not_found("machine", id)),
    })
}

/// Set machine `id`'s state column.
pub(super) fn set_state(
    tx: &Transaction<'_>,
    id: &str,
    state: MachineState,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE machines SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Set the image machine `id` runs from its next start.
pub(super) fn set_image(tx: &Transaction<'_>, id: &str, image: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE machines SET image = ?2 WHERE id = ?1",
        params![id, image],
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
mod tests {
    use super::*;

    /// Each provider's migrations, with how it records a volume (its own columns differ).
    const SCHEMAS: [(&str, &[Migration], &str); 2] = [
        (
            "sim",
            super::super::sim::MIGRATIONS,
            "INSERT INTO volumes (id, seq, name, source) VALUES (?1, ?2, 'data', 'empty')",
        ),
        (
            "process",
            super::super::process::MIGRATIONS,
            "INSERT INTO volumes (id, seq, name) VALUES (?1, ?2, 'data')",
        ),
    ];

    /// A ledger with `migrations` in a fresh file under `dir`.
    fn open(dir: &tempfile::TempDir, migrations: &[Migration]) -> Ledger {
        let mut conn = Connection::open(dir.path().join("ledger.db")).unwrap();
        prepare(&mut conn, migrations).unwrap();
        Ledger::new(conn, "test")
    }

    /// Run `work` in a transaction that commits; panic on any failure.
    fn run<T>(ledger: &Ledger, work: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> T {
        ledger.transact(|tx| work(tx).map(Ok)).unwrap()
    }

    /// Run `work`, a domain call, in a transaction, committed only on `Ok(Ok(_))`.
    fn call<T>(
        ledger: &Ledger,
        work: impl FnOnce(&Transaction<'_>) -> Db<T>,
    ) -> Result<T, ProviderError> {
        ledger.transact(work)
    }

    /// A machine on `volume` with metadata the codec must carry as is.
    fn spec(volume: &str) -> MachineSpec {
        MachineSpec {
            image: "claw:1".into(),
            volume: VolumeId(volume.into()),
            metadata: BTreeMap::from([
                ("sandbox_id".to_owned(), "sb-1".to_owned()),
                ("note".to_owned(), "two\nlines é".to_owned()),
            ]),
        }
    }

    #[test]
    fn shared_queries_work_on_both_providers_schemas() {
        for (name, migrations, insert_volume) in SCHEMAS {
            let dir = tempfile::tempdir().unwrap();
            let ledger = open(&dir, migrations);
            let volume = run(&ledger, |tx| {
                let (seq, id) = next_id(tx, "volume", "v")?;
                tx.execute(insert_volume, params![id, seq])?;
                Ok(id)
            });
            assert_eq!(volume, "v-1", "{name}");
            assert_eq!(
                call(&ledger, |tx| insert_machine(tx, &spec("v-9"))),
                Err(not_found("volume", "v-9")),
                "{name}"
            );
            let machine = call(&ledger, |tx| insert_machine(tx, &spec(&volume))).unwrap();
            assert_eq!(
                machine,
                MachineId("m-1".into()),
                "{name}: no id was consumed"
            );
            let info = run(&ledger, |tx| load_machine(tx, "m-1")).unwrap();
            assert_eq!(
                info,
                MachineInfo {
                    id: machine.clone(),
                    state: MachineState::Created,
                    image: "claw:1".into(),
                    volume: VolumeId(volume.clone()),
                    metadata: spec(&volume).metadata,
                },
                "{name}"
            );
            run(&ledger, |tx| set_state(tx, "m-1", MachineState::Running));
            run(&ledger, |tx| set_image(tx, "m-1", "claw:2"));
            let info = call(&ledger, |tx| live_machine(tx, "m-1")).unwrap();
            assert_eq!(
                (info.state, info.image.as_str()),
                (MachineState::Running, "claw:2")
            );
            assert_eq!(run(&ledger, live_machines), vec![info], "{name}");
            assert_eq!(
                call(&ledger, |tx| machines_on(tx, &volume)),
                Ok(vec![machine.clone()]),
                "{name}"
            );
            assert_eq!(
                call(&ledger, |tx| delete_volume_row(tx, &volume)),
                Err(ProviderError::Refused(
                    "volume v-1 is attached to machine m-1".into()
                )),
                "{name}"
            );

            run(&ledger, |tx| set_state(tx, "m-1", MachineState::Destroyed));
            assert_eq!(
                call(&ledger, |tx| live_machine(tx, "m-1")),
                Err(not_found("machine", "m-1")),
                "{name}"
            );
            assert!(
                run(&ledger, |tx| load_machine(tx, "m-1")).is_some(),
                "{name}"
            );
            assert_eq!(run(&ledger, |tx| load_machine(tx, "m-2")), None, "{name}");
            assert!(run(&ledger, live_machines).is_empty(), "{name}");
            assert_eq!(call(&ledger, |tx| machines_on(tx, &volume)), Ok(vec![]));

            for _ in 0..2 {
                let (seq, id) = call(&ledger, |tx| reserve_snapshot(tx, &volume)).unwrap();
                run(&ledger, |tx| insert_snapshot(tx, seq, &id, &volume));
            }
            let snapshots = vec![SnapshotId("s-1".into()), SnapshotId("s-2".into())];
            assert_eq!(call(&ledger, |tx| snapshots_of(tx, &volume)), Ok(snapshots));
            call(&ledger, |tx| delete_volume_row(tx, &volume)).unwrap();
            assert!(!run(&ledger, |tx| volume_exists(tx, &volume)), "{name}");
            assert!(
                run(&ledger, |tx| snapshot_exists(tx, "s-2")),
                "snapshots outlive volumes"
            );
            for (source, outcome) in [
                (VolumeSource::Empty, Ok((2, "v-2".to_owned()))),
                (
                    VolumeSource::Volume(VolumeId(volume.clone())),
                    Err(not_found("volume", "v-1")),
                ),
                (
                    VolumeSource::Snapshot(SnapshotId("s-2".into())),
                    Ok((3, "v-3".to_owned())),
                ),
                (
                    VolumeSource::Snapshot(SnapshotId("s-3".into())),
                    Err(not_found("snapshot", "s-3")),
                ),
            ] {
                assert_eq!(
                    call(&ledger, |tx| reserve_volume(tx, &source)),
                    outcome,
                    "{name}"
                );
            }
            // Everything asked of a deleted volume finds it gone.
            let gone = Err(not_found("volume", "v-1"));
            let snapshots = call(&ledger, |tx| snapshots_of(tx, &volume));
            assert_eq!(snapshots.map(drop), gone, "{name}");
            let machines = call(&ledger, |tx| machines_on(tx, &volume));
            assert_eq!(machines.map(drop), gone, "{name}");
            let reserved = call(&ledger, |tx| reserve_snapshot(tx, &volume));
            assert_eq!(reserved.map(drop), gone, "{name}");
            assert_eq!(call(&ledger, |tx| delete_volume_row(tx, &volume)), gone);
            let conn = lock(&ledger.conn);
            for (kind, last) in [("volume", 3), ("snapshot", 2), ("machine", 1), ("other", 0)] {
                assert_eq!(last_issued(&conn, kind).unwrap(), last, "{name}: {kind}");
            }
        }
    }

    #[test]
    fn a_domain_error_rolls_back_and_a_storage_error_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(&dir, SCHEMAS[1].1);
        let refused = call(&ledger, |tx| {
            next_id(tx, "volume", "v")?;
            Ok(Err::<(), _>(ProviderError::Refused("no".into())))
        });
        assert_eq!(refused, Err(ProviderError::Refused("no".into())));
        // The id the refused call took was rolled back with it.
        assert_eq!(run(&ledger, |tx| next_id(tx, "volume", "v")).1, "v-1");

        let metadata = codec::encode(&BTreeMap::<String, String>::new()).unwrap();
        run(&ledger, |tx| {
            tx.execute(
                "INSERT INTO machines (id, seq, state, image, volume, metadata)
                 VALUES ('m-1', 1, 'sleeping', 'claw:1', 'v-1', ?1)",
                [metadata],
            )
        });
        let Err(ProviderError::Failed(message)) = call(&ledger, |tx| live_machine(tx, "m-1"))
        else {
            panic!("an unknown state is a storage failure");
        };
        assert!(message.starts_with("test provider database: "), "{message}");
        assert!(message.contains("sleeping"), "{message}");
    }
}
