//! `run`'s flags for the platform's etcd, and the remotes' deadlines and sweep.

use std::path::PathBuf;

use clap::Args;

use crate::crd::GoDuration;

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
    /// PEM file of the controller's client certificate for etcd's mutual TLS (with
    /// --etcd-key-file); turns TLS on.
    #[arg(long, value_name = "FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM file of the key of --etcd-cert-file.
    #[arg(long, value_name = "FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// Deadline of each push to, or removal from, a remote on a reconcile's path.
    #[arg(long, default_value = "2s")]
    pub remote_deadline: GoDuration,
    /// Interval of the sweep of remote records whose Worker is gone.
    #[arg(long, default_value = "1m")]
    pub record_sweep_interval: GoDuration,
}
