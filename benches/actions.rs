//! Bench of scheduled admin actions: the SPEC §11 figure "scheduled action over 10,000 targets
//! with a zero-latency provider: scheduled ≤ 1 s, all targets terminal ≤ 5 s at cap 64, cap
//! never exceeded".
//!
//! Run with `cargo bench --bench actions`. The 10,000-target run happens once, outside
//! criterion's sampling, and prints
//! `FIGURE action_10k schedule=… all_terminal=… peak_slots=… peak_provider=… (target …)`:
//! - creating the 10,000 instances (provision + wait until running; 100 instances per org, so
//!   100 registry objects, provisioned in turn per org) is timed separately and printed as an `INFO` line; it is not part
//!   of the figure;
//! - `schedule` is one `Actions::schedule` call (validation, reading the 10,000 instances,
//!   one fleet transaction inserting the action and its targets);
//! - `all_terminal` runs from the end of `schedule` until the action is `completed` (polled
//!   every 5 ms through the action's summary), i.e. every instance was told, fired its alarm,
//!   claimed a slot (or waited for one and was woken), restarted its machine through the sim
//!   provider and reported the outcome;
//! - `peak_slots` is the most fleet slots in use seen while polling, `peak_provider` the sim
//!   provider's recorded peak of concurrent mutating calls (reset just before scheduling).
//!
//! Criterion then measures `actions/restart_100`: schedule a restart of 100 of those instances
//! and wait until it completed.
//!
//! Everything runs on one 2-worker multi-thread tokio runtime built before any measurement, the
//! sim provider with no latency, `fleet.max-concurrent = 64` and a provider limiter of 64.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed bench set-up is a failed bench

mod common;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use clawdo::Runtime;
use clawdo::actors::fleet::{ActionKind, ActionStatus, FleetConfig, ScheduleSpec};
use clawdo::actors::instance::{InstanceError, Status};
use clawdo::actors::provider::LimiterConfig;
use clawdo::instances::{Caller, ProvisionSpec};
use criterion::{Criterion, criterion_group, criterion_main};
use futures::StreamExt as _;

/// Targets of the big action (`CLAWDO_BENCH_TARGETS` overrides, for quick looks).
fn targets() -> usize {
    std::env::var("CLAWDO_BENCH_TARGETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}
const CAP: usize = 64;

fn restart(ids: &[String]) -> ScheduleSpec {
    ScheduleSpec {
        kind: ActionKind::ScheduledRestart,
        image_tag: None,
        pin: None,
        run_at: None,
        lease: None,
        targets: ids.to_vec(),
        stages: Vec::new(),
    }
}

async fn build(dir: &std::path::Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .fleet_config(FleetConfig {
            max_concurrent: NonZeroUsize::new(CAP).unwrap(),
            ..FleetConfig::default()
        })
        .provider_limits(LimiterConfig {
            max_in_flight: NonZeroUsize::new(CAP).unwrap(),
            rate_per_sec: None,
        })
        .build()
        .await
        .unwrap()
}

async fn create(rt: &Runtime, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("bench-{i:05}")).collect();
    let api = rt.instances();
    // 100 instances per org (the default org limit): 10,000 instances make 100 registry
    // objects, not 10,000. An owner admits one fresh provision at a time, so each org's
    // instances are provisioned in turn (retrying while the previous one completes) and the
    // orgs in parallel.
    futures::stream::iter(ids.chunks(100).map(<[String]>::to_vec).enumerate())
        .map(|(org, chunk)| {
            let api = api.clone();
            async move {
                for id in chunk {
                    loop {
                        let spec = ProvisionSpec {
                            owner: format!("org:{org}"),
                            image_tag: Some("claw:1".into()),
                            pinned: false,
                            instance_id: Some(id.clone()),
                            idempotency_key: Some(id.clone()),
                        };
                        match api.provision(&Caller::Admin, spec).await {
                            Ok(_) => break,
                            Err(
                                InstanceError::ProvisionInProgress { .. }
                                | InstanceError::ProvisionCompletionPending { .. },
                            ) => tokio::time::sleep(Duration::from_millis(2)).await,
                            Err(e) => panic!("provision {id}: {e}"),
                        }
                    }
                }
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running = futures::stream::iter(ids.clone())
            .map(|id| {
                let api = api.clone();
                async move { api.get(&Caller::Admin, &id).await.unwrap().status }
            })
            .buffer_unordered(256)
            .filter(|s| std::future::ready(*s == Status::Running))
            .count()
            .await;
        if running == n {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "only {running}/{n} instances started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Schedule a restart of `ids` now and wait until it completed. Returns (schedule time, time
/// from then until every target was terminal, most slots seen in use).
async fn run_action(rt: &Runtime, ids: &[String]) -> (Duration, Duration, u64) {
    let actions = rt.actions();
    let started = Instant::now();
    let action = actions.schedule("bench", restart(ids)).await.unwrap();
    let scheduled = started.elapsed();
    let after = Instant::now();
    let deadline = after + Duration::from_secs(120);
    let mut peak = 0;
    let mut last_report = Instant::now();
    loop {
        peak = peak.max(rt.stats().fleet.slots_in_use);
        if ids.len() >= 1_000 && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            if let Some(s) = actions.list(Some(action.id + 1), 1).await.unwrap().pop() {
                println!(
                    "INFO action progress t={:.1?} applied={} running={} pending={} refused_claims={}",
                    after.elapsed(),
                    s.counts.applied,
                    s.counts.running,
                    s.counts.pending,
                    rt.stats().fleet.claims_refused
                );
            }
        }
        let summary = actions
            .list(Some(action.id + 1), 1)
            .await
            .unwrap()
            .pop()
            .unwrap();
        if summary.status == ActionStatus::Completed {
            assert_eq!(summary.counts.applied as usize, ids.len(), "{summary:?}");
            return (scheduled, after.elapsed(), peak);
        }
        assert!(
            Instant::now() < deadline,
            "the action did not finish: {summary:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn verdict(ok: bool, factor: f64) -> String {
    if ok {
        "met".into()
    } else {
        format!("MISSED by {factor:.1}x")
    }
}

fn action_benches(c: &mut Criterion) {
    let tokio = common::tokio_runtime();
    let dir = tempfile::tempdir().unwrap();
    let n = targets();
    let (rt, ids) = tokio.block_on(async {
        let rt = build(dir.path()).await;
        let started = Instant::now();
        let ids = create(&rt, n).await;
        println!(
            "INFO action_{n}/setup created and started {n} instances in {:.1?} ({:.2} ms each)",
            started.elapsed(),
            started.elapsed().as_secs_f64() * 1e3 / n as f64
        );
        (rt, ids)
    });
    let sim = rt.sim().unwrap().clone();
    sim.reset_peak();
    let (scheduled, terminal, peak_slots) = tokio.block_on(run_action(&rt, &ids));
    let peak_provider = sim.peak_concurrent_mutations();
    let ok = scheduled <= Duration::from_secs(1)
        && terminal <= Duration::from_secs(5)
        && peak_slots <= CAP as u64
        && peak_provider <= CAP;
    let factor = (scheduled.as_secs_f64() / 1.0).max(terminal.as_secs_f64() / 5.0);
    println!(
        "FIGURE action_{n} schedule={scheduled:.2?} all_terminal={terminal:.2?} \
         peak_slots={peak_slots} peak_provider={peak_provider} cap={CAP} targets={n} \
         (target schedule<=1s, all terminal<=5s, peak<=cap: {})",
        verdict(ok, factor)
    );

    let mut group = c.benchmark_group("actions");
    group.sample_size(10);
    group.bench_function("restart_100", |b| {
        b.iter_custom(|iters| {
            tokio.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let start = usize::try_from(i).unwrap_or(0) * 100 % (n - 100);
                    let (s, t, _) = run_action(&rt, &ids[start..start + 100]).await;
                    total += s + t;
                }
                total
            })
        });
    });
    group.finish();
    tokio
        .block_on(rt.shutdown(Duration::from_secs(30)))
        .unwrap();
}

criterion_group!(benches, action_benches);
criterion_main!(benches);
