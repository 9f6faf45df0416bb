//! The API types of group `ccm.dev/v1alpha1` and the CRD YAML generated from them.

pub mod conditions;
#[cfg(test)]
pub(crate) mod fixtures;
mod template;
mod worker;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use ccm_core::{DURATION_PATTERN, GoDuration, ParseDurationError};
pub use template::*;
pub use worker::*;

/// Every CRD this operator serves, with the file name it is committed under in `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("workertemplates.ccm.dev.yaml", WorkerTemplate::crd()),
        ("workers.ccm.dev.yaml", Worker::crd()),
    ]
}

/// One CRD as the YAML document committed in `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

/// All CRDs as one multi-document YAML stream, as `resource-controller crds` prints it.
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for (_, crd) in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn committed_crds_match_the_generated_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
        for (file, crd) in super::all() {
            let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                committed == super::to_yaml(&crd).unwrap(),
                "crds/{file} is stale: run `make crds` and commit the result"
            );
        }
        let mut on_disk: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut expected: Vec<_> = super::all()
            .into_iter()
            .map(|(f, _)| f.to_owned())
            .collect();
        expected.sort();
        assert_eq!(on_disk, expected, "crds/ holds files no CRD generates");
    }
}
