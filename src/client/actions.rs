//! The client side of `clawdo.v1.ActionService`, used by the `clawdo action …` commands and
//! the tests: connect with a bearer token, follow an action until it is done, and render
//! actions and targets as text or JSON.

use std::time::Duration;

use serde_json::json;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{BearerToken, Error, render_fields};
use crate::actors::claw::time::format_rfc3339;
use crate::grpc::pb;

/// An `ActionService` client that sends a bearer token with every call.
pub type ActionClient =
    pb::action_service_client::ActionServiceClient<InterceptedService<Channel, BearerToken>>;

/// An `ActionService` client over `channel` sending `token`.
pub fn action_client(channel: Channel, token: Option<&str>) -> Result<ActionClient, Error> {
    Ok(
        pb::action_service_client::ActionServiceClient::with_interceptor(
            channel,
            BearerToken::new(token)?,
        ),
    )
}

/// Whether the action is done: completed, or cancelled with nothing left running.
pub fn is_done(action: &pb::Action) -> bool {
    let running = action.counts.as_ref().map_or(0, |c| c.running);
    match action.status() {
        pb::ActionStatus::Completed => true,
        pb::ActionStatus::Cancelled => running == 0,
        _ => false,
    }
}

/// Poll `Get` every `interval` until the action [is done](is_done), calling `seen` with every
/// reading; fails with [`Error::WatchTimeout`] after `timeout`.
pub async fn watch_action(
    client: &mut ActionClient,
    action_id: i64,
    interval: Duration,
    timeout: Duration,
    mut seen: impl FnMut(&pb::ActionDetail),
) -> Result<pb::ActionDetail, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let detail = client
            .get(pb::GetActionRequest { action_id })
            .await?
            .into_inner();
        seen(&detail);
        if detail.action.as_ref().is_some_and(is_done) {
            return Ok(detail);
        }
        if tokio::time::Instant::now() + interval > deadline {
            return Err(Error::WatchTimeout(format!("action {action_id}")));
        }
        tokio::time::sleep(interval).await;
    }
}

/// `scheduled_restart` for `ACTION_KIND_SCHEDULED_RESTART`.
pub fn kind_name(kind: pb::ActionKind) -> String {
    strip(kind.as_str_name(), "ACTION_KIND_")
}

/// `running` for `ACTION_STATUS_RUNNING`.
pub fn action_status_name(status: pb::ActionStatus) -> String {
    strip(status.as_str_name(), "ACTION_STATUS_")
}

/// `applied` for `TARGET_STATUS_APPLIED`.
pub fn target_status_name(status: pb::TargetStatus) -> String {
    strip(status.as_str_name(), "TARGET_STATUS_")
}

fn strip(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// `3/10 terminal: 2 applied, 0 skipped, 1 failed, 0 cancelled; 1 running, 6 pending`.
pub fn counts_line(counts: &pb::TargetCounts) -> String {
    format!(
        "{}/{} terminal: {} applied, {} skipped, {} failed, {} cancelled; {} running, {} pending",
        terminal(counts),
        counts.total,
        counts.applied,
        counts.skipped,
        counts.failed,
        counts.cancelled,
        counts.running,
        counts.pending
    )
}

/// Targets that are done for good.
pub fn terminal(counts: &pb::TargetCounts) -> u64 {
    counts.applied + counts.skipped + counts.failed + counts.cancelled
}

/// An action as `key: value` lines (each ending in a newline).
pub fn render_action(action: &pb::Action) -> String {
    let counts = action.counts.unwrap_or_default();
    let rows = [
        ("id", action.id.to_string()),
        ("kind", kind_name(action.kind())),
        ("status", action_status_name(action.status())),
        (
            "image",
            action.image_tag.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "pin",
            action
                .pin
                .map_or_else(|| "-".into(), |p| if p { "pin" } else { "unpin" }.into()),
        ),
        ("run at", format_rfc3339(action.run_at_ms)),
        ("lease", format!("{} s", action.lease_ms / 1000)),
        ("created by", action.created_by.clone()),
        ("created", format_rfc3339(action.created_at_ms)),
        (
            "completed",
            action
                .completed_at_ms
                .map_or_else(|| "-".into(), format_rfc3339),
        ),
        ("targets", counts_line(&counts)),
    ];
    render_fields(&rows)
}

/// Actions as a table with a header row.
pub fn render_action_table(actions: &[pb::Action]) -> String {
    let mut out = format!(
        "{:<6}  {:<17}  {:<9}  {:<24}  {:>6}  {:>7}  {:>7}  {:>6}\n",
        "ID", "KIND", "STATUS", "RUN AT", "TOTAL", "APPLIED", "SKIPPED", "FAILED"
    );
    for a in actions {
        let c = a.counts.unwrap_or_default();
        out.push_str(&format!(
            "{:<6}  {:<17}  {:<9}  {:<24}  {:>6}  {:>7}  {:>7}  {:>6}\n",
            a.id,
            kind_name(a.kind()),
            action_status_name(a.status()),
            format_rfc3339(a.run_at_ms),
            c.total,
            c.applied,
            c.skipped,
            c.failed
        ));
    }
    out
}

/// Targets as a table with a header row.
pub fn render_targets(targets: &[pb::ActionTarget]) -> String {
    let mut out = format!(
        "{:<8}  {:<24}  {:>5}  {:<9}  {:<24}  {}\n",
        "TARGET", "INSTANCE", "STAGE", "STATUS", "CLAIMED", "REASON"
    );
    for t in targets {
        let line = format!(
            "{:<8}  {:<24}  {:>5}  {:<9}  {:<24}  {}",
            t.id,
            t.instance_id,
            t.stage,
            target_status_name(t.status()),
            t.slot_claimed_at_ms
                .map_or_else(|| "-".into(), format_rfc3339),
            if t.failure_reason.is_empty() {
                "-"
            } else {
                &t.failure_reason
            }
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An action as a JSON object.
pub fn action_json(action: &pb::Action) -> serde_json::Value {
    let c = action.counts.unwrap_or_default();
    json!({
        "id": action.id,
        "kind": kind_name(action.kind()),
        "status": action_status_name(action.status()),
        "image_tag": action.image_tag,
        "pin": action.pin,
        "run_at_ms": action.run_at_ms,
        "lease_ms": action.lease_ms,
        "created_by": action.created_by,
        "created_at_ms": action.created_at_ms,
        "updated_at_ms": action.updated_at_ms,
        "completed_at_ms": action.completed_at_ms,
        "counts": {
            "total": c.total, "pending": c.pending, "running": c.running, "applied": c.applied,
            "skipped": c.skipped, "failed": c.failed, "cancelled": c.cancelled,
        },
    })
}

/// A target as a JSON object.
pub fn target_json(t: &pb::ActionTarget) -> serde_json::Value {
    json!({
        "id": t.id,
        "instance_id": t.instance_id,
        "stage": t.stage,
        "status": target_status_name(t.status()),
        "run_at_ms": t.run_at_ms,
        "source_tag": t.source_tag,
        "slot_claimed_at_ms": t.slot_claimed_at_ms,
        "lease_expires_at_ms": t.lease_expires_at_ms,
        "completed_at_ms": t.completed_at_ms,
        "failure_reason": (!t.failure_reason.is_empty()).then_some(&t.failure_reason),
        "deferred_ms": t.deferred_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_render_with_their_counts() {
        let action = pb::Action {
            id: 7,
            kind: pb::ActionKind::ScheduledRestart as i32,
            status: pb::ActionStatus::Running as i32,
            run_at_ms: 1_714_564_800_000,
            lease_ms: 1_200_000,
            created_by: "admin".into(),
            counts: Some(pb::TargetCounts {
                total: 10,
                pending: 6,
                running: 1,
                applied: 2,
                failed: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render_action(&action);
        assert!(text.contains("kind:       scheduled_restart\n"), "{text}");
        assert!(
            text.contains("run at:     2024-05-01T12:00:00.000Z\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "3/10 terminal: 2 applied, 0 skipped, 1 failed, 0 cancelled; 1 running, 6 pending"
            ),
            "{text}"
        );
        assert!(!is_done(&action));
        assert_eq!(action_json(&action)["status"], "running");
        let table = render_action_table(&[action]);
        assert_eq!(table.lines().count(), 2, "{table}");
    }
}
