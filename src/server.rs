//! Running a clawdo server: the listen-address policy, building the [`Runtime`], serving gRPC
//! on an injected listener until an injected shutdown future completes, and the ordered
//! shutdown (stop gRPC, then the runtime) within one deadline.
//!
//! The `clawdo serve` binary and the integration tests both go through [`run`]; the binary
//! only adds flag parsing, logging and OS signals.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use clawdo_actors::Durability;

use crate::grpc;
use crate::runtime::{self, Runtime};

/// Options of a clawdo server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Directory holding every object file. Default `./clawdo-data`.
    pub data_dir: PathBuf,
    /// Idle time after which an object hibernates. Default 30 s.
    pub idle_timeout: Duration,
    /// How commits reach the disk. Default `process` (survives a process crash).
    pub durability: Durability,
    /// Total time allowed, counted from the shutdown signal, for open gRPC calls to finish and
    /// then for the runtime to stop. Default 10 s.
    pub shutdown_deadline: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./clawdo-data"),
            idle_timeout: Duration::from_secs(30),
            durability: Durability::Process,
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// Why a server could not start, serve or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address is not loopback. Serving beyond loopback needs authentication, which
    /// does not exist yet, so it is refused (SPEC §10).
    #[error(
        "refusing to listen on {addr}: it is not a loopback address, and clawdo has no \
         authentication yet; listen on 127.0.0.1 or [::1]"
    )]
    NonLoopbackListen {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listen socket could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// The listener's own address could not be read.
    #[error("could not read the listener's local address")]
    LocalAddr(#[source] io::Error),
    /// The runtime could not be built over the data directory.
    #[error("could not start the runtime")]
    StartRuntime(#[source] runtime::Error),
    /// The runtime reported an error while shutting down.
    #[error("the runtime did not shut down cleanly")]
    ShutdownRuntime(#[source] runtime::Error),
    /// The gRPC server failed.
    #[error(transparent)]
    Grpc(#[from] grpc::Error),
}

/// Returns `addr` if it is a loopback address, the only kind clawdo serves on until
/// authentication exists; otherwise [`Error::NonLoopbackListen`].
pub fn check_listen_addr(addr: SocketAddr) -> Result<SocketAddr, Error> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(Error::NonLoopbackListen { addr })
    }
}

/// Checks `addr` with [`check_listen_addr`], then binds a TCP listener on it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let addr = check_listen_addr(addr)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Builds the [`Runtime`] from `config` and serves gRPC on `listener` until `shutdown`
/// completes; then stops the gRPC server and shuts the runtime down, both within
/// [`Config::shutdown_deadline`].
///
/// Refuses a listener that is not bound to a loopback address. If open gRPC connections
/// (for example a health `Watch` stream) outlive the deadline, `run` stops waiting for them.
/// The runtime is shut down even when serving failed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    check_listen_addr(addr)?;

    let runtime = Runtime::builder()
        .data_dir(config.data_dir.clone())
        .idle_timeout(config.idle_timeout)
        .durability(config.durability)
        .build()
        .await
        .map_err(Error::StartRuntime)?;
    let runtime = Arc::new(runtime);
    info!(%addr, data_dir = %config.data_dir.display(), "serving gRPC");

    let (signalled_tx, mut signalled_rx) = oneshot::channel();
    let signal = async move {
        shutdown.await;
        info!("shutdown requested: stopping the gRPC server");
        // The receiver is gone only if serving already ended; nothing is waiting then.
        let _ = signalled_tx.send(Instant::now());
    };
    let serving = grpc::serve(Arc::clone(&runtime), listener, signal);
    tokio::pin!(serving);

    let (served, shutdown_started) = tokio::select! {
        biased;
        served = &mut serving => (served, Instant::now()),
        Ok(started) = &mut signalled_rx => {
            match tokio::time::timeout(config.shutdown_deadline, &mut serving).await {
                Ok(served) => (served, started),
                Err(_elapsed) => {
                    warn!(
                        deadline = ?config.shutdown_deadline,
                        "open gRPC connections outlived the shutdown deadline; no longer waiting",
                    );
                    (Ok(()), started)
                }
            }
        }
    };
    info!(ok = served.is_ok(), "gRPC server stopped");

    let remaining = config
        .shutdown_deadline
        .saturating_sub(shutdown_started.elapsed());
    info!(deadline = ?remaining, "shutting down the runtime");
    let stopped = runtime.shutdown(remaining).await;
    info!(ok = stopped.is_ok(), "runtime stopped");

    served?;
    stopped.map_err(Error::ShutdownRuntime)
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_accepted() {
        for addr in ["127.0.0.1:50051", "127.0.0.2:0", "[::1]:50051"] {
            let addr: SocketAddr = addr.parse().expect("a valid socket address");
            assert_eq!(check_listen_addr(addr).expect("loopback is allowed"), addr);
        }
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        for addr in [
            "0.0.0.0:50051",
            "[::]:50051",
            "192.0.2.7:50051",
            "[2001:db8::1]:1",
        ] {
            let addr: SocketAddr = addr.parse().expect("a valid socket address");
            let refused = check_listen_addr(addr).expect_err("non-loopback must be refused");
            assert!(
                matches!(refused, Error::NonLoopbackListen { addr: a } if a == addr),
                "{refused:?}"
            );
        }
    }
}
