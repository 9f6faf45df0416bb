//! `run`'s flags for the controllers themselves: identity, scope, intervals, concurrency.

use clap::Args;

use crate::crd::GoDuration;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Value of the `ccm:cluster` tag on this controller's instances: a name unique to this
    /// install within the AWS account (the orphan sweep terminates untracked instances carrying
    /// it). Required: two installs sharing one would terminate each other's workers.
    #[arg(long, env = "CLUSTER_ID", value_parser = parse_cluster_id)]
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
    /// Most instances the controller keeps at once, over every Worker, the autoscaler's and
    /// hand-made ones alike; a launch beyond it waits (`Launched=False`, `InstanceCapReached`).
    #[arg(long, env = "MAX_INSTANCES", default_value_t = 100)]
    pub max_instances: u32,
    /// Most workers per CML product license that may hold a Smart Licensing seat at once, e.g.
    /// `CML_Enterprise=10,CML_Personal=2`; no budget for a product not named.
    #[arg(long, env = "LICENSE_SEATS", value_parser = parse_seats)]
    pub license_seats: Option<std::collections::BTreeMap<String, u32>>,
    /// Port of `/health`, `/readyz` and `/metrics` (0 turns them off).
    #[arg(long, env = "HEALTH_PORT", default_value_t = 8082)]
    pub health_port: u16,
}

impl ControllerArgs {
    /// This replica's name: the flag, else the host (pod) name, else one made from the pid.
    pub fn identity(&self) -> String {
        self.controller_instance_id
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("resource-controller-{}", std::process::id()))
    }
}

fn parse_seats(text: &str) -> Result<std::collections::BTreeMap<String, u32>, String> {
    crate::controller::seats::parse_budget(text)
}

/// A cluster id: what an EC2 tag value may hold, and not empty.
fn parse_cluster_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.is_empty() || id.len() > 256 {
        return Err("a cluster id takes 1 to 256 characters".into());
    }
    Ok(id.to_owned())
}
