//! Running a clawdo server: the listen-address policy, building the [`Runtime`] from the
//! [`Config`], serving gRPC on an injected listener until an injected shutdown future
//! completes, and the ordered shutdown (stop gRPC, then the runtime) within one deadline.
//!
//! The `clawdo serve` binary and the integration tests both go through [`run`] (or, to keep a
//! handle on the runtime, [`build_runtime`] + [`serve`]); the binary only adds flag parsing,
//! config loading, logging and OS signals.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use clawdo_actors::provider::process::{self, ProcessConfig, ProcessProvider};

use crate::config::{self, ProviderKind};
use crate::grpc;
use crate::runtime::{self, Runtime};

pub use crate::config::Config;

/// Why a server could not start, serve or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address is not loopback and no auth token is configured: serving beyond
    /// loopback without authentication is refused (SPEC §10).
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and no auth tokens are \
         configured; add [[auth.tokens]] to the config or listen on 127.0.0.1 or [::1]"
    )]
    NonLoopbackListen {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] config::Error),
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
    /// The process provider could not be opened under the data directory.
    #[error("could not open the process provider")]
    ProcessProvider(#[source] process::Error),
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

/// Returns `addr` if the server may listen on it: any address when calls are `authenticated`
/// (at least one token is configured), only a loopback address otherwise; else
/// [`Error::NonLoopbackListen`].
pub fn check_listen(addr: SocketAddr, authenticated: bool) -> Result<SocketAddr, Error> {
    if authenticated || addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(Error::NonLoopbackListen { addr })
    }
}

/// [`check_listen`] for a server without auth tokens: only loopback addresses pass.
pub fn check_listen_addr(addr: SocketAddr) -> Result<SocketAddr, Error> {
    check_listen(addr, false)
}

/// Checks `addr` with [`check_listen_addr`] (the policy without auth tokens), then binds a
/// TCP listener on it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    bind_checked(check_listen_addr(addr)?).await
}

/// Validates `config`, checks its listen address against its auth policy with
/// [`check_listen`], then binds a TCP listener on it.
pub async fn bind_config(config: &Config) -> Result<TcpListener, Error> {
    config.validate()?;
    let authenticated = config.authenticator()?.is_enabled();
    bind_checked(check_listen(config.listen, authenticated)?).await
}

async fn bind_checked(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Builds the [`Runtime`] `config` describes: data directory, durability, idle timeout,
/// provider (`sim` with its settings, or `process` running the built-in machine stub under
/// `<data-dir>/providers/process`), provider limits and instance settings.
pub async fn build_runtime(config: &Config) -> Result<Runtime, Error> {
    config.validate()?;
    let mut builder = Runtime::builder()
        .data_dir(config.data_dir.clone())
        .idle_timeout(config.idle_timeout)
        .durability(config.durability)
        .sim_config(config.provider.sim.clone())
        .provider_limits(config.provider.limits.clone())
        .instance_config(config.instance.clone())
        .fleet_config(config.fleet.clone())
        .registry_config(config.registry.clone());
    if config.provider.kind == ProviderKind::Process {
        let provider = ProcessProvider::open(ProcessConfig {
            root: config.data_dir.join("providers").join("process"),
            command: crate::machine_stub::default_process_command(),
        })
        .map_err(Error::ProcessProvider)?;
        builder = builder.provider(Arc::new(provider));
    }
    builder.build().await.map_err(Error::StartRuntime)
}

/// Builds the [`Runtime`] from `config` and serves it with [`serve`].
///
/// The runtime is shut down even when serving failed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::LocalAddr)?;
    check_listen(addr, config.authenticator()?.is_enabled())?;
    let runtime = Arc::new(build_runtime(&config).await?);
    serve(config, runtime, listener, shutdown).await
}

/// Serves gRPC for `runtime` on `listener` until `shutdown` completes; then stops the gRPC
/// server and shuts the runtime down, both within [`Config::shutdown_deadline`].
///
/// Refuses a listener that [`check_listen`] refuses for `config`'s auth tokens. If open gRPC
/// connections (for example a health `Watch` stream) outlive the deadline, `serve` stops
/// waiting for them. The runtime is shut down even when serving failed.
pub async fn serve(
    config: Config,
    runtime: Arc<Runtime>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let started = async {
        let addr = listener.local_addr().map_err(Error::LocalAddr)?;
        let auth = config.authenticator()?;
        check_listen(addr, auth.is_enabled())?;
        Ok::<_, Error>((addr, auth))
    }
    .await;
    let (addr, auth) = match started {
        Ok(started) => started,
        Err(error) => {
            if let Err(stopped) = runtime.shutdown(config.shutdown_deadline).await {
                warn!(error = %stopped, "the runtime did not shut down cleanly");
            }
            return Err(error);
        }
    };
    info!(
        %addr,
        data_dir = %config.data_dir.display(),
        auth = auth.is_enabled(),
        provider = ?config.provider.kind,
        "serving gRPC",
    );

    let (signalled_tx, mut signalled_rx) = oneshot::channel();
    let signal = async move {
        shutdown.await;
        info!("shutdown requested: stopping the gRPC server");
        // The receiver is gone only if serving already ended; nothing is waiting then.
        let _ = signalled_tx.send(Instant::now());
    };
    let serving = grpc::serve(Arc::clone(&runtime), Arc::new(auth), listener, signal);
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

    /// Addresses off the loopback interface, IPv4 and IPv6.
    const NON_LOOPBACK: [&str; 4] = [
        "0.0.0.0:50051",
        "[::]:50051",
        "192.0.2.7:50051",
        "[2001:db8::1]:1",
    ];

    fn socket_addr(text: &str) -> SocketAddr {
        text.parse().expect("a valid socket address")
    }

    #[test]
    fn loopback_addresses_are_accepted() {
        for addr in ["127.0.0.1:50051", "127.0.0.2:0", "[::1]:50051"].map(socket_addr) {
            assert_eq!(check_listen_addr(addr).expect("loopback is allowed"), addr);
        }
    }

    #[test]
    fn non_loopback_addresses_are_accepted_with_auth() {
        for addr in NON_LOOPBACK
            .into_iter()
            .chain(["127.0.0.1:1"])
            .map(socket_addr)
        {
            assert_eq!(check_listen(addr, true).expect("auth is on"), addr);
        }
    }

    #[tokio::test]
    async fn bind_config_applies_the_auth_policy() {
        use crate::auth::{Role, Token, TokenConfig};

        let mut config = Config {
            listen: socket_addr("0.0.0.0:0"),
            ..Config::default()
        };
        let refused = bind_config(&config)
            .await
            .expect_err("no tokens, no public address");
        assert!(
            matches!(refused, Error::NonLoopbackListen { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("not a loopback address"),
            "{refused}"
        );

        config.listen = socket_addr("127.0.0.1:0");
        bind_config(&config)
            .await
            .expect("loopback needs no tokens");

        config.auth.tokens.push(TokenConfig {
            token: Token::new("short"),
            role: Role::Admin,
        });
        let refused = bind_config(&config)
            .await
            .expect_err("a weak token is refused");
        assert!(matches!(refused, Error::Config(_)), "{refused:?}");
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        for addr in NON_LOOPBACK.map(socket_addr) {
            let refused = check_listen_addr(addr).expect_err("non-loopback must be refused");
            assert!(check_listen(addr, false).is_err());
            assert!(
                matches!(refused, Error::NonLoopbackListen { addr: a } if a == addr),
                "{refused:?}"
            );
        }
    }
}
