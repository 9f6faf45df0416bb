//! What the Worker controller keeps for itself, beside what every controller shares.

use std::{ops::Deref, sync::Arc};

use super::unseen::UnseenLaunches;
use crate::{
    cml::{CmlApi, HttpCml},
    controller::{Context, fleet::FleetCache, secrets::SecretCache},
    crd::ProviderKind,
    provider::SimulatedCml,
};

pub struct WorkerContext {
    shared: Arc<Context>,
    /// Instances as last listed, shared by all worker reconciles.
    pub(crate) fleet: FleetCache,
    /// Secrets the CML probes read.
    pub(crate) secrets: SecretCache,
    /// Launches written to Worker statuses that the Worker cache does not show yet.
    pub(crate) unseen_launches: UnseenLaunches,
    cml_http: HttpCml,
}

impl WorkerContext {
    pub fn new(shared: Arc<Context>) -> WorkerContext {
        let settings = &shared.settings;
        WorkerContext {
            fleet: FleetCache::new(settings.resync_interval / 2),
            secrets: SecretCache::new(settings.secret_ttl),
            unseen_launches: UnseenLaunches::default(),
            cml_http: HttpCml::new(settings.cml_timeout),
            shared,
        }
    }

    /// The CML client for workers of `provider`; `None` for a provider this build lacks.
    pub fn cml(&self, provider: ProviderKind) -> Option<&dyn CmlApi> {
        match provider {
            ProviderKind::Aws => Some(&self.cml_http),
            ProviderKind::Simulated => match self.providers.simulated_cml()? {
                SimulatedCml::StandIn(stand_in) => Some(stand_in),
                SimulatedCml::Https => Some(&self.cml_http),
            },
        }
    }
}

impl Deref for WorkerContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.shared
    }
}
