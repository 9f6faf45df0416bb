//! What two replicas of the built binary cost with a fleet: N Workers on the simulated provider
//! (EC2's default rate limits) against the real control plane, with the product's default
//! intervals (30 s resync, 5 s poll, 15 s Lease). Reports the time to all Running, then the idle
//! CPU and the RSS of the leader and of the standby over a window of steady state.
//!
//! `cargo bench --bench replicas` (or `make bench-replicas`) runs 100 workers and a 60 s window;
//! `WORKERS` and `WINDOW_SECS` override them. Under `cargo test` it runs 3 workers for 2 s as a
//! smoke test.

use ccm_harness as support;

use std::time::{Duration, Instant};

use kube::{Api, api::ListParams};
use resource_controller::crd::{Worker, WorkerPhase};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace,
    process::{scratch_dir, usage},
    replica::{DEPLOYED_LEASE, Replica},
    workers::{create_workers, numbered, simulated_template},
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let workers = env_or("WORKERS", if benching { 100 } else { 3 }) as usize;
    let window = Duration::from_secs(env_or("WINDOW_SECS", if benching { 60 } else { 2 }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(measure(workers, window));
}

async fn measure(count: usize, window: Duration) {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "replicas").await;
    let dir = scratch_dir("replicas-");
    simulated_template(&client, &ns.name, json!({"maxWorkers": 1000})).await;
    let defaults = [
        "--leader-lease-namespace",
        ns.name.as_str(),
        "--poll-interval",
        "5s",
        "--reconcile-interval",
        "30",
        "--sim-boot-delay",
        "3s",
        "--sim-cml-boot",
        "2s",
    ];
    let defaults: Vec<&str> = defaults.into_iter().chain(DEPLOYED_LEASE).collect();
    let leader = Replica::start(&cp.kubeconfig, &ns.name, "leader", &dir, &defaults, &[]);
    leader.until_leader().await;
    let standby = Replica::start(&cp.kubeconfig, &ns.name, "standby", &dir, &defaults, &[]);
    standby
        .until("/readyz", |s, b| s == 200 && b.starts_with("standby"))
        .await;

    let workers: Api<Worker> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    create_workers(&workers, "sim", numbered(count), 16).await;
    loop {
        let list = workers.list(&ListParams::default()).await.expect("list");
        let running = list
            .items
            .iter()
            .filter(|w| w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running))
            .count();
        if running == count {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{running} of {count} Running after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let all_running = started.elapsed();
    // Let the last status writes and the first resync pass before measuring steady state.
    tokio::time::sleep(Duration::from_secs(if count > 10 { 35 } else { 1 })).await;
    let before = [usage(leader.pid()), usage(standby.pid())];
    tokio::time::sleep(window).await;
    let after = [usage(leader.pid()), usage(standby.pid())];
    println!(
        "{count} workers, default EC2 limits: all Running after {:.1} s",
        all_running.as_secs_f64()
    );
    for (i, role) in ["leader", "standby"].iter().enumerate() {
        let cores = (after[i].0 - before[i].0) / window.as_secs_f64();
        println!(
            "{role:>8}: idle CPU {:.4} cores ({:.1} ms/s) over {} s; RSS {:.1} MiB, peak {:.1} MiB; \
             CPU used in all {:.2} s",
            cores,
            cores * 1000.0,
            window.as_secs(),
            after[i].1,
            after[i].2,
            after[i].0
        );
    }
    drop((leader, standby));
    ns.delete().await;
}
