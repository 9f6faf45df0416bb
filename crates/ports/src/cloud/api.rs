//! The raw cloud API: one method per cloud call, no retries, no rate limiting. The EC2 adapter
//! and the simulated cloud implement it; the operator's `Provider` (`provider::managed`) adds
//! the policy on top.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{Image, ImageQuery, Instance, LaunchSpec, Result};

/// Most instance ids one describe call takes.
pub const MAX_IDS_PER_DESCRIBE: usize = 1000;
/// Most instances one page of a filtered listing returns.
pub const MAX_RESULTS_PER_PAGE: i32 = 1000;

/// One RunInstances call for one instance.
#[derive(Clone, Debug)]
pub struct RunInstance<'a> {
    pub spec: &'a LaunchSpec,
    pub instance_type: &'a str,
    pub subnet_id: Option<&'a str>,
    pub tags: &'a BTreeMap<String, String>,
    pub client_token: &'a str,
}

/// A filtered listing of instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// Every tag must match exactly.
    pub tags: Vec<(String, String)>,
    /// Leave out instances already terminated.
    pub exclude_terminated: bool,
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

#[async_trait]
pub trait CloudApi: Send + Sync {
    /// The region the calls go to, for messages.
    fn region(&self) -> &str;

    async fn run_instance(&self, request: RunInstance<'_>) -> Result<Instance>;

    /// Describes up to [`MAX_IDS_PER_DESCRIBE`] instances; any unknown id fails the whole call
    /// with `NotFound`, naming the unknown ids in the message (as EC2 does).
    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>>;

    /// One page of instances matching `filter`.
    async fn list_instances(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>>;

    async fn start_instances(&self, ids: &[String]) -> Result<()>;
    async fn stop_instances(&self, ids: &[String]) -> Result<()>;
    async fn terminate_instances(&self, ids: &[String]) -> Result<()>;

    /// Images matching the query (by id, or by name glob and owners).
    async fn describe_images(&self, query: &ImageQuery) -> Result<Vec<Image>>;

    /// Fails with `InvalidRequest` naming any type the cloud does not offer.
    async fn check_instance_types(&self, types: &[String]) -> Result<()>;

    /// The availability zone of each subnet.
    async fn subnet_zones(&self, subnet_ids: &[String]) -> Result<HashMap<String, String>>;
}
