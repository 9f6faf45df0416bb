//! The built `resource-controller run` binary against the real control plane: its health,
//! readiness and metrics endpoints, while it runs a worker on the simulated provider.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use resource_controller::crd::{Worker, WorkerPhase, WorkerTemplate};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace, openmetrics,
    process::scratch_dir,
    replica::{LEASE_TTL, Replica},
    workers::wait_for,
};

#[tokio::test]
async fn the_binary_serves_health_readiness_and_metrics() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "binary").await;
    let dir = scratch_dir("binary-");
    let lease = ["--leader-lease-namespace", ns.name.as_str()];
    let only = Replica::start(&cp.kubeconfig, &ns.name, "only", &dir, &lease, &[]);

    only.until("/health", |s, b| s == 200 && b == "ok").await;
    let ready = only.until_leader().await;
    assert_eq!(ready, "leader: ready: caches synced");

    let template: WorkerTemplate = serde_json::from_value(json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate", "metadata": {"name": "sim"},
        "spec": {
            "provider": "simulated", "instanceType": "m5zn.metal", "image": {"namePattern": "CML-2.9.*"},
            "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
            "licenseType": "Personal", "scaling": {"maxWorkers": 2, "minWorkers": 1}
        }
    }))
    .expect("template");
    Api::<WorkerTemplate>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
    let workers: Api<Worker> = Api::namespaced(client.clone(), &ns.name);
    // minWorkers 1: the autoscaler makes one, which comes up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let name = loop {
        let list = workers.list(&Default::default()).await.expect("list");
        if let Some(w) = list.items.first() {
            break kube::ResourceExt::name_any(w);
        }
        assert!(tokio::time::Instant::now() < deadline, "no worker made");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_for(&workers, &name, "Running", |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running)
    })
    .await;

    let (status, kind, body) = only.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let samples = openmetrics::parse(&body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    let count = |name: &str, labels: &[(&str, &str)]| openmetrics::value(&samples, name, labels);
    let worker = [("controller", "worker"), ("result", "ok")];
    assert!(count("ccm_reconciles_total", &worker) >= 1.0, "{body}");
    let template = [("controller", "template"), ("result", "ok")];
    assert!(count("ccm_reconciles_total", &template) >= 1.0, "{body}");
    assert!(
        count(
            "ccm_reconcile_duration_seconds_count",
            &[("controller", "worker")]
        ) >= 1.0
    );
    assert_eq!(
        count("ccm_scaling_actions_total", &[("action", "create")]),
        1.0
    );
    assert_eq!(count("ccm_leader", &[]), 1.0);
    assert_eq!(count("ccm_workers", &[("phase", "Running")]), 1.0, "{body}");
    let launched = [
        ("provider", "simulated"),
        ("operation", "RunInstances"),
        ("outcome", "ok"),
    ];
    assert_eq!(count("ccm_cloud_api_calls_total", &launched), 1.0, "{body}");
    assert!(
        count("ccm_cml_probes_total", &[("outcome", "ok")]) >= 1.0,
        "{body}"
    );
    // Bounded labels: neither the worker's name nor its instance id.
    let instance = workers
        .get(&name)
        .await
        .expect("get")
        .status
        .and_then(|s| s.instance);
    let instance = instance.map(|i| i.id).expect("instance id");
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains(&name) && !value.contains(&instance),
                "{sample:?} names a worker or an instance"
            );
        }
    }
    let (status, _, _) = only.get("/nope").await.expect("answer");
    assert_eq!(status, 404);
    ns.delete().await;
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_a_stopped_leader_hands_over() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "election").await;
    let dir = scratch_dir("election-");
    let lease = ["--leader-lease-namespace", ns.name.as_str()];
    let a = Replica::start(&cp.kubeconfig, &ns.name, "replica-a", &dir, &lease, &[]);
    a.until_leader().await;
    let b = Replica::start(&cp.kubeconfig, &ns.name, "replica-b", &dir, &lease, &[]);
    let standby = b.until("/readyz", |s, _| s == 200).await;
    assert_eq!(standby, "standby: another replica leads");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lease = leases.get("resource-controller").await.expect("lease");
    assert_eq!(holder(&lease).as_deref(), Some("replica-a"));
    // Only the leader reconciles.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _, metrics) = b.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("ccm_leader 0"), "{metrics}");
    assert!(
        !metrics.contains("ccm_reconciles_total{"),
        "the standby reconciled:\n{metrics}"
    );

    // SIGTERM: the leader releases the Lease and the standby takes over at once.
    let stopped = tokio::time::Instant::now();
    a.signal("TERM");
    b.until_leader().await;
    let took = stopped.elapsed();
    println!("handover after SIGTERM took {took:?}");
    // Released, not expired: well within the 3 s the issue allows, and below the TTL.
    assert!(
        took < Duration::from_secs(3).min(LEASE_TTL),
        "took {took:?}"
    );
    let lease = leases.get("resource-controller").await.expect("lease");
    assert_eq!(holder(&lease).as_deref(), Some("replica-b"));
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    drop(b);
    drop(a);
    ns.delete().await;
}

#[test]
fn the_openmetrics_reader_reads_what_prometheus_client_writes_and_rejects_the_rest() {
    let good = "# HELP a_total A.\n# TYPE a counter\na_total{x=\"1\",y=\"q\\\"\"} 2\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n# EOF\n";
    let samples = openmetrics::parse(good).expect("valid");
    assert_eq!(
        openmetrics::value(&samples, "a_total", &[("y", "q\"")]),
        2.0
    );
    for bad in [
        "# TYPE a counter\na_total 1\n",
        "a_total 1\n# EOF\n",
        "# TYPE a counter\na 1\n# EOF\n",
        "# TYPE a counter\na_total{x=1} 1\n# EOF\n",
        "# TYPE a counter\na_total one\n# EOF\n",
        "# TYPE h histogram\nh_bucket 1\n# EOF\n",
    ] {
        assert!(openmetrics::parse(bad).is_err(), "accepted {bad:?}");
    }
}
