//! The command line: `run` and `crds`. Each group of `run`'s flags sits next to what it
//! configures (`controller::flags`, `provider::flags`, `cml::flags`, `control_plane::flags`,
//! `platform_etcd::flags`, `leader::flags`); `wiring` builds the parts from them and `run` starts
//! and stops the controller.

mod run;
mod simulate;
mod wiring;

use std::{io::Write, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[cfg(feature = "simulator")]
use crate::provider::flags::SimulatedArgs;
use crate::{
    cml::flags::CmlArgs, control_plane::flags::ControlPlaneArgs, controller::flags::ControllerArgs,
    crd, leader::flags::ElectionArgs, platform_etcd::flags::EtcdArgs, provider::flags::AwsArgs,
    telemetry::LogFormat,
};

pub use run::RuntimeArgs;
pub use simulate::SimulateArgs;
pub use wiring::remotes;

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
    /// Replay a schedule of lab bookings through the autoscaler in simulated time: labs on time,
    /// instance-hours and a lower bound, before spending money.
    Simulate(Box<simulate::SimulateArgs>),
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

impl Cli {
    /// The runtime the command runs on: `run`'s as configured, one thread for the others.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let one = RuntimeArgs { runtime_threads: 1 };
        let args = match &self.command {
            Command::Run(args) => &args.runtime,
            Command::Crds(_) | Command::Simulate(_) => &one,
        };
        args.build().context("starting the async runtime")
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds(args) => print_crds(&args),
        Command::Simulate(args) => simulate::simulate(&args).await,
        Command::Run(args) => run::run_controller(*args).await,
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
    use crate::provider::{Ec2Limits, Rate};

    fn election(args: &[&str]) -> ElectionArgs {
        let argv = ["resource-controller", "run", "--cluster-id", "c"]
            .iter()
            .chain(args);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Run(run) => run.election,
            Command::Crds(_) | Command::Simulate(_) => unreachable!("parsed run"),
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
        let argv = ["resource-controller", "run", "--cluster-id", "c"]
            .iter()
            .chain(args);
        match Cli::try_parse_from(argv).expect("parse").command {
            Command::Run(run) => *run,
            Command::Crds(_) | Command::Simulate(_) => unreachable!("parsed run"),
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
            Cli::try_parse_from([
                "resource-controller",
                "run",
                "--cluster-id",
                "c",
                "--ec2-describe-limit",
                "0/1"
            ])
            .is_err()
        );
    }

    #[test]
    fn log_format_comes_from_the_flag_or_the_environment() {
        let cli = Cli::try_parse_from([
            "resource-controller",
            "run",
            "--cluster-id",
            "c",
            "--log-format",
            "json",
        ]);
        assert_eq!(cli.expect("parse").log_format, LogFormat::Json);
        assert!(
            Cli::try_parse_from([
                "resource-controller",
                "run",
                "--cluster-id",
                "c",
                "--log-format",
                "xml"
            ])
            .is_err()
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
            Cli::try_parse_from([
                "resource-controller",
                "run",
                "--cluster-id",
                "c",
                "--runtime-threads",
                "0"
            ])
            .is_err()
        );
    }
}
