//! Worker records in the Control Plane API and etcd, end to end: a real kube-apiserver, the
//! controller in process on the simulated cloud, the Control Plane API test server (which checks
//! every body against `api/control-plane.openapi.yaml`) and a real etcd that tests stop and start.

use ccm_harness as support;

use support::workers::ready_message;

use std::time::Duration;

use kube::api::DeleteParams;
use resource_controller::{
    crd::{Worker, WorkerPhase, conditions},
    demand::DemandSnapshot,
};
use serde_json::json;
use support::{
    control_plane_server::Mode,
    fleet::{Harness, RESYNC, TOKEN},
};

fn synced(w: &Worker) -> Option<(String, String)> {
    w.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::ConditionType::Synced))
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn each_step_of_a_worker_is_mirrored_in_both_remotes_and_removed_after_delete() {
    // No sweep during the test: the records must go with the Worker's finalizer.
    let h = Harness::new("mirror", |_| {}).await;
    h.template().await;
    let uid = h.worker("w1").await;
    let (cp, etcd) = h.wait_mirrored(&uid, "Running").await;
    for record in [&cp, &etcd] {
        assert_eq!(record["id"], uid.as_str());
        assert_eq!(record["name"], "w1");
        assert_eq!(record["namespace"], h.ns.name.as_str());
        assert_eq!(record["template"], "t");
        assert_eq!(record["license_type"], "ENTERPRISE");
        assert_eq!(record["accepting_assignments"], true);
        assert!(
            record["instance_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("i-"))
        );
        assert_eq!(record["capacity"]["max_nodes"], 20);
    }
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    assert_eq!(synced(&w), Some(("True".into(), "Synced".into())));
    let capacity = etcd_capacity(&h, &uid).await;
    assert_eq!(capacity["accepting_assignments"], true);

    // Steady state: nothing changed, nothing written.
    let puts = h.cp.state().puts.len();
    let revision = etcd_revision(&h).await;
    tokio::time::sleep(RESYNC * 2).await;
    assert_eq!(
        etcd_revision(&h).await,
        revision,
        "no etcd write when nothing changed"
    );
    assert_eq!(
        h.cp.state().puts.len(),
        puts,
        "no write when nothing changed"
    );

    h.set_desired("w1", "Stopped").await;
    let (cp, _) = h.wait_mirrored(&uid, "Stopped").await;
    assert_eq!(cp["accepting_assignments"], false);
    assert_eq!(
        etcd_capacity(&h, &uid).await["accepting_assignments"],
        false
    );
    let phases: Vec<String> =
        h.cp.state()
            .puts
            .iter()
            .filter(|p| p["id"] == uid.as_str())
            .map(|p| p["phase"].as_str().unwrap_or_default().to_owned())
            .collect();
    assert!(
        phases.contains(&"Draining".to_owned()) || phases.contains(&"Stopping".to_owned()),
        "the way down is mirrored too: {phases:?}"
    );
    assert!(
        phases[0] == "Pending" || phases[0] == "Provisioning",
        "the way up too: {phases:?}"
    );

    h.workers()
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_gone("w1").await;
    h.wait_unmirrored(&uid).await;
    h.finish().await;
}

async fn etcd_revision(h: &Harness) -> i64 {
    let mut kv = etcd_client::Client::connect([h.etcd.endpoint()], None)
        .await
        .expect("raw etcd");
    kv.get("/", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

async fn etcd_capacity(h: &Harness, uid: &str) -> serde_json::Value {
    let mut kv = etcd_client::Client::connect([h.etcd.endpoint()], None)
        .await
        .expect("raw etcd");
    let got = kv
        .get(format!("/ccm/workers/{uid}/capacity"), None)
        .await
        .expect("get");
    serde_json::from_slice(got.kvs()[0].value()).expect("json")
}

#[tokio::test]
async fn remotes_down_never_hold_up_a_worker_and_converge_when_back() {
    let h = Harness::new("outage", |s| {
        s.record_sweep_interval = Duration::from_secs(1)
    })
    .await;
    h.cp.set_mode(Mode::Down);
    h.etcd.stop();
    // With the Control Plane API down, a worker's lab instances are unknown, so a delete drains
    // until drainTimeout: unknown is never idle.
    h.template_with(json!({"maxWorkers": 5, "drainTimeout": "3s"}))
        .await;
    let uid = h.worker("w1").await;
    let gone = h.worker("w2").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let (status, reason) = synced(&w).expect("Synced is set");
    assert_eq!(status, "False");
    assert!(reason.starts_with("ControlPlane"), "{reason}");
    let message = w
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::ConditionType::Synced))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("ControlPlane") && message.contains("Etcd"),
        "{message}"
    );
    // w2 lives and goes while both are down.
    h.wait_phase("w2", WorkerPhase::Running).await;
    let started = tokio::time::Instant::now();
    h.workers()
        .delete("w2", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_for("w2", "draining on unknown usage", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Draining)
            && ready_message(w).contains("lab instances unknown")
    })
    .await;
    h.wait_gone("w2").await;
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "the delete was held up past drainTimeout: {:?}",
        started.elapsed()
    );
    let warned: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        warned.iter().any(|r| r.starts_with("ControlPlane")),
        "{warned:?}"
    );
    assert!(warned.contains(&"DrainTimeout".to_owned()), "{warned:?}");

    // A record of w2 reached neither remote; put one there as a remote that missed the delete
    // would hold, for the sweep to find.
    h.cp.set_mode(Mode::Up);
    h.etcd.resume();
    let stale = json!({
        "id": gone, "name": "w2", "namespace": h.ns.name, "template": "t",
        "license_type": "ENTERPRISE", "phase": "Running", "accepting_assignments": true,
        "instance_id": null, "instance_type": null, "availability_zone": null,
        "private_ip": null, "public_ip": null, "cml_endpoint": null, "cml_version": null,
        "capacity": {"cpu_cores": 48, "memory_gb": 192, "storage_gb": 500, "max_nodes": 20},
        "port_range": {"start": 2000, "end": 9999}, "observed_generation": 1,
        "updated_at": "2026-11-27T07:00:00Z"
    });
    h.cp.state().workers.insert(gone.clone(), stale.clone());
    let mut kv = etcd_client::Client::connect([h.etcd.endpoint()], None)
        .await
        .expect("raw etcd");
    kv.put(
        format!("/ccm/workers/{gone}/state"),
        stale.to_string(),
        None,
    )
    .await
    .expect("put stale");

    let back = tokio::time::Instant::now();
    h.wait_mirrored(&uid, "Running").await;
    let converged = back.elapsed();
    h.wait_unmirrored(&gone).await;
    let w = h
        .wait_for("w1", "Synced", |w| {
            synced(w).is_some_and(|(s, _)| s == "True")
        })
        .await;
    assert!(synced(&w).is_some());
    println!("converged {converged:?} after the remotes came back (resync {RESYNC:?})");
    assert!(
        converged <= RESYNC + Duration::from_secs(2),
        "converged in {converged:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn garbage_and_errors_from_the_control_plane_show_as_a_condition_and_are_retried_boundedly() {
    let h = Harness::new("garbage", |_| {}).await;
    h.cp.set_mode(Mode::Garbage);
    h.template().await;
    let uid = h.worker("w1").await;
    h.wait_for("w1", "ControlPlaneBadResponse", |w| {
        synced(w).is_some_and(|(_, r)| r == "ControlPlaneBadResponse")
    })
    .await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.cp.set_mode(Mode::Failing);
    h.wait_for("w1", "ControlPlaneServerError", |w| {
        synced(w).is_some_and(|(_, r)| r == "ControlPlaneServerError")
    })
    .await;
    // Retries back off: over 3 s of failing, far fewer than one try per poll.
    let before = h.cp.state().requests.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries = h.cp.state().requests.len() - before;
    assert!(tries <= 8, "{tries} tries in 3 s");
    let reasons: Vec<String> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"ControlPlaneBadResponse".into()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"ControlPlaneServerError".into()),
        "{reasons:?}"
    );

    // A token the API no longer takes is a condition too, not a crash.
    h.cp.set_mode(Mode::Up);
    h.cp.require_token("rotated-elsewhere");
    h.wait_for("w1", "ControlPlaneUnauthorized", |w| {
        synced(w).is_some_and(|(_, r)| r == "ControlPlaneUnauthorized")
    })
    .await;
    h.cp.require_token(TOKEN);
    h.wait_mirrored(&uid, "Running").await;
    h.wait_for("w1", "Synced", |w| {
        synced(w).is_some_and(|(s, _)| s == "True")
    })
    .await;

    // The token appears nowhere the cluster or the logs show.
    let logs = support::logs::captured();
    assert!(
        logs.contains("ControlPlane"),
        "logs were captured: {} bytes",
        logs.len()
    );
    assert!(!logs.contains(TOKEN), "the token is in the logs");
    let w = h.workers().get("w1").await.expect("get");
    assert!(!serde_json::to_string(&w).expect("json").contains(TOKEN));
    for e in h.events().await {
        assert!(!e.note.unwrap_or_default().contains(TOKEN));
    }
    h.finish().await;
}

#[tokio::test]
async fn lab_instances_the_platform_placed_hold_a_drain_and_show_in_status() {
    let h = Harness::new("usage", |_| {}).await;
    h.template().await;
    let uid = h.worker("w1").await;
    h.wait_mirrored(&uid, "Running").await;
    h.cp.set_capacity(
        &uid,
        json!({"worker_id": uid, "allocated": {"cpu_cores": 8, "memory_gb": 32, "storage_gb": 40, "nodes": 6},
               "running_instances": 1, "scheduled_instances": 1, "next_timeslot_start": "2026-11-27T09:00:00Z"}),
    );
    let w = h
        .wait_for("w1", "busy", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.usage.as_ref())
                .is_some_and(|u| u.running_instances == Some(1))
        })
        .await;
    let usage = w.status.and_then(|s| s.usage).expect("usage");
    assert_eq!(usage.scheduled_instances, Some(1));
    assert!(usage.next_timeslot_start.is_some() && usage.last_activity_time.is_some());

    // CML (simulated) reports no running nodes; the platform's instances still hold the drain.
    h.set_desired("w1", "Stopped").await;
    h.wait_phase("w1", WorkerPhase::Draining).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = h.workers().get("w1").await.expect("get");
    assert_eq!(
        w.status.as_ref().and_then(|s| s.phase),
        Some(WorkerPhase::Draining)
    );
    let ready = ready_message(&w);
    assert!(
        ready.contains("1 lab instances running and 1 scheduled"),
        "{ready}"
    );

    // Unknown to the platform is unknown, not idle.
    h.cp.state().capacities.remove(&uid);
    h.cp.state().workers.remove(&uid);
    h.wait_for("w1", "usage unknown", |w| {
        w.status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .is_some_and(|u| u.running_instances.is_none())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w = h.workers().get("w1").await.expect("get");
    assert_eq!(
        w.status.as_ref().and_then(|s| s.phase),
        Some(WorkerPhase::Draining)
    );

    h.cp.set_capacity(
        &uid,
        json!({"worker_id": uid, "allocated": {"cpu_cores": 0, "memory_gb": 0, "storage_gb": 0, "nodes": 0},
               "running_instances": 0, "scheduled_instances": 0, "next_timeslot_start": null}),
    );
    h.wait_phase("w1", WorkerPhase::Stopped).await;
    h.finish().await;
}

#[tokio::test]
async fn a_put_under_ccm_instances_refreshes_the_demand_snapshot_within_a_second() {
    let h = Harness::new("demand", |_| {}).await;
    h.cp.add_definition(json!({
        "id": "def-1", "name": "ccna", "version": "1",
        "resource_requirements": {"cpu_cores": 8, "memory_gb": 32, "storage_gb": 40},
        "license_affinity": ["ENTERPRISE"], "node_count": 6
    }));
    let instance = |id: &str, definition: &str, state: &str, worker: Option<&str>| {
        json!({"id": id, "definition_id": definition, "state": state, "worker_id": worker,
               "timeslot_start": "2026-11-27T09:00:00Z", "timeslot_end": "2026-11-27T11:00:00Z"})
    };
    h.cp.add_instance(instance("i-1", "def-1", "PENDING", None));
    h.cp.add_instance(instance("i-2", "def-1", "SCHEDULED", Some("uid-elsewhere")));
    h.cp.add_instance(instance("i-3", "def-missing", "SCHEDULED", None));
    let mut demand = h.ctx.as_ref().expect("ctx").demand();
    let first = tokio::time::timeout(Duration::from_secs(10), demand.wait_for(|d| d.is_some()))
        .await
        .expect("a first snapshot")
        .expect("feed alive")
        .clone()
        .expect("snapshot");
    let DemandSnapshot::Known {
        demand: items,
        skipped,
        ..
    } = first.as_ref()
    else {
        panic!("demand unknown: {first:?}");
    };
    assert_eq!(
        items
            .iter()
            .map(|d| d.instance_id.as_str())
            .collect::<Vec<_>>(),
        vec!["i-1"],
        "placed instances are not demand"
    );
    assert_eq!(items[0].definition.node_count, 6);
    assert_eq!(
        skipped.len(),
        1,
        "an unreadable definition is reported, not fatal"
    );

    h.cp.add_instance(instance("i-4", "def-1", "SCHEDULED", None));
    let mut kv = etcd_client::Client::connect([h.etcd.endpoint()], None)
        .await
        .expect("raw etcd");
    demand.borrow_and_update();
    let put = tokio::time::Instant::now();
    kv.put("/ccm/instances/i-4", "{}", None).await.expect("put");
    tokio::time::timeout(
        Duration::from_secs(5),
        demand.wait_for(|d| {
            d.as_ref()
                .and_then(|d| d.demand())
                .is_some_and(|d| d.len() == 2)
        }),
    )
    .await
    .expect("the snapshot followed the put")
    .expect("feed alive");
    let took = put.elapsed();
    println!("demand snapshot refreshed {took:?} after the etcd put");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    h.finish().await;
}

#[tokio::test]
async fn the_records_of_a_worker_deleted_during_an_outage_go_within_a_resync_of_the_return() {
    // The sweep is an hour away: only the retry of the failed removals can clear the records.
    let h = Harness::new("removal", |s| {
        s.record_sweep_interval = Duration::from_secs(3600)
    })
    .await;
    h.template_with(json!({"maxWorkers": 5, "drainTimeout": "1s"}))
        .await;
    let gone = h.worker("w2").await;
    h.wait_phase("w2", WorkerPhase::Running).await;
    h.wait_mirrored(&gone, "Running").await;

    h.cp.set_mode(Mode::Down);
    h.etcd.stop();
    h.workers()
        .delete("w2", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_gone("w2").await;
    assert!(
        h.cp.record(&gone).is_some(),
        "the platform missed the delete"
    );

    h.cp.set_mode(Mode::Up);
    h.etcd.resume();
    let back = tokio::time::Instant::now();
    h.wait_unmirrored(&gone).await;
    let took = back.elapsed();
    println!("records removed {took:?} after the remotes came back (resync {RESYNC:?})");
    assert!(took <= RESYNC, "removed after {took:?}");
    h.finish().await;
}
