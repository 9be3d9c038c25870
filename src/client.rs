//! The client side of clawdo's gRPC API, used by the `clawdo instance …` commands, the
//! `grpc_client` example and the tests: connect with a bearer token, wait for an instance
//! through `Watch`, and render instances and events as text or JSON.
//!
//! Errors keep the server's machine-readable reason: an error status prints as
//! `INSTANCE_BUSY: instance is busy (restarting)` (the `google.rpc.ErrorInfo` reason, else the
//! gRPC code, then the message).

pub mod actions;

use std::fmt;

use serde_json::json;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_types::StatusExt as _;

use crate::actors::claw::time::format_rfc3339;
use crate::grpc::pb;

/// The server the CLI talks to unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// An `InstanceService` client that sends a bearer token with every call.
pub type InstanceClient =
    pb::instance_service_client::InstanceServiceClient<InterceptedService<Channel, BearerToken>>;

/// An `AdminService` client that sends a bearer token with every call.
pub type AdminClient =
    pb::admin_service_client::AdminServiceClient<InterceptedService<Channel, BearerToken>>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server address is not a valid URI.
    #[error("invalid server address {server:?}")]
    InvalidServer {
        /// The address given.
        server: String,
        /// Why it is invalid.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server could not be reached.
    #[error("could not connect to {server}")]
    Connect {
        /// The address given.
        server: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The token cannot be sent in a header (it has spaces or non-ASCII characters).
    #[error("the token cannot be sent in an authorization header")]
    InvalidToken,
    /// The server answered with an error status.
    #[error("{}", describe_status(.0))]
    Call(Status),
    /// A `Watch` stream ended before the awaited state.
    #[error("the watch of instance {0} ended before it reached the awaited state")]
    WatchEnded(String),
    /// Provisioning ended in another state than `running`.
    #[error("instance {id} did not start: it is {status}{}", reason_suffix(.reason))]
    NotRunning {
        /// The instance.
        id: String,
        /// Its status (lower case).
        status: String,
        /// Why, as the server reported it (may be empty).
        reason: String,
    },
    /// Following something took longer than allowed.
    #[error("gave up watching {0}: it took longer than the timeout")]
    WatchTimeout(String),
    /// A command-line value is invalid.
    #[error("invalid {0}")]
    Usage(String),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("could not write the output")]
    Output(#[from] std::io::Error),
    /// The server's answer lacks something the protocol promises.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// The note printed (to stderr) when a provision did not create an instance: which earlier
/// provision the answer comes from, or that the owner is at its instance limit.
pub fn provision_note(reservation: Option<&pb::Reservation>) -> String {
    match reservation {
        Some(r) => format!(
            "note: idempotency key {:?} was used before; this is its provision (reservation {}, {})",
            r.idempotency_key,
            r.id,
            reservation_status_name(r.status())
        ),
        None => "note: the owner is at its instance limit; this is its existing instance \
                 (no machine was made)"
            .to_owned(),
    }
}

/// Lower-case name of a reservation status.
pub fn reservation_status_name(status: pb::ReservationStatus) -> &'static str {
    match status {
        pb::ReservationStatus::Unspecified => "unspecified",
        pb::ReservationStatus::Admitted => "admitted",
        pb::ReservationStatus::ProviderStarted => "provider_started",
        pb::ReservationStatus::Completed => "completed",
        pb::ReservationStatus::Released => "released",
        pb::ReservationStatus::FailedRequiresReconciliation => "failed_requires_reconciliation",
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::Call(status)
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

/// `REASON: message`, with the `google.rpc.ErrorInfo` reason when the status has one and the
/// gRPC code (e.g. `UNAVAILABLE`) otherwise.
pub fn describe_status(status: &Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_else(|| code_name(status.code()).to_owned());
    format!("{reason}: {}", status.message())
}

/// The canonical upper-snake name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A tonic interceptor adding `authorization: Bearer <token>` to every call (nothing without
/// a token). Its `Debug` form hides the token.
#[derive(Clone, Default)]
pub struct BearerToken {
    /// The header value, built once.
    header: Option<MetadataValue<Ascii>>,
}

impl BearerToken {
    /// An interceptor sending `token` (or nothing for `None`).
    pub fn new(token: Option<&str>) -> Result<BearerToken, Error> {
        let header = token
            .map(|token| {
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::InvalidToken)
            })
            .transpose()?;
        Ok(BearerToken { header })
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("header", &self.header.as_ref().map(|_| "Bearer ***"))
            .finish()
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A channel to `server` (e.g. `http://127.0.0.1:50051`), connected now.
pub async fn connect(server: &str) -> Result<Channel, Error> {
    Endpoint::from_shared(server.to_owned())
        .map_err(|source| Error::InvalidServer {
            server: server.to_owned(),
            source,
        })?
        .connect()
        .await
        .map_err(|source| Error::Connect {
            server: server.to_owned(),
            source,
        })
}

/// An `InstanceService` client over `channel` sending `token`.
pub fn instance_client(channel: Channel, token: Option<&str>) -> Result<InstanceClient, Error> {
    Ok(
        pb::instance_service_client::InstanceServiceClient::with_interceptor(
            channel,
            BearerToken::new(token)?,
        ),
    )
}

/// An `AdminService` client over `channel` sending `token`.
pub fn admin_client(channel: Channel, token: Option<&str>) -> Result<AdminClient, Error> {
    Ok(
        pb::admin_service_client::AdminServiceClient::with_interceptor(
            channel,
            BearerToken::new(token)?,
        ),
    )
}

/// One message of a `Watch` stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    /// The instance's full state.
    Snapshot(pb::Instance),
    /// One event.
    Event(pb::InstanceEvent),
}

/// Watch instance `id` until `done` holds for its state, calling `seen` with every message on
/// the way (the first is a snapshot); returns the instance as read with `Get` at that point.
///
/// Events carry only the status, so `done` sees the last snapshot with the latest event's
/// status applied. Fails with [`Error::WatchEnded`] if the stream ends first (the instance was
/// destroyed and `done` did not accept that).
pub async fn wait_until(
    client: &mut InstanceClient,
    id: &str,
    mut done: impl FnMut(&pb::Instance) -> bool,
    mut seen: impl FnMut(&WatchItem) -> Result<(), Error>,
) -> Result<pb::Instance, Error> {
    let mut stream = client
        .watch(pb::WatchInstanceRequest {
            instance_id: id.to_owned(),
        })
        .await?
        .into_inner();
    let mut current: Option<pb::Instance> = None;
    while let Some(message) = stream.message().await? {
        let item = match message.item {
            Some(pb::instance_watch_event::Item::Snapshot(instance)) => {
                WatchItem::Snapshot(instance)
            }
            Some(pb::instance_watch_event::Item::Event(event)) => WatchItem::Event(event),
            None => continue,
        };
        seen(&item)?;
        match item {
            WatchItem::Snapshot(instance) => current = Some(instance),
            WatchItem::Event(event) => {
                if let Some(instance) = &mut current {
                    instance.status = event.status;
                }
            }
        }
        if current.as_ref().is_some_and(&mut done) {
            return Ok(client
                .get(pb::GetInstanceRequest {
                    instance_id: id.to_owned(),
                })
                .await?
                .into_inner());
        }
    }
    Err(Error::WatchEnded(id.to_owned()))
}

/// Whether no operation holds the instance (it is `running`, `stopped` or `destroyed`).
pub fn is_settled(instance: &pb::Instance) -> bool {
    matches!(
        instance.status(),
        pb::InstanceStatus::Running | pb::InstanceStatus::Stopped | pb::InstanceStatus::Destroyed
    )
}

/// Watch a freshly provisioned instance until it settles: `Ok` with the instance once it is
/// `running`, [`Error::NotRunning`] (with the server's reason) if it settled otherwise.
pub async fn wait_running(
    client: &mut InstanceClient,
    id: &str,
    seen: impl FnMut(&WatchItem) -> Result<(), Error>,
) -> Result<pb::Instance, Error> {
    let instance = wait_until(client, id, is_settled, seen).await?;
    if instance.status() == pb::InstanceStatus::Running {
        Ok(instance)
    } else {
        Err(Error::NotRunning {
            id: instance.id.clone(),
            status: status_name(instance.status()),
            reason: instance.reason,
        })
    }
}

/// Every instance the caller may list (`owner`: only that owner's), following the pages.
pub async fn list_all(
    client: &mut InstanceClient,
    owner: Option<&str>,
) -> Result<Vec<pb::Instance>, Error> {
    let mut instances = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list(pb::ListInstancesRequest {
                owner: owner.map(str::to_owned),
                page_token,
                page_size: 0,
            })
            .await?
            .into_inner();
        instances.extend(page.instances);
        if page.next_page_token.is_empty() {
            return Ok(instances);
        }
        page_token = page.next_page_token;
    }
}

/// `running` for `INSTANCE_STATUS_RUNNING`.
pub fn status_name(status: pb::InstanceStatus) -> String {
    let name = status.as_str_name();
    name.strip_prefix("INSTANCE_STATUS_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// `running` for `DESIRED_STATE_RUNNING`.
pub fn desired_name(desired: pb::DesiredState) -> String {
    let name = desired.as_str_name();
    name.strip_prefix("DESIRED_STATE_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// An instance as `key: value` lines (each ending in a newline).
pub fn render_instance(instance: &pb::Instance) -> String {
    let optional_time = |ms: Option<i64>| ms.map(format_rfc3339).unwrap_or_else(|| "-".into());
    let rows = [
        ("id", instance.id.clone()),
        ("owner", instance.owner.clone()),
        ("status", status_name(instance.status())),
        ("desired", desired_name(instance.desired())),
        ("operation", or_dash(&instance.operation)),
        ("reason", or_dash(&instance.reason)),
        ("image", instance.image_tag.clone()),
        ("pinned", instance.pinned.to_string()),
        ("sandbox", instance.sandbox_id.clone()),
        (
            "machine",
            or_dash(instance.machine_id.as_deref().unwrap_or_default()),
        ),
        (
            "volume",
            or_dash(instance.volume_id.as_deref().unwrap_or_default()),
        ),
        ("created", format_rfc3339(instance.created_at_ms)),
        ("updated", format_rfc3339(instance.updated_at_ms)),
        (
            "last reconcile",
            optional_time(instance.last_reconcile_at_ms),
        ),
        (
            "next reconcile",
            optional_time(instance.next_reconcile_at_ms),
        ),
    ];
    render_fields(&rows)
}

/// `key: value` lines with the values aligned in one column (each ending in a newline).
fn render_fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out
}

/// Instances as an aligned table with a header row (each line ending in a newline).
pub fn render_table(instances: &[pb::Instance]) -> String {
    let header = ["ID", "OWNER", "STATUS", "IMAGE", "PINNED", "UPDATED"].map(String::from);
    let rows: Vec<[String; 6]> = instances
        .iter()
        .map(|i| {
            [
                i.id.clone(),
                i.owner.clone(),
                status_name(i.status()),
                i.image_tag.clone(),
                if i.pinned { "yes" } else { "no" }.to_owned(),
                format_rfc3339(i.updated_at_ms),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One watch message as a line (ending in a newline): time, kind, status, detail.
pub fn render_watch_item(item: &WatchItem) -> String {
    let (at, kind, status, detail) = match item {
        WatchItem::Snapshot(instance) => (
            instance.updated_at_ms,
            "snapshot".to_owned(),
            status_name(instance.status()),
            instance.reason.clone(),
        ),
        WatchItem::Event(event) => (
            event.at_ms,
            event.kind.clone(),
            status_name(event.status()),
            event.detail.clone(),
        ),
    };
    let line = format!("{}  {kind:<36} {status:<12} {detail}", format_rfc3339(at));
    format!("{}\n", line.trim_end())
}

/// An instance as a JSON object (statuses as lower-case names, times in Unix ms).
pub fn instance_json(instance: &pb::Instance) -> serde_json::Value {
    json!({
        "id": instance.id,
        "owner": instance.owner,
        "sandbox_id": instance.sandbox_id,
        "image_tag": instance.image_tag,
        "pinned": instance.pinned,
        "machine_id": instance.machine_id,
        "volume_id": instance.volume_id,
        "status": status_name(instance.status()),
        "reason": instance.reason,
        "desired": desired_name(instance.desired()),
        "created_at_ms": instance.created_at_ms,
        "updated_at_ms": instance.updated_at_ms,
        "last_reconcile_at_ms": instance.last_reconcile_at_ms,
        "next_reconcile_at_ms": instance.next_reconcile_at_ms,
        "operation": (!instance.operation.is_empty()).then_some(&instance.operation),
    })
}

/// An event as a JSON object.
pub fn event_json(event: &pb::InstanceEvent) -> serde_json::Value {
    json!({
        "instance_id": event.instance_id,
        "seq": event.seq,
        "at_ms": event.at_ms,
        "kind": event.kind,
        "status": status_name(event.status()),
        "detail": event.detail,
    })
}

/// A watch message as a JSON object: `{"snapshot": {…}}` or `{"event": {…}}`.
pub fn watch_item_json(item: &WatchItem) -> serde_json::Value {
    match item {
        WatchItem::Snapshot(instance) => json!({ "snapshot": instance_json(instance) }),
        WatchItem::Event(event) => json!({ "event": event_json(event) }),
    }
}

fn or_dash(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use std::collections::HashMap;

    use tonic::Code;

    use super::*;
    use crate::grpc::status::status_with_reason;

    fn instance() -> pb::Instance {
        pb::Instance {
            id: "inst-1".into(),
            owner: "user:42".into(),
            sandbox_id: "sbx-inst-1".into(),
            image_tag: "claw:1".into(),
            pinned: false,
            machine_id: Some("m-1".into()),
            volume_id: None,
            status: pb::InstanceStatus::Running as i32,
            reason: String::new(),
            desired: pb::DesiredState::Running as i32,
            created_at_ms: 0,
            updated_at_ms: 1_714_564_800_123,
            last_reconcile_at_ms: None,
            next_reconcile_at_ms: Some(1_714_565_100_000),
            operation: String::new(),
            upcoming_action: None,
        }
    }

    #[test]
    fn statuses_print_with_their_reason() {
        let status = status_with_reason(
            Code::FailedPrecondition,
            "instance is busy (restarting)",
            "INSTANCE_BUSY",
            HashMap::new(),
        );
        assert_eq!(
            Error::Call(status).to_string(),
            "INSTANCE_BUSY: instance is busy (restarting)"
        );
        assert_eq!(
            describe_status(&Status::unavailable("connection refused")),
            "UNAVAILABLE: connection refused"
        );
    }

    #[test]
    fn instances_render_as_key_value_lines() {
        let text = render_instance(&instance());
        assert!(text.contains("id:             inst-1\n"), "{text}");
        assert!(text.contains("status:         running\n"), "{text}");
        assert!(text.contains("volume:         -\n"), "{text}");
        assert!(
            text.contains("updated:        2024-05-01T12:00:00.123Z\n"),
            "{text}"
        );
    }

    #[test]
    fn tables_align_their_columns() {
        let mut other = instance();
        other.id = "inst-longer-id".into();
        other.status = pb::InstanceStatus::Stopped as i32;
        let table = render_table(&[instance(), other]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(
            lines[0].starts_with("ID              OWNER    STATUS"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("inst-1          user:42  running"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("inst-longer-id  user:42  stopped"),
            "{table}"
        );
    }

    #[test]
    fn json_uses_status_names() {
        let value = instance_json(&instance());
        assert_eq!(value["status"], "running");
        assert_eq!(value["desired"], "running");
        assert_eq!(value["volume_id"], serde_json::Value::Null);
        assert_eq!(value["operation"], serde_json::Value::Null);
        let event = pb::InstanceEvent {
            instance_id: "inst-1".into(),
            seq: 3,
            at_ms: 0,
            kind: "instance.restarted".into(),
            status: pb::InstanceStatus::Running as i32,
            detail: String::new(),
        };
        assert_eq!(event_json(&event)["kind"], "instance.restarted");
        let line = render_watch_item(&WatchItem::Event(event));
        assert!(
            line.starts_with("1970-01-01T00:00:00.000Z  instance.restarted"),
            "{line}"
        );
        assert!(line.trim_end().ends_with("running"), "{line}");
    }

    #[test]
    fn bearer_tokens_are_hidden_from_debug_output() {
        let token = BearerToken::new(Some("secret-token-0123456789")).expect("valid");
        assert!(!format!("{token:?}").contains("secret"));
        assert!(matches!(
            BearerToken::new(Some("bad\ntoken")),
            Err(Error::InvalidToken)
        ));
    }
}
