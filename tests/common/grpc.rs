//! The in-process clawdo server on loopback over a fresh (or a kept) temporary data
//! directory, configured by the test, with a handle on its [`Runtime`] and token-carrying gRPC
//! clients; the decoding of the `ErrorInfo` its refusals carry; waiting for an instance's
//! status through `Watch`; and provisioning N running instances over gRPC.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clawdo::Runtime;
use clawdo::actors::provider::sim::SimProvider;
use clawdo::auth::{Role, Token, TokenConfig};
use clawdo::client::{self, AdminClient, InstanceClient};
use clawdo::grpc::pb;
use clawdo::server;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use super::runtime::{instance_ids, one_owner_spec};

/// How long a test waits for a stopped server to finish before failing.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// An in-process server started by [`start_server`].
#[derive(Debug)]
pub struct TestServer {
    /// Where the gRPC server listens (`127.0.0.1:<ephemeral port>`).
    pub addr: SocketAddr,
    /// Sending (or dropping) makes [`server::serve`] shut down; `None` once sent.
    pub shutdown: Option<oneshot::Sender<()>>,
    /// The task running [`server::serve`]; yields its result once shut down.
    pub handle: JoinHandle<Result<(), server::Error>>,
    /// Keeps the data directory alive as long as the server.
    pub data_dir: TempDir,
    /// The runtime the server serves (stats, the sim provider).
    pub runtime: Arc<Runtime>,
    /// The config the server was started with.
    pub config: server::Config,
}

/// `[[auth.tokens]]` entry with `role` (`admin` or `owner:<key>`).
pub fn token(secret: &str, role: &str) -> TokenConfig {
    TokenConfig {
        token: Token::new(secret),
        role: Role::try_from(role.to_owned()).expect("a valid role"),
    }
}

/// Starts a server with default options over a temporary data directory.
pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

/// Starts a server over a temporary data directory, with options adjusted by `configure`.
pub async fn start_server_with(configure: impl FnOnce(&mut server::Config)) -> TestServer {
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    start_server_in(data_dir, configure).await
}

/// Starts a server over `data_dir` (e.g. one kept by [`TestServer::stop_keeping_data`]), with
/// options adjusted by `configure`.
pub async fn start_server_in(
    data_dir: TempDir,
    configure: impl FnOnce(&mut server::Config),
) -> TestServer {
    let mut config = server::Config {
        data_dir: data_dir.path().to_path_buf(),
        ..server::Config::default()
    };
    configure(&mut config);

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral loopback port");
    let addr = listener.local_addr().expect("read the bound address");
    let runtime = Arc::new(
        server::build_runtime(&config)
            .await
            .expect("build the runtime"),
    );
    let (shutdown, stop) = oneshot::channel::<()>();
    let handle = tokio::spawn(server::serve(
        config.clone(),
        Arc::clone(&runtime),
        listener,
        async move {
            // A dropped sender (a failed test) also stops the server.
            let _ = stop.await;
        },
    ));
    TestServer {
        addr,
        shutdown: Some(shutdown),
        handle,
        data_dir,
        runtime,
        config,
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

    /// An `InstanceService` client sending `token` (none: no authorization header).
    pub async fn instances(&self, token: Option<&str>) -> InstanceClient {
        client::instance_client(self.channel().await, token).expect("a sendable token")
    }

    /// An `AdminService` client sending `token`.
    pub async fn admin(&self, token: Option<&str>) -> AdminClient {
        client::admin_client(self.channel().await, token).expect("a sendable token")
    }

    /// The sim provider (the default provider).
    pub fn sim(&self) -> &Arc<SimProvider> {
        self.runtime
            .sim()
            .expect("the server uses the sim provider")
    }

    /// Object activations since the server started.
    pub fn activations(&self) -> u64 {
        self.runtime.stats().activations
    }

    /// Triggers shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already have stopped on its own; then there is nothing to stop.
            let _ = shutdown.send(());
        }
    }

    /// Triggers shutdown and returns what [`server::serve`] returned, failing the test if it
    /// takes longer than [`STOP_TIMEOUT`] or panicked.
    pub async fn stop(mut self) -> Result<(), server::Error> {
        self.begin_shutdown();
        tokio::time::timeout(STOP_TIMEOUT, self.handle)
            .await
            .expect("the server stops within the timeout")
            .expect("the server task did not panic")
    }

    /// Stops the server cleanly and hands back its data directory, for a restart with
    /// [`start_server_in`].
    pub async fn stop_keeping_data(mut self) -> TempDir {
        self.begin_shutdown();
        tokio::time::timeout(STOP_TIMEOUT, self.handle)
            .await
            .expect("the server stops within the timeout")
            .expect("the server task did not panic")
            .expect("clean shutdown");
        self.data_dir
    }
}

/// Longest wait for an asynchronous state change seen through `Watch`.
pub const WAIT: Duration = Duration::from_secs(10);

/// The `ErrorInfo` reason and metadata of `status` (fails the test if it carries none).
pub fn error_info(status: &Status) -> (String, HashMap<String, String>) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

/// The code of `status` with its `ErrorInfo` reason and metadata.
pub fn reason(status: &Status) -> (Code, String, HashMap<String, String>) {
    let (reason, metadata) = error_info(status);
    (status.code(), reason, metadata)
}

/// Watches `id` until it has `status`, bounded by [`WAIT`]; returns the instance then.
pub async fn wait_status(
    client: &mut InstanceClient,
    id: &str,
    status: pb::InstanceStatus,
) -> pb::Instance {
    wait_status_within(WAIT, client, id, status).await
}

/// Watches `id` until it has `status`, failing the test after `within`; returns the instance
/// then.
pub async fn wait_status_within(
    within: Duration,
    client: &mut InstanceClient,
    id: &str,
    status: pb::InstanceStatus,
) -> pb::Instance {
    tokio::time::timeout(
        within,
        client::wait_until(client, id, |i| i.status() == status, |_| Ok(())),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} did not become {status:?} in time"))
    .expect("watch")
}

/// Provisions `n` instances `<prefix>-<i>` over gRPC, one owner each (see
/// [`one_owner_spec`]), and waits (through `Watch`) until every one runs; returns their ids.
pub async fn provision_running(
    instances: &mut InstanceClient,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let ids = instance_ids(prefix, n);
    for id in &ids {
        let spec = one_owner_spec(id);
        instances
            .provision(pb::ProvisionRequest {
                owner: spec.owner,
                image_tag: spec.image_tag,
                pinned: spec.pinned,
                instance_id: spec.instance_id,
                idempotency_key: spec.idempotency_key,
            })
            .await
            .expect("provision");
    }
    for id in &ids {
        client::wait_running(instances, id, |_| Ok(()))
            .await
            .expect("the instance runs");
    }
    ids
}
