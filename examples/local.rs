//! `make run`: a local control plane (from the test harness), the CRDs, the samples on the
//! simulated provider, a local etcd and Control Plane API stand-in playing a small lab schedule,
//! and the controller, all on this machine with no cloud account.
//!
//! The schedule (see `play`): three Enterprise labs are booked `BOOKED_AHEAD` ahead, so the
//! autoscaler starts workers for them before their timeslot; at `PLACED_AT` the platform places
//! them; at `ENDED_AT` they end, and the idle workers are drained and stopped a minute later.
//! Set `LOCAL_SCHEDULE=off` to run without it.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{path::Path, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use resource_controller::{
    backoff::Backoff,
    cli::{Cli, Command},
    control_plane::{ControlPlaneClient, ControlPlaneConfig},
    controller::{self, Context},
    state_store::{EtcdConfig, EtcdStore},
    sync::Remotes,
};
use serde_json::json;
use support::{ControlPlane, control_plane_server::ControlPlaneServer, state_etcd::StateEtcd};
use tracing_subscriber::EnvFilter;

/// How far ahead of their timeslot the demo's labs are booked.
const BOOKED_AHEAD: Duration = Duration::from_secs(3 * 60);
/// When (from start) the platform places the booked labs on workers.
const PLACED_AT: Duration = Duration::from_secs(2 * 60);
/// When (from start) the labs end.
const ENDED_AT: Duration = Duration::from_secs(6 * 60);

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // Flags as for `resource-controller run`, with demo-friendly intervals unless given.
    // The simulated cloud lives in a state file, so a second controller (e.g. the release binary
    // with the same --sim-state-file and KUBECONFIG) sees the same instances. The cluster is new
    // each time, so the file starts empty too.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let state_file = root.join("target/local/sim-state.jsonl");
    std::fs::create_dir_all(root.join("target/local"))?;
    let _ = std::fs::remove_file(&state_file);
    let mut argv = vec![
        "resource-controller".to_owned(),
        "run".to_owned(),
        "--poll-interval=2s".to_owned(),
        format!("--sim-state-file={}", state_file.display()),
    ];
    argv.extend(std::env::args().skip(1));
    let Command::Run(args) = <Cli as clap::Parser>::parse_from(argv).command else {
        anyhow::bail!("expected run arguments");
    };

    eprintln!("starting a local kube-apiserver and etcd ...");
    let cp = ControlPlane::shared();
    let kubeconfig = root.join("target/local/kubeconfig");
    std::fs::create_dir_all(root.join("target/local"))?;
    std::fs::copy(&cp.kubeconfig, &kubeconfig)?;
    let samples = root.join("deploy/local-simulated");
    cp.kubectl_ok(&[
        "apply",
        "-n",
        "default",
        "-k",
        &samples.display().to_string(),
    ]);
    eprintln!(
        "\nLocal cluster ready; the samples run on the simulated provider. In another terminal:\n\n  \
         export KUBECONFIG={}\n  kubectl get wk -w          (workers go Pending -> Provisioning -> Running)\n  \
         kubectl get wkt,wk -o wide\n  kubectl describe wk personal-1\n\nCtrl-C stops the controller and the cluster.\n",
        kubeconfig.display()
    );
    let kubectl = cp.binaries.kubectl.display().to_string();
    eprintln!(
        "(kubectl {} is built from the same Kubernetes version)\n",
        kubectl
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = cp.client().await;
        let schedule = std::env::var("LOCAL_SCHEDULE").map_or(true, |v| v != "off");
        let mut ctx = Context::new(client, args.settings(), args.providers()?, "local");
        let mut remotes = None;
        if schedule {
            let etcd = StateEtcd::start();
            let platform = ControlPlaneServer::start().await;
            let store = EtcdStore::connect(&EtcdConfig {
                endpoints: vec![etcd.endpoint()],
                user: None,
                ca_pem: None,
                timeout: Duration::from_secs(2),
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let api = ControlPlaneClient::new(ControlPlaneConfig {
                url: platform.url(),
                token: None,
                ca_pem: None,
                timeout: Duration::from_secs(2),
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            ctx = ctx.with_remotes(Remotes::new(
                Some(Arc::new(api)),
                Some(store),
                Duration::from_secs(2),
                Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            ));
            eprintln!(
                "Local Control Plane API stand-in at {} and etcd at {}; the lab schedule plays: \
                 labs booked {}s ahead, placed at +{}s, ended at +{}s.\n",
                platform.url(),
                etcd.endpoint(),
                BOOKED_AHEAD.as_secs(),
                PLACED_AT.as_secs(),
                ENDED_AT.as_secs()
            );
            tokio::spawn(play(platform, etcd.endpoint()));
            remotes = Some(etcd);
        }
        let ctx = Arc::new(ctx);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        controller::run(ctx, shutdown).await;
        // Give in-flight status writes a moment before the cluster goes away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(remotes);
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

/// The demo's lab schedule, played against the Control Plane API stand-in; each change is
/// announced under etcd's `/ccm/instances/` as the platform does.
async fn play(platform: ControlPlaneServer, etcd: String) {
    let announce = |id: String| {
        let etcd = etcd.clone();
        async move {
            if let Ok(mut kv) = etcd_client::Client::connect([etcd], None).await {
                let _ = kv.put(format!("/ccm/instances/{id}"), "{}", None).await;
            }
        }
    };
    let start = tokio::time::Instant::now();
    let slot = Timestamp::now()
        .checked_add(BOOKED_AHEAD)
        .unwrap_or_else(|_| Timestamp::now());
    let end = slot.checked_add(Duration::from_secs(3600)).unwrap_or(slot);
    platform.add_definition(json!({
        "id": "ccie-enterprise-v3", "name": "CCIE Enterprise", "version": "3",
        "resource_requirements": {"cpu_cores": 64, "memory_gb": 256, "storage_gb": 200},
        "license_affinity": ["ENTERPRISE"], "node_count": 40
    }));
    let labs: Vec<String> = (1..=3).map(|n| format!("ccie-{n}")).collect();
    for id in &labs {
        platform.add_instance(json!({
            "id": id, "definition_id": "ccie-enterprise-v3", "state": "SCHEDULED", "worker_id": null,
            "timeslot_start": slot.to_string(), "timeslot_end": end.to_string()
        }));
    }
    announce("ccie".into()).await;
    eprintln!("[schedule] 3 CCIE labs booked for {slot}: watch workers start ahead of it");

    tokio::time::sleep_until(start + PLACED_AT).await;
    // The platform places each lab on a worker (one per worker: each needs most of one).
    let workers: Vec<String> = platform
        .state()
        .workers
        .iter()
        .filter(|(_, record)| record["template"] == "enterprise-large")
        .map(|(id, _)| id.clone())
        .collect();
    {
        let mut state = platform.state();
        for (lab, worker) in state.instances.iter_mut().zip(workers.iter()) {
            lab["worker_id"] = json!(worker);
        }
    }
    // What the platform then reports for those workers: a lab scheduled on each.
    for worker in &workers {
        platform.set_capacity(
            worker,
            json!({"worker_id": worker,
                   "allocated": {"cpu_cores": 64, "memory_gb": 256, "storage_gb": 200, "nodes": 40},
                   "running_instances": 0, "scheduled_instances": 1,
                   "next_timeslot_start": slot.to_string()}),
        );
    }
    announce("placed".into()).await;
    eprintln!("[schedule] labs placed on workers");

    tokio::time::sleep_until(start + ENDED_AT).await;
    {
        let mut state = platform.state();
        state.instances.clear();
        state.capacities.clear();
    }
    announce("ended".into()).await;
    eprintln!("[schedule] labs ended: idle workers drain and stop after scaleDownGracePeriod (1m)");
}
