//! Provider benchmark against the simulated cloud, on tokio's paused clock so the cloud's rate
//! limits play out in virtual time:
//! - describe calls needed to observe 1,000 running instances (target: 1);
//! - the sustained launch rate of 1,000 launches through the client-side buckets, and how many
//!   RequestLimitExceeded answers the simulated cloud gave (target: 0).
//!
//! Run with `cargo bench --bench provider` (or `make bench`).

use ccm_simulator::{SimulatedCloud, SimulatedConfig};
use std::{sync::Arc, time::Instant as WallClock};

use resource_controller::provider::{
    CloudProvider, LaunchRequest, LaunchSpec, Provider, WorkerIdentity, ratelimit::Operation,
};

const INSTANCES: usize = 1000;

fn request(i: usize) -> LaunchRequest {
    LaunchRequest {
        worker: WorkerIdentity {
            cluster_id: "bench".into(),
            namespace: "bench".into(),
            name: format!("w{i}"),
            uid: format!("00000000-0000-0000-0000-{i:012}"),
            template: "bench".into(),
        },
        spec: LaunchSpec::basic("ami-0abcdef1234567890", &["m5zn.metal"]),
        attempt: 1,
    }
}

async fn run() {
    let sim = Arc::new(SimulatedCloud::new(SimulatedConfig::default()));
    let provider = Arc::new(Provider::new(sim.clone()));

    let wall = WallClock::now();
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..INSTANCES)
        .map(|i| {
            let p = provider.clone();
            tokio::spawn(async move { p.launch(&request(i)).await })
        })
        .collect();
    let mut ids = Vec::with_capacity(INSTANCES);
    for t in tasks {
        match t.await {
            Ok(Ok(launched)) => ids.push(launched.instance.id),
            Ok(Err(e)) => panic!("launch failed: {e}"),
            Err(e) => panic!("launch task failed: {e}"),
        }
    }
    let virtual_secs = start.elapsed().as_secs_f64();
    let wall_launch = wall.elapsed();

    tokio::time::sleep(std::time::Duration::from_secs(10)).await; // let every instance boot

    let before = provider.calls().of(Operation::DescribeInstances);
    let listed = provider.list_managed("bench").await.expect("list managed");
    let list_calls = provider.calls().of(Operation::DescribeInstances) - before;
    let running = listed
        .iter()
        .filter(|i| i.state == resource_controller::provider::InstanceState::Running)
        .count();

    let before = provider.calls().of(Operation::DescribeInstances);
    let described = provider.describe(&ids).await.expect("describe");
    let describe_calls = provider.calls().of(Operation::DescribeInstances) - before;

    println!("provider benchmark (simulated cloud, EC2 buckets: RunInstances 5 burst / 2 per s)");
    println!("  launches                               {INSTANCES}");
    println!(
        "  instances launched                     {}",
        sim.launched()
    );
    println!("  virtual time for all launches          {virtual_secs:.1} s");
    println!(
        "  sustained launch rate                  {:.2} launches/s",
        INSTANCES as f64 / virtual_secs
    );
    println!(
        "  RequestLimitExceeded answers           {}",
        sim.throttled_calls()
    );
    println!(
        "  wall time (CPU cost of the policy)     {:.0} ms",
        wall_launch.as_secs_f64() * 1000.0
    );
    println!(
        "  running instances observed by tag      {running} with {list_calls} DescribeInstances call(s)"
    );
    println!(
        "  instances observed by id               {} with {describe_calls} DescribeInstances call(s)",
        described.len()
    );
    assert_eq!(
        sim.throttled_calls(),
        0,
        "the client buckets must keep the cloud from throttling"
    );
    assert_eq!(running, INSTANCES);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}
