//! `clawdo.v1.InstanceService`: claw instance operations, each a thin adapter over one
//! [`Instances`] call made as the authenticated [`Caller`].
//!
//! Requests are decoded with `TryFrom` into the embedding API's arguments (a missing or empty
//! required field is `INVALID_ARGUMENT` naming the field, before anything is called), replies
//! are encoded with `From`, and every domain error goes through the one mapping in
//! [`super::status`]. `Watch` sends a snapshot, then the instance's events as they are
//! committed; a watcher that fell behind gets a fresh snapshot; the stream ends when the
//! instance is destroyed, the client goes away, or the server shuts down.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

use clawdo_actors::instance::{
    Desired, InstanceError, InstanceEvent, InstanceView, Status as InstanceStatus, validate,
};

use super::status::instance_error;
use super::{pb, reply};
use crate::auth;
use crate::instances::{Caller, Instances, MAX_PAGE, Page, ProvisionSpec, Provisioned};
use crate::runtime::Runtime;
use clawdo_actors::registry::{Reservation, ReservationStatus};

/// Page size of a `List` that asks for none.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Serves `clawdo.v1.InstanceService` over a shared [`Runtime`].
#[derive(Debug, Clone)]
pub struct InstanceHandler {
    /// The runtime every call is answered from.
    runtime: Arc<Runtime>,
    /// Turns `true` when the server shuts down, ending open `Watch` streams.
    shutdown: watch::Receiver<bool>,
}

impl InstanceHandler {
    /// An `InstanceService` answering from `runtime`; open `Watch` streams end once `shutdown`
    /// turns `true` (or its sender is dropped).
    pub fn new(runtime: Arc<Runtime>, shutdown: watch::Receiver<bool>) -> Self {
        Self { runtime, shutdown }
    }

    fn instances(&self) -> Instances {
        self.runtime.instances()
    }
}

/// The stream `Watch` answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::InstanceWatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::instance_service_server::InstanceService for InstanceHandler {
    async fn provision(
        &self,
        request: Request<pb::ProvisionRequest>,
    ) -> Result<Response<pb::ProvisionResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut message = request.into_inner();
        if let Caller::Owner(own) = &caller
            && message.owner.is_empty()
        {
            message.owner = own.clone();
        }
        let spec = ProvisionSpec::try_from(message).map_err(instance_error)?;
        let provisioned = self.instances().provision(&caller, spec).await;
        reply(provisioned, instance_error)
    }

    async fn get(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let caller = auth::caller(&request)?;
        let id = required_id(&request.get_ref().instance_id).map_err(instance_error)?;
        reply(self.instances().get(&caller, id).await, instance_error)
    }

    async fn list(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let query = ListQuery::try_from(request.into_inner()).map_err(instance_error)?;
        let page = self
            .instances()
            .list(
                &caller,
                query.owner.as_deref(),
                query.after.as_deref(),
                query.limit,
            )
            .await;
        reply(page, instance_error)
    }

    async fn start(
        &self,
        request: Request<pb::StartInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let caller = auth::caller(&request)?;
        self.plain_op(&caller, &request.get_ref().instance_id, PlainOp::Start)
            .await
    }

    async fn stop(
        &self,
        request: Request<pb::StopInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let caller = auth::caller(&request)?;
        self.plain_op(&caller, &request.get_ref().instance_id, PlainOp::Stop)
            .await
    }

    async fn restart(
        &self,
        request: Request<pb::RestartInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let caller = auth::caller(&request)?;
        self.plain_op(&caller, &request.get_ref().instance_id, PlainOp::Restart)
            .await
    }

    async fn change_version(
        &self,
        request: Request<pb::ChangeVersionRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let caller = auth::caller(&request)?;
        let change = VersionChange::try_from(request.into_inner()).map_err(instance_error)?;
        let view = self
            .instances()
            .change_version(&caller, &change.id, &change.image_tag, change.pin)
            .await;
        reply(view, instance_error)
    }

    async fn destroy(
        &self,
        request: Request<pb::DestroyInstanceRequest>,
    ) -> Result<Response<pb::Instance>, Status> {
        let caller = auth::caller(&request)?;
        self.plain_op(&caller, &request.get_ref().instance_id, PlainOp::Destroy)
            .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchInstanceRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = auth::caller(&request)?;
        let id = required_id(&request.get_ref().instance_id)
            .map_err(instance_error)?
            .to_owned();
        let instances = self.instances();
        let (snapshot, events) = instances
            .watch(&caller, &id)
            .await
            .map_err(instance_error)?;
        let watcher = Watcher::new(
            instances,
            caller,
            id,
            snapshot,
            events,
            self.shutdown.clone(),
        );
        Ok(Response::new(Box::pin(watcher.into_stream())))
    }
}

/// The operations that take nothing but an instance id.
#[derive(Debug, Clone, Copy)]
enum PlainOp {
    Start,
    Stop,
    Restart,
    Destroy,
}

impl InstanceHandler {
    /// Decode the id, run `op` as `caller`, encode the instance.
    async fn plain_op(
        &self,
        caller: &Caller,
        instance_id: &str,
        op: PlainOp,
    ) -> Result<Response<pb::Instance>, Status> {
        let id = required_id(instance_id).map_err(instance_error)?;
        let instances = self.instances();
        let view = match op {
            PlainOp::Start => instances.start(caller, id).await,
            PlainOp::Stop => instances.stop(caller, id).await,
            PlainOp::Restart => instances.restart(caller, id).await,
            PlainOp::Destroy => instances.destroy(caller, id).await,
        };
        reply(view, instance_error)
    }
}

/// What a `Watch` stream sends next.
enum Next {
    /// A snapshot is due (first message, or after falling behind).
    Snapshot(Box<InstanceView>),
    /// Forward the next event.
    Event,
    /// The instance was destroyed: send the rest of that commit's events (read back from the
    /// instance's log), then end.
    Drain(VecDeque<InstanceEvent>),
}

/// The state of one `Watch` stream.
struct Watcher {
    /// For a fresh snapshot after lagging, and the log after the destroying commit.
    instances: Instances,
    /// Who watches (reads are made with its own scope).
    caller: Caller,
    /// The watched instance.
    id: String,
    /// Events committed after the first snapshot was taken.
    events: broadcast::Receiver<InstanceEvent>,
    /// The server's shutdown flag.
    shutdown: watch::Receiver<bool>,
    /// `None` once the stream has ended.
    next: Option<Next>,
    /// Sequence number of the last event sent: an event at or below it is not sent again.
    last_seq: i64,
}

impl Watcher {
    fn new(
        instances: Instances,
        caller: Caller,
        id: String,
        snapshot: InstanceView,
        events: broadcast::Receiver<InstanceEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> Watcher {
        Watcher {
            instances,
            caller,
            id,
            events,
            shutdown,
            next: Some(Next::Snapshot(Box::new(snapshot))),
            last_seq: 0,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<pb::InstanceWatchEvent, Status>> + Send {
        futures::stream::unfold(self, |mut watcher| async move {
            let item = watcher.step().await?;
            Some((item, watcher))
        })
    }

    /// The next message, or `None` when the stream ends.
    async fn step(&mut self) -> Option<Result<pb::InstanceWatchEvent, Status>> {
        loop {
            let item = match self.next.take()? {
                Next::Snapshot(view) => {
                    let destroyed = view.status == InstanceStatus::Destroyed;
                    self.next = (!destroyed).then_some(Next::Event);
                    pb::instance_watch_event::Item::Snapshot((*view).into())
                }
                Next::Drain(mut rest) => {
                    let event = rest.pop_front()?;
                    self.next = Some(Next::Drain(rest));
                    if event.seq <= self.last_seq {
                        continue;
                    }
                    self.last_seq = event.seq;
                    pb::instance_watch_event::Item::Event(event.into())
                }
                Next::Event => {
                    let received = tokio::select! {
                        received = self.events.recv() => received,
                        () = server_stopping(&mut self.shutdown) => return None,
                    };
                    match received {
                        Ok(event) if event.seq <= self.last_seq => {
                            self.next = Some(Next::Event);
                            continue;
                        }
                        Ok(event) => {
                            self.last_seq = event.seq;
                            self.next = Some(if event.status == InstanceStatus::Destroyed {
                                Next::Drain(self.rest_of_log(event.seq).await)
                            } else {
                                Next::Event
                            });
                            pb::instance_watch_event::Item::Event(event.into())
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::debug!(instance = %self.id, missed, "watcher lagged; resending a snapshot");
                            // Skip the backlog the snapshot supersedes; an event committed
                            // between here and the read is both in the snapshot and sent after it.
                            self.events = self.events.resubscribe();
                            match self.instances.get(&self.caller, &self.id).await {
                                Ok(view) => {
                                    let destroyed = view.status == InstanceStatus::Destroyed;
                                    self.next = (!destroyed).then_some(Next::Event);
                                    pb::instance_watch_event::Item::Snapshot(view.into())
                                }
                                Err(error) => return Some(Err(instance_error(error))),
                            }
                        }
                        // The hub dropped the channel: no further event can arrive.
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            };
            return Some(Ok(pb::InstanceWatchEvent { item: Some(item) }));
        }
    }

    /// The logged events after `seq`: the rest of the commit that destroyed the instance, which
    /// may not have been published yet when its first event arrived.
    async fn rest_of_log(&self, seq: i64) -> VecDeque<InstanceEvent> {
        match self
            .instances
            .events(&self.caller, &self.id, seq, MAX_PAGE)
            .await
        {
            Ok(events) => events.into(),
            Err(error) => {
                tracing::debug!(instance = %self.id, %error, "could not read the event log after destroy");
                VecDeque::new()
            }
        }
    }
}

/// Completes once the server shuts down (the flag turns `true` or its sender is gone).
async fn server_stopping(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// `field` must be non-empty.
fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, InstanceError> {
    if value.is_empty() {
        Err(InstanceError::InvalidArgument {
            field,
            reason: "is required".into(),
        })
    } else {
        Ok(value)
    }
}

/// A required `instance_id` (its syntax is checked by the embedding API).
fn required_id(value: &str) -> Result<&str, InstanceError> {
    required("instance_id", value)
}

impl TryFrom<pb::ProvisionRequest> for ProvisionSpec {
    type Error = InstanceError;

    fn try_from(request: pb::ProvisionRequest) -> Result<Self, Self::Error> {
        required("owner", &request.owner)?;
        Ok(ProvisionSpec {
            owner: request.owner,
            image_tag: request.image_tag,
            pinned: request.pinned,
            instance_id: request.instance_id,
            idempotency_key: request.idempotency_key,
        })
    }
}

impl From<Provisioned> for pb::ProvisionResponse {
    fn from(p: Provisioned) -> Self {
        pb::ProvisionResponse {
            instance: Some(p.instance.into()),
            created: p.created,
            reservation: p.reservation.map(Into::into),
        }
    }
}

impl From<Page> for pb::ListInstancesResponse {
    fn from(page: Page) -> Self {
        pb::ListInstancesResponse {
            instances: page.instances.into_iter().map(Into::into).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }
    }
}

impl From<Reservation> for pb::Reservation {
    fn from(r: Reservation) -> Self {
        let status = match r.status {
            ReservationStatus::Admitted => pb::ReservationStatus::Admitted,
            ReservationStatus::ProviderStarted => pb::ReservationStatus::ProviderStarted,
            ReservationStatus::Completed => pb::ReservationStatus::Completed,
            ReservationStatus::Released => pb::ReservationStatus::Released,
            ReservationStatus::FailedRequiresReconciliation => {
                pb::ReservationStatus::FailedRequiresReconciliation
            }
        };
        pb::Reservation {
            id: r.id,
            owner: r.owner,
            instance_id: r.instance_id,
            idempotency_key: r.idempotency_key,
            status: status.into(),
            error: r.error.unwrap_or_default(),
            created_at_ms: r.created_at,
            updated_at_ms: r.updated_at,
        }
    }
}

/// A decoded `ListInstancesRequest`.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    owner: Option<String>,
    after: Option<String>,
    limit: usize,
}

impl TryFrom<pb::ListInstancesRequest> for ListQuery {
    type Error = InstanceError;

    fn try_from(request: pb::ListInstancesRequest) -> Result<Self, Self::Error> {
        let after = if request.page_token.is_empty() {
            None
        } else {
            validate::instance_id(&request.page_token).map_err(|_| {
                InstanceError::InvalidArgument {
                    field: "page_token",
                    reason: "is not a token returned by List".into(),
                }
            })?;
            Some(request.page_token)
        };
        let limit = match usize::try_from(request.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE),
            Err(_) => MAX_PAGE,
        };
        Ok(ListQuery {
            owner: request.owner,
            after,
            limit,
        })
    }
}

/// A decoded `ChangeVersionRequest`.
#[derive(Debug, PartialEq, Eq)]
struct VersionChange {
    id: String,
    image_tag: String,
    pin: Option<bool>,
}

impl TryFrom<pb::ChangeVersionRequest> for VersionChange {
    type Error = InstanceError;

    fn try_from(request: pb::ChangeVersionRequest) -> Result<Self, Self::Error> {
        required_id(&request.instance_id)?;
        required("image_tag", &request.image_tag)?;
        Ok(VersionChange {
            id: request.instance_id,
            image_tag: request.image_tag,
            pin: request.pin,
        })
    }
}

impl From<InstanceStatus> for pb::InstanceStatus {
    fn from(status: InstanceStatus) -> Self {
        match status {
            InstanceStatus::Provisioning => pb::InstanceStatus::Provisioning,
            InstanceStatus::Starting => pb::InstanceStatus::Starting,
            InstanceStatus::Running => pb::InstanceStatus::Running,
            InstanceStatus::Stopping => pb::InstanceStatus::Stopping,
            InstanceStatus::Stopped => pb::InstanceStatus::Stopped,
            InstanceStatus::Restarting => pb::InstanceStatus::Restarting,
            InstanceStatus::Updating => pb::InstanceStatus::Updating,
            InstanceStatus::Recovering => pb::InstanceStatus::Recovering,
            InstanceStatus::Destroying => pb::InstanceStatus::Destroying,
            InstanceStatus::Destroyed => pb::InstanceStatus::Destroyed,
        }
    }
}

impl From<Desired> for pb::DesiredState {
    fn from(desired: Desired) -> Self {
        match desired {
            Desired::Running => pb::DesiredState::Running,
            Desired::Stopped => pb::DesiredState::Stopped,
            Desired::Destroyed => pb::DesiredState::Destroyed,
        }
    }
}

impl From<InstanceView> for pb::Instance {
    fn from(view: InstanceView) -> Self {
        pb::Instance {
            id: view.id,
            owner: view.owner,
            sandbox_id: view.sandbox_id,
            image_tag: view.image_tag,
            pinned: view.pinned,
            machine_id: view.machine_id,
            volume_id: view.volume_id,
            status: pb::InstanceStatus::from(view.status).into(),
            reason: view.reason,
            desired: pb::DesiredState::from(view.desired).into(),
            created_at_ms: view.created_at,
            updated_at_ms: view.updated_at,
            last_reconcile_at_ms: view.last_reconcile_at,
            next_reconcile_at_ms: view.next_reconcile_at,
            operation: view
                .operation
                .map(|op| op.as_str().to_owned())
                .unwrap_or_default(),
            upcoming_action: view.upcoming_action.map(|t| {
                Box::new(pb::UpcomingAction {
                    action_id: t.action_id,
                    target_id: t.target_id,
                    kind: t.kind.as_str().to_owned(),
                    image_tag: t.image_tag,
                    run_at_ms: t.run_at,
                })
            }),
        }
    }
}

impl From<InstanceEvent> for pb::InstanceEvent {
    fn from(event: InstanceEvent) -> Self {
        pb::InstanceEvent {
            instance_id: event.instance_id,
            seq: event.seq,
            at_ms: event.at,
            kind: event.kind,
            status: pb::InstanceStatus::from(event.status).into(),
            detail: event.detail,
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use std::time::Duration;

    use clawdo_actors::instance::OpKind;

    use super::*;

    fn event(seq: i64, status: InstanceStatus) -> InstanceEvent {
        InstanceEvent {
            instance_id: "lag".into(),
            seq,
            at: seq,
            kind: "instance.test".into(),
            status,
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn a_lagging_watcher_gets_a_fresh_snapshot_and_stops_after_destroyed() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .build()
            .await
            .expect("a runtime");
        let instances = runtime.instances();
        let view = instances
            .provision(
                &Caller::Admin,
                ProvisionSpec {
                    owner: "user:1".into(),
                    instance_id: Some("lag".into()),
                    ..ProvisionSpec::default()
                },
            )
            .await
            .expect("provision")
            .instance;
        // A tiny channel stands in for the hub so that lagging is easy to provoke.
        let (events, receiver) = broadcast::channel(2);
        let (_stopping, shutdown) = watch::channel(false);
        let mut watcher = Watcher::new(
            instances,
            Caller::Admin,
            "lag".into(),
            view,
            receiver,
            shutdown,
        );
        let item = |step: Option<Result<pb::InstanceWatchEvent, Status>>| {
            step.expect("a message")
                .expect("not an error")
                .item
                .expect("an item")
        };

        assert!(matches!(
            item(watcher.step().await),
            pb::instance_watch_event::Item::Snapshot(s) if s.id == "lag"
        ));
        for seq in 1..=3 {
            events
                .send(event(seq, InstanceStatus::Running))
                .expect("a receiver");
        }
        assert!(
            matches!(
                item(watcher.step().await),
                pb::instance_watch_event::Item::Snapshot(s) if s.id == "lag"
            ),
            "lagging yields a fresh snapshot"
        );
        // Past the instance's own log, so that nothing is read back after it.
        events
            .send(event(1_000, InstanceStatus::Destroyed))
            .expect("a receiver");
        assert!(matches!(
            item(watcher.step().await),
            pb::instance_watch_event::Item::Event(e) if e.seq == 1_000
        ));
        assert!(
            watcher.step().await.is_none(),
            "the stream ends after destroyed"
        );
        runtime
            .shutdown(Duration::from_secs(5))
            .await
            .expect("clean shutdown");
    }

    #[tokio::test]
    async fn a_watcher_stops_when_the_server_does() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .build()
            .await
            .expect("a runtime");
        let (_events, receiver) = broadcast::channel::<InstanceEvent>(2);
        let (stopping, shutdown) = watch::channel(false);
        let mut watcher = Watcher {
            instances: runtime.instances(),
            caller: Caller::Admin,
            id: "any".into(),
            events: receiver,
            shutdown,
            next: Some(Next::Event),
            last_seq: 0,
        };
        stopping.send(true).expect("a receiver");
        assert!(watcher.step().await.is_none());
        runtime
            .shutdown(Duration::from_secs(5))
            .await
            .expect("clean shutdown");
    }

    fn invalid_field(error: InstanceError) -> &'static str {
        match error {
            InstanceError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn provision_requests_decode() {
        let spec = ProvisionSpec::try_from(pb::ProvisionRequest {
            owner: "user:1".into(),
            image_tag: Some("claw:1".into()),
            pinned: true,
            instance_id: None,
            idempotency_key: Some("k-1".into()),
        })
        .expect("valid");
        assert_eq!(
            spec,
            ProvisionSpec {
                owner: "user:1".into(),
                image_tag: Some("claw:1".into()),
                pinned: true,
                instance_id: None,
                idempotency_key: Some("k-1".into()),
            }
        );
        let missing = ProvisionSpec::try_from(pb::ProvisionRequest::default())
            .expect_err("owner is required");
        assert_eq!(invalid_field(missing), "owner");
    }

    #[test]
    fn list_requests_decode_with_page_bounds() {
        let query = ListQuery::try_from(pb::ListInstancesRequest::default()).expect("valid");
        assert_eq!(
            query,
            ListQuery {
                owner: None,
                after: None,
                limit: DEFAULT_PAGE_SIZE,
            }
        );
        let query = ListQuery::try_from(pb::ListInstancesRequest {
            owner: Some("org:a".into()),
            page_token: "inst-1".into(),
            page_size: 100_000,
        })
        .expect("valid");
        assert_eq!(query.limit, MAX_PAGE);
        assert_eq!(query.after.as_deref(), Some("inst-1"));
        assert_eq!(query.owner.as_deref(), Some("org:a"));
        let bad = ListQuery::try_from(pb::ListInstancesRequest {
            page_token: "not a token".into(),
            ..Default::default()
        })
        .expect_err("refused");
        assert_eq!(invalid_field(bad), "page_token");
    }

    #[test]
    fn change_version_requests_need_id_and_tag() {
        let change = VersionChange::try_from(pb::ChangeVersionRequest {
            instance_id: "i".into(),
            image_tag: "claw:2".into(),
            pin: Some(false),
        })
        .expect("valid");
        assert_eq!(change.pin, Some(false));
        let missing_id = VersionChange::try_from(pb::ChangeVersionRequest {
            image_tag: "claw:2".into(),
            ..Default::default()
        })
        .expect_err("refused");
        assert_eq!(invalid_field(missing_id), "instance_id");
        let missing_tag = VersionChange::try_from(pb::ChangeVersionRequest {
            instance_id: "i".into(),
            ..Default::default()
        })
        .expect_err("refused");
        assert_eq!(invalid_field(missing_tag), "image_tag");
    }

    #[test]
    fn every_status_encodes_to_its_own_value() {
        let mut seen: Vec<i32> = InstanceStatus::ALL
            .into_iter()
            .map(|s| pb::InstanceStatus::from(s) as i32)
            .collect();
        assert!(!seen.contains(&(pb::InstanceStatus::Unspecified as i32)));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), InstanceStatus::ALL.len());
        for status in InstanceStatus::ALL {
            let name = pb::InstanceStatus::from(status).as_str_name();
            assert_eq!(
                name,
                format!("INSTANCE_STATUS_{}", status.as_str().to_uppercase())
            );
        }
    }

    #[test]
    fn views_encode_every_field() {
        let view = InstanceView {
            id: "i-1".into(),
            owner: "user:1".into(),
            sandbox_id: "sbx-i-1".into(),
            image_tag: "claw:1".into(),
            pinned: true,
            machine_id: Some("m-1".into()),
            volume_id: None,
            status: InstanceStatus::Restarting,
            reason: "why".into(),
            desired: Desired::Running,
            created_at: 1,
            updated_at: 2,
            last_reconcile_at: Some(3),
            next_reconcile_at: None,
            operation: Some(OpKind::Restart),
            upcoming_action: None,
        };
        assert_eq!(
            pb::Instance::from(view),
            pb::Instance {
                id: "i-1".into(),
                owner: "user:1".into(),
                sandbox_id: "sbx-i-1".into(),
                image_tag: "claw:1".into(),
                pinned: true,
                machine_id: Some("m-1".into()),
                volume_id: None,
                status: pb::InstanceStatus::Restarting as i32,
                reason: "why".into(),
                desired: pb::DesiredState::Running as i32,
                created_at_ms: 1,
                updated_at_ms: 2,
                last_reconcile_at_ms: Some(3),
                next_reconcile_at_ms: None,
                operation: "restart".into(),
                upcoming_action: None,
            }
        );
    }
}
