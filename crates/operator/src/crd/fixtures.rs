//! Test fixtures: API objects as a test needs them, without a cluster.

use serde_json::{Value, json};

use super::WorkerTemplate;

/// An Enterprise template `t` in namespace `ns` (48 cores, 192 GiB, 500 GiB, 20 nodes, image
/// `ami-1`, maxWorkers 3), with `changes` merged in (JSON merge patch: `null` removes a field).
pub fn template(changes: Value) -> WorkerTemplate {
    let mut t = json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
        "metadata": {"name": "t", "namespace": "ns", "generation": 1},
        "spec": {
            "instanceType": "m5zn.metal", "image": {"id": "ami-1"},
            "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
            "licenseType": "Enterprise", "scaling": {"maxWorkers": 3}
        }
    });
    json_patch::merge(&mut t, &changes);
    serde_json::from_value(t).expect("a valid WorkerTemplate")
}
