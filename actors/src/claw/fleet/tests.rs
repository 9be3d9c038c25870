//! Tests of the fleet's pure decisions (claim precheck, wake plan, outcome status, promotion)
//! as tables, and of its hot queries' plans. No runtime, no clock.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use clawdo_storage::rusqlite::{self, Connection};

use super::store::{CLAIMABLE, RUNNING_COUNT, STAGE_PROGRESS, claimable};

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
        ("claimable", CLAIMABLE),
        ("running", RUNNING_COUNT),
        ("stage progress", STAGE_PROGRESS),
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

use std::collections::HashSet;

use super::actions::StageProgress;
use super::actions::{Promotion, outcome_status, promotion};
use super::api::{
    ActionError, ActionStatus, ClaimReply, FailureReason, SkipReason, TargetFailure, TargetStatus,
    parse_run_at, target_task_key,
};
use super::slots::TargetRow;
use super::slots::{Precheck, Pressure, free_slots, plan_wakes, precheck};

const NOW: i64 = 10_000;

fn row(status: TargetStatus) -> TargetRow {
    TargetRow {
        action_id: 1,
        instance_id: "i-1".into(),
        status,
        run_at: NOW - 1,
        not_before: 0,
        deferred_ms: 0,
        force: false,
    }
}

const CALM: Pressure = Pressure {
    delay_ms: 30_000,
    max_deferral_ms: 600_000,
    interactive_waiting: false,
};

const BUSY: Pressure = Pressure {
    interactive_waiting: true,
    ..CALM
};

#[test]
fn claim_prechecks() {
    use ActionStatus as A;
    use TargetStatus as T;
    let live = Some(A::Running);
    let later = TargetRow {
        run_at: NOW + 5,
        ..row(T::Pending)
    };
    let deferred = TargetRow {
        not_before: NOW + 7,
        ..row(T::Pending)
    };
    let forced = TargetRow {
        force: true,
        ..row(T::Pending)
    };
    let deferred_enough = TargetRow {
        deferred_ms: 590_000,
        ..row(T::Pending)
    };
    // (target, action status, pressure, in use, cap) → decision
    let cases: Vec<(
        TargetRow,
        Option<ActionStatus>,
        Pressure,
        u64,
        u64,
        Precheck,
    )> = vec![
        (
            row(T::Running),
            live,
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::Gone("running".into())),
        ),
        (
            row(T::Cancelled),
            live,
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::Gone("cancelled".into())),
        ),
        (
            row(T::Pending),
            Some(A::Cancelled),
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::Gone("cancelled".into())),
        ),
        (
            row(T::Pending),
            Some(A::Completed),
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::Gone("completed".into())),
        ),
        (
            row(T::Pending),
            None,
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::Gone("missing".into())),
        ),
        (
            later,
            live,
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::NotYet(Some(NOW + 5))),
        ),
        (
            deferred,
            live,
            CALM,
            0,
            2,
            Precheck::Answer(ClaimReply::Deferred { until: NOW + 7 }),
        ),
        (
            row(T::Pending),
            live,
            BUSY,
            0,
            2,
            Precheck::Defer {
                until: NOW + 30_000,
                delay_ms: 30_000,
            },
        ),
        (deferred_enough.clone(), live, BUSY, 0, 2, Precheck::Claim),
        (deferred_enough, live, BUSY, 2, 2, Precheck::Full),
        (forced.clone(), live, BUSY, 0, 2, Precheck::Claim),
        (forced, live, CALM, 5, 2, Precheck::Claim),
        (
            row(T::Pending),
            live,
            Pressure {
                delay_ms: 0,
                ..BUSY
            },
            0,
            2,
            Precheck::Claim,
        ),
        (
            row(T::Pending),
            Some(A::Scheduled),
            CALM,
            1,
            2,
            Precheck::Claim,
        ),
        (row(T::Pending), live, CALM, 2, 2, Precheck::Full),
        (row(T::Pending), live, CALM, 3, 2, Precheck::Full),
    ];
    for (target, action, pressure, in_use, cap, expected) in cases {
        assert_eq!(
            precheck(&target, action, NOW, pressure, in_use, cap),
            expected,
            "{target:?} / {action:?} / {pressure:?} / {in_use} of {cap}"
        );
    }
}

#[test]
fn wakes_fill_free_slots_with_the_oldest_unreserved_targets() {
    let candidates = |ids: &[i64]| -> Vec<(i64, String)> {
        ids.iter().map(|id| (*id, format!("i-{id}"))).collect()
    };
    let set = |ids: &[i64]| ids.iter().copied().collect::<HashSet<i64>>();
    let cases = [
        (2, set(&[]), set(&[]), candidates(&[1, 2, 3]), vec![1, 2]),
        (2, set(&[1]), set(&[]), candidates(&[1, 2, 3]), vec![2, 3]),
        (
            2,
            set(&[1]),
            set(&[2]),
            candidates(&[1, 2, 3, 4]),
            vec![3, 4],
        ),
        (5, set(&[]), set(&[]), candidates(&[7]), vec![7]),
        (0, set(&[]), set(&[]), candidates(&[1, 2]), vec![]),
    ];
    for (free, woken, declined, candidates, expected) in cases {
        let got: Vec<i64> = plan_wakes(free, &woken, &declined, candidates)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            got, expected,
            "{free} free, woken {woken:?}, declined {declined:?}"
        );
    }
    for (cap, running, reserved, free) in [
        (2, 0, 0, 2),
        (2, 1, 0, 1),
        (2, 1, 1, 0),
        (2, 3, 0, 0),
        (64, 10, 5, 49),
    ] {
        assert_eq!(
            free_slots(cap, running, reserved),
            free,
            "{cap} {running} {reserved}"
        );
    }
}

#[test]
fn outcomes_become_terminal_statuses_with_stable_reasons() {
    let cases = [
        (Ok(()), TargetStatus::Applied, None),
        (
            Err(TargetFailure::new(FailureReason::LeaseExpired)),
            TargetStatus::Failed,
            Some("lease_expired"),
        ),
        (
            Err(TargetFailure::new(FailureReason::Interrupted)),
            TargetStatus::Failed,
            Some("interrupted"),
        ),
        (
            Err(TargetFailure::with_detail(
                FailureReason::ProviderError,
                "machine m-1 not found",
            )),
            TargetStatus::Failed,
            Some("provider_error: machine m-1 not found"),
        ),
        (
            Err(TargetFailure::with_detail(
                FailureReason::ProviderUnavailable,
                "down",
            )),
            TargetStatus::Failed,
            Some("provider_unavailable: down"),
        ),
        (
            Err(TargetFailure::with_detail(
                FailureReason::StartFailed,
                "disk",
            )),
            TargetStatus::Failed,
            Some("could not start: disk"),
        ),
    ];
    for (result, status, reason) in cases {
        assert_eq!(
            outcome_status(&result),
            (status, reason.map(str::to_string)),
            "{result:?}"
        );
    }
    for (skip, text) in [
        (SkipReason::InstanceDestroyed, "instance_destroyed"),
        (SkipReason::InstanceNotRunning, "instance_not_running"),
        (SkipReason::InstancePinned, "instance_pinned"),
        (SkipReason::AlreadyOnTag, "already_on_tag"),
    ] {
        assert_eq!(skip.as_str(), text);
    }
    assert_eq!(target_task_key("i-1", 7), "instance/i-1/target/7");
}

#[test]
fn promotion_completes_finished_stages_and_then_the_action() {
    let stage = |index, scheduled, open: u64| StageProgress {
        index,
        scheduled,
        open: open > 0,
    };
    let cases = [
        (
            vec![stage(0, true, 1)],
            Promotion {
                stages: vec![],
                action: false,
            },
        ),
        (
            vec![stage(0, true, 0)],
            Promotion {
                stages: vec![0],
                action: true,
            },
        ),
        (
            vec![stage(0, true, 0), stage(1, true, 3)],
            Promotion {
                stages: vec![0],
                action: false,
            },
        ),
        (
            vec![stage(0, false, 0), stage(1, true, 0)],
            Promotion {
                stages: vec![1],
                action: true,
            },
        ),
        (
            // A cancelled stage is not completed, but its targets are terminal.
            vec![stage(0, true, 0), stage(1, false, 0)],
            Promotion {
                stages: vec![0],
                action: true,
            },
        ),
        (
            vec![stage(0, false, 2)],
            Promotion {
                stages: vec![],
                action: false,
            },
        ),
    ];
    for (stages, expected) in cases {
        assert_eq!(promotion(&stages), expected, "{stages:?}");
    }
}

#[test]
fn bad_times_are_invalid_run_at() {
    assert_eq!(
        parse_run_at("2024-05-01T12:00:00.123Z"),
        Ok(1_714_564_800_123)
    );
    for bad in [
        "",
        "tomorrow",
        "2024-05-01",
        "2023-02-29T00:00:00Z",
        "2024-05-01T12:00:00Zjunk",
    ] {
        assert!(
            matches!(
                parse_run_at(bad),
                Err(ActionError::InvalidArgument {
                    field: "run_at",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}
