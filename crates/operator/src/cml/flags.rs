//! `run`'s flags for the CML client.

use clap::Args;

use crate::crd::GoDuration;

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
