//! `clawdo.v1.AdminService`: operator calls, each a thin adapter over one [`Runtime`] call.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb;
use crate::runtime::{LatencySummary, Runtime, RuntimeStats};

/// Serves `clawdo.v1.AdminService` over a shared [`Runtime`].
#[derive(Debug, Clone)]
pub struct AdminHandler {
    /// The runtime every call is answered from.
    runtime: Arc<Runtime>,
}

impl AdminHandler {
    /// An `AdminService` answering from `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminHandler {
    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Ok(Response::new(self.runtime.stats().into()))
    }
}

impl From<RuntimeStats> for pb::StatsResponse {
    fn from(stats: RuntimeStats) -> Self {
        Self {
            resident_objects: stats.resident_objects,
            activations: stats.activations,
            armed_alarms: stats.armed_alarms,
            alarms_fired: stats.alarms_fired,
            alarm_lateness: Some(stats.alarm_lateness.into()),
            fleet_slots_in_use: stats.fleet.slots_in_use,
            fleet_max_concurrent: stats.fleet.max_concurrent,
            fleet_deferred_claims: stats.fleet.deferred_claims,
            fleet_claims_refused: stats.fleet.claims_refused,
            sim_peak_concurrent_mutations: stats.sim_peak_concurrent_mutations,
        }
    }
}

impl From<LatencySummary> for pb::LatencySummary {
    fn from(summary: LatencySummary) -> Self {
        Self {
            count: summary.count,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
            max_ms: summary.max_ms,
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn stats_encode_every_field() {
        let stats = RuntimeStats {
            resident_objects: 1,
            activations: 2,
            armed_alarms: 3,
            alarms_fired: 4,
            alarm_lateness: LatencySummary {
                count: 5,
                p50_ms: 0.5,
                p99_ms: 9.9,
                max_ms: 12.0,
            },
            ..RuntimeStats::default()
        };
        let encoded = pb::StatsResponse::from(stats);
        assert_eq!(
            encoded,
            pb::StatsResponse {
                resident_objects: 1,
                activations: 2,
                armed_alarms: 3,
                alarms_fired: 4,
                alarm_lateness: Some(pb::LatencySummary {
                    count: 5,
                    p50_ms: 0.5,
                    p99_ms: 9.9,
                    max_ms: 12.0,
                }),
                ..Default::default()
            }
        );
    }
}
