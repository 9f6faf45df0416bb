//! One [`Provider`] per (provider kind, region), made on first use and shared by all reconciles,
//! so the rate limits of an account and region are honoured across workers.

use crate::lock::Locked;
use std::{collections::HashMap, sync::Arc};

use futures::future::BoxFuture;
use tokio::sync::Mutex;

use super::{
    CloudProvider, Provider, ProviderSettings,
    api::CloudApi,
    ec2::{Ec2Api, Ec2Settings},
};
use crate::{cml::CmlApi, crd::ProviderKind};

/// Makes the raw EC2 API of a region.
pub type AwsConnector = Arc<dyn Fn(String) -> BoxFuture<'static, Arc<dyn CloudApi>> + Send + Sync>;

/// Connects with aws-config's default chain; `endpoint_url` overrides the endpoint for emulators.
pub fn aws_default_chain(endpoint_url: Option<String>) -> AwsConnector {
    Arc::new(move |region: String| {
        let settings = Ec2Settings {
            region: Some(region),
            endpoint_url: endpoint_url.clone(),
        };
        Box::pin(async move { Arc::new(Ec2Api::connect(&settings).await) as Arc<dyn CloudApi> })
    })
}

/// The simulator's cloud and CML (`provider: simulated`), in builds that include it.
pub struct SimulatedBackend {
    pub cloud: Arc<dyn CloudApi>,
    /// The CML stand-in of its workers; `None`: each worker's CML is reached over HTTPS at its
    /// address, as on AWS (a test serves one there).
    pub cml: Option<Arc<dyn CmlApi>>,
}

/// How the CML of a worker of the simulated provider is reached.
#[derive(Clone, Copy)]
pub enum SimulatedCml<'a> {
    /// In process, by the simulator's stand-in.
    StandIn(&'a dyn CmlApi),
    /// Over HTTPS at the worker's address, like a real one.
    Https,
}

/// A template asked for a provider this build does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "provider `{0}` is not in this build of resource-controller (the simulated provider is for \
     tests and the dev environment: build with `--features simulator`); use `aws`"
)]
pub struct ProviderUnavailable(pub &'static str);

struct Simulated {
    provider: Arc<Provider>,
    cml: Option<Arc<dyn CmlApi>>,
}

pub struct ProviderRegistry {
    default_region: String,
    aws: AwsConnector,
    simulated: Option<Simulated>,
    aws_regions: Mutex<HashMap<String, Arc<Provider>>>,
    settings: ProviderSettings,
    /// Every provider made so far, readable without awaiting: sweeps and metrics list them here.
    made: std::sync::Mutex<Vec<Made>>,
}

/// A provider made so far, and for what.
struct Made {
    kind: ProviderKind,
    region: String,
    provider: Arc<Provider>,
}

/// A provider in use: its name for logs (`simulated`, `aws/<region>`) and the provider.
pub struct InUse {
    pub name: String,
    pub provider: Arc<dyn CloudProvider>,
}

/// How many cloud calls of one operation one provider made so far, by outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallTotal {
    pub provider: ProviderKind,
    pub region: String,
    pub operation: &'static str,
    pub outcome: &'static str,
    pub count: u64,
}

impl ProviderRegistry {
    /// Providers with EC2's default request limits.
    pub fn new(
        default_region: impl Into<String>,
        aws: AwsConnector,
        simulated: Option<SimulatedBackend>,
    ) -> ProviderRegistry {
        ProviderRegistry::with_settings(default_region, aws, simulated, ProviderSettings::default())
    }

    /// Providers with `settings`, e.g. an account's raised request limits.
    pub fn with_settings(
        default_region: impl Into<String>,
        aws: AwsConnector,
        simulated: Option<SimulatedBackend>,
        settings: ProviderSettings,
    ) -> ProviderRegistry {
        let default_region = default_region.into();
        let simulated = simulated.map(|backend| Simulated {
            provider: Arc::new(Provider::with_settings(backend.cloud, settings.clone())),
            cml: backend.cml,
        });
        let made = simulated
            .iter()
            .map(|s| Made {
                kind: ProviderKind::Simulated,
                region: default_region.clone(),
                provider: s.provider.clone(),
            })
            .collect();
        ProviderRegistry {
            default_region,
            aws,
            simulated,
            aws_regions: Mutex::new(HashMap::new()),
            settings,
            made: std::sync::Mutex::new(made),
        }
    }

    /// The region a template without one uses.
    pub fn default_region(&self) -> &str {
        &self.default_region
    }

    /// The provider for `kind` in `region` (the default region when `None`).
    pub async fn get(
        &self,
        kind: ProviderKind,
        region: Option<&str>,
    ) -> Result<Arc<Provider>, ProviderUnavailable> {
        match kind {
            ProviderKind::Simulated => self
                .simulated
                .as_ref()
                .map(|s| s.provider.clone())
                .ok_or(ProviderUnavailable("simulated")),
            ProviderKind::Aws => {
                let region = region.unwrap_or(&self.default_region).to_owned();
                let mut regions = self.aws_regions.lock().await;
                if let Some(p) = regions.get(&region) {
                    return Ok(p.clone());
                }
                let api = (self.aws)(region.clone()).await;
                let provider = Arc::new(Provider::with_settings(api, self.settings.clone()));
                regions.insert(region.clone(), provider.clone());
                self.made.locked().push(Made {
                    kind: ProviderKind::Aws,
                    region,
                    provider: provider.clone(),
                });
                Ok(provider)
            }
        }
    }

    /// How the CML of a simulated worker is reached; `None` in a build without the simulator.
    pub fn simulated_cml(&self) -> Option<SimulatedCml<'_>> {
        self.simulated.as_ref().map(|s| match &s.cml {
            Some(stand_in) => SimulatedCml::StandIn(stand_in.as_ref()),
            None => SimulatedCml::Https,
        })
    }

    /// Every provider in use so far, for sweeps: the simulated one and each AWS region asked for.
    pub fn in_use(&self) -> Vec<InUse> {
        let made = self.made.locked();
        made.iter()
            .map(|m| InUse {
                name: match m.kind {
                    ProviderKind::Aws => format!("aws/{}", m.region),
                    ProviderKind::Simulated => m.kind.as_str().to_owned(),
                },
                provider: m.provider.clone() as Arc<dyn CloudProvider>,
            })
            .collect()
    }

    /// Cloud calls so far, by provider, region, operation and outcome.
    pub fn call_totals(&self) -> Vec<CallTotal> {
        let made = self.made.locked();
        made.iter()
            .flat_map(|m| {
                m.provider
                    .calls()
                    .snapshot()
                    .into_iter()
                    .map(move |(op, outcome, count)| CallTotal {
                        provider: m.kind,
                        region: m.region.clone(),
                        operation: op.as_str(),
                        outcome,
                        count,
                    })
            })
            .collect()
    }
}
