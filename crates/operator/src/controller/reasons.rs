//! Every condition and Event reason the controller writes. The plain names are here, used by the
//! code that writes them; the rest are built from enums (the phase machine's reasons, error
//! categories, CML and remote failure kinds). `docs/operations.md` explains each one, and a test
//! checks that none is missing there.

use crate::{
    cml::{CmlEndpoint, CmlErrorKind},
    controller::error::Category,
    licensing::LicenseReason,
    mirror::RemoteName,
    phase_machine::Reason,
    remote::RemoteErrorKind,
};

/// Declares each plain reason as a constant and lists them all in [`PLAIN`], from one list.
macro_rules! plain_reasons {
    ($($name:ident = $value:literal,)*) => {
        $(pub const $name: &str = $value;)*

        /// The plain names above.
        pub const PLAIN: &[&str] = &[$($name),*];
    };
}

plain_reasons! {
    // Worker `Launched`.
    LAUNCHED = "Launched",
    LAUNCH_FAILED = "LaunchFailed",
    NOT_LAUNCHED = "NotLaunched",
    INSTANCE_CAP_REACHED = "InstanceCapReached",
    ADOPTED = "Adopted",
    // Worker `Ready`: ready, or not ready because of the phase.
    CML_READY = "CmlReady",
    PENDING = "Pending",
    PROVISIONING = "Provisioning",
    CML_NOT_READY = "CmlNotReady",
    DRAINING = "Draining",
    STOPPING = "Stopping",
    STOPPED = "Stopped",
    STARTING = "Starting",
    TERMINATING = "Terminating",
    FAILED = "Failed",
    // Worker `CmlDegraded` (besides endpoint + kind), `Drifted`, `Synced` (besides remote + kind).
    ALL_ANSWERED = "AllAnswered",
    SEVERAL_ENDPOINTS = "SeveralEndpoints",
    LAUNCH_SPEC_CHANGED = "LaunchSpecChanged",
    UP_TO_DATE = "UpToDate",
    SYNCED = "Synced",
    // WorkerTemplate `Ready`, `ScalingLimited` and the autoscaler's Events.
    IMAGE_RESOLVED = "ImageResolved",
    IMAGE_UNRESOLVED = "ImageUnresolved",
    MAX_WORKERS_REACHED = "MaxWorkersReached",
    DEMAND_UNKNOWN = "DemandUnknown",
    WITHIN_LIMITS = "WithinLimits",
    UNPLACEABLE = "Unplaceable",
    SCHEDULE_INVALID = "ScheduleInvalid",
    SCALED_UP = "ScaledUp",
    WORKER_STARTED = "WorkerStarted",
    DRAIN_CANCELLED = "DrainCancelled",
    SCALED_DOWN = "ScaledDown",
    WORKER_STOPPED = "WorkerStopped",
    WORKER_DELETED = "WorkerDeleted",
    // Worker licensing Events besides the `Licensed` condition's reasons.
    LICENSE_DEREGISTERED = "LicenseDeregistered",
    // Worker Event: CML's certificate is not checked (`insecureSkipTlsVerify: true`).
    CML_TLS_UNVERIFIED = "CmlTlsUnverified",
}

/// Every whole reason: the plain ones, the phase machine's, the error categories and the CML
/// probe's failures.
pub fn whole() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = PLAIN.to_vec();
    out.extend(Reason::ALL.iter().map(|r| r.as_str()));
    out.extend(LicenseReason::ALL.iter().map(|r| r.as_str()));
    out.extend(Category::ALL.iter().map(|c| c.as_str()));
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

/// A `Synced` reason for a remote that does not hold the record, e.g. `EtcdTimeout`.
pub fn remote_failing(remote: RemoteName, kind: RemoteErrorKind) -> String {
    format!("{}{}", remote.as_str(), kind.as_str())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Where an Event or condition reason is given: the call, and which argument is the reason.
    const REASON_ARGUMENT: [(&str, usize); 4] = [
        ("EventSpec::normal(", 0),
        ("EventSpec::warning(", 0),
        ("NewCondition::new(", 2),
        ("reason: ", 0),
    ];

    /// The product code of every source file under `dir` (test modules cut off), by path.
    fn product_sources(dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "tests" {
                    product_sources(&path, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                let text = std::fs::read_to_string(&path).expect("read source");
                let product = text.split("#[cfg(test)]").next().unwrap_or_default();
                out.push((path.display().to_string(), product.to_owned()));
            }
        }
    }

    /// The arguments of the call whose `(` ends just before `rest`, up to its `)`; for a field
    /// (`reason: `), the expression up to the next `,` or `}`.
    fn arguments(rest: &str) -> Vec<String> {
        let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
        let mut args = vec![String::new()];
        for c in rest.chars() {
            if quoted {
                quoted = c != '"' || escaped;
                escaped = c == '\\' && !escaped;
            } else {
                match c {
                    '"' => quoted = true,
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' if depth == 0 => break,
                    ')' | ']' | '}' => depth -= 1,
                    ',' if depth == 0 => {
                        args.push(String::new());
                        continue;
                    }
                    _ => {}
                }
            }
            if let Some(last) = args.last_mut() {
                last.push(c);
            }
        }
        args.into_iter().map(|a| a.trim().to_owned()).collect()
    }

    /// A reason written in place: a string literal, or one put together there.
    fn written_in_place(reason: &str) -> bool {
        reason.starts_with('"') || reason.starts_with("format!")
    }

    fn reasons_written_in_place(file: &str, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (call, index) in REASON_ARGUMENT {
            for (at, _) in text.match_indices(call) {
                let args = arguments(&text[at + call.len()..]);
                if let Some(reason) = args.get(index).filter(|r| written_in_place(r)) {
                    found.push(format!("{file}: {call}{reason}"));
                }
            }
        }
        found
    }

    #[test]
    fn every_event_and_condition_reason_comes_from_the_reason_table() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut sources = Vec::new();
        product_sources(&src, &mut sources);
        assert!(
            sources.len() > 50,
            "too few sources read: {}",
            sources.len()
        );
        let table = src
            .join("controller")
            .join("reasons.rs")
            .display()
            .to_string();
        let bypassing: Vec<String> = sources
            .iter()
            .filter(|(file, _)| *file != table)
            .flat_map(|(file, text)| reasons_written_in_place(file, text))
            .collect();
        assert!(
            bypassing.is_empty(),
            "reasons not from controller::reasons: {bypassing:#?}"
        );
    }

    #[test]
    fn a_reason_written_in_place_is_found() {
        let code = r#"EventSpec::warning("CmlTlsUnverified", "ProbeCml", note)
            NewCondition::new(ConditionType::Synced, false, format!("{a}{b}"), m)
            NewCondition::new(ConditionType::Ready, true, reasons::CML_READY, f(x, y))
            EventSpec::normal(reason.as_str(), "Reconcile", message)"#;
        let found = reasons_written_in_place("f.rs", code);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("CmlTlsUnverified") && found[1].contains("format!"));
    }
}
