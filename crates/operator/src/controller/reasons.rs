//! Every condition and Event reason the controller writes. The plain names are here, used by the
//! code that writes them; the rest are built from enums (the phase machine's reasons, error
//! categories, CML and remote failure kinds). `docs/operations.md` explains each one, and a test
//! checks that none is missing there.

use crate::{
    cml::{CmlEndpoint, CmlErrorKind},
    controller::error::CATEGORIES,
    licensing::LicenseReason,
    mirror::RemoteName,
    phase_machine::Reason,
    remote::RemoteErrorKind,
};

// Worker `Launched`.
pub const LAUNCHED: &str = "Launched";
pub const LAUNCH_FAILED: &str = "LaunchFailed";
pub const NOT_LAUNCHED: &str = "NotLaunched";
pub const INSTANCE_CAP_REACHED: &str = "InstanceCapReached";
pub const ADOPTED: &str = "Adopted";
// Worker `Ready`: ready, or not ready because of the phase.
pub const CML_READY: &str = "CmlReady";
pub const PENDING: &str = "Pending";
pub const PROVISIONING: &str = "Provisioning";
pub const CML_NOT_READY: &str = "CmlNotReady";
pub const DRAINING: &str = "Draining";
pub const STOPPING: &str = "Stopping";
pub const STOPPED: &str = "Stopped";
pub const STARTING: &str = "Starting";
pub const TERMINATING: &str = "Terminating";
pub const FAILED: &str = "Failed";
// Worker `CmlDegraded` (besides endpoint + kind), `Drifted`, `Synced` (besides remote + kind).
pub const ALL_ANSWERED: &str = "AllAnswered";
pub const SEVERAL_ENDPOINTS: &str = "SeveralEndpoints";
pub const LAUNCH_SPEC_CHANGED: &str = "LaunchSpecChanged";
pub const UP_TO_DATE: &str = "UpToDate";
pub const SYNCED: &str = "Synced";
// WorkerTemplate `Ready`, `ScalingLimited` and the autoscaler's Events.
pub const IMAGE_RESOLVED: &str = "ImageResolved";
pub const IMAGE_UNRESOLVED: &str = "ImageUnresolved";
pub const MAX_WORKERS_REACHED: &str = "MaxWorkersReached";
pub const DEMAND_UNKNOWN: &str = "DemandUnknown";
pub const WITHIN_LIMITS: &str = "WithinLimits";
pub const UNPLACEABLE: &str = "Unplaceable";
pub const SCHEDULE_INVALID: &str = "ScheduleInvalid";
pub const SCALED_UP: &str = "ScaledUp";
pub const WORKER_STARTED: &str = "WorkerStarted";
pub const DRAIN_CANCELLED: &str = "DrainCancelled";
pub const SCALED_DOWN: &str = "ScaledDown";
pub const WORKER_STOPPED: &str = "WorkerStopped";
pub const WORKER_DELETED: &str = "WorkerDeleted";
// Worker licensing Events besides the `Licensed` condition's reasons.
pub const LICENSE_DEREGISTERED: &str = "LicenseDeregistered";

/// The plain names above.
pub const PLAIN: [&str; 34] = [
    LAUNCHED,
    LAUNCH_FAILED,
    NOT_LAUNCHED,
    INSTANCE_CAP_REACHED,
    ADOPTED,
    CML_READY,
    PENDING,
    PROVISIONING,
    CML_NOT_READY,
    DRAINING,
    STOPPING,
    STOPPED,
    STARTING,
    TERMINATING,
    FAILED,
    ALL_ANSWERED,
    SEVERAL_ENDPOINTS,
    LAUNCH_SPEC_CHANGED,
    UP_TO_DATE,
    SYNCED,
    IMAGE_RESOLVED,
    IMAGE_UNRESOLVED,
    MAX_WORKERS_REACHED,
    DEMAND_UNKNOWN,
    WITHIN_LIMITS,
    UNPLACEABLE,
    SCHEDULE_INVALID,
    SCALED_UP,
    WORKER_STARTED,
    DRAIN_CANCELLED,
    SCALED_DOWN,
    WORKER_STOPPED,
    WORKER_DELETED,
    LICENSE_DEREGISTERED,
];

/// Every whole reason: the plain ones, the phase machine's, the error categories and the CML
/// probe's failures.
pub fn whole() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = PLAIN.to_vec();
    out.extend(Reason::ALL.iter().map(|r| r.as_str()));
    out.extend(LicenseReason::ALL.iter().map(|r| r.as_str()));
    out.extend(CATEGORIES);
    out.extend(
        CmlErrorKind::ALL
            .iter()
            .filter(|k| **k != CmlErrorKind::Incomplete)
            .map(|k| k.as_str()),
    );
    out.sort_unstable();
    out.dedup();
    out
}

/// The parts of reasons built from two: `CmlDegraded` is endpoint + kind (`LicensingForbidden`),
/// `Synced` is remote + kind (`EtcdTimeout`).
pub fn parts() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = CmlEndpoint::ALL.iter().map(|e| e.reason_prefix()).collect();
    out.extend(CmlErrorKind::ALL.iter().map(|k| k.label()));
    out.extend(RemoteName::ALL.iter().map(|r| r.as_str()));
    out.extend(RemoteErrorKind::ALL.iter().map(|k| k.as_str()));
    out.sort_unstable();
    out.dedup();
    out
}
