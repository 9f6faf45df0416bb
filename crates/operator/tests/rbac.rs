//! `deploy/` as shipped: it passes the API server's validation, and its RBAC is enough for the
//! controller and no more: the controller runs as the ServiceAccount (impersonated) through a
//! worker's whole life and an autoscaler decision, and broader rights are denied.

use ccm_harness as support;
use ccm_simulator::{SimulatedCloud, SimulatedConfig};

use std::{sync::Arc, time::Duration};

use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use resource_controller::{
    controller::{self, Context, Settings},
    crd::{Worker, WorkerPhase, WorkerTemplate},
    provider::{ProviderRegistry, aws_default_chain},
};
use serde_json::json;
use support::{ControlPlane, TestNamespace, controlplane::SERVICE_ACCOUNT};

#[tokio::test]
async fn the_deployment_passes_server_side_validation() {
    let cp = ControlPlane::shared();
    cp.install_rbac();
    let deploy = support::repo_root().join("deploy");
    let out = cp.kubectl_ok(&[
        "apply",
        "-k",
        &deploy.display().to_string(),
        "--dry-run=server",
        "--validate=strict",
    ]);
    for object in [
        "deployment.apps/resource-controller",
        "poddisruptionbudget.policy/resource-controller",
        "service/resource-controller-metrics",
        "role.rbac.authorization.k8s.io/resource-controller-leader",
        "networkpolicy.networking.k8s.io/resource-controller",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
    // The hardening the issue asks for, read back from what kustomize renders.
    let rendered = cp.kubectl_ok(&["kustomize", &deploy.display().to_string()]);
    for needle in [
        "replicas: 2",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "path: /readyz",
        "path: /health",
        "minAvailable: 1",
        "ccm.dev/scrape-metrics",
        "port: 8082",
    ] {
        assert!(
            rendered.contains(needle),
            "{needle} missing from:\n{rendered}"
        );
    }
}

#[tokio::test]
async fn the_monitoring_component_applies_server_side_on_the_prometheus_operator_crds() {
    let cp = ControlPlane::shared();
    cp.install_rbac();
    for crd in support::monitoring::operator_crds() {
        let file = crd.display().to_string();
        cp.kubectl_ok(&["apply", "--server-side", "-f", &file]);
        cp.kubectl_ok(&["wait", "--for=condition=Established", "-f", &file]);
    }
    // An overlay as the component's comment shows it, inside the repository (kustomize
    // refuses paths out of an overlay's tree).
    let overlay =
        support::repo_root().join(format!("target/monitoring-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).expect("overlay dir");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "resources: [../../deploy]\ncomponents: [../../deploy/monitoring]\n",
    )
    .expect("write the overlay");
    let dir = overlay.display().to_string();
    let out = cp.kubectl_ok(&[
        "apply",
        "--server-side",
        "-k",
        &dir,
        "--dry-run=server",
        "--validate=strict",
    ]);
    for object in [
        "prometheusrule.monitoring.coreos.com/resource-controller",
        "servicemonitor.monitoring.coreos.com/resource-controller",
        "configmap/resource-controller-dashboard",
        "deployment.apps/resource-controller",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
    let rendered = cp.kubectl_ok(&["kustomize", &dir]);
    std::fs::remove_dir_all(&overlay).ok();
    // The settings are read, not installed; the dashboard is found by Grafana's sidecar.
    assert!(
        !rendered.contains("resource-controller-monitoring-settings"),
        "{rendered}"
    );
    assert!(rendered.contains("grafana_dashboard: \"1\""), "{rendered}");
    assert!(
        rendered.contains(
            "runbook_url: https://resource-controller.example/docs/operations.md#drain-stuck"
        ),
        "{rendered}"
    );
}

#[tokio::test]
async fn the_service_account_cannot_do_more_than_it_needs() {
    let cp = ControlPlane::shared();
    cp.install_rbac();
    let can = |args: &[&str]| {
        let out = cp
            .kubectl()
            .args(["auth", "can-i", "--as", SERVICE_ACCOUNT])
            .args(args)
            .output()
            .expect("kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(can(&["patch", "workers.ccm.dev/status"]), "yes");
    assert_eq!(can(&["create", "events.events.k8s.io"]), "yes");
    assert_eq!(can(&["get", "secrets"]), "yes");
    // The autoscaler makes and removes Workers, never templates.
    assert_eq!(can(&["create", "workers.ccm.dev"]), "yes");
    assert_eq!(can(&["delete", "workers.ccm.dev"]), "yes");
    // The leader Lease: in its own namespace only.
    assert_eq!(
        can(&["update", "leases.coordination.k8s.io", "-n", "ccm-system"]),
        "yes"
    );
    assert_eq!(
        can(&["update", "leases.coordination.k8s.io", "-n", "default"]),
        "no"
    );
    for denied in [
        ["list", "secrets"],
        ["watch", "secrets"],
        ["create", "workertemplates.ccm.dev"],
        ["delete", "workertemplates.ccm.dev"],
        ["update", "workertemplates.ccm.dev"],
        ["create", "pods"],
        ["get", "configmaps"],
        ["create", "customresourcedefinitions.apiextensions.k8s.io"],
    ] {
        assert_eq!(can(&denied), "no", "{denied:?} must be denied");
    }
}

#[tokio::test]
async fn the_controller_runs_a_worker_lifecycle_with_only_its_rbac() {
    let cp = ControlPlane::shared();
    cp.install_rbac();
    let admin = cp.client().await;
    let ns = TestNamespace::create(&admin, "rbac").await;

    let as_controller = cp.client_as(Some(SERVICE_ACCOUNT)).await;
    let settings = Settings {
        cluster_id: ns.name.clone(),
        namespace: Some(ns.name.clone()),
        poll_interval: Duration::from_millis(300),
        ..Settings::default()
    };
    let simulated = SimulatedCloud::new(SimulatedConfig {
        boot_delay: Duration::from_millis(500),
        ..SimulatedConfig::default()
    });
    let registry = ProviderRegistry::new(
        "us-east-1",
        aws_default_chain(None),
        support::simulated(Arc::new(simulated), Duration::from_millis(500)),
    );
    let ctx = Arc::new(Context::new(as_controller, settings, registry, "rbac-test"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller::run(ctx, async move {
        let _ = stopped.await;
    }));

    let templates: Api<WorkerTemplate> = Api::namespaced(admin.clone(), &ns.name);
    let template: WorkerTemplate = serde_json::from_value(json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate", "metadata": {"name": "sim"},
        "spec": {
            "provider": "simulated", "instanceType": "m5zn.metal", "image": {"namePattern": "CML-2.9.*"},
            "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
            "licenseType": "Personal", "scaling": {"maxWorkers": 3, "minWorkers": 2}
        }
    }))
    .expect("template");
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("create template");
    let workers: Api<Worker> = Api::namespaced(admin.clone(), &ns.name);
    let worker: Worker = serde_json::from_value(json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker", "metadata": {"name": "w1"},
        "spec": {"templateRef": {"name": "sim"}}
    }))
    .expect("worker");
    workers
        .create(&PostParams::default(), &worker)
        .await
        .expect("create worker");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let w = workers.get("w1").await.expect("get");
        if w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never Running: {:#?}",
            w.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = cp.kubectl_ok(&["get", "events.events.k8s.io", "-n", &ns.name, "-o", "name"]);
    assert!(
        !events.trim().is_empty(),
        "the controller could publish Events"
    );

    workers
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    while workers.get_opt("w1").await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finalizer was never removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The autoscaler made the rest of minWorkers 2 on the same rights.
    let owned = workers
        .list(&kube::api::ListParams::default().labels("ccm.dev/template=sim"))
        .await
        .expect("list");
    assert!(!owned.items.is_empty(), "the autoscaler created a Worker");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    ns.delete().await;
}

/// What a build without the `simulator` feature runs: a registry with no simulated backend. A
/// template asking for it is refused with a condition that says why, and makes no worker.
#[tokio::test]
async fn a_build_without_the_simulator_refuses_simulated_templates_with_a_condition() {
    let cp = ControlPlane::shared();
    cp.install_rbac();
    let admin = cp.client().await;
    let ns = TestNamespace::create(&admin, "nosim").await;
    let settings = Settings {
        cluster_id: ns.name.clone(),
        namespace: Some(ns.name.clone()),
        poll_interval: Duration::from_millis(300),
        ..Settings::default()
    };
    let registry = ProviderRegistry::new("us-east-1", aws_default_chain(None), None);
    let as_controller = cp.client_as(Some(SERVICE_ACCOUNT)).await;
    let ctx = Arc::new(Context::new(
        as_controller,
        settings,
        registry,
        "nosim-test",
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller::run(ctx, async move {
        let _ = stopped.await;
    }));

    let scaling = json!({"maxWorkers": 2, "minWorkers": 1});
    support::workers::simulated_template(&admin, &ns.name, scaling).await;
    let templates: Api<WorkerTemplate> = Api::namespaced(admin.clone(), &ns.name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let status = templates.get("sim").await.expect("get").status;
        let ready = status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == "Ready")
            .cloned();
        if let Some(ready) = ready {
            break ready;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Ready condition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ProviderUnavailable")
    );
    assert!(
        ready.message.contains("--features simulator"),
        "{}",
        ready.message
    );
    let workers: Api<Worker> = Api::namespaced(admin.clone(), &ns.name);
    let made = workers.list(&Default::default()).await.expect("list");
    assert!(made.items.is_empty(), "a refused template made workers");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
    ns.delete().await;
}
