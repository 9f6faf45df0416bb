//! The Events of one Worker reconcile: decided from what it observed, planned, did and will
//! write, then published. Each marks a change: a transition, a launch, a new kind of failure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tracing::{info, warn};

use super::{
    act::{Acted, Cloud},
    observe::Observed,
    status,
};
use crate::{
    controller::{events::EventSpec, reasons, worker::context::WorkerContext},
    crd::{
        CertificateTrust, Worker, WorkerStatus,
        conditions::{self, ConditionType},
    },
    licensing::LicenseReason,
    phase_machine::{Plan, Reason},
};

/// The Events this reconcile is worth, in the order they happened.
pub(super) fn decide(
    worker: &Worker,
    observed: &Observed,
    plan: &Plan,
    acted: &Acted,
    next: &WorkerStatus,
) -> Vec<EventSpec> {
    let launch = launch(worker, &acted.cloud);
    let mut events: Vec<EventSpec> = transition(worker, plan, launch.is_some())
        .into_iter()
        .collect();
    events.extend(cml_failure(worker, observed));
    events.extend(unverified_tls(worker, next));
    events.extend(newly_degraded(worker, next));
    events.extend(license_trouble(worker, next));
    events.extend(super::license::seat_events(
        worker.status.as_ref().and_then(|s| s.license.as_ref()),
        next.license.as_ref(),
    ));
    events.extend(launch);
    if let Cloud::Failed(e) = &acted.cloud {
        events.push(EventSpec::warning(e.category(), "Reconcile", e.to_string()));
    }
    events
}

/// Publishes `events` on `worker`.
pub(super) async fn publish(ctx: &WorkerContext, worker: &Worker, events: Vec<EventSpec>) {
    for event in events {
        ctx.event(worker, event).await;
    }
}

/// The phase machine's transition; a launch's own Event (Launched, Adopted, LaunchFailed,
/// InstanceCapReached) says more than `Launching` would.
fn transition(worker: &Worker, plan: &Plan, launch_said: bool) -> Option<EventSpec> {
    let said_by_launch = |r: &Reason| *r == Reason::Launching && launch_said;
    let (reason, message) = plan.event.as_ref().filter(|(r, _)| !said_by_launch(r))?;
    info!(worker = %status::name(worker), reason = reason.as_str(), %message, "transition");
    Some(EventSpec {
        warning: reason.is_warning(),
        reason: reason.as_str().into(),
        action: "Reconcile",
        note: message.clone(),
    })
}

/// The launch's own Event: the instance launched or adopted, the launch failed, or it began to
/// wait for room under `--max-instances` (once, not on every look).
fn launch(worker: &Worker, cloud: &Cloud) -> Option<EventSpec> {
    match cloud {
        Cloud::Launched { launched, .. } => {
            let (reason, verb) = if launched.adopted {
                (reasons::ADOPTED, "adopted")
            } else {
                (reasons::LAUNCHED, "launched")
            };
            let i = &launched.instance;
            let message = format!(
                "{verb} instance {} ({}) in {}",
                i.id,
                i.instance_type,
                i.availability_zone.as_deref().unwrap_or("an unknown zone")
            );
            Some(EventSpec::normal(reason, "Reconcile", message))
        }
        Cloud::LaunchFailed { launch, .. } => Some(EventSpec::warning(
            reasons::LAUNCH_FAILED,
            "Reconcile",
            launch.last_error.clone().unwrap_or_default(),
        )),
        Cloud::Capped(why) => {
            let said = worker
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, ConditionType::Launched))
                .is_some_and(|c| c.reason == reasons::INSTANCE_CAP_REACHED);
            (!said).then(|| {
                EventSpec::warning(reasons::INSTANCE_CAP_REACHED, "Reconcile", why.clone())
            })
        }
        Cloud::Done | Cloud::Failed(_) => None,
    }
}

/// A CML failure shows in the Ready condition; an Event marks each new kind of failure.
fn cml_failure(worker: &Worker, observed: &Observed) -> Option<EventSpec> {
    let e = observed.cml_error()?;
    let before = worker
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, ConditionType::Ready))
        .map(|c| c.reason.as_str());
    (before != Some(e.kind.as_str()))
        .then(|| EventSpec::warning(e.kind.as_str(), "ProbeCml", e.message.clone()))
}

/// `insecureSkipTlsVerify: true` is an explicit opt-in, and a risky one: said once per worker.
fn unverified_tls(worker: &Worker, next: &WorkerStatus) -> Option<EventSpec> {
    let trust = |s: Option<&WorkerStatus>| {
        s.and_then(|s| s.cml.as_ref())
            .and_then(|c| c.certificate.as_ref())
            .map(|c| c.trust)
    };
    let now = trust(Some(next))?;
    (now == CertificateTrust::Unverified
        && trust(worker.status.as_ref()) != Some(CertificateTrust::Unverified))
    .then(|| {
        EventSpec::warning(
            reasons::CML_TLS_UNVERIFIED,
            "ProbeCml",
            "insecureSkipTlsVerify is true: CML's certificate is not checked, so the CML \
             credentials go to whatever answers at the worker's address"
                .to_owned(),
        )
    })
}

/// A CML endpoint that stops answering, or a remote that does not hold the record: an Event
/// marks each new kind.
fn newly_degraded(worker: &Worker, next: &WorkerStatus) -> Vec<EventSpec> {
    [
        (ConditionType::CmlDegraded, "True", "ProbeCml"),
        (ConditionType::Synced, "False", "Sync"),
    ]
    .into_iter()
    .filter_map(|(type_, failing, action)| {
        let c = newly_failing(worker.status.as_ref(), next, type_, failing)?;
        warn!(worker = %status::name(worker), condition = type_.as_str(), reason = %c.reason, message = %c.message, "degraded");
        Some(EventSpec::warning(c.reason.clone(), action, c.message.clone()))
    })
    .collect()
}

/// A licensing failure worth a person's attention, once per new kind: CML's registration
/// failure, a refusal, or no seat left in the budget.
fn license_trouble(worker: &Worker, next: &WorkerStatus) -> Option<EventSpec> {
    let c = newly_failing(
        worker.status.as_ref(),
        next,
        ConditionType::Licensed,
        "False",
    )?;
    let warned = [
        LicenseReason::RegistrationFailed,
        LicenseReason::RegistrationRefused,
        LicenseReason::SeatsExhausted,
    ];
    warned
        .iter()
        .any(|r| r.as_str() == c.reason)
        .then(|| EventSpec::warning(c.reason.clone(), "License", c.message.clone()))
}

/// The condition `type_` of `next` when it is in its `failing` status with a reason it did not
/// have before: a new kind of failure, worth one Event.
fn newly_failing<'a>(
    old: Option<&WorkerStatus>,
    next: &'a WorkerStatus,
    type_: ConditionType,
    failing: &str,
) -> Option<&'a Condition> {
    let now = conditions::find(&next.conditions, type_).filter(|c| c.status == failing)?;
    let before = old
        .and_then(|s| conditions::find(&s.conditions, type_))
        .filter(|c| c.status == failing)
        .map(|c| c.reason.as_str());
    (before != Some(now.reason.as_str())).then_some(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cml::CmlErrorKind,
        controller::{error::Error, worker::fixtures::*},
        crd::{CertificateStatus, CmlStatus, LaunchStatus, LicenseStatus, SeatState},
    };

    fn trusted(trust: CertificateTrust) -> Option<CmlStatus> {
        Some(CmlStatus {
            certificate: Some(CertificateStatus {
                trust,
                sha256: None,
                instance_id: None,
            }),
            ..CmlStatus::default()
        })
    }

    fn seat(seat: SeatState) -> Option<LicenseStatus> {
        Some(LicenseStatus {
            seat,
            product: Some("CML_Enterprise".into()),
            ..LicenseStatus::default()
        })
    }

    fn launch_failed(why: &str) -> Cloud {
        Cloud::LaunchFailed {
            launch: LaunchStatus {
                last_error: Some(why.into()),
                ..LaunchStatus::default()
            },
            error: Error::Invalid(why.into()),
        }
    }

    /// An Event as the table spells it: warning, reason, action, and a part of its note.
    type Said = (bool, &'static str, &'static str, &'static str);

    #[test]
    fn a_reconcile_publishes_an_event_for_each_change_once_in_the_order_it_happened() {
        type Row = (&'static str, fn(&mut Reconcile), &'static [Said]);
        let rows: &[Row] = &[
            ("a reconcile that changes nothing says nothing", |_| {}, &[]),
            (
                "a transition goes out as a normal Event",
                |c| c.transition(Reason::DrainStarted, "idle for 30m"),
                &[(false, "DrainStarted", "Reconcile", "idle for 30m")],
            ),
            (
                "a transition that went wrong goes out as a warning",
                |c| c.transition(Reason::LaunchTimeout, "not running in 10m"),
                &[(true, "LaunchTimeout", "Reconcile", "not running in 10m")],
            ),
            (
                "a launch's own Event says more than Launching",
                |c| {
                    c.transition(Reason::Launching, "launching");
                    c.acted = acted(Cloud::Launched {
                        launched: Box::new(launched(false)),
                        launch: LaunchStatus::default(),
                    });
                },
                &[(
                    false,
                    "Launched",
                    "Reconcile",
                    "launched instance i-1 (m5zn.metal) in us-east-1a",
                )],
            ),
            (
                "an instance adopted by tag says so",
                |c| {
                    c.acted = acted(Cloud::Launched {
                        launched: Box::new(launched(true)),
                        launch: LaunchStatus::default(),
                    });
                },
                &[(false, "Adopted", "Reconcile", "adopted instance i-1")],
            ),
            (
                "a failed launch says the cloud's error, once",
                |c| {
                    c.transition(Reason::Launching, "launching");
                    c.acted = acted(launch_failed("RunInstances: throttled"));
                },
                &[(true, "LaunchFailed", "Reconcile", "RunInstances: throttled")],
            ),
            (
                "a launch that begins to wait under the instance cap says so",
                |c| {
                    c.transition(Reason::Launching, "launching");
                    c.acted = acted(Cloud::Capped("the cap is reached".into()));
                },
                &[(
                    true,
                    "InstanceCapReached",
                    "Reconcile",
                    "the cap is reached",
                )],
            ),
            (
                "a launch still waiting under the cap is not said again",
                |c| {
                    condition(
                        &mut c.old,
                        ConditionType::Launched,
                        false,
                        "InstanceCapReached",
                    );
                    c.transition(Reason::Launching, "launching");
                    c.acted = acted(Cloud::Capped("the cap is reached".into()));
                },
                &[(false, "Launching", "Reconcile", "launching")],
            ),
            (
                "a failed step says its error",
                |c| c.acted = acted(Cloud::Failed(Error::NotOwned("not mine".into()))),
                &[(true, "InstanceNotOwned", "Reconcile", "not mine")],
            ),
            (
                "a new kind of CML failure goes out",
                |c| c.observed.cml = unanswered(CmlErrorKind::Timeout),
                &[(true, "CmlTimeout", "ProbeCml", "no answer")],
            ),
            (
                "the same CML failure again does not",
                |c| {
                    condition(&mut c.old, ConditionType::Ready, false, "CmlTimeout");
                    c.observed.cml = unanswered(CmlErrorKind::Timeout);
                },
                &[],
            ),
            (
                "CML's certificate left unverified is said",
                |c| c.next.cml = trusted(CertificateTrust::Unverified),
                &[(
                    true,
                    "CmlTlsUnverified",
                    "ProbeCml",
                    "insecureSkipTlsVerify",
                )],
            ),
            (
                "and said once",
                |c| {
                    c.old.cml = trusted(CertificateTrust::Unverified);
                    c.next.cml = trusted(CertificateTrust::Unverified);
                },
                &[],
            ),
            (
                "a CML endpoint that newly fails goes out",
                |c| condition(&mut c.next, ConditionType::CmlDegraded, true, "LabsTimeout"),
                &[(true, "LabsTimeout", "ProbeCml", "LabsTimeout before")],
            ),
            (
                "an endpoint failing as before does not",
                |c| {
                    condition(&mut c.old, ConditionType::CmlDegraded, true, "LabsTimeout");
                    condition(&mut c.next, ConditionType::CmlDegraded, true, "LabsTimeout");
                },
                &[],
            ),
            (
                "a remote that newly fails to hold the record goes out",
                |c| condition(&mut c.next, ConditionType::Synced, false, "EtcdUnavailable"),
                &[(true, "EtcdUnavailable", "Sync", "EtcdUnavailable before")],
            ),
            (
                "licensing trouble worth a person's attention goes out",
                |c| {
                    condition(
                        &mut c.next,
                        ConditionType::Licensed,
                        false,
                        "LicenseSeatsExhausted",
                    )
                },
                &[(
                    true,
                    "LicenseSeatsExhausted",
                    "License",
                    "LicenseSeatsExhausted before",
                )],
            ),
            (
                "a registration under way is no trouble",
                |c| {
                    condition(
                        &mut c.next,
                        ConditionType::Licensed,
                        false,
                        "LicenseRegistering",
                    )
                },
                &[],
            ),
            (
                "a seat taken goes out",
                |c| c.next.license = seat(SeatState::Held),
                &[(
                    false,
                    "LicenseRegistered",
                    "License",
                    "registered as CML_Enterprise",
                )],
            ),
            (
                "several changes go out in the order they happened",
                |c| {
                    c.transition(Reason::DrainStarted, "idle for 30m");
                    c.observed.cml = unanswered(CmlErrorKind::Timeout);
                    c.acted = acted(Cloud::Failed(Error::NotOwned("not mine".into())));
                },
                &[
                    (false, "DrainStarted", "Reconcile", "idle for 30m"),
                    (true, "CmlTimeout", "ProbeCml", "no answer"),
                    (true, "InstanceNotOwned", "Reconcile", "not mine"),
                ],
            ),
        ];
        for (name, arrange, expected) in rows {
            let mut c = Reconcile::running();
            arrange(&mut c);
            let events = decide(&c.worker(), &c.observed, &c.plan, &c.acted, &c.next);
            let got: Vec<_> = events
                .iter()
                .map(|e| (e.warning, e.reason.as_ref(), e.action))
                .collect();
            let want: Vec<_> = expected.iter().map(|(w, r, a, _)| (*w, *r, *a)).collect();
            assert_eq!(got, want, "{name}");
            for (event, (.., note)) in events.iter().zip(expected.iter()) {
                assert!(event.note.contains(note), "{name}: {}", event.note);
            }
        }
    }
}
