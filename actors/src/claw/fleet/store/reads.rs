//! The fleet's read models: action summaries with their live counts, stages, target views,
//! the audit log, and the figures of the retry estimate.

use clawdo_storage::rusqlite::{self, Connection, OptionalExtension as _, params};

use super::super::api::{
    ActionKind, ActionStatus, ActionSummary, AuditEntry, StageView, TargetCounts, TargetStatus,
    TargetView,
};
use crate::UnixMillis;

const SUMMARY_COLUMNS: &str = "id, kind, image_tag, pin, status, run_at, lease_ms, created_by, \
     created_at, updated_at, completed_at, total, applied, skipped, failed, cancelled";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionSummary> {
    let total: i64 = r.get(11)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(ActionSummary {
        id: r.get(0)?,
        kind: ActionKind::parse(&r.get::<_, String>(1)?).unwrap_or(ActionKind::ScheduledRestart),
        image_tag: r.get(2)?,
        pin: r.get(3)?,
        status: ActionStatus::parse(&r.get::<_, String>(4)?).unwrap_or(ActionStatus::Completed),
        run_at: r.get(5)?,
        lease_ms: r.get(6)?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        completed_at: r.get(10)?,
        counts: TargetCounts {
            total: n(total),
            applied: n(r.get(12)?),
            skipped: n(r.get(13)?),
            failed: n(r.get(14)?),
            cancelled: n(r.get(15)?),
            pending: 0,
            running: 0,
        },
    })
}

/// One action with its pending and running counts.
pub(in crate::claw::fleet) fn summary(
    conn: &Connection,
    id: i64,
) -> rusqlite::Result<Option<ActionSummary>> {
    let Some(mut summary) = conn
        .prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM scheduled_actions WHERE id = ?1"
        ))?
        .query_row([id], summary_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    fill_live_counts(conn, &mut summary)?;
    Ok(Some(summary))
}

/// Running targets are counted (at most the cap, plus forced ones); pending ones are what the
/// counters leave, so reading a summary never walks the pending targets.
fn fill_live_counts(conn: &Connection, summary: &mut ActionSummary) -> rusqlite::Result<()> {
    let running: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM scheduled_action_targets
             WHERE action_id = ?1 AND status = 'running'",
        )?
        .query_row([summary.id], |r| r.get(0))?;
    let counts = &mut summary.counts;
    counts.running = u64::try_from(running).unwrap_or(0);
    counts.pending = counts
        .total
        .saturating_sub(counts.terminal())
        .saturating_sub(counts.running);
    Ok(())
}

/// Up to `limit` actions with an id below `before` (newest first).
pub(in crate::claw::fleet) fn list(
    conn: &Connection,
    before: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<ActionSummary>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM scheduled_actions WHERE (?1 IS NULL OR id < ?1)
         ORDER BY id DESC LIMIT ?2"
    ))?;
    let mut out = stmt
        .query_map(
            params![before, i64::try_from(limit).unwrap_or(i64::MAX)],
            summary_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for summary in &mut out {
        fill_live_counts(conn, summary)?;
    }
    Ok(out)
}

/// The stages of an action.
pub(in crate::claw::fleet) fn stages(
    conn: &Connection,
    action_id: i64,
) -> rusqlite::Result<Vec<StageView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, name, run_at, status FROM scheduled_action_stages
         WHERE action_id = ?1 ORDER BY idx",
    )?;
    stmt.query_map([action_id], |r| {
        Ok(StageView {
            index: r.get(0)?,
            name: r.get(1)?,
            run_at: r.get(2)?,
            status: r.get(3)?,
        })
    })?
    .collect()
}

/// Every target of an action (or just `target`), by id.
pub(in crate::claw::fleet) fn targets(
    conn: &Connection,
    action_id: i64,
    target: Option<i64>,
) -> rusqlite::Result<Vec<TargetView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, instance_id, stage_idx, status, run_at, source_tag, slot_claimed_at,
                lease_expires_at, completed_at, failure_reason, deferred_ms
         FROM scheduled_action_targets WHERE action_id = ?1 AND (?2 IS NULL OR id = ?2)
         ORDER BY id",
    )?;
    stmt.query_map(params![action_id, target], |r| {
        Ok(TargetView {
            id: r.get(0)?,
            instance_id: r.get(1)?,
            stage: r.get(2)?,
            status: TargetStatus::parse(&r.get::<_, String>(3)?).unwrap_or(TargetStatus::Failed),
            run_at: r.get(4)?,
            source_tag: r.get(5)?,
            slot_claimed_at: r.get(6)?,
            lease_expires_at: r.get(7)?,
            completed_at: r.get(8)?,
            failure_reason: r.get(9)?,
            deferred_ms: r.get(10)?,
        })
    })?
    .collect()
}

/// Mean time from claim to outcome of the last 50 finished targets, milliseconds.
pub(in crate::claw::fleet) fn mean_duration(conn: &Connection) -> rusqlite::Result<Option<f64>> {
    conn.prepare_cached(
        "SELECT AVG(completed_at - slot_claimed_at) FROM (
             SELECT completed_at, slot_claimed_at FROM scheduled_action_targets
             WHERE slot_claimed_at IS NOT NULL AND completed_at IS NOT NULL
             ORDER BY completed_at DESC LIMIT 50)",
    )?
    .query_row([], |r| r.get(0))
}

/// The newest `limit` audit rows, newest first.
pub(in crate::claw::fleet) fn audit(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor, what, detail FROM fleet_audit ORDER BY id DESC LIMIT ?1",
    )?;
    stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            what: r.get(3)?,
            detail: r.get(4)?,
        })
    })?
    .collect()
}

/// Claim times of the running targets.
pub(in crate::claw::fleet) fn running_claims(
    conn: &Connection,
) -> rusqlite::Result<Vec<UnixMillis>> {
    let mut stmt = conn.prepare_cached(
        "SELECT slot_claimed_at FROM scheduled_action_targets
         WHERE status = 'running' AND slot_claimed_at IS NOT NULL",
    )?;
    stmt.query_map([], |r| r.get(0))?.collect()
}
