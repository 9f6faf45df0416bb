//! The built `resource-controller run` binary against the real control plane: its health,
//! readiness and metrics endpoints, leader election between two replicas, and a restart that
//! finds its simulated instances again in the state file.

use ccm_harness as support;
use ccm_simulator::{SimulatedCloud, SimulatedConfig};

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use resource_controller::{
    crd::{Worker, WorkerPhase},
    provider::{CloudProvider, Provider},
};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace, openmetrics,
    process::scratch_dir,
    replica::{LEASE_TTL, Replica},
    workers::{create_workers, simulated_template, wait_for},
};

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Each worker's phase and instance id.
async fn fleet(
    workers: &Api<Worker>,
    names: &[&str],
) -> Vec<(Option<WorkerPhase>, Option<String>)> {
    let mut out = Vec::new();
    for name in names {
        let status = workers
            .get(name)
            .await
            .expect("get")
            .status
            .unwrap_or_default();
        out.push((status.phase, status.instance.map(|i| i.id)));
    }
    out
}

#[tokio::test]
async fn a_restarted_controller_keeps_its_simulated_workers_on_their_instances() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "restart").await;
    let dir = scratch_dir("restart-");
    let state = dir.join("sim-state.jsonl");
    let state_arg = state.display().to_string();
    let args = [
        "--leader-lease-namespace",
        ns.name.as_str(),
        "--sim-state-file",
        state_arg.as_str(),
    ];
    let first = Replica::start(&cp.kubeconfig, &ns.name, "first", &dir, &args, &[]);
    first.until_leader().await;
    simulated_template(&client, &ns.name, json!({"maxWorkers": 10})).await;
    let workers: Api<Worker> = Api::namespaced(client.clone(), &ns.name);
    let (up, late) = (["w1", "w2", "w3"], ["w4", "w5"]);
    create_workers(&workers, "sim", names(&up), 4).await;
    for name in up {
        wait_for(&workers, name, "Running", |w| {
            w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running)
        })
        .await;
    }
    let before = fleet(&workers, &up).await;
    // Crash mid-fleet: two more workers are on their way.
    create_workers(&workers, "sim", names(&late), 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.signal("KILL");
    drop(first);

    let second = Replica::start(&cp.kubeconfig, &ns.name, "second", &dir, &args, &[]);
    second.until_leader().await;
    let all = [up.as_slice(), late.as_slice()].concat();
    for name in &all {
        wait_for(&workers, name, "Running", |w| {
            w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running)
        })
        .await;
    }
    // Every worker is ready: the simulated CML answers by its instance's launch time, whoever asks.
    for name in &all {
        wait_for(&workers, name, "CML ready", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.cml.as_ref())
                .is_some_and(|c| c.ready)
        })
        .await;
    }
    // Past two resyncs of the new controller: still the same instances, still Running, and
    // nothing written (steady state makes no writes).
    let versions = |list: Vec<Worker>| {
        list.into_iter()
            .map(|w| w.metadata.resource_version.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let steady = versions(workers.list(&Default::default()).await.expect("list").items);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let later = versions(workers.list(&Default::default()).await.expect("list").items);
    assert_eq!(later, steady, "writes in steady state");
    assert_eq!(
        fleet(&workers, &up).await,
        before,
        "the first three kept their instances"
    );
    let now = fleet(&workers, &all).await;
    assert!(
        now.iter()
            .all(|(phase, _)| *phase == Some(WorkerPhase::Running)),
        "{now:?}\n{}",
        second.output()
    );
    // One instance per worker in the shared cloud: nothing relaunched.
    let cloud = SimulatedCloud::open(SimulatedConfig {
        state_file: Some(state.clone()),
        ..SimulatedConfig::default()
    })
    .expect("open the state file");
    let instances = Provider::new(std::sync::Arc::new(cloud))
        .list_managed(&ns.name)
        .await
        .expect("list");
    assert_eq!(instances.len(), all.len(), "{instances:#?}");
    ns.delete().await;
}

#[tokio::test]
async fn the_binary_serves_health_readiness_and_metrics() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "binary").await;
    let dir = scratch_dir("binary-");
    let lease = ["--leader-lease-namespace", ns.name.as_str()];
    // Logs at info, so the file shows what a text log looks like when not at a terminal.
    let only = Replica::start(
        &cp.kubeconfig,
        &ns.name,
        "only",
        &dir,
        &lease,
        &[("RUST_LOG", "info")],
    );

    only.until("/health", |s, b| s == 200 && b == "ok").await;
    let ready = only.until_leader().await;
    assert_eq!(ready, "leader: ready: caches synced");

    simulated_template(&client, &ns.name, json!({"maxWorkers": 2, "minWorkers": 1})).await;
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

    // The fleet gauge is the autoscaler's count, which follows Worker changes within a second.
    only.until("/metrics", |s, b| {
        s == 200
            && openmetrics::parse(b).is_ok_and(|samples| {
                openmetrics::value(&samples, "ccm_workers", &[("phase", "Running")]) == 1.0
            })
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
    let template = format!("{}/sim", ns.name);
    assert_eq!(
        count("ccm_desired_workers", &[("template", &template)]),
        1.0,
        "{body}"
    );
    assert_eq!(
        count("ccm_ready_workers", &[("template", &template)]),
        1.0,
        "{body}"
    );
    let transitions = [("reason", "Provisioned")];
    assert_eq!(
        count("ccm_worker_transitions_total", &transitions),
        1.0,
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
    // Its text log went to a file: no terminal colour codes in it.
    let log = only.output();
    assert!(log.contains(" INFO "), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file: {log}");
    ns.delete().await;
}

#[tokio::test]
async fn a_taken_health_port_is_a_start_up_error_that_names_its_cause() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_resource-controller"))
        .args(["run", "--health-port", &port, "--leader-election=false"])
        .args(["--cluster-id", "binary-test"])
        .env("KUBECONFIG", &ControlPlane::shared().kubeconfig)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("serving health and metrics on 0.0.0.0:{port}"))
            && stderr.contains("Address already in use"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_to_start_without_a_cluster_id() {
    for args in [vec!["run"], vec!["run", "--cluster-id", " "]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_resource-controller"))
            .args(&args)
            .env_remove("CLUSTER_ID")
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--cluster-id"), "{args:?}: {stderr}");
    }
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
