//! Status: what the worker is, as observed and as changed by this reconcile.

use std::borrow::Cow;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{
    act::{Acted, Cloud},
    observe::Observed,
};
use crate::{
    cml::{CmlReport, TlsPolicy},
    controller::reasons,
    crd::{
        AllocatedUsage, BootKind, BootStatus, CertificateStatus, CertificateTrust, CmlStatus,
        InstanceStatus, UsageStatus, Worker, WorkerPhase, WorkerStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    phase_machine::{InstanceFacts, Plan},
    provider::Instance,
};

fn instance_status(
    i: &Instance,
    previous: Option<&InstanceStatus>,
    observed: &Observed,
) -> InstanceStatus {
    let (kind, region) = match &observed.provider {
        Some(chosen) => (Some(chosen.kind), chosen.region.clone()),
        None => (None, None),
    };
    InstanceStatus {
        id: i.id.clone(),
        provider: previous.and_then(|p| p.provider).or(kind),
        region: previous.and_then(|p| p.region.clone()).or(region),
        instance_type: Some(i.instance_type.clone()),
        availability_zone: i.availability_zone.clone(),
        private_ip: i.private_ip.clone(),
        public_ip: i.public_ip.clone(),
        image_id: i.image_id.clone(),
        // As the API server stores it, so an unchanged instance compares equal.
        launch_time: i
            .launch_time
            .and_then(|t| Timestamp::from_second(t.as_second()).ok())
            .map(Time),
        state: Some(i.state.as_str().to_owned()),
    }
}

/// The next status of `worker`: the old one with what this reconcile observed and did.
pub fn next(worker: &Worker, observed: &Observed, plan: &Plan, acted: &Acted) -> WorkerStatus {
    let no_status = WorkerStatus::default();
    let old = worker.status.as_ref().unwrap_or(&no_status);
    let phase = acted.cloud.phase(plan.phase);
    let mut s = old.clone();
    s.phase = Some(phase);
    s.observed_generation = worker.metadata.generation;
    s.drain_started_at = plan.drain_started_at.map(Time);
    if let Some(launch) = acted.cloud.launch() {
        s.launch = Some(launch.clone());
    }
    let launched_at = s
        .launch
        .as_ref()
        .and_then(|l| l.started_at.as_ref())
        .map(|t| t.0);
    s.boot = boot(old, phase, launched_at, observed.facts.now);
    let template_hash = template_hash(observed);
    record_instance(&mut s, old, observed, acted, template_hash);
    if let Some(cml) = cml_status(old, observed) {
        s.cml = Some(cml);
    }
    s.usage = usage(old, observed);
    s.license =
        super::license::status(old.license.as_ref(), observed, plan, acted.license.as_ref());

    let stamp = Stamp {
        generation: worker.metadata.generation,
        now: observed.facts.now,
    };
    let decided = [
        Some(launched(&s, acted)),
        ready(&s, old, observed, plan, acted),
        cml_degraded(observed),
        drifted(s.launch_spec_hash.as_deref(), template_hash),
        licensed(plan, acted),
    ];
    for condition in decided.into_iter().flatten() {
        conditions::set(&mut s.conditions, condition, stamp);
    }
    s
}

/// The boot in course or last done: a launch from its start, a start from the moment the
/// worker went Starting; stamped with its duration when the worker becomes Running.
fn boot(
    old: &WorkerStatus,
    phase: WorkerPhase,
    launched_at: Option<Timestamp>,
    now: Timestamp,
) -> Option<BootStatus> {
    let was = old.phase;
    let mut boot = old.boot.clone();
    match phase {
        WorkerPhase::Pending | WorkerPhase::Provisioning => {
            let fresh = boot.as_ref().is_none_or(|b| b.ready_at.is_some());
            if let Some(at) = launched_at.filter(|_| fresh && was != Some(WorkerPhase::Starting)) {
                boot = Some(BootStatus {
                    kind: BootKind::Launch,
                    started_at: Time(at),
                    ready_at: None,
                    seconds: None,
                });
            }
        }
        WorkerPhase::Starting if was != Some(WorkerPhase::Starting) => {
            boot = Some(BootStatus {
                kind: BootKind::Start,
                started_at: Time(now),
                ready_at: None,
                seconds: None,
            });
        }
        WorkerPhase::Running => {
            if let Some(b) = boot.as_mut().filter(|b| b.ready_at.is_none()) {
                b.ready_at = Some(Time(now));
                b.seconds = now.duration_since(b.started_at.0).as_secs().try_into().ok();
            }
        }
        _ => {}
    }
    boot
}

/// The launch spec hash the template has now.
fn template_hash(observed: &Observed) -> Option<&str> {
    observed
        .template
        .as_ref()
        .and_then(|t| t.status.as_ref())
        .and_then(|st| st.launch_spec_hash.as_deref())
}

/// The instance as launched now, or as the cloud last showed it.
fn record_instance(
    s: &mut WorkerStatus,
    old: &WorkerStatus,
    observed: &Observed,
    acted: &Acted,
    template_hash: Option<&str>,
) {
    if let Cloud::Launched { launched, .. } = &acted.cloud {
        s.instance = Some(instance_status(&launched.instance, None, observed));
        s.launch_spec_hash = template_hash.map(str::to_owned);
        return;
    }
    match &observed.facts.instance {
        InstanceFacts::Seen(i) => {
            s.instance = Some(instance_status(i, old.instance.as_ref(), observed))
        }
        InstanceFacts::Missing { .. } => {
            if let Some(rec) = s.instance.as_mut() {
                rec.state = Some("not-found".into());
                rec.public_ip = None;
            }
        }
        InstanceFacts::NotLaunched => {}
    }
}

/// What CML said in this reconcile's probe; `None` when it was not probed.
fn cml_status(old: &WorkerStatus, observed: &Observed) -> Option<CmlStatus> {
    let probe = observed.cml.as_ref()?;
    let endpoint = &probe.endpoint;
    let now = observed.facts.now;
    let no_cml = CmlStatus::default();
    let previous = old.cml.as_ref().unwrap_or(&no_cml);
    let mut probed = match &probe.answer {
        Ok(r) => CmlStatus {
            endpoint: Some(endpoint.clone()),
            version: r.version.clone(),
            ready: r.ready,
            licensed: r.licensed,
            labs: r.labs,
            running_nodes: r.running_nodes,
            last_probe_time: Some(Time(now)),
            certificate: certificate(previous.certificate.as_ref(), observed, r),
        },
        Err(_) => CmlStatus {
            endpoint: Some(endpoint.clone()),
            ready: false,
            last_probe_time: Some(Time(now)),
            ..previous.clone()
        },
    };
    // A probe that found nothing new is not worth a write: the time moves with the answer.
    if old.cml.is_some() {
        let probe_time = std::mem::replace(
            &mut probed.last_probe_time,
            previous.last_probe_time.clone(),
        );
        if probed != *previous {
            probed.last_probe_time = probe_time;
        }
    }
    Some(probed)
}

/// How CML's certificate was trusted in a probe that answered, and the one it presented: at
/// first use, the certificate pinned from now on.
fn certificate(
    previous: Option<&CertificateStatus>,
    observed: &Observed,
    report: &CmlReport,
) -> Option<CertificateStatus> {
    let Some(target) = observed.cml_target() else {
        return previous.cloned();
    };
    let trust = match &target.tls {
        TlsPolicy::Pinned(_) => CertificateTrust::Pinned,
        TlsPolicy::Ca(_) => CertificateTrust::CaVerified,
        TlsPolicy::SkipVerify => CertificateTrust::Unverified,
    };
    let instance_id = match &observed.facts.instance {
        InstanceFacts::Seen(i) => Some(i.id.clone()),
        _ => None,
    };
    Some(CertificateStatus {
        trust,
        sha256: report.certificate.map(|f| f.to_string()),
        instance_id,
    })
}

/// `Launched`: the instance, or why there is none.
fn launched(s: &WorkerStatus, acted: &Acted) -> NewCondition {
    let last_error = s.launch.as_ref().and_then(|l| l.last_error.as_ref());
    if let (None, Cloud::Capped(why)) = (&s.instance, &acted.cloud) {
        return NewCondition::new(
            ConditionType::Launched,
            false,
            reasons::INSTANCE_CAP_REACHED,
            why.clone(),
        );
    }
    let (status, reason, message) = match (&s.instance, last_error) {
        (Some(i), _) => (true, reasons::LAUNCHED, format!("instance {}", i.id)),
        (None, Some(err)) => (false, reasons::LAUNCH_FAILED, err.clone()),
        (None, None) => (false, reasons::NOT_LAUNCHED, "no instance yet".to_owned()),
    };
    NewCondition::new(ConditionType::Launched, status, reason, message)
}

/// `Ready`: true only while Running with CML ready; otherwise the most telling reason why not.
/// `None` leaves a not-ready condition as it is (its reason still holds).
fn ready(
    s: &WorkerStatus,
    old: &WorkerStatus,
    observed: &Observed,
    plan: &Plan,
    acted: &Acted,
) -> Option<NewCondition> {
    let phase = s.phase.unwrap_or(plan.phase);
    let not_ready = |reason: Cow<'static, str>, message: String| {
        Some(NewCondition::new(
            ConditionType::Ready,
            false,
            reason,
            message,
        ))
    };
    let cml_ready = s.cml.as_ref().is_some_and(|c| c.ready) && observed.cml_report().is_some();
    if let Some(e) = acted.cloud.error() {
        return not_ready(e.category().into(), e.to_string());
    }
    if phase == WorkerPhase::Running && cml_ready {
        let version = s.cml.as_ref().and_then(|c| c.version.as_deref());
        let message = format!("CML {} is ready", version.unwrap_or_default());
        return Some(NewCondition::new(
            ConditionType::Ready,
            true,
            reasons::CML_READY,
            message,
        ));
    }
    if let Some((reason, message)) = &plan.event {
        return not_ready(reason.as_str().into(), message.clone());
    }
    if let Some(e) = observed.cml_error() {
        return not_ready(e.kind.as_str().into(), e.message.clone());
    }
    if phase == WorkerPhase::Draining
        && let Some(waiting) = &plan.waiting
    {
        return not_ready(reasons::DRAINING.into(), waiting.clone());
    }
    if matches!(phase, WorkerPhase::Provisioning | WorkerPhase::Starting)
        && let Some(note) = plan.license.note.as_ref().filter(|n| !n.licensed)
    {
        return not_ready(note.reason.as_str().into(), note.message.clone());
    }
    let stale = old.phase != Some(phase)
        || conditions::is_true(&s.conditions, ConditionType::Ready)
        || conditions::find(&s.conditions, ConditionType::Ready).is_none();
    stale.then(|| {
        let (reason, message) = not_ready_in(phase);
        NewCondition::new(ConditionType::Ready, false, reason, message)
    })
}

/// `CmlDegraded`: what a ready CML could not tell, so that those fields read as unknown.
fn cml_degraded(observed: &Observed) -> Option<NewCondition> {
    let report = observed.cml_report().filter(|r| r.ready)?;
    let (degraded, reason, message): (bool, Cow<'static, str>, String) =
        match report.failures.as_slice() {
            [] => (
                false,
                reasons::ALL_ANSWERED.into(),
                "every CML endpoint answered".to_owned(),
            ),
            [one] => (true, one.reason().into(), one.to_string()),
            several => (
                true,
                reasons::SEVERAL_ENDPOINTS.into(),
                several
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
    Some(NewCondition::new(
        ConditionType::CmlDegraded,
        degraded,
        reason,
        message,
    ))
}

/// `Licensed`: registered and authorized, or why not; absent for a worker whose template does
/// not manage licenses and that holds no seat.
fn licensed(plan: &Plan, acted: &Acted) -> Option<NewCondition> {
    let note = super::license::note(plan, acted.license.as_ref())?;
    Some(NewCondition::new(
        ConditionType::Licensed,
        note.licensed,
        note.reason.as_str(),
        note.message,
    ))
}

/// `Drifted`: whether the instance was launched from the template's current launch spec.
fn drifted(mine: Option<&str>, theirs: Option<&str>) -> Option<NewCondition> {
    let (mine, theirs) = (mine?, theirs?);
    Some(if mine != theirs {
        NewCondition::new(
            ConditionType::Drifted,
            true,
            reasons::LAUNCH_SPEC_CHANGED,
            format!("launched with spec {mine}; the template now has {theirs}"),
        )
    } else {
        NewCondition::new(
            ConditionType::Drifted,
            false,
            reasons::UP_TO_DATE,
            "launched with the template's current spec",
        )
    })
}

/// Usage as last observed: the Control Plane API's counts (absent when unknown) and the time the
/// worker was last seen busy by either source.
fn usage(old: &WorkerStatus, observed: &Observed) -> Option<UsageStatus> {
    let no_usage = UsageStatus::default();
    let previous = old.usage.as_ref().unwrap_or(&no_usage);
    let mut u = previous.clone();
    match &observed.usage {
        Some(Ok(Some(c))) => {
            u.running_instances = Some(c.running_instances);
            u.scheduled_instances = Some(c.scheduled_instances);
            u.allocated = Some(AllocatedUsage {
                cpu_cores: c.allocated.cpu_cores,
                memory_gb: c.allocated.memory_gb,
                storage_gb: c.allocated.storage_gb,
                nodes: c.allocated.nodes,
            });
            u.next_timeslot_start = c
                .next_timeslot_start
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(Time);
        }
        Some(_) => {
            u.running_instances = None;
            u.scheduled_instances = None;
            u.allocated = None;
            u.next_timeslot_start = None;
        }
        None => {}
    }
    let nodes = observed.cml_report().and_then(|r| r.running_nodes);
    let busy = |nodes: Option<u32>, u: &UsageStatus| {
        nodes.is_some_and(|n| n > 0)
            || u.running_instances.is_some_and(|n| n > 0)
            || u.scheduled_instances.is_some_and(|n| n > 0)
    };
    let was_busy = busy(old.cml.as_ref().and_then(|c| c.running_nodes), previous);
    // The idle clock moves when activity starts and when it ends, not on every busy probe: a
    // steady fleet makes no writes, and an idle worker's clock starts when it was last seen busy.
    let is_busy = busy(nodes, &u);
    if is_busy != was_busy || (is_busy && u.last_activity_time.is_none()) {
        u.last_activity_time = Some(Time(observed.facts.now));
    }
    (u != UsageStatus::default()).then_some(u)
}

fn not_ready_in(phase: WorkerPhase) -> (&'static str, &'static str) {
    match phase {
        WorkerPhase::Pending => (reasons::PENDING, "no instance yet"),
        WorkerPhase::Provisioning => (reasons::PROVISIONING, "waiting for the instance and CML"),
        WorkerPhase::Running => (reasons::CML_NOT_READY, "CML does not report ready"),
        WorkerPhase::Draining => (reasons::DRAINING, "taking no new labs"),
        WorkerPhase::Stopping => (reasons::STOPPING, "instance stopping"),
        WorkerPhase::Stopped => (reasons::STOPPED, "instance stopped"),
        WorkerPhase::Starting => (reasons::STARTING, "instance starting"),
        WorkerPhase::Terminating => (reasons::TERMINATING, "instance terminating"),
        WorkerPhase::Failed => (reasons::FAILED, "the worker failed"),
    }
}

/// Names the worker for logs.
pub fn name(worker: &Worker) -> String {
    format!(
        "{}/{}",
        worker.namespace().unwrap_or_default(),
        worker.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cml::CmlErrorKind,
        controller::{error::Error, worker::fixtures::*},
        licensing::{LicenseNote, LicenseReason},
        phase_machine::Reason,
    };

    /// CML answered ready in this probe, and the status says so.
    fn cml_ready(c: &mut Reconcile) {
        c.observed.cml = answered(ready_cml());
        c.next.cml = Some(CmlStatus {
            ready: true,
            version: Some("2.9.0".into()),
            ..CmlStatus::default()
        });
    }

    fn note(c: &mut Reconcile, licensed: bool, reason: LicenseReason, message: &str) {
        c.plan.license.note = Some(LicenseNote {
            licensed,
            reason,
            message: message.into(),
        });
    }

    #[test]
    fn ready_is_true_only_when_running_with_cml_ready_else_the_most_telling_reason() {
        type Row = (
            &'static str,
            fn(&mut Reconcile),
            Option<(bool, &'static str, &'static str)>,
        );
        let rows: &[Row] = &[
            (
                "nothing new leaves a not-ready condition as it is",
                |_| {},
                None,
            ),
            (
                "a failed step says why first, even with CML ready",
                |c| {
                    cml_ready(c);
                    c.acted = acted(Cloud::Failed(Error::NotOwned("not mine".into())));
                },
                Some((false, "InstanceNotOwned", "not mine")),
            ),
            (
                "running with CML ready is ready",
                cml_ready,
                Some((true, reasons::CML_READY, "CML 2.9.0 is ready")),
            ),
            (
                "a stored ready CML is not enough when this probe failed",
                |c| {
                    cml_ready(c);
                    c.observed.cml = unanswered(CmlErrorKind::Timeout);
                },
                Some((false, "CmlTimeout", "no answer")),
            ),
            (
                "CML ready outside Running is not ready",
                |c| {
                    cml_ready(c);
                    c.moves_to(WorkerPhase::Draining);
                },
                Some((false, reasons::DRAINING, "taking no new labs")),
            ),
            (
                "the plan's transition says why, before CML's failure",
                |c| {
                    c.observed.cml = unanswered(CmlErrorKind::Unreachable);
                    c.plan.event = Some((Reason::ReadyTimeout, "not ready in 30m".into()));
                },
                Some((false, "ReadyTimeout", "not ready in 30m")),
            ),
            (
                "a CML failure says why",
                |c| c.observed.cml = unanswered(CmlErrorKind::Unreachable),
                Some((false, "CmlUnreachable", "no answer")),
            ),
            (
                "a drain says what it waits for",
                |c| {
                    c.stays_in(WorkerPhase::Draining);
                    c.plan.waiting = Some("2 labs still run".into());
                },
                Some((false, reasons::DRAINING, "2 labs still run")),
            ),
            (
                "a booting worker not yet licensed says why",
                |c| {
                    c.stays_in(WorkerPhase::Starting);
                    note(
                        c,
                        false,
                        LicenseReason::Registering,
                        "registration requested",
                    );
                },
                Some((false, "LicenseRegistering", "registration requested")),
            ),
            (
                "a booting worker already licensed is held back by nothing new",
                |c| {
                    c.stays_in(WorkerPhase::Provisioning);
                    note(c, true, LicenseReason::Registered, "registered");
                },
                None,
            ),
            (
                "licensing outside a boot is not Ready's business",
                |c| {
                    note(
                        c,
                        false,
                        LicenseReason::Registering,
                        "registration requested",
                    )
                },
                None,
            ),
            (
                "a new phase says its own reason",
                |c| {
                    c.old.phase = Some(WorkerPhase::Stopping);
                    c.moves_to(WorkerPhase::Stopped);
                },
                Some((false, reasons::STOPPED, "instance stopped")),
            ),
            (
                "a Ready condition that was true is replaced",
                |c| condition(&mut c.next, ConditionType::Ready, true, reasons::CML_READY),
                Some((false, reasons::CML_NOT_READY, "CML does not report ready")),
            ),
            (
                "a worker without a Ready condition gets one",
                |c| {
                    c.next.conditions.clear();
                    c.stays_in(WorkerPhase::Pending);
                },
                Some((false, reasons::PENDING, "no instance yet")),
            ),
        ];
        for (name, arrange, expected) in rows {
            let mut c = Reconcile::running();
            arrange(&mut c);
            let got = ready(&c.next, &c.old, &c.observed, &c.plan, &c.acted);
            let got = got
                .as_ref()
                .map(|n| (n.status, n.reason.as_ref(), n.message.as_str()));
            assert_eq!(got, *expected, "{name}");
        }
    }

    /// Walks a worker through `phases` (phase, minute), returning its boot after each.
    fn walk(phases: &[(WorkerPhase, i64)]) -> Vec<Option<BootStatus>> {
        let mut status = WorkerStatus::default();
        phases
            .iter()
            .map(|(phase, minute)| {
                status.boot = boot(&status, *phase, Some(at(0)), at(*minute));
                status.phase = Some(*phase);
                status.boot.clone()
            })
            .collect()
    }

    #[test]
    fn a_launch_and_a_later_start_are_each_timed_to_running() {
        use WorkerPhase::*;
        let boots = walk(&[
            (Provisioning, 1),
            (Running, 9),
            (Draining, 30),
            (Stopped, 40),
            (Starting, 50),
            (Running, 54),
            (Running, 70),
        ]);
        let launch = boots[1].as_ref().expect("launch");
        assert_eq!(
            (launch.kind, launch.seconds),
            (BootKind::Launch, Some(9 * 60))
        );
        assert_eq!(boots[3], boots[1], "kept while stopped");
        let start = boots[5].as_ref().expect("start");
        assert_eq!((start.kind, start.seconds), (BootKind::Start, Some(4 * 60)));
        assert_eq!(boots[6], boots[5], "timed once");
    }
}
