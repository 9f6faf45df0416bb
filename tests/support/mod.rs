//! Test support: a real control plane (etcd + kube-apiserver + kubectl) shared by the tests of one
//! test binary, and throwaway namespaces on it.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod binaries;
pub mod cml_server;
pub mod contract;
pub mod control_plane_server;
pub mod controlplane;
pub mod fleet;
pub mod guardian;
pub mod logs;
pub mod moto;
pub mod namespace;
pub mod openmetrics;
pub mod process;
pub mod records;
pub mod replica;
pub mod serve;
pub mod state_etcd;
pub mod tcp_proxy;
pub mod workers;

pub use controlplane::ControlPlane;
pub use namespace::TestNamespace;
