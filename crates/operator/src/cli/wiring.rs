//! The parts `run` is made of, built from its flags: settings, providers and remotes. A
//! configuration that cannot work is an error here, at start-up, rather than a retry storm later.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;

use super::RunArgs;
use crate::{
    backoff::Backoff,
    control_plane::{ControlPlaneClient, ControlPlaneConfig},
    controller::Settings,
    mirror::Remotes,
    platform_etcd::{ClientIdentity, EtcdConfig, EtcdStore},
    provider::{
        Ec2Limits, ProviderRegistry, ProviderSettings, SimulatedBackend, aws_default_chain,
    },
};

impl RunArgs {
    pub fn settings(&self) -> Settings {
        let c = &self.controller;
        Settings {
            cluster_id: c.cluster_id.clone(),
            namespace: c.namespace.clone(),
            poll_interval: c.poll_interval.as_std(),
            resync_interval: Duration::from_secs(c.reconcile_interval.max(1)),
            demand_resync: Duration::from_secs(c.reconcile_interval.max(1)),
            scale_up_lead_time: c.scale_up_lead_time.as_std(),
            license_seats: c.license_seats.clone().unwrap_or_default(),
            max_instances: c.max_instances,
            concurrency: c.concurrency.max(1),
            orphan_grace: c.orphan_grace.as_std(),
            orphan_sweep_interval: c.orphan_sweep_interval.as_std().max(Duration::from_secs(1)),
            cml_timeout: self.cml.cml_timeout.as_std(),
            cml_host_override: self.cml.cml_host_override.clone(),
            secret_ttl: self.cml.cml_secret_ttl.as_std(),
            record_sweep_interval: self
                .etcd
                .record_sweep_interval
                .as_std()
                .max(Duration::from_secs(1)),
            ..Settings::default()
        }
    }

    pub fn providers(&self) -> anyhow::Result<ProviderRegistry> {
        let limits = self.aws.limits.limits();
        Ok(ProviderRegistry::with_settings(
            self.aws.aws_region.clone(),
            aws_default_chain(self.aws.aws_endpoint_url.clone()),
            self.simulated_backend(limits)?,
            ProviderSettings {
                limits,
                capacity_ttl: self.aws.ec2_capacity_ttl.as_std(),
                ..ProviderSettings::default()
            },
        ))
    }
}

impl RunArgs {
    /// The simulated cloud and CML of `--sim-*`.
    #[cfg(feature = "simulator")]
    fn simulated_backend(&self, limits: Ec2Limits) -> anyhow::Result<Option<SimulatedBackend>> {
        use ccm_simulator::{SimulatedCloud, SimulatedCml, SimulatedConfig};
        let state_file = self.simulated.sim_state_file.clone();
        let over_https = self.simulated.sim_cml_over_https;
        let cloud = SimulatedCloud::open(SimulatedConfig {
            region: self.aws.aws_region.clone(),
            boot_delay: self.simulated.sim_boot_delay.as_std(),
            limits,
            state_file: state_file.clone(),
            faults_file: self.simulated.sim_faults_file.clone(),
            loopback_addresses: over_https,
            ..SimulatedConfig::default()
        })
        .with_context(|| format!("opening --sim-state-file {state_file:?}"))?;
        Ok(Some(SimulatedBackend {
            cloud: Arc::new(cloud),
            cml: (!over_https).then(|| {
                Arc::new(SimulatedCml::new(self.simulated.sim_cml_boot.as_std())) as Arc<_>
            }),
        }))
    }

    /// No simulated provider in this build.
    #[cfg(not(feature = "simulator"))]
    fn simulated_backend(&self, _limits: Ec2Limits) -> anyhow::Result<Option<SimulatedBackend>> {
        Ok(None)
    }
}

/// The Control Plane API and etcd as configured; a configuration that cannot work is an error
/// here, at start-up, rather than a retry storm later.
pub async fn remotes(args: &RunArgs, client: &kube::Client) -> anyhow::Result<Remotes> {
    let cp = &args.control_plane;
    let control_plane = match &cp.control_plane_api_url {
        None => None,
        Some(url) => {
            let token = match (
                &cp.control_plane_api_token,
                &cp.control_plane_api_token_secret,
            ) {
                (_, Some(secret)) => Some(read_token(client, secret).await?),
                (Some(token), None) => Some(token.clone()),
                (None, None) => None,
            };
            let ca_pem = match &cp.control_plane_api_ca_file {
                Some(path) => Some(std::fs::read(path).with_context(|| {
                    format!("reading --control-plane-api-ca-file {}", path.display())
                })?),
                None => None,
            };
            let config = ControlPlaneConfig {
                url: url.clone(),
                token,
                ca_pem,
                timeout: cp.control_plane_api_timeout.as_std(),
                allow_http: cp.control_plane_api_allow_http,
            };
            Some(Arc::new(ControlPlaneClient::new(config)?))
        }
    };
    let e = &args.etcd;
    let endpoints = match (&e.etcd_endpoints[..], &e.etcd_host) {
        ([], None) => Vec::new(),
        ([], Some(host)) => vec![format!("{host}:{}", e.etcd_port)],
        (list, _) => list.to_vec(),
    };
    let etcd = if endpoints.is_empty() {
        None
    } else {
        let user = match (&e.etcd_user, &e.etcd_password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (Some(_), None) | (None, Some(_)) => {
                anyhow::bail!("--etcd-user and --etcd-password go together")
            }
            (None, None) => None,
        };
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))
        };
        let ca_pem = match &e.etcd_ca_file {
            Some(path) => Some(read("--etcd-ca-file", path)?),
            None => None,
        };
        let client_identity = match (&e.etcd_cert_file, &e.etcd_key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: read("--etcd-cert-file", cert)?,
                key_pem: read("--etcd-key-file", key)?,
            }),
            _ => None,
        };
        let config = EtcdConfig {
            endpoints,
            user,
            ca_pem,
            client_identity,
            timeout: e.remote_deadline.as_std(),
        };
        Some(
            EtcdStore::connect(&config)
                .await
                .with_context(|| format!("connecting to etcd at {:?}", config.endpoints))?,
        )
    };
    let deadline = e.remote_deadline.as_std().max(Duration::from_millis(100));
    let backoff = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(args.controller.reconcile_interval.max(1)),
    );
    Ok(Remotes::new(control_plane, etcd, deadline, backoff))
}

/// The Control Plane API token from a Secret `namespace/name`, key `token`.
async fn read_token(client: &kube::Client, secret: &str) -> anyhow::Result<String> {
    let (namespace, name) = secret.split_once('/').with_context(|| {
        format!("--control-plane-api-token-secret {secret:?} is not namespace/name")
    })?;
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    let found = api
        .get(name)
        .await
        .with_context(|| format!("reading Secret {secret}"))?;
    let token = found
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
        .filter(|t| !t.is_empty())
        .with_context(|| format!("Secret {secret} has no key \"token\""))?;
    Ok(token)
}
