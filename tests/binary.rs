//! The built `resource-controller run` binary against the real control plane: its health,
//! readiness and metrics endpoints, while it runs a worker on the simulated provider.

mod support;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::PostParams};
use resource_controller::crd::{Worker, WorkerPhase, WorkerTemplate};
use serde_json::json;
use support::{ControlPlane, TestNamespace, process::free_port, workers::wait_for};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `resource-controller run` scoped to `namespace`, its Lease there too.
fn start(cp: &ControlPlane, namespace: &str, identity: &str, port: u16) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_resource-controller"))
        .args([
            "run",
            "--namespace",
            namespace,
            "--cluster-id",
            namespace,
            "--poll-interval",
            "300ms",
            "--sim-boot-delay",
            "300ms",
            "--sim-cml-boot",
            "300ms",
            "--leader-lease-namespace",
            namespace,
            "--leader-lease-ttl",
            "3",
            "--leader-renew-deadline",
            "2s",
            "--leader-retry-period",
            "500ms",
        ])
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HEALTH_PORT", port.to_string())
        .env("CONTROLLER_INSTANCE_ID", identity)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the controller binary");
    Running(child)
}

async fn get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((status, kind, response.text().await.ok()?))
}

async fn until(port: u16, path: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = get(port, path).await;
        if let Some((status, _, body)) = &last
            && done(*status, body)
        {
            return body.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never as expected: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_binary_serves_health_readiness_and_metrics() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "binary").await;
    let port = free_port();
    let _running = start(cp, &ns.name, "only", port);

    until(port, "/health", |s, b| s == 200 && b == "ok").await;
    let ready = until(port, "/readyz", |s, b| s == 200 && b.starts_with("leader")).await;
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

    let (status, kind, body) = get(port, "/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    for expected in [
        "ccm_reconciles_total{controller=\"worker\",result=\"ok\"}",
        "ccm_reconciles_total{controller=\"template\",result=\"ok\"}",
        "ccm_reconcile_duration_seconds_bucket{",
        "ccm_scaling_actions_total{action=\"create\"} 1",
        "ccm_leader 1",
        "ccm_workers{template=\"",
        "# EOF",
    ] {
        assert!(body.contains(expected), "{expected} missing:\n{body}");
    }
    assert!(!body.contains(&name), "no worker name in the labels");
    let (status, _, _) = get(port, "/nope").await.expect("answer");
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
    let (pa, pb) = (free_port(), free_port());
    let a = start(cp, &ns.name, "replica-a", pa);
    until(pa, "/readyz", |s, b| s == 200 && b.starts_with("leader")).await;
    let b = start(cp, &ns.name, "replica-b", pb);
    let standby = until(pb, "/readyz", |s, _| s == 200).await;
    assert_eq!(standby, "standby: another replica leads");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let lease = leases.get("resource-controller").await.expect("lease");
    assert_eq!(holder(&lease).as_deref(), Some("replica-a"));
    // Only the leader reconciles.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, _, metrics) = get(pb, "/metrics").await.expect("metrics");
    assert!(metrics.contains("ccm_leader 0"), "{metrics}");
    assert!(
        !metrics.contains("ccm_reconciles_total{"),
        "the standby reconciled:\n{metrics}"
    );

    // SIGTERM: the leader releases the Lease and the standby takes over at once.
    let stopped = tokio::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &a.0.id().to_string()])
        .status();
    until(pb, "/readyz", |s, b| s == 200 && b.starts_with("leader")).await;
    let took = stopped.elapsed();
    println!("handover after SIGTERM took {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let lease = leases.get("resource-controller").await.expect("lease");
    assert_eq!(holder(&lease).as_deref(), Some("replica-b"));
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    drop(b);
    drop(a);
    ns.delete().await;
}
