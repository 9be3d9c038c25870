//! Fan-out of instance events to live watchers, independent of activation: a watcher keeps
//! its subscription while the instance hibernates and reactivates.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::broadcast;

use super::api::InstanceEvent;

/// Events a slow watcher may fall behind by before it is told it lagged.
const CHANNEL_CAPACITY: usize = 256;

/// Per-instance broadcast channels, created on first subscription.
#[derive(Debug, Default)]
pub struct EventHub {
    channels: Mutex<HashMap<String, broadcast::Sender<InstanceEvent>>>,
}

impl EventHub {
    /// Subscribe to the events of `instance_id` from now on.
    pub fn subscribe(&self, instance_id: &str) -> broadcast::Receiver<InstanceEvent> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(instance_id.to_string())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Send `event` to the current watchers of its instance (none: nothing happens).
    pub fn publish(&self, event: &InstanceEvent) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(&event.instance_id) {
            if sender.receiver_count() == 0 {
                channels.remove(&event.instance_id);
            } else {
                let _ = sender.send(event.clone());
            }
        }
    }
}
