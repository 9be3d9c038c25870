//! Scheduled admin actions through the embedding API, against the sim provider on a manual
//! clock: exact `run_at`, the cap under fault injection (checked against the sim provider's
//! recorded peak), lease expiry of a hung call, racing claim/cancel/complete, cancel, run-now
//! with its cap check and audit row, interactive-pressure deferral, and bad input writing
//! nothing.
//!
//! Deadlines are passed by moving the manual clock and settling alarms; the only waits are
//! bounded polls for real work (provider tasks, background notices) to finish.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::num::NonZeroUsize;
use std::time::Duration;

use clawdo::actors::ManualClock;
use clawdo::actors::fleet::{
    ActionDetail, ActionError, ActionKind, ActionStatus, ActionSummary, ClaimReply, FLEET_ID,
    Fleet, FleetConfig, FleetReply, FleetRequest, MAX_TARGETS, ScheduleSpec, StageSpec,
    TargetStatus, parse_run_at,
};
use clawdo::actors::instance::Status;
use clawdo::actors::provider::sim::SimConfig;
use clawdo::actors::provider::{LimiterConfig, Priority};
use clawdo::instances::Caller;
use clawdo::{Runtime, RuntimeBuilder};
use common::runtime::{
    T0, advance, eventually_view, hang_restart, provision_running, set_sim, set_time, start_with,
    started_events,
};
use common::{IN_PROCESS, eventually};
use tempfile::TempDir;

const HOUR: i64 = 3_600_000;

fn fleet(cap: usize) -> FleetConfig {
    FleetConfig {
        max_concurrent: NonZeroUsize::new(cap).unwrap(),
        ..FleetConfig::default()
    }
}

fn restart(targets: &[String], run_at: Option<i64>) -> ScheduleSpec {
    ScheduleSpec {
        kind: ActionKind::ScheduledRestart,
        image_tag: None,
        pin: None,
        run_at,
        lease: None,
        targets: targets.to_vec(),
        stages: Vec::new(),
    }
}

/// A runtime (see [`start_with`]) under the fleet cap `cap` with `n` running instances
/// `<prefix>-<i>`; returns the data directory (keep it), the clock, the runtime and the ids.
async fn running(
    cap: usize,
    prefix: &str,
    n: usize,
) -> (TempDir, ManualClock, Runtime, Vec<String>) {
    running_with(cap, prefix, n, |b| b).await
}

/// Like [`running`], with the builder further adjusted by `configure`.
async fn running_with(
    cap: usize,
    prefix: &str,
    n: usize,
    configure: impl FnOnce(RuntimeBuilder) -> RuntimeBuilder,
) -> (TempDir, ManualClock, Runtime, Vec<String>) {
    let (dir, clock, rt) = start_with(|b| configure(b.fleet_config(fleet(cap)))).await;
    let ids = provision_running(&rt, prefix, n).await;
    (dir, clock, rt, ids)
}

/// Schedules `spec` as `admin`; it must be accepted.
async fn schedule(rt: &Runtime, spec: ScheduleSpec) -> ActionSummary {
    rt.actions().schedule("admin", spec).await.unwrap()
}

/// Provider limits of `max_in_flight` calls at once, no rate limit.
fn in_flight(max_in_flight: usize) -> LimiterConfig {
    LimiterConfig {
        max_in_flight: NonZeroUsize::new(max_in_flight).unwrap(),
        rate_per_sec: None,
    }
}

async fn detail(rt: &Runtime, id: i64) -> ActionDetail {
    rt.actions().get(id).await.unwrap()
}

/// Wait until action `id` is terminal (completed or cancelled with nothing running).
async fn finished(rt: &Runtime, id: i64) -> ActionDetail {
    eventually("the action to finish", || async {
        let d = detail(rt, id).await;
        (matches!(
            d.action.status,
            ActionStatus::Completed | ActionStatus::Cancelled
        ) && d.action.counts.running == 0)
            .then_some(d)
    })
    .await
}

/// The action's counters agree with its targets' statuses.
fn assert_consistent(d: &ActionDetail) {
    let n = |s: TargetStatus| d.targets.iter().filter(|t| t.status == s).count() as u64;
    let c = d.action.counts;
    assert_eq!(c.total, d.targets.len() as u64);
    assert_eq!(c.applied, n(TargetStatus::Applied), "{d:#?}");
    assert_eq!(c.skipped, n(TargetStatus::Skipped), "{d:#?}");
    assert_eq!(c.failed, n(TargetStatus::Failed), "{d:#?}");
    assert_eq!(c.cancelled, n(TargetStatus::Cancelled), "{d:#?}");
    assert_eq!(c.pending, n(TargetStatus::Pending), "{d:#?}");
    assert_eq!(c.running, n(TargetStatus::Running), "{d:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_start_exactly_at_run_at_not_at_a_reconcile_tick() {
    let (_tmp, clock, rt, ids) = running(2, "exact", 3).await;
    // Not on a reconcile boundary (reconcile runs every 5 min).
    let run_at = T0 + HOUR + 123_457;
    let action = schedule(&rt, restart(&ids, Some(run_at))).await;
    assert_eq!(action.status, ActionStatus::Scheduled);
    assert_eq!(action.counts.pending, 3);
    // Every instance shows the upcoming action once told.
    for id in &ids {
        eventually_view(&rt, "the banner", id, |v| {
            v.upcoming_action
                .as_ref()
                .is_some_and(|u| u.action_id == action.id && u.run_at == run_at)
        })
        .await;
    }
    // One millisecond early, after passing every reconcile tick on the way: nothing starts.
    let mut t = T0;
    while t < run_at - 1 {
        t = (t + 300_000).min(run_at - 1);
        set_time(&rt, &clock, t).await;
    }
    let d = detail(&rt, action.id).await;
    assert_eq!(d.action.status, ActionStatus::Scheduled, "{d:#?}");
    assert!(d.targets.iter().all(|t| t.status == TargetStatus::Pending));
    set_time(&rt, &clock, run_at).await;
    let d = finished(&rt, action.id).await;
    assert_eq!(d.action.status, ActionStatus::Completed);
    assert_eq!(d.action.counts.applied, 3, "{d:#?}");
    assert_consistent(&d);
    for target in &d.targets {
        assert_eq!(
            target.slot_claimed_at,
            Some(run_at),
            "claimed at run_at exactly"
        );
    }
    for id in &ids {
        let v = rt.instances().get(&Caller::Admin, id).await.unwrap();
        assert_eq!(v.status, Status::Running);
        assert_eq!(v.upcoming_action, None, "the banner is gone once applied");
        assert_eq!(started_events(&rt, id).await, 1);
    }
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_is_never_exceeded_under_errors_hangs_and_latency() {
    let cap = 2;
    let (_tmp, clock, rt, ids) = running(cap, "cap", 12).await;
    let sim = rt.sim().unwrap().clone();
    sim.reset_peak();
    sim.set_config(SimConfig {
        latency_ms: 15,
        failure_rate: 0.25,
        hang_rate: 0.15,
        seed: 7,
    })
    .unwrap();
    let mut spec = restart(&ids, Some(T0));
    spec.lease = Some(Duration::from_secs(60));
    let action = schedule(&rt, spec).await;
    let mut peak_slots = 0;
    let mut rounds = 0;
    let d = loop {
        // Let real work run, watching the slots, then pass the lease so hung runs are reaped.
        for _ in 0..40 {
            peak_slots = peak_slots.max(rt.stats().fleet.slots_in_use);
            let d = detail(&rt, action.id).await;
            assert!(d.action.counts.running <= cap as u64, "{d:#?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let d = detail(&rt, action.id).await;
        if d.action.status == ActionStatus::Completed {
            break d;
        }
        rounds += 1;
        assert!(rounds < 60, "the action never finished: {d:#?}");
        advance(&rt, &clock, Duration::from_secs(61)).await;
    };
    assert_consistent(&d);
    assert_eq!(d.action.counts.terminal(), 12);
    assert!(peak_slots <= cap as u64);
    let peak = sim.peak_concurrent_mutations();
    assert!(
        peak >= 1 && peak <= cap,
        "the provider saw {peak} concurrent mutations"
    );
    assert!(
        d.targets
            .iter()
            .any(|t| t.failure_reason.as_deref() == Some("lease_expired"))
            || d.action.counts.failed > 0,
        "faults were injected: {d:#?}"
    );
    for id in &ids {
        assert!(started_events(&rt, id).await <= 1, "{id} started twice");
    }
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_frees_the_slot_of_a_hung_call_and_the_next_target_runs() {
    let (_tmp, clock, rt, ids) = running(1, "hung", 2).await;
    let mut spec = restart(&ids, None);
    spec.lease = Some(Duration::from_secs(120));
    // The first target holds the only slot; its call hangs at the provider.
    let action = hang_restart(
        rt.sim().unwrap(),
        IN_PROCESS,
        "the hung call",
        schedule(&rt, spec),
    )
    .await;
    let d = detail(&rt, action.id).await;
    assert_eq!(d.action.counts.running, 1, "{d:#?}");
    assert_eq!(d.action.counts.pending, 1, "the cap holds the second back");
    set_sim(&rt, SimConfig::default());
    advance(&rt, &clock, Duration::from_secs(121)).await;
    let d = finished(&rt, action.id).await;
    assert_consistent(&d);
    // Whichever target claimed the slot first hung and was reaped; the other then ran.
    let hung: Vec<_> = d
        .targets
        .iter()
        .filter(|t| t.status == TargetStatus::Failed)
        .collect();
    assert_eq!(hung.len(), 1, "{d:#?}");
    assert_eq!(hung[0].failure_reason.as_deref(), Some("lease_expired"));
    assert_eq!(d.action.counts.applied, 1, "{d:#?}");
    assert_eq!(rt.stats().fleet.slots_in_use, 0);
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claim_cancel_and_complete_on_one_target_end_consistent() {
    let (_tmp, clock, rt, ids) = running(4, "race", 1).await;
    let id = ids[0].clone();
    let host = rt.host().clone();
    let api = rt.actions();
    for round in 0..12 {
        let action = schedule(&rt, restart(&ids, None)).await;
        let target_id = detail(&rt, action.id).await.targets[0].id;
        let fleet = host.get::<Fleet>(FLEET_ID).unwrap();
        let claim = fleet.call(FleetRequest::Claim {
            target_id,
            instance_id: id.clone(),
        });
        let cancel = api.cancel_target(action.id, target_id);
        let complete = fleet.call(FleetRequest::Outcome {
            target_id,
            result: Ok(()),
        });
        let cancel_action = api.cancel(action.id);
        let (claim, cancel, _, _) = if round % 2 == 0 {
            tokio::join!(claim, cancel, complete, cancel_action)
        } else {
            let (complete, cancel_action, cancel, claim) =
                tokio::join!(complete, cancel_action, cancel, claim);
            (claim, cancel, complete, cancel_action)
        };
        let won = matches!(
            claim.unwrap(),
            Ok(FleetReply::Claim(ClaimReply::Won { .. }))
        );
        // A target is either claimed or cancelled, never both.
        if won {
            assert!(cancel.is_err(), "round {round}: cancelled a claimed target");
        }
        // Whatever still runs (the test's own claim has no task) ends at its lease.
        if detail(&rt, action.id).await.action.counts.running > 0 {
            eventually("the instance's run", || async {
                let d = detail(&rt, action.id).await;
                let v = rt.instances().get(&Caller::Admin, &id).await.unwrap();
                (v.operation.is_none() || d.action.counts.running == 0).then_some(())
            })
            .await;
            advance(&rt, &clock, Duration::from_secs(1_201)).await;
        }
        let d = finished(&rt, action.id).await;
        assert_consistent(&d);
        assert!(d.targets[0].status.is_terminal(), "round {round}: {d:#?}");
        assert_eq!(rt.stats().fleet.slots_in_use, 0);
        // Let the instance settle before the next round schedules it again.
        eventually_view(&rt, "the instance to settle", &id, |v| {
            v.operation.is_none() && v.upcoming_action.is_none()
        })
        .await;
        if rt
            .instances()
            .get(&Caller::Admin, &id)
            .await
            .unwrap()
            .status
            != Status::Running
        {
            rt.instances().start(&Caller::Admin, &id).await.unwrap();
            eventually_view(&rt, "restarted", &id, |v| v.status == Status::Running).await;
        }
    }
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_an_action_or_one_target_and_the_banner_goes() {
    let (_tmp, clock, rt, ids) = running(2, "cancel", 3).await;
    let actions = rt.actions();
    let action = schedule(&rt, restart(&ids, Some(T0 + HOUR))).await;
    let d = detail(&rt, action.id).await;
    let banner = |id: String| {
        let rt = &rt;
        async move {
            rt.instances()
                .get(&Caller::Admin, &id)
                .await
                .unwrap()
                .upcoming_action
        }
    };
    for id in &ids {
        eventually("the banner", || async { banner(id.clone()).await }).await;
    }
    let one = actions
        .cancel_target(action.id, d.targets[0].id)
        .await
        .unwrap();
    assert_eq!(one.status, TargetStatus::Cancelled);
    eventually("the banner to go", || async {
        banner(ids[0].clone()).await.is_none().then_some(())
    })
    .await;
    assert!(matches!(
        actions.cancel_target(action.id, d.targets[0].id).await,
        Err(ActionError::WrongStatus { .. })
    ));
    let summary = actions.cancel(action.id).await.unwrap();
    assert_eq!(summary.status, ActionStatus::Cancelled);
    assert_eq!(summary.counts.cancelled, 3);
    for id in &ids {
        eventually("the banners to go", || async {
            banner(id.clone()).await.is_none().then_some(())
        })
        .await;
    }
    assert!(matches!(
        actions.cancel(action.id).await,
        Err(ActionError::WrongStatus { .. })
    ));
    // Nothing runs at the old run_at.
    set_time(&rt, &clock, T0 + HOUR).await;
    let d = detail(&rt, action.id).await;
    assert_consistent(&d);
    assert!(
        d.targets
            .iter()
            .all(|t| t.status == TargetStatus::Cancelled)
    );
    // All targets cancelled one by one: the promotion sweep completes the action.
    let action = schedule(&rt, restart(&ids, Some(T0 + 2 * HOUR))).await;
    for t in detail(&rt, action.id).await.targets {
        actions.cancel_target(action.id, t.id).await.unwrap();
    }
    assert_eq!(
        detail(&rt, action.id).await.action.status,
        ActionStatus::Completed
    );
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_run_in_order_and_version_changes_skip_pinned_instances() {
    let (_tmp, clock, rt, ids) = running(4, "stage", 4).await;
    rt.instances()
        .change_version(&Caller::Admin, &ids[3], "claw:1", Some(true))
        .await
        .unwrap();
    eventually_view(&rt, "pinned", &ids[3], |v| {
        v.pinned && v.status == Status::Running
    })
    .await;
    let spec = ScheduleSpec {
        kind: ActionKind::VersionChange,
        image_tag: Some("claw:2".into()),
        pin: None,
        run_at: Some(T0 + 1_000),
        lease: None,
        targets: ids.clone(),
        stages: vec![
            StageSpec {
                name: "canary".into(),
                count: 1,
                run_at: None,
            },
            StageSpec {
                name: "rest".into(),
                count: 3,
                run_at: None,
            },
        ],
    };
    let action = schedule(&rt, spec).await;
    set_time(&rt, &clock, T0 + 1_000).await;
    let d = finished(&rt, action.id).await;
    assert_consistent(&d);
    assert_eq!(d.stages.len(), 2);
    assert!(d.stages.iter().all(|s| s.status == "completed"), "{d:#?}");
    let canary = &d.targets[0];
    assert_eq!(canary.status, TargetStatus::Applied);
    for t in &d.targets[1..3] {
        assert_eq!(t.status, TargetStatus::Applied);
        assert!(
            t.slot_claimed_at >= canary.completed_at,
            "the second stage waits for the first: {d:#?}"
        );
    }
    assert_eq!(d.targets[3].status, TargetStatus::Skipped);
    assert_eq!(
        d.targets[3].failure_reason.as_deref(),
        Some("instance_pinned")
    );
    for id in &ids[..3] {
        let v = rt.instances().get(&Caller::Admin, id).await.unwrap();
        assert_eq!(v.image_tag, "claw:2");
    }
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_honours_the_cap_and_force_bypasses_it_with_an_audit_row() {
    let (_tmp, clock, rt, ids) = running(1, "now", 2).await;
    let busy = hang_restart(
        rt.sim().unwrap(),
        IN_PROCESS,
        "the hung call",
        schedule(&rt, restart(&ids[..1], None)),
    )
    .await;
    set_sim(&rt, SimConfig::default());
    let later = schedule(&rt, restart(&ids[1..], Some(T0 + HOUR))).await;
    match rt
        .actions()
        .run_now("ops@admin", later.id, None, false)
        .await
    {
        Err(ActionError::CapacityFull {
            in_use,
            cap,
            retry_after,
        }) => {
            assert_eq!((in_use, cap), (1, 1));
            assert!(retry_after >= Duration::from_secs(1));
        }
        other => panic!("expected CapacityFull, got {other:?}"),
    }
    assert!(rt.actions().audit(10).await.unwrap().is_empty());
    let ran = rt
        .actions()
        .run_now("ops@admin", later.id, None, true)
        .await
        .unwrap();
    assert_eq!((ran.targets, ran.forced), (1, true));
    let d = finished(&rt, later.id).await;
    assert_eq!(d.targets[0].status, TargetStatus::Applied, "{d:#?}");
    let audit = rt.actions().audit(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "ops@admin");
    assert_eq!(audit[0].what, "run_now_forced");
    assert_eq!(audit[0].at, T0);
    assert!(audit[0].detail.contains(&format!("action {}", later.id)));
    // The hung one still holds its slot; its lease frees it.
    assert_eq!(detail(&rt, busy.id).await.action.counts.running, 1);
    advance(&rt, &clock, Duration::from_secs(1_201)).await;
    finished(&rt, busy.id).await;
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_pressure_defers_claims_but_never_past_the_bound() {
    let (_tmp, clock, rt, ids) =
        running_with(2, "pressure", 1, |b| b.provider_limits(in_flight(1))).await;
    let limiter = rt.provider().limiter().clone();
    // Saturate the limiter and queue an interactive caller behind it.
    let held = limiter.acquire(Priority::Interactive).await;
    let waiter = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let _permit = limiter.acquire(Priority::Interactive).await;
        })
    };
    eventually("an interactive waiter", || async {
        limiter.interactive_waiting().then_some(())
    })
    .await;
    let action = schedule(&rt, restart(&ids, None)).await;
    let deferred = |want: i64| {
        let rt = &rt;
        async move {
            let d = detail(rt, action.id).await;
            (d.targets[0].deferred_ms == want && d.targets[0].status == TargetStatus::Pending)
                .then_some(())
        }
    };
    eventually("the first deferral", || deferred(30_000)).await;
    for step in 2..=20 {
        advance(&rt, &clock, Duration::from_secs(30)).await;
        eventually("the next deferral", || deferred(step * 30_000)).await;
    }
    assert!(rt.stats().fleet.deferred_claims >= 20);
    // Ten minutes deferred in total: the claim goes through although users still wait.
    advance(&rt, &clock, Duration::from_secs(30)).await;
    assert!(limiter.interactive_waiting());
    let d = detail(&rt, action.id).await;
    assert_eq!(d.targets[0].status, TargetStatus::Running, "{d:#?}");
    assert_eq!(d.targets[0].deferred_ms, 600_000);
    drop(held);
    waiter.await.unwrap();
    let d = finished(&rt, action.id).await;
    assert_eq!(d.targets[0].status, TargetStatus::Applied);
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_calls_during_a_bulk_action_are_served_first() {
    // Two provider slots and a fleet cap of four: scheduled calls hold both slots and more
    // scheduled calls queue behind them at the limiter.
    let (_tmp, clock, rt, ids) =
        running_with(4, "bulk", 10, |b| b.provider_limits(in_flight(2))).await;
    let sim = rt.sim().unwrap().clone();
    sim.set_config(SimConfig {
        latency_ms: 40,
        ..SimConfig::default()
    })
    .unwrap();
    let action = schedule(&rt, restart(&ids, None)).await;
    let limiter = rt.provider().limiter().clone();
    eventually(
        "scheduled calls to hold the provider with more queued",
        || async {
            let stats = limiter.stats();
            (stats.in_flight == 2 && stats.waiting_scheduled > 0).then_some(())
        },
    )
    .await;
    // Interactive calls arriving now go before every queued scheduled call: the limiter
    // counts any scheduled admission made while an interactive caller waited.
    let before = limiter.stats();
    let mut waits = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let permit = limiter.acquire(Priority::Interactive).await;
        waits.push(started.elapsed());
        drop(permit);
    }
    let after = limiter.stats();
    assert_eq!(after.admitted_interactive - before.admitted_interactive, 5);
    assert_eq!(after.scheduled_ahead_of_interactive, 0, "{after:?}");
    eprintln!("interactive waits during the bulk action: {waits:?}");
    assert!(after.admitted_scheduled > 0);
    // Finish the bulk action (claims deferred by the pressure above resume on the clock).
    let mut rounds = 0;
    loop {
        let d = detail(&rt, action.id).await;
        if d.action.status == ActionStatus::Completed {
            assert_eq!(d.action.counts.applied, 10, "{d:#?}");
            break;
        }
        rounds += 1;
        assert!(rounds < 400, "{d:#?}");
        advance(&rt, &clock, Duration::from_secs(30)).await;
        // Claims made by those alarms run their provider calls; wait for their outcomes.
        eventually("the claimed targets to finish", || async {
            (detail(&rt, action.id).await.action.counts.running == 0).then_some(())
        })
        .await;
    }
    assert!(sim.peak_concurrent_mutations() <= 2);
    assert_eq!(limiter.stats().scheduled_ahead_of_interactive, 0);
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_writes_nothing() {
    let (_tmp, _clock, rt, ids) = running(2, "bad", 2).await;
    let actions = rt.actions();
    fn invalid<T: std::fmt::Debug>(r: Result<T, ActionError>, field: &str) {
        match r {
            Err(ActionError::InvalidArgument { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }
    invalid(
        actions.schedule("admin", restart(&[], None)).await,
        "targets",
    );
    let many: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("x-{i}")).collect();
    invalid(
        actions.schedule("admin", restart(&many, None)).await,
        "targets",
    );
    invalid(
        actions
            .schedule("admin", restart(&["bad id!".to_string()], None))
            .await,
        "targets",
    );
    let mut bad_tag = restart(&ids, None);
    bad_tag.kind = ActionKind::VersionChange;
    bad_tag.image_tag = Some("not a tag".into());
    invalid(
        actions.schedule("admin", bad_tag.clone()).await,
        "image_tag",
    );
    bad_tag.image_tag = None;
    invalid(actions.schedule("admin", bad_tag).await, "image_tag");
    let mut restart_tag = restart(&ids, None);
    restart_tag.image_tag = Some("claw:2".into());
    invalid(actions.schedule("admin", restart_tag).await, "image_tag");
    let mut lease = restart(&ids, None);
    lease.lease = Some(Duration::ZERO);
    invalid(actions.schedule("admin", lease).await, "lease");
    invalid(parse_run_at("next tuesday").map(|_| ()), "run_at");
    let unknown = vec![ids[0].clone(), "nobody-here".to_string()];
    assert_eq!(
        actions.schedule("admin", restart(&unknown, None)).await,
        Err(ActionError::InstanceNotFound("nobody-here".into()))
    );
    assert!(
        !rt.host()
            .exists::<clawdo::actors::instance::Instance>("nobody-here")
            .await
            .unwrap(),
        "no object was created for the unknown id"
    );
    assert!(
        actions.list(None, 100).await.unwrap().is_empty(),
        "nothing written"
    );
    // A conflicting schedule is refused whole.
    let first = schedule(&rt, restart(&ids[..1], Some(T0 + HOUR))).await;
    assert_eq!(
        actions
            .schedule("admin", restart(&ids, Some(T0 + HOUR)))
            .await,
        Err(ActionError::ConflictPendingAction {
            instance_id: ids[0].clone(),
            action_id: first.id
        })
    );
    assert_eq!(actions.list(None, 100).await.unwrap().len(), 1);
    assert!(matches!(
        actions.get(first.id + 1).await,
        Err(ActionError::NotFound(_))
    ));
    // Destroyed instances are dropped; all destroyed is refused.
    rt.instances()
        .destroy(&Caller::Admin, &ids[1])
        .await
        .unwrap();
    eventually_view(&rt, "destroyed", &ids[1], |v| v.status == Status::Destroyed).await;
    assert_eq!(
        actions.schedule("admin", restart(&ids[1..], None)).await,
        Err(ActionError::AllDestroyed)
    );
    assert_eq!(actions.list(None, 100).await.unwrap().len(), 1);
    actions.cancel(first.id).await.unwrap();
    let kept = schedule(&rt, restart(&ids, Some(T0 + HOUR))).await;
    assert_eq!(kept.counts.total, 1, "the destroyed instance was dropped");
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_instance_applies_its_target_when_its_own_operation_ends() {
    let (_tmp, clock, rt, ids) = running(1, "busy", 1).await;
    // The user's own restart hangs: the instance is busy until its operation lease ends.
    hang_restart(
        rt.sim().unwrap(),
        IN_PROCESS,
        "the user's hung call",
        async {
            rt.instances()
                .restart(&Caller::Admin, &ids[0])
                .await
                .unwrap()
        },
    )
    .await;
    let action = schedule(&rt, restart(&ids, None)).await;
    eventually_view(&rt, "the banner", &ids[0], |v| v.upcoming_action.is_some()).await;
    rt.host().settle_alarms().await.unwrap();
    let d = detail(&rt, action.id).await;
    assert_eq!(
        d.targets[0].status,
        TargetStatus::Pending,
        "busy: not claimed"
    );
    assert_eq!(
        rt.stats().fleet.slots_in_use,
        0,
        "a busy instance holds no slot"
    );
    // The user's operation ends (lease expired: the machine is stopped), the target is tried
    // at once and skipped, since a stopped instance is not restarted by the fleet.
    advance(&rt, &clock, Duration::from_secs(601)).await;
    let d = finished(&rt, action.id).await;
    assert_eq!(d.targets[0].status, TargetStatus::Skipped, "{d:#?}");
    assert_eq!(
        d.targets[0].failure_reason.as_deref(),
        Some("instance_not_running")
    );
    rt.shutdown(Duration::from_secs(10)).await.unwrap();
}
