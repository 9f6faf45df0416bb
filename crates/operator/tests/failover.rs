//! Two replicas of the built binary against one API server, on moto's EC2 and the CML test
//! server, running as the ServiceAccount of `deploy/` (its RBAC alone, Leases included): one
//! leads, every worker is launched once, and a leader that is killed or cut off from the API
//! server is replaced without a moment where two replicas reconcile.

use ccm_harness as support;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use kube::{Api, api::PostParams};
use resource_controller::crd::{Worker, WorkerPhase, WorkerTemplate};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace,
    cml_server::{CmlServer, create_login_secret},
    controlplane::SERVICE_ACCOUNT,
    moto::{Moto, stock_image},
    process::scratch_dir,
    replica::{LEASE_TTL, RENEW_DEADLINE, Replica},
    tcp_proxy::TcpProxy,
    workers::{create_workers, wait_for},
};

/// A region of moto's no other test binary uses, so counts of instances are this file's own.
const REGION: &str = "eu-north-1";

struct Fleet {
    cp: &'static ControlPlane,
    ns: TestNamespace,
    workers: Api<Worker>,
    ec2: aws_sdk_ec2::Client,
    dir: PathBuf,
    /// The ServiceAccount's kubeconfig, straight to the API server.
    kubeconfig: PathBuf,
    _cml: CmlServer,
}

impl Fleet {
    async fn new(prefix: &str) -> Fleet {
        let cp = ControlPlane::shared();
        cp.install_rbac();
        let client = cp.client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let dir = scratch_dir(&format!("{prefix}-"));
        let cml = CmlServer::start(&dir).await;
        let ec2 = aws_sdk_ec2::Client::new(&Moto::shared().sdk_config(REGION).await);
        let image = stock_image(&ec2).await;
        create_login_secret(&client, &ns.name, "cml-admin").await;
        let template: WorkerTemplate = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
            "metadata": {"name": "cml"},
            "spec": {
                "provider": "aws", "region": REGION, "instanceType": "m5zn.metal",
                "image": {"id": image},
                "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
                "licenseType": "Personal",
                "cml": {"port": cml.port, "credentialsSecretRef": {"name": "cml-admin"}},
                "scaling": {"maxWorkers": 10}
            }
        }))
        .expect("template");
        Api::<WorkerTemplate>::namespaced(client.clone(), &ns.name)
            .create(&PostParams::default(), &template)
            .await
            .expect("create template");
        let kubeconfig = dir.join("kubeconfig-sa");
        cp.kubeconfig_variant(&kubeconfig, None, Some(SERVICE_ACCOUNT));
        Fleet {
            cp,
            workers: Api::namespaced(client, &ns.name),
            ns,
            ec2,
            dir,
            kubeconfig,
            _cml: cml,
        }
    }

    /// A replica as the ServiceAccount, through `kubeconfig` (default: straight to the API
    /// server), its Lease in the controller's own namespace, logging JSON lines at info.
    fn replica(&self, identity: &str, kubeconfig: Option<&PathBuf>) -> Replica {
        let moto = &Moto::shared().endpoint;
        Replica::start(
            kubeconfig.unwrap_or(&self.kubeconfig),
            &self.ns.name,
            identity,
            &self.dir,
            &[
                "--leader-lease-namespace",
                "ccm-system",
                "--leader-lease-name",
                &self.ns.name,
            ],
            &[
                ("AWS_ENDPOINT_URL", moto),
                ("AWS_REGION", REGION),
                ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST"),
                ("AWS_SECRET_ACCESS_KEY", "test-secret"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
                ("CML_HOST_OVERRIDE", "127.0.0.1"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
            ],
        )
    }

    async fn create(&self, names: &[&str]) {
        let names = names.iter().map(|n| n.to_string()).collect();
        create_workers(&self.workers, "cml", names, 4).await;
    }

    async fn all_running(&self, names: &[&str]) {
        for name in names {
            wait_for(&self.workers, name, "Running", |w| {
                w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running)
            })
            .await;
        }
    }

    /// Instances moto ever launched for this fleet, by the worker they carry in their tags.
    async fn launches(&self) -> HashMap<String, u32> {
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name("tag:ccm:cluster")
            .values(&self.ns.name)
            .build();
        let out = self
            .ec2
            .describe_instances()
            .filters(filter)
            .send()
            .await
            .expect("describe instances");
        let mut by_worker = HashMap::new();
        for instance in out.reservations().iter().flat_map(|r| r.instances()) {
            let worker = instance
                .tags()
                .iter()
                .find(|t| t.key() == Some("ccm:worker"))
                .and_then(|t| t.value())
                .unwrap_or("(untagged)")
                .to_owned();
            *by_worker.entry(worker).or_default() += 1;
        }
        by_worker
    }

    /// Each worker was launched exactly once, on the instance its status names.
    async fn assert_launched_once(&self, names: &[&str]) {
        let launches = self.launches().await;
        for name in names {
            let key = format!("{}/{name}", self.ns.name);
            assert_eq!(launches.get(&key), Some(&1), "launches: {launches:?}");
        }
        assert_eq!(launches.len(), names.len(), "launches: {launches:?}");
    }
}

/// Lines of a replica's JSON log; every line must be a JSON object.
fn json_lines(replica: &Replica) -> Vec<serde_json::Value> {
    replica
        .output()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// No request of the replica was refused by RBAC (the API server's 403 says "forbidden"; a bare
/// "403" would also match timestamps and instance ids).
fn assert_no_forbidden(replica: &Replica) {
    let log = replica.output();
    for needle in ["forbidden", "Forbidden"] {
        assert!(
            !log.contains(needle),
            "{}: {needle} in\n{log}",
            replica.identity
        );
    }
}

#[tokio::test]
async fn two_replicas_launch_each_worker_once_and_a_killed_leader_is_replaced_within_the_ttl() {
    let fleet = Fleet::new("kill").await;
    let mut a = fleet.replica("replica-a", None);
    a.until_leader().await;
    let b = fleet.replica("replica-b", None);
    let standby = b.until("/readyz", |s, _| s == 200).await;
    assert_eq!(standby, "standby: another replica leads");

    let first = ["w1", "w2", "w3"];
    fleet.create(&first).await;
    fleet.all_running(&first).await;
    let (_, _, metrics) = b.get("/metrics").await.expect("metrics");
    assert!(
        !metrics.contains("ccm_reconciles_total{"),
        "the standby reconciled"
    );

    let killed = tokio::time::Instant::now();
    a.signal("KILL");
    b.until_leader().await;
    let took = killed.elapsed();
    println!("takeover after kill -9 took {took:?} (lease TTL {LEASE_TTL:?})");
    assert!(took <= LEASE_TTL + Duration::from_secs(2), "took {took:?}");
    assert!(a.exited().is_some());

    let later = ["w4", "w5"];
    fleet.create(&later).await;
    fleet.all_running(&later).await;
    fleet
        .assert_launched_once(&[first.as_slice(), later.as_slice()].concat())
        .await;

    // Every reconcile line names its controller and object.
    let lines = json_lines(&a);
    let launched = lines
        .iter()
        .find(|l| l["message"] == "instance launched")
        .unwrap_or_else(|| panic!("no launch logged by the first leader:\n{}", a.output()));
    assert_eq!(launched["span"]["controller"], "worker", "{launched}");
    let object = launched["span"]["object"].as_str().unwrap_or_default();
    assert!(
        object.starts_with(&format!("{}/w", fleet.ns.name)),
        "{launched}"
    );
    json_lines(&b);
    assert_no_forbidden(&a);
    assert_no_forbidden(&b);
    fleet.ns.delete().await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let fleet = Fleet::new("partition").await;
    let upstream = fleet.cp.server.trim_start_matches("https://").to_owned();
    let proxy = TcpProxy::start(upstream).await;
    let behind_proxy = fleet.dir.join("kubeconfig-proxy");
    let server = format!("https://127.0.0.1:{}", proxy.port);
    fleet
        .cp
        .kubeconfig_variant(&behind_proxy, Some(&server), Some(SERVICE_ACCOUNT));
    let mut a = fleet.replica("replica-a", Some(&behind_proxy));
    a.until_leader().await;
    let b = fleet.replica("replica-b", None);
    b.until("/readyz", |s, b| s == 200 && b.starts_with("standby"))
        .await;
    let before = ["w1", "w2"];
    fleet.create(&before).await;
    fleet.all_running(&before).await;

    // Cut the leader off; workers made meanwhile only the next leader can see.
    let cut = tokio::time::Instant::now();
    proxy.cut();
    let during = ["w3", "w4"];
    fleet.create(&during).await;
    let (mut stopped, mut took_over) = (None, None);
    while stopped.is_none() || took_over.is_none() {
        if stopped.is_none() && a.exited().is_some() {
            stopped = Some(cut.elapsed());
        }
        if took_over.is_none() && b.leads().await {
            took_over = Some(cut.elapsed());
        }
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "stopped {stopped:?}, took over {took_over:?}\n{}",
            a.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stopped, took_over) = (stopped.unwrap_or_default(), took_over.unwrap_or_default());
    println!("partitioned leader stopped after {stopped:?}; the standby led after {took_over:?}");
    assert!(stopped < took_over, "two leaders at once");
    assert!(
        stopped <= RENEW_DEADLINE + Duration::from_secs(1),
        "{stopped:?}"
    );
    assert!(
        took_over <= LEASE_TTL + Duration::from_secs(2),
        "{took_over:?}"
    );
    assert!(
        a.output().contains("lost the leader lease"),
        "{}",
        a.output()
    );

    fleet.all_running(&during).await;
    fleet
        .assert_launched_once(&[before.as_slice(), during.as_slice()].concat())
        .await;
    assert_no_forbidden(&b);
    fleet.ns.delete().await;
}
