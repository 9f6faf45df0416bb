//! Scale-up latency: the time from an etcd put announcing a new lab instance to the Worker the
//! autoscaler creates for it, on the real control plane with the controller in process (simulated
//! cloud), the Control Plane API test server and a real etcd. `cargo bench --bench
//! scale_up_latency` (or `make bench-latency`) measures 100 events and prints p50 / p99 / max;
//! under `cargo test` it runs 3 events as a smoke test.

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
    let mut took = runtime.block_on(measure(events));
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    println!(
        "scale-up latency over {events} etcd puts: p50 {:?}, p99 {:?}, max {:?}",
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
