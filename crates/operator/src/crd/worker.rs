//! The `Worker` kind: one CML worker, backed by one cloud instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use ccm_core::{DesiredState, SeatState, WorkerPhase};

/// Label on the Workers the autoscaler creates: the name of their WorkerTemplate.
pub const TEMPLATE_LABEL: &str = "ccm.dev/template";
/// Annotation: when `"true"` the autoscaler never drains this worker.
pub const DO_NOT_DISRUPT_ANNOTATION: &str = "ccm.dev/do-not-disrupt";
/// Annotation: when `"true"` deleting the worker terminates it at once, without a drain.
pub const SKIP_DRAIN_ANNOTATION: &str = "ccm.dev/skip-drain";
/// Annotation: the SHA-256 fingerprint of a CML certificate to trust besides the pinned one,
/// after the worker's certificate changed on purpose (`status.cml.certificate`).
pub const TRUST_CERTIFICATE_ANNOTATION: &str = "ccm.dev/trust-cml-certificate";

/// One CML worker and the state it should be in.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ccm.dev",
    version = "v1alpha1",
    kind = "Worker",
    namespaced,
    status = "WorkerStatus",
    shortname = "wk",
    category = "ccm",
    doc = "A Cisco Modeling Labs worker backed by one cloud instance.",
    printcolumn = r#"{"name": "Template", "type": "string", "jsonPath": ".spec.templateRef.name"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Instance", "type": "string", "jsonPath": ".status.instance.id"}"#,
    printcolumn = r#"{"name": "IP", "type": "string", "jsonPath": ".status.instance.privateIp"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// The WorkerTemplate (same namespace) this worker is built from. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("templateRef is immutable"))]
    pub template_ref: TemplateRef,

    /// The state the worker should be in: `Running`, `Draining` (finish labs, take no new ones) or `Stopped`.
    #[serde(default)]
    pub desired_state: DesiredState,
}

/// A reference to a WorkerTemplate in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct TemplateRef {
    /// Name of the WorkerTemplate.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// What the controller last observed of a worker.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Where the worker is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkerPhase>,

    /// The cloud instance backing the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceStatus>,

    /// Bookkeeping of the launch, kept so a retried launch never makes a second instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<LaunchStatus>,

    /// What the CML API on the worker last said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cml: Option<CmlStatus>,

    /// Smart Licensing: what CML says and whether the worker holds a seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<LicenseStatus>,

    /// Lab usage of the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageStatus>,

    /// When the current drain began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<Time>,

    /// The last launch or start, and how long it took to Ready (what `scaleUpLeadTime: auto`
    /// and the capacity planner learn from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootStatus>,

    /// The template's launch spec hash when this worker's instance was launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_spec_hash: Option<String>,

    /// `Launched`, `Ready`, `Drifted`, `Synced`, `CmlDegraded` (True while a CML endpoint
    /// does not answer and the fields it feeds are unknown) and `Licensed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The cloud instance backing a worker.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance id, e.g. `i-0123456789abcdef0`.
    pub id: String,
    /// Cloud provider that runs the instance (kept so cleanup works even without the template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<super::ProviderKind>,
    /// Region of the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Instance type it was launched as (may be a fallback type).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// Private IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    /// Public IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// AMI the instance was launched from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// When the instance was launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_time: Option<Time>,
    /// Cloud state: pending, running, stopping, stopped, shutting-down, terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Launch bookkeeping.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LaunchStatus {
    /// Idempotency token of the current launch attempt (derived from the UID and the attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// Launch attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the first launch attempt began; `launchTimeout` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Why the last attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What the CML API on a worker said.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CmlStatus {
    /// Base URL of the CML API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// CML version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CML says it is ready.
    #[serde(default)]
    pub ready: bool,
    /// CML's `system_health` says it is licensed; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licensed: Option<bool>,
    /// Labs on the worker, of all users; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labs: Option<u32>,
    /// Lab nodes running on the worker: summed over its computes, orphans included. Absent
    /// when CML did not report every count: unknown, never 0, so a drain waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_nodes: Option<u32>,
    /// When CML last answered something new: a probe that changes nothing here is not written,
    /// so a steady fleet makes no writes (`ccm_cml_probes_total` counts every probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// How CML's certificate is trusted, and the one it presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
}

/// CML's TLS certificate as the controller trusts it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    pub trust: CertificateTrust,
    /// SHA-256 fingerprint (as `openssl x509 -noout -fingerprint -sha256` prints it) of the
    /// certificate CML last presented and was trusted; with `Pinned`, the only one accepted
    /// for this instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The instance that presented it: a new instance is trusted on first use again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// How the controller decides to trust CML's certificate.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateTrust {
    /// Trusted on first use, then only that certificate (the default).
    Pinned,
    /// Verified against the template's `caSecretRef`.
    CaVerified,
    /// Not checked: `insecureSkipTlsVerify` is true.
    Unverified,
}

/// Smart Licensing of a worker: what its CML last said, and its seat.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LicenseStatus {
    /// The product instance in the Smart Software Manager (CML's `udi.product_uuid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_instance_id: Option<String>,
    /// The product instance's host name there (`udi.hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Registration with Smart Software Licensing, e.g. COMPLETED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<String>,
    /// Authorization, e.g. IN_COMPLIANCE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// When the authorization lapses unless renewed, as CML says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_expires: Option<String>,
    /// The active product license, e.g. CML_Enterprise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The seat: Free, Registering, Held, Deregistering, or MayBeHeld (its return could not be
    /// confirmed: see the runbook).
    #[serde(default)]
    pub seat: SeatState,
    /// When this start's first registration request was made; `registrationTimeout` counts
    /// from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_started_at: Option<Time>,
    /// When the current deregistration began; `deregistrationTimeout` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistration_started_at: Option<Time>,
    /// Licensing calls made since the last settled state (for the backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// No licensing call before this time (backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Lab usage of a worker, as the Control Plane API reports it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageStatus {
    /// Lab instances running on the worker; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_instances: Option<u32>,
    /// Lab instances placed on the worker that have not started yet; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_instances: Option<u32>,
    /// What the platform has allocated on the worker; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<AllocatedUsage>,
    /// Start of the next timeslot placed on the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_timeslot_start: Option<Time>,
    /// The autoscaler's idle clock: when the worker's activity (lab nodes running, or lab
    /// instances running or scheduled) last started or ended; for an idle worker, when it was
    /// last seen busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_time: Option<Time>,
}

/// Capacity the platform has allocated on a worker, in the Control Plane API's units.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedUsage {
    /// CPU cores.
    pub cpu_cores: f64,
    /// Memory in decimal GB (10^9 bytes), as the platform reports it.
    #[serde(rename = "memoryGB")]
    pub memory_gb: f64,
    /// Disk in decimal GB (10^9 bytes), as the platform reports it.
    #[serde(rename = "storageGB")]
    pub storage_gb: f64,
    /// Lab nodes.
    pub nodes: u32,
}

/// Whether a boot was a launch of a new instance or a start of a stopped one.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootKind {
    /// A new instance: EC2 boot, CML ready, licensed.
    Launch,
    /// A stopped instance started again.
    Start,
}

/// One boot of a worker, to Ready.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BootStatus {
    /// A launch or a start.
    pub kind: BootKind,
    /// When it began.
    pub started_at: Time,
    /// When the worker became Running; unset while it boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,
    /// Seconds from `startedAt` to `readyAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}
