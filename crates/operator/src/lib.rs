//! resource-controller: keeps a fleet of CML workers on EC2 in the shape the lab platform needs.

pub mod backoff;
pub mod cli;
pub mod cml;
pub mod control_plane;
pub mod controller;
pub mod crd;
pub mod demand;
pub mod expiring;
pub mod http_error;
pub mod http_peer;
pub mod leader;
mod lock;
pub mod mirror;
pub mod platform_etcd;
pub mod provider;
pub mod reference;
pub mod remote;
pub mod telemetry;
pub mod tls;

/// The pure decisions, from `ccm-core`.
pub use ccm_core::{lead_time, licensing, phase_machine, planner, scaling_schedule, units};
