//! `run`'s flags for the cloud providers: AWS region, endpoint and request limits, and the simulated provider's in builds that have it.

#[cfg(feature = "simulator")]
use std::path::PathBuf;

use clap::Args;

use super::{Ec2Limits, Rate};
use crate::crd::GoDuration;

#[derive(Debug, Args)]
pub struct AwsArgs {
    /// Region of templates that do not name one.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// EC2 endpoint override, for emulators.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// How long an instance type (in a zone) is skipped after EC2 answered
    /// InsufficientInstanceCapacity; a worker with no other candidate waits this long.
    #[arg(long, env = "EC2_CAPACITY_TTL", default_value = "5m")]
    pub ec2_capacity_ttl: GoDuration,
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
    /// Inject EC2 faults from this JSON file while it exists, read again when it changes:
    /// `{"throttleRate": 0.2, "serverErrorRate": 0.1, "noCapacity": ["m5zn.metal"]}` (rates are
    /// shares of calls).
    #[arg(long, env = "SIM_FAULTS_FILE", value_name = "FILE")]
    pub sim_faults_file: Option<PathBuf>,
    /// Reach each simulated worker's CML over HTTPS at its private address, as on AWS, instead
    /// of the in-process stand-in; the addresses are then on 127.0.0.0/8, one per instance, so a
    /// test can serve a CML for each (the soak does).
    #[arg(long, env = "SIM_CML_OVER_HTTPS")]
    pub sim_cml_over_https: bool,
}
