//! `run`'s flags for leader election.

use std::time::Duration;

use clap::Args;

use crate::crd::GoDuration;

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
    /// The Lease's namespace: the flag or POD_NAMESPACE, else the service account's, else default.
    pub fn lease_namespace(&self) -> String {
        self.leader_lease_namespace.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|_| "default".to_owned())
        })
    }

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
