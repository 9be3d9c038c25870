//! A bounded write load on demo counters that prints every acknowledged write.
//!
//! `clawdo demo-load` (hidden) runs this. The crash-recovery tests start it as a child
//! process, read its `ack <id> <value>` lines, SIGKILL it mid-load and check that every printed
//! write is on disk after a restart (invariant 1). A line is printed only after the call
//! returned, i.e. after its transaction committed.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clawdo_actors::Durability;
use clawdo_actors::demo::{Counter, CounterReply, CounterRequest};

use crate::Runtime;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Commit durability.
    pub durability: Durability,
    /// Counters written round-robin (`crash-0` … `crash-{objects-1}`).
    pub objects: u32,
    /// Concurrent writers.
    pub writers: u32,
    /// Total writes after which the load stops.
    pub max_writes: u64,
    /// An alarm set on every counter before the writes start.
    pub alarm_at: Option<i64>,
}

/// Errors of the load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime failed to start.
    #[error("runtime")]
    Runtime(#[from] crate::runtime::Error),
    /// A call failed.
    #[error("call")]
    Call(#[from] clawdo_actors::Error),
    /// A counter refused a write.
    #[error("counter refused: {0:?}")]
    Refused(CounterReply),
    /// Writing to stdout failed.
    #[error("stdout")]
    Stdout(#[from] std::io::Error),
}

/// Run the load until `max_writes` writes were acknowledged (or the process is killed).
pub async fn run(options: Options) -> Result<(), Error> {
    let runtime = Runtime::builder()
        .data_dir(&options.data_dir)
        .durability(options.durability)
        .build()
        .await?;
    let host = runtime.host().clone();
    if let Some(at) = options.alarm_at {
        for i in 0..options.objects {
            let reply = host
                .get::<Counter>(&format!("crash-{i}"))?
                .call(CounterRequest::SetAlarm(at))
                .await?;
            if reply != CounterReply::Ok {
                return Err(Error::Refused(reply));
            }
        }
    }
    println!("ready");
    let issued = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..options.writers {
        let host = host.clone();
        let issued = Arc::clone(&issued);
        let options = options.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= options.max_writes {
                    return Ok::<_, Error>(());
                }
                let id = format!("crash-{}", n % u64::from(options.objects));
                match host
                    .get::<Counter>(&id)?
                    .call(CounterRequest::Add(1))
                    .await?
                {
                    CounterReply::Value(value) => {
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ack {id} {value}")?;
                        out.flush()?;
                    }
                    other => return Err(Error::Refused(other)),
                }
            }
        }));
    }
    for writer in writers {
        writer.await.map_err(clawdo_actors::Error::from)??;
    }
    runtime.shutdown(std::time::Duration::from_secs(10)).await?;
    Ok(())
}
