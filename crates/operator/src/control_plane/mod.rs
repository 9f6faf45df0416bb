//! The lab platform's Control Plane API, as documented in `api/control-plane.openapi.yaml`: the
//! wire types (snake_case, times as RFC 3339 strings) and an HTTP client.

mod client;
pub mod flags;

use serde::{Deserialize, Serialize};

pub use client::{ControlPlaneClient, ControlPlaneConfig};

/// Lab instance states the controller asks for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum LabInstanceState {
    Pending,
    Scheduled,
}

impl LabInstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            LabInstanceState::Pending => "PENDING",
            LabInstanceState::Scheduled => "SCHEDULED",
        }
    }
}

/// A lab (lablet) instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LabInstance {
    pub id: String,
    pub definition_id: String,
    pub state: LabInstanceState,
    /// The worker it is placed on; `None` while unplaced.
    pub worker_id: Option<String>,
    pub timeslot_start: String,
    pub timeslot_end: String,
}

pub use ccm_core::License;

impl From<crate::crd::LicenseType> for License {
    fn from(l: crate::crd::LicenseType) -> License {
        match l {
            crate::crd::LicenseType::Personal => License::Personal,
            crate::crd::LicenseType::Enterprise => License::Enterprise,
            crate::crd::LicenseType::Evaluation => License::Evaluation,
        }
    }
}

/// What a whole lab needs on one worker. Memory and storage in decimal GB, as the contract
/// says: the planner takes them in GiB (`crate::units`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct ResourceRequirements {
    pub cpu_cores: f64,
    pub memory_gb: f64,
    pub storage_gb: f64,
}

/// A lab definition version (immutable).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Definition {
    pub id: String,
    pub name: String,
    pub version: String,
    pub resource_requirements: ResourceRequirements,
    pub license_affinity: Vec<License>,
    pub node_count: u32,
}

/// What the scheduler has allocated on a worker (memory and storage in decimal GB).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Allocated {
    pub cpu_cores: f64,
    pub memory_gb: f64,
    pub storage_gb: f64,
    pub nodes: u32,
}

/// A worker's usage as the platform sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WorkerCapacity {
    pub worker_id: String,
    pub allocated: Allocated,
    pub running_instances: u32,
    pub scheduled_instances: u32,
    pub next_timeslot_start: Option<String>,
}

/// A worker's declared capacity: the template's GiB as whole decimal GB, rounded down.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordCapacity {
    pub cpu_cores: u32,
    pub memory_gb: u32,
    pub storage_gb: u32,
    pub max_nodes: u32,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordPortRange {
    pub start: u16,
    pub end: u16,
}

/// The worker record the controller keeps in the Control Plane API and in etcd.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkerRecord {
    /// The Worker's UID.
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub template: String,
    pub license_type: License,
    /// The Worker's phase, spelled as in the CRD.
    pub phase: String,
    /// False in every phase but Running: a draining worker gets no new labs.
    pub accepting_assignments: bool,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub cml_endpoint: Option<String>,
    pub cml_version: Option<String>,
    pub capacity: RecordCapacity,
    pub port_range: RecordPortRange,
    pub observed_generation: Option<i64>,
    /// When the controller pushed this version of the record.
    pub updated_at: String,
}

/// The part of a record the scheduler watches in etcd (`/ccm/workers/{id}/capacity`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CapacityRecord {
    pub license_type: License,
    pub capacity: RecordCapacity,
    pub accepting_assignments: bool,
}

impl From<&WorkerRecord> for CapacityRecord {
    fn from(r: &WorkerRecord) -> CapacityRecord {
        CapacityRecord {
            license_type: r.license_type,
            capacity: r.capacity,
            accepting_assignments: r.accepting_assignments,
        }
    }
}

/// One autoscaler decision, for the platform's audit trail.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScalingEvent {
    /// Stable idempotency key.
    pub id: String,
    pub action: String,
    pub worker: Option<String>,
    pub template: String,
    pub reason: String,
    pub triggered_by: String,
    pub time: String,
}
