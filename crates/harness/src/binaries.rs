//! Finds kube-apiserver, etcd and kubectl: `TEST_ASSET_*`, then `KUBEBUILDER_ASSETS`, then the
//! pinned build of `make controlplane`.

use std::path::{Path, PathBuf};

/// Kubernetes version the Go module in `tests/controlplane` pins; keep in step with the Makefile.
pub const PINNED_VERSION: &str = "v1.35.4";

#[derive(Debug, Clone)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
}

impl Binaries {
    pub fn locate() -> Binaries {
        let built = crate::repo_root()
            .join("target/controlplane")
            .join(PINNED_VERSION);
        let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
        let find = |name: &str, var: &str| -> PathBuf {
            let candidates = std::env::var_os(var)
                .map(PathBuf::from)
                .into_iter()
                .chain(assets.as_ref().map(|d| d.join(name)))
                .chain(std::iter::once(built.join(name)));
            let tried: Vec<PathBuf> = candidates.collect();
            tried.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
                panic!(
                    "no {name} binary: tried {tried:?}; run `make controlplane` or set {var} / KUBEBUILDER_ASSETS"
                )
            })
        };
        Binaries {
            kube_apiserver: find("kube-apiserver", "TEST_ASSET_KUBE_APISERVER"),
            etcd: find("etcd", "TEST_ASSET_ETCD"),
            kubectl: find("kubectl", "TEST_ASSET_KUBECTL"),
        }
    }
}
