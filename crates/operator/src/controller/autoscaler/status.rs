//! Status (pure): the template's workers by phase, what the autoscaler wants and why it
//! holds back, from the round's facts, its plan and what acting carried out.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{act::Acted, boots, round::Round};
use crate::{
    controller::reasons,
    crd::{
        CapacityTotals, DemandStatus, ScalingRecord, Worker, WorkerCounts, WorkerPhase,
        WorkerTemplate, WorkerTemplateStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    licensing::LicenseReason,
    planner::{Action, Decision, Limit, Plan},
    telemetry::TemplateFigures,
};

/// The template's status after the round: `prior` with what the round learnt, the plan's
/// figures and the decisions carried out.
pub fn next(
    prior: &WorkerTemplateStatus,
    template: &WorkerTemplate,
    round: &Round,
    plan: &Plan,
    acted: &Acted,
) -> WorkerTemplateStatus {
    let learnt = &round.learnt;
    let mut status = WorkerTemplateStatus {
        last_scale_up: learnt.records.last_scale_up.clone(),
        last_scale_down: learnt.records.last_scale_down.clone(),
        license_seats: learnt.license_seats.clone(),
        boot_durations: learnt.boot_durations.clone(),
        scale_up_lead_time: Some(boots::shown(round.lead_time)),
        start_lead_time: Some(boots::shown(round.start_lead_time)),
        scheduled_levels: learnt.scheduled_levels.clone(),
        ..prior.clone()
    };
    let coming = round.expected.len() + acted.created.len();
    let counts = counts(&round.workers(), coming as u32);
    apply(
        &mut status,
        template,
        plan,
        &acted.done,
        counts,
        round.unplaceable.len() as u32,
        round.now,
    );
    status
}

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
fn apply(
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
    Some(match plan.held.as_ref()?.limit {
        Limit::CreationBlocked => reasons::IMAGE_UNRESOLVED,
        Limit::SeatsExhausted => LicenseReason::SeatsExhausted.as_str(),
        Limit::MaxWorkers => reasons::MAX_WORKERS_REACHED,
        Limit::DemandUnknown => reasons::DEMAND_UNKNOWN,
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
        (Some(held), Some(reason)) => NewCondition::new(
            ConditionType::ScalingLimited,
            true,
            reason,
            held.why.clone(),
        ),
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
    use std::{sync::Arc, time::Duration};

    use serde_json::json;

    use super::*;
    use crate::{
        controller::autoscaler::{
            history::Records,
            round::{Learnt, Round},
        },
        crd::{LicenseSeats, ScheduledLevels},
        planner::{Creation, Held, Trigger},
    };

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("time")
    }

    fn template() -> WorkerTemplate {
        crate::crd::fixtures::template(json!({"spec": {"scaling": {"maxWorkers": 5}}}))
    }

    fn worker(name: &str, phase: &str) -> Arc<Worker> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"templateRef": {"name": "t"}},
                "status": {"phase": phase}
            }))
            .expect("worker"),
        )
    }

    fn record(second: i64, reason: &str) -> ScalingRecord {
        ScalingRecord {
            time: Time(at(second)),
            count: 1,
            reason: reason.into(),
        }
    }

    /// A round of two workers (one Running, one Stopped) and one expected, 10 minutes lead.
    fn round() -> Round {
        let t = template();
        Round {
            key: "ns/t".into(),
            now: at(600),
            workers: vec![worker("w1", "Running"), worker("w2", "Stopped")],
            expected: vec!["w3".into()],
            views: Vec::new(),
            template: super::super::observe::template_view(&t, None, None),
            demand: Some(Vec::new()),
            unplaceable: vec!["lab-x".into()],
            lead_time: Duration::from_secs(600),
            start_lead_time: Duration::from_secs(300),
            creation: Creation::Allowed,
            learnt: Learnt {
                records: Records {
                    last_scale_up: Some(record(0, "earlier")),
                    last_scale_down: None,
                },
                license_seats: Some(LicenseSeats {
                    product: "CML_Enterprise".into(),
                    budget: 10,
                    in_use: 3,
                    available: 7,
                }),
                boot_durations: None,
                scheduled_levels: Some(ScheduledLevels {
                    min_workers: 1,
                    warm_workers: 0,
                }),
                schedule_problem: None,
            },
        }
    }

    fn decision(action: Action) -> Decision {
        Decision {
            action,
            trigger: Trigger::Demand,
            reason: "2 lab instances due".into(),
        }
    }

    fn acted(done: Vec<Decision>, created: &[&str]) -> Acted {
        Acted {
            done,
            created: created.iter().map(|s| s.to_string()).collect(),
            error: None,
        }
    }

    fn held(limit: Limit) -> Plan {
        Plan {
            held: Some(Held {
                limit,
                why: "why it holds back".into(),
            }),
            ..Plan::default()
        }
    }

    fn limited(s: &WorkerTemplateStatus) -> (String, String, String) {
        let c = conditions::find(&s.conditions, ConditionType::ScalingLimited).expect("condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn the_status_shows_the_round_its_plan_and_what_was_carried_out() {
        let t = template();
        let prior = WorkerTemplateStatus {
            resolved_image_id: Some("ami-1".into()),
            ..WorkerTemplateStatus::default()
        };
        let create = decision(Action::Create { count: 2 });
        let drain = decision(Action::Drain {
            worker: "w1".into(),
        });
        let plan = Plan {
            decisions: vec![create.clone(), drain.clone()],
            desired_workers: 4,
            demand: 3,
            within_lead_time: 2,
            ..Plan::default()
        };
        // (row, decisions carried out, created, last scale-up (time, count, reason), last scale-down count)
        let table = [
            (
                "nothing carried out keeps the records",
                vec![],
                vec![],
                (0, 1, "earlier"),
                None,
            ),
            (
                "a creation is the last scale-up",
                vec![create.clone()],
                vec!["w4", "w5"],
                (600, 2, "2 lab instances due"),
                None,
            ),
            (
                "a drain is the last scale-down",
                vec![drain.clone()],
                vec![],
                (0, 1, "earlier"),
                Some(1),
            ),
        ];
        for (row, done, created, (up_at, up_count, up_reason), down) in table {
            let s = next(&prior, &t, &round(), &plan, &acted(done, &created));
            let up = s.last_scale_up.clone().expect(row);
            assert_eq!(
                (up.time.0, up.count, up.reason.as_str()),
                (at(up_at), up_count, up_reason),
                "{row}"
            );
            assert_eq!(s.last_scale_down.as_ref().map(|d| d.count), down, "{row}");
            let counts = s.workers.clone().expect(row);
            let coming = 1 + created.len() as u32;
            assert_eq!(
                (counts.total, counts.pending, counts.running, counts.stopped),
                (2 + coming, coming, 1, 1),
                "{row}: expected and created workers count as Pending"
            );
            assert_eq!(s.desired_workers, Some(4), "{row}");
            let demand = s.demand.clone().expect(row);
            assert_eq!(
                (demand.instances, demand.within_lead_time, demand.unmatched),
                (3, 2, 1),
                "{row}"
            );
            assert_eq!(
                s.capacity.as_ref().map(|c| c.cpu_cores),
                Some(48),
                "{row}: one Running worker"
            );
            assert_eq!(
                s.resolved_image_id.as_deref(),
                Some("ami-1"),
                "{row}: the prior status stays"
            );
            assert_eq!(
                s.scale_up_lead_time.map(|d| d.to_string()).as_deref(),
                Some("10m"),
                "{row}"
            );
            assert_eq!(
                s.start_lead_time.map(|d| d.to_string()).as_deref(),
                Some("5m"),
                "{row}"
            );
            assert_eq!(
                s.license_seats.as_ref().map(|l| l.available),
                Some(7),
                "{row}"
            );
            assert_eq!(
                s.scheduled_levels.as_ref().map(|l| l.min_workers),
                Some(1),
                "{row}"
            );
        }
    }

    #[test]
    fn scaling_limited_names_what_holds_the_autoscaler_back() {
        let t = template();
        // (row, plan, status, reason)
        let table = [
            (
                "within limits",
                Plan::default(),
                "False",
                reasons::WITHIN_LIMITS,
            ),
            (
                "no image",
                held(Limit::CreationBlocked),
                "True",
                reasons::IMAGE_UNRESOLVED,
            ),
            (
                "no seat",
                held(Limit::SeatsExhausted),
                "True",
                "LicenseSeatsExhausted",
            ),
            (
                "maxWorkers",
                held(Limit::MaxWorkers),
                "True",
                reasons::MAX_WORKERS_REACHED,
            ),
            (
                "demand unknown",
                held(Limit::DemandUnknown),
                "True",
                reasons::DEMAND_UNKNOWN,
            ),
        ];
        for (row, plan, status, reason) in table {
            let s = next(
                &WorkerTemplateStatus::default(),
                &t,
                &round(),
                &plan,
                &acted(vec![], &[]),
            );
            let (got_status, got_reason, message) = limited(&s);
            assert_eq!(
                (got_status.as_str(), got_reason.as_str()),
                (status, reason),
                "{row}"
            );
            if status == "True" {
                assert_eq!(message, "why it holds back", "{row}");
            }
            let figures = figures(&plan, s.workers.as_ref().expect(row));
            assert_eq!(
                figures.limited,
                (status == "True").then_some(reason),
                "{row}"
            );
        }
    }

    #[test]
    fn every_reason_the_autoscaler_holds_back_for_is_a_metric_label() {
        for reason in [
            reasons::IMAGE_UNRESOLVED,
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
