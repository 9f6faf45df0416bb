//! Cloud-agnostic values: instances, images, launch specs and the tags that mark our instances.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cloud::Instance;

/// Tag keys every managed instance carries.
pub mod tag {
    pub const NAME: &str = "Name";
    pub const MANAGED: &str = "ccm:managed";
    pub const CLUSTER: &str = "ccm:cluster";
    pub const TEMPLATE: &str = "ccm:template";
    /// `<namespace>/<name>` of the Worker.
    pub const WORKER: &str = "ccm:worker";
    pub const WORKER_UID: &str = "ccm:worker-uid";
}

/// How to find the machine image.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ImageQuery {
    Id(String),
    /// A glob on the image name; the newest match wins. Owners restrict whose images count.
    NamePattern {
        pattern: String,
        owners: Vec<String>,
    },
}

/// A machine image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    /// ISO 8601, as EC2 reports it; compares correctly as a string.
    pub creation_date: Option<String>,
    /// Device name of the root volume, e.g. `/dev/sda1`.
    pub root_device_name: Option<String>,
}

/// Root device of Ubuntu-based images such as CML's, used when the image does not say.
pub const DEFAULT_ROOT_DEVICE: &str = "/dev/sda1";

/// Everything that shapes a launched instance, derived from a template and its resolved image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSpec {
    pub image_id: String,
    pub root_device_name: String,
    /// The template's instance type first, then its fallbacks in order.
    pub instance_types: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub key_name: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub root_volume_gib: u32,
    pub root_volume_type: String,
    pub user_data: Option<String>,
    pub extra_tags: BTreeMap<String, String>,
    /// The instance metadata service's settings.
    pub metadata: MetadataOptions,
    /// The KMS key that encrypts the root volume; the account's default EBS key when `None`.
    pub kms_key_id: Option<String>,
    /// Give the instance a public IPv4 address.
    pub public_ip: bool,
}

/// How the instance metadata service answers (EC2 `MetadataOptions`). The default is the safe
/// one: session tokens (IMDSv2) required, a hop limit of 1 so nothing behind the host (lab
/// nodes, containers) reaches it, and no instance tags in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    pub tokens_required: bool,
    pub hop_limit: u8,
    pub tags: bool,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        MetadataOptions {
            tokens_required: true,
            hop_limit: 1,
            tags: false,
        }
    }
}

impl LaunchSpec {
    /// A spec with only an image and instance types; the rest as a template's defaults.
    pub fn basic(image_id: &str, instance_types: &[&str]) -> LaunchSpec {
        LaunchSpec {
            image_id: image_id.to_owned(),
            root_device_name: DEFAULT_ROOT_DEVICE.to_owned(),
            instance_types: instance_types.iter().map(|t| (*t).to_owned()).collect(),
            subnet_ids: Vec::new(),
            security_group_ids: Vec::new(),
            key_name: None,
            iam_instance_profile: None,
            root_volume_gib: 500,
            root_volume_type: "gp3".to_owned(),
            user_data: None,
            extra_tags: BTreeMap::new(),
            metadata: MetadataOptions::default(),
            kms_key_id: None,
            public_ip: false,
        }
    }

    /// A stable fingerprint: equal specs give equal hashes across processes and versions.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", fnv1a64(&canonical))
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Who an instance is for; becomes its tags and its idempotency token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerIdentity {
    pub cluster_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub template: String,
}

impl WorkerIdentity {
    /// The controller's tags (`ccm:*`, `Name`), over the template's own tags.
    pub fn tags(&self, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut tags = extra.clone();
        for (k, v) in [
            (tag::NAME, self.name.clone()),
            (tag::MANAGED, "true".to_owned()),
            (tag::CLUSTER, self.cluster_id.clone()),
            (tag::TEMPLATE, self.template.clone()),
            (tag::WORKER, format!("{}/{}", self.namespace, self.name)),
            (tag::WORKER_UID, self.uid.clone()),
        ] {
            tags.insert(k.to_owned(), v);
        }
        tags
    }
}

/// A launch: for whom, what, and which attempt (the attempt makes the idempotency token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    pub worker: WorkerIdentity,
    pub spec: LaunchSpec,
    pub attempt: u32,
}

impl LaunchRequest {
    /// The RunInstances `ClientToken` of this attempt: a function of the UID and the attempt.
    pub fn client_token(&self) -> String {
        client_token(&self.worker.uid, self.attempt)
    }
}

/// Deterministic idempotency token from a worker UID and an attempt number (at most 64 ASCII chars).
pub fn client_token(worker_uid: &str, attempt: u32) -> String {
    let uid: String = worker_uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    format!("rc-{uid}-{attempt}")
}

/// What a launch produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Launched {
    pub instance: Instance,
    /// True when an instance already tagged for this worker was found and adopted.
    pub adopted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_token_is_deterministic_and_short() {
        let uid = "0f8c2a6e-1d2b-4c3d-9e8f-a1b2c3d4e5f6";
        assert_eq!(client_token(uid, 1), client_token(uid, 1));
        assert_ne!(client_token(uid, 1), client_token(uid, 2));
        assert!(client_token(uid, u32::MAX).len() <= 64);
    }

    #[test]
    fn worker_tags_override_template_tags() {
        let id = WorkerIdentity {
            cluster_id: "c1".into(),
            namespace: "ns".into(),
            name: "w1".into(),
            uid: "u1".into(),
            template: "t".into(),
        };
        let extra = BTreeMap::from([
            ("team".into(), "labs".into()),
            ("Name".into(), "spoof".into()),
        ]);
        let tags = id.tags(&extra);
        assert_eq!(tags["Name"], "w1");
        assert_eq!(tags["team"], "labs");
        assert_eq!(tags[tag::MANAGED], "true");
        assert_eq!(tags[tag::WORKER], "ns/w1");
        assert_eq!(tags[tag::WORKER_UID], "u1");
    }

    #[test]
    fn launch_spec_hash_is_stable_and_sensitive() {
        let spec = LaunchSpec::basic("ami-1", &["m5zn.metal"]);
        assert_eq!(spec.hash(), spec.clone().hash());
        let mut other = spec.clone();
        other.root_volume_gib = 600;
        assert_ne!(spec.hash(), other.hash());
    }
}
