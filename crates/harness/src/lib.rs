//! Test support: a real control plane (etcd + kube-apiserver + kubectl) shared by the tests of one
//! test binary, and throwaway namespaces on it.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod binaries;
pub mod certs;
pub mod cml_fleet;
pub mod cml_server;
pub mod contract;
pub mod control_plane_server;
pub mod controlplane;
pub mod fleet;
pub mod guardian;
pub mod logs;
pub mod monitoring;
pub mod moto;
pub mod namespace;
pub mod openmetrics;
pub mod process;
pub mod records;
pub mod replica;
pub mod serve;
pub mod smart_account;
pub mod soak;
pub mod state_etcd;
pub mod tcp_proxy;
pub mod workers;

pub use controlplane::ControlPlane;
pub use namespace::TestNamespace;

use std::path::{Path, PathBuf};

/// The repository's root: `crds/`, `deploy/`, `api/`, `tests/` and `target/` are under it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `resource-controller` binary Cargo built beside the running test, bench or dev-env
/// (`target/<profile>/`); `RESOURCE_CONTROLLER_BIN` names another.
pub fn controller_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RESOURCE_CONTROLLER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    // Tests and benches run from target/<profile>/deps, binaries from target/<profile>.
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("resource-controller"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no resource-controller binary beside {}: build it (with --features simulator) or set RESOURCE_CONTROLLER_BIN",
                exe.display()
            )
        })
}

/// The simulator as a provider backend: `cloud`, and a CML ready `cml_boot` after each boot
/// whose registrations complete as quickly.
pub fn simulated(
    cloud: std::sync::Arc<ccm_simulator::SimulatedCloud>,
    cml_boot: std::time::Duration,
) -> Option<resource_controller::provider::SimulatedBackend> {
    let cml = ccm_simulator::SimulatedCml::with_license_delay(cml_boot, cml_boot);
    simulated_with(cloud, std::sync::Arc::new(cml))
}

/// The simulator as a provider backend, with this CML stand-in.
pub fn simulated_with(
    cloud: std::sync::Arc<ccm_simulator::SimulatedCloud>,
    cml: std::sync::Arc<ccm_simulator::SimulatedCml>,
) -> Option<resource_controller::provider::SimulatedBackend> {
    Some(resource_controller::provider::SimulatedBackend {
        cloud,
        cml: Some(cml),
    })
}
