//! A fleet for end-to-end tests: the shared control plane, a throwaway namespace, the controller
//! in process on the simulated cloud (short timings), the Control Plane API test server (which
//! checks every body against `api/control-plane.openapi.yaml`) and a real etcd that tests stop
//! and start.

use std::{sync::Arc, time::Duration};

use ccm_simulator::{SimulatedCloud, SimulatedCml, SimulatedConfig};
use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
};
use resource_controller::{
    backoff::Backoff,
    control_plane::{ControlPlaneClient, ControlPlaneConfig},
    controller::{self, Context, Settings},
    crd::{Worker, WorkerPhase, WorkerTemplate, WorkerTemplateStatus},
    mirror::Remotes,
    platform_etcd::{EtcdConfig, EtcdStore},
    provider::{ProviderRegistry, aws_default_chain},
};
use serde_json::json;
use tokio::task::JoinHandle;

use super::{
    ControlPlane, TestNamespace, control_plane_server::ControlPlaneServer, state_etcd::StateEtcd,
};

pub const WAIT: Duration = Duration::from_secs(60);
pub const TOKEN: &str = "cp-sync-token-51d7e2";
pub const RESYNC: Duration = Duration::from_secs(2);

pub struct Harness {
    pub ns: TestNamespace,
    pub client: Client,
    pub cp: ControlPlaneServer,
    pub etcd: StateEtcd,
    pub store: EtcdStore,
    running: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
    pub ctx: Option<Arc<Context>>,
    /// The simulated cloud behind every template.
    pub sim: Arc<SimulatedCloud>,
    /// The CML stand-in of its workers, with its Smart Account.
    pub cml: Arc<SimulatedCml>,
    settings: Settings,
}

impl Harness {
    /// `tweak` adjusts the controller's settings (short timings are already set).
    pub async fn new(prefix: &str, tweak: impl FnOnce(&mut Settings)) -> Harness {
        super::logs::capture();
        let client = ControlPlane::shared().client().await;
        let ns = TestNamespace::create(&client, prefix).await;
        let cp = ControlPlaneServer::start().await;
        cp.require_token(TOKEN);
        let etcd = StateEtcd::start();
        let store = etcd.store(Duration::from_millis(500)).await;
        let mut settings = Settings {
            cluster_id: ns.name.clone(),
            namespace: Some(ns.name.clone()),
            poll_interval: Duration::from_millis(300),
            resync_interval: RESYNC,
            record_sweep_interval: Duration::from_secs(3600),
            // Only etcd's watch refreshes demand within a test.
            demand_resync: Duration::from_secs(3600),
            ..Settings::default()
        };
        tweak(&mut settings);
        let mut h = Harness {
            ns,
            client,
            cp,
            etcd,
            store,
            running: None,
            ctx: None,
            sim: Arc::new(SimulatedCloud::new(SimulatedConfig {
                boot_delay: Duration::from_millis(300),
                stop_delay: Duration::from_millis(300),
                terminate_delay: Duration::from_millis(300),
                ..SimulatedConfig::default()
            })),
            cml: Arc::new(SimulatedCml::with_license_delay(
                Duration::from_millis(300),
                Duration::from_millis(300),
            )),
            settings,
        };
        h.start_controller();
        h
    }

    pub fn start_controller(&mut self) {
        let settings = self.settings.clone();
        let sim = self.sim.clone();
        let registry = ProviderRegistry::new(
            "us-east-1",
            aws_default_chain(None),
            crate::simulated_with(sim, self.cml.clone()),
        );
        let cp = ControlPlaneClient::new(ControlPlaneConfig {
            allow_http: true,
            url: self.cp.url(),
            token: Some(TOKEN.into()),
            ca_pem: None,
            timeout: Duration::from_millis(500),
        })
        .expect("cp client");
        let remotes = Remotes::new(
            Some(Arc::new(cp)),
            Some(self.store.clone()),
            Duration::from_millis(500),
            Backoff::new(Duration::from_millis(200), RESYNC),
        );
        let ctx = Arc::new(
            Context::new(self.client.clone(), settings, registry, "test").with_remotes(remotes),
        );
        self.ctx = Some(ctx.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(ctx, async move {
            let _ = rx.await;
        }));
        self.running = Some((tx, task));
    }

    pub fn workers(&self) -> Api<Worker> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn template(&self) {
        self.template_with(json!({"maxWorkers": 5})).await;
    }

    pub async fn template_with(&self, scaling: serde_json::Value) {
        self.template_spec_with(scaling, json!({})).await;
    }

    /// A template whose workers register their license with a token from a Secret.
    pub async fn licensed_template(&self, scaling: serde_json::Value) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "smart-licensing", "labels": {"ccm.dev/usage": "cml"}},
            "stringData": {"token": "simulated-registration-token"}
        }))
        .expect("secret");
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .expect("token secret");
        let licensing = json!({"licensing": {"tokenSecretRef": {"name": "smart-licensing"}}});
        self.template_spec_with(scaling, licensing).await;
    }

    /// The simulated template, with `extra` fields merged into its spec.
    async fn template_spec_with(&self, scaling: serde_json::Value, extra: serde_json::Value) {
        let mut t: WorkerTemplate = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
            "metadata": {"name": "t"},
            "spec": {
                "provider": "simulated", "instanceType": "m5zn.metal",
                "image": {"id": "ami-0c0a1b2c3d4e5f601"},
                "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
                "licenseType": "Enterprise", "scaling": scaling
            }
        }))
        .expect("template");
        if let Some(licensing) = extra.get("licensing") {
            t.spec.licensing = Some(serde_json::from_value(licensing.clone()).expect("licensing"));
        }
        Api::<WorkerTemplate>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &t)
            .await
            .expect("create template");
    }

    pub async fn worker(&self, name: &str) -> String {
        let w: Worker = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": name}, "spec": {"templateRef": {"name": "t"}}
        }))
        .expect("worker");
        self.workers()
            .create(&PostParams::default(), &w)
            .await
            .expect("create worker")
            .uid()
            .expect("uid")
    }

    pub async fn set_desired(&self, name: &str, state: &str) {
        super::workers::set_desired(&self.workers(), name, state).await
    }

    pub async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&Worker) -> bool) -> Worker {
        super::workers::wait_for(&self.workers(), name, what, done).await
    }

    pub async fn wait_phase(&self, name: &str, phase: WorkerPhase) -> Worker {
        self.wait_for(name, &format!("{phase:?}"), |w| {
            w.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    pub async fn wait_gone(&self, name: &str) {
        super::workers::wait_gone(&self.workers(), name).await
    }

    /// Waits until both remotes hold a record of `uid` in `phase`.
    pub async fn wait_mirrored(
        &self,
        uid: &str,
        phase: &str,
    ) -> (serde_json::Value, serde_json::Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let cp = self.cp.record(uid);
            let etcd = self.store.worker(uid).await.ok().flatten();
            if let (Some(cp), Some(etcd)) = (&cp, &etcd)
                && cp["phase"] == phase
                && etcd.phase == phase
            {
                return (cp.clone(), serde_json::to_value(etcd).expect("json"));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{uid} never mirrored as {phase}: control plane {cp:?}, etcd {etcd:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_unmirrored(&self, uid: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let cp = self.cp.record(uid);
            let etcd = self
                .store
                .worker_ids()
                .await
                .map(|ids| ids.contains(&uid.to_owned()));
            if cp.is_none() && etcd == Ok(false) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "records of {uid} never went: control plane {cp:?}, in etcd {etcd:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn events(&self) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns.name)
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
    }

    pub async fn finish(mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.ns.delete().await;
        assert_eq!(self.cp.violations(), Vec::<String>::new());
    }
}

/// What the autoscaler tests look at: a template's workers, its status, demand announced.
impl Harness {
    pub fn templates(&self) -> Api<WorkerTemplate> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn owned(&self, template: &str) -> Vec<Worker> {
        self.workers()
            .list(&ListParams::default().labels(&format!("ccm.dev/template={template}")))
            .await
            .expect("list")
            .items
    }

    /// Tells the controller, through etcd, that demand changed.
    pub async fn announce(&self, id: &str) {
        let mut kv = etcd_client::Client::connect([self.etcd.endpoint()], None)
            .await
            .expect("raw etcd");
        kv.put(format!("/ccm/instances/{id}"), "{}", None)
            .await
            .expect("put");
    }

    pub async fn wait_owned(
        &self,
        template: &str,
        what: &str,
        done: impl Fn(&[Worker]) -> bool,
    ) -> Vec<Worker> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ws = self.owned(template).await;
            if done(&ws) {
                return ws;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{template}'s workers never became {what}: {:?}",
                ws.iter()
                    .map(|w| (
                        w.name_any(),
                        w.status.as_ref().and_then(|s| s.phase),
                        w.spec.desired_state
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the template has exactly one worker, Running.
    pub async fn one_running(&self, template: &str) -> Vec<Worker> {
        self.wait_owned(template, "one Running", |ws| {
            ws.len() == 1
                && ws[0].status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running)
        })
        .await
    }

    /// Waits until the template's status shows `n` unplaced lab instances.
    pub async fn wait_demand(&self, name: &str, n: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.template_status(name).await;
            if status.demand.as_ref().is_some_and(|d| d.instances == n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "demand never {n}: {:?}",
                status.demand
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the template's status until `done` holds for it.
    pub async fn wait_template(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&WorkerTemplateStatus) -> bool,
    ) -> WorkerTemplateStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.template_status(name).await;
            if done(&status) {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "template {name} never {what}: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn template_status(&self, name: &str) -> WorkerTemplateStatus {
        self.templates()
            .get(name)
            .await
            .expect("template")
            .status
            .unwrap_or_default()
    }
}
