//! Helpers shared by the integration tests: an in-process clawdo server on loopback over a
//! fresh temporary data directory.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the helpers"
)]
#![allow(clippy::expect_used, reason = "tests fail loudly on broken set-up")]

use std::net::SocketAddr;
use std::time::Duration;

use clawdo::server;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a test waits for a stopped server to finish before failing.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// An in-process server started by [`start_server`].
#[derive(Debug)]
pub struct TestServer {
    /// Where the gRPC server listens (`127.0.0.1:<ephemeral port>`).
    pub addr: SocketAddr,
    /// Sending (or dropping) makes [`server::run`] shut down; `None` once sent.
    pub shutdown: Option<oneshot::Sender<()>>,
    /// The task running [`server::run`]; yields its result once shut down.
    pub handle: JoinHandle<Result<(), server::Error>>,
    /// Keeps the data directory alive as long as the server.
    pub data_dir: TempDir,
}

/// Starts a server with default options over a temporary data directory.
pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

/// Starts a server over a temporary data directory, with options adjusted by `configure`.
pub async fn start_server_with(configure: impl FnOnce(&mut server::Config)) -> TestServer {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let mut config = server::Config {
        data_dir: data_dir.path().to_path_buf(),
        ..server::Config::default()
    };
    configure(&mut config);

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral loopback port");
    let addr = listener.local_addr().expect("read the bound address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let handle = tokio::spawn(server::run(config, listener, async move {
        // A dropped sender (a failed test) also stops the server.
        let _ = stop.await;
    }));
    TestServer {
        addr,
        shutdown: Some(shutdown),
        handle,
        data_dir,
    }
}

impl TestServer {
    /// The `http://` URL of the gRPC server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("a valid URL")
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// Triggers shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already have stopped on its own; then there is nothing to stop.
            let _ = shutdown.send(());
        }
    }

    /// Triggers shutdown and returns what [`server::run`] returned, failing the test if it
    /// takes longer than [`STOP_TIMEOUT`] or panicked.
    pub async fn stop(mut self) -> Result<(), server::Error> {
        self.begin_shutdown();
        tokio::time::timeout(STOP_TIMEOUT, self.handle)
            .await
            .expect("the server stops within the timeout")
            .expect("the server task did not panic")
    }
}
