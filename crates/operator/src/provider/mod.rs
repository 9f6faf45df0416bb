//! Cloud providers: the trait the reconcilers use, the policy over a raw cloud API (rate
//! limits, retries, capacity fallbacks) and the EC2 adapter. The raw API and its values are
//! [`ccm_ports::cloud`]; the simulated cloud is the `ccm-simulator` crate.

mod capacity;
pub mod ec2;
pub mod flags;
mod from_template;
mod managed;
mod registry;
mod turns;

use async_trait::async_trait;

pub use capacity::CapacityCache;
pub use ccm_ports::cloud::{
    DEFAULT_ROOT_DEVICE, Ec2Limits, ErrorKind, Image, ImageQuery, Instance, InstanceState,
    LaunchRequest, LaunchSpec, Launched, MetadataOptions, ProviderError, Rate, Result,
    WorkerIdentity, api, classify_code, client_token, glob, ratelimit, tag,
};
pub use from_template::{image_query, launch_spec};
pub use managed::{CallCounts, Provider, ProviderSettings};
pub use registry::{
    AwsConnector, CallTotal, InUse, ProviderRegistry, ProviderUnavailable, SimulatedBackend,
    SimulatedCml, aws_default_chain,
};

/// Gives the ids to describe, asked once the call may go.
pub type GatheredIds<'a> = Box<dyn FnOnce() -> Vec<String> + Send + 'a>;

/// What the reconcilers ask of a cloud.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// The image a template's image selector stands for now (the newest match of a pattern).
    async fn resolve_image(&self, query: &ImageQuery) -> Result<Image>;

    /// Whether the launch with this ClientToken may go now (`None`), or how long until its turn
    /// at the launch rate limit; the turn is kept for it. Waiting for a turn holds no reconcile.
    fn launch_turn(&self, _client_token: &str) -> Option<std::time::Duration> {
        None
    }

    /// Launches the worker's instance, or adopts the one already tagged with its UID.
    async fn launch(&self, request: &LaunchRequest) -> Result<Launched>;

    /// Describes instances in as few calls as the cloud allows; unknown ids are left out.
    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>>;

    /// [`Self::describe`] for the ids `take` gives once a call may go: ids asked for while the
    /// call waits for the rate limit go with it, so a busy bucket makes bigger calls, not more.
    async fn describe_gathered(&self, take: GatheredIds<'_>) -> Result<Vec<Instance>> {
        self.describe(&take()).await
    }

    /// Every instance of this cluster not yet terminated, found by tag.
    async fn list_managed(&self, cluster_id: &str) -> Result<Vec<Instance>>;

    async fn start(&self, id: &str) -> Result<()>;
    async fn stop(&self, id: &str) -> Result<()>;
    /// Terminates an instance; `NotFound` means it is already gone.
    async fn terminate(&self, id: &str) -> Result<()>;
}
