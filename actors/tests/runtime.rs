//! The object runtime's guarantees, driven through the public API with a manual clock.
//!
//! Invariant 2 (one activation per object), invariant 6 (exact, at-least-once alarms that
//! survive restarts and retry with backoff), invariant 7 (time is injected: nothing here sleeps),
//! and id validation with nothing written for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::sync::Arc;
use std::time::Duration;

use clawdo_actors::demo::counter::Fire;
use clawdo_actors::demo::{Counter, CounterReply, CounterRequest};
use clawdo_actors::{Error, Host, HostBuilder, HostConfig, InvalidId, ManualClock};

const T0: i64 = 1_800_000_000_000;

async fn host(dir: &std::path::Path, clock: &ManualClock, config: HostConfig) -> Host {
    HostBuilder::new(dir)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .register::<Counter>()
        .start()
        .await
        .expect("host starts")
}

/// Starts a host with `config` over a fresh temporary directory, on a manual clock at [`T0`];
/// returns the directory (the data lives as long as it does), the clock and the host.
async fn start(config: HostConfig) -> (tempfile::TempDir, ManualClock, Host) {
    let tmp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let host = host(tmp.path(), &clock, config).await;
    (tmp, clock, host)
}

/// The data directory an earlier run of the program left behind: a host (default
/// configuration) on a manual clock at [`T0`] over a fresh directory, `fill` run on it, then
/// shut down; returns the directory and the clock.
async fn left_behind(fill: impl AsyncFnOnce(&Host)) -> (tempfile::TempDir, ManualClock) {
    let (tmp, clock, host) = start(HostConfig::default()).await;
    fill(&host).await;
    host.shutdown(Duration::from_secs(5)).await.unwrap();
    (tmp, clock)
}

/// Sets the manual `clock` to `at` (epoch milliseconds) and delivers every alarm then due.
async fn set_time(host: &Host, clock: &ManualClock, at: i64) {
    clock.set(at);
    host.settle_alarms().await.unwrap();
}

async fn call(host: &Host, id: &str, request: CounterRequest) -> CounterReply {
    host.get::<Counter>(id)
        .expect("valid id")
        .call(request)
        .await
        .expect("call succeeds")
}

async fn fires(host: &Host, id: &str) -> Vec<Fire> {
    match call(host, id, CounterRequest::Fires).await {
        CounterReply::Fires(f) => f,
        other => panic!("unexpected reply {other:?}"),
    }
}

fn object_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "index.db")
                && path.extension().is_some_and(|e| e == "db")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_first_calls_share_one_activation() {
    let (_tmp, _clock, host) = start(HostConfig::default()).await;
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { call(&host, "hot", CounterRequest::Add(1)).await })
        })
        .collect();
    let mut values = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            CounterReply::Value(v) => values.push(v),
            other => panic!("unexpected {other:?}"),
        }
    }
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=64).collect::<Vec<_>>(),
        "each add applied once, in some order"
    );
    let stats = host.stats();
    assert_eq!(stats.activations, 1);
    assert_eq!(stats.resident_objects, 1);
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_hibernation_never_see_two_live_actors() {
    // Each object file is opened with an exclusive lock: a second live actor for the same id
    // could not open it and its activation would fail. Every call succeeding proves there was
    // never a second one, across many hibernate/reactivate cycles.
    let config = HostConfig {
        idle_timeout: Duration::from_secs(1),
        ..HostConfig::default()
    };
    let (_tmp, clock, host) = start(config).await;
    for round in 0..100 {
        // The object has been idle past its timeout: the janitor and the calls race for it.
        clock.advance(Duration::from_secs(2));
        let janitor = {
            let host = host.clone();
            tokio::spawn(async move { host.run_janitor().await })
        };
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let host = host.clone();
                tokio::spawn(async move { call(&host, "flappy", CounterRequest::Add(1)).await })
            })
            .collect();
        for call in calls {
            assert!(
                matches!(call.await.unwrap(), CounterReply::Value(_)),
                "round {round}"
            );
        }
        janitor.await.unwrap();
    }
    assert_eq!(
        call(&host, "flappy", CounterRequest::Get).await,
        CounterReply::Value(800)
    );
    assert!(
        host.stats().activations > 1,
        "the object did hibernate in between"
    );
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_fire_exactly_at_their_time() {
    let (_tmp, clock, host) = start(HostConfig::default()).await;
    let at = T0 + 60_000;
    call(&host, "a", CounterRequest::SetAlarm(at)).await;
    assert_eq!(
        call(&host, "a", CounterRequest::GetAlarm).await,
        CounterReply::Alarm(Some(at))
    );
    set_time(&host, &clock, at - 1).await;
    assert_eq!(host.stats().armed_alarms, 1);
    assert!(fires(&host, "a").await.is_empty(), "no fire 1 ms early");

    set_time(&host, &clock, at).await;
    let fired = fires(&host, "a").await;
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (
            fired[0].scheduled_at,
            fired[0].fired_at,
            fired[0].retry_count
        ),
        (at, at, 0)
    );
    assert_eq!(
        call(&host, "a", CounterRequest::GetAlarm).await,
        CounterReply::Alarm(None)
    );
    assert_eq!(host.stats().alarm_lateness.max_ms, 0.0);
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_alarms_retry_with_doubling_backoff_then_succeed() {
    let (_tmp, clock, host) = start(HostConfig::default()).await;
    call(&host, "r", CounterRequest::FailNextAlarms(3)).await;
    call(&host, "r", CounterRequest::SetAlarm(T0 + 1_000)).await;
    // Fire at +1 s (fails), retry 1 at +3 s (fails), retry 2 at +7 s (fails), retry 3 at +15 s.
    let mut expected = Vec::new();
    for (fire_at, retry) in [(1_000, 0), (3_000, 1), (7_000, 2), (15_000, 3)] {
        set_time(&host, &clock, T0 + fire_at - 1).await;
        assert_eq!(
            fires(&host, "r").await.len(),
            expected.len(),
            "early at {fire_at}"
        );
        set_time(&host, &clock, T0 + fire_at).await;
        expected.push((T0 + fire_at, retry));
        let seen: Vec<_> = fires(&host, "r")
            .await
            .iter()
            .map(|f| (f.fired_at, f.retry_count))
            .collect();
        assert_eq!(seen, expected);
    }
    assert_eq!(
        call(&host, "r", CounterRequest::GetAlarm).await,
        CounterReply::Alarm(None)
    );
    let stats = host.stats();
    assert_eq!((stats.alarm_retries, stats.alarms_dropped), (3, 0));
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_that_keeps_failing_is_dropped_after_the_configured_retries() {
    let config = HostConfig {
        alarm_max_retries: 2,
        alarm_retry_base: Duration::from_millis(100),
        ..HostConfig::default()
    };
    let (_tmp, clock, host) = start(config).await;
    call(&host, "d", CounterRequest::FailNextAlarms(10)).await;
    call(&host, "d", CounterRequest::SetAlarm(T0)).await;
    // Fire at T0 (seen at +100), retry 1 at +200, retry 2 at +400; then it is dropped.
    for at in [100, 200, 400] {
        set_time(&host, &clock, T0 + at).await;
    }
    let retries: Vec<u32> = fires(&host, "d")
        .await
        .iter()
        .map(|f| f.retry_count)
        .collect();
    assert_eq!(retries, [0, 1, 2]);
    assert_eq!(
        call(&host, "d", CounterRequest::GetAlarm).await,
        CounterReply::Alarm(None)
    );
    assert_eq!(host.stats().alarms_dropped, 1);
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_alarms_fire_promptly_after_a_restart() {
    let (tmp, clock) = left_behind(async |host| {
        for i in 0..20 {
            call(
                host,
                &format!("o-{i}"),
                CounterRequest::SetAlarm(T0 + 1_000 + i),
            )
            .await;
        }
    })
    .await;
    // A start before any alarm is due: the alarms are loaded from the index only, no object
    // is activated for it. (Checked while nothing is due, so no fire can race the check.)
    clock.set(T0 + 500);
    {
        let host = host(tmp.path(), &clock, HostConfig::default()).await;
        assert_eq!(host.stats().armed_alarms, 20);
        assert_eq!(
            host.stats().resident_objects,
            0,
            "alarms were loaded from the index only"
        );
        host.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    clock.set(T0 + 3_600_000); // down for an hour
    let host = host(tmp.path(), &clock, HostConfig::default()).await;
    host.settle_alarms().await.unwrap();
    for i in 0..20 {
        let fired = fires(&host, &format!("o-{i}")).await;
        assert_eq!(fired.len(), 1, "o-{i}");
        assert_eq!(
            (fired[0].scheduled_at, fired[0].fired_at),
            (T0 + 1_000 + i, T0 + 3_600_000)
        );
    }
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_wake_hibernated_objects_and_state_survives_hibernation() {
    let (_tmp, clock, host) = start(HostConfig::default()).await;
    call(&host, "h", CounterRequest::Add(41)).await;
    call(&host, "h", CounterRequest::SetAlarm(T0 + 120_000)).await;
    clock.set(T0 + 31_000);
    host.run_janitor().await; // the background janitor may have done it first
    let stats = host.stats();
    assert_eq!(
        (stats.resident_objects, stats.open_files, stats.hibernations),
        (0, 0, 1)
    );

    set_time(&host, &clock, T0 + 120_000).await;
    assert_eq!(host.stats().activations, 2, "the alarm reactivated it");
    assert_eq!(fires(&host, "h").await.len(), 1);
    assert_eq!(
        call(&host, "h", CounterRequest::Get).await,
        CounterReply::Value(41)
    );
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_timers_share_the_one_alarm_and_the_handler_learns_which_are_due() {
    let (_tmp, clock, host) = start(HostConfig::default()).await;
    call(
        &host,
        "t",
        CounterRequest::SetTimer("reconcile".into(), T0 + 5_000),
    )
    .await;
    call(
        &host,
        "t",
        CounterRequest::SetTimer("action".into(), T0 + 2_000),
    )
    .await;
    call(&host, "t", CounterRequest::SetAlarm(T0 + 5_000)).await;
    set_time(&host, &clock, T0 + 2_000).await;
    set_time(&host, &clock, T0 + 5_000).await;
    let seen: Vec<_> = fires(&host, "t")
        .await
        .into_iter()
        .map(|f| (f.fired_at - T0, f.timers))
        .collect();
    assert_eq!(
        seen,
        [(2_000, "action".into()), (5_000, ",reconcile".into())]
    );
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_get_a_typed_error_and_nothing_is_created() {
    let (tmp, _clock, host) = start(HostConfig::default()).await;
    let long = "x".repeat(129);
    for (id, want) in [
        ("", InvalidId::Empty),
        ("../../etc/passwd", InvalidId::BadChar('/')),
        ("a b", InvalidId::BadChar(' ')),
        (long.as_str(), InvalidId::TooLong(129)),
    ] {
        match host.get::<Counter>(id) {
            Err(Error::InvalidId(got)) => assert_eq!(got, want),
            other => panic!("{id:?}: expected InvalidId, got {other:?}"),
        }
        assert!(matches!(
            host.exists::<Counter>(id).await,
            Err(Error::InvalidId(_))
        ));
    }
    assert!(object_files(tmp.path()).is_empty());
    assert!(host.list_ids::<Counter>(None, 10).await.unwrap().is_empty());
    assert_eq!(host.stats().activations, 0);
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_listed_in_pages_without_activating_anything() {
    let (tmp, clock) = left_behind(async |host| {
        for i in 0..50 {
            call(host, &format!("c-{i:02}"), CounterRequest::Add(1)).await;
        }
    })
    .await;
    let host = host(tmp.path(), &clock, HostConfig::default()).await;
    let first = host.list_ids::<Counter>(None, 20).await.unwrap();
    let second = host
        .list_ids::<Counter>(Some(first[19].as_str()), 100)
        .await
        .unwrap();
    let all: Vec<String> = first.iter().chain(&second).map(|i| i.to_string()).collect();
    assert_eq!(
        all,
        (0..50).map(|i| format!("c-{i:02}")).collect::<Vec<_>>()
    );
    assert!(host.exists::<Counter>("c-07").await.unwrap());
    assert!(!host.exists::<Counter>("c-99").await.unwrap());
    assert_eq!(host.stats().activations, 0);
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_its_call_and_the_object_comes_back() {
    let (_tmp, _clock, host) = start(HostConfig::default()).await;
    call(&host, "p", CounterRequest::Add(5)).await;
    let stub = host.get::<Counter>("p").unwrap();
    assert!(matches!(
        stub.call(CounterRequest::Panic).await,
        Err(Error::ObjectFailed { .. })
    ));
    assert_eq!(
        stub.call(CounterRequest::Get).await.unwrap(),
        CounterReply::Value(5)
    );
    assert_eq!(host.stats().activations, 2);
    assert_eq!(host.stats().resident_objects, 1);
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_bound_residents_and_open_files() {
    let config = HostConfig {
        resident_cap: 10.try_into().unwrap(),
        max_open_files: 4.try_into().unwrap(),
        ..HostConfig::default()
    };
    let (_tmp, clock, host) = start(config).await;
    for i in 0..30 {
        clock.advance(Duration::from_millis(1));
        call(&host, &format!("b-{i}"), CounterRequest::Add(i)).await;
    }
    host.run_janitor().await;
    // Close requests are messages; one more call per object flushes them through.
    host.run_janitor().await;
    let stats = host.stats();
    assert!(stats.resident_objects <= 10, "{stats:?}");
    for i in 0..30 {
        assert_eq!(
            call(&host, &format!("b-{i}"), CounterRequest::Get).await,
            CounterReply::Value(i)
        );
    }
    host.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(host.stats().open_files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_calls_and_keeps_data() {
    let (tmp, clock, host) = start(HostConfig::default()).await;
    call(&host, "s", CounterRequest::Add(3)).await;
    host.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        host.get::<Counter>("s")
            .unwrap()
            .call(CounterRequest::Get)
            .await,
        Err(Error::ShuttingDown)
    ));
    assert_eq!(host.stats().resident_objects, 0);
    drop(host);
    let host = self::host(tmp.path(), &clock, HostConfig::default()).await;
    assert_eq!(
        call(&host, "s", CounterRequest::Get).await,
        CounterReply::Value(3)
    );
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_index_entry_wakes_the_object_which_does_nothing_and_resyncs() {
    use clawdo_actors::Durability;
    use clawdo_storage::{DataDir, ObjectKey, ShardIndexes};

    let (tmp, clock) = left_behind(async |host| {
        call(host, "e", CounterRequest::Add(1)).await;
    })
    .await;
    // A crash between an index write and the object's commit leaves an index entry the
    // object's database does not have. Make one by hand.
    {
        let dir = DataDir::open(tmp.path(), Durability::Process).unwrap();
        let indexes = ShardIndexes::open(&dir).unwrap();
        indexes
            .write_now(&ObjectKey::new("counter", "e"), T0 + 1_000)
            .unwrap();
        indexes.close();
    }
    let host = host(tmp.path(), &clock, HostConfig::default()).await;
    assert_eq!(host.stats().armed_alarms, 1);
    set_time(&host, &clock, T0 + 1_000).await;
    assert_eq!(
        host.stats().activations,
        1,
        "the early entry woke the object"
    );
    assert_eq!(host.stats().alarms_fired, 0, "and its handler did not run");
    assert!(fires(&host, "e").await.is_empty());
    host.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(host);
    let host = self::host(tmp.path(), &clock, HostConfig::default()).await;
    assert_eq!(
        host.stats().armed_alarms,
        0,
        "the index was re-synced to the truth"
    );
    host.shutdown(Duration::from_secs(5)).await.unwrap();
}
