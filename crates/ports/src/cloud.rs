//! A cloud, as the operator sees it: one method per cloud call, and the values that cross.

pub mod api;
mod error;
pub mod glob;
pub mod ratelimit;
mod types;

pub use ccm_core::{Instance, InstanceState};
pub use error::{ErrorKind, ProviderError, Result, classify_code};
pub use ratelimit::{Ec2Limits, Rate};
pub use types::{
    DEFAULT_ROOT_DEVICE, Image, ImageQuery, LaunchRequest, LaunchSpec, Launched, MetadataOptions,
    WorkerIdentity, client_token, tag,
};
