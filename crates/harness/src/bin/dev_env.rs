//! `make run`: a dev environment on this machine, with no cloud account, and the real
//! `resource-controller run` (leader election, `/health`, `/readyz`, `/metrics`) against it.
//!
//! The environment: a local control plane with the CRDs and the samples on the simulated
//! provider, a local etcd and a Control Plane API stand-in playing a small lab schedule (see
//! `play`): three Enterprise labs are booked `BOOKED_AHEAD` ahead, so the autoscaler starts
//! workers for them before their timeslot; at `PLACED_AT` the platform places them; at `ENDED_AT`
//! they end, and the idle workers are drained and stopped a minute later. `LOCAL_SCHEDULE=off`
//! runs without the schedule (and without the remotes). Arguments are passed to `run`.
//! Ctrl-C stops the controller (SIGTERM, so it releases its Lease), then the environment.

use std::{path::Path, process::ExitStatus, time::Duration};

use anyhow::Context as _;
use ccm_harness::{
    ControlPlane, control_plane_server::ControlPlaneServer, controller_binary, repo_root,
    state_etcd::StateEtcd,
};
use jiff::Timestamp;
use serde_json::json;
use tokio::process::{Child, Command};

/// How far ahead of their timeslot the demo's labs are booked.
const BOOKED_AHEAD: Duration = Duration::from_secs(3 * 60);
/// When (from start) the platform places the booked labs on workers.
const PLACED_AT: Duration = Duration::from_secs(2 * 60);
/// When (from start) the labs end.
const ENDED_AT: Duration = Duration::from_secs(6 * 60);
/// Where the controller serves `/health`, `/readyz` and `/metrics`.
const HEALTH_PORT: u16 = 8082;

fn main() -> anyhow::Result<()> {
    let local = repo_root().join("target/local");
    std::fs::create_dir_all(&local)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(run(&local))?;
    if !status.success() {
        anyhow::bail!("resource-controller exited with {status}");
    }
    Ok(())
}

async fn run(local: &Path) -> anyhow::Result<ExitStatus> {
    eprintln!("starting a local kube-apiserver and etcd ...");
    let cp = ControlPlane::shared();
    let kubeconfig = local.join("kubeconfig");
    std::fs::copy(&cp.kubeconfig, &kubeconfig)?;
    let samples = repo_root().join("deploy/local-simulated");
    cp.kubectl_ok(&[
        "apply",
        "-n",
        "default",
        "-k",
        &samples.display().to_string(),
    ]);

    let schedule = std::env::var("LOCAL_SCHEDULE").map_or(true, |v| v != "off");
    let mut controller = controller_command(local, &kubeconfig);
    // Kept alive until the controller has stopped.
    let mut remotes = None;
    if schedule {
        let etcd = StateEtcd::start();
        let platform = ControlPlaneServer::start().await;
        let endpoint = etcd.endpoint();
        controller
            .env("CONTROL_PLANE_API_URL", platform.url())
            .env("ETCD_ENDPOINTS", &endpoint);
        eprintln!(
            "Control Plane API stand-in at {} and etcd at {endpoint}; the lab schedule plays: labs \
             booked {}s ahead, placed at +{}s, ended at +{}s.",
            platform.url(),
            BOOKED_AHEAD.as_secs(),
            PLACED_AT.as_secs(),
            ENDED_AT.as_secs()
        );
        tokio::spawn(play(platform, endpoint));
        remotes = Some(etcd);
    }
    print_guide(&kubeconfig, &cp.binaries.kubectl);
    let child = controller
        .spawn()
        .with_context(|| format!("starting {}", controller_binary().display()))?;
    let status = supervise(child).await;
    drop(remotes);
    status
}

/// `resource-controller run` as a user runs it, with dev-friendly intervals and the simulated
/// cloud in a state file (a restart, or a second replica with the same file, sees the same
/// instances; the cluster is new each time, so the file starts empty too).
fn controller_command(local: &Path, kubeconfig: &Path) -> Command {
    let state_file = local.join("sim-state.jsonl");
    let _ = std::fs::remove_file(&state_file);
    let mut command = Command::new(controller_binary());
    command
        .arg("run")
        .arg("--poll-interval=2s")
        .arg("--cluster-id=local")
        .arg(format!("--sim-state-file={}", state_file.display()))
        .arg("--leader-lease-namespace=default")
        .arg("--controller-instance-id=dev-env")
        .args(std::env::args().skip(1))
        .env("KUBECONFIG", kubeconfig)
        .env("HEALTH_PORT", HEALTH_PORT.to_string())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C at the terminal reaches only dev-env, which stops
        // the controller with SIGTERM while the cluster still answers.
        .process_group(0);
    command
}

fn print_guide(kubeconfig: &Path, kubectl: &Path) {
    eprintln!(
        "\nLocal cluster ready; the samples run on the simulated provider. In another terminal:\n\n  \
         export KUBECONFIG={}\n  \
         kubectl get wkt,wk -w        (workers go Pending -> Provisioning -> Running)\n  \
         kubectl describe wk personal-1\n  \
         kubectl get wk -o custom-columns=NAME:.metadata.name,PHASE:.status.phase,SEAT:.status.license.seat\n  \
         (enterprise-large workers register a license before Running, and give it back first)\n  \
         curl -s localhost:{HEALTH_PORT}/metrics   (also /health and /readyz)\n\n\
         kubectl is {} (built from the same Kubernetes version).\n\
         Ctrl-C stops the controller, then the cluster.\n",
        kubeconfig.display(),
        kubectl.display(),
    );
}

/// Waits for the controller to exit; on Ctrl-C (or SIGTERM) asks it to stop with SIGTERM, as
/// Kubernetes would, and waits for it.
async fn supervise(mut child: Child) -> anyhow::Result<ExitStatus> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        status = child.wait() => return Ok(status?),
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    if let Some(pid) = child.id() {
        // The terminal's Ctrl-C reached the controller too; a second SIGTERM is harmless.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            child.kill().await?;
            Ok(child.wait().await?)
        }
    }
}

/// The demo's lab schedule, played against the Control Plane API stand-in; each change is
/// announced under etcd's `/ccm/instances/` as the platform does.
async fn play(platform: ControlPlaneServer, etcd: String) {
    let announce = |id: &'static str| {
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
    book_labs(&platform, slot);
    announce("ccie").await;
    eprintln!("[schedule] 3 CCIE labs booked for {slot}: watch workers start ahead of it");

    tokio::time::sleep_until(start + PLACED_AT).await;
    place_labs(&platform, slot);
    announce("placed").await;
    eprintln!("[schedule] labs placed on workers");

    tokio::time::sleep_until(start + ENDED_AT).await;
    {
        let mut state = platform.state();
        state.instances.clear();
        state.capacities.clear();
    }
    announce("ended").await;
    eprintln!("[schedule] labs ended: idle workers drain and stop after scaleDownGracePeriod (1m)");
}

/// Three CCIE labs, each needing most of one Enterprise worker, for the timeslot at `slot`.
fn book_labs(platform: &ControlPlaneServer, slot: Timestamp) {
    let end = slot.checked_add(Duration::from_secs(3600)).unwrap_or(slot);
    platform.add_definition(json!({
        "id": "ccie-enterprise-v3", "name": "CCIE Enterprise", "version": "3",
        "resource_requirements": {"cpu_cores": 64, "memory_gb": 256, "storage_gb": 200},
        "license_affinity": ["ENTERPRISE"], "node_count": 40
    }));
    for n in 1..=3 {
        platform.add_instance(json!({
            "id": format!("ccie-{n}"), "definition_id": "ccie-enterprise-v3", "state": "SCHEDULED",
            "worker_id": null, "timeslot_start": slot.to_string(), "timeslot_end": end.to_string()
        }));
    }
}

/// The platform places each lab on a worker of the Enterprise template, and then reports a lab
/// scheduled on each of those workers.
fn place_labs(platform: &ControlPlaneServer, slot: Timestamp) {
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
    for worker in &workers {
        platform.set_capacity(
            worker,
            json!({"worker_id": worker,
                   "allocated": {"cpu_cores": 64, "memory_gb": 256, "storage_gb": 200, "nodes": 40},
                   "running_instances": 0, "scheduled_instances": 1,
                   "next_timeslot_start": slot.to_string()}),
        );
    }
}
