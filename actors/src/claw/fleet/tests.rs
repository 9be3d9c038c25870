//! Tests of the fleet's pure decisions (claim precheck, wake plan, outcome status, promotion)
//! as tables, and of its hot queries' plans. No runtime, no clock.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use clawdo_storage::rusqlite::{self, Connection};

use super::store::claimable;

/// The fleet's schema with one action of `n` pending targets.
fn fleet_db(n: usize) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(include_str!("schema.sql")).unwrap();
    conn.execute(
        "INSERT INTO scheduled_actions (kind, status, run_at, lease_ms, created_by,
             created_at, updated_at, total)
         VALUES ('scheduled_restart', 'running', 0, 1000, 'test', 0, 0, ?1)",
        [i64::try_from(n).unwrap()],
    )
    .unwrap();
    for i in 0..n {
        conn.execute(
            "INSERT INTO scheduled_action_targets
                 (action_id, stage_idx, instance_id, source_tag, status, run_at)
             VALUES (1, 0, ?1, 'claw:1', 'pending', 0)",
            [format!("i-{i}")],
        )
        .unwrap();
    }
    conn
}

fn plan(conn: &Connection, sql: &str) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let n = stmt.parameter_count();
    let params: Vec<i64> = vec![1; n];
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[test]
fn hot_queries_stay_indexed_with_many_pending_targets() {
    let conn = fleet_db(2_000);
    for (name, sql) in [
        (
            "claimable",
            "SELECT t.id, t.instance_id FROM scheduled_action_targets t
             JOIN scheduled_actions a ON a.id = t.action_id
             WHERE t.status = 'pending' AND t.run_at <= ?1 AND t.not_before <= ?1
               AND a.status IN ('scheduled', 'running')
               AND (t.force = 1 OR NOT EXISTS (
                    SELECT 1 FROM scheduled_action_targets e
                    WHERE e.action_id = t.action_id AND e.stage_idx < t.stage_idx
                      AND e.status IN ('pending', 'running')))
             ORDER BY t.id LIMIT ?2",
        ),
        (
            "running",
            "SELECT COUNT(*) FROM scheduled_action_targets WHERE status = 'running'",
        ),
    ] {
        let plan = plan(&conn, sql);
        assert!(!plan.contains("TEMP B-TREE"), "{name}: {plan}");
        assert!(
            !plan.contains("SCAN t\n") && !plan.starts_with("SCAN"),
            "{name}: {plan}"
        );
    }
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(claimable(&conn, 10, 64).unwrap().len(), 64);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "claimable is not bounded by its limit: {:?}",
        started.elapsed()
    );
}
