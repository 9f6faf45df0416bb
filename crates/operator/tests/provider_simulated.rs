//! The provider policy over the simulated cloud, on a paused clock: EC2 semantics, faults,
//! fallback, and the client-side buckets keeping the server's buckets happy.

use ccm_simulator::{SimulatedCloud, SimulatedConfig};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use resource_controller::provider::{
    CloudProvider, ErrorKind, ImageQuery, InstanceState, LaunchRequest, LaunchSpec, Provider,
    ProviderSettings, WorkerIdentity,
    api::{CloudApi, InstanceFilter},
    ratelimit::Operation,
};

const SUBNET_A: &str = "subnet-0000000000000000";
const SUBNET_B: &str = "subnet-0000000100000001";

fn cloud() -> Arc<SimulatedCloud> {
    Arc::new(SimulatedCloud::new(SimulatedConfig::default()))
}

fn spec(types: &[&str], subnets: &[&str]) -> LaunchSpec {
    LaunchSpec {
        subnet_ids: subnets.iter().map(|s| s.to_string()).collect(),
        ..LaunchSpec::basic("ami-0abcdef1234567890", types)
    }
}

fn request(name: &str, spec: LaunchSpec) -> LaunchRequest {
    LaunchRequest {
        worker: WorkerIdentity {
            cluster_id: "sim".into(),
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            template: "t".into(),
        },
        spec,
        attempt: 1,
    }
}

async fn state_of(provider: &Provider, id: &str) -> InstanceState {
    provider.describe(&[id.to_owned()]).await.expect("describe")[0].state
}

#[tokio::test(start_paused = true)]
async fn instances_boot_stop_start_and_terminate_on_schedule() {
    let provider = Provider::new(cloud());
    let launched = provider
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch");
    let id = launched.instance.id.clone();
    assert_eq!(launched.instance.state, InstanceState::Pending);
    assert_eq!(
        launched.instance.availability_zone.as_deref(),
        Some("us-east-1a")
    );

    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert_eq!(
        state_of(&provider, &id).await,
        InstanceState::Pending,
        "boot takes 3s"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state_of(&provider, &id).await, InstanceState::Running);

    provider.stop(&id).await.expect("stop");
    assert_eq!(state_of(&provider, &id).await, InstanceState::Stopping);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = &provider
        .describe(std::slice::from_ref(&id))
        .await
        .expect("describe")[0];
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(
        stopped.public_ip, None,
        "a stopped instance loses its public IP"
    );

    provider.start(&id).await.expect("start");
    assert_eq!(state_of(&provider, &id).await, InstanceState::Pending);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state_of(&provider, &id).await, InstanceState::Running);

    provider.terminate(&id).await.expect("terminate");
    assert_eq!(state_of(&provider, &id).await, InstanceState::ShuttingDown);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state_of(&provider, &id).await, InstanceState::Terminated);
    assert!(provider.list_managed("sim").await.expect("list").is_empty());
}

#[tokio::test(start_paused = true)]
async fn client_token_and_tag_lookup_keep_one_instance_per_worker() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    let req = request("w1", spec(&["m5zn.metal"], &[]));
    let first = provider.launch(&req).await.expect("launch");
    let second = provider.launch(&req).await.expect("launch again");
    assert!(second.adopted);
    assert_eq!(first.instance.id, second.instance.id);

    // The simulated cloud honours ClientToken on its own, as EC2 does.
    let tags = req.worker.tags(&BTreeMap::new());
    let token = req.client_token();
    let raw = resource_controller::provider::api::RunInstance {
        spec: &req.spec,
        instance_type: "m5zn.metal",
        subnet_id: None,
        tags: &tags,
        client_token: &token,
    };
    assert_eq!(
        sim.run_instance(raw).await.expect("raw run").id,
        first.instance.id
    );
    assert_eq!(sim.launched(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_capacity_falls_back_in_order_and_is_remembered() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    sim.fail_capacity("m5zn.metal", None);
    let types = ["m5zn.metal", "m6i.metal", "c5.metal"];

    let first = provider
        .launch(&request("w1", spec(&types, &[])))
        .await
        .expect("launch");
    assert_eq!(first.instance.instance_type, "m6i.metal");
    assert_eq!(
        provider
            .calls()
            .get(Operation::RunInstances, "InsufficientCapacity"),
        1
    );

    // The next launch does not ask for the exhausted type again while it is remembered.
    let second = provider
        .launch(&request("w2", spec(&types, &[])))
        .await
        .expect("launch");
    assert_eq!(second.instance.instance_type, "m6i.metal");
    assert_eq!(
        provider
            .calls()
            .get(Operation::RunInstances, "InsufficientCapacity"),
        1
    );

    // After the memory expires the preferred type is tried again.
    sim.restore_capacity("m5zn.metal");
    tokio::time::sleep(ProviderSettings::default().capacity_ttl + Duration::from_secs(1)).await;
    let third = provider
        .launch(&request("w3", spec(&types, &[])))
        .await
        .expect("launch");
    assert_eq!(third.instance.instance_type, "m5zn.metal");
}

#[tokio::test(start_paused = true)]
async fn capacity_is_remembered_per_zone() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    sim.fail_capacity("m5zn.metal", Some("us-east-1a"));
    let launched = provider
        .launch(&request(
            "w1",
            spec(&["m5zn.metal", "c5.metal"], &[SUBNET_A, SUBNET_B]),
        ))
        .await
        .expect("launch");
    assert_eq!(
        launched.instance.instance_type, "m5zn.metal",
        "same type, other zone"
    );
    assert_eq!(
        launched.instance.availability_zone.as_deref(),
        Some("us-east-1b")
    );
    assert!(
        provider
            .capacity_cache()
            .is_exhausted("m5zn.metal", Some("us-east-1a"))
    );
    assert!(
        !provider
            .capacity_cache()
            .is_exhausted("m5zn.metal", Some("us-east-1b"))
    );
}

#[tokio::test(start_paused = true)]
async fn every_type_exhausted_is_insufficient_capacity() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    sim.fail_capacity("m5zn.metal", None);
    sim.fail_capacity("c5.metal", None);
    let err = provider
        .launch(&request("w1", spec(&["m5zn.metal", "c5.metal"], &[])))
        .await
        .expect_err("no capacity anywhere");
    assert_eq!(err.kind, ErrorKind::InsufficientCapacity);
    assert!(err.message.contains("c5.metal"), "{err}");
    // Asked again at once, the remembered failures answer without calling RunInstances.
    let err = provider
        .launch(&request("w1", spec(&["m5zn.metal", "c5.metal"], &[])))
        .await
        .expect_err("again");
    assert_eq!(err.kind, ErrorKind::InsufficientCapacity);
    assert!(err.message.contains("remembered"), "{err}");
    assert_eq!(provider.calls().of(Operation::RunInstances), 2);
    assert_eq!(sim.launched(), 0);
}

#[tokio::test(start_paused = true)]
async fn injected_launch_failures_are_transient() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    sim.set_launch_failure_rate(1.0);
    let err = provider
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect_err("fails");
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.kind.is_retryable());
    sim.set_launch_failure_rate(0.0);
    provider
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("recovers");
}

#[tokio::test(start_paused = true)]
async fn a_vanished_instance_reads_as_terminated_with_a_reason() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    let id = provider
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch")
        .instance
        .id;
    assert!(sim.vanish(&id));
    let seen = &provider
        .describe(std::slice::from_ref(&id))
        .await
        .expect("describe")[0];
    assert_eq!(seen.state, InstanceState::Terminated);
    assert!(
        seen.state_reason
            .as_deref()
            .is_some_and(|r| r.contains("outside the controller"))
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_ids_are_dropped_from_a_describe() {
    let provider = Provider::new(cloud());
    let id = provider
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch")
        .instance
        .id;
    let asked = vec![
        "i-00000000000000001".to_owned(),
        id.clone(),
        "i-00000000000000002".to_owned(),
    ];
    let before = provider.calls().of(Operation::DescribeInstances);
    let found = provider.describe(&asked).await.expect("describe");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    assert_eq!(
        provider.calls().of(Operation::DescribeInstances) - before,
        2,
        "one NotFound naming both, one answer"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_requests_fail_without_launching() {
    let sim = cloud();
    let provider = Provider::new(sim.clone());
    let err = provider
        .launch(&request("w1", spec(&["x9.galactic"], &[])))
        .await
        .expect_err("unknown type");
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert!(err.message.contains("x9.galactic"));

    let err = provider
        .launch(&request(
            "w1",
            spec(&["m5zn.metal"], &["subnet-0badbadbadbadbad0"]),
        ))
        .await
        .expect_err("subnet");
    assert_eq!(err.kind, ErrorKind::NotFound);

    let mut bad_image = spec(&["m5zn.metal"], &[]);
    bad_image.image_id = "ami-00000000000000000".into();
    let err = provider
        .launch(&request("w1", bad_image))
        .await
        .expect_err("image");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(sim.launched(), 0);

    let pattern = ImageQuery::NamePattern {
        pattern: "CML-2.9.*".into(),
        owners: vec![],
    };
    assert_eq!(
        provider.resolve_image(&pattern).await.expect("resolve").id,
        "ami-0abcdef1234567890"
    );
    let none = ImageQuery::NamePattern {
        pattern: "Ubuntu-*".into(),
        owners: vec!["self".into()],
    };
    let err = provider.resolve_image(&none).await.expect_err("no match");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message
            .contains("no image owned by self matches name pattern \"Ubuntu-*\""),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_server_throttles_callers_without_buckets() {
    let sim = cloud();
    let filter = InstanceFilter::default();
    let mut throttled = 0;
    for _ in 0..150 {
        if let Err(e) = sim.list_instances(&filter, None).await {
            assert_eq!(e.kind, ErrorKind::Throttled);
            assert_eq!(e.code.as_deref(), Some("RequestLimitExceeded"));
            throttled += 1;
        }
    }
    assert_eq!(throttled, 50, "100 burst, no refill on a paused clock");
    assert_eq!(sim.throttled_calls(), 50);
}

#[tokio::test(start_paused = true)]
async fn concurrent_launches_through_the_provider_are_never_throttled() {
    let sim = cloud();
    let provider = Arc::new(Provider::new(sim.clone()));
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..25)
        .map(|i| {
            let p = provider.clone();
            tokio::spawn(async move {
                p.launch(&request(&format!("w{i}"), spec(&["m5zn.metal"], &[])))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join").expect("launch");
    }
    assert_eq!(sim.throttled_calls(), 0);
    assert_eq!(sim.launched(), 25);
    // 5 at once, then 2 per second.
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn throttled_calls_back_off_and_succeed() {
    let sim = cloud();
    // Someone else (another process on the account) empties the RunInstances bucket.
    let req = request("other", spec(&["m5zn.metal"], &[]));
    let tags = req.worker.tags(&BTreeMap::new());
    for n in 0..5 {
        let token = format!("other-{n}");
        let raw = resource_controller::provider::api::RunInstance {
            spec: &req.spec,
            instance_type: "m5zn.metal",
            subnet_id: None,
            tags: &tags,
            client_token: &token,
        };
        sim.run_instance(raw).await.expect("drain bucket");
    }
    let provider = Provider::new(sim.clone());
    let launched = provider
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch after backoff");
    assert_eq!(launched.instance.instance_type, "m5zn.metal");
    assert!(provider.calls().get(Operation::RunInstances, "Throttled") >= 1);
    assert_eq!(provider.calls().get(Operation::RunInstances, "ok"), 1);
}

fn kept_in(path: &std::path::Path) -> Arc<SimulatedCloud> {
    let config = SimulatedConfig {
        boot_delay: Duration::from_millis(200),
        state_file: Some(path.to_owned()),
        ..SimulatedConfig::default()
    };
    Arc::new(SimulatedCloud::open(config).expect("open the state file"))
}

#[tokio::test]
async fn a_state_file_shares_instances_between_clouds_and_outlives_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sim.jsonl");
    let (a, b) = (Provider::new(kept_in(&path)), Provider::new(kept_in(&path)));
    let first = a
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch");
    let id = first.instance.id.clone();
    // The other cloud sees it, boots it on the same schedule, and will not launch it again.
    assert_eq!(state_of(&b, &id).await, InstanceState::Pending);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&b, &id).await, InstanceState::Running);
    let again = b
        .launch(&request("w1", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch again");
    assert_eq!(again.instance.id, id, "adopted, not launched twice");
    let second = b
        .launch(&request("w2", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch");
    assert_ne!(second.instance.id, id, "ids never collide across processes");
    a.stop(&second.instance.id).await.expect("stop");
    drop((a, b));

    // A cloud opened later (a restarted controller) finds both, as they were left.
    let c = Provider::new(kept_in(&path));
    let found = c.list_managed("sim").await.expect("list");
    assert_eq!(found.len(), 2);
    assert_eq!(state_of(&c, &id).await, InstanceState::Running);
    let stopped = state_of(&c, &second.instance.id).await;
    assert!(matches!(
        stopped,
        InstanceState::Stopping | InstanceState::Stopped
    ));
}

#[tokio::test]
async fn a_state_file_is_compacted_and_survives_a_torn_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sim.jsonl");
    let config = SimulatedConfig {
        boot_delay: Duration::ZERO,
        stop_delay: Duration::ZERO,
        throttle: false,
        state_file: Some(path.clone()),
        ..SimulatedConfig::default()
    };
    let cloud = SimulatedCloud::open(config.clone()).expect("open");
    let provider = Provider::new(Arc::new(cloud));
    let mut ids = Vec::new();
    for i in 0..10 {
        let w = format!("w{i}");
        ids.push(
            provider
                .launch(&request(&w, spec(&["m5zn.metal"], &[])))
                .await
                .expect("launch")
                .instance
                .id,
        );
    }
    let raw = SimulatedCloud::open(config.clone()).expect("open");
    for _ in 0..60 {
        raw.stop_instances(&ids).await.expect("stop");
        raw.start_instances(&ids).await.expect("start");
    }
    let lines = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .count();
    assert!(
        lines < 1000,
        "1,210 changes of 10 instances were compacted: {lines} lines"
    );

    // A writer that died mid-line leaves a torn line; readers skip it, the next writer drops it.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    std::io::Write::write_all(&mut file, b"{\"id\":\"i-torn").expect("tear");
    let after = SimulatedCloud::open(config.clone()).expect("open after a torn write");
    let extra = Provider::new(Arc::new(after));
    extra
        .launch(&request("w10", spec(&["m5zn.metal"], &[])))
        .await
        .expect("launch");
    let reread = Provider::new(Arc::new(SimulatedCloud::open(config).expect("reopen")));
    let all = reread.list_managed("sim").await.expect("list");
    assert_eq!(all.len(), 11);
}

#[tokio::test(start_paused = true)]
async fn faults_from_a_file_throttle_fail_and_take_capacity_until_it_changes() {
    use ccm_simulator::InjectedFaults;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("faults.json");
    let sim = Arc::new(SimulatedCloud::new(SimulatedConfig {
        faults_file: Some(file.clone()),
        ..SimulatedConfig::default()
    }));
    let api: &dyn CloudApi = sim.as_ref();
    // No file: no fault.
    api.describe_instances(&[]).await.expect("answered");
    let write = |faults: InjectedFaults| faults.write(&file).expect("write the faults");
    write(InjectedFaults {
        throttle_rate: 1.0,
        ..InjectedFaults::default()
    });
    let e = api.describe_instances(&[]).await.expect_err("throttled");
    assert_eq!(e.kind, ErrorKind::Throttled, "{e}");
    // A new file (its modification time moves on) is read again.
    std::thread::sleep(Duration::from_millis(20));
    write(InjectedFaults {
        server_error_rate: 1.0,
        ..InjectedFaults::default()
    });
    let e = api.describe_instances(&[]).await.expect_err("a 5xx");
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    std::thread::sleep(Duration::from_millis(20));
    write(InjectedFaults {
        no_capacity: vec!["m5zn.metal".into()],
        ..InjectedFaults::default()
    });
    let provider = Provider::new(sim.clone());
    let e = provider
        .launch(&request("w", spec(&["m5zn.metal"], &[SUBNET_A])))
        .await
        .expect_err("no capacity");
    assert_eq!(e.kind, ErrorKind::InsufficientCapacity, "{e}");
    // A file that does not parse keeps what was read before; a removed one clears it all. (The
    // provider remembers a type without capacity for 5 minutes: let that pass each time.)
    std::fs::write(&file, "{not json").expect("garbage");
    tokio::time::advance(Duration::from_secs(301)).await;
    let e = provider
        .launch(&request("w", spec(&["m5zn.metal"], &[SUBNET_A])))
        .await
        .expect_err("still no capacity");
    assert_eq!(
        e.code.as_deref(),
        Some("InsufficientInstanceCapacity"),
        "{e}"
    );
    std::fs::remove_file(&file).expect("remove");
    tokio::time::advance(Duration::from_secs(301)).await;
    provider
        .launch(&request("w", spec(&["m5zn.metal"], &[SUBNET_A])))
        .await
        .expect("capacity is back");
}
