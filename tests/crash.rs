//! Invariant 1 (acknowledged means committed) and alarm durability across SIGKILL.
//!
//! A child `clawdo demo-load` process writes to counters with several concurrent writers and
//! prints `ack <id> <value>` after each committed write. The test kills it with SIGKILL in the
//! middle of the load, reopens the same data directory in-process, and checks that every
//! acknowledged value is present (values only grow, so present means `value >= max acked`),
//! that each counter's log holds exactly its value's worth of rows (no torn transaction), and that
//! the alarms the child armed survive and fire.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use clawdo::actors::ManualClock;
use clawdo::actors::demo::{Counter, CounterReply, CounterRequest};
use common::runtime::builder;

/// Far in the future, so the child never fires it; the checker's manual clock passes it.
const ALARM_AT: i64 = 4_000_000_000_000;
const OBJECTS: u32 = 16;

/// Run the child until `kill_after` acks, SIGKILL it, return the highest value acked per id.
fn load_then_kill(
    dir: &std::path::Path,
    durability: &str,
    kill_after: usize,
) -> HashMap<String, i64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clawdo"))
        .args(["demo-load", "--data-dir"])
        .arg(dir)
        .args([
            "--durability",
            durability,
            "--objects",
            &OBJECTS.to_string(),
        ])
        .args(["--writers", "8", "--max-writes", "200000"])
        .args(["--alarm-at", &ALARM_AT.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start clawdo demo-load");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(lines.next().expect("a line").expect("utf-8"), "ready");
    let mut acked: HashMap<String, i64> = HashMap::new();
    let mut count = 0;
    let mut record = |line: &str| {
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("ack"), "unexpected line {line:?}");
        let id = parts.next().expect("id").to_string();
        let value: i64 = parts.next().expect("value").parse().expect("number");
        let best = acked.entry(id).or_insert(0);
        *best = (*best).max(value);
    };
    for line in lines.by_ref() {
        record(&line.expect("utf-8"));
        count += 1;
        if count == kill_after {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    // Lines already written before the kill are acknowledged writes too.
    for line in lines {
        match line {
            Ok(line) if line.starts_with("ack ") && line.split(' ').count() == 3 => record(&line),
            _ => break, // a line cut by the kill was never a complete acknowledgement
        }
    }
    let status = child.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );
    acked
}

async fn check(dir: &std::path::Path, acked: &HashMap<String, i64>) {
    let clock = ManualClock::new(ALARM_AT - 1);
    let runtime = builder(dir, &clock)
        .build()
        .await
        .expect("restart on the same data dir");
    assert!(!acked.is_empty());
    for (id, &max_acked) in acked {
        let value = match runtime
            .host()
            .get::<Counter>(id)
            .unwrap()
            .call(CounterRequest::Get)
            .await
        {
            Ok(CounterReply::Value(v)) => v,
            other => panic!("{id}: {other:?}"),
        };
        assert!(
            value >= max_acked,
            "{id}: acked {max_acked}, found {value}: a write was lost"
        );
        let logged = runtime
            .host()
            .get::<Counter>(id)
            .unwrap()
            .call(CounterRequest::LogTotal)
            .await;
        assert_eq!(
            logged.unwrap(),
            CounterReply::Value(value),
            "{id}: value and log disagree"
        );
    }
    assert_eq!(
        runtime.stats().armed_alarms,
        u64::from(OBJECTS),
        "every armed alarm is in the index"
    );
    clock.set(ALARM_AT);
    runtime.host().settle_alarms().await.unwrap();
    for i in 0..OBJECTS {
        let stub = runtime
            .host()
            .get::<Counter>(&format!("crash-{i}"))
            .unwrap();
        match stub.call(CounterRequest::Fires).await.unwrap() {
            CounterReply::Fires(fires) => assert_eq!(fires.len(), 1, "crash-{i} alarm fired once"),
            other => panic!("{other:?}"),
        }
    }
    runtime.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_write_at_process_durability() {
    let tmp = tempfile::tempdir().unwrap();
    // Kill three times at different points; every round's acknowledgements must survive all
    // later rounds too.
    let mut acked: HashMap<String, i64> = HashMap::new();
    for kill_after in [200, 1_500, 4_000] {
        for (id, v) in load_then_kill(tmp.path(), "process", kill_after) {
            let best = acked.entry(id).or_insert(0);
            *best = (*best).max(v);
        }
    }
    check(tmp.path(), &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_write_at_power_durability() {
    let tmp = tempfile::tempdir().unwrap();
    let acked = load_then_kill(tmp.path(), "power", 300);
    check(tmp.path(), &acked).await;
}
