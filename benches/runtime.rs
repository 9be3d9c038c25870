//! Benches of the object runtime: the SPEC §11 figures for calls, activation, alarms and memory.
//!
//! Run them all with `cargo bench --bench runtime`, or one with a filter, e.g.
//! `cargo bench --bench runtime -- warm_read`. Each bench prints one line on stdout of the form
//! `FIGURE <name> <figures> (target <target>: met | MISSED by <factor>x)`. Percentiles are
//! computed here from the duration of every single operation of criterion's measured samples
//! (warm-up samples are left out); criterion's own mean per iteration is printed as usual.
//!
//! - `warm_read`: `Get` on one resident counter. Target p50 ≤ 5 µs.
//! - `write_commit`: `Add(1)` on one resident counter, one SQLite commit each. Target p50 ≤ 50 µs.
//! - `cold_activation`: the first call (`Get`) to each of 2,000 existing counters that were all
//!   hibernated (files closed, actors stopped) by the janitor beforehand: open, migrate, load.
//!   The OS page cache is warm; "cold" means cold for the runtime. Re-hibernating between passes
//!   is not timed; the host runs on a manual clock so nothing hibernates during a timed pass.
//!   Target p99 ≤ 1 ms.
//! - `rss_100k_resident`: `VmRSS` (from `/proc/self/status`) before and after creating 100,000
//!   counters (`Add(1)` each, so each has a file and state) and keeping them resident, with the
//!   host's resident and open-file counts. Run once, outside criterion's sampling. Target: 100,000
//!   resident in ≤ 2 GiB of total RSS (judged on the total: memory freed by earlier benches stays
//!   in the allocator and is reused, so in a full run `rss_before` is high and the delta low; run
//!   this bench alone for a clean delta). Criterion then measures `Get` on those 100,000
//!   residents in turn, printed as an `INFO` line (no target of its own).
//! - `alarms_100k`: run once per bench invocation, outside criterion's sampling (ten rounds of
//!   100,000 objects would take far too long), on the 100,000 resident counters of
//!   `rss_100k_resident` (created here if that bench was filtered out). Each gets an alarm, spread
//!   uniformly over one second that starts shortly after the last alarm is set (the time setting
//!   them takes is estimated from the first 5,000); the bench then waits until all 100,000
//!   handlers ran, at most 60 s after the last due time, and prints how many fired and the
//!   lateness percentiles of the host's histogram (no alarm fired on that host before, so the
//!   histogram holds exactly these fires; alarms that never fired are not in it). Target: all
//!   fired within 1 s of their due time (max lateness ≤ 1 s), p99 ≤ 20 ms. Criterion then
//!   measures a smaller variant on a fresh host, `alarms_100k/burst_1k` in the output: 1,000
//!   alarms due in the same millisecond, timed from that millisecond until the last handler
//!   finished (no SPEC target of its own).
//!
//! The two 100k benches dominate the run time: creating 100,000 counters and setting 100,000
//! alarms are two passes of 100,000 calls each, which take minutes on a 2-core machine (each
//! over 4 minutes when this bench was written), plus up to a minute of waiting for alarms.
//!
//! All benches share one 2-worker multi-thread tokio runtime built before any measurement; each
//! bench gets its own host over a fresh `tempfile::tempdir()` (but for the shared 100,000
//! counters). Timed calls are issued from a task spawned on that runtime (as a gRPC handler
//! would call), not from the `block_on` thread.

// A bench that panics is a failed bench: unwrap/expect are the right reaction to a broken set-up.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clawdo_actors::demo::{Counter, CounterReply, CounterRequest};
use clawdo_actors::{Host, HostBuilder, HostConfig, ManualClock, Stub, UnixMillis};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use futures::StreamExt;
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Idle timeout of hosts whose objects must stay resident for the whole bench.
const LONG_IDLE: Duration = Duration::from_secs(3_600);
/// Calls in flight at once while setting up many objects (not timed).
const SETUP_CONCURRENCY: usize = 128;
/// Counters hibernated and re-activated by `cold_activation`.
const COLD_OBJECTS: usize = 2_000;
/// Objects of the two 100k benches.
const MANY: usize = 100_000;
/// Alarms of the criterion-measured burst variant of `alarms_100k`.
const BURST: usize = 1_000;
/// How far ahead a burst round sets its alarms (setting 1,000 alarms must fit in it).
const BURST_LEAD_MS: i64 = 250;
/// Longest wait for alarms to fire after the last one was due.
const ALARM_WAIT: Duration = Duration::from_secs(60);

/// A host over its own temporary data directory.
struct Fixture {
    host: Host,
    dir: TempDir,
}

impl Fixture {
    async fn start(config: HostConfig) -> Fixture {
        Fixture::start_with(config, None).await
    }

    /// A host whose time (idle timeouts, alarms) moves only when `clock` is advanced.
    async fn start_with(config: HostConfig, clock: Option<ManualClock>) -> Fixture {
        let dir = tempfile::tempdir().expect("create a temporary data directory");
        let mut builder = HostBuilder::new(dir.path())
            .config(config)
            .register::<Counter>();
        if let Some(clock) = clock {
            builder = builder.clock(Arc::new(clock));
        }
        let host = builder.start().await.expect("start the host");
        Fixture { host, dir }
    }

    fn stub(&self, i: usize) -> Stub<Counter> {
        self.host.get::<Counter>(&counter_id(i)).expect("valid id")
    }

    /// Shut the host down and delete its data directory (not timed).
    fn stop(self, rt: &Runtime) {
        rt.block_on(self.host.shutdown(Duration::from_secs(120)))
            .expect("shut the host down");
        drop(self.dir);
    }
}

fn long_idle() -> HostConfig {
    HostConfig {
        idle_timeout: LONG_IDLE,
        ..HostConfig::default()
    }
}

fn counter_id(i: usize) -> String {
    format!("c{i:06}")
}

/// Wall-clock now in Unix milliseconds (what the host's `SystemClock` reads).
fn now_ms() -> UnixMillis {
    unix_now().as_millis() as UnixMillis
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Calls counter `i` with `request(i)` for every `i` in `range`, [`SETUP_CONCURRENCY`] at a
/// time, checking every reply; returns how long it took.
async fn call_all(
    host: &Host,
    range: Range<usize>,
    request: impl Fn(usize) -> CounterRequest,
) -> Duration {
    let started = Instant::now();
    futures::stream::iter(range)
        .map(|i| {
            let stub = host.get::<Counter>(&counter_id(i)).expect("valid id");
            let request = request(i);
            async move {
                let reply = stub.call(request).await.expect("call a counter");
                assert!(
                    !matches!(reply, CounterReply::Failed(_)),
                    "counter {i} failed: {reply:?}"
                );
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .for_each(|()| std::future::ready(()))
        .await;
    started.elapsed()
}

/// [`call_all`] over `0..MANY` in chunks of 10,000, printing the call rate of each chunk (the
/// rate falls as residents grow; the line shows by how much).
async fn call_many(
    host: &Host,
    label: &str,
    request: impl Fn(usize) -> CounterRequest + Copy,
) -> Duration {
    const CHUNK: usize = 10_000;
    let started = Instant::now();
    let mut rates = Vec::new();
    for start in (0..MANY).step_by(CHUNK) {
        let took = call_all(host, start..(start + CHUNK).min(MANY), request).await;
        rates.push(format!("{:.0}", CHUNK as f64 / took.as_secs_f64()));
    }
    let took = started.elapsed();
    println!(
        "INFO {label}: {MANY} calls in {:.1}s; calls/s per 10k chunk: {}",
        took.as_secs_f64(),
        rates.join(" "),
    );
    took
}

/// Times one call, from a task on the runtime; panics on an error reply.
async fn timed_call(stub: &Stub<Counter>, request: CounterRequest) -> Duration {
    let started = Instant::now();
    let reply = stub.call(request).await;
    let took = started.elapsed();
    match black_box(reply) {
        Ok(CounterReply::Value(_)) => took,
        other => panic!("unexpected reply from {}: {other:?}", stub.id()),
    }
}

/// `iters` sequential calls of `request()` to `stub`, each timed.
fn timed_sequential(
    rt: &Runtime,
    stub: &Stub<Counter>,
    iters: u64,
    request: fn() -> CounterRequest,
) -> Vec<Duration> {
    let stub = stub.clone();
    rt.block_on(rt.spawn(async move {
        let mut samples = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
        for _ in 0..iters {
            samples.push(timed_call(&stub, request()).await);
        }
        samples
    }))
    .expect("the timing task")
}

/// The `runtime` benchmark group taking `samples` samples, after warming up for `warm_up`,
/// over a measurement time of `measurement`.
fn runtime_group(
    c: &mut Criterion,
    samples: usize,
    warm_up: Duration,
    measurement: Duration,
) -> BenchmarkGroup<'_, WallTime> {
    let mut group = c.benchmark_group("runtime");
    group
        .sample_size(samples)
        .warm_up_time(warm_up)
        .measurement_time(measurement);
    group
}

/// The per-operation durations of every call of a bench's timing routine, for percentiles over
/// criterion's measured samples.
struct Batches {
    /// The bench's sample size.
    samples: usize,
    /// One batch of durations per call of the routine, in order.
    batches: Vec<Vec<Duration>>,
}

impl Batches {
    /// No batches yet, for a bench of `samples` samples.
    fn new(samples: usize) -> Batches {
        Batches {
            samples,
            batches: Vec::new(),
        }
    }

    /// Keeps the durations of one call of the routine; returns their total (what the routine
    /// reports to criterion).
    fn keep(&mut self, durations: Vec<Duration>) -> Duration {
        let total = durations.iter().sum();
        self.batches.push(durations);
        total
    }

    /// Per-operation durations of criterion's measured samples: the last `samples` calls of
    /// the routine (criterion calls it during warm-up first, then exactly `sample_size` times).
    fn measured(&self) -> Vec<Duration> {
        self.batches[self.batches.len().saturating_sub(self.samples)..]
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    /// Percentiles of the measured samples; `None` when the bench was filtered out.
    fn percentiles(&self) -> Option<Percentiles> {
        percentiles(self.measured())
    }
}

struct Percentiles {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// Nearest-rank percentiles; `None` when there are no samples (the bench was filtered out).
fn percentiles(mut samples: Vec<Duration>) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Percentiles {
        n,
        p50: rank(0.50),
        p99: rank(0.99),
        max: samples[n - 1],
    })
}

fn us(d: Duration) -> String {
    format!("{:.1}us", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1}MiB", kib as f64 / 1024.0)
}

/// `met`, or by how much the target was missed.
fn verdict(value: f64, limit: f64) -> String {
    if value <= limit {
        "met".to_string()
    } else {
        format!("MISSED by {:.1}x", value / limit)
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Resident set size of this process, in KiB.
fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in /proc/self/status")
}

/// `warm_read` and `write_commit`: one resident counter, sequential calls.
fn resident_call(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    request: fn() -> CounterRequest,
    target_p50: Duration,
) {
    const SAMPLES: usize = 20;
    let mut fixture: Option<(Fixture, Stub<Counter>)> = None;
    let mut batches = Batches::new(SAMPLES);
    let mut group = runtime_group(c, SAMPLES, Duration::from_secs(1), Duration::from_secs(3));
    group.bench_function(name, |b| {
        let (_, stub) = fixture.get_or_insert_with(|| {
            rt.block_on(async {
                let fixture = Fixture::start(long_idle()).await;
                let stub = fixture.stub(0);
                // Create and activate it: every measured call finds it resident.
                timed_call(&stub, CounterRequest::Add(1)).await;
                (fixture, stub)
            })
        });
        b.iter_custom(|iters| {
            let samples = timed_sequential(rt, stub, iters, request);
            batches.keep(samples)
        });
    });
    group.finish();
    if let Some((fixture, _)) = fixture {
        fixture.stop(rt);
    }
    if let Some(p) = batches.percentiles() {
        println!(
            "FIGURE {name} p50={} p99={} max={} n={} (target p50<={}: {})",
            us(p.p50),
            us(p.p99),
            us(p.max),
            p.n,
            us(target_p50),
            verdict(p.p50.as_secs_f64(), target_p50.as_secs_f64()),
        );
    }
}

fn warm_read(c: &mut Criterion, rt: &Runtime) {
    resident_call(
        c,
        rt,
        "warm_read",
        || CounterRequest::Get,
        Duration::from_micros(5),
    );
}

fn write_commit(c: &mut Criterion, rt: &Runtime) {
    resident_call(
        c,
        rt,
        "write_commit",
        || CounterRequest::Add(1),
        Duration::from_micros(50),
    );
}

/// Hibernate every resident object: move the host's manual clock past the idle timeout and
/// run janitor passes until none is resident (not timed). Between these calls the clock stands
/// still, so nothing hibernates while activations are being timed.
async fn hibernate_all(host: &Host, clock: &ManualClock) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        clock.advance(Duration::from_secs(31));
        host.run_janitor().await;
        if host.stats().resident_objects == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "objects still resident after 60 s of janitor passes: {:?}",
            host.stats()
        );
    }
}

struct ColdFixture {
    fixture: Fixture,
    clock: ManualClock,
    stubs: Arc<Vec<Stub<Counter>>>,
    /// Stubs before it were activated since the last `hibernate_all`.
    cursor: usize,
}

fn cold_activation(c: &mut Criterion, rt: &Runtime) {
    const SAMPLES: usize = 10;
    let mut cold: Option<ColdFixture> = None;
    let mut batches = Batches::new(SAMPLES);
    let mut group = runtime_group(c, SAMPLES, Duration::from_secs(1), Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("cold_activation", |b| {
        let cold = cold.get_or_insert_with(|| {
            rt.block_on(async {
                // A manual clock: objects hibernate only in `hibernate_all`, between timed
                // passes, never while activations are being timed.
                let clock = ManualClock::new(now_ms());
                let fixture = Fixture::start_with(HostConfig::default(), Some(clock.clone())).await;
                call_all(&fixture.host, 0..COLD_OBJECTS, |_| CounterRequest::Add(1)).await;
                hibernate_all(&fixture.host, &clock).await;
                let stubs = (0..COLD_OBJECTS).map(|i| fixture.stub(i)).collect();
                ColdFixture {
                    fixture,
                    clock,
                    stubs: Arc::new(stubs),
                    cursor: 0,
                }
            })
        });
        b.iter_custom(|iters| {
            let host = cold.fixture.host.clone();
            let clock = cold.clock.clone();
            let stubs = Arc::clone(&cold.stubs);
            let mut cursor = cold.cursor;
            let (samples, cursor) = rt
                .block_on(rt.spawn(async move {
                    let mut samples = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
                    for _ in 0..iters {
                        if cursor == stubs.len() {
                            hibernate_all(&host, &clock).await;
                            cursor = 0;
                        }
                        samples.push(timed_call(&stubs[cursor], CounterRequest::Get).await);
                        cursor += 1;
                    }
                    (samples, cursor)
                }))
                .expect("the timing task");
            cold.cursor = cursor;
            batches.keep(samples)
        });
    });
    group.finish();
    let activations = cold.as_ref().map(|c| c.fixture.host.stats().activations);
    if let Some(cold) = cold {
        cold.fixture.stop(rt);
    }
    if let Some(p) = batches.percentiles() {
        let target = Duration::from_millis(1);
        println!(
            "FIGURE cold_activation p50={} p99={} max={} n={} activations={} (target p99<=1ms: {})",
            us(p.p50),
            us(p.p99),
            us(p.max),
            p.n,
            activations.unwrap_or(0),
            verdict(p.p99.as_secs_f64(), target.as_secs_f64()),
        );
    }
}

/// Creates the [`MANY`] counters shared by `rss_100k_resident` and `alarms_100k` (`Add(1)` each,
/// so each has a file and state), kept resident: creating them takes minutes, so it is done once.
fn create_many(rt: &Runtime) -> Fixture {
    rt.block_on(async {
        let fixture = Fixture::start(long_idle()).await;
        call_many(&fixture.host, "create 100k counters", |_| {
            CounterRequest::Add(1)
        })
        .await;
        // Let the janitor bring open files back under budget.
        tokio::time::sleep(Duration::from_millis(500)).await;
        fixture
    })
}

/// The SPEC scenario, once: [`MANY`] resident counters get alarms due within one second.
fn alarms_100k_once(rt: &Runtime, many: Fixture) {
    rt.block_on(async {
        let host = &many.host;
        let before = host.stats();
        // Estimate how long setting 100,000 alarms takes from 5,000 of them (set far ahead;
        // the real pass below moves them), so the first one is due only after the last is set.
        // The margin (30% + 3 s) absorbs the rate drifting during the pass; an overrun is
        // reported, since alarms set after their due time count as late.
        let probe = 5_000;
        let far = now_ms() + 3_600_000;
        let probe_took = call_all(host, 0..probe, |_| CounterRequest::SetAlarm(far)).await;
        let estimate = probe_took.as_millis() as i64 * (MANY / probe) as i64;
        let first_due = now_ms() + estimate * 13 / 10 + 3_000;
        let set_took = call_many(host, "alarms_100k set alarms", |i| {
            CounterRequest::SetAlarm(first_due + (i * 1_000 / MANY) as i64)
        })
        .await;
        let margin = first_due - now_ms();
        println!(
            "INFO alarms_100k: set {MANY} alarms in {:.1}s (estimated {:.1}s); first due {margin}ms \
             after the last was set",
            set_took.as_secs_f64(),
            estimate as f64 / 1e3,
        );
        if margin < 0 {
            println!(
                "WARN alarms_100k: setting the alarms overran the first due time by {}ms; \
                 alarms set after their due time count as late",
                -margin
            );
        }
        let last_due = first_due + 999;
        let wait_until = Instant::now()
            + Duration::from_millis(u64::try_from(last_due - now_ms()).unwrap_or(0))
            + ALARM_WAIT;
        let mut all_done_at = None;
        loop {
            if host.stats().alarms_fired >= before.alarms_fired + MANY as u64 {
                all_done_at = Some(now_ms());
                break;
            }
            if Instant::now() >= wait_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = host.stats();
        let fired = stats.alarms_fired - before.alarms_fired;
        // No alarm fired on this host before, so its lateness histogram holds exactly these.
        let lateness = stats.alarm_lateness;
        let all_fired = fired >= MANY as u64;
        let within_1s = all_fired && lateness.max_ms <= 1_000.0;
        let done = all_done_at.map_or_else(
            || format!(">{}s", ALARM_WAIT.as_secs()),
            |at| format!("{}ms", at - last_due),
        );
        println!(
            "FIGURE alarms_100k fired={fired}/{MANY} all_fired={} lateness p50={}ms p99={}ms \
             max={}ms (n={}) all_done_after_last_due={done} retries={} dropped={} \
             resident={} (target all fired within 1s: {}; p99<=20ms: {})",
            yes_no(all_fired),
            lateness.p50_ms,
            lateness.p99_ms,
            lateness.max_ms,
            lateness.count,
            stats.alarm_retries,
            stats.alarms_dropped,
            stats.resident_objects,
            if within_1s {
                "met".to_string()
            } else if all_fired {
                format!("MISSED, max {}ms", lateness.max_ms)
            } else {
                format!("MISSED, {} not fired after {}s", MANY as u64 - fired, ALARM_WAIT.as_secs())
            },
            verdict(lateness.p99_ms, 20.0),
        );
    });
    many.stop(rt);
}

/// One burst round: [`BURST`] alarms due in the same millisecond; returns the time from that
/// millisecond until the last handler finished.
async fn burst_round(fixture: &Fixture) -> Duration {
    let host = &fixture.host;
    let fired_before = host.stats().alarms_fired;
    let now = unix_now();
    let now_instant = Instant::now();
    let due = now.as_millis() as UnixMillis + BURST_LEAD_MS;
    let due_at =
        now_instant + (Duration::from_millis(u64::try_from(due).expect("due after 1970")) - now);
    call_all(host, 0..BURST, |_| CounterRequest::SetAlarm(due)).await;
    if now_ms() >= due {
        println!("WARN alarms_100k/burst_1k: setting the alarms overran their due time");
    }
    // Once the clock reads `due`, settling waits for every handler of this burst.
    tokio::time::sleep_until((due_at + Duration::from_millis(1)).into()).await;
    host.settle_alarms().await.expect("settle the alarms");
    let give_up = Instant::now() + ALARM_WAIT;
    while host.stats().alarms_fired < fired_before + BURST as u64 {
        assert!(
            Instant::now() < give_up,
            "burst alarms did not all fire: {:?}",
            host.stats()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Instant::now().saturating_duration_since(due_at)
}

/// `alarms_100k`: the 100k scenario once (on the shared counters in `many`, created here if
/// `rss_100k_resident` did not run), then the criterion-measured 1,000-alarm burst.
fn alarms_100k(c: &mut Criterion, rt: &Runtime, many: &mut Option<Fixture>) {
    const SAMPLES: usize = 10;
    let mut burst: Option<Fixture> = None;
    let mut batches = Batches::new(SAMPLES);
    let mut group = runtime_group(c, SAMPLES, Duration::from_millis(1), Duration::from_secs(4));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("alarms_100k", |b| {
        let fixture = burst.get_or_insert_with(|| {
            let population = many.take().unwrap_or_else(|| create_many(rt));
            alarms_100k_once(rt, population);
            rt.block_on(async {
                let fixture = Fixture::start(long_idle()).await;
                call_all(&fixture.host, 0..BURST, |_| CounterRequest::Add(1)).await;
                fixture
            })
        });
        b.iter_custom(|iters| {
            let samples: Vec<Duration> = rt.block_on(async {
                let mut samples = Vec::new();
                for _ in 0..iters {
                    samples.push(burst_round(fixture).await);
                }
                samples
            });
            batches.keep(samples)
        });
    });
    group.finish();
    let lateness = burst.as_ref().map(|f| f.host.stats().alarm_lateness);
    if let Some(fixture) = burst {
        fixture.stop(rt);
    }
    if let (Some(p), Some(lateness)) = (batches.percentiles(), lateness) {
        println!(
            "FIGURE alarms_100k/burst_1k due-to-last-handled p50={} max={} rounds={} lateness \
             p50={}ms p99={}ms max={}ms (n={}, warm-up round included) (no target of its own)",
            ms(p.p50),
            ms(p.max),
            p.n,
            lateness.p50_ms,
            lateness.p99_ms,
            lateness.max_ms,
            lateness.count,
        );
    }
}

/// `rss_100k_resident`: creates the shared counters into `many` and prints the RSS figure.
fn rss_100k_resident(c: &mut Criterion, rt: &Runtime, many: &mut Option<Fixture>) {
    const SAMPLES: usize = 10;
    let mut batches = Batches::new(SAMPLES);
    let mut next = 0usize;
    let mut group = runtime_group(
        c,
        SAMPLES,
        Duration::from_millis(500),
        Duration::from_secs(2),
    );
    group.bench_function("rss_100k_resident", |b| {
        let fixture = many.get_or_insert_with(|| {
            let before = vm_rss_kib();
            let fixture = create_many(rt);
            let after = vm_rss_kib();
            let stats = fixture.host.stats();
            let limit_kib = 2 * 1024 * 1024;
            println!(
                "FIGURE rss_100k_resident rss_before={} rss_after={} delta={} per_object={:.1}KiB \
                 resident={} open_files={} (target {MANY} resident in <=2GiB RSS: {})",
                mib(before),
                mib(after),
                mib(after.saturating_sub(before)),
                after.saturating_sub(before) as f64 / MANY as f64,
                stats.resident_objects,
                stats.open_files,
                if stats.resident_objects >= MANY as u64 {
                    verdict(after as f64, limit_kib as f64)
                } else {
                    format!("MISSED, only {} resident", stats.resident_objects)
                },
            );
            fixture
        });
        // The printed RSS figure is the point of this bench; criterion measures a `Get` on each
        // of the 100,000 residents in turn (a stride through all of them), reported as INFO.
        b.iter_custom(|iters| {
            let stubs: Vec<Stub<Counter>> = (0..iters)
                .map(|k| fixture.stub((next + k as usize * 7_919) % MANY))
                .collect();
            next = (next + iters as usize * 7_919) % MANY;
            let samples = rt
                .block_on(rt.spawn(async move {
                    let mut samples = Vec::with_capacity(stubs.len());
                    for stub in &stubs {
                        samples.push(timed_call(stub, CounterRequest::Get).await);
                    }
                    samples
                }))
                .expect("the timing task");
            batches.keep(samples)
        });
    });
    group.finish();
    if let Some(p) = batches.percentiles() {
        println!(
            "INFO rss_100k_resident: Get across 100000 residents p50={} p99={} max={} n={}",
            us(p.p50),
            us(p.p99),
            us(p.max),
            p.n,
        );
    }
}

/// All benches over one runtime. `rss_100k_resident` creates 100,000 counters and
/// `alarms_100k` reuses them (each creation pass takes minutes); it runs first, so the memory
/// figure is taken on a process that has not yet allocated and freed a big population.
fn runtime_benches(c: &mut Criterion) {
    let rt = common::tokio_runtime();
    warm_read(c, &rt);
    write_commit(c, &rt);
    cold_activation(c, &rt);
    let mut many = None;
    rss_100k_resident(c, &rt, &mut many);
    alarms_100k(c, &rt, &mut many);
    if let Some(many) = many {
        many.stop(&rt);
    }
}

criterion_group!(benches, runtime_benches);
criterion_main!(benches);
