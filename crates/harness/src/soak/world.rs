//! Everything the soak runs against: the shared control plane, a namespace with two templates,
//! the Control Plane API test server, the state etcd, the simulated cloud behind a state file
//! and a faults file, a CML test server per instance, and two replicas of the binary running as
//! the `deploy/` ServiceAccount.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use ccm_simulator::{SimulatedCloud, SimulatedConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use resource_controller::{
    crd::{Worker, WorkerTemplate},
    platform_etcd::EtcdStore,
};
use serde_json::json;

use crate::{
    ControlPlane, TestNamespace,
    cml_fleet::CmlFleet,
    cml_server::{VALID_TOKEN, create_login_secret},
    control_plane_server::ControlPlaneServer,
    controlplane::SERVICE_ACCOUNT,
    process::scratch_dir,
    replica::{DEPLOYED_LEASE, Replica},
    smart_account::SmartAccount,
    state_etcd::StateEtcd,
};

/// The template the autoscaler manages (licensed), and the one hand-made workers use.
pub const CLASS: &str = "class";
pub const BY_HAND: &str = "by-hand";
pub const MAX_NODES: u32 = 20;
pub const TOKEN: &str = "soak-platform-token-7f3a";
/// How long an instance may live without its Worker before the sweep must have ended it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10);
pub const SCALE_DOWN_GRACE: &str = "10s";

pub struct World {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: TestNamespace,
    pub dir: PathBuf,
    pub platform: ControlPlaneServer,
    pub etcd: StateEtcd,
    pub store: EtcdStore,
    /// The soak's own view of the simulated cloud (the same state file, no faults).
    pub cloud: SimulatedCloud,
    pub faults_file: PathBuf,
    pub cml: CmlFleet,
    pub replicas: Mutex<Vec<Slot>>,
    kubeconfig: PathBuf,
    state_file: PathBuf,
}

/// What a leader that can no longer renew its Lease logs as it exits to start afresh.
const LOST_LEASE: &str = "lost the leader lease; exiting";

/// A replica that exited without being signaled.
pub struct Exit {
    pub identity: String,
    /// It exited because it lost the Lease, as designed.
    pub lost_lease: bool,
    pub what: String,
}

/// One of the two replicas, restarted under a new identity after each injected exit.
pub struct Slot {
    pub name: &'static str,
    pub generation: u32,
    pub replica: Option<Replica>,
    /// Set before an injected signal, so its exit is expected.
    pub signaled: bool,
    /// Logs of the replica's earlier generations.
    pub logs: Vec<PathBuf>,
}

impl World {
    pub async fn start() -> Arc<World> {
        let cp = ControlPlane::shared();
        cp.install_rbac();
        let client = cp.client().await;
        let ns = TestNamespace::create(&client, "soak").await;
        let dir = scratch_dir("soak-");
        let platform = ControlPlaneServer::start().await;
        platform.require_token(TOKEN);
        for definition in super::platform::definitions() {
            platform.add_definition(definition);
        }
        let etcd = StateEtcd::start();
        let store = etcd.store(Duration::from_secs(2)).await;
        let state_file = dir.join("cloud.jsonl");
        let cloud = SimulatedCloud::open(SimulatedConfig {
            state_file: Some(state_file.clone()),
            loopback_addresses: true,
            throttle: false,
            ..SimulatedConfig::default()
        })
        .expect("the simulated cloud's state file");
        let kubeconfig = dir.join("kubeconfig-sa");
        cp.kubeconfig_variant(&kubeconfig, None, Some(SERVICE_ACCOUNT));
        let world = World {
            cp,
            client,
            faults_file: dir.join("faults.json"),
            cml: CmlFleet::new(&dir, SmartAccount::new()),
            ns,
            platform,
            etcd,
            store,
            cloud,
            replicas: Mutex::new(Vec::new()),
            kubeconfig,
            state_file,
            dir,
        };
        world.templates().await;
        for name in ["a", "b"] {
            let mut slot = Slot {
                name,
                generation: 0,
                replica: None,
                signaled: false,
                logs: Vec::new(),
            };
            world.launch(&mut slot);
            world.slots().push(slot);
        }
        Arc::new(world)
    }

    pub fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the slot's next generation.
    pub fn launch(&self, slot: &mut Slot) {
        slot.generation += 1;
        let identity = format!("soak-{}-{}", slot.name, slot.generation);
        let platform = format!("http://{}", self.platform.addr);
        let etcd = self.etcd.endpoint();
        let orphan_grace = format!("{}s", ORPHAN_GRACE.as_secs());
        let state_file = self.state_file.display().to_string();
        let faults_file = self.faults_file.display().to_string();
        let flags = [
            "--leader-lease-namespace",
            "ccm-system",
            "--leader-lease-name",
            &self.ns.name,
            "--control-plane-api-url",
            &platform,
            "--control-plane-api-token",
            TOKEN,
            "--control-plane-api-allow-http",
            "--etcd-endpoints",
            &etcd,
            "--orphan-grace",
            &orphan_grace,
            "--orphan-sweep-interval",
            "2s",
            "--record-sweep-interval",
            "5s",
            "--sim-state-file",
            &state_file,
            "--sim-faults-file",
            &faults_file,
            "--sim-cml-over-https",
            // The faults end within seconds; the default 5m would keep a worker with no other
            // instance type waiting long after them (by design, see the flag).
            "--ec2-capacity-ttl",
            "15s",
        ];
        // The Lease timings `deploy/` runs with, not the tests' short ones.
        let flags: Vec<&str> = flags.into_iter().chain(DEPLOYED_LEASE).collect();
        let replica = Replica::start(
            &self.kubeconfig,
            &self.ns.name,
            &identity,
            &self.dir,
            &flags,
            &[("RUST_LOG", "warn")],
        );
        slot.logs.push(replica.log.clone());
        slot.replica = Some(replica);
        slot.signaled = false;
    }

    /// Starts again every replica that exited by itself, as the kubelet would, and says how
    /// each ended: its identity and the tail of its log.
    pub fn supervise(&self) -> Vec<Exit> {
        let mut exits = Vec::new();
        for slot in self.slots().iter_mut().filter(|s| !s.signaled) {
            let Some(r) = slot.replica.as_mut() else {
                continue;
            };
            let Some(status) = r.exited() else {
                continue;
            };
            let tail = crate::process::tail(&r.log);
            exits.push(Exit {
                identity: r.identity.clone(),
                lost_lease: tail.contains(LOST_LEASE),
                what: format!("{status}:\n{tail}"),
            });
            self.launch(slot);
        }
        exits
    }

    pub fn workers(&self) -> Api<Worker> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub fn template_api(&self) -> Api<WorkerTemplate> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    pub async fn list_workers(&self) -> Option<Vec<Worker>> {
        Some(
            self.workers()
                .list(&ListParams::default())
                .await
                .ok()?
                .items,
        )
    }

    /// `class`: licensed, scaled by the autoscaler; `by-hand`: no scaling, for hand-made workers.
    async fn templates(&self) {
        create_login_secret(&self.client, &self.ns.name, "cml-admin").await;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "smart-licensing", "labels": {"ccm.dev/usage": "cml"}},
            "stringData": {"token": VALID_TOKEN}
        }))
        .expect("token secret");
        Api::<Secret>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the token secret");
        let class = json!({
            "scaling": {"minWorkers": 1, "warmWorkers": 1, "maxWorkers": 4,
                        "maxStoppedWorkers": 1, "scaleDownGracePeriod": SCALE_DOWN_GRACE},
            "licensing": {"tokenSecretRef": {"name": "smart-licensing"},
                          "registrationTimeout": "30s", "deregistrationTimeout": "20s"}
        });
        self.template(CLASS, class).await;
        // No autoscaling, and a license type the labs never ask for.
        let by_hand = json!({"scaling": {"maxWorkers": 0}, "licenseType": "Personal"});
        self.template(BY_HAND, by_hand).await;
    }

    async fn template(&self, name: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "provider": "simulated", "instanceType": "m5zn.metal",
            "image": {"id": "ami-0c0a1b2c3d4e5f601"},
            "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": MAX_NODES},
            "licenseType": "Enterprise",
            "cml": {"port": self.cml.port, "credentialsSecretRef": {"name": "cml-admin"}}
        });
        for (k, v) in extra.as_object().expect("object") {
            spec[k] = v.clone();
        }
        let template: WorkerTemplate = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("template");
        self.template_api()
            .create(&PostParams::default(), &template)
            .await
            .expect("create template");
    }
}
