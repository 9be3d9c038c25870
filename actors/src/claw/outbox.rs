//! Notices: every message a class sends upward (an instance to its registry, the fleet to an
//! instance) or without waiting for an answer (an instance's target outcome to the fleet).
//!
//! A handler never sends these itself. Its transition carries them, the class commits the
//! transition, and only then hands them to [`deliver`], which sends them from a background task
//! with bounded concurrency. So a notice never announces something that did not commit, and no
//! handler ever waits on a class above it: the call graph between handlers stays
//! `registry → instance → fleet`, which cannot deadlock. A notice lost to a crash is repaired by
//! its receiver's own sweep (the registry's alarm, an instance's reconcile, the fleet's sweep).

use futures::StreamExt as _;

use super::fleet::FleetHandle;
use super::fleet::api::{TargetFailure, TargetNotice, TargetTicket};
use super::instance::InstanceHandle;
use super::registry::RegistryHandle;
use crate::Host;

/// Most notices delivered at once.
const CONCURRENCY: usize = 32;

/// How a provision ended, as the instance reports it to its registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProvisionEnd {
    /// The instance runs on its machine.
    Completed,
    /// The provision failed or was abandoned.
    Failed {
        /// Whether infrastructure may exist (a provider call may have taken effect).
        infra_may_exist: bool,
        /// Why.
        error: String,
    },
}

/// One message to deliver after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Instance → its registry: the provision of `reservation` ended.
    ProvisionEnded {
        /// The owner (its registry's id).
        owner: String,
        /// The registry's reservation.
        reservation: u64,
        /// The reporting instance.
        instance_id: String,
        /// How it ended.
        end: ProvisionEnd,
    },
    /// Instance → its registry: the instance is destroyed (destroy fencing).
    InstanceDestroyed {
        /// The owner (its registry's id).
        owner: String,
        /// The instance.
        instance_id: String,
    },
    /// Fleet → an instance: about one of its targets.
    Target {
        /// The instance.
        instance_id: String,
        /// What to tell it.
        notice: TargetNotice,
    },
    /// Fleet → an instance: a slot is free for this target. If the instance does not take
    /// it (busy, or unreachable), the fleet is told so the slot passes on.
    Wake {
        /// The instance.
        instance_id: String,
        /// The target (it travels along: the instance may not have been told yet).
        ticket: TargetTicket,
    },
    /// Instance → fleet: the outcome of its running target.
    TargetOutcome {
        /// The target.
        target_id: i64,
        /// `Err` when it failed.
        result: Result<(), TargetFailure>,
    },
}

/// Send `notices` from a background task of `host` (never from the handler that made them).
/// Failures are logged: each receiver repairs a lost notice on its own.
pub fn deliver(host: &Host, notices: Vec<Notice>) {
    if notices.is_empty() {
        return;
    }
    let runner = host.clone();
    host.spawn(async move {
        let host = &runner;
        futures::stream::iter(notices)
            .for_each_concurrent(CONCURRENCY, |notice| send(host, notice))
            .await;
    });
}

async fn send(host: &Host, notice: Notice) {
    match notice {
        Notice::ProvisionEnded {
            owner,
            reservation,
            instance_id,
            end,
        } => {
            let sent = match RegistryHandle::new(host, &owner) {
                Ok(registry) => match end {
                    ProvisionEnd::Completed => registry
                        .complete(reservation, &instance_id)
                        .await
                        .map(|_| ()),
                    ProvisionEnd::Failed {
                        infra_may_exist,
                        error,
                    } => {
                        registry
                            .fail(reservation, &instance_id, infra_may_exist, &error)
                            .await
                    }
                },
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                // The registry's alarm asks the instance again.
                tracing::warn!(%owner, reservation, %error, "could not report a provision's end");
            }
        }
        Notice::InstanceDestroyed { owner, instance_id } => {
            let sent = match RegistryHandle::new(host, &owner) {
                Ok(registry) => registry.instance_destroyed(&instance_id).await,
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                // A later admission prunes the route of a destroyed instance.
                tracing::warn!(%owner, instance = %instance_id, %error, "could not report a destroy");
            }
        }
        Notice::Target {
            instance_id,
            notice,
        } => {
            let sent = match InstanceHandle::new(host, &instance_id) {
                Ok(instance) => instance.target(notice).await,
                Err(e) => Err(e),
            };
            if let Err(error) = sent {
                // The instance's reconcile asks the fleet for its due target.
                tracing::debug!(instance = %instance_id, %error, "could not tell an instance about its target");
            }
        }
        Notice::Wake {
            instance_id,
            ticket,
        } => {
            let target_id = ticket.target_id;
            let attempted = match InstanceHandle::new(host, &instance_id) {
                Ok(instance) => instance.wake(ticket).await.unwrap_or(false),
                Err(_) => false,
            };
            // The fleet's periodic sweep drains again if this is lost.
            if !attempted && let Err(error) = FleetHandle::new(host).wake_done(target_id).await {
                tracing::debug!(target = target_id, %error, "could not release a wake reservation");
            }
        }
        Notice::TargetOutcome { target_id, result } => {
            if let Err(error) = FleetHandle::new(host).outcome(target_id, result).await {
                // The fleet's lease reaper resolves a target whose outcome was lost.
                tracing::warn!(target = target_id, %error, "could not report a scheduled target's outcome");
            }
        }
    }
}
