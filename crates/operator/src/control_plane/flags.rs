//! `run`'s flags for the Control Plane API client.

use std::path::PathBuf;

use clap::Args;

use crate::crd::GoDuration;

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
    /// Send the bearer token over plain http when the URL says http (refused otherwise: anyone
    /// on the path could read it). For a platform reached through a local proxy only.
    #[arg(long, env = "CONTROL_PLANE_API_ALLOW_HTTP")]
    pub control_plane_api_allow_http: bool,
    /// Timeout of each Control Plane API request.
    #[arg(long, default_value = "5s")]
    pub control_plane_api_timeout: GoDuration,
}
