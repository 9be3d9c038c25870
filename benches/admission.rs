//! Benches of provision admission (SPEC §11 "registry admission").
//!
//! Run with `cargo bench --bench admission`. Each bench prints one line on stdout of the form
//! `FIGURE <name> <figures> (target <target>: met | MISSED by <factor>x)`.
//!
//! - `admission/registry`: the registry's `Begin` alone — the admission decision, its
//!   reservation row, pending route and sweep timer committed in one transaction — on 2,000
//!   resident registries (one per owner), 64 calls in flight. Between timed rounds each
//!   admitted reservation is released (not timed) so the next round admits again. Rounds are
//!   always whole (one admission per owner) and the figure is admissions over timed rounds:
//!   steady-state admissions per second. Target ≥ 20,000/s.
//! - `admission/first_admission`: `Begin` on registries that do not exist yet (a new owner's
//!   first provision): object creation (file, schema) is part of the cost. Reported, no target.
//! - `admission/full_provision`: `Instances::provision` for 2,000 new owners with a
//!   zero-latency sim provider, 64 in flight: calls per second until every call answered
//!   (`provisioning`), and the time until every instance is `running`. Run once, outside
//!   criterion's sampling. Reported against the same target.
//! - `admission/one_owner_race`: 64 concurrent provisions for one owner with distinct keys,
//!   repeated on fresh owners: exactly one winner each round (checked), time per round.
//!
//! All benches share one 2-worker multi-thread tokio runtime; timed calls are issued from tasks
//! spawned on it.

// A bench that panics is a failed bench: unwrap/expect are the right reaction to a broken set-up.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clawdo::Runtime;
use clawdo::actors::HostConfig;
use clawdo::actors::instance::{InstanceError, Status};
use clawdo::actors::registry::{
    BeginOutcome, BeginRequest, Registry, RegistryReply, RegistryRequest,
};
use clawdo::instances::{Caller, ProvisionSpec};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use futures::StreamExt;
use tempfile::TempDir;

/// Registries of `admission/registry`.
const OWNERS: usize = 2_000;
/// Calls in flight.
const IN_FLIGHT: usize = 64;
/// New owners of `admission/full_provision`.
const PROVISIONS: usize = 2_000;
/// Target of SPEC §11, admissions per second.
const TARGET_PER_SEC: f64 = 20_000.0;
/// Longest wait for all instances of `full_provision` to run.
const RUN_WAIT: Duration = Duration::from_secs(120);

struct Fixture {
    runtime: Runtime,
    dir: TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .host_config(HostConfig {
                idle_timeout: Duration::from_secs(3_600),
                ..HostConfig::default()
            })
            .build()
            .await
            .expect("start the runtime");
        Fixture { runtime, dir }
    }

    fn stop(self, tokio: &tokio::runtime::Runtime) {
        tokio
            .block_on(self.runtime.shutdown(Duration::from_secs(120)))
            .expect("shut down");
        drop(self.dir);
    }
}

fn begin(key: String, instance_id: String) -> RegistryRequest {
    RegistryRequest::Begin(BeginRequest {
        idempotency_key: key,
        fingerprint: "image=<default>;pinned=false;id=<generated>".into(),
        instance_id,
    })
}

async fn call(runtime: &Runtime, owner: &str, request: RegistryRequest) -> RegistryReply {
    runtime
        .host()
        .get::<Registry>(owner)
        .expect("valid owner")
        .call(request)
        .await
        .expect("registry call")
        .expect("registry answer")
}

/// Admit one reservation on each of `owners` (64 in flight); returns the time taken and the
/// admitted `(owner, reservation, instance)`.
async fn admit_round(
    runtime: &Runtime,
    owners: &[String],
    round: usize,
) -> (Duration, Vec<(String, u64, String)>) {
    let start = Instant::now();
    let admitted: Vec<(String, u64, String)> = futures::stream::iter(owners.iter().cloned())
        .map(|owner| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let instance = format!("inst-{}-{round}", &owner[5..]);
                match call(&runtime, &owner, begin(format!("r{round}"), instance)).await {
                    RegistryReply::Begun(BeginOutcome::Admitted(r)) => (owner, r.id, r.instance_id),
                    other => panic!("expected an admission, got {other:?}"),
                }
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .map(|joined| joined.expect("admission task"))
        .collect()
        .await;
    (start.elapsed(), admitted)
}

/// Release every admitted reservation (not timed), so the owners can be admitted again.
async fn release(runtime: &Runtime, admitted: Vec<(String, u64, String)>) {
    futures::stream::iter(admitted)
        .map(|(owner, reservation, instance_id)| {
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let fail = RegistryRequest::Fail {
                    reservation,
                    instance_id,
                    infra_may_exist: false,
                    error: "bench".into(),
                };
                call(&runtime, &owner, fail).await;
            })
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|joined| async move { joined.expect("release task") })
        .await;
}

fn verdict(per_sec: f64) -> String {
    if per_sec >= TARGET_PER_SEC {
        "met".to_owned()
    } else {
        format!("MISSED by {:.1}x", TARGET_PER_SEC / per_sec)
    }
}

fn registry_admissions(c: &mut Criterion, tokio: &tokio::runtime::Runtime) {
    let fixture = tokio.block_on(Fixture::start());
    let runtime = fixture.runtime.clone();
    let owners: Vec<String> = (0..OWNERS).map(|i| format!("user:b{i:05}")).collect();
    // First admissions create the registries: measured once, as `first_admission`.
    let (first, admitted) = tokio.block_on(admit_round(&runtime, &owners, 0));
    tokio.block_on(release(&runtime, admitted));
    let first_per_sec = OWNERS as f64 / first.as_secs_f64();
    println!(
        "FIGURE admission/first_admission {first_per_sec:.0}/s n={OWNERS} (new registries; no \
         target of its own)"
    );

    let rounds = Arc::new(Mutex::new((0usize, Duration::ZERO)));
    let mut round = 1;
    let mut group = c.benchmark_group("admission");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("registry", |b| {
        b.iter_custom(|iters| {
            // Whole rounds of one admission per owner (a partial round would time the ramp-up
            // and drain of the 64 in flight rather than the steady state); the time returned
            // is scaled to `iters`.
            let iters = usize::try_from(iters).unwrap_or(usize::MAX);
            let rounds_needed = iters.div_ceil(OWNERS).max(1);
            let mut timed = Duration::ZERO;
            for _ in 0..rounds_needed {
                let (elapsed, admitted) = tokio.block_on(admit_round(&runtime, &owners, round));
                tokio.block_on(release(&runtime, admitted));
                round += 1;
                timed += elapsed;
            }
            let done = rounds_needed * OWNERS;
            let mut totals = rounds.lock().unwrap();
            totals.0 += done;
            totals.1 += timed;
            timed.mul_f64(iters as f64 / done as f64)
        });
    });
    group.finish();
    let (n, timed) = *rounds.lock().unwrap();
    let per_sec = n as f64 / timed.as_secs_f64();
    println!(
        "FIGURE admission/registry {per_sec:.0}/s n={n} owners={OWNERS} in_flight={IN_FLIGHT} \
         (target >=20000/s: {})",
        verdict(per_sec)
    );
    fixture.stop(tokio);
}

fn full_provision(tokio: &tokio::runtime::Runtime) {
    let fixture = tokio.block_on(Fixture::start());
    let runtime = fixture.runtime.clone();
    let api = runtime.instances();
    let start = Instant::now();
    let ids: Vec<String> = tokio.block_on(
        futures::stream::iter(0..PROVISIONS)
            .map(|i| {
                let api = api.clone();
                tokio::spawn(async move {
                    let spec = ProvisionSpec {
                        owner: format!("user:p{i:05}"),
                        idempotency_key: Some("bench".into()),
                        ..ProvisionSpec::default()
                    };
                    let p = api
                        .provision(&Caller::Admin, spec)
                        .await
                        .expect("provision");
                    assert!(p.created);
                    p.instance.id
                })
            })
            .buffer_unordered(IN_FLIGHT)
            .map(|joined| joined.expect("provision task"))
            .collect(),
    );
    let answered = start.elapsed();
    let deadline = Instant::now() + RUN_WAIT;
    let running = tokio.block_on(async {
        let mut running = 0;
        for id in &ids {
            loop {
                let view = api.get(&Caller::Admin, id).await.expect("get");
                if view.status == Status::Running {
                    running += 1;
                    break;
                }
                assert!(
                    !matches!(view.status, Status::Stopped | Status::Destroyed),
                    "{view:?}"
                );
                if Instant::now() > deadline {
                    return running;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        running
    });
    let all_running = start.elapsed();
    let per_sec = PROVISIONS as f64 / answered.as_secs_f64();
    println!(
        "FIGURE admission/full_provision {per_sec:.0}/s answered_in={:.2}s running={running}/{PROVISIONS} \
         all_running_in={:.2}s machines={} (target >=20000/s: {})",
        answered.as_secs_f64(),
        all_running.as_secs_f64(),
        runtime.sim().map(|s| s.machines_created()).unwrap_or(0),
        verdict(per_sec)
    );
    fixture.stop(tokio);
}

fn one_owner_race(c: &mut Criterion, tokio: &tokio::runtime::Runtime) {
    let fixture = tokio.block_on(Fixture::start());
    let api = fixture.runtime.instances();
    let mut owner = 0usize;
    let mut group = c.benchmark_group("admission");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.bench_function("one_owner_race", |b| {
        b.iter(|| {
            owner += 1;
            let name = format!("user:race{owner:06}");
            let results: Vec<Result<bool, InstanceError>> = tokio.block_on(async {
                let calls = (0..64).map(|k| {
                    let api = api.clone();
                    let spec = ProvisionSpec {
                        owner: name.clone(),
                        idempotency_key: Some(format!("k{k}")),
                        ..ProvisionSpec::default()
                    };
                    tokio::spawn(async move {
                        api.provision(&Caller::Admin, spec).await.map(|p| p.created)
                    })
                });
                futures::future::join_all(calls)
                    .await
                    .into_iter()
                    .map(|joined| joined.expect("task"))
                    .collect()
            });
            let winners = results.iter().filter(|r| matches!(r, Ok(true))).count();
            assert_eq!(winners, 1, "{results:?}");
        });
    });
    group.finish();
    println!(
        "FIGURE admission/one_owner_race rounds={owner} exactly_one_winner=every_round \
         (target: exactly one winner among 64: met)"
    );
    fixture.stop(tokio);
}

fn admission_benches(c: &mut Criterion) {
    let tokio = common::tokio_runtime();
    registry_admissions(c, &tokio);
    full_provision(&tokio);
    one_owner_race(c, &tokio);
}

criterion_group!(benches, admission_benches);
criterion_main!(benches);
