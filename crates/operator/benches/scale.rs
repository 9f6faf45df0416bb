//! The controller at fleet scale on a real API server: the built binary, one replica, the
//! simulated provider (1 s boot; CML ready 1 s after launch), 30 s resync (5 s in the smoke
//! test). For each fleet size and each set of EC2 limits it applies N Workers and reports the
//! time to all Running, the API-server writes per worker (from the API server's own request
//! counters), the controller's CPU seconds and peak RSS, and then, over a window of steady
//! state, its CPU, its reconciles per worker per resync, and the writes and EC2 mutating calls
//! it made (both should be zero). Next to them, the floors measured in the same run: the
//! RunInstances bucket's (burst, then its refill rate) and the API server's own, a client
//! issuing the same number of status patches as fast as it can (the median of
//! `SCALE_FLOOR_REPEATS` measurements: 3 up to 1,000 workers, 1 above).
//!
//! `make bench-scale` runs N = 100 and 1,000 with EC2's default limits and with raised ones;
//! `SCALE_N=100,1000,10000` and `SCALE_LIMITS=default|raised|both` choose, `WINDOW_SECS` sets the
//! steady-state window (default 60), and `SCALE_ENV="K=V K2=V2"` adds to the controller's
//! environment (an allocator setting, a heap profiler's preload), `SCALE_CONCURRENCY` sets its
//! `--concurrency` (default 16). Under `cargo test` it runs N = 3 as a smoke test.

use ccm_harness as support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use resource_controller::crd::{Worker, WorkerPhase};
use serde_json::json;
use support::{
    ControlPlane, TestNamespace, openmetrics,
    process::{CpuSplit, scratch_dir, usage},
    replica::Replica,
    workers::{create_workers, numbered, simulated_template},
};

/// Raised limits, as an account might get them on request.
const RAISED: [(&str, &str); 5] = [
    ("--ec2-run-instances-limit", "1000/200"),
    ("--ec2-start-instances-limit", "1000/200"),
    ("--ec2-terminate-instances-limit", "1000/100"),
    ("--ec2-mutating-limit", "1000/100"),
    ("--ec2-describe-limit", "1000/200"),
];
/// EC2's default RunInstances bucket.
const RUN_BURST: f64 = 5.0;
const RUN_PER_SECOND: f64 = 2.0;
/// The simulated instance's boot, and its CML's start-up counted from launch: a worker can be
/// Running this long after its launch, and no sooner.
const BOOT: Duration = Duration::from_secs(1);

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("SCALE_N")
        .unwrap_or_else(|_| if benching { "100,1000" } else { "3" }.to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let limits = std::env::var("SCALE_LIMITS").unwrap_or_else(|_| "both".to_owned());
    let window = Duration::from_secs(
        std::env::var("WINDOW_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if benching { 60 } else { 2 }),
    );
    // The smoke test waits for one resync before its steady window: a short one keeps it quick.
    let resync = Duration::from_secs(if benching { 30 } else { 5 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for n in sizes {
        for raised in [false, true] {
            let wanted = match limits.as_str() {
                "default" => !raised,
                "raised" => raised,
                _ => true,
            };
            if wanted {
                runtime.block_on(run(n, raised, window, resync));
            }
        }
    }
}

/// When the bench first saw each Worker in the phases of a launch.
#[derive(Default)]
struct Timeline {
    seen: HashMap<String, [Option<Instant>; 3]>,
}

impl Timeline {
    fn saw(&mut self, worker: &Worker) {
        let slot = match worker.status.as_ref().and_then(|s| s.phase) {
            None | Some(WorkerPhase::Pending) => 0,
            Some(WorkerPhase::Provisioning) => 1,
            Some(WorkerPhase::Running) => 2,
            _ => return,
        };
        let times = self.seen.entry(worker.name_any()).or_default();
        times[slot].get_or_insert_with(Instant::now);
    }

    /// Quantiles of the time from created to launched (Provisioning) and from launched to
    /// Running, and when the last Worker was launched.
    fn summary(&self, started: Instant) -> String {
        let mut to_launch = Vec::new();
        let mut to_running = Vec::new();
        let mut last_launch = Duration::ZERO;
        for [created, launched, running] in self.seen.values() {
            if let (Some(c), Some(l)) = (created, launched) {
                to_launch.push(l.duration_since(*c));
                last_launch = last_launch.max(l.duration_since(started));
            }
            if let (Some(l), Some(r)) = (launched, running) {
                to_running.push(r.duration_since(*l));
            }
        }
        format!(
            "created -> Provisioning {}; Provisioning -> Running {}; last launch seen at {:.1} s",
            quantiles(&mut to_launch),
            quantiles(&mut to_running),
            last_launch.as_secs_f64()
        )
    }
}

/// "p50 / p90 / max" of `times`, in seconds.
fn quantiles(times: &mut [Duration]) -> String {
    if times.is_empty() {
        return "(none seen)".to_owned();
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    format!(
        "p50 {:.2} / p90 {:.2} / max {:.2} s",
        at(0.5),
        at(0.9),
        at(1.0)
    )
}

/// The controller's EC2 calls between two scrapes, by operation.
fn cloud_calls(before: &[openmetrics::Sample], after: &[openmetrics::Sample]) -> String {
    ["RunInstances", "DescribeInstances", "DescribeImages"]
        .iter()
        .map(|op| {
            let calls = |samples| {
                openmetrics::value(samples, "ccm_cloud_api_calls_total", &[("operation", op)])
            };
            format!("{op} {}", calls(after) - calls(before))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The API server's request counters: writes (POST, PUT, PATCH, server-side APPLY, DELETE) by
/// resource.
async fn writes(client: &kube::Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client
        .request_text(request)
        .await
        .expect("apiserver metrics");
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |key: &str| {
            labels
                .split(&format!("{key}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        if !matches!(
            label("verb").as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE"
        ) {
            continue;
        }
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        *out.entry(resource).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, key: &str) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

/// The controller's own counters, read from its /metrics.
async fn controller_metrics(replica: &Replica) -> Vec<openmetrics::Sample> {
    let (_, _, body) = replica.get("/metrics").await.expect("controller metrics");
    openmetrics::parse(&body).expect("openmetrics")
}

fn mutating_calls(samples: &[openmetrics::Sample]) -> f64 {
    [
        "RunInstances",
        "StartInstances",
        "StopInstances",
        "TerminateInstances",
        "CreateTags",
    ]
    .iter()
    .map(|op| openmetrics::value(samples, "ccm_cloud_api_calls_total", &[("operation", op)]))
    .sum()
}

/// `patches` status patches over Workers `w00000`.. (`n` of them), 32 in flight. Each one
/// changes the object (a patch that changes nothing is not written, nor sent to watchers).
async fn patch_statuses(workers: &Api<Worker>, n: usize, patches: usize) {
    static NEXT: AtomicI64 = AtomicI64::new(1_000_000);
    stream::iter(0..patches)
        .for_each_concurrent(32, |i| {
            let workers = workers.clone();
            async move {
                let generation = NEXT.fetch_add(1, Ordering::Relaxed);
                let body = json!({"status": {"observedGeneration": generation}});
                workers
                    .patch_status(
                        &format!("w{:05}", i % n),
                        &PatchParams::default(),
                        &Patch::Merge(&body),
                    )
                    .await
                    .expect("patch status");
            }
        })
        .await;
}

/// The API server's own time for every write a run makes: `n` Worker creates, `patches` status
/// patches and `events` Event creates, each kind as fast as one client can (32 in flight), in a
/// namespace no controller watches.
async fn whole_run_floor(
    client: &kube::Client,
    n: usize,
    patches: usize,
    events: usize,
) -> Duration {
    let ns = TestNamespace::create(client, "floor").await;
    let workers: Api<Worker> = Api::namespaced(client.clone(), &ns.name);
    let event_api: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    create_workers(&workers, "sim", numbered(n), 32).await;
    patch_statuses(&workers, n, patches).await;
    stream::iter(0..events)
        .for_each_concurrent(32, |i| {
            let (event_api, ns) = (event_api.clone(), ns.name.clone());
            async move {
                let event: Event = serde_json::from_value(json!({
                    "metadata": {"name": format!("w{:05}.{i:016x}", i % n), "namespace": ns},
                    "eventTime": "2026-01-01T00:00:00.000000Z",
                    "reportingController": "scale-bench",
                    "reportingInstance": "scale-bench",
                    "action": "Reconcile",
                    "reason": "Launched",
                    "type": "Normal",
                    "note": "instance i-0123456789abcdef0 launched",
                    "regarding": {"apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
                                  "namespace": ns, "name": format!("w{:05}", i % n)}
                }))
                .expect("event");
                event_api
                    .create(&PostParams::default(), &event)
                    .await
                    .expect("create event");
            }
        })
        .await;
    let took = started.elapsed();
    ns.delete().await;
    took
}

async fn run(n: usize, raised: bool, window: Duration, resync: Duration) {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = TestNamespace::create(&client, "scale").await;
    let dir = scratch_dir("scale-");
    simulated_template(&client, &ns.name, json!({"maxWorkers": 1000})).await;
    let boot = format!("{}ms", BOOT.as_millis());
    let concurrency = std::env::var("SCALE_CONCURRENCY").unwrap_or_else(|_| "16".to_owned());
    let resync_secs = resync.as_secs().to_string();
    let mut args = vec![
        "--leader-lease-namespace",
        ns.name.as_str(),
        "--reconcile-interval",
        resync_secs.as_str(),
        "--poll-interval",
        "2s",
        "--sim-boot-delay",
        boot.as_str(),
        "--sim-cml-boot",
        boot.as_str(),
        "--concurrency",
        concurrency.as_str(),
    ];
    if raised {
        args.extend(RAISED.iter().flat_map(|(flag, value)| [*flag, *value]));
    }
    let extra_env = std::env::var("SCALE_ENV").unwrap_or_default();
    let env: Vec<(&str, &str)> = extra_env
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let controller = Replica::start(&cp.kubeconfig, &ns.name, "scale", &dir, &args, &env);
    controller.until_leader().await;

    let workers: Api<Worker> = Api::namespaced(client.clone(), &ns.name);
    let (store, writer) = reflector::store::<Worker>();
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let watch = tokio::spawn({
        let timeline = timeline.clone();
        watcher(workers.clone(), watcher::Config::default())
            .reflect(writer)
            .applied_objects()
            .try_for_each(move |w| {
                timeline.lock().expect("timeline").saw(&w);
                async { Ok(()) }
            })
    });
    let writes_before = writes(&client).await;
    let calls_before = controller_metrics(&controller).await;
    let cpu_before = usage(controller.pid()).0;
    let started = Instant::now();
    create_workers(&workers, "sim", numbered(n), 32).await;
    let applied = started.elapsed();
    loop {
        let running = store
            .state()
            .iter()
            .filter(|w| w.status.as_ref().and_then(|s| s.phase) == Some(WorkerPhase::Running))
            .count();
        if running == n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{running} of {n} Running after an hour"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_running = started.elapsed();
    let phases = timeline.lock().expect("timeline").summary(started);
    let (cpu_at_running, _, peak_at_running) = usage(controller.pid());
    let metrics_up = controller_metrics(&controller).await;
    let calls_up = cloud_calls(&calls_before, &metrics_up);
    let reconcile_time = |samples: &[openmetrics::Sample], what: &str| {
        openmetrics::value(
            samples,
            &format!("ccm_reconcile_duration_seconds_{what}"),
            &[("controller", "worker")],
        )
    };
    let reconciles_up =
        reconcile_time(&metrics_up, "count") - reconcile_time(&calls_before, "count");
    let busy_up = reconcile_time(&metrics_up, "sum") - reconcile_time(&calls_before, "sum");
    // Writes made while the fleet came up, minus the bench's own creates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes_up = writes(&client).await;
    let worker_writes = delta(&writes_up, &writes_before, "workers") - n as f64
        + delta(&writes_up, &writes_before, "workers/status");
    let event_writes = delta(&writes_up, &writes_before, "events");

    // Steady state: past the first resync after the last change.
    tokio::time::sleep(resync + Duration::from_secs(5)).await;
    let (cpu0, metrics0, writes0) = (
        usage(controller.pid()).0,
        controller_metrics(&controller).await,
        writes(&client).await,
    );
    // The window in slices, to tell a steady cost from bursts.
    let split0 = CpuSplit::of(controller.pid());
    let slices = 6u32;
    let mut slice_cores = Vec::new();
    let mut last = split0;
    for _ in 0..slices {
        tokio::time::sleep(window / slices).await;
        let now = CpuSplit::of(controller.pid());
        let d = now.since(&last);
        slice_cores.push((d.user + d.system) / (window / slices).as_secs_f64());
        last = now;
    }
    let split = last.since(&split0);
    let (cpu1, metrics1, writes1) = (
        usage(controller.pid()),
        controller_metrics(&controller).await,
        writes(&client).await,
    );
    let steady_cores = (cpu1.0 - cpu0) / window.as_secs_f64();
    let steady_reconciles = |controller: &str| {
        let of = |m: &[openmetrics::Sample]| {
            openmetrics::value(m, "ccm_reconciles_total", &[("controller", controller)])
        };
        of(&metrics1) - of(&metrics0)
    };
    let reconciles = steady_reconciles("worker");
    let template_reconciles = steady_reconciles("template");
    let resyncs = window.as_secs_f64() / resync.as_secs_f64();
    let steady_writes: f64 = [
        "workers",
        "workers/status",
        "events",
        "workertemplates/status",
    ]
    .iter()
    .map(|r| delta(&writes1, &writes0, r))
    .sum();
    let steady_mutating = mutating_calls(&metrics1) - mutating_calls(&metrics0);

    // The API server's floor: the same number of status patches, as fast as one client can.
    // It moves by 10 % or more from one measurement to the next on this machine: the median of
    // a few (one at 10,000, where each takes minutes).
    let patches = worker_writes.round().max(1.0) as usize;
    let repeats = std::env::var("SCALE_FLOOR_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if n <= 1000 { 3 } else { 1 })
        .max(1);
    let mut floors = Vec::new();
    for _ in 0..repeats {
        let floor_started = Instant::now();
        patch_statuses(&workers, n, patches).await;
        floors.push(floor_started.elapsed());
    }
    floors.sort();
    let api_floor = floors[floors.len() / 2];
    let whole_floor = whole_run_floor(&client, n, patches, event_writes.round() as usize).await;
    let run_floor = if raised {
        None
    } else {
        Some((n as f64 - RUN_BURST).max(0.0) / RUN_PER_SECOND + BOOT.as_secs_f64())
    };

    println!(
        "\n{n} workers, {} EC2 limits: all Running after {:.2} s (applied in {:.1} s)",
        if raised { "raised" } else { "default" },
        all_running.as_secs_f64(),
        applied.as_secs_f64()
    );
    if let Some(floor) = run_floor {
        println!(
            "  RunInstances floor (5 burst + 2/s, plus {} s boot): {floor:.1} s -> {:+.1} %",
            BOOT.as_secs(),
            (all_running.as_secs_f64() / floor - 1.0) * 100.0
        );
    }
    println!(
        "  API-server writes per worker to Running: {:.2} on Worker objects (+ {:.2} Events); \
         the API server alone took {:.2} s for the same {patches} patches (median of {repeats}: \
         {:.2} to {:.2} s) -> {:.2}x",
        worker_writes / n as f64,
        event_writes / n as f64,
        api_floor.as_secs_f64(),
        floors[0].as_secs_f64(),
        floors[floors.len() - 1].as_secs_f64(),
        all_running.as_secs_f64() / api_floor.as_secs_f64().max(0.001)
    );
    println!(
        "  the API server alone for every write of the run ({n} creates, {patches} Worker writes, \
         {:.0} Events): {:.1} s ({:.1}x)",
        event_writes,
        whole_floor.as_secs_f64(),
        all_running.as_secs_f64() / whole_floor.as_secs_f64().max(0.001)
    );
    println!("  {phases}");
    println!("  EC2 calls to Running: {calls_up}");
    println!(
        "  worker reconciles to Running: {reconciles_up}, {:.1} ms each on average ({:.1} at once)",
        busy_up / reconciles_up.max(1.0) * 1000.0,
        busy_up / all_running.as_secs_f64()
    );
    println!(
        "  controller: {:.2} CPU s to Running; RSS peak {:.1} MiB to Running, {:.1} MiB by the \
         end, {:.1} MiB now",
        cpu_at_running - cpu_before,
        peak_at_running,
        cpu1.2,
        cpu1.1
    );
    println!(
        "  steady over {} s: {:.4} cores, {:.2} reconciles per worker per resync ({} of the \
         template), {} writes, {} EC2 mutating calls",
        window.as_secs(),
        steady_cores,
        reconciles / n as f64 / resyncs,
        template_reconciles,
        steady_writes,
        steady_mutating
    );
    let slice_list: Vec<String> = slice_cores.iter().map(|c| format!("{c:.4}")).collect();
    println!(
        "    user {:.2} s, system {:.2} s, {:.0} minor faults, {:.0} waits and {:.0} preemptions \
         per second; by {:.1} s slice: [{}] cores",
        split.user,
        split.system,
        split.minor_faults,
        split.voluntary_switches / window.as_secs_f64(),
        split.involuntary_switches / window.as_secs_f64(),
        (window / slices).as_secs_f64(),
        slice_list.join(", ")
    );
    watch.abort();
    drop(controller);
    ns.delete().await;
}
