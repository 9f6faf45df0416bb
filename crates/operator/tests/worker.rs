//! The Worker lifecycle end to end: a real kube-apiserver, moto's EC2 server, the CML API test
//! server, and the controller running in-process, scoped to each test's namespace.

use ccm_harness as support;
use ccm_simulator::{SimulatedCloud, SimulatedConfig};

use support::workers::ready_message;

use std::{sync::Arc, time::Duration};

use aws_config::SdkConfig;
use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use resource_controller::{
    controller::{self, Context, Settings},
    crd::{
        CertificateStatus, CertificateTrust, SeatState, TRUST_CERTIFICATE_ANNOTATION, Worker,
        WorkerPhase, WorkerTemplate,
        conditions::{self, ConditionType},
    },
    provider::{
        CloudProvider, LaunchRequest, LaunchSpec, Provider, ProviderRegistry, WorkerIdentity,
        api::CloudApi, client_token, ec2::Ec2Api,
    },
};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace,
    cml_server::{CmlServer, Mode, PASSWORD, create_login_secret},
    moto::{Moto, stock_image},
};
use tokio::task::JoinHandle;

const REGION: &str = "us-east-1";
const WAIT: Duration = Duration::from_secs(60);

struct Harness {
    ns: TestNamespace,
    client: Client,
    cml: CmlServer,
    aws: SdkConfig,
    ec2: aws_sdk_ec2::Client,
    image: String,
    settings: Settings,
    /// Behind templates with `provider: simulated`; its instances stay pending for an hour.
    sim: Arc<SimulatedCloud>,
    running: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    ctx: Option<Arc<Context>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(prefix: &str, tweak: impl FnOnce(&mut Settings)) -> Harness {
        let cp = ControlPlane::shared();
        let client = cp.client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cml = CmlServer::start(dir.path()).await;
        let aws = Moto::shared().sdk_config(REGION).await;
        let ec2 = aws_sdk_ec2::Client::new(&aws);
        let image = stock_image(&ec2).await;
        create_login_secret(&client, &ns.name, "cml-admin").await;
        let mut settings = Settings {
            cluster_id: ns.name.clone(),
            namespace: Some(ns.name.clone()),
            poll_interval: Duration::from_millis(300),
            resync_interval: Duration::from_secs(2),
            orphan_grace: Duration::from_secs(3600),
            orphan_sweep_interval: Duration::from_secs(1),
            error_backoff: resource_controller::backoff::Backoff::new(
                Duration::from_millis(200),
                Duration::from_secs(2),
            ),
            cml_timeout: Duration::from_millis(800),
            cml_host_override: Some("127.0.0.1".into()),
            ..Settings::default()
        };
        tweak(&mut settings);
        let mut h = Harness {
            ns,
            client,
            cml,
            aws,
            ec2,
            image,
            settings,
            sim: Arc::new(SimulatedCloud::new(SimulatedConfig {
                boot_delay: Duration::from_secs(3600),
                ..SimulatedConfig::default()
            })),
            running: None,
            ctx: None,
            _dir: dir,
        };
        h.start_controller();
        h
    }

    fn provider(&self) -> Provider {
        Provider::new(Arc::new(Ec2Api::from_sdk_config(&self.aws)))
    }

    fn start_controller(&mut self) {
        let aws = self.aws.clone();
        let connector: resource_controller::provider::AwsConnector = Arc::new(move |_region| {
            let api: Arc<dyn CloudApi> = Arc::new(Ec2Api::from_sdk_config(&aws));
            Box::pin(async move { api })
        });
        let registry = ProviderRegistry::new(
            REGION,
            connector,
            support::simulated(self.sim.clone(), Duration::from_secs(5)),
        );
        let ctx = Arc::new(Context::new(
            self.client.clone(),
            self.settings.clone(),
            registry,
            "test",
        ));
        self.ctx = Some(ctx.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(ctx, async move {
            let _ = rx.await;
        }));
        self.running = Some((tx, task));
    }

    /// Stops the controller at once, as a kill -9 would: no reconcile runs to its end.
    fn kill_controller(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }

    async fn stop_controller(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }

    fn workers(&self) -> Api<Worker> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    fn templates(&self) -> Api<WorkerTemplate> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// A template on moto's EC2 with the CML test server behind it; `scaling` overrides fields of
    /// `spec.scaling`.
    async fn template(&self, name: &str, scaling: serde_json::Value) {
        let mut spec = self.template_spec();
        for (k, v) in scaling.as_object().expect("object") {
            spec["scaling"][k] = v.clone();
        }
        self.create_template(name, spec).await;
    }

    fn template_spec(&self) -> serde_json::Value {
        json!({
            "provider": "aws",
            "region": REGION,
            "instanceType": "m5zn.metal",
            "image": {"id": self.image},
            "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
            "licenseType": "Personal",
            "cml": {"port": self.cml.port, "credentialsSecretRef": {"name": "cml-admin"}},
            "scaling": {"maxWorkers": 5}
        })
    }

    async fn create_template(&self, name: &str, spec: serde_json::Value) {
        let t: WorkerTemplate = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("template");
        self.templates()
            .create(&PostParams::default(), &t)
            .await
            .expect("create template");
    }

    async fn worker(&self, name: &str, template: &str) -> Worker {
        let w: Worker = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": name}, "spec": {"templateRef": {"name": template}}
        }))
        .expect("worker");
        self.workers()
            .create(&PostParams::default(), &w)
            .await
            .expect("create worker")
    }

    async fn set_desired(&self, name: &str, state: &str) {
        support::workers::set_desired(&self.workers(), name, state).await
    }

    /// Polls the worker until `done` holds; panics with its last status otherwise.
    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&Worker) -> bool) -> Worker {
        support::workers::wait_for(&self.workers(), name, what, done).await
    }

    async fn wait_phase(&self, name: &str, phase: WorkerPhase) -> Worker {
        self.wait_for(name, &format!("{phase:?}"), |w| phase_of(w) == Some(phase))
            .await
    }

    async fn wait_gone(&self, name: &str) {
        support::workers::wait_gone(&self.workers(), name).await
    }

    /// Live (not terminated) instances tagged for a worker UID.
    async fn live_instances(&self, uid: &str) -> Vec<(String, String)> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:ccm:worker-uid")
                    .values(uid)
                    .build(),
            )
            .send()
            .await
            .expect("describe");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                let state = i.state()?.name()?.as_str().to_owned();
                let id = i.instance_id()?.to_owned();
                (state != "terminated" && state != "shutting-down").then_some((id, state))
            })
            .collect()
    }

    async fn instance_state(&self, id: &str) -> String {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .expect("describe");
        out.reservations()[0].instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default()
    }

    async fn event_reasons(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
            .collect()
    }

    /// The notes of the Events with `reason` in the namespace.
    async fn event_notes(&self, reason: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns.name);
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list events");
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// Whether a Warning Event with `reason` was published on the worker, within a few seconds:
    /// Events are published after the status write a test usually waits for.
    async fn warned(&self, name: &str, reason: &str) -> bool {
        let wanted = ("Warning".to_owned(), reason.to_owned());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if self.event_reasons(name).await.contains(&wanted) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Gives the worker's CML labs and running nodes, and waits until its status shows them.
    async fn make_busy(&self, name: &str, labs: u32, running_nodes: u32) {
        self.cml.set_usage(labs, running_nodes);
        self.wait_for(name, "busy", |w| {
            w.status
                .as_ref()
                .and_then(|s| s.cml.as_ref())
                .and_then(|c| c.running_nodes)
                == Some(running_nodes)
        })
        .await;
    }

    /// Launches an instance for a worker identity directly, as a crashed controller would have.
    async fn launch_directly(&self, name: &str, uid: &str) -> String {
        self.launch_for_cluster(&self.ns.name, name, uid).await
    }

    /// Launches an instance tagged for `cluster`, as another install of the controller would.
    async fn launch_for_cluster(&self, cluster: &str, name: &str, uid: &str) -> String {
        let request = LaunchRequest {
            worker: WorkerIdentity {
                cluster_id: cluster.to_owned(),
                namespace: self.ns.name.clone(),
                name: name.into(),
                uid: uid.into(),
                template: "t".into(),
            },
            spec: LaunchSpec::basic(&self.image, &["m5zn.metal"]),
            attempt: 1,
        };
        self.provider()
            .launch(&request)
            .await
            .expect("direct launch")
            .instance
            .id
    }

    async fn finish(mut self) {
        self.stop_controller().await;
        self.ns.delete().await;
        assert_eq!(
            self.cml.violations(),
            Vec::<String>::new(),
            "the CML test server broke the published contract"
        );
    }
}

fn phase_of(w: &Worker) -> Option<WorkerPhase> {
    w.status.as_ref().and_then(|s| s.phase)
}

fn ready_reason(w: &Worker) -> String {
    w.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::ConditionType::Ready))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// The reason of `CmlDegraded` when it is True.
fn degraded(w: &Worker) -> Option<String> {
    w.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::ConditionType::CmlDegraded))
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
}

fn running_nodes(w: &Worker) -> Option<u32> {
    w.status
        .as_ref()
        .and_then(|s| s.cml.as_ref())
        .and_then(|c| c.running_nodes)
}

fn instance_id(w: &Worker) -> String {
    w.status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.clone())
        .expect("instance in status")
}

#[tokio::test]
async fn a_worker_reaches_running_with_its_instance_in_status() {
    let h = Harness::new("running", |_| {}).await;
    h.template("t", json!({})).await;
    let created = h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let status = w.status.clone().expect("status");
    let instance = status.instance.expect("instance");
    assert!(instance.id.starts_with("i-"));
    assert!(instance.private_ip.is_some() && instance.availability_zone.is_some());
    assert_eq!(instance.state.as_deref(), Some("running"));
    assert_eq!(instance.instance_type.as_deref(), Some("m5zn.metal"));
    assert!(conditions::is_true(
        &status.conditions,
        conditions::ConditionType::Launched
    ));
    assert!(conditions::is_true(
        &status.conditions,
        conditions::ConditionType::Ready
    ));
    let cml = status.cml.clone().expect("cml status");
    assert_eq!(
        (cml.ready, cml.version.as_deref(), cml.licensed),
        (true, Some("2.9.1"), Some(true))
    );
    // Licensed by hand (the template does not manage licenses): shown, never touched.
    let license = status.license.clone().expect("license status");
    assert_eq!(license.seat, SeatState::Free);
    assert!(conditions::find(&status.conditions, ConditionType::Licensed).is_none());
    assert_eq!(
        (license.authorization.as_deref(), license.product.as_deref()),
        (Some("IN_COMPLIANCE"), Some("CML_Enterprise"))
    );
    assert_eq!(degraded(&w), None, "every CML endpoint answered");
    assert!(status.launch.expect("launch").client_token.is_some());
    assert_eq!(status.observed_generation, w.metadata.generation);
    assert_eq!(h.live_instances(&created.uid().unwrap()).await.len(), 1);
    let reasons: Vec<String> = h
        .event_reasons("w1")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        reasons.contains(&"Launched".into()) && reasons.contains(&"Provisioned".into()),
        "{reasons:?}"
    );
    // kubectl shows it too.
    let table = ControlPlane::shared().kubectl_ok(&["get", "wk", "-n", &h.ns.name]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("w1") && l.contains("Running") && l.contains(&instance.id)),
        "{table}"
    );
    // Status follows CML: a lapsed Smart Licensing authorization shows on the next probe.
    h.cml.set_authorization("OUT_OF_COMPLIANCE");
    h.wait_for("w1", "authorization OUT_OF_COMPLIANCE", |w| {
        w.status
            .as_ref()
            .and_then(|s| s.license.as_ref())
            .and_then(|l| l.authorization.as_deref())
            == Some("OUT_OF_COMPLIANCE")
    })
    .await;
    h.finish().await;
}

#[tokio::test]
async fn cml_never_ready_fails_after_ready_timeout() {
    let h = Harness::new("readytimeout", |_| {}).await;
    h.cml.set_mode(Mode::NotReady);
    h.template("t", json!({"readyTimeout": "4s"})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Provisioning).await;
    let id = instance_id(&w);
    let w = h.wait_phase("w1", WorkerPhase::Failed).await;
    assert_eq!(ready_reason(&w), "ReadyTimeout");
    h.wait_for("w1", "terminated", |w| {
        w.status
            .as_ref()
            .and_then(|s| s.instance.as_ref())
            .and_then(|i| i.state.as_deref())
            == Some("terminated")
    })
    .await;
    assert_eq!(
        h.instance_state(&id).await,
        "terminated",
        "a failed worker costs nothing"
    );
    assert!(h.warned("w1", "ReadyTimeout").await);
    h.finish().await;
}

#[tokio::test]
async fn deleting_a_provisioning_worker_terminates_its_instance() {
    let h = Harness::new("delprov", |_| {}).await;
    h.cml.set_mode(Mode::NotReady);
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Provisioning).await;
    let id = instance_id(&w);
    h.workers()
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_gone("w1").await;
    assert_eq!(h.instance_state(&id).await, "terminated");
    h.finish().await;
}

#[tokio::test]
async fn a_stop_waits_for_the_nodes_running_on_every_compute() {
    let h = Harness::new("drain", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let id = instance_id(&w);
    // 5 nodes: 3 on one compute, 2 on the other, in labs of other users.
    h.make_busy("w1", 2, 5).await;
    let w = h.workers().get("w1").await.expect("get");
    let labs = w
        .status
        .as_ref()
        .and_then(|s| s.cml.as_ref())
        .and_then(|c| c.labs);
    assert_eq!(labs, Some(2));
    h.set_desired("w1", "Stopped").await;
    let w = h.wait_phase("w1", WorkerPhase::Draining).await;
    assert!(
        w.status
            .as_ref()
            .and_then(|s| s.drain_started_at.as_ref())
            .is_some()
    );
    // Several polls later it still waits for the labs, and says so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = h.workers().get("w1").await.expect("get");
    assert_eq!(phase_of(&w), Some(WorkerPhase::Draining));
    assert!(
        ready_message(&w).starts_with("5 lab nodes still running"),
        "{}",
        ready_message(&w)
    );
    assert_eq!(h.instance_state(&id).await, "running");

    h.cml.set_usage(2, 0);
    h.wait_phase("w1", WorkerPhase::Stopped).await;
    assert_eq!(h.instance_state(&id).await, "stopped");
    let reasons: Vec<String> = h
        .event_reasons("w1")
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        reasons.contains(&"DrainStarted".into()) && reasons.contains(&"DrainCompleted".into()),
        "{reasons:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_deleted_busy_worker_drains_before_its_instance_is_terminated() {
    let h = Harness::new("deldrain", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let id = instance_id(&w);
    h.make_busy("w1", 1, 3).await;
    h.workers()
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_phase("w1", WorkerPhase::Draining).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = h.workers().get("w1").await.expect("still there");
    assert_eq!(phase_of(&w), Some(WorkerPhase::Draining));
    assert_eq!(h.instance_state(&id).await, "running");

    h.cml.set_usage(1, 0);
    h.wait_gone("w1").await;
    assert_eq!(h.instance_state(&id).await, "terminated");
    h.finish().await;
}

#[tokio::test]
async fn unknown_node_counts_hold_a_drain_until_drain_timeout() {
    let h = Harness::new("nullcounts", |_| {}).await;
    h.template("t", json!({"drainTimeout": "6s"})).await;
    h.worker("w1", "t").await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.make_busy("w1", 1, 4).await;
    h.cml.set_counts_unknown(true);
    let w = h
        .wait_for("w1", "usage unknown", |w| {
            degraded(w).as_deref() == Some("SystemStatsIncomplete")
        })
        .await;
    assert_eq!(running_nodes(&w), None, "unknown shows as absent, not 0");
    assert_eq!(phase_of(&w), Some(WorkerPhase::Running));
    assert!(h.warned("w1", "SystemStatsIncomplete").await);

    h.set_desired("w1", "Stopped").await;
    h.wait_phase("w1", WorkerPhase::Draining).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = h.workers().get("w1").await.expect("get");
    assert_eq!(phase_of(&w), Some(WorkerPhase::Draining));
    assert!(
        ready_message(&w).contains("running lab nodes unknown"),
        "{}",
        ready_message(&w)
    );
    h.wait_phase("w1", WorkerPhase::Stopped).await;
    assert!(h.warned("w1", "DrainTimeout").await);
    h.finish().await;
}

#[tokio::test]
async fn a_worker_whose_licensing_endpoint_refuses_still_runs_with_the_license_unknown() {
    let h = Harness::new("lic403", |_| {}).await;
    h.cml
        .set_failing("licensing", Some(warp::http::StatusCode::FORBIDDEN));
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let cml = w.status.as_ref().and_then(|s| s.cml.clone()).expect("cml");
    let license = w.status.as_ref().and_then(|s| s.license.as_ref());
    assert_eq!(license, None, "unknown, not made up");
    assert_eq!((cml.licensed, cml.running_nodes), (Some(true), Some(0)));
    assert_eq!(degraded(&w).as_deref(), Some("LicensingForbidden"));
    assert!(h.warned("w1", "LicensingForbidden").await);
    // Later probes keep the login: only a refused login drops it.
    let before = h.cml.probes();
    h.wait_for("w1", "probed twice more", |_| h.cml.probes() >= before + 2)
        .await;
    assert_eq!(h.cml.authentications(), 1);

    h.cml.set_failing("licensing", None);
    let w = h
        .wait_for("w1", "licensed again", |w| {
            w.status.as_ref().is_some_and(|s| s.license.is_some())
        })
        .await;
    assert_eq!(degraded(&w), None);
    h.finish().await;
}

#[tokio::test]
async fn a_drain_past_its_timeout_is_forced_with_a_warning() {
    let h = Harness::new("draintimeout", |_| {}).await;
    h.template("t", json!({"drainTimeout": "2s"})).await;
    h.worker("w1", "t").await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.make_busy("w1", 2, 8).await;
    h.set_desired("w1", "Draining").await;
    h.wait_phase("w1", WorkerPhase::Stopped).await;
    assert!(h.warned("w1", "DrainTimeout").await);
    h.finish().await;
}

#[tokio::test]
async fn setting_running_again_cancels_a_drain() {
    let h = Harness::new("cancel", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    h.make_busy("w1", 1, 2).await;
    h.set_desired("w1", "Draining").await;
    h.wait_phase("w1", WorkerPhase::Draining).await;
    h.set_desired("w1", "Running").await;
    let back = h.wait_phase("w1", WorkerPhase::Running).await;
    assert!(
        back.status
            .as_ref()
            .and_then(|s| s.drain_started_at.as_ref())
            .is_none()
    );
    assert_eq!(h.instance_state(&instance_id(&w)).await, "running");
    assert!(
        h.event_reasons("w1")
            .await
            .iter()
            .any(|e| e.1 == "DrainCancelled")
    );
    h.finish().await;
}

#[tokio::test]
async fn stop_then_start() {
    let h = Harness::new("stopstart", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let id = instance_id(&w);
    h.set_desired("w1", "Stopped").await;
    h.wait_phase("w1", WorkerPhase::Stopped).await;
    assert_eq!(h.instance_state(&id).await, "stopped");
    h.set_desired("w1", "Running").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    assert_eq!(instance_id(&w), id, "the same instance, started again");
    assert_eq!(h.instance_state(&id).await, "running");
    h.finish().await;
}

#[tokio::test]
async fn an_instance_terminated_behind_our_back_fails_the_worker() {
    let h = Harness::new("vanish", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    h.ec2
        .terminate_instances()
        .instance_ids(instance_id(&w))
        .send()
        .await
        .expect("terminate behind its back");
    let w = h.wait_phase("w1", WorkerPhase::Failed).await;
    assert_eq!(ready_reason(&w), "InstanceVanished");
    assert!(h.warned("w1", "InstanceVanished").await);
    h.finish().await;
}

#[tokio::test]
async fn an_orphan_instance_is_swept() {
    let h = Harness::new("orphan", |s| s.orphan_grace = Duration::from_secs(1)).await;
    // A template makes the controller use this region's provider.
    h.template("t", json!({})).await;
    let orphan = h
        .launch_directly("gone", &format!("{}-no-such-worker", h.ns.name))
        .await;
    // Another install's instance in the same account, just as old and as unknown to us.
    let theirs = h
        .launch_for_cluster("another-install", "theirs", "uid-of-another-install")
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while h.instance_state(&orphan).await != "terminated" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphan {orphan} was not swept"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.instance_state(&theirs).await,
        "running",
        "never ours to sweep"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_status_naming_another_clusters_instance_never_stops_it() {
    let mut h = Harness::new("notours", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let ours = instance_id(&w);
    h.stop_controller().await;
    let theirs = h
        .launch_for_cluster("another-install", "theirs", "uid-of-another-install")
        .await;
    // A status edited by hand (or restored from a backup) names someone else's instance.
    let patch = json!({"status": {"instance": {"id": theirs}}});
    h.workers()
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch status");
    h.start_controller();
    h.set_desired("w1", "Stopped").await;
    h.wait_for("w1", "refusing", |w| ready_reason(w) == "InstanceNotOwned")
        .await;
    assert!(h.warned("w1", "InstanceNotOwned").await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.instance_state(&theirs).await, "running");
    h.workers()
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.instance_state(&theirs).await,
        "running",
        "nor terminates it"
    );
    assert_eq!(h.instance_state(&ours).await, "running");
    // Cleanup: the Worker's finalizer would wait forever on an instance it may not touch.
    let release = json!({"metadata": {"finalizers": null}});
    h.workers()
        .patch("w1", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release");
    h.finish().await;
}

#[tokio::test]
async fn a_launch_backlog_waits_for_its_turns_outside_the_reconciles() {
    // Two reconciles at once, EC2's default RunInstances limit (5, then 2 per second), and a
    // cloud that answers at once: 25 launches take 10 s, all of it waiting for tokens.
    let h = Harness::new("turns", |s| {
        s.concurrency = 2;
        // Rechecks of the launched workers stay well inside the describe bucket.
        s.poll_interval = Duration::from_secs(2);
    })
    .await;
    let mut spec = h.template_spec();
    spec["provider"] = json!("simulated");
    spec["image"] = json!({"id": "ami-0abcdef1234567890"});
    spec["scaling"]["maxWorkers"] = json!(25);
    h.create_template("t", spec).await;
    let names: Vec<String> = (0..25).map(|i| format!("w{i:02}")).collect();
    for name in &names {
        h.worker(name, "t").await;
    }
    for name in &names {
        h.wait_phase(name, WorkerPhase::Provisioning).await;
    }
    assert_eq!(h.sim.launched(), 25, "each launched once");
    // Had the launches waited for their tokens inside their reconciles, both slots would have
    // been taken all along: 20 s of reconcile time (measured: 19.7 s; 0.4 s with turns).
    let ctx = h.ctx.clone().expect("controller context");
    let samples = support::openmetrics::parse(&ctx.metrics.encode()).expect("metrics");
    let busy = support::openmetrics::value(
        &samples,
        "ccm_reconcile_duration_seconds_sum",
        &[("controller", "worker")],
    );
    assert!(busy < 8.0, "worker reconciles took {busy:.1} s in all");
    h.finish().await;
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_launch_makes_no_second_instance() {
    let mut h = Harness::new("restart", |_| {}).await;
    h.stop_controller().await;
    h.template("t", json!({})).await;
    // The crashed controller had recorded its token and called RunInstances, but never wrote
    // the instance id to status.
    let w = h.worker("w1", "t").await;
    let uid = w.uid().unwrap();
    let token = client_token(&uid, 1);
    h.workers()
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending", "launch": {"clientToken": token, "attempts": 1}}})),
        )
        .await
        .expect("record token");
    let first = h.launch_directly("w1", &uid).await;
    // Another crashed before it wrote anything at all: the token was never recorded.
    let w2 = h.worker("w2", "t").await;
    let uid2 = w2.uid().unwrap();
    let second = h.launch_directly("w2", &uid2).await;

    h.start_controller();
    for (name, uid, launched) in [("w1", &uid, &first), ("w2", &uid2, &second)] {
        let w = h.wait_phase(name, WorkerPhase::Running).await;
        assert_eq!(
            &instance_id(&w),
            launched,
            "{name}: the instance was adopted"
        );
        let live = h.live_instances(uid).await;
        assert_eq!(live.len(), 1, "{name}: exactly one instance: {live:?}");
        assert!(h.event_reasons(name).await.iter().any(|e| e.1 == "Adopted"));
    }
    h.finish().await;
}

#[tokio::test]
async fn a_missing_or_unready_template_keeps_the_worker_pending() {
    let h = Harness::new("template", |_| {}).await;
    h.worker("w1", "later").await;
    let w = h
        .wait_for("w1", "TemplateNotFound", |w| {
            ready_reason(w) == "TemplateNotFound"
        })
        .await;
    assert_eq!(phase_of(&w), Some(WorkerPhase::Pending));

    // A template whose image pattern matches nothing is not Ready, and says why.
    let bad: WorkerTemplate = serde_json::from_value(json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate", "metadata": {"name": "bad"},
        "spec": {
            "region": REGION, "instanceType": "m5zn.metal", "image": {"namePattern": "CML-9.9.*", "owners": ["self"]},
            "capacity": {"cpuCores": 1, "memoryGiB": 1, "storageGiB": 1, "maxNodes": 1},
            "licenseType": "Personal", "scaling": {"maxWorkers": 1}
        }
    }))
    .expect("template");
    h.templates()
        .create(&PostParams::default(), &bad)
        .await
        .expect("create");
    h.worker("w2", "bad").await;
    let w = h
        .wait_for("w2", "TemplateNotReady", |w| {
            ready_reason(w) == "TemplateNotReady"
        })
        .await;
    assert_eq!(phase_of(&w), Some(WorkerPhase::Pending));
    let message = conditions::find(
        &w.status.unwrap().conditions,
        conditions::ConditionType::Ready,
    )
    .unwrap()
    .message
    .clone();
    assert!(message.contains("CML-9.9.*"), "{message}");
    let t = h.templates().get("bad").await.expect("template");
    let ready = conditions::find(
        &t.status.unwrap().conditions,
        conditions::ConditionType::Ready,
    )
    .cloned()
    .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "CloudNotFound")
    );

    // Once the template exists, the first worker proceeds.
    h.template("later", json!({})).await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.finish().await;
}

#[tokio::test]
async fn cml_garbage_or_timeouts_show_in_status_and_events_and_are_retried() {
    let h = Harness::new("garbage", |_| {}).await;
    h.cml.set_mode(Mode::Garbage);
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h
        .wait_for("w1", "CmlBadResponse", |w| {
            ready_reason(w) == "CmlBadResponse"
        })
        .await;
    assert_eq!(phase_of(&w), Some(WorkerPhase::Provisioning));
    h.cml.set_mode(Mode::Slow(Duration::from_secs(3)));
    h.wait_for("w1", "CmlTimeout", |w| ready_reason(w) == "CmlTimeout")
        .await;
    let reasons = h.event_reasons("w1").await;
    assert!(
        reasons.contains(&("Warning".into(), "CmlBadResponse".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("Warning".into(), "CmlTimeout".into())),
        "{reasons:?}"
    );
    h.cml.set_mode(Mode::Ready);
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.finish().await;
}

#[tokio::test]
async fn skip_drain_deletes_a_busy_worker_at_once() {
    let h = Harness::new("skipdrain", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    h.make_busy("w1", 1, 3).await;
    h.workers()
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"ccm.dev/skip-drain": "true"}}})),
        )
        .await
        .expect("annotate");
    h.workers()
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_gone("w1").await;
    assert_eq!(h.instance_state(&instance_id(&w)).await, "terminated");
    h.finish().await;
}

#[tokio::test]
async fn an_instance_that_never_runs_fails_after_launch_timeout() {
    let h = Harness::new("launchtimeout", |_| {}).await;
    let mut spec = h.template_spec();
    spec["provider"] = json!("simulated");
    spec["image"] = json!({"id": "ami-0abcdef1234567890"});
    spec["scaling"]["launchTimeout"] = json!("3s");
    h.create_template("t", spec).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Failed).await;
    assert_eq!(ready_reason(&w), "LaunchTimeout");
    let id = instance_id(&w);
    let sim = Provider::new(h.sim.clone());
    let mut state = String::new();
    for _ in 0..100 {
        state = sim
            .describe(std::slice::from_ref(&id))
            .await
            .expect("describe")[0]
            .state
            .as_str()
            .to_owned();
        if state == "terminated" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(state, "terminated", "a launch that timed out costs nothing");
    assert!(h.warned("w1", "LaunchTimeout").await);
    h.finish().await;
}

fn certificate(w: &Worker) -> CertificateStatus {
    w.status
        .as_ref()
        .and_then(|s| s.cml.as_ref())
        .and_then(|c| c.certificate.clone())
        .expect("status.cml.certificate")
}

#[tokio::test]
async fn cml_tls_is_verified_with_the_ca_from_a_secret_or_unchecked_only_when_asked() {
    let h = Harness::new("cmlca", |_| {}).await;
    let ca: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cml-ca", "labels": {"ccm.dev/usage": "cml"}},
        "stringData": {"bundle.pem": String::from_utf8(h.cml.ca_pem.clone()).expect("pem")}
    }))
    .expect("secret");
    Api::<Secret>::namespaced(h.client.clone(), &h.ns.name)
        .create(&PostParams::default(), &ca)
        .await
        .expect("create ca secret");
    let mut spec = h.template_spec();
    spec["cml"]["caSecretRef"] = json!({"name": "cml-ca", "key": "bundle.pem"});
    h.create_template("trusted", spec.clone()).await;
    spec["cml"]
        .as_object_mut()
        .expect("cml")
        .remove("caSecretRef");
    spec["cml"]["insecureSkipTlsVerify"] = json!(true);
    h.create_template("unchecked", spec).await;
    h.worker("w1", "trusted").await;
    h.worker("w2", "unchecked").await;
    let w1 = h.wait_phase("w1", WorkerPhase::Running).await;
    assert_eq!(certificate(&w1).trust, CertificateTrust::CaVerified);
    let w2 = h.wait_phase("w2", WorkerPhase::Running).await;
    assert_eq!(certificate(&w2).trust, CertificateTrust::Unverified);
    // Said once, however many probes follow.
    assert!(h.warned("w2", "CmlTlsUnverified").await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let said = h
        .event_reasons("w2")
        .await
        .into_iter()
        .filter(|(_, reason)| reason == "CmlTlsUnverified")
        .count();
    assert_eq!(said, 1);
    let w1_reasons = h.event_reasons("w1").await;
    assert!(
        !w1_reasons.iter().any(|(_, r)| r == "CmlTlsUnverified"),
        "{w1_reasons:?}"
    );
    h.finish().await;
}

#[tokio::test]
async fn the_first_cml_certificate_is_pinned_and_a_changed_one_gets_no_credentials() {
    let h = Harness::new("cmlpin", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let pinned = certificate(&w);
    assert_eq!(pinned.trust, CertificateTrust::Pinned);
    assert_eq!(pinned.sha256.as_deref(), Some(h.cml.fingerprint().as_str()));
    assert_eq!(pinned.instance_id, Some(instance_id(&w)));

    let replaced = h.cml.replace_certificate(&h._dir.path().join("replaced"));
    let w = h
        .wait_for("w1", "CmlCertificateChanged", |w| {
            ready_reason(w) == "CmlCertificateChanged"
        })
        .await;
    let (probes, logins) = (h.cml.probes(), h.cml.authentications());
    let message = ready_message(&w);
    assert!(
        message.contains(pinned.sha256.as_deref().expect("pin")),
        "{message}"
    );
    assert!(message.contains(&replaced), "{message}");
    assert!(h.warned("w1", "CmlCertificateChanged").await);
    let notes = h.event_notes("CmlCertificateChanged").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains(&replaced) && n.contains(pinned.sha256.as_deref().expect("pin"))),
        "{notes:?}"
    );
    // Two resyncs: nothing reaches the server that now answers, and no lab is cut.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((h.cml.probes(), h.cml.authentications()), (probes, logins));
    let w = h.workers().get("w1").await.expect("get");
    assert_eq!(phase_of(&w), Some(WorkerPhase::Running));
    assert_eq!(certificate(&w).sha256, pinned.sha256, "the pin stays");

    // The operator checked the new certificate and trusts it, in any spelling.
    let spelled = replaced.replace(':', "").to_lowercase();
    h.workers()
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {TRUST_CERTIFICATE_ANNOTATION: spelled}}}),
            ),
        )
        .await
        .expect("annotate");
    let w = h
        .wait_for("w1", "the new certificate pinned", |w| {
            certificate(w).sha256.as_deref() == Some(replaced.as_str())
                && ready_reason(w) != "CmlCertificateChanged"
        })
        .await;
    assert_eq!(phase_of(&w), Some(WorkerPhase::Running));
    assert!(h.cml.probes() > probes);
    h.finish().await;
}

#[tokio::test]
async fn a_trust_annotation_that_is_not_a_fingerprint_trusts_nothing() {
    let h = Harness::new("cmlbadpin", |_| {}).await;
    h.template("t", json!({})).await;
    let mut worker: Worker = serde_json::from_value(json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
        "metadata": {"name": "w1", "annotations": {TRUST_CERTIFICATE_ANNOTATION: "yes please"}},
        "spec": {"templateRef": {"name": "t"}}
    }))
    .expect("worker");
    worker.metadata.namespace = Some(h.ns.name.clone());
    h.workers()
        .create(&PostParams::default(), &worker)
        .await
        .expect("create");
    let w = h
        .wait_for("w1", "CmlCertificateChanged", |w| {
            ready_reason(w) == "CmlCertificateChanged"
        })
        .await;
    assert!(
        ready_message(&w).contains("not a SHA-256 fingerprint"),
        "{}",
        ready_message(&w)
    );
    assert_eq!(h.cml.probes(), 0, "nothing was sent");
    h.finish().await;
}

#[tokio::test]
async fn a_changed_launch_spec_marks_the_worker_drifted_and_leaves_it_running() {
    let h = Harness::new("drift", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h.wait_phase("w1", WorkerPhase::Running).await;
    let id = instance_id(&w);
    let drifted = |w: &Worker| {
        w.status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, conditions::ConditionType::Drifted))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    assert_eq!(drifted(&w), Some(("False".into(), "UpToDate".into())));
    // Worker reconciles read the template from the watch, not with a GET each.
    let ctx = h.ctx.clone().expect("controller context");
    // The watch may deliver the template after the worker read it with a GET (a cache miss),
    // on a loaded machine even after the worker is Running; it must arrive all the same.
    let filled = tokio::time::timeout(Duration::from_secs(10), async {
        while ctx.templates.held() != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        filled.is_ok(),
        "the template cache holds {} templates",
        ctx.templates.held()
    );
    h.templates()
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"instanceType": "m5zn.12xlarge"}})),
        )
        .await
        .expect("patch template");
    let w = h
        .wait_for("w1", "Drifted", |w| {
            drifted(w) == Some(("True".into(), "LaunchSpecChanged".into()))
        })
        .await;
    // Drift is reported, never acted on behind the operator's back.
    assert_eq!(phase_of(&w), Some(WorkerPhase::Running));
    assert_eq!(instance_id(&w), id);
    assert_eq!(h.instance_state(&id).await, "running");
    h.finish().await;
}

#[tokio::test]
async fn fixed_cml_credentials_are_used_at_once() {
    // Secrets are cached for an hour here: only a refused login may drop them early.
    let h = Harness::new("creds", |s| s.secret_ttl = Duration::from_secs(3600)).await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns.name);
    let set_password = |password: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .patch(
                    "cml-admin",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"stringData": {"password": password}})),
                )
                .await
                .expect("patch secret");
        }
    };
    set_password("not-the-password").await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h
        .wait_for("w1", "CmlUnauthorized", |w| {
            ready_reason(w) == "CmlUnauthorized"
        })
        .await;
    assert_eq!(phase_of(&w), Some(WorkerPhase::Provisioning));
    set_password(PASSWORD).await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.finish().await;
}

#[tokio::test]
async fn a_running_worker_is_probed_once_per_resync() {
    let h = Harness::new("steady", |_| {}).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    let resync = h.settings.resync_interval;
    tokio::time::sleep(resync / 2).await;
    let before = h.cml.probes();
    tokio::time::sleep(resync * 4).await;
    let probes = h.cml.probes() - before;
    assert!(
        (1..=5).contains(&probes),
        "{probes} probes in 4 resync intervals"
    );
    // Probes that find nothing new write nothing, idle or busy.
    let version = |w: Worker| w.metadata.resource_version.unwrap_or_default();
    let idle = version(h.workers().get("w1").await.expect("get"));
    tokio::time::sleep(resync * 3).await;
    assert_eq!(
        version(h.workers().get("w1").await.expect("get")),
        idle,
        "idle: no writes"
    );
    h.cml.set_usage(1, 4);
    let busy = h
        .wait_for("w1", "busy", |w| running_nodes(w) == Some(4))
        .await;
    let started = busy
        .status
        .as_ref()
        .and_then(|s| s.usage.as_ref())
        .and_then(|u| u.last_activity_time.clone());
    assert!(
        started.is_some(),
        "the idle clock stopped when the nodes started"
    );
    tokio::time::sleep(resync * 3).await;
    assert_eq!(
        version(h.workers().get("w1").await.expect("get")),
        version(busy),
        "busy: no writes"
    );
    h.cml.set_usage(0, 0);
    let ended = h
        .wait_for("w1", "idle again", |w| running_nodes(w) == Some(0))
        .await;
    let ended = ended
        .status
        .and_then(|s| s.usage)
        .and_then(|u| u.last_activity_time);
    assert!(
        ended > started,
        "the idle clock starts when the activity ended"
    );
    h.finish().await;
}

#[path = "worker/licensing.rs"]
mod licensing;

#[tokio::test]
async fn a_secret_without_the_consent_label_is_never_used() {
    let h = Harness::new("consent", |_| {}).await;
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.ns.name);
    let label = |value: serde_json::Value| {
        let secrets = secrets.clone();
        async move {
            let patch = json!({"metadata": {"labels": {"ccm.dev/usage": value}}});
            secrets
                .patch("cml-admin", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("label");
        }
    };
    label(serde_json::Value::Null).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    let w = h
        .wait_for("w1", "the Secret refused", |w| {
            ready_message(w).contains("lacks the label ccm.dev/usage=cml")
        })
        .await;
    assert!(
        ready_message(&w).contains("cml-admin"),
        "{}",
        ready_message(&w)
    );
    assert_eq!(h.cml.authentications(), 0, "no credentials were sent");
    label(json!("cml")).await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    h.finish().await;
}

#[tokio::test]
async fn a_launch_beyond_max_instances_waits_until_one_goes() {
    let h = Harness::new("cap", |s| s.max_instances = 1).await;
    h.template("t", json!({})).await;
    h.worker("w1", "t").await;
    h.wait_phase("w1", WorkerPhase::Running).await;
    let w2 = h.worker("w2", "t").await;
    let launched = |w: &Worker| {
        w.status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, ConditionType::Launched))
            .map(|c| c.reason.clone())
            .unwrap_or_default()
    };
    h.wait_for("w2", "capped", |w| launched(w) == "InstanceCapReached")
        .await;
    assert!(h.warned("w2", "InstanceCapReached").await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.live_instances(&w2.uid().unwrap()).await.is_empty());
    h.workers()
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete");
    h.wait_gone("w1").await;
    h.wait_phase("w2", WorkerPhase::Running).await;
    h.finish().await;
}
