//! The `WorkerTemplate` kind: how to launch a CML worker and how many of them to keep.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::GoDuration;
use ccm_core::phase_machine::Timeouts;
pub use ccm_core::{lead_time::LeadTime, scaling_schedule::ScalingSchedule};

/// A recipe for CML workers on a cloud provider and the scaling policy for the fleet built from it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ccm.dev",
    version = "v1alpha1",
    kind = "WorkerTemplate",
    namespaced,
    status = "WorkerTemplateStatus",
    shortname = "wkt",
    category = "ccm",
    doc = "A recipe for Cisco Modeling Labs workers on EC2 and the scaling policy of their fleet.",
    printcolumn = r#"{"name": "Instance-Type", "type": "string", "jsonPath": ".spec.instanceType"}"#,
    printcolumn = r#"{"name": "License", "type": "string", "jsonPath": ".spec.licenseType"}"#,
    printcolumn = r#"{"name": "Min", "type": "integer", "jsonPath": ".spec.scaling.minWorkers"}"#,
    printcolumn = r#"{"name": "Max", "type": "integer", "jsonPath": ".spec.scaling.maxWorkers"}"#,
    printcolumn = r#"{"name": "Workers", "type": "string", "jsonPath": ".status.workers.readyOfTotal", "description": "Ready workers of all workers"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.fallbackInstanceTypes) || !(self.instanceType in self.fallbackInstanceTypes)").message("fallbackInstanceTypes must not repeat instanceType").field_path(".fallbackInstanceTypes"))]
#[x_kube(validation = Rule::new("!has(self.scaling.warmRoom) || ((!has(self.scaling.warmRoom.cpuCores) || self.scaling.warmRoom.cpuCores <= self.capacity.cpuCores) && (!has(self.scaling.warmRoom.memoryGiB) || self.scaling.warmRoom.memoryGiB <= self.capacity.memoryGiB) && (!has(self.scaling.warmRoom.storageGiB) || self.scaling.warmRoom.storageGiB <= self.capacity.storageGiB) && (!has(self.scaling.warmRoom.nodes) || self.scaling.warmRoom.nodes <= self.capacity.maxNodes))").message("scaling.warmRoom must fit in one worker's capacity").field_path(".scaling.warmRoom"))]
#[x_kube(validation = Rule::new("!has(self.licensing) || self.licenseType != 'Evaluation'").message("an Evaluation worker runs unregistered: remove licensing, or choose licenseType Personal or Enterprise").field_path(".licensing"))]
#[x_kube(validation = Rule::new("!has(self.licensing) || !has(self.licensing.productLicense) || ((self.licenseType == 'Personal') == self.licensing.productLicense.startsWith('CML_Personal'))").message("licensing.productLicense must match licenseType: CML_Personal or CML_Personal40 for Personal, another CML product for Enterprise").field_path(".licensing.productLicense"))]
#[x_kube(validation = Rule::new("!has(self.licensing) || !has(self.licensing.expansionNodes) || (self.licenseType == 'Enterprise' && (!has(self.licensing.productLicense) || !self.licensing.productLicense.startsWith('CML_Personal')))").message("licensing.expansionNodes only applies to an Enterprise product").field_path(".licensing.expansionNodes"))]
pub struct WorkerTemplateSpec {
    /// Free text for people: what this template is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Which cloud provider launches the workers: `aws` (EC2) or `simulated` (in-process, for demos and benchmarks).
    #[serde(default)]
    pub provider: ProviderKind,

    /// AWS region of the workers; the controller's own region (`AWS_REGION`) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// EC2 instance type of the workers, e.g. `m5zn.metal`.
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
    )]
    pub instance_type: String,

    /// Instance types tried in order when EC2 has no capacity for `instanceType`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$"))
    )]
    pub fallback_instance_types: Vec<String>,

    /// The machine image (AMI) of the workers: exactly one of `id` or `namePattern`.
    pub image: ImageSelector,

    /// Subnets to launch into; the first with capacity wins. Empty means the default VPC's default subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^subnet-[0-9a-f]{8,17}$")))]
    pub subnet_ids: Vec<String>,

    /// Security groups attached to the workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^sg-[0-9a-f]{8,17}$")))]
    pub security_group_ids: Vec<String>,

    /// Name of the EC2 key pair installed on the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub key_name: Option<String>,

    /// Name or ARN of the IAM instance profile attached to the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub iam_instance_profile: Option<String>,

    /// Size and type of the root EBS volume.
    #[serde(default)]
    pub root_volume: RootVolume,

    /// The instance metadata service (IMDS) of the workers. By default session tokens (IMDSv2)
    /// are required, the hop limit is 1 and tags are not in it, so lab nodes on a worker cannot
    /// read its credentials.
    #[serde(default)]
    pub metadata_options: MetadataOptionsSpec,

    /// Give each worker a public IPv4 address. Off by default: the controller reaches CML on
    /// the private address; turning it on exposes CML to whatever the security groups allow.
    #[serde(default)]
    pub associate_public_ip_address: bool,

    /// Extra EC2 tags on every worker: keys up to 128 characters, values up to 256. Keys
    /// starting with `ccm:`, `aws:` or `kubernetes.io/cluster/` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('ccm:') && !k.startsWith('aws:') && !k.startsWith('kubernetes.io/cluster/'))").message("tag keys starting with 'ccm:', 'aws:' or 'kubernetes.io/cluster/' are reserved"))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) >= 1 && size(k) <= 128 && size(self[k]) <= 256)").message("tag keys take 1 to 128 characters and values at most 256"))]
    #[schemars(extend("maxProperties" = 40))]
    pub tags: BTreeMap<String, String>,

    /// Cloud-init user data passed to the instance as is (the controller base64-encodes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub user_data: Option<String>,

    /// What one worker offers to labs: the scheduler's view of its size.
    pub capacity: Capacity,

    /// CML license the workers run under; demand is matched to templates by it.
    pub license_type: LicenseType,

    /// Ports on the worker handed out to lab consoles.
    #[serde(default)]
    pub port_range: PortRange,

    /// How the controller reaches the CML API on each worker.
    #[serde(default)]
    pub cml: CmlAccess,

    /// Smart Licensing of the workers: each registers before it takes labs and gives its seat
    /// back before it stops or goes. Without it licenses are left to people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licensing: Option<LicensingSpec>,

    /// Fleet size and the pace of scaling.
    pub scaling: Scaling,
}

/// Where workers are launched.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Amazon EC2.
    #[default]
    Aws,
    /// An in-process cloud with EC2's semantics, for demos and benchmarks.
    Simulated,
}

impl ProviderKind {
    /// The name as written in a template (`aws`, `simulated`); also a metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aws => "aws",
            ProviderKind::Simulated => "simulated",
        }
    }
}

/// The AMI of the workers, chosen by id or by the newest image whose name matches a pattern.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.id) != has(self.namePattern)").message("exactly one of image.id or image.namePattern must be set"))]
#[x_kube(validation = Rule::new("!has(self.owners) || size(self.owners) == 0 || has(self.namePattern)").message("image.owners only applies with image.namePattern").field_path(".owners"))]
pub struct ImageSelector {
    /// A fixed AMI id, e.g. `ami-0abcdef1234567890`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^ami-[0-9a-f]{8,17}$"))]
    pub id: Option<String>,

    /// A glob on the AMI name, e.g. `CML-2.9.*`; the newest matching image wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name_pattern: Option<String>,

    /// Account ids (or `self`, `amazon`) allowed to own the image matched by `namePattern`;
    /// `self` (this account) when empty, so a public image with a look-alike name is never
    /// picked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(length(min = 1)))]
    pub owners: Vec<String>,
}

/// The instance metadata service's settings (EC2 `MetadataOptions`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptionsSpec {
    /// `required` (IMDSv2 session tokens) or `optional` (IMDSv1 too: only for an image that
    /// cannot use tokens, and it lets anything on the worker that can make a request read the
    /// instance profile's credentials).
    #[serde(default)]
    pub http_tokens: HttpTokens,

    /// How many network hops a metadata answer travels: 1 keeps it on the host.
    #[serde(default = "default_hop_limit")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: u8,

    /// Put the instance's tags in its metadata.
    #[serde(default)]
    pub instance_metadata_tags: bool,
}

fn default_hop_limit() -> u8 {
    1
}

impl Default for MetadataOptionsSpec {
    fn default() -> Self {
        MetadataOptionsSpec {
            http_tokens: HttpTokens::default(),
            http_put_response_hop_limit: default_hop_limit(),
            instance_metadata_tags: false,
        }
    }
}

/// Whether the metadata service requires session tokens.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv2 only.
    #[default]
    Required,
    /// IMDSv1 too.
    Optional,
}

/// The root EBS volume.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RootVolume {
    /// Size in GiB.
    #[serde(rename = "sizeGiB", default = "default_root_size")]
    #[schemars(range(min = 8, max = 16384))]
    pub size_gib: u32,

    /// EBS volume type.
    #[serde(rename = "type", default)]
    pub volume_type: VolumeType,

    /// KMS key (id, alias or ARN) that encrypts the volume; the account's default EBS key when
    /// unset. The volume is always encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub kms_key_id: Option<String>,
}

fn default_root_size() -> u32 {
    500
}

impl Default for RootVolume {
    fn default() -> Self {
        Self {
            size_gib: default_root_size(),
            volume_type: VolumeType::default(),
            kms_key_id: None,
        }
    }
}

/// EBS volume types fit for a root volume.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    /// General purpose SSD, previous generation.
    Gp2,
    /// General purpose SSD.
    #[default]
    Gp3,
    /// Provisioned IOPS SSD.
    Io1,
    /// Provisioned IOPS SSD, higher durability.
    Io2,
}

/// What one worker offers to labs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// CPU cores available to lab nodes.
    #[schemars(range(min = 1))]
    pub cpu_cores: u32,

    /// Memory in GiB available to lab nodes.
    #[serde(rename = "memoryGiB")]
    #[schemars(range(min = 1))]
    pub memory_gib: u32,

    /// Disk in GiB available to lab nodes.
    #[serde(rename = "storageGiB")]
    #[schemars(range(min = 1))]
    pub storage_gib: u32,

    /// Most lab nodes the worker may run at once (its license's node limit).
    #[schemars(range(min = 1))]
    pub max_nodes: u32,
}

/// Free capacity that makes a worker with labs count as warm; dimensions left out ask for
/// nothing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.cpuCores) && self.cpuCores > 0) || (has(self.memoryGiB) && self.memoryGiB > 0) || (has(self.storageGiB) && self.storageGiB > 0) || (has(self.nodes) && self.nodes > 0)").message("scaling.warmRoom must ask for some room: nodes, cpuCores, memoryGiB or storageGiB above 0"))]
pub struct WarmRoom {
    /// CPU cores free.
    #[serde(default)]
    pub cpu_cores: u32,

    /// Memory in GiB free.
    #[serde(default, rename = "memoryGiB")]
    pub memory_gib: u32,

    /// Disk in GiB free.
    #[serde(default, rename = "storageGiB")]
    pub storage_gib: u32,

    /// Lab nodes free.
    #[serde(default)]
    pub nodes: u32,
}

/// CML license editions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LicenseType {
    /// CML Personal.
    Personal,
    /// CML Enterprise.
    Enterprise,
    /// CML Evaluation.
    Evaluation,
}

/// A range of TCP ports, both ends included.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start <= self.end").message("portRange.start must be less than or equal to portRange.end"))]
pub struct PortRange {
    /// First port.
    #[serde(default = "default_port_start")]
    #[schemars(range(min = 1, max = 65535))]
    pub start: u16,

    /// Last port.
    #[serde(default = "default_port_end")]
    #[schemars(range(min = 1, max = 65535))]
    pub end: u16,
}

fn default_port_start() -> u16 {
    2000
}

fn default_port_end() -> u16 {
    9999
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            start: default_port_start(),
            end: default_port_end(),
        }
    }
}

/// How to reach and trust the CML API on a worker.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || !self.insecureSkipTlsVerify").message("caSecretRef verifies CML's certificate: it cannot be combined with insecureSkipTlsVerify: true").field_path(".caSecretRef"))]
pub struct CmlAccess {
    /// HTTPS port of the CML API.
    #[serde(default = "default_cml_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// Reach CML on the instance's private IP (the default); `false` prefers the public one,
    /// which sends the CML credentials across whatever lies between.
    #[serde(default = "default_true")]
    pub use_private_ip: bool,

    /// Secret with keys `username` and `password` for the CML API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,

    /// Skip TLS verification of the CML API: the credentials then go to whatever answers.
    /// Off by default: without `caSecretRef`, the certificate a worker presents at its first
    /// contact is pinned (`status.cml.certificate`) and a different one is refused.
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,

    /// Secret holding the CA bundle (key `ca.crt` unless `key` says otherwise) that signs the CML certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

fn default_cml_port() -> u16 {
    443
}

fn default_true() -> bool {
    true
}

impl Default for CmlAccess {
    fn default() -> Self {
        Self {
            port: default_cml_port(),
            use_private_ip: true,
            credentials_secret_ref: None,
            insecure_skip_tls_verify: false,
            ca_secret_ref: None,
        }
    }
}

/// Smart Licensing of a template's workers (`licensing`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LicensingSpec {
    /// Secret in the template's namespace whose key `token` holds the Smart Licensing
    /// registration token. The controller reads it only to register, and never shows it.
    pub token_secret_ref: SecretRef,

    /// CML product license to run, e.g. `CML_Enterprise`; by default `CML_Enterprise` for an
    /// Enterprise template and `CML_Personal` for a Personal one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^\w{1,20}$"))]
    pub product_license: Option<String>,

    /// Extra lab nodes (the `CML_NODE_COUNT` feature) set after registration; Enterprise only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub expansion_nodes: Option<u32>,

    /// How CML reaches Cisco's licensing servers, when not directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<LicensingTransport>,

    /// Longest wait from the first registration request to a registered, authorized CML; the
    /// worker fails after it (and the autoscaler replaces it).
    #[serde(default = "default_registration_timeout")]
    pub registration_timeout: GoDuration,

    /// Longest wait for the seat's return before a stop or terminate goes on anyway (and the
    /// seat is reported as possibly still held).
    #[serde(default = "default_deregistration_timeout")]
    pub deregistration_timeout: GoDuration,
}

fn default_registration_timeout() -> GoDuration {
    GoDuration::from_mins(5)
}

fn default_deregistration_timeout() -> GoDuration {
    GoDuration::from_mins(2)
}

impl LicensingSpec {
    /// The product license the workers run: the one given, or the license type's own.
    pub fn product(&self, license: LicenseType) -> String {
        match (&self.product_license, license) {
            (Some(p), _) => p.clone(),
            (None, LicenseType::Personal) => "CML_Personal".into(),
            (None, _) => "CML_Enterprise".into(),
        }
    }
}

/// A Smart Software Manager satellite and/or an HTTP proxy for CML's licensing traffic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LicensingTransport {
    /// URL of an on-premises Smart Software Manager satellite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^https?://[^\s/]+(/[\w.-]+)+$")
    )]
    pub satellite_url: Option<String>,

    /// HTTP proxy to reach Cisco (or the satellite) through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<LicensingProxy>,
}

/// An HTTP proxy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct LicensingProxy {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[A-Za-z0-9.:\[\]%-]+$"))]
    pub server: String,
    /// Port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// A Secret in the template's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// A key of a Secret in the template's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Key within the Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_owned()
}

/// Fleet size limits and the pace of scaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minWorkers <= self.maxWorkers").message("scaling.minWorkers must be less than or equal to scaling.maxWorkers"))]
#[x_kube(validation = Rule::new("self.warmWorkers <= self.maxWorkers").message("scaling.warmWorkers must be less than or equal to scaling.maxWorkers"))]
#[x_kube(validation = Rule::new("!has(self.schedule) || self.schedule.windows.all(w, (!has(w.minWorkers) || w.minWorkers <= self.maxWorkers) && (!has(w.warmWorkers) || w.warmWorkers <= self.maxWorkers))").message("a scaling.schedule window's minWorkers and warmWorkers must be less than or equal to scaling.maxWorkers"))]
pub struct Scaling {
    /// Workers kept in existence at all times.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub min_workers: u32,

    /// Hard ceiling on workers of this template, whatever the demand.
    #[schemars(range(max = 1000))]
    pub max_workers: u32,

    /// Idle running workers kept as headroom for sudden demand.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub warm_workers: u32,

    /// With it, a worker holding labs still counts toward `warmWorkers` while this much of it
    /// is free (room for the biggest lab that should never wait for a boot); without it, only
    /// idle workers count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_room: Option<WarmRoom>,

    /// Drained workers kept stopped (cheap, quick to restart) instead of terminated.
    #[serde(default)]
    #[schemars(range(max = 1000))]
    pub max_stopped_workers: u32,

    /// How long a running worker must sit idle before it is drained.
    #[serde(default = "default_scale_down_grace")]
    pub scale_down_grace_period: GoDuration,

    /// Longest a drain waits for labs to end before it forces the worker down.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: GoDuration,

    /// Most workers of this template draining at once.
    #[serde(default = "default_max_concurrent_drains")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_drains: u32,

    /// Longest wait for EC2 to report a launched instance running.
    #[serde(default = "default_launch_timeout")]
    pub launch_timeout: GoDuration,

    /// Longest wait, after launch, for the CML API to report ready.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: GoDuration,

    /// How far ahead this template provides for demand: a duration, or `auto` (the p95 of its
    /// workers' measured launch-to-Ready times plus their spread, p95 - p50, between 2 and 5
    /// minutes, once 3 launches are measured; and, once 3 starts are measured, stopped workers
    /// are started only the same measure of starts ahead). Unset: the controller's
    /// `--scale-up-lead-time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_lead_time: Option<LeadTime>,

    /// Windows of the week with another `minWorkers` or `warmWorkers`, e.g. a warm worker on
    /// weekday evenings only; each window is provided for a lead time before it opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScalingSchedule>,
}

impl Scaling {
    /// The timeouts of this template that the phase machine enforces.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            launch: self.launch_timeout.as_std(),
            ready: self.ready_timeout.as_std(),
            drain: self.drain_timeout.as_std(),
        }
    }
}

fn default_scale_down_grace() -> GoDuration {
    GoDuration::from_mins(30)
}

fn default_drain_timeout() -> GoDuration {
    GoDuration::from_hours(4)
}

fn default_max_concurrent_drains() -> u32 {
    1
}

fn default_launch_timeout() -> GoDuration {
    GoDuration::from_mins(10)
}

fn default_ready_timeout() -> GoDuration {
    GoDuration::from_mins(30)
}

/// What the controller last saw and decided for a template.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerTemplateStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: the configuration is valid and the image resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The AMI the template resolves to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_image_id: Option<String>,

    /// Hash of everything that shapes a launched instance; workers launched under another hash have drifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_spec_hash: Option<String>,

    /// The template's workers counted by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkerCounts>,

    /// How many workers the autoscaler wants up (not stopped) now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_workers: Option<u32>,

    /// The unplaced lab instances assigned to this template, as last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demand: Option<DemandStatus>,

    /// Declared capacity of the template's running workers, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityTotals>,

    /// The last scale-up decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up: Option<ScalingRecord>,

    /// The last scale-down decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down: Option<ScalingRecord>,

    /// The license seat budget of the template's product (`--license-seats`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_seats: Option<LicenseSeats>,

    /// How long its workers took to come up, launches and starts, over the last ones measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_durations: Option<BootDurations>,

    /// The lead time the autoscaler used in its last round (`scaleUpLeadTime`, measured with
    /// `auto`, or the controller's flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_lead_time: Option<GoDuration>,

    /// How far ahead the autoscaler started stopped workers for demand in its last round: with
    /// `auto`, from the measured starts (at most the lead time); else the lead time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_lead_time: Option<GoDuration>,

    /// With `scaling.schedule`: the `minWorkers` and `warmWorkers` the autoscaler kept in its
    /// last round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_levels: Option<ScheduledLevels>,
}

/// The levels a scaling schedule set in the autoscaler's last round.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledLevels {
    /// `minWorkers` in use.
    pub min_workers: u32,
    /// `warmWorkers` in use.
    pub warm_workers: u32,
}

/// Measured boot durations of a template's workers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootDurations {
    /// Launch to Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<BootQuantiles>,
    /// Start of a stopped worker to Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<BootQuantiles>,
    /// The boots measured, newest last (at most 20 of each kind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<BootSample>,
}

/// The median and the 95th percentile of one kind of boot.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BootQuantiles {
    /// Median, in seconds.
    pub p50_seconds: u64,
    /// 95th percentile, in seconds.
    pub p95_seconds: u64,
    /// How many boots they are computed from.
    pub count: u32,
}

/// One measured boot.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootSample {
    /// The worker's name.
    pub worker: String,
    /// A launch or a start.
    pub kind: super::BootKind,
    /// Seconds to Ready.
    pub seconds: u64,
    /// When it became Ready.
    pub ready_at: Time,
}

/// Workers of a template by phase.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerCounts {
    /// All workers of the template.
    pub total: u32,
    /// Workers whose `Ready` condition is true.
    pub ready: u32,
    /// `ready/total`, for `kubectl get`.
    pub ready_of_total: String,
    /// Workers in phase Pending.
    #[serde(default)]
    pub pending: u32,
    /// Workers in phase Provisioning.
    #[serde(default)]
    pub provisioning: u32,
    /// Workers in phase Running.
    #[serde(default)]
    pub running: u32,
    /// Workers in phase Draining.
    #[serde(default)]
    pub draining: u32,
    /// Workers in phase Stopping.
    #[serde(default)]
    pub stopping: u32,
    /// Workers in phase Stopped.
    #[serde(default)]
    pub stopped: u32,
    /// Workers in phase Starting.
    #[serde(default)]
    pub starting: u32,
    /// Workers in phase Terminating.
    #[serde(default)]
    pub terminating: u32,
    /// Workers in phase Failed.
    #[serde(default)]
    pub failed: u32,
}

/// Declared capacity summed over workers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CapacityTotals {
    /// CPU cores.
    pub cpu_cores: u64,
    /// Memory in GiB.
    #[serde(rename = "memoryGiB")]
    pub memory_gib: u64,
    /// Disk in GiB.
    #[serde(rename = "storageGiB")]
    pub storage_gib: u64,
    /// Lab nodes.
    pub max_nodes: u64,
}

/// One scaling decision, as shown in status.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRecord {
    /// When it was decided.
    pub time: Time,
    /// How many workers it added or removed.
    pub count: u32,
    /// Why.
    pub reason: String,
}

/// Unplaced lab demand assigned to a template.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DemandStatus {
    /// Unplaced lab instances this template is the choice for.
    pub instances: u32,
    /// Of those, the ones whose timeslot starts within the scale-up lead time (or already has).
    pub within_lead_time: u32,
    /// Lab instances within the lead time that no capacity will hold (maxWorkers reached, or
    /// too big for one worker).
    pub unplaceable: u32,
    /// Unplaced lab instances in the namespace that no WorkerTemplate can hold (license or size).
    #[serde(default)]
    pub unmatched: u32,
    /// Stopped workers kept stopped for lab instances due beyond the start lead time: each is
    /// started once they come within it, and nothing is launched for them.
    #[serde(default)]
    pub held_stopped: u32,
}

/// Seats of a CML product license, across every template of that product.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LicenseSeats {
    /// The product license, e.g. CML_Enterprise.
    pub product: String,
    /// Most workers of the product that may hold a seat.
    pub budget: u32,
    /// Workers holding, taking, giving back or maybe still holding a seat, or up and about to
    /// register.
    pub in_use: u32,
    /// Seats left.
    pub available: u32,
}
