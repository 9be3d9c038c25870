//! The embedding API for scheduled admin actions (SPEC §6, §8): schedule a restart or version
//! change over many instances, read and list actions, cancel an action or one target, and
//! run an action (or target) now. Admin-only: the gRPC `ActionService` only lets admin tokens
//! through, and embedders call it as the operator.
//!
//! Every method validates its input before anything is written: unknown instances, bad tags,
//! bad stage layouts, empty or oversized target lists are refused with a typed
//! [`ActionError`] and nothing is stored. The fleet object does the rest in one transaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use clawdo_actors::claw::fleet::{
    ActionDetail, ActionError, ActionKind, ActionSummary, AuditEntry, FleetHandle, FleetServices,
    FleetStats, MAX_STAGES, MAX_TARGETS, NewAction, RunNowOutcome, ScheduleSpec, TargetView,
};
use clawdo_actors::claw::instance::{InstanceError, InstanceHandle, Status, validate};
use clawdo_actors::{Host, UnixMillis};

/// Shortest lease an action may ask for.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// Longest lease an action may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);
/// Largest page [`Actions::list`] returns.
pub const MAX_PAGE: usize = 500;
/// Instances read at once while checking a schedule's targets.
const READ_CONCURRENCY: usize = 64;

/// Scheduled-action operations over a runtime's host.
#[derive(Debug, Clone)]
pub struct Actions {
    host: Host,
    /// The fleet class's dependencies (its configuration and counters).
    fleet: Arc<FleetServices>,
}

/// An instance's error while checking a schedule's targets.
fn instance_error(e: InstanceError) -> ActionError {
    match e {
        InstanceError::NotFound(id) => ActionError::InstanceNotFound(id),
        InstanceError::Fault(fault) => ActionError::Fault(fault),
        other => ActionError::Internal(other.to_string()),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ActionError {
    ActionError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

impl Actions {
    /// Action operations on `host` (which must have the fleet and instance classes, the fleet
    /// registered with `fleet`).
    pub fn new(host: Host, fleet: Arc<FleetServices>) -> Actions {
        Actions { host, fleet }
    }

    /// Schedule an action. Destroyed instances are dropped from it; if every target is
    /// destroyed it is refused. Targets are told after the commit (bounded concurrency) and
    /// each arms its alarm at the target's `run_at`.
    pub async fn schedule(
        &self,
        actor: &str,
        spec: ScheduleSpec,
    ) -> Result<ActionSummary, ActionError> {
        let now = self.host.clock().now();
        let new = self.check(actor, spec, now).await?;
        self.fleet().schedule(new).await
    }

    /// Validate `spec`, check every target exists, read their images, drop destroyed ones.
    async fn check(
        &self,
        actor: &str,
        spec: ScheduleSpec,
        now: UnixMillis,
    ) -> Result<NewAction, ActionError> {
        if spec.targets.is_empty() {
            return Err(invalid("targets", "at least one target is needed"));
        }
        if spec.targets.len() > MAX_TARGETS {
            return Err(invalid(
                "targets",
                format!(
                    "{} targets given; at most {MAX_TARGETS} per action",
                    spec.targets.len()
                ),
            ));
        }
        match (spec.kind, &spec.image_tag) {
            (ActionKind::VersionChange, Some(tag)) => {
                validate::image_tag(tag).map_err(|e| invalid("image_tag", e.to_string()))?
            }
            (ActionKind::VersionChange, None) => {
                return Err(invalid("image_tag", "a version change needs an image tag"));
            }
            (ActionKind::ScheduledRestart, Some(_)) => {
                return Err(invalid("image_tag", "a restart takes no image tag"));
            }
            (ActionKind::ScheduledRestart, None) => {}
        }
        if spec.kind == ActionKind::ScheduledRestart && spec.pin.is_some() {
            return Err(invalid("pin", "a restart takes no pin"));
        }
        let lease = spec.lease.unwrap_or(self.fleet.config.lease);
        if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
            return Err(invalid("lease", "between 1 second and 24 hours"));
        }
        let run_at = spec.run_at.unwrap_or(now);
        let mut seen = HashSet::new();
        let mut targets = Vec::with_capacity(spec.targets.len());
        for id in spec.targets {
            validate::instance_id(&id).map_err(|e| invalid("targets", e.to_string()))?;
            if seen.insert(id.clone()) {
                targets.push(id);
            }
        }
        let stages = plan_stages(&spec.stages, targets.len(), run_at)?;
        let mut handles = Vec::with_capacity(targets.len());
        for id in &targets {
            let instance = InstanceHandle::new(&self.host, id).map_err(instance_error)?;
            if !instance.exists().await.map_err(instance_error)? {
                return Err(ActionError::InstanceNotFound(id.clone()));
            }
            handles.push(instance);
        }
        let views: Vec<Result<(String, Status), ActionError>> = futures::stream::iter(handles)
            .map(|instance| async move {
                let view = instance.get(None).await.map_err(instance_error)?;
                Ok((view.image_tag, view.status))
            })
            .buffered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut kept = Vec::with_capacity(targets.len());
        for ((position, id), view) in targets.into_iter().enumerate().zip(views) {
            let (tag, status) = view?;
            if status == Status::Destroyed {
                continue;
            }
            let stage = stages.stage_of(position);
            kept.push((id, tag, stage));
        }
        if kept.is_empty() {
            return Err(ActionError::AllDestroyed);
        }
        Ok(NewAction {
            kind: spec.kind,
            image_tag: spec.image_tag,
            pin: spec.pin,
            run_at,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
            stages: stages.stages,
            targets: kept,
            created_by: actor.to_owned(),
        })
    }

    /// One action with its stages and every target.
    pub async fn get(&self, action_id: i64) -> Result<ActionDetail, ActionError> {
        self.fleet().get(action_id).await
    }

    /// Actions, newest first: up to `limit` ([`MAX_PAGE`] cap) with an id below `before`.
    pub async fn list(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ActionSummary>, ActionError> {
        self.fleet().list(before, limit.clamp(1, MAX_PAGE)).await
    }

    /// Cancel an action: pending targets are cancelled (their instances told), running ones
    /// finish and are counted.
    pub async fn cancel(&self, action_id: i64) -> Result<ActionSummary, ActionError> {
        self.fleet().cancel(action_id).await
    }

    /// Cancel one pending target of an action.
    pub async fn cancel_target(
        &self,
        action_id: i64,
        target_id: i64,
    ) -> Result<TargetView, ActionError> {
        self.fleet().cancel_target(action_id, target_id).await
    }

    /// Make an action's pending targets (or one target) due now. Honours the cap: with every
    /// slot taken it is refused with [`ActionError::CapacityFull`] (and a retry estimate);
    /// `force` bypasses the cap (and stage order) and writes an audit row naming `actor`.
    pub async fn run_now(
        &self,
        actor: &str,
        action_id: i64,
        target_id: Option<i64>,
        force: bool,
    ) -> Result<RunNowOutcome, ActionError> {
        self.fleet()
            .run_now(action_id, target_id, force, actor)
            .await
    }

    /// The newest `limit` audit rows (forced run-nows), newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, ActionError> {
        self.fleet().audit(limit).await
    }

    /// The fleet's counters (slots in use, cap, deferred and refused claims).
    pub fn stats(&self) -> FleetStats {
        self.fleet.stats()
    }

    fn fleet(&self) -> FleetHandle {
        FleetHandle::new(&self.host)
    }
}

/// Stages as the fleet stores them, and which stage each target position falls in.
struct StagePlan {
    stages: Vec<(String, UnixMillis)>,
    /// Exclusive end position of every stage but the last.
    ends: Vec<usize>,
}

impl StagePlan {
    fn stage_of(&self, position: usize) -> u32 {
        let idx = self.ends.iter().take_while(|end| position >= **end).count();
        u32::try_from(idx).unwrap_or(u32::MAX)
    }
}

fn plan_stages(
    specs: &[clawdo_actors::fleet::StageSpec],
    targets: usize,
    run_at: UnixMillis,
) -> Result<StagePlan, ActionError> {
    if specs.is_empty() {
        return Ok(StagePlan {
            stages: vec![("all".to_owned(), run_at)],
            ends: Vec::new(),
        });
    }
    if specs.len() > MAX_STAGES {
        return Err(invalid("stages", format!("at most {MAX_STAGES} stages")));
    }
    let mut stages = Vec::with_capacity(specs.len());
    let mut ends = Vec::new();
    let mut end = 0usize;
    let mut previous = run_at;
    for (i, spec) in specs.iter().enumerate() {
        let name = spec.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(invalid(
                "stages",
                "a stage name is 1-64 printable characters",
            ));
        }
        if spec.count == 0 {
            return Err(invalid("stages", format!("stage {name:?} has no targets")));
        }
        let at = spec.run_at.unwrap_or(previous);
        if at < previous {
            return Err(invalid(
                "stages",
                format!("stage {name:?} starts before the stage (or action) before it"),
            ));
        }
        previous = at;
        end = end.saturating_add(spec.count);
        if i + 1 < specs.len() {
            if end >= targets {
                return Err(invalid(
                    "stages",
                    "the stages take every target before the last stage",
                ));
            }
            ends.push(end);
        }
        stages.push((name.to_owned(), at));
    }
    Ok(StagePlan { stages, ends })
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use clawdo_actors::fleet::StageSpec;

    use super::*;

    fn stage(name: &str, count: usize, run_at: Option<UnixMillis>) -> StageSpec {
        StageSpec {
            name: name.into(),
            count,
            run_at,
        }
    }

    #[test]
    fn targets_fall_into_stages_in_order() {
        let plan = plan_stages(
            &[stage("canary", 2, None), stage("rest", 1, Some(5_000))],
            5,
            1_000,
        )
        .expect("valid");
        assert_eq!(
            plan.stages,
            vec![("canary".to_owned(), 1_000), ("rest".to_owned(), 5_000)]
        );
        let stages: Vec<u32> = (0..5).map(|p| plan.stage_of(p)).collect();
        assert_eq!(stages, [0, 0, 1, 1, 1]);
    }

    #[test]
    fn bad_stage_layouts_are_refused() {
        for bad in [
            vec![stage("", 1, None)],
            vec![stage("a", 0, None)],
            vec![stage("a", 3, None), stage("b", 1, None)],
            vec![stage("a", 1, Some(10)), stage("b", 1, Some(5))],
            vec![stage("a", 1, Some(500))],
        ] {
            assert!(
                matches!(
                    plan_stages(&bad, 3, 1_000),
                    Err(ActionError::InvalidArgument {
                        field: "stages",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
