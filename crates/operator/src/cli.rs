//! Command-line interface: small argument structs, one per concern, flattened into subcommands.

use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::core::v1::Secret;

use crate::{
    backoff::Backoff,
    control_plane::{ControlPlaneClient, ControlPlaneConfig},
    controller::{self, Context, Settings},
    crd::{self, GoDuration},
    leader::{ElectionConfig, Elector},
    provider::{
        Ec2Limits, ProviderRegistry, ProviderSettings, Rate, SimulatedBackend, aws_default_chain,
    },
    state_store::{EtcdConfig, EtcdStore},
    sync::Remotes,
    telemetry::LogFormat,
};

/// Keeps a fleet of Cisco Modeling Labs workers on AWS EC2 in the shape the lab platform needs.
#[derive(Debug, Parser)]
#[command(name = "resource-controller", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or as JSON objects, one per line (filter them with RUST_LOG).
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster config).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD).
    Crds(CrdsArgs),
}

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write `<plural>.<group>.yaml` files into this directory instead of printing to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub controller: ControllerArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[cfg(feature = "simulator")]
    #[command(flatten)]
    pub simulated: SimulatedArgs,
    #[command(flatten)]
    pub cml: CmlArgs,
    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub election: ElectionArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Threads running the controller's tasks. One thread (the default) spends least: its work
    /// is waiting on the network, and a second thread costs a wake-up for each hand-over.
    #[arg(long, env = "RUNTIME_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub runtime_threads: u16,
}

impl RuntimeArgs {
    /// One thread runs everything on the thread that starts it; more share the work.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.runtime_threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(usize::from(n));
                b
            }
        };
        builder.enable_all().build()
    }
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Value of the `ccm:cluster` tag on this controller's instances.
    #[arg(long, env = "CLUSTER_ID", default_value = "default")]
    pub cluster_id: String,
    /// This replica's identity in Events and in the leader Lease (default: the host name, which
    /// in a pod is the pod's name).
    #[arg(long, env = "CONTROLLER_INSTANCE_ID")]
    pub controller_instance_id: Option<String>,
    /// Reconcile only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Seconds between re-checks of a worker in steady state.
    #[arg(long, env = "RECONCILE_INTERVAL", default_value_t = 30)]
    pub reconcile_interval: u64,
    /// Re-check interval of a worker that is changing (booting, draining, stopping).
    #[arg(long, default_value = "5s")]
    pub poll_interval: GoDuration,
    /// Workers reconciled at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Age after which an instance of this cluster with no Worker is terminated.
    #[arg(long, default_value = "10m")]
    pub orphan_grace: GoDuration,
    /// Interval of the orphan sweep.
    #[arg(long, default_value = "1m")]
    pub orphan_sweep_interval: GoDuration,
    /// How far ahead of a lab's timeslot the autoscaler makes room for it (worker boot plus lab
    /// start-up).
    #[arg(long, env = "SCALE_UP_LEAD_TIME", default_value = "35m")]
    pub scale_up_lead_time: GoDuration,
    /// Port of `/health`, `/readyz` and `/metrics` (0 turns them off).
    #[arg(long, env = "HEALTH_PORT", default_value_t = 8082)]
    pub health_port: u16,
}

#[derive(Debug, Args)]
pub struct ElectionArgs {
    /// Elect one leader among replicas through a Lease; only the leader reconciles.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "resource-controller")]
    pub leader_lease_name: String,
    /// Namespace of the Lease (default: the pod's, from POD_NAMESPACE or the service account).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_lease_namespace: Option<String>,
    /// Seconds a Lease holds without renewal.
    #[arg(long, env = "LEADER_LEASE_TTL", default_value_t = 15)]
    pub leader_lease_ttl: u64,
    /// A leader that cannot renew within this long stops reconciling (before the TTL runs out).
    #[arg(long, default_value = "10s")]
    pub leader_renew_deadline: GoDuration,
    /// Interval of acquire and renew attempts.
    #[arg(long, default_value = "2s")]
    pub leader_retry_period: GoDuration,
}

impl ElectionArgs {
    /// The orderings that keep one leader at a time, as client-go requires them.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.leader_election {
            return Ok(());
        }
        let ttl = Duration::from_secs(self.leader_lease_ttl);
        let (renew, retry) = (
            self.leader_renew_deadline.as_std(),
            self.leader_retry_period.as_std(),
        );
        anyhow::ensure!(
            renew < ttl,
            "--leader-renew-deadline ({renew:?}) must be shorter than LEADER_LEASE_TTL ({ttl:?}), \
             so a leader cut off from the API server stops before another can take over"
        );
        anyhow::ensure!(
            !retry.is_zero() && retry < renew,
            "--leader-retry-period ({retry:?}) must be above 0 and shorter than \
             --leader-renew-deadline ({renew:?})"
        );
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct AwsArgs {
    /// Region of templates that do not name one.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// EC2 endpoint override, for emulators.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    #[command(flatten)]
    pub limits: Ec2LimitArgs,
}

/// The account's EC2 request limits as BURST/PER_SECOND (EC2's defaults unless raised for the
/// account); the controller stays under them, and the simulated cloud enforces them.
#[derive(Debug, Args)]
pub struct Ec2LimitArgs {
    /// RunInstances request limit, as BURST/PER_SECOND.
    #[arg(long, env = "EC2_RUN_INSTANCES_LIMIT", default_value = "5/2")]
    pub ec2_run_instances_limit: Rate,
    /// StartInstances request limit.
    #[arg(long, env = "EC2_START_INSTANCES_LIMIT", default_value = "5/2")]
    pub ec2_start_instances_limit: Rate,
    /// TerminateInstances request limit.
    #[arg(long, env = "EC2_TERMINATE_INSTANCES_LIMIT", default_value = "100/5")]
    pub ec2_terminate_instances_limit: Rate,
    /// Limit of the other mutating calls (StopInstances, CreateTags).
    #[arg(long, env = "EC2_MUTATING_LIMIT", default_value = "50/5")]
    pub ec2_mutating_limit: Rate,
    /// Limit of the Describe calls.
    #[arg(long, env = "EC2_DESCRIBE_LIMIT", default_value = "100/20")]
    pub ec2_describe_limit: Rate,
}

impl Ec2LimitArgs {
    pub fn limits(&self) -> Ec2Limits {
        Ec2Limits {
            run_instances: self.ec2_run_instances_limit,
            start_instances: self.ec2_start_instances_limit,
            terminate_instances: self.ec2_terminate_instances_limit,
            mutating: self.ec2_mutating_limit,
            describe: self.ec2_describe_limit,
        }
    }
}

/// The simulated provider's flags, in builds with the `simulator` feature only.
#[cfg(feature = "simulator")]
#[derive(Debug, Args)]
pub struct SimulatedArgs {
    /// Boot time of instances of the simulated provider.
    #[arg(long, default_value = "5s")]
    pub sim_boot_delay: GoDuration,
    /// Time from a simulated instance's launch (or start) until its CML reports ready.
    #[arg(long, default_value = "5s")]
    pub sim_cml_boot: GoDuration,
    /// Keep the simulated cloud's instances in this file, so they outlive the process (a restart,
    /// or a second replica on this machine, sees them); default: in memory only.
    #[arg(long, env = "SIM_STATE_FILE", value_name = "FILE")]
    pub sim_state_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CmlArgs {
    /// Timeout of each CML API request.
    #[arg(long, default_value = "10s")]
    pub cml_timeout: GoDuration,
    /// Reach every worker's CML API at this host instead of the instance IP (local testing).
    #[arg(long, env = "CML_HOST_OVERRIDE")]
    pub cml_host_override: Option<String>,
    /// How long a CML credentials or CA Secret is reused before it is read again (a refused
    /// login reads it again at once).
    #[arg(long, default_value = "1m")]
    pub cml_secret_ttl: GoDuration,
}

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Base URL of the platform's Control Plane API; without it no record goes there.
    #[arg(long, env = "CONTROL_PLANE_API_URL")]
    pub control_plane_api_url: Option<String>,
    /// Bearer token for the Control Plane API.
    #[arg(long, env = "CONTROL_PLANE_API_TOKEN", hide_env_values = true)]
    pub control_plane_api_token: Option<String>,
    /// Read the bearer token from this Secret instead (`namespace/name`, key `token`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub control_plane_api_token_secret: Option<String>,
    /// PEM file of the CA that signed the Control Plane API's certificate (default: system roots).
    #[arg(long, value_name = "FILE")]
    pub control_plane_api_ca_file: Option<PathBuf>,
    /// Timeout of each Control Plane API request.
    #[arg(long, default_value = "5s")]
    pub control_plane_api_timeout: GoDuration,
}

#[derive(Debug, Args)]
pub struct EtcdArgs {
    /// Host of the platform's etcd; without it (or --etcd-endpoints) nothing goes to etcd.
    #[arg(long, env = "ETCD_HOST")]
    pub etcd_host: Option<String>,
    /// Port of the platform's etcd.
    #[arg(long, env = "ETCD_PORT", default_value_t = 2379)]
    pub etcd_port: u16,
    /// etcd endpoints (`host:port` or URLs, comma-separated); overrides ETCD_HOST / ETCD_PORT.
    #[arg(long, env = "ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// etcd user (with --etcd-password).
    #[arg(long, env = "ETCD_USER")]
    pub etcd_user: Option<String>,
    /// etcd password.
    #[arg(long, env = "ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// PEM file of the CA that signed etcd's certificate; turns TLS on.
    #[arg(long, value_name = "FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Deadline of each push to, or removal from, a remote on a reconcile's path.
    #[arg(long, default_value = "2s")]
    pub remote_deadline: GoDuration,
    /// Interval of the sweep of remote records whose Worker is gone.
    #[arg(long, default_value = "1m")]
    pub record_sweep_interval: GoDuration,
}

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
        let cloud = SimulatedCloud::open(SimulatedConfig {
            region: self.aws.aws_region.clone(),
            boot_delay: self.simulated.sim_boot_delay.as_std(),
            limits,
            state_file: state_file.clone(),
            ..SimulatedConfig::default()
        })
        .with_context(|| format!("opening --sim-state-file {state_file:?}"))?;
        Ok(Some(SimulatedBackend {
            cloud: Arc::new(cloud),
            cml: Arc::new(SimulatedCml::new(self.simulated.sim_cml_boot.as_std())),
        }))
    }

    /// No simulated provider in this build.
    #[cfg(not(feature = "simulator"))]
    fn simulated_backend(&self, _limits: Ec2Limits) -> anyhow::Result<Option<SimulatedBackend>> {
        Ok(None)
    }
}

impl Cli {
    /// The runtime the command runs on: `run`'s as configured, one thread for the others.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let one = RuntimeArgs { runtime_threads: 1 };
        let args = match &self.command {
            Command::Run(args) => &args.runtime,
            Command::Crds(_) => &one,
        };
        args.build().context("starting the async runtime")
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => print_crds(&args),
        Command::Run(args) => run_controller(*args).await,
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
        let ca_pem = match &e.etcd_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --etcd-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        let config = EtcdConfig {
            endpoints,
            user,
            ca_pem,
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

impl RunArgs {
    /// This replica's name: the flag, else the host (pod) name, else one made from the pid.
    pub fn identity(&self) -> String {
        self.controller
            .controller_instance_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("resource-controller-{}", std::process::id()))
    }
}

/// The Lease's namespace: the flag or POD_NAMESPACE, else the service account's, else default.
fn lease_namespace(args: &ElectionArgs) -> String {
    args.leader_lease_namespace.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|n| n.trim().to_owned())
            .unwrap_or_else(|_| "default".to_owned())
    })
}

async fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    args.election.check()?;
    let client = kube::Client::try_default().await?;
    let remotes = remotes(&args, &client).await?;
    let identity = args.identity();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            args.settings(),
            args.providers()?,
            &identity,
        )
        .with_remotes(remotes),
    );
    let (leading_tx, mut leading) = tokio::sync::watch::channel(!args.election.leader_election);
    if args.election.leader_election {
        ctx.stand_by();
    }
    let (stop_elector, elector_stop) = tokio::sync::watch::channel(false);
    if args.controller.health_port != 0 {
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], args.controller.health_port));
        let (ready, collect) = (ctx.clone(), ctx.clone());
        let leads = leading.clone();
        crate::telemetry::http::serve(
            addr,
            ctx.metrics.clone(),
            Arc::new(move || {
                if *leads.borrow() {
                    let (ok, why) = ready.readiness();
                    (ok, format!("leader: {why}"))
                } else {
                    (true, "standby: another replica leads".to_owned())
                }
            }),
            Arc::new(move |_| collect.collect_metrics()),
            std::future::pending(),
        )
        .await
        .with_context(|| format!("serving health and metrics on {addr}"))?;
    }
    let elector = args.election.leader_election.then(|| {
        let e = &args.election;
        let config = ElectionConfig {
            name: e.leader_lease_name.clone(),
            namespace: lease_namespace(e),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(e.leader_lease_ttl.max(1)),
            renew_deadline: e.leader_renew_deadline.as_std(),
            retry_period: e.leader_retry_period.as_std(),
        };
        tracing::info!(lease = %config.name, namespace = %config.namespace, %identity, "waiting to lead");
        let ctx = ctx.clone();
        let leading_tx = leading_tx;
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            let forward = tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let now = *rx.borrow();
                    ctx.set_leading(now);
                    let _ = leading_tx.send(now);
                }
            });
            Elector::new(client, config).run(tx, elector_stop).await;
            forward.abort();
        })
    });
    // Stand by until leading, or until asked to stop.
    let mut signal = Box::pin(shutdown_signal());
    tokio::select! {
        _ = leading.wait_for(|l| *l) => {}
        _ = &mut signal => {
            let _ = stop_elector.send(true);
            if let Some(e) = elector { let _ = e.await; }
            return Ok(());
        }
    }
    tracing::info!(
        cluster_id = %ctx.settings.cluster_id,
        namespace = ?ctx.settings.namespace,
        control_plane = ?ctx.remotes.control_plane().map(|c| c.base_url().to_owned()),
        etcd = ctx.remotes.etcd().is_some(),
        "starting"
    );
    // A replica that loses the Lease exits at once, as controller-runtime does: nothing it had
    // in flight may go on once another replica can lead, and it starts afresh as a standby.
    let mut lease_held = leading.clone();
    let lost = async move {
        if lease_held.wait_for(|l| !*l).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = controller::run(ctx, signal) => {}
        _ = lost => {
            tracing::error!("lost the leader lease; exiting so this replica starts afresh");
            std::process::exit(1);
        }
    }
    // Release the Lease (when still held) so a standby takes over at once.
    let _ = stop_elector.send(true);
    if let Some(e) = elector {
        let _ = e.await;
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn print_crds(args: &CrdsArgs) -> anyhow::Result<()> {
    match &args.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            for (file, crd) in crd::all() {
                std::fs::write(dir.join(file), crd::to_yaml(&crd)?)?;
            }
        }
        None => std::io::stdout().write_all(crd::all_yaml()?.as_bytes())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn election(args: &[&str]) -> ElectionArgs {
        let argv = ["resource-controller", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Run(run) => run.election,
            Command::Crds(_) => unreachable!("parsed run"),
        }
    }

    #[test]
    fn lease_timings_must_keep_one_leader_at_a_time() {
        assert!(election(&[]).check().is_ok(), "the defaults hold");
        let renew_past_ttl =
            election(&["--leader-lease-ttl", "5", "--leader-renew-deadline", "5s"]);
        let e = renew_past_ttl
            .check()
            .expect_err("renew deadline not below the TTL");
        assert!(e.to_string().contains("--leader-renew-deadline"), "{e}");
        let slow_retry = election(&["--leader-retry-period", "10s"]);
        assert!(
            slow_retry.check().is_err(),
            "retry not below the renew deadline"
        );
        let off = election(&["--leader-election", "false", "--leader-retry-period", "1m"]);
        assert!(off.check().is_ok(), "no election: nothing to check");
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["resource-controller", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Run(run) => *run,
            Command::Crds(_) => unreachable!("parsed run"),
        }
    }

    #[test]
    fn ec2_limits_default_to_ec2s_and_can_be_raised() {
        assert_eq!(run_args(&[]).aws.limits.limits(), Ec2Limits::default());
        let raised = run_args(&["--ec2-run-instances-limit", "1000/100"]);
        let limits = raised.aws.limits.limits();
        assert_eq!(limits.run_instances, Rate::new(1000, 100));
        assert_eq!(limits.describe, Ec2Limits::default().describe);
        assert!(
            Cli::try_parse_from(["resource-controller", "run", "--ec2-describe-limit", "0/1"])
                .is_err()
        );
    }

    #[test]
    fn log_format_comes_from_the_flag_or_the_environment() {
        let cli = Cli::try_parse_from(["resource-controller", "run", "--log-format", "json"]);
        assert_eq!(cli.expect("parse").log_format, LogFormat::Json);
        assert!(
            Cli::try_parse_from(["resource-controller", "run", "--log-format", "xml"]).is_err()
        );
    }

    #[test]
    fn one_runtime_thread_by_default_and_more_on_request() {
        use tokio::runtime::RuntimeFlavor;
        let flavor = |args: &[&str]| {
            run_args(args)
                .runtime
                .build()
                .expect("runtime")
                .handle()
                .runtime_flavor()
        };
        assert_eq!(flavor(&[]), RuntimeFlavor::CurrentThread);
        assert_eq!(
            flavor(&["--runtime-threads", "2"]),
            RuntimeFlavor::MultiThread
        );
        assert!(
            Cli::try_parse_from(["resource-controller", "run", "--runtime-threads", "0"]).is_err()
        );
    }
}
