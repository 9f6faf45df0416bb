//! Command-line interface: small argument structs, one per concern, flattened into subcommands.

use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    controller::{self, Context, Settings},
    crd::{self, GoDuration},
    provider::{
        ProviderRegistry, aws_default_chain,
        simulated::{SimulatedCloud, SimulatedConfig},
    },
};

/// Keeps a fleet of Cisco Modeling Labs workers on AWS EC2 in the shape the lab platform needs.
#[derive(Debug, Parser)]
#[command(name = "resource-controller", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    #[command(flatten)]
    pub simulated: SimulatedArgs,
    #[command(flatten)]
    pub cml: CmlArgs,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Value of the `ccm:cluster` tag on this controller's instances.
    #[arg(long, env = "CLUSTER_ID", default_value = "default")]
    pub cluster_id: String,
    /// This replica's identity in Events (and, later, the leader Lease).
    #[arg(
        long,
        env = "CONTROLLER_INSTANCE_ID",
        default_value = "resource-controller"
    )]
    pub controller_instance_id: String,
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
}

#[derive(Debug, Args)]
pub struct AwsArgs {
    /// Region of templates that do not name one.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// EC2 endpoint override, for emulators.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct SimulatedArgs {
    /// Boot time of instances of the simulated provider.
    #[arg(long, default_value = "5s")]
    pub sim_boot_delay: GoDuration,
    /// Time the simulated workers' CML takes to report ready once running.
    #[arg(long, default_value = "5s")]
    pub sim_cml_boot: GoDuration,
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

impl RunArgs {
    pub fn settings(&self) -> Settings {
        let c = &self.controller;
        Settings {
            cluster_id: c.cluster_id.clone(),
            namespace: c.namespace.clone(),
            poll_interval: c.poll_interval.as_std(),
            resync_interval: Duration::from_secs(c.reconcile_interval.max(1)),
            concurrency: c.concurrency.max(1),
            orphan_grace: c.orphan_grace.as_std(),
            orphan_sweep_interval: c.orphan_sweep_interval.as_std().max(Duration::from_secs(1)),
            cml_timeout: self.cml.cml_timeout.as_std(),
            cml_host_override: self.cml.cml_host_override.clone(),
            secret_ttl: self.cml.cml_secret_ttl.as_std(),
            simulated_cml_boot: self.simulated.sim_cml_boot.as_std(),
            ..Settings::default()
        }
    }

    pub fn providers(&self) -> ProviderRegistry {
        let simulated = SimulatedCloud::new(SimulatedConfig {
            region: self.aws.aws_region.clone(),
            boot_delay: self.simulated.sim_boot_delay.as_std(),
            ..SimulatedConfig::default()
        });
        ProviderRegistry::new(
            self.aws.aws_region.clone(),
            aws_default_chain(self.aws.aws_endpoint_url.clone()),
            Arc::new(simulated),
        )
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => print_crds(&args),
        Command::Run(args) => run_controller(*args).await,
    }
}

async fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let ctx = Arc::new(Context::new(
        client,
        args.settings(),
        args.providers(),
        &args.controller.controller_instance_id,
    ));
    tracing::info!(cluster_id = %ctx.settings.cluster_id, namespace = ?ctx.settings.namespace, "starting");
    controller::run(ctx, shutdown_signal()).await;
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
