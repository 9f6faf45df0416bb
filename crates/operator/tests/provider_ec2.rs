//! The EC2 adapter and provider policy against moto's EC2 server, through aws-sdk-ec2.
//! Each test works in its own region, so tests never see each other's instances.

use ccm_harness as support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aws_sdk_ec2::{
    Client,
    types::{HttpTokensState, InstanceMetadataTagsState},
};
use resource_controller::provider::{
    CloudProvider, ErrorKind, ImageQuery, InstanceState, LaunchRequest, LaunchSpec, Provider,
    WorkerIdentity, ec2::Ec2Api, ratelimit::Operation, tag,
};
use support::moto::{Moto, sdk_config};

struct Fixture {
    provider: Provider,
    sdk: Client,
    region: &'static str,
}

async fn fixture(region: &'static str) -> Fixture {
    let config = Moto::shared().sdk_config(region).await;
    Fixture {
        provider: Provider::new(Arc::new(Ec2Api::from_sdk_config(&config))),
        sdk: Client::new(&config),
        region,
    }
}

impl Fixture {
    /// One of moto's stock images (public, owned by Amazon).
    async fn stock(&self) -> aws_sdk_ec2::types::Image {
        let images = self
            .sdk
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("describe images");
        images.images()[0].clone()
    }

    /// The id of one of moto's stock images.
    async fn stock_image(&self) -> String {
        self.stock().await.image_id().expect("image id").to_owned()
    }

    fn spec(&self, image_id: &str) -> LaunchSpec {
        LaunchSpec {
            key_name: Some("cml".into()),
            user_data: Some(
                "#cloud-config
"
                .into(),
            ),
            extra_tags: BTreeMap::from([("team".into(), "labs".into())]),
            ..LaunchSpec::basic(image_id, &["m5zn.metal"])
        }
    }

    fn request(&self, cluster: &str, name: &str, spec: LaunchSpec) -> LaunchRequest {
        LaunchRequest {
            worker: WorkerIdentity {
                cluster_id: cluster.into(),
                namespace: "ns".into(),
                name: name.into(),
                uid: format!("uid-{}-{name}", self.region),
                template: "personal-standard".into(),
            },
            spec,
            attempt: 1,
        }
    }

    async fn instances_tagged(&self, key: &str, value: &str) -> Vec<String> {
        let out = self
            .sdk
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name(format!("tag:{key}"))
                    .values(value)
                    .build(),
            )
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .expect("describe");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect()
    }
}

#[tokio::test]
async fn launch_tags_the_instance_and_resolves_the_newest_image() {
    let f = fixture("eu-west-1").await;
    let stock = f.stock_image().await;
    // Two CML images; the newer one must win the pattern.
    let seed = f
        .provider
        .launch(&f.request("c1", "seed", f.spec(&stock)))
        .await
        .expect("seed launch");
    let old = f
        .sdk
        .create_image()
        .instance_id(&seed.instance.id)
        .name("CML-2.9.0-b1")
        .send()
        .await
        .expect("image");
    tokio::time::sleep(Duration::from_millis(1100)).await; // moto's CreationDate has whole seconds
    let new = f
        .sdk
        .create_image()
        .instance_id(&seed.instance.id)
        .name("CML-2.9.1-b4")
        .send()
        .await
        .expect("image");
    f.sdk
        .create_image()
        .instance_id(&seed.instance.id)
        .name("CML-3.0.0-b1")
        .send()
        .await
        .expect("image");

    let query = ImageQuery::NamePattern {
        pattern: "CML-2.9.*".into(),
        owners: vec!["self".into()],
    };
    let image = f.provider.resolve_image(&query).await.expect("resolve");
    assert_eq!(Some(image.id.as_str()), new.image_id());
    assert_ne!(Some(image.id.as_str()), old.image_id());

    let by_id = f
        .provider
        .resolve_image(&ImageQuery::Id(image.id.clone()))
        .await
        .expect("by id");
    assert_eq!(by_id.name.as_deref(), Some("CML-2.9.1-b4"));

    let launched = f
        .provider
        .launch(&f.request("c1", "w1", f.spec(&image.id)))
        .await
        .expect("launch");
    assert!(!launched.adopted);
    let i = &launched.instance;
    assert_eq!(i.instance_type, "m5zn.metal");
    assert_eq!(i.image_id.as_deref(), Some(image.id.as_str()));
    assert!(i.private_ip.is_some() && i.availability_zone.is_some() && i.launch_time.is_some());
    for (key, value) in [
        (tag::NAME, "w1"),
        (tag::MANAGED, "true"),
        (tag::CLUSTER, "c1"),
        (tag::TEMPLATE, "personal-standard"),
        (tag::WORKER, "ns/w1"),
        (tag::WORKER_UID, "uid-eu-west-1-w1"),
        ("team", "labs"),
    ] {
        assert_eq!(i.tag(key), Some(value), "tag {key}");
    }
    // The tags are on the instance in EC2, not only in our answer.
    assert_eq!(
        f.instances_tagged(tag::WORKER_UID, "uid-eu-west-1-w1")
            .await,
        vec![i.id.clone()]
    );
}

#[tokio::test]
async fn repeated_launch_for_one_worker_yields_one_instance() {
    let f = fixture("eu-west-2").await;
    let stock = f.stock_image().await;
    let request = f.request("c1", "w1", f.spec(&stock));
    let first = f.provider.launch(&request).await.expect("first launch");
    // A restart mid-launch retries the same attempt; a later retry uses the next attempt number.
    // moto ignores ClientToken, so only the lookup by the worker-uid tag prevents a duplicate.
    let again = f
        .provider
        .launch(&request)
        .await
        .expect("same attempt again");
    let mut next_attempt = request.clone();
    next_attempt.attempt = 2;
    let third = f
        .provider
        .launch(&next_attempt)
        .await
        .expect("next attempt");

    assert!(!first.adopted);
    assert!(again.adopted && third.adopted);
    assert_eq!(again.instance.id, first.instance.id);
    assert_eq!(third.instance.id, first.instance.id);
    assert_eq!(
        f.instances_tagged(tag::WORKER_UID, &request.worker.uid)
            .await,
        vec![first.instance.id.clone()]
    );
    assert_eq!(f.provider.calls().get(Operation::RunInstances, "ok"), 1);
}

#[tokio::test]
async fn describe_batches_and_lists_by_tag() {
    let f = fixture("us-west-1").await;
    let stock = f.stock_image().await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(
            f.provider
                .launch(&f.request("c1", name, f.spec(&stock)))
                .await
                .expect("launch")
                .instance
                .id,
        );
    }
    let other = f
        .provider
        .launch(&f.request("c2", "other", f.spec(&stock)))
        .await
        .expect("launch")
        .instance
        .id;

    let before = f.provider.calls().of(Operation::DescribeInstances);
    let described = f.provider.describe(&ids).await.expect("describe");
    assert_eq!(
        f.provider.calls().of(Operation::DescribeInstances) - before,
        1,
        "one call for the batch"
    );
    let mut got: Vec<String> = described.iter().map(|i| i.id.clone()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);

    // Unknown ids are left out, not fatal.
    let mut with_unknown = ids.clone();
    with_unknown.push("i-0123456789abcdef0".into());
    let before = f.provider.calls().of(Operation::DescribeInstances);
    let described = f
        .provider
        .describe(&with_unknown)
        .await
        .expect("describe with unknown id");
    assert_eq!(described.len(), 3);
    assert_eq!(
        f.provider
            .calls()
            .get(Operation::DescribeInstances, "NotFound"),
        1
    );
    assert_eq!(
        f.provider.calls().of(Operation::DescribeInstances) - before,
        2,
        "asked again without the unknown id"
    );

    let mut listed: Vec<String> = f
        .provider
        .list_managed("c1")
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort();
    assert_eq!(
        listed, want,
        "cluster c2's instance {other} must not be listed"
    );
}

#[tokio::test]
async fn stop_start_and_terminate() {
    let f = fixture("us-west-2").await;
    let stock = f.stock_image().await;
    let id = f
        .provider
        .launch(&f.request("c1", "w1", f.spec(&stock)))
        .await
        .expect("launch")
        .instance
        .id;
    let state = async |f: &Fixture| {
        f.provider
            .describe(std::slice::from_ref(&id))
            .await
            .expect("describe")[0]
            .state
    };

    f.provider.stop(&id).await.expect("stop");
    assert!(matches!(
        state(&f).await,
        InstanceState::Stopping | InstanceState::Stopped
    ));
    f.provider.start(&id).await.expect("start");
    assert!(matches!(
        state(&f).await,
        InstanceState::Pending | InstanceState::Running
    ));
    f.provider.terminate(&id).await.expect("terminate");
    assert!(state(&f).await.is_gone());
    assert!(
        f.provider
            .list_managed("c1")
            .await
            .expect("list")
            .is_empty(),
        "terminated instances are not listed"
    );
}

#[tokio::test]
async fn unknown_instances_are_not_found() {
    let f = fixture("ap-southeast-1").await;
    let err = f
        .provider
        .terminate("i-0123456789abcdef0")
        .await
        .expect_err("terminate unknown");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(err.code.as_deref(), Some("InvalidInstanceID.NotFound"));
    assert!(err.message.contains("i-0123456789abcdef0"), "{err}");
    let err = f
        .provider
        .stop("i-0123456789abcdef1")
        .await
        .expect_err("stop unknown");
    assert!(err.is_not_found());
}

#[tokio::test]
async fn bad_input_gets_classified_errors() {
    let f = fixture("ap-northeast-1").await;
    let stock = f.stock_image().await;

    let mut spec = f.spec(&stock);
    spec.instance_types = vec!["m5zn.metal".into(), "bogus.huge".into()];
    let err = f
        .provider
        .launch(&f.request("c1", "w1", spec))
        .await
        .expect_err("unknown type");
    assert_eq!(err.kind, ErrorKind::InvalidRequest);
    assert_eq!(err.code.as_deref(), Some("InvalidInstanceType"));
    assert!(err.message.contains("bogus.huge"), "{err}");
    assert_eq!(
        f.provider.calls().of(Operation::RunInstances),
        0,
        "nothing launched"
    );

    let query = ImageQuery::NamePattern {
        pattern: "CML-9.*".into(),
        owners: vec!["self".into()],
    };
    let err = f
        .provider
        .resolve_image(&query)
        .await
        .expect_err("no image");
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(
        err.message.contains("CML-9.*") && err.message.contains("ap-northeast-1"),
        "{err}"
    );

    let err = f
        .provider
        .resolve_image(&ImageQuery::Id("ami-00000000deadbeef0".into()))
        .await
        .expect_err("no ami");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn bad_credentials_are_unauthorized_and_not_retried() {
    let config = Moto::authenticating().sdk_config("eu-central-1").await;
    let provider = Provider::new(Arc::new(Ec2Api::from_sdk_config(&config)));
    let err = provider
        .list_managed("c1")
        .await
        .expect_err("bad credentials");
    assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
    assert_eq!(err.code.as_deref(), Some("AuthFailure"));
    assert_eq!(provider.calls().total(), 1, "no retries");
}

#[tokio::test]
async fn unreachable_endpoint_is_transient_and_not_retried() {
    let port = support::process::free_port(); // nothing listens there
    let config = sdk_config(&format!("http://127.0.0.1:{port}"), "eu-north-1").await;
    let provider = Provider::new(Arc::new(Ec2Api::from_sdk_config(&config)));
    let err = provider
        .describe(&["i-0123456789abcdef0".into()])
        .await
        .expect_err("unreachable");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("could not reach the EC2 API"), "{err}");
    assert_eq!(provider.calls().total(), 1, "no retries");
}

#[tokio::test]
async fn instances_launch_with_imdsv2_no_public_ip_and_the_named_kms_key() {
    let f = fixture("ca-central-1").await;
    let stock = f.stock_image().await;
    let spec = LaunchSpec {
        kms_key_id: Some("alias/cml-workers".into()),
        ..f.spec(&stock)
    };
    let launched = f
        .provider
        .launch(&f.request("c1", "w1", spec))
        .await
        .expect("launch");
    let id = launched.instance.id.clone();
    assert_eq!(
        launched.instance.public_ip, None,
        "no public address by default"
    );
    let out = f
        .sdk
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("describe");
    let instance = &out.reservations()[0].instances()[0];
    let metadata = instance.metadata_options().expect("metadata options");
    assert_eq!(metadata.http_tokens(), Some(&HttpTokensState::Required));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    assert_eq!(
        metadata.instance_metadata_tags(),
        Some(&InstanceMetadataTagsState::Disabled)
    );
    assert_eq!(instance.public_ip_address(), None);
    let volumes = f
        .sdk
        .describe_volumes()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.instance-id")
                .values(&id)
                .build(),
        )
        .send()
        .await
        .expect("volumes");
    let root = &volumes.volumes()[0];
    assert_eq!(root.encrypted(), Some(true));
    assert_eq!(root.kms_key_id(), Some("alias/cml-workers"));

    // A public address only when asked for.
    let public = LaunchSpec {
        public_ip: true,
        ..f.spec(&stock)
    };
    let launched = f
        .provider
        .launch(&f.request("c1", "w2", public))
        .await
        .expect("launch");
    assert!(
        launched.instance.public_ip.is_some(),
        "{:?}",
        launched.instance
    );
}

#[tokio::test]
async fn a_template_pattern_without_owners_never_picks_someone_elses_image() {
    let f = fixture("sa-east-1").await;
    // A public image whose name a template's pattern matches (name squatting).
    let public_name = f.stock().await.name().expect("name").to_owned();
    let template: resource_controller::crd::WorkerTemplateSpec =
        serde_json::from_value(serde_json::json!({
            "instanceType": "m5zn.metal",
            "image": {"namePattern": public_name},
            "capacity": {"cpuCores": 1, "memoryGiB": 1, "storageGiB": 1, "maxNodes": 1},
            "licenseType": "Personal",
            "scaling": {"maxWorkers": 1}
        }))
        .expect("spec");
    let query = resource_controller::provider::image_query(&template).expect("query");
    let err = f
        .provider
        .resolve_image(&query)
        .await
        .expect_err("another owner's image is not ours");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    // Named owners still reach it.
    let amazon = ImageQuery::NamePattern {
        pattern: public_name,
        owners: vec!["amazon".into()],
    };
    assert!(f.provider.resolve_image(&amazon).await.is_ok());
}
