//! A gRPC client of a running clawdo server: provision an instance for `user:demo`, wait for it
//! to run (through `Watch`), restart it, print every event on the way, and destroy it.
//!
//! ```text
//! cargo run -- serve &                                      # a server on 127.0.0.1:50051
//! cargo run --example grpc_client [-- http://127.0.0.1:50051]
//! ```
//!
//! With auth tokens configured on the server, pass one in `CLAWDO_TOKEN`.

use std::time::Duration;

use anyhow::Context as _;
use clawdo::client::{self, WatchItem};
use clawdo::grpc::pb;

/// Longest wait for one state change.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| client::DEFAULT_SERVER.to_owned());
    let token = std::env::var("CLAWDO_TOKEN").ok();
    let channel = client::connect(&server).await?;
    let mut instances = client::instance_client(channel, token.as_deref())?;

    let answer = instances
        .provision(pb::ProvisionRequest {
            owner: "user:demo".into(),
            image_tag: None,
            pinned: false,
            instance_id: None,
            idempotency_key: None,
        })
        .await
        .map_err(client::Error::from)?
        .into_inner();
    if !answer.created {
        println!("{}", client::provision_note(answer.reservation.as_ref()));
    }
    let created = answer
        .instance
        .ok_or_else(|| anyhow::anyhow!("the server answered without an instance"))?;
    println!("provisioned {} ({})", created.id, created.image_tag);

    // One watch for the whole session: a snapshot first, then every event in order.
    let mut watch = instances
        .watch(pb::WatchInstanceRequest {
            instance_id: created.id.clone(),
        })
        .await
        .map_err(client::Error::from)?
        .into_inner();
    let settled = next_settled(&mut watch).await?;
    anyhow::ensure!(
        settled == pb::InstanceStatus::Running,
        "{} did not start: {settled:?}",
        created.id
    );
    println!("{} runs", created.id);

    instances
        .restart(pb::RestartInstanceRequest {
            instance_id: created.id.clone(),
        })
        .await
        .map_err(client::Error::from)?;
    let settled = next_settled(&mut watch).await?;
    println!("{} restarted: {settled:?}", created.id);

    instances
        .destroy(pb::DestroyInstanceRequest {
            instance_id: created.id.clone(),
        })
        .await
        .map_err(client::Error::from)?;
    // The server ends the stream once the instance is destroyed.
    while let Some(item) = next_item(&mut watch).await? {
        print_item(&item);
    }
    println!("{} destroyed", created.id);
    Ok(())
}

/// Print messages until one shows the instance settled (running, stopped or destroyed) after
/// having been busy; returns that status.
async fn next_settled(
    watch: &mut tonic::Streaming<pb::InstanceWatchEvent>,
) -> anyhow::Result<pb::InstanceStatus> {
    let mut busy = false;
    while let Some(item) = next_item(watch).await? {
        print_item(&item);
        let status = match &item {
            WatchItem::Snapshot(instance) => instance.status(),
            WatchItem::Event(event) => event.status(),
        };
        let settled = matches!(
            status,
            pb::InstanceStatus::Running
                | pb::InstanceStatus::Stopped
                | pb::InstanceStatus::Destroyed
        );
        // A snapshot taken after the operation finished is settled at once.
        if settled && (busy || matches!(item, WatchItem::Snapshot(_))) {
            return Ok(status);
        }
        busy |= !settled;
    }
    anyhow::bail!("the watch ended early")
}

/// The next watch message (`None`: the stream ended), bounded by [`WAIT`].
async fn next_item(
    watch: &mut tonic::Streaming<pb::InstanceWatchEvent>,
) -> anyhow::Result<Option<WatchItem>> {
    let message = tokio::time::timeout(WAIT, watch.message())
        .await
        .context("no news from the server in time")?
        .map_err(client::Error::from)?;
    Ok(message.and_then(|m| match m.item? {
        pb::instance_watch_event::Item::Snapshot(instance) => Some(WatchItem::Snapshot(instance)),
        pb::instance_watch_event::Item::Event(event) => Some(WatchItem::Event(event)),
    }))
}

fn print_item(item: &WatchItem) {
    print!("  {}", client::render_watch_item(item));
}
