//! The autoscaler end to end: demand in the Control Plane API test server and etcd, the
//! controller in process on the simulated cloud, Workers on a real API server.

use ccm_harness as support;

use support::workers::ready_message;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use resource_controller::crd::{DesiredState, Worker, WorkerPhase, conditions};
use serde_json::json;
use support::{control_plane_server::Mode, fleet::Harness};

const WAIT: Duration = Duration::from_secs(60);
const MINUTE: Duration = Duration::from_secs(60);

fn in_minutes(m: i64) -> String {
    let t = Timestamp::now()
        .checked_add(Duration::from_secs((m.max(0) * 60) as u64))
        .expect("time");
    Timestamp::from_second(t.as_second() - if m < 0 { -m * 60 } else { 0 })
        .expect("time")
        .to_string()
}

fn definition(id: &str, nodes: u32, licenses: &[&str]) -> serde_json::Value {
    json!({
        "id": id, "name": id, "version": "1",
        "resource_requirements": {"cpu_cores": nodes * 2, "memory_gb": nodes * 8, "storage_gb": 20},
        "license_affinity": licenses, "node_count": nodes
    })
}

fn instance(id: &str, definition: &str, starts_in_minutes: i64) -> serde_json::Value {
    json!({"id": id, "definition_id": definition, "state": "SCHEDULED", "worker_id": null,
           "timeslot_start": in_minutes(starts_in_minutes), "timeslot_end": in_minutes(starts_in_minutes + 120)})
}

fn phase(w: &Worker) -> Option<WorkerPhase> {
    w.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn demand_within_the_lead_time_gets_exactly_the_workers_it_needs_once() {
    let h = Harness::new("scaleup", |_| {}).await;
    h.cp.add_definition(definition("d12", 12, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 5})).await;
    // Two labs of 12 nodes: two workers of 20. One more, far ahead, waits.
    h.cp.add_instance(instance("l1", "d12", 10));
    h.cp.add_instance(instance("l2", "d12", 20));
    h.cp.add_instance(instance("later", "d12", 180));
    h.announce("l1").await;
    let ws = h.wait_owned("t", "two", |ws| ws.len() == 2).await;
    for w in &ws {
        assert!(w.name_any().starts_with("t-"), "{}", w.name_any());
        let owner = &w.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("WorkerTemplate", "t")
        );
    }
    // Demand re-read many times makes no more.
    for n in 0..5 {
        h.announce(&format!("again-{n}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    h.wait_owned("t", "Running", |ws| {
        ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
    })
    .await;
    assert_eq!(h.owned("t").await.len(), 2);
    let status = h.template_status("t").await;
    let demand = status.demand.expect("demand in status");
    assert_eq!((demand.instances, demand.within_lead_time), (3, 2));
    assert_eq!(status.desired_workers, Some(2));
    assert!(status.last_scale_up.is_some());
    assert_eq!(status.workers.expect("counts").ready_of_total, "2/2");

    // The far one comes within the lead time: one more worker.
    h.cp.state().instances.retain(|i| i["id"] != "later");
    h.cp.add_instance(instance("later", "d12", 15));
    h.announce("later").await;
    h.wait_owned("t", "three", |ws| ws.len() == 3).await;

    // Every created worker has its own audit record, naming it, posted once.
    let ws = h.owned("t").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = h.cp.state().scaling_events.clone();
        let records = |w: &Worker| {
            let named = format!("{}/{}", h.ns.name, w.name_any());
            events
                .iter()
                .filter(|e| e["action"] == "create" && e["worker"] == named.as_str())
                .map(|e| {
                    assert_eq!(e["triggered_by"], "demand", "{e}");
                    e["id"].as_str().unwrap_or_default().to_owned()
                })
                .collect::<Vec<_>>()
        };
        if ws.iter().all(|w| records(w).len() == 1) {
            for w in &ws {
                assert_eq!(
                    records(w),
                    vec![format!("{}-create", w.uid().expect("uid"))]
                );
            }
            assert!(
                events.iter().all(|e| !e["worker"].is_null()),
                "no record without its worker: {events:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one record per created worker: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.finish().await;
}

#[tokio::test]
async fn demand_that_fits_goes_to_running_or_stopped_workers_and_max_workers_caps() {
    let h = Harness::new("fit", |_| {}).await;
    h.cp.add_definition(definition("d4", 4, &["ENTERPRISE"]));
    h.cp.add_definition(definition("d20", 20, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 2, "maxStoppedWorkers": 1}))
        .await;
    h.cp.add_instance(instance("a", "d4", 5));
    h.announce("a").await;
    let ws = h.one_running("t").await;
    let first = ws[0].name_any();
    // The platform places it there; another small lab fits the rest of that worker.
    h.cp.state().instances.retain(|i| i["id"] != "a");
    h.cp.set_capacity(
        &ws[0].uid().expect("uid"),
        json!({"worker_id": ws[0].uid(), "allocated": {"cpu_cores": 8, "memory_gb": 32, "storage_gb": 20, "nodes": 4},
               "running_instances": 1, "scheduled_instances": 0, "next_timeslot_start": null}),
    );
    h.cp.add_instance(instance("b", "d4", 5));
    h.announce("b").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.owned("t").await.len(),
        1,
        "no launch for demand that fits"
    );

    // Three labs of a whole worker each, with maxWorkers 2: one more worker, and a reason.
    for id in ["big1", "big2", "big3"] {
        h.cp.add_instance(instance(id, "d20", 5));
    }
    h.announce("big").await;
    h.wait_owned("t", "two", |ws| ws.len() == 2).await;
    // The status of the round that made the second worker may land just after it.
    let status = h
        .wait_template("t", "limited", |s| {
            conditions::is_true(&s.conditions, conditions::ConditionType::ScalingLimited)
        })
        .await;
    let limited = conditions::find(
        &status.conditions,
        conditions::ConditionType::ScalingLimited,
    )
    .expect("condition");
    assert_eq!(
        (limited.status.as_str(), limited.reason.as_str()),
        ("True", "MaxWorkersReached")
    );
    assert!(status.demand.expect("demand").unplaceable >= 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.owned("t").await.len(), 2, "capped");
    let _ = first;
    h.finish().await;
}

#[tokio::test]
async fn a_stopped_worker_is_started_before_any_is_created() {
    let h = Harness::new("restart", |_| {}).await;
    h.cp.add_definition(definition("d4", 4, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 3, "maxStoppedWorkers": 1}))
        .await;
    h.cp.add_instance(instance("a", "d4", 5));
    h.announce("a").await;
    let ws = h.one_running("t").await;
    let name = ws[0].name_any();
    // The platform placed the lab, and it ended; then the worker is stopped by hand.
    h.cp.state().instances.clear();
    h.announce("a").await;
    h.wait_demand("t", 0).await;
    h.set_desired(&name, "Stopped").await;
    h.wait_phase(&name, WorkerPhase::Stopped).await;
    h.cp.add_instance(instance("b", "d4", 5));
    h.announce("b").await;
    h.wait_phase(&name, WorkerPhase::Running).await;
    assert_eq!(h.owned("t").await.len(), 1, "started, not launched");
    h.finish().await;
}

#[tokio::test]
async fn a_license_no_template_offers_is_unplaceable_and_launches_nothing() {
    let h = Harness::new("unplaceable", |_| {}).await;
    h.cp.add_definition(definition("eval", 4, &["EVALUATION"]));
    h.template_with(json!({"maxWorkers": 3})).await;
    h.cp.add_instance(instance("x", "eval", 5));
    h.announce("x").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = h.template_status("t").await;
        if status.demand.as_ref().is_some_and(|d| d.unmatched == 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reported: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reasons: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"Unplaceable".to_owned()), "{reasons:?}");
    assert!(h.owned("t").await.is_empty());
    h.finish().await;
}

#[tokio::test]
async fn idle_workers_are_drained_then_kept_stopped_or_deleted_and_busy_ones_never() {
    let h = Harness::new("scaledown", |_| {}).await;
    h.cp.add_definition(definition("d4", 4, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 4, "maxStoppedWorkers": 1, "scaleDownGracePeriod": "1s", "maxConcurrentDrains": 1}))
        .await;
    for id in ["a", "b", "c", "d"] {
        // Each a whole worker's worth of cpu: four workers.
        h.cp.add_definition(json!({"id": format!("w{id}"), "name": id, "version": "1",
            "resource_requirements": {"cpu_cores": 48, "memory_gb": 8, "storage_gb": 20},
            "license_affinity": ["ENTERPRISE"], "node_count": 1}));
        h.cp.add_instance(instance(id, &format!("w{id}"), 5));
    }
    h.announce("abcd").await;
    let ws = h
        .wait_owned("t", "four Running", |ws| {
            ws.len() == 4 && ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
        })
        .await;
    // One worker stays busy, one is protected, both before the demand goes: any round after
    // that may drain what is idle.
    let busy = ws[0].name_any();
    h.cp.set_capacity(
        &ws[0].uid().expect("uid"),
        json!({"worker_id": ws[0].uid(), "allocated": {"cpu_cores": 2, "memory_gb": 8, "storage_gb": 20, "nodes": 1},
               "running_instances": 1, "scheduled_instances": 0, "next_timeslot_start": null}),
    );
    // As the platform placed it long ago: the worker's status shows it.
    h.wait_for(&busy, "busy in status", |w| {
        w.status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .is_some_and(|u| u.running_instances == Some(1))
    })
    .await;
    let protected = ws[1].name_any();
    h.workers()
        .patch(
            &protected,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"ccm.dev/do-not-disrupt": "true"}}})),
        )
        .await
        .expect("annotate");
    // Time for the controller's watch to deliver the annotation before the demand goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The labs were placed and ended: no demand.
    h.cp.state().instances.clear();
    h.announce("ended").await;
    // Two idle workers go: one kept stopped (pool of 1), one deleted; never both draining.
    let mut most_draining = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ws = h.owned("t").await;
        let draining = ws
            .iter()
            .filter(|w| {
                w.spec.desired_state == DesiredState::Draining
                    && matches!(phase(w), Some(WorkerPhase::Running | WorkerPhase::Draining))
            })
            .count();
        most_draining = most_draining.max(draining);
        let stopped = ws
            .iter()
            .filter(|w| phase(w) == Some(WorkerPhase::Stopped))
            .count();
        if ws.len() == 3 && stopped == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never scaled down: {:?}",
            ws.iter()
                .map(|w| (
                    w.name_any(),
                    phase(w),
                    w.spec.desired_state,
                    ready_message(w)
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        most_draining <= 1,
        "maxConcurrentDrains 1, saw {most_draining}"
    );
    let ws = h.owned("t").await;
    for keep in [&busy, &protected] {
        let w = ws
            .iter()
            .find(|w| &w.name_any() == keep)
            .expect("still there");
        assert_eq!(
            (phase(w), w.spec.desired_state),
            (Some(WorkerPhase::Running), DesiredState::Running),
            "{keep}"
        );
    }
    let status = h.template_status("t").await;
    assert!(status.last_scale_down.is_some());
    h.finish().await;
}

#[tokio::test]
async fn a_failed_owned_worker_is_replaced() {
    let h = Harness::new("replace", |_| {}).await;
    h.template_with(json!({"maxWorkers": 2, "minWorkers": 1}))
        .await;
    let ws = h.one_running("t").await;
    let first = ws[0].name_any();
    let id = ws[0]
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.clone())
        .expect("instance");
    // Its instance vanishes behind the controller's back: the worker fails.
    assert!(h.sim.vanish(&id), "the instance was there");
    h.wait_owned("t", "replaced", |ws| {
        ws.len() == 1 && ws[0].name_any() != first && phase(&ws[0]) == Some(WorkerPhase::Running)
    })
    .await;
    h.finish().await;
}

#[tokio::test]
async fn a_control_plane_outage_drains_nothing_and_the_audit_trail_catches_up() {
    let h = Harness::new("cpdown", |_| {}).await;
    h.template_with(json!({"maxWorkers": 3, "minWorkers": 1, "scaleDownGracePeriod": "1s"}))
        .await;
    h.one_running("t").await;
    // Down: usage and demand are unknown, so nothing is drained on stale numbers.
    h.cp.set_mode(Mode::Down);
    // A decision made meanwhile: the floor goes up to 2.
    h.templates()
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"scaling": {"minWorkers": 2}}})),
        )
        .await
        .expect("raise minWorkers");
    h.wait_owned("t", "two", |ws| ws.len() == 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ws = h.owned("t").await;
    assert!(
        ws.iter()
            .all(|w| w.spec.desired_state == DesiredState::Running),
        "nothing drained"
    );
    let before = h.cp.state().scaling_events.len();
    assert!(
        !h.cp
            .state()
            .scaling_events
            .iter()
            .any(|e| e["triggered_by"] == "min_workers"
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("minWorkers 2"))),
        "the API was down: {before} events"
    );
    h.cp.set_mode(Mode::Up);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !h.cp.state().scaling_events.iter().any(|e| {
        e["triggered_by"] == "min_workers"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("minWorkers 2"))
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit record never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // In order: the first floor's record before the second's.
    let events = h.cp.state().scaling_events.clone();
    let first = events.iter().position(|e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("minWorkers 1"))
    });
    let second = events.iter().position(|e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("minWorkers 2"))
    });
    assert!(first < second, "{events:?}");
    h.finish().await;
}

#[tokio::test]
async fn the_seat_budget_caps_licensed_workers_and_says_so() {
    let h = Harness::new("seats", |s| {
        s.license_seats = [("CML_Enterprise".to_owned(), 2)].into();
    })
    .await;
    h.cp.add_definition(definition("d12", 12, &["ENTERPRISE"]));
    h.licensed_template(json!({"maxWorkers": 5})).await;
    // Three labs of 12 nodes want three workers of 20; the budget has two seats.
    for id in ["l1", "l2", "l3"] {
        h.cp.add_instance(instance(id, "d12", 5));
    }
    h.announce("l1").await;
    let ws = h
        .wait_owned("t", "two licensed", |ws| {
            ws.len() == 2
                && ws.iter().all(|w| {
                    phase(w) == Some(WorkerPhase::Running)
                        && w.status.as_ref().is_some_and(|s| {
                            conditions::is_true(&s.conditions, conditions::ConditionType::Licensed)
                        })
                })
        })
        .await;
    assert_eq!(ws.len(), 2);
    let status = h
        .wait_template("t", "limited by seats", |s| {
            conditions::find(&s.conditions, conditions::ConditionType::ScalingLimited)
                .is_some_and(|c| c.status == "True" && c.reason == "LicenseSeatsExhausted")
        })
        .await;
    let seats = status.license_seats.expect("licenseSeats");
    assert_eq!(
        (
            seats.product.as_str(),
            seats.budget,
            seats.in_use,
            seats.available
        ),
        ("CML_Enterprise", 2, 2, 0)
    );
    assert_eq!(
        h.cml.seats_held().len(),
        2,
        "the Smart Account holds two seats"
    );
    let ctx = h.ctx.as_ref().expect("ctx");
    ctx.collect_metrics();
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains(r#"ccm_license_seats{product="CML_Enterprise",state="Held"} 2"#),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.owned("t").await.len(), 2, "no third worker");
    h.finish().await;
}

#[tokio::test]
async fn a_worker_gone_while_registered_reports_the_seat_to_people_and_the_platform() {
    let h = Harness::new("seatlost", |_| {}).await;
    h.licensed_template(json!({"minWorkers": 1, "maxWorkers": 1}))
        .await;
    let ws = h.one_running("t").await;
    let name = ws[0].name_any();
    let w = h
        .wait_for(&name, "licensed", |w| {
            w.status.as_ref().is_some_and(|s| {
                conditions::is_true(&s.conditions, conditions::ConditionType::Licensed)
            })
        })
        .await;
    let id = w
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.clone())
        .expect("instance");
    assert!(
        h.sim.vanish(&id),
        "the instance goes behind the controller's back"
    );
    // The failed worker is replaced at once; its seat is reported on the way out.
    let deadline = tokio::time::Instant::now() + WAIT;
    let record = loop {
        let events = h.cp.state().scaling_events.clone();
        if let Some(e) = events
            .iter()
            .find(|e| e["action"] == "license_seat_may_be_held")
        {
            break e.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record["worker"], format!("{}/{name}", h.ns.name));
    assert!(
        record["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("may still be held"),
        "{record}"
    );
    // The record is pushed before the reconcile publishes its Events.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let warned = h.events().await.into_iter().any(|e| {
            e.reason.as_deref() == Some("LicenseSeatMayBeHeld")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains(&format!("simulated-{id}")))
        });
        if warned {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a Warning names the product instance"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.finish().await;
}

#[tokio::test]
async fn scale_up_lead_time_auto_learns_from_the_templates_measured_launches() {
    let h = Harness::new("leadauto", |_| {}).await;
    h.template_with(json!({"minWorkers": 3, "maxWorkers": 3, "scaleUpLeadTime": "auto"}))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let status = h.template_status("t").await;
        let launches = status
            .boot_durations
            .as_ref()
            .and_then(|d| d.launch.as_ref())
            .map_or(0, |q| q.count);
        if launches == 3 && status.scale_up_lead_time.is_some() {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let measured = status.boot_durations.expect("measured");
    let launch = measured.launch.expect("launches");
    assert!(launch.p50_seconds <= launch.p95_seconds);
    assert_eq!(measured.recent.len(), 3, "{:?}", measured.recent);
    // The simulated cloud boots in moments: the lead time is the p95 plus its spread over the
    // p50 (at least 2 minutes), no longer the flag's 35 minutes.
    let lead = status.scale_up_lead_time.expect("lead").as_std();
    let spread = (launch.p95_seconds - launch.p50_seconds).clamp(120, 300);
    assert_eq!(lead, Duration::from_secs(launch.p95_seconds + spread));
    // No start measured yet: stopped workers would be started the whole lead time ahead.
    assert_eq!(status.start_lead_time, status.scale_up_lead_time);
    // Each worker shows its own launch, timed.
    for w in h.owned("t").await {
        let boot = w.status.and_then(|s| s.boot).expect("boot");
        assert_eq!(boot.kind, resource_controller::crd::BootKind::Launch);
        assert!(boot.seconds.is_some() && boot.ready_at.is_some());
    }
    h.finish().await;
}

#[tokio::test]
async fn with_auto_a_stopped_worker_is_held_for_later_demand_and_started_a_start_ahead() {
    let h = Harness::new("startlead", |_| {}).await;
    h.cp.add_definition(definition("d4", 4, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 3, "maxStoppedWorkers": 1, "scaleUpLeadTime": "auto"}))
        .await;
    h.cp.add_instance(instance("a", "d4", 5));
    h.announce("a").await;
    let name = h.one_running("t").await[0].name_any();
    h.cp.state().instances.clear();
    h.announce("a").await;
    h.wait_demand("t", 0).await;
    // Three starts measured (by hand, the simulated cloud starts in moments).
    for _ in 0..3 {
        h.set_desired(&name, "Stopped").await;
        h.wait_phase(&name, WorkerPhase::Stopped).await;
        h.set_desired(&name, "Running").await;
        h.wait_phase(&name, WorkerPhase::Running).await;
    }
    let status = h
        .wait_template("t", "with 3 starts measured", |s| {
            let starts = s.boot_durations.as_ref().and_then(|d| d.start.as_ref());
            starts.is_some_and(|q| q.count == 3) && s.start_lead_time < s.scale_up_lead_time
        })
        .await;
    // One launch is not enough for auto: the lead time is still the flag's 35 minutes.
    assert_eq!(
        status.scale_up_lead_time.map(|l| l.as_std()),
        Some(35 * MINUTE)
    );
    assert!(
        status
            .start_lead_time
            .is_some_and(|l| l.as_std() < 5 * MINUTE)
    );
    h.set_desired(&name, "Stopped").await;
    h.wait_phase(&name, WorkerPhase::Stopped).await;
    // A lab in 20 minutes: within the lead time, beyond the start lead time. The stopped worker
    // is held for it: not started yet, and nothing launched.
    h.cp.add_instance(instance("b", "d4", 20));
    h.announce("b").await;
    h.wait_template("t", "holding the stopped worker", |s| {
        s.demand.as_ref().is_some_and(|d| d.held_stopped == 1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ws = h.owned("t").await;
    assert_eq!(ws.len(), 1, "nothing launched for held demand");
    assert_eq!(ws[0].spec.desired_state, DesiredState::Stopped);
    // The lab moves to now: the held worker is started.
    h.cp.state().instances.clear();
    h.cp.add_instance(instance("b", "d4", 0));
    h.announce("b").await;
    h.wait_phase(&name, WorkerPhase::Running).await;
    assert_eq!(h.owned("t").await.len(), 1, "started, not launched");
    h.finish().await;
}

/// A day of the week that is not today in UTC, as the schedule spells it.
fn not_today() -> &'static str {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let today = Timestamp::now()
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .weekday()
        .to_monday_zero_offset();
    DAYS[(today as usize + 3) % 7]
}

#[tokio::test]
async fn a_scaling_schedule_sets_the_levels_and_an_unknown_zone_keeps_its_highest() {
    let h = Harness::new("schedule", |_| {}).await;
    // A window open all day every day raises minWorkers to 1; one on another day would raise
    // it to 2.
    let every_day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let windows = json!([
        {"days": every_day, "from": "00:00", "to": "00:00", "minWorkers": 1},
        {"days": [not_today()], "from": "00:00", "to": "00:00", "minWorkers": 2}
    ]);
    h.template_with(json!({"minWorkers": 0, "maxWorkers": 3,
        "schedule": {"timeZone": "Europe/Berlin", "windows": windows}}))
        .await;
    h.wait_owned("t", "one worker from the open window", |ws| {
        ws.len() == 1 && phase(&ws[0]) == Some(WorkerPhase::Running)
    })
    .await;
    let levels = h.template_status("t").await.scheduled_levels;
    assert_eq!(
        levels.map(|l| (l.min_workers, l.warm_workers)),
        Some((1, 0))
    );
    assert_eq!(
        h.owned("t").await.len(),
        1,
        "the other day's window is shut"
    );
    // A zone the controller does not know: the highest level of any window, and a Warning.
    h.templates()
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"scaling": {"schedule": {"timeZone": "Mars/Olympus_Mons"}}}}),
            ),
        )
        .await
        .expect("patch the zone");
    h.wait_owned("t", "the highest level", |ws| {
        ws.len() == 2 && ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
    })
    .await;
    let warned = h.events().await.into_iter().any(|e| {
        e.reason.as_deref() == Some("ScheduleInvalid")
            && e.note
                .as_deref()
                .is_some_and(|n| n.contains("Mars/Olympus_Mons"))
    });
    assert!(warned, "a Warning names the zone");
    h.finish().await;
}

#[tokio::test]
async fn the_alerts_and_the_dashboard_query_only_metrics_the_controller_exports() {
    let h = Harness::new("scrape", |_| {}).await;
    h.licensed_template(json!({"minWorkers": 1, "maxWorkers": 1}))
        .await;
    let name = h.one_running("t").await[0].name_any();
    h.wait_for(&name, "licensed", |w| {
        w.status.as_ref().is_some_and(|s| {
            conditions::is_true(&s.conditions, conditions::ConditionType::Licensed)
        })
    })
    .await;
    // A controller with every remote and licensing on, scraped over HTTP as Prometheus would.
    let body = support::monitoring::scrape(h.ctx.as_ref().expect("in-process controller")).await;
    let component = support::monitoring::component();
    let queried = support::monitoring::queried_metrics(&[
        &component.join("dashboard.json"),
        &component.join("prometheusrule.yaml"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let exported = support::openmetrics::series_names(&body);
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried, not exported: {missing:?}\n{body}"
    );
    // The series the alerts need exist before there is trouble, at zero.
    let samples = support::openmetrics::parse(&body).unwrap_or_else(|e| panic!("{e}"));
    let template = format!("{}/t", h.ns.name);
    let value = |name: &str, labels: &[(&str, &str)]| {
        let mut matching = samples.iter().filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        });
        matching.next().map(|s| s.value)
    };
    let overdue = [("template", template.as_str()), ("phase", "Draining")];
    assert_eq!(value("ccm_workers_overdue", &overdue), Some(0.0), "{body}");
    let limited = [
        ("template", template.as_str()),
        ("reason", "MaxWorkersReached"),
    ];
    assert_eq!(value("ccm_scaling_limited", &limited), Some(0.0), "{body}");
    let up = [("remote", "ControlPlane")];
    assert_eq!(value("ccm_remote_up", &up), Some(1.0), "{body}");
    let ready = [("template", template.as_str())];
    assert!(value("ccm_ready_workers", &ready).is_some(), "{body}");
    h.finish().await;
}

/// The platform places lab `instance` on `worker`: the instance names it, and the worker's
/// capacity record counts it (`nodes` of a `definition` built by [`definition`]).
fn place(h: &Harness, instance: &str, worker: &Worker, nodes: u32, next_in_minutes: i64) {
    let uid = worker.uid().expect("uid");
    // Both at once, as one platform transaction.
    let mut state = h.cp.state();
    state.capacities.insert(
        uid.clone(),
        json!({"worker_id": uid,
               "allocated": {"cpu_cores": nodes * 2, "memory_gb": nodes * 8, "storage_gb": 20, "nodes": nodes},
               "running_instances": 0, "scheduled_instances": 1,
               "next_timeslot_start": in_minutes(next_in_minutes)}),
    );
    for i in state.instances.iter_mut() {
        if i["id"] == instance {
            i["worker_id"] = json!(uid);
        }
    }
}

// Worker resyncs an hour apart: each worker's `status.usage` stays as it was when it became
// Running (nothing placed), so only a picture read with the demand knows the placements.
fn stale_usage(s: &mut resource_controller::controller::Settings) {
    s.resync_interval = Duration::from_secs(3600);
}

#[tokio::test]
async fn a_worker_with_warm_room_free_counts_as_warm_until_its_labs_fill_it() {
    let h = Harness::new("room", |_| {}).await;
    h.cp.add_definition(definition("d6", 6, &["ENTERPRISE"]));
    h.template_with(
        json!({"maxWorkers": 3, "warmWorkers": 1, "warmRoom": {"nodes": 8},
                           "scaleDownGracePeriod": "1h"}),
    )
    .await;
    let ws = h.one_running("t").await;
    let status = h
        .wait_template("t", "the warm scale-up", |s| s.last_scale_up.is_some())
        .await;
    let reason = status.last_scale_up.expect("scale-up").reason;
    assert_eq!(reason, "fewer than warmWorkers 1 with warmRoom free");
    // A lab of 6 placed on the warm worker leaves 14 of 20 nodes: room for 8, still warm.
    h.cp.add_instance(instance("l1", "d6", 5));
    place(&h, "l1", &ws[0], 6, 5);
    h.announce("l1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.owned("t").await.len(), 1, "a roomy worker is warm");
    // With 14 nodes placed, 6 are left: another warm worker.
    h.cp.add_instance(instance("l2", "d6", 5));
    place(&h, "l2", &ws[0], 14, 5);
    h.announce("l2").await;
    h.wait_owned("t", "a second warm worker", |ws| ws.len() == 2)
        .await;
    // The platform stops answering in time, so no picture shows the second worker once it is
    // Running: its usage is unknown, it may be warm, and no third worker is launched for it.
    h.cp.set_mode(Mode::Slow(Duration::from_secs(2)));
    h.wait_owned("t", "both Running", |ws| {
        ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
    })
    .await;
    for n in 0..4 {
        h.announce(&format!("round-{n}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(h.owned("t").await.len(), 2, "two warm workers, not three");
    h.cp.set_mode(Mode::Up);
    h.finish().await;
}

#[tokio::test]
async fn new_demand_is_weighed_against_the_placements_of_the_same_refresh() {
    let h = Harness::new("picture", stale_usage).await;
    h.cp.add_definition(definition("d12", 12, &["ENTERPRISE"]));
    h.cp.add_definition(definition("d8", 8, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 5, "scaleDownGracePeriod": "1h"}))
        .await;
    h.cp.add_instance(instance("l1", "d12", 10));
    h.cp.add_instance(instance("l2", "d12", 10));
    h.announce("l1").await;
    let ws = h
        .wait_owned("t", "two Running", |ws| {
            ws.len() == 2 && ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
        })
        .await;
    // The platform places both labs (12 of 20 nodes each) and two labs of 8 arrive: they fit
    // the 8 nodes left on each worker, so nothing is created.
    place(&h, "l1", &ws[0], 12, 10);
    place(&h, "l2", &ws[1], 12, 10);
    h.cp.add_instance(instance("n1", "d8", 10));
    h.cp.add_instance(instance("n2", "d8", 10));
    h.announce("n1").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.owned("t").await.len(),
        2,
        "demand that fits makes nothing"
    );

    // One more lab of 12 fits nowhere: exactly one worker, at once (not at a later round).
    h.cp.add_instance(instance("n3", "d12", 10));
    let put = tokio::time::Instant::now();
    h.announce("n3").await;
    h.wait_owned("t", "three", |ws| ws.len() == 3).await;
    let took = put.elapsed();
    assert!(took < Duration::from_secs(5), "created after {took:?}");
    for n in 0..3 {
        h.announce(&format!("again-{n}")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(h.owned("t").await.len(), 3, "exactly one");
    h.finish().await;
}

#[tokio::test]
async fn a_worker_with_a_placement_in_the_picture_is_never_proposed_for_a_drain() {
    let h = Harness::new("noproposal", stale_usage).await;
    h.cp.add_definition(definition("d12", 12, &["ENTERPRISE"]));
    h.template_with(json!({"maxWorkers": 3, "scaleDownGracePeriod": "1s"}))
        .await;
    h.cp.add_instance(instance("l1", "d12", 10));
    h.announce("l1").await;
    let ws = h.one_running("t").await;
    let name = ws[0].name_any();
    // Idle past the grace period by its (stale) status; the platform has just placed a lab.
    tokio::time::sleep(Duration::from_secs(2)).await;
    place(&h, "l1", &ws[0], 12, 30);
    for n in 0..5 {
        h.announce(&format!("round-{n}")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let logs = support::logs::captured();
    let about: Vec<&str> = logs.lines().filter(|l| l.contains(&name)).collect();
    let w = h.workers().get_opt(&name).await.expect("get");
    let w = w.unwrap_or_else(|| panic!("{name} is gone:\n{}", about.join("\n")));
    assert_eq!(w.spec.desired_state, DesiredState::Running);
    let drains: Vec<_> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScaledDown"))
        .filter_map(|e| e.note)
        .collect();
    assert!(drains.is_empty(), "{drains:?}");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("not draining after all") && l.contains(&name)),
        "the planner proposed a drain of {name}, caught only by the check before it"
    );
    h.finish().await;
}

/// A whole worker's cpu: one lab instance per worker.
fn whole_worker(h: &Harness, id: &str) {
    h.cp.add_definition(json!({"id": format!("w{id}"), "name": id, "version": "1",
        "resource_requirements": {"cpu_cores": 48, "memory_gb": 8, "storage_gb": 20},
        "license_affinity": ["ENTERPRISE"], "node_count": 1}));
    h.cp.add_instance(instance(id, &format!("w{id}"), 5));
}

fn usage(w: &Worker, running: u32) -> serde_json::Value {
    json!({"worker_id": w.uid(), "allocated": {"cpu_cores": 48 * running, "memory_gb": 8 * running,
           "storage_gb": 20 * running, "nodes": running},
           "running_instances": running, "scheduled_instances": 0, "next_timeslot_start": null})
}

async fn set_image(h: &Harness, image: serde_json::Value) {
    h.templates()
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": image}})),
        )
        .await
        .expect("patch the image");
}

fn scaling_limited(s: &resource_controller::crd::WorkerTemplateStatus) -> Option<(String, String)> {
    conditions::find(&s.conditions, conditions::ConditionType::ScalingLimited)
        .filter(|c| c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_template_whose_image_stops_resolving_still_drains_stops_starts_and_deletes() {
    let h = Harness::new("noimage", |_| {}).await;
    // maxWorkers 3: a worker whose placements the platform cannot answer yet counts as full, so
    // a busy machine could otherwise see a fourth launched for the three labs.
    h.template_with(json!({"maxWorkers": 3, "maxStoppedWorkers": 2,
                           "scaleDownGracePeriod": "1s", "maxConcurrentDrains": 2}))
        .await;
    for id in ["a", "b", "c"] {
        whole_worker(&h, id);
    }
    h.announce("abc").await;
    let ws = h
        .wait_owned("t", "three Running", |ws| {
            ws.len() == 3 && ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
        })
        .await;
    let (idle, failing, stopped) = (ws[0].clone(), ws[1].clone(), ws[2].name_any());
    // Two hold labs until the image is broken; the third is stopped by hand once demand is gone.
    for w in [&idle, &failing] {
        h.cp.set_capacity(&w.uid().expect("uid"), usage(w, 1));
        h.wait_for(&w.name_any(), "busy in status", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.usage.as_ref())
                .is_some_and(|u| u.running_instances == Some(1))
        })
        .await;
    }
    h.cp.state().instances.clear();
    h.announce("placed").await;
    h.wait_demand("t", 0).await;
    h.set_desired(&stopped, "Stopped").await;
    h.wait_phase(&stopped, WorkerPhase::Stopped).await;

    // The pattern matches no image any more: the template is not Ready.
    set_image(&h, json!({"id": null, "namePattern": "CML-0.0.*"})).await;
    h.wait_template("t", "not Ready", |s| {
        conditions::find(&s.conditions, conditions::ConditionType::Ready)
            .is_some_and(|c| c.status == "False")
    })
    .await;
    let launched = h.sim.launched();
    // One worker's labs end (it is drained and stopped); another's instance vanishes (it fails
    // and is deleted).
    h.cp.set_capacity(&idle.uid().expect("uid"), usage(&idle, 0));
    h.announce("ended").await;
    let instance = failing
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.clone())
        .expect("instance");
    assert!(h.sim.vanish(&instance), "the instance was there");
    h.wait_phase(&idle.name_any(), WorkerPhase::Stopped).await;
    h.wait_gone(&failing.name_any()).await;

    // Demand for three: the two stopped workers are started; the third lab waits, told why.
    for id in ["d", "e", "f"] {
        whole_worker(&h, id);
    }
    h.announce("def").await;
    for name in [&stopped, &idle.name_any()] {
        h.wait_phase(name, WorkerPhase::Running).await;
    }
    let status = h
        .wait_template("t", "limited for want of an image", |s| {
            scaling_limited(s).is_some_and(|(reason, _)| reason == "ImageUnresolved")
        })
        .await;
    let (_, message) = scaling_limited(&status).expect("limited");
    assert!(
        message.contains("1 lab instances due") && message.contains("CML-0.0.*"),
        "{message}"
    );
    assert_eq!(status.demand.map(|d| d.unplaceable), Some(1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.owned("t").await.len(),
        2,
        "no worker created without an image"
    );
    assert_eq!(h.sim.launched(), launched, "no launch attempted");

    // The image resolves again: the lab left waiting gets a new worker.
    set_image(
        &h,
        json!({"id": "ami-0c0a1b2c3d4e5f601", "namePattern": null}),
    )
    .await;
    h.wait_owned("t", "three again, all Running", |ws| {
        ws.len() == 3 && ws.iter().all(|w| phase(w) == Some(WorkerPhase::Running))
    })
    .await;
    assert!(h.sim.launched() > launched);
    let status = h.template_status("t").await;
    assert_ne!(
        scaling_limited(&status)
            .map(|(reason, _)| reason)
            .as_deref(),
        Some("ImageUnresolved")
    );
    h.finish().await;
}
