//! The gRPC edge: the generated protobuf types ([`pb`]), one adapter module per service, the
//! single domain-error → [`tonic::Status`] mapping ([`status`]), and [`serve`], which runs the
//! services (plus gRPC health and server reflection, so `grpcurl` works) on a listener until a
//! shutdown signal.
//!
//! Services here are thin: decode the request, make one call into the in-process
//! [`Runtime`], encode the reply. Prost types never leave this module. Every clawdo service is
//! wrapped in the bearer-token interceptor of [`crate::auth`] (`AdminService` and
//! `ActionService` for admins only);
//! health and reflection stay open. Requests larger than [`MAX_MESSAGE_SIZE`] are refused before
//! they are decoded.

pub mod action;
pub mod admin;
pub mod instance;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::{Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{AuthInterceptor, Authenticator};
use crate::runtime::Runtime;

/// Largest request message a clawdo service decodes, in bytes (1 MiB); larger ones are
/// refused with `OUT_OF_RANGE` before anything runs.
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// Protobuf messages and tonic stubs generated from `proto/clawdo/v1` (package `clawdo.v1`).
pub mod pb {
    tonic::include_proto!("clawdo.v1");

    /// The encoded `FileDescriptorSet` of every clawdo `.proto` file, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("clawdo_descriptor");
}

/// Why the gRPC server could not start, or failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server reflection service could not be built from the embedded descriptors.
    #[error("could not build the gRPC reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed while serving (accepting or driving connections).
    #[error("gRPC server failed")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves every clawdo gRPC service, gRPC health and server reflection on `listener` until
/// `shutdown` completes, then stops accepting and waits for open connections to finish.
///
/// Calls to clawdo services are authenticated by `auth`. Health reports `SERVING` for the
/// whole server (`""`) and for each clawdo service from the moment the listener is served,
/// and `NOT_SERVING` once `shutdown` has completed, so health `Watch` streams learn about the
/// shutdown while connections drain; open instance `Watch` streams end then.
pub async fn serve(
    runtime: Arc<Runtime>,
    auth: Arc<Authenticator>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&health_reporter, ServingStatus::Serving).await;
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        // Receivers live as long as the instance service; none left means nothing to end.
        let _ = stopping_tx.send(true);
        set_health(&health_reporter, ServingStatus::NotServing).await;
    };

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Unary calls are small request/response pairs: don't let Nagle delay them.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY on an accepted connection");
            }
        })
    });

    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(
            pb::admin_service_server::AdminServiceServer::new(admin::AdminHandler::new(
                Arc::clone(&runtime),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
            AuthInterceptor::admin_only(Arc::clone(&auth)),
        ))
        .add_service(InterceptedService::new(
            pb::action_service_server::ActionServiceServer::new(action::ActionHandler::new(
                Arc::clone(&runtime),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
            AuthInterceptor::admin_only(Arc::clone(&auth)),
        ))
        .add_service(InterceptedService::new(
            pb::instance_service_server::InstanceServiceServer::new(
                instance::InstanceHandler::new(runtime, stopping_rx),
            )
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
            AuthInterceptor::new(auth),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// The reply to a call: the in-process result encoded with `From`, or its error sent as the
/// status `to_status` (one of the [`status`] mappings) gives it.
fn reply<T, M: From<T>, E>(
    result: Result<T, E>,
    to_status: fn(E) -> Status,
) -> Result<Response<M>, Status> {
    result
        .map(|value| Response::new(value.into()))
        .map_err(to_status)
}

/// Reports `status` for the whole server (`""`) and for every clawdo service.
async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in [
        pb::action_service_server::SERVICE_NAME,
        pb::admin_service_server::SERVICE_NAME,
        pb::instance_service_server::SERVICE_NAME,
    ] {
        reporter.set_service_status(service, status).await;
    }
}
