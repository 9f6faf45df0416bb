//! Status: the template's workers by phase, what the autoscaler wants and why it holds back.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    controller::reasons,
    crd::{
        CapacityTotals, DemandStatus, ScalingRecord, Worker, WorkerCounts, WorkerPhase,
        WorkerTemplate, WorkerTemplateStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    licensing::LicenseReason,
    planner::{Action, Decision, Plan},
    telemetry::TemplateFigures,
};

/// Workers by phase; `expected` are created ones the cache does not show yet (Pending).
pub fn counts(workers: &[&Worker], expected: u32) -> WorkerCounts {
    let mut c = WorkerCounts {
        pending: expected,
        ..WorkerCounts::default()
    };
    for w in workers {
        let status = w.status.as_ref();
        if status
            .is_some_and(|s| conditions::is_true(&s.conditions, conditions::ConditionType::Ready))
        {
            c.ready += 1;
        }
        match status.and_then(|s| s.phase).unwrap_or(WorkerPhase::Pending) {
            WorkerPhase::Pending => c.pending += 1,
            WorkerPhase::Provisioning => c.provisioning += 1,
            WorkerPhase::Running => c.running += 1,
            WorkerPhase::Draining => c.draining += 1,
            WorkerPhase::Stopping => c.stopping += 1,
            WorkerPhase::Stopped => c.stopped += 1,
            WorkerPhase::Starting => c.starting += 1,
            WorkerPhase::Terminating => c.terminating += 1,
            WorkerPhase::Failed => c.failed += 1,
        }
    }
    c.total = workers.len() as u32 + expected;
    c.ready_of_total = format!("{}/{}", c.ready, c.total);
    c
}

/// The counts by phase name, for the metrics.
pub fn by_phase(c: &WorkerCounts) -> [(&'static str, u32); 9] {
    [
        ("Pending", c.pending),
        ("Provisioning", c.provisioning),
        ("Running", c.running),
        ("Draining", c.draining),
        ("Stopping", c.stopping),
        ("Stopped", c.stopped),
        ("Starting", c.starting),
        ("Terminating", c.terminating),
        ("Failed", c.failed),
    ]
}

/// Writes the plan's figures and the decisions carried out (`done`) into `status`.
pub fn apply(
    status: &mut WorkerTemplateStatus,
    template: &WorkerTemplate,
    plan: &Plan,
    done: &[Decision],
    counts: WorkerCounts,
    unmatched: u32,
    now: Timestamp,
) {
    let per = &template.spec.capacity;
    let running = u64::from(counts.running);
    status.capacity = Some(CapacityTotals {
        cpu_cores: running * u64::from(per.cpu_cores),
        memory_gib: running * u64::from(per.memory_gib),
        storage_gib: running * u64::from(per.storage_gib),
        max_nodes: running * u64::from(per.max_nodes),
    });
    status.workers = Some(counts);
    status.desired_workers = Some(plan.desired_workers);
    status.demand = Some(DemandStatus {
        instances: plan.demand,
        within_lead_time: plan.within_lead_time,
        unplaceable: plan.unplaceable,
        unmatched,
        held_stopped: plan.held_stopped.len() as u32,
    });
    let up: Vec<_> = done.iter().filter(|d| d.action.is_scale_up()).collect();
    if let Some(first) = up.first() {
        status.last_scale_up = Some(ScalingRecord {
            time: Time(now),
            count: up
                .iter()
                .map(|d| match d.action {
                    Action::Create { count } => count,
                    _ => 1,
                })
                .sum(),
            reason: first.reason.clone(),
        });
    }
    let down: Vec<_> = done
        .iter()
        .filter(|d| matches!(d.action, Action::Drain { .. }))
        .collect();
    if let Some(first) = down.first() {
        status.last_scale_down = Some(ScalingRecord {
            time: Time(now),
            count: down.len() as u32,
            reason: first.reason.clone(),
        });
    }
    let stamp = Stamp {
        generation: template.metadata.generation,
        now,
    };
    conditions::set(&mut status.conditions, scaling_limited(plan), stamp);
}

/// Why the autoscaler holds back from what demand and floors ask, if it does.
fn limit_reason(plan: &Plan) -> Option<&'static str> {
    let why = plan.held.as_ref()?;
    Some(if plan.seats_exhausted {
        LicenseReason::SeatsExhausted.as_str()
    } else if why.starts_with("maxWorkers") {
        reasons::MAX_WORKERS_REACHED
    } else {
        reasons::DEMAND_UNKNOWN
    })
}

/// The round's figures for the metrics.
pub fn figures(plan: &Plan, counts: &WorkerCounts) -> TemplateFigures {
    TemplateFigures {
        desired: plan.desired_workers,
        ready: counts.ready,
        demand: plan.demand,
        due: plan.within_lead_time,
        limited: limit_reason(plan),
    }
}

/// `ScalingLimited`: whether the autoscaler holds back from what demand and floors ask, and why.
fn scaling_limited(plan: &Plan) -> NewCondition {
    match (&plan.held, limit_reason(plan)) {
        (Some(why), Some(reason)) => {
            NewCondition::new(ConditionType::ScalingLimited, true, reason, why.clone())
        }
        _ => NewCondition::new(
            ConditionType::ScalingLimited,
            false,
            reasons::WITHIN_LIMITS,
            "the autoscaler can do what the demand and floors ask",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_autoscaler_holds_back_for_is_a_metric_label() {
        for reason in [
            reasons::MAX_WORKERS_REACHED,
            reasons::DEMAND_UNKNOWN,
            LicenseReason::SeatsExhausted.as_str(),
        ] {
            assert!(
                crate::telemetry::LIMIT_REASONS.contains(&reason),
                "{reason}"
            );
        }
    }
}
