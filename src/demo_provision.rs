//! One provision through the embedding API, optionally SIGKILLed at a named step.
//!
//! `clawdo demo-provision` (hidden) runs this. The admission crash tests start it as a child
//! process with `--crash-at <step>` (one of [`clawdo_actors::crashpoint::ALL`]): the process
//! kills itself with SIGKILL the moment the provision reaches that step, leaving exactly the
//! durable state a crash there leaves. Without `--crash-at` it provisions, waits (bounded) for
//! the instance to settle and prints `settled <id> <status>`.

use std::path::PathBuf;
use std::time::Duration;

use clawdo_actors::crashpoint;
use clawdo_actors::instance::{InstanceError, Status};

use crate::Runtime;
use crate::instances::{Caller, ProvisionSpec};

/// How long the provision may take to settle before the command gives up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Owner key.
    pub owner: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// SIGKILL this process when the provision reaches this step.
    pub crash_at: Option<String>,
}

/// Errors of the command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--crash-at` names no step.
    #[error("unknown crash point {0:?}; known: {known:?}", known = crashpoint::ALL)]
    UnknownPoint(String),
    /// The runtime failed to start or stop.
    #[error("runtime")]
    Runtime(#[from] crate::runtime::Error),
    /// The provision or a read failed.
    #[error("provision")]
    Instance(#[from] InstanceError),
    /// The instance did not settle in time.
    #[error("instance {0} did not settle within {SETTLE_TIMEOUT:?}")]
    NotSettled(String),
}

/// Install the crash observer (if asked), provision, wait for the instance to settle.
pub async fn run(options: Options) -> Result<(), Error> {
    if let Some(point) = &options.crash_at {
        let point = crashpoint::ALL
            .into_iter()
            .find(|p| p == point)
            .ok_or_else(|| Error::UnknownPoint(point.clone()))?;
        crashpoint::set_observer(move |reached| {
            if reached == point {
                println!("crash {reached}");
                kill_self();
            }
        });
    }
    let runtime = Runtime::builder()
        .data_dir(&options.data_dir)
        .build()
        .await?;
    let instances = runtime.instances();
    let provisioned = instances
        .provision(
            &Caller::Admin,
            ProvisionSpec {
                owner: options.owner.clone(),
                idempotency_key: Some(options.idempotency_key.clone()),
                ..ProvisionSpec::default()
            },
        )
        .await?;
    let id = provisioned.instance.id;
    let (view, mut events) = instances.watch(&Caller::Admin, &id).await?;
    let settled = |status: Status| !status.is_busy();
    let mut status = view.status;
    if !settled(status) {
        status = tokio::time::timeout(SETTLE_TIMEOUT, async {
            while let Ok(event) = events.recv().await {
                if settled(event.status) {
                    return Some(event.status);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| Error::NotSettled(id.clone()))?;
    }
    println!("settled {id} {}", status.as_str());
    runtime.shutdown(Duration::from_secs(10)).await?;
    Ok(())
}

/// SIGKILL this process: no destructor, no flush, no shutdown runs after this point.
fn kill_self() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; should the kill itself fail, abort is the next-hardest stop.
    std::process::abort();
}
