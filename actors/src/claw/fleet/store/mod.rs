//! The fleet's SQL: free functions over a connection (reads) or an open transaction (writes),
//! one per statement the fleet needs; what callers read (summaries, views, audit) is in
//! `reads`. Every claim and every state change of a target is one
//! conditional `UPDATE … WHERE <expected state>`; a result of `0` rows means the race was lost
//! and is a normal outcome (SPEC §1.3).

use clawdo_storage::rusqlite::{self, Connection, OptionalExtension as _, params};

use super::actions::StageProgress;
use super::api::{ActionKind, ActionStatus, NewAction, TargetStatus, TargetTicket};
use super::slots::TargetRow;
use crate::UnixMillis;

mod reads;

pub(super) use reads::{audit, list, mean_duration, running_claims, stages, summary, targets};

/// Actions whose targets may still be claimed.
pub(super) const LIVE: &str = "('scheduled', 'running')";

pub(super) fn target_row(conn: &Connection, id: i64) -> rusqlite::Result<Option<TargetRow>> {
    conn.prepare_cached(
        "SELECT action_id, instance_id, status, run_at, not_before, deferred_ms, force
         FROM scheduled_action_targets WHERE id = ?1",
    )?
    .query_row([id], |r| {
        Ok(TargetRow {
            action_id: r.get(0)?,
            instance_id: r.get(1)?,
            status: TargetStatus::parse(&r.get::<_, String>(2)?).unwrap_or(TargetStatus::Failed),
            run_at: r.get(3)?,
            not_before: r.get(4)?,
            deferred_ms: r.get(5)?,
            force: r.get(6)?,
        })
    })
    .optional()
}

/// The drain's query (a constant so the query-plan test checks the statement itself).
pub(super) const CLAIMABLE: &str = "SELECT t.id, t.instance_id FROM scheduled_action_targets t
     JOIN scheduled_actions a ON a.id = t.action_id
     WHERE t.status = 'pending' AND t.run_at <= ?1 AND t.not_before <= ?1
       AND a.status IN ('scheduled', 'running')
       AND (t.force = 1 OR NOT EXISTS (
            SELECT 1 FROM scheduled_action_targets e
            WHERE e.action_id = t.action_id AND e.stage_idx < t.stage_idx
              AND e.status IN ('pending', 'running')))
     ORDER BY t.id LIMIT ?2";

/// The count of slots in use (a constant so the query-plan test checks the statement itself).
pub(super) const RUNNING_COUNT: &str =
    "SELECT COUNT(*) FROM scheduled_action_targets WHERE status = 'running'";

/// The promotion sweep's read: each stage, its status, and whether any of its targets is not
/// terminal. `EXISTS` stops at the first open target: this runs after every outcome, so it
/// must not count a large stage's targets each time.
pub(super) const STAGE_PROGRESS: &str = "SELECT s.idx, s.status,
            EXISTS (SELECT 1 FROM scheduled_action_targets t
                    WHERE t.action_id = s.action_id AND t.stage_idx = s.idx
                      AND t.status IN ('pending', 'running'))
     FROM scheduled_action_stages s WHERE s.action_id = ?1 ORDER BY s.idx";

/// Slots in use: targets holding one.
pub(super) fn running_count(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached(RUNNING_COUNT)?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The action holding a pending target of `instance_id` under a live action, if any.
pub(super) fn conflicting_action(
    conn: &Connection,
    instance_id: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT t.action_id FROM scheduled_action_targets t
         JOIN scheduled_actions a ON a.id = t.action_id
         WHERE t.instance_id = ?1 AND t.status = 'pending' AND a.status IN ('scheduled', 'running')
         LIMIT 1",
    )?
    .query_row([instance_id], |r| r.get(0))
    .optional()
}

/// The slot claim: `pending → running` in one statement that re-checks that the target is
/// due, its action is live, every earlier stage is terminal, and a slot is free under `cap`
/// (a forced target skips the stage and cap checks). Returns the rows changed (0 or 1).
pub(super) fn claim(
    conn: &Connection,
    id: i64,
    now: UnixMillis,
    lease_expires_at: UnixMillis,
    epoch: i64,
    cap: i64,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE scheduled_action_targets AS t
         SET status = 'running', slot_claimed_at = ?2, lease_expires_at = ?3, claim_epoch = ?4
         WHERE t.id = ?1 AND t.status = 'pending' AND t.run_at <= ?2 AND t.not_before <= ?2
           AND EXISTS (SELECT 1 FROM scheduled_actions a
                       WHERE a.id = t.action_id AND a.status IN ('scheduled', 'running'))
           AND (t.force = 1 OR (
                NOT EXISTS (SELECT 1 FROM scheduled_action_targets e
                            WHERE e.action_id = t.action_id AND e.stage_idx < t.stage_idx
                              AND e.status IN ('pending', 'running'))
                AND (SELECT COUNT(*) FROM scheduled_action_targets r
                     WHERE r.status = 'running') < ?5))",
    )?
    .execute(params![id, now, lease_expires_at, epoch, cap])
}

/// Whether an earlier stage of the target's action still has unfinished targets.
pub(super) fn earlier_stage_open(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM scheduled_action_targets t
                        JOIN scheduled_action_targets e ON e.action_id = t.action_id
                        WHERE t.id = ?1 AND e.stage_idx < t.stage_idx
                          AND e.status IN ('pending', 'running'))",
    )?
    .query_row([id], |r| r.get(0))
}

/// The action's status.
pub(super) fn action_status(conn: &Connection, id: i64) -> rusqlite::Result<Option<ActionStatus>> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM scheduled_actions WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(status.and_then(|s| ActionStatus::parse(&s)))
}

/// `scheduled → running` on the first claim.
pub(super) fn mark_action_running(
    conn: &Connection,
    id: i64,
    now: UnixMillis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE scheduled_actions SET status = 'running', updated_at = ?2
         WHERE id = ?1 AND status = 'scheduled'",
    )?
    .execute(params![id, now])?;
    Ok(())
}

/// Move target `id` from `from` to the terminal `to` (with `reason`), and count it on its
/// action in the same transaction. Returns the action id when this call made the change.
pub(super) fn finish_target(
    conn: &Connection,
    id: i64,
    from: TargetStatus,
    to: TargetStatus,
    reason: Option<&str>,
    now: UnixMillis,
) -> rusqlite::Result<Option<i64>> {
    let changed = conn
        .prepare_cached(
            "UPDATE scheduled_action_targets
             SET status = ?3, failure_reason = ?4, completed_at = ?5, lease_expires_at = NULL
             WHERE id = ?1 AND status = ?2",
        )?
        .execute(params![id, from.as_str(), to.as_str(), reason, now])?;
    if changed == 0 {
        return Ok(None);
    }
    let action_id: i64 = conn
        .prepare_cached("SELECT action_id FROM scheduled_action_targets WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    count(conn, action_id, to, 1, now)?;
    Ok(Some(action_id))
}

/// Add `n` to the action's counter of `status` (a terminal status).
pub(super) fn count(
    conn: &Connection,
    action_id: i64,
    status: TargetStatus,
    n: usize,
    now: UnixMillis,
) -> rusqlite::Result<()> {
    let sql = match status {
        TargetStatus::Applied => {
            "UPDATE scheduled_actions SET applied = applied + ?2, updated_at = ?3 WHERE id = ?1"
        }
        TargetStatus::Skipped => {
            "UPDATE scheduled_actions SET skipped = skipped + ?2, updated_at = ?3 WHERE id = ?1"
        }
        TargetStatus::Failed => {
            "UPDATE scheduled_actions SET failed = failed + ?2, updated_at = ?3 WHERE id = ?1"
        }
        TargetStatus::Cancelled => {
            "UPDATE scheduled_actions SET cancelled = cancelled + ?2, updated_at = ?3 WHERE id = ?1"
        }
        TargetStatus::Pending | TargetStatus::Running => return Ok(()),
    };
    conn.prepare_cached(sql)?.execute(params![
        action_id,
        i64::try_from(n).unwrap_or(i64::MAX),
        now
    ])?;
    Ok(())
}

/// Each stage of an action with its status and how many of its targets are not terminal.
pub(super) fn stage_progress(
    conn: &Connection,
    action_id: i64,
) -> rusqlite::Result<Vec<StageProgress>> {
    let mut stmt = conn.prepare_cached(STAGE_PROGRESS)?;
    stmt.query_map([action_id], |r| {
        Ok(StageProgress {
            index: r.get(0)?,
            scheduled: r.get::<_, String>(1)? == "scheduled",
            open: r.get(2)?,
        })
    })?
    .collect()
}

/// Mark stage `index` of the action `completed` (if it is still `scheduled`).
pub(super) fn complete_stage(
    conn: &Connection,
    action_id: i64,
    index: u32,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE scheduled_action_stages SET status = 'completed'
         WHERE action_id = ?1 AND idx = ?2 AND status = 'scheduled'",
    )?
    .execute(params![action_id, index])?;
    Ok(())
}

/// `→ completed` for a live action whose targets are all terminal (re-checked by the
/// statement). Returns whether it changed.
pub(super) fn complete_action(
    conn: &Connection,
    action_id: i64,
    now: UnixMillis,
) -> rusqlite::Result<bool> {
    let done = conn
        .prepare_cached(
            "UPDATE scheduled_actions SET status = 'completed', completed_at = ?2, updated_at = ?2
             WHERE id = ?1 AND status IN ('scheduled', 'running')
               AND NOT EXISTS (SELECT 1 FROM scheduled_action_targets t
                               WHERE t.action_id = ?1 AND t.status IN ('pending', 'running'))",
        )?
        .execute(params![action_id, now])?;
    Ok(done > 0)
}

/// Up to `limit` targets that could claim a slot now, oldest first: pending, due, not
/// deferred, under a live action, with every earlier stage terminal.
pub(super) fn claimable(
    conn: &Connection,
    now: UnixMillis,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(CLAIMABLE)?;
    stmt.query_map(
        params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?
    .collect()
}

/// The earliest lease among running targets.
pub(super) fn next_lease(conn: &Connection) -> rusqlite::Result<Option<UnixMillis>> {
    conn.prepare_cached(
        "SELECT MIN(lease_expires_at) FROM scheduled_action_targets WHERE status = 'running'",
    )?
    .query_row([], |r| r.get(0))
}

/// Running targets whose lease ran out by `now`.
pub(super) fn expired(conn: &Connection, now: UnixMillis) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, instance_id FROM scheduled_action_targets
         WHERE status = 'running' AND lease_expires_at <= ?1 ORDER BY lease_expires_at, id",
    )?;
    stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Running targets claimed by another process epoch (their task died with that process).
pub(super) fn orphaned(conn: &Connection, epoch: i64) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, instance_id FROM scheduled_action_targets
         WHERE status = 'running' AND (claim_epoch IS NULL OR claim_epoch != ?1) ORDER BY id",
    )?;
    stmt.query_map([epoch], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// The ticket an instance keeps for target `id`.
pub(super) fn ticket(conn: &Connection, id: i64) -> rusqlite::Result<Option<TargetTicket>> {
    conn.prepare_cached(
        "SELECT t.action_id, t.id, a.kind, a.image_tag, a.pin, t.run_at
         FROM scheduled_action_targets t JOIN scheduled_actions a ON a.id = t.action_id
         WHERE t.id = ?1",
    )?
    .query_row([id], ticket_from_row)
    .optional()
}

fn ticket_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TargetTicket> {
    Ok(TargetTicket {
        action_id: r.get(0)?,
        target_id: r.get(1)?,
        kind: ActionKind::parse(&r.get::<_, String>(2)?).unwrap_or(ActionKind::ScheduledRestart),
        image_tag: r.get(3)?,
        pin: r.get(4)?,
        run_at: r.get(5)?,
    })
}

/// The oldest pending target of `instance_id` under a live action.
pub(super) fn due_for(
    conn: &Connection,
    instance_id: &str,
) -> rusqlite::Result<Option<TargetTicket>> {
    conn.prepare_cached(
        "SELECT t.action_id, t.id, a.kind, a.image_tag, a.pin, MAX(t.run_at, t.not_before)
         FROM scheduled_action_targets t JOIN scheduled_actions a ON a.id = t.action_id
         WHERE t.instance_id = ?1 AND t.status = 'pending'
           AND a.status IN ('scheduled', 'running')
         ORDER BY t.id LIMIT 1",
    )?
    .query_row([instance_id], ticket_from_row)
    .optional()
}

/// Pending targets of an action (or just `target`), as tickets with their instance.
pub(super) fn pending_targets(
    conn: &Connection,
    action_id: i64,
    target: Option<i64>,
) -> rusqlite::Result<Vec<(String, TargetTicket)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.action_id, t.id, a.kind, a.image_tag, a.pin, t.run_at, t.instance_id
         FROM scheduled_action_targets t JOIN scheduled_actions a ON a.id = t.action_id
         WHERE t.action_id = ?1 AND (?2 IS NULL OR t.id = ?2) AND t.status = 'pending'
         ORDER BY t.id",
    )?;
    stmt.query_map(params![action_id, target], |r| {
        Ok((r.get(6)?, ticket_from_row(r)?))
    })?
    .collect()
}

/// Insert a new action with its stages and targets (in the caller's transaction). Returns the
/// action id and, per target, its instance and ticket.
pub(super) fn insert_action(
    conn: &Connection,
    new: &NewAction,
    now: UnixMillis,
) -> rusqlite::Result<(i64, Vec<(String, TargetTicket)>)> {
    conn.prepare_cached(
        "INSERT INTO scheduled_actions (kind, image_tag, pin, status, run_at, lease_ms,
             created_by, created_at, updated_at, total)
         VALUES (?1, ?2, ?3, 'scheduled', ?4, ?5, ?6, ?7, ?7, ?8)",
    )?
    .execute(params![
        new.kind.as_str(),
        new.image_tag,
        new.pin,
        new.run_at,
        new.lease_ms,
        new.created_by,
        now,
        i64::try_from(new.targets.len()).unwrap_or(i64::MAX),
    ])?;
    let action_id = conn.last_insert_rowid();
    let mut stage = conn.prepare_cached(
        "INSERT INTO scheduled_action_stages (action_id, idx, name, run_at, status)
         VALUES (?1, ?2, ?3, ?4, 'scheduled')",
    )?;
    for (idx, (name, run_at)) in new.stages.iter().enumerate() {
        stage.execute(params![
            action_id,
            i64::try_from(idx).unwrap_or(0),
            name,
            run_at
        ])?;
    }
    let mut tickets = Vec::with_capacity(new.targets.len());
    let mut insert = conn.prepare_cached(
        "INSERT INTO scheduled_action_targets
             (action_id, stage_idx, instance_id, source_tag, status, run_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
    )?;
    for (instance_id, source_tag, stage) in &new.targets {
        let run_at = usize::try_from(*stage)
            .ok()
            .and_then(|s| new.stages.get(s))
            .map_or(new.run_at, |(_, at)| *at);
        insert.execute(params![action_id, stage, instance_id, source_tag, run_at])?;
        tickets.push((
            instance_id.clone(),
            TargetTicket {
                action_id,
                target_id: conn.last_insert_rowid(),
                kind: new.kind,
                image_tag: new.image_tag.clone(),
                pin: new.pin,
                run_at,
            },
        ));
    }
    Ok((action_id, tickets))
}

/// `→ cancelled` for a live action, its pending targets (counted) and its open stages.
/// Returns the targets cancelled (instance, target), or `None` when the action was not live.
pub(super) fn cancel_action(
    conn: &Connection,
    action_id: i64,
    now: UnixMillis,
) -> rusqlite::Result<Option<Vec<(String, i64)>>> {
    let changed = conn
        .prepare_cached(
            "UPDATE scheduled_actions SET status = 'cancelled', completed_at = ?2, updated_at = ?2
             WHERE id = ?1 AND status IN ('scheduled', 'running')",
        )?
        .execute(params![action_id, now])?;
    if changed == 0 {
        return Ok(None);
    }
    let pending: Vec<(String, i64)> = pending_targets(conn, action_id, None)?
        .into_iter()
        .map(|(instance, ticket)| (instance, ticket.target_id))
        .collect();
    let n = conn
        .prepare_cached(
            "UPDATE scheduled_action_targets SET status = 'cancelled', completed_at = ?2
             WHERE action_id = ?1 AND status = 'pending'",
        )?
        .execute(params![action_id, now])?;
    count(conn, action_id, TargetStatus::Cancelled, n, now)?;
    conn.prepare_cached(
        "UPDATE scheduled_action_stages SET status = 'cancelled'
         WHERE action_id = ?1 AND status = 'scheduled'",
    )?
    .execute([action_id])?;
    Ok(Some(pending))
}

/// Defer pending target `id` to `until`, adding `delay` to its total deferral.
pub(super) fn defer(
    conn: &Connection,
    id: i64,
    until: UnixMillis,
    delay: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE scheduled_action_targets SET not_before = ?2, deferred_ms = deferred_ms + ?3
         WHERE id = ?1 AND status = 'pending'",
    )?
    .execute(params![id, until, delay])?;
    Ok(())
}

/// The slot lease of an action's targets, milliseconds.
pub(super) fn lease_ms(conn: &Connection, action_id: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT lease_ms FROM scheduled_actions WHERE id = ?1")?
        .query_row([action_id], |r| r.get(0))
}

/// Make an action's pending targets (or just `target`) due at `now`; `force` also bypasses
/// stage order and the cap for them.
pub(super) fn make_due(
    conn: &Connection,
    action_id: i64,
    target: Option<i64>,
    now: UnixMillis,
    force: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE scheduled_action_targets
         SET run_at = MIN(run_at, ?3), not_before = 0, force = MAX(force, ?4)
         WHERE action_id = ?1 AND (?2 IS NULL OR id = ?2) AND status = 'pending'",
    )?
    .execute(params![action_id, target, now, force])?;
    if target.is_none() {
        conn.prepare_cached(
            "UPDATE scheduled_action_stages SET run_at = MIN(run_at, ?2) WHERE action_id = ?1",
        )?
        .execute(params![action_id, now])?;
        conn.prepare_cached(
            "UPDATE scheduled_actions SET run_at = MIN(run_at, ?2), updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![action_id, now])?;
    }
    Ok(())
}

/// Append an audit row.
pub(super) fn insert_audit(
    conn: &Connection,
    at: UnixMillis,
    actor: &str,
    what: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO fleet_audit (at, actor, what, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![at, actor, what, detail])?;
    Ok(())
}

/// Whether any action is live.
pub(super) fn any_live(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(&format!(
        "SELECT EXISTS (SELECT 1 FROM scheduled_actions WHERE status IN {LIVE})"
    ))?
    .query_row([], |r| r.get(0))
}
