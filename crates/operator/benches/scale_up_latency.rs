//! Scale-up latency: the time from an etcd put announcing a new lab instance to the Worker the
//! autoscaler creates for it, on the real control plane with the controller in process (simulated
//! cloud), the Control Plane API test server and a real etcd. `cargo bench --bench
//! scale_up_latency` (or `make bench-latency`) measures 100 events of each case and prints
//! p50 / p99 / max; under `cargo test` it runs 3 events of each as a smoke test.
//!
//! - **empty fleet**: each lab takes a whole worker, so each put needs a new Worker.
//! - **mixed**: workers partly filled by labs the platform has just placed (their own status
//!   still says empty), and each put brings one lab that fits the room left and one that fits
//!   nowhere: exactly one Worker must be created. Wrong creations are counted (must be 0).

use ccm_harness as support;

use std::time::{Duration, Instant};

use kube::api::ListParams;
use serde_json::json;
use support::fleet::Harness;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let events = if benching { 100 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let took = runtime.block_on(measure(events));
    report(&format!("empty fleet, {events} etcd puts"), took);
    let (took, wrong) = runtime.block_on(mixed(events));
    report(
        &format!("mixed, {events} etcd puts, {wrong} wrong creations"),
        took,
    );
    assert_eq!(wrong, 0, "a Worker was created for demand that fit");
}

fn report(case: &str, mut took: Vec<Duration>) {
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    println!(
        "scale-up latency, {case}: p50 {:?}, p99 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        took[took.len() - 1]
    );
}

async fn measure(events: usize) -> Vec<Duration> {
    let h = Harness::new("latency", |_| {}).await;
    // Each lab takes a whole worker, so each one needs a new Worker.
    h.cp.add_definition(json!({
        "id": "whole", "name": "whole", "version": "1",
        "resource_requirements": {"cpu_cores": 48, "memory_gb": 64, "storage_gb": 40},
        "license_affinity": ["ENTERPRISE"], "node_count": 10
    }));
    h.template_with(json!({"maxWorkers": 1000})).await;
    let mut kv = etcd_client::Client::connect([h.etcd.endpoint()], None)
        .await
        .expect("raw etcd");
    let workers = h.workers();
    let count = || async {
        workers
            .list_metadata(&ListParams::default().labels("ccm.dev/template=t"))
            .await
            .expect("list")
            .items
            .len()
    };
    // Let the template become Ready and the first demand read settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let soon = k8s_openapi::jiff::Timestamp::now()
        .checked_add(Duration::from_secs(300))
        .expect("time");
    let mut took = Vec::with_capacity(events);
    for n in 0..events {
        let before = count().await;
        h.cp.add_instance(json!({
            "id": format!("lab-{n}"), "definition_id": "whole", "state": "PENDING", "worker_id": null,
            "timeslot_start": soon.to_string(), "timeslot_end": soon.to_string()
        }));
        let put = Instant::now();
        kv.put(format!("/ccm/instances/lab-{n}"), "{}", None)
            .await
            .expect("put");
        let deadline = put + Duration::from_secs(30);
        while count().await <= before {
            assert!(
                Instant::now() < deadline,
                "no Worker for lab-{n} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(put.elapsed());
    }
    h.finish().await;
    took
}

fn lab(id: &str, definition: &str, starts: k8s_openapi::jiff::Timestamp) -> serde_json::Value {
    json!({"id": id, "definition_id": definition, "state": "PENDING", "worker_id": null,
           "timeslot_start": starts.to_string(), "timeslot_end": starts.to_string()})
}

/// The platform places `lab` on `worker`, which then holds `labs` labs of `nodes` nodes in
/// all, in one transaction.
fn place(h: &Harness, worker: &str, lab: &str, labs: u32, nodes: u32) {
    let mut state = h.cp.state();
    state.capacities.insert(
        worker.to_owned(),
        json!({"worker_id": worker,
               "allocated": {"cpu_cores": nodes * 2, "memory_gb": nodes * 8, "storage_gb": 20 * labs, "nodes": nodes},
               "running_instances": 0, "scheduled_instances": labs,
               "next_timeslot_start": null}),
    );
    for i in state.instances.iter_mut() {
        if i["id"] == lab {
            i["worker_id"] = json!(worker);
        }
    }
}

/// The UID of a Running worker of the template that is not in `known`.
async fn new_running(h: &Harness, known: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = h.owned("t").await.into_iter().filter(|w| {
            w.status.as_ref().and_then(|s| s.phase)
                == Some(resource_controller::crd::WorkerPhase::Running)
        });
        let uids: Vec<String> = running.filter_map(|w| w.metadata.uid).collect();
        if let Some(uid) = uids.into_iter().find(|u| !known.contains(u)) {
            return uid;
        }
        assert!(Instant::now() < deadline, "the new worker never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn mixed(events: usize) -> (Vec<Duration>, usize) {
    // 101 workers: past the default --max-instances.
    let h = Harness::new("mixed", |s| s.max_instances = 1000).await;
    for (id, nodes) in [("d12", 12u32), ("d8", 8)] {
        h.cp.add_definition(json!({
            "id": id, "name": id, "version": "1",
            "resource_requirements": {"cpu_cores": nodes * 2, "memory_gb": nodes * 8, "storage_gb": 20},
            "license_affinity": ["ENTERPRISE"], "node_count": nodes
        }));
    }
    h.template_with(json!({"maxWorkers": 1000, "scaleDownGracePeriod": "1h"}))
        .await;
    let mut kv = etcd_client::Client::connect([h.etcd.endpoint()], None)
        .await
        .expect("raw etcd");
    let soon = k8s_openapi::jiff::Timestamp::now()
        .checked_add(Duration::from_secs(300))
        .expect("time");
    // A first worker, with 12 of its 20 nodes placed.
    h.cp.add_instance(lab("big-start", "d12", soon));
    kv.put("/ccm/instances/big-start", "{}", None)
        .await
        .expect("put");
    let mut known = vec![new_running(&h, &[]).await];
    place(&h, &known[0], "big-start", 1, 12);
    let mut took = Vec::with_capacity(events);
    for n in 0..events {
        let before = h.owned("t").await.len();
        // A worker too many would take the next pair of labs and look like a stall.
        if before != n + 1 {
            panic!(
                "a wrong creation before event {n}: {before} workers for {n} events\n{}",
                autoscaler_log("mixed")
            );
        }
        // One lab fits the 8 nodes left on the newest worker, one fits nowhere.
        let (small, big) = (format!("small-{n}"), format!("big-{n}"));
        h.cp.add_instance(lab(&small, "d8", soon));
        h.cp.add_instance(lab(&big, "d12", soon));
        let put = Instant::now();
        kv.put(format!("/ccm/instances/{big}"), "{}", None)
            .await
            .expect("put");
        let deadline = put + Duration::from_secs(30);
        while h.owned("t").await.len() <= before {
            if Instant::now() >= deadline {
                let snapshot = h.ctx.as_ref().expect("ctx").demand().borrow().clone();
                let status = h.template_status("t").await;
                let lacking: Vec<_> = h
                    .owned("t")
                    .await
                    .iter()
                    .filter_map(|w| w.metadata.uid.clone())
                    .filter(|u| snapshot.as_ref().is_some_and(|s| s.placement(u).is_none()))
                    .collect();
                panic!(
                    "no Worker for {big} within 30 s; status {:?} {:?}; lacking {lacking:?}\n{}",
                    status.demand,
                    status.desired_workers,
                    autoscaler_log("mixed")
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(put.elapsed());
        // The platform places both as soon as the new worker runs; the last worker is full.
        let newest = new_running(&h, &known).await;
        let previous = known.last().expect("a worker").clone();
        place(&h, &previous, &small, 2, 20);
        place(&h, &newest, &big, 1, 12);
        known.push(newest);
    }
    // Later rounds must not add any either: one worker to start with, one per event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wrong = h.owned("t").await.len().saturating_sub(events + 1);
    h.finish().await;
    (took, wrong)
}

/// The last lines the autoscaler and the demand feed logged in namespace `prefix`-*, and the
/// worker reconciles' transitions, to tell what a round saw.
fn autoscaler_log(prefix: &str) -> String {
    let logs = support::logs::captured();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| {
            l.contains(prefix)
                && !l.contains("hyper_util")
                && (l.contains("scaling decision")
                    || l.contains("demand")
                    || l.contains("transition"))
        })
        .collect();
    lines[lines.len().saturating_sub(16)..].join("\n")
}
