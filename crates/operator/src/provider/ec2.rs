//! The EC2 adapter: [`CloudApi`] on aws-sdk-ec2, credentials from aws-config's default chain.

use std::{collections::HashMap, error::Error as StdError, time::Duration};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_ec2::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{
        BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState,
        IamInstanceProfileSpecification, InstanceMetadataEndpointState,
        InstanceMetadataOptionsRequest, InstanceMetadataTagsState,
        InstanceNetworkInterfaceSpecification, InstanceType, ResourceType, Tag, TagSpecification,
        VolumeType,
    },
};
use aws_smithy_types::base64;
use k8s_openapi::jiff::Timestamp;

use super::{
    ErrorKind, Image, ImageQuery, Instance, InstanceState, LaunchSpec, MetadataOptions,
    ProviderError, Result,
    api::{CloudApi, InstanceFilter, MAX_RESULTS_PER_PAGE, Page, RunInstance},
    ratelimit::Operation,
};

/// Where the EC2 API is.
#[derive(Clone, Debug, Default)]
pub struct Ec2Settings {
    /// Region; aws-config's chain (`AWS_REGION`, profile) when unset.
    pub region: Option<String>,
    /// Endpoint override for emulators (`AWS_ENDPOINT_URL` is also honoured by aws-config).
    pub endpoint_url: Option<String>,
}

/// EC2 through aws-sdk-ec2. The SDK's own retries are off: [`super::Provider`] owns that policy.
#[derive(Clone, Debug)]
pub struct Ec2Api {
    client: Client,
    region: String,
}

impl Ec2Api {
    /// Loads credentials and region from the default chain (env, profile, web identity, IMDS).
    pub async fn connect(settings: &Ec2Settings) -> Ec2Api {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        Ec2Api::from_sdk_config(&loader.load().await)
    }

    /// Builds on an already loaded configuration (tests pass static credentials this way).
    pub fn from_sdk_config(config: &SdkConfig) -> Ec2Api {
        let conf = aws_sdk_ec2::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            )
            .build();
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "unknown".to_owned());
        Ec2Api {
            client: Client::from_conf(conf),
            region,
        }
    }
}

/// Turns any SDK failure into a classified [`ProviderError`] with a readable message.
fn classify<E, R>(op: Operation, err: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let operation = op.as_str();
    if let SdkError::ServiceError(service) = &err
        && let Some(code) = service.err().code()
    {
        return ProviderError::from_code(
            operation,
            code,
            service.err().message().unwrap_or_default(),
        );
    }
    let context = DisplayErrorContext(&err).to_string();
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            ErrorKind::Transient
        }
        // Credential resolution fails before a request is sent.
        _ if context.contains("credentials") || context.contains("identity") => {
            ErrorKind::Unauthorized
        }
        SdkError::ConstructionFailure(_) => ErrorKind::InvalidRequest,
        _ => ErrorKind::Transient,
    };
    let message = match kind {
        ErrorKind::Transient => format!("could not reach the EC2 API: {context}"),
        ErrorKind::Unauthorized => format!("no usable AWS credentials: {context}"),
        _ => context,
    };
    ProviderError::new(kind, operation, message)
}

fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let state = i
        .state()
        .and_then(|s| s.name())
        .and_then(|n| InstanceState::parse(n.as_str()))?;
    Some(Instance {
        id: i.instance_id()?.to_owned(),
        state,
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        private_ip: i.private_ip_address().map(str::to_owned),
        public_ip: i.public_ip_address().map(str::to_owned),
        image_id: i.image_id().map(str::to_owned),
        launch_time: i.launch_time().and_then(|t| {
            Timestamp::new(t.secs(), i32::try_from(t.subsec_nanos()).unwrap_or(0)).ok()
        }),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message())
            .or(i.state_transition_reason())
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    })
}

fn instances_of(reservations: &[aws_sdk_ec2::types::Reservation]) -> Vec<Instance> {
    reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(to_instance)
        .collect()
}

/// The primary interface: its subnet, security groups and whether it gets a public address
/// (said here, not left to the subnet's default).
fn network_interface(
    spec: &LaunchSpec,
    subnet_id: Option<&str>,
) -> InstanceNetworkInterfaceSpecification {
    InstanceNetworkInterfaceSpecification::builder()
        .device_index(0)
        .delete_on_termination(true)
        .associate_public_ip_address(spec.public_ip)
        .set_subnet_id(subnet_id.map(str::to_owned))
        .set_groups((!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()))
        .build()
}

fn metadata_options(m: &MetadataOptions) -> InstanceMetadataOptionsRequest {
    let (tokens, tags) = (
        if m.tokens_required {
            HttpTokensState::Required
        } else {
            HttpTokensState::Optional
        },
        if m.tags {
            InstanceMetadataTagsState::Enabled
        } else {
            InstanceMetadataTagsState::Disabled
        },
    );
    InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(tokens)
        .http_put_response_hop_limit(i32::from(m.hop_limit))
        .instance_metadata_tags(tags)
        .build()
}

const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

#[async_trait]
impl CloudApi for Ec2Api {
    fn region(&self) -> &str {
        &self.region
    }

    async fn run_instance(&self, request: RunInstance<'_>) -> Result<Instance> {
        let op = Operation::RunInstances;
        let spec = request.spec;
        let tags: Vec<Tag> = request
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let tag_specs = [ResourceType::Instance, ResourceType::Volume].map(|resource| {
            TagSpecification::builder()
                .resource_type(resource)
                .set_tags(Some(tags.clone()))
                .build()
        });
        let root = BlockDeviceMapping::builder()
            .device_name(&spec.root_device_name)
            .ebs(
                EbsBlockDevice::builder()
                    .volume_size(i32::try_from(spec.root_volume_gib).unwrap_or(i32::MAX))
                    .volume_type(VolumeType::from(spec.root_volume_type.as_str()))
                    .delete_on_termination(true)
                    .encrypted(true)
                    .set_kms_key_id(spec.kms_key_id.clone())
                    .build(),
            )
            .build();
        let profile = spec.iam_instance_profile.as_ref().map(|p| {
            let b = IamInstanceProfileSpecification::builder();
            if p.starts_with("arn:") {
                b.arn(p)
            } else {
                b.name(p)
            }
            .build()
        });
        let out = self
            .client
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(request.instance_type))
            .min_count(1)
            .max_count(1)
            .client_token(request.client_token)
            .network_interfaces(network_interface(spec, request.subnet_id))
            .metadata_options(metadata_options(&spec.metadata))
            .set_key_name(spec.key_name.clone())
            .set_iam_instance_profile(profile)
            .set_user_data(spec.user_data.as_ref().map(base64::encode))
            .block_device_mappings(root)
            .set_tag_specifications(Some(tag_specs.to_vec()))
            .send()
            .await
            .map_err(|e| classify(op, e))?;
        out.instances().iter().find_map(to_instance).ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Transient,
                op.as_str(),
                "RunInstances answered without an instance",
            )
        })
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        let op = Operation::DescribeInstances;
        let mut out = Vec::with_capacity(ids.len());
        let mut next_token = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|e| classify(op, e))?;
            out.extend(instances_of(page.reservations()));
            match page.next_token() {
                Some(t) if !t.is_empty() => next_token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn list_instances(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>> {
        let mut filters: Vec<Filter> = filter
            .tags
            .iter()
            .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
            .collect();
        if filter.exclude_terminated {
            filters.push(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(LIVE_STATES.map(String::from).to_vec()))
                    .build(),
            );
        }
        let page = self
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(MAX_RESULTS_PER_PAGE)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| classify(Operation::DescribeInstances, e))?;
        Ok(Page {
            items: instances_of(page.reservations()),
            next_token: page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    async fn start_instances(&self, ids: &[String]) -> Result<()> {
        self.client
            .start_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(Operation::StartInstances, e))
    }

    async fn stop_instances(&self, ids: &[String]) -> Result<()> {
        self.client
            .stop_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(Operation::StopInstances, e))
    }

    async fn terminate_instances(&self, ids: &[String]) -> Result<()> {
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(Operation::TerminateInstances, e))
    }

    async fn describe_images(&self, query: &ImageQuery) -> Result<Vec<Image>> {
        let request = self.client.describe_images();
        let request = match query {
            ImageQuery::Id(id) => request.image_ids(id),
            ImageQuery::NamePattern { pattern, owners } => request
                .filters(Filter::builder().name("name").values(pattern).build())
                .filters(Filter::builder().name("state").values("available").build())
                .set_owners((!owners.is_empty()).then(|| owners.clone())),
        };
        let out = request
            .send()
            .await
            .map_err(|e| classify(Operation::DescribeImages, e))?;
        Ok(out
            .images()
            .iter()
            .filter_map(|i| {
                Some(Image {
                    id: i.image_id()?.to_owned(),
                    name: i.name().map(str::to_owned),
                    creation_date: i.creation_date().map(str::to_owned),
                    root_device_name: i.root_device_name().map(str::to_owned),
                })
            })
            .collect())
    }

    async fn check_instance_types(&self, types: &[String]) -> Result<()> {
        self.client
            .describe_instance_types()
            .set_instance_types(Some(
                types
                    .iter()
                    .map(|t| InstanceType::from(t.as_str()))
                    .collect(),
            ))
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(Operation::DescribeInstanceTypes, e))
    }

    async fn subnet_zones(&self, subnet_ids: &[String]) -> Result<HashMap<String, String>> {
        let out = self
            .client
            .describe_subnets()
            .set_subnet_ids(Some(subnet_ids.to_vec()))
            .send()
            .await
            .map_err(|e| classify(Operation::DescribeSubnets, e))?;
        Ok(out
            .subnets()
            .iter()
            .filter_map(|s| Some((s.subnet_id()?.to_owned(), s.availability_zone()?.to_owned())))
            .collect())
    }
}
