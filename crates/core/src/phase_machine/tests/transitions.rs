//! The state diagrams of docs/architecture.md ("The worker phase machine") as a table: each
//! arrow is a row (from, the facts that cause it, the phase and step it leads to, its Event),
//! followed by rows for what must not happen.

use super::*;

/// One arrow: `facts` lead to `to` with `step`, raising `reason`.
struct Row {
    arrow: &'static str,
    facts: WorkerFacts,
    to: WorkerPhase,
    step: Step,
    reason: Option<Reason>,
}

fn row(
    arrow: &'static str,
    from: Option<WorkerPhase>,
    instance: InstanceFacts,
    tweak: impl FnOnce(&mut WorkerFacts),
    (to, step, reason): (WorkerPhase, Step, Option<Reason>),
) -> Row {
    let mut facts = facts(from, instance);
    tweak(&mut facts);
    Row {
        arrow,
        facts,
        to,
        step,
        reason,
    }
}

fn cml_ready(nodes: u32) -> CmlFacts {
    CmlFacts::Ready {
        running_nodes: Some(nodes),
    }
}

fn check(rows: Vec<Row>) {
    for r in rows {
        let p = plan(&r.facts);
        assert_eq!(
            (p.phase, p.step, p.event.map(|(reason, _)| reason)),
            (r.to, r.step, r.reason),
            "{}",
            r.arrow
        );
    }
}

fn nothing(_: &mut WorkerFacts) {}

#[test]
fn every_arrow_of_the_live_diagram() {
    use Step::*;
    let desired = |d: DesiredState| move |f: &mut WorkerFacts| f.desired = d;
    check(vec![
        row(
            "[*] -> Pending: launch attempt 1",
            None,
            InstanceFacts::NotLaunched,
            |f| f.launch = LaunchFacts::default(),
            (Pending, Launch { attempt: 1 }, Some(Reason::Launching)),
        ),
        row(
            "Pending -> Provisioning: instance launched",
            Some(Pending),
            seen(InstanceState::Pending),
            nothing,
            (Provisioning, Wait, None),
        ),
        row(
            "Pending -> Provisioning: adopted, running, CML not ready",
            Some(Pending),
            seen(InstanceState::Running),
            |f| f.cml = CmlFacts::NotReady,
            (Provisioning, Wait, None),
        ),
        row(
            "Pending -> Stopped: desiredState Stopped, nothing launched",
            Some(Pending),
            InstanceFacts::NotLaunched,
            desired(DesiredState::Stopped),
            (Stopped, Wait, None),
        ),
        row(
            "Pending -> Stopped: desiredState Draining, nothing launched",
            None,
            InstanceFacts::NotLaunched,
            desired(DesiredState::Draining),
            (Stopped, Wait, None),
        ),
        row(
            "Pending -> Failed: LaunchTimeout, no instance",
            Some(Pending),
            InstanceFacts::NotLaunched,
            |f| f.now = at(601),
            (Failed, Wait, Some(Reason::LaunchTimeout)),
        ),
        row(
            "Provisioning -> Running: EC2 running and CML ready",
            Some(Provisioning),
            seen(InstanceState::Running),
            |f| f.cml = cml_ready(0),
            (Running, Wait, Some(Reason::Provisioned)),
        ),
        row(
            "Provisioning -> Failed: LaunchTimeout, instance terminated",
            Some(Provisioning),
            seen(InstanceState::Pending),
            |f| f.now = at(601),
            (Failed, Terminate, Some(Reason::LaunchTimeout)),
        ),
        row(
            "Provisioning -> Failed: ReadyTimeout, instance terminated",
            Some(Provisioning),
            seen(InstanceState::Running),
            |f| {
                f.cml = CmlFacts::NotReady;
                f.now = at(1801);
            },
            (Failed, Terminate, Some(Reason::ReadyTimeout)),
        ),
        row(
            "Provisioning -> Starting: instance found stopped",
            Some(Provisioning),
            seen(InstanceState::Stopped),
            nothing,
            (Starting, Start, Some(Reason::Starting)),
        ),
        row(
            "Running -> Draining: desiredState Draining",
            Some(Running),
            seen(InstanceState::Running),
            desired(DesiredState::Draining),
            (Draining, Wait, Some(Reason::DrainStarted)),
        ),
        row(
            "Running -> Draining: desiredState Stopped",
            Some(Running),
            seen(InstanceState::Running),
            desired(DesiredState::Stopped),
            (Draining, Wait, Some(Reason::DrainStarted)),
        ),
        row(
            "Running -> Starting: instance found stopped",
            Some(Running),
            seen(InstanceState::Stopped),
            nothing,
            (Starting, Start, Some(Reason::Starting)),
        ),
        row(
            "Draining -> Running: desiredState Running again",
            Some(Draining),
            seen(InstanceState::Running),
            |f| f.cml = cml_ready(2),
            (Running, Wait, Some(Reason::DrainCancelled)),
        ),
        row(
            "Draining -> Stopping: idle",
            Some(Draining),
            seen(InstanceState::Running),
            |f| {
                f.desired = DesiredState::Stopped;
                f.cml = cml_ready(0);
            },
            (Stopping, Stop, Some(Reason::DrainCompleted)),
        ),
        row(
            "Draining -> Stopping: drainTimeout",
            Some(Draining),
            seen(InstanceState::Running),
            |f| {
                f.desired = DesiredState::Draining;
                f.cml = cml_ready(2);
                f.drain_started_at = Some(at(0));
                f.now = at(3600);
            },
            (Stopping, Stop, Some(Reason::DrainTimeout)),
        ),
        row(
            "Draining -> Stopping: instance not running",
            Some(Draining),
            seen(InstanceState::Stopped),
            desired(DesiredState::Stopped),
            (Stopping, Stop, Some(Reason::Stopping)),
        ),
        row(
            "Stopping -> Stopped: EC2 stopped",
            Some(Stopping),
            seen(InstanceState::Stopped),
            desired(DesiredState::Stopped),
            (Stopped, Wait, Some(Reason::Stopped)),
        ),
        row(
            "Stopped -> Starting: desiredState Running",
            Some(Stopped),
            seen(InstanceState::Stopped),
            nothing,
            (Starting, Start, Some(Reason::Starting)),
        ),
        row(
            "Stopped -> Starting: instance found running",
            Some(Stopped),
            seen(InstanceState::Running),
            desired(DesiredState::Stopped),
            (Starting, Wait, None),
        ),
        row(
            "Stopped -> Pending: desiredState Running, never launched",
            Some(Stopped),
            InstanceFacts::NotLaunched,
            nothing,
            (Pending, Launch { attempt: 2 }, Some(Reason::Launching)),
        ),
        row(
            "Starting -> Running: EC2 running and CML ready",
            Some(Starting),
            seen(InstanceState::Running),
            |f| f.cml = cml_ready(0),
            (Running, Wait, Some(Reason::Provisioned)),
        ),
        row(
            "Failed -> Failed: a live instance is terminated",
            Some(Failed),
            seen(InstanceState::Running),
            nothing,
            (Failed, Terminate, None),
        ),
        row(
            "Failed -> Failed: a gone instance is left",
            Some(Failed),
            seen(InstanceState::Terminated),
            nothing,
            (Failed, Wait, None),
        ),
    ]);
}

#[test]
fn any_live_phase_fails_when_its_instance_vanishes() {
    let mut rows = Vec::new();
    for from in WorkerPhase::ALL.iter().copied().filter(|p| *p != Failed) {
        for gone in [
            seen(InstanceState::ShuttingDown),
            seen(InstanceState::Terminated),
            InstanceFacts::Missing { id: "i-1".into() },
        ] {
            let vanished = (Failed, Step::Wait, Some(Reason::InstanceVanished));
            rows.push(row(
                "live -> Failed: InstanceVanished",
                Some(from),
                gone,
                nothing,
                vanished,
            ));
        }
    }
    check(rows);
}

#[test]
fn registration_past_its_timeout_fails_a_provisioning_or_starting_worker() {
    use crate::licensing::{LicensePolicy, LicenseSeen, LicenseView, NOT_REGISTERED};
    let unlicensed = |f: &mut WorkerFacts| {
        f.cml = cml_ready(0);
        f.license.policy = Some(LicensePolicy {
            product: "CML_Enterprise".into(),
            expansion_nodes: None,
            registration_timeout: Duration::from_secs(300),
            deregistration_timeout: Duration::from_secs(120),
        });
        f.license.view = LicenseView::Seen(LicenseSeen {
            registration: Some(NOT_REGISTERED.into()),
            ..LicenseSeen::default()
        });
        f.license.registration_started_at = Some(at(-300));
    };
    let timed_out = (Failed, Step::Terminate, Some(Reason::RegistrationTimeout));
    check(vec![
        row(
            "Provisioning -> Failed: RegistrationTimeout",
            Some(Provisioning),
            seen(InstanceState::Running),
            unlicensed,
            timed_out,
        ),
        row(
            "Starting -> Failed: RegistrationTimeout",
            Some(Starting),
            seen(InstanceState::Running),
            unlicensed,
            timed_out,
        ),
    ]);
}

#[test]
fn every_arrow_of_the_deletion_diagram() {
    use Step::*;
    let deleted = |tweak: fn(&mut WorkerFacts)| {
        move |f: &mut WorkerFacts| {
            f.deleting = true;
            tweak(f);
        }
    };
    let terminating = (Terminating, Terminate, Some(Reason::Terminating));
    check(vec![
        row(
            "Any -> Draining: deleted while Running, busy",
            Some(Running),
            seen(InstanceState::Running),
            deleted(|f| f.cml = cml_ready(1)),
            (Draining, Wait, Some(Reason::DrainStarted)),
        ),
        row(
            "Draining -> Draining: deleted, usage unknown (no Event: no change of phase)",
            Some(Draining),
            seen(InstanceState::Running),
            deleted(|f| f.cml = CmlFacts::NotProbed),
            (Draining, Wait, None),
        ),
        row(
            "Any -> Terminating: deleted while Running, idle",
            Some(Running),
            seen(InstanceState::Running),
            deleted(|f| f.cml = cml_ready(0)),
            terminating,
        ),
        row(
            "Any -> Terminating: deleted with skip-drain",
            Some(Running),
            seen(InstanceState::Running),
            deleted(|f| {
                f.skip_drain = true;
                f.cml = cml_ready(4);
            }),
            terminating,
        ),
        row(
            "Any -> Terminating: deleted while Provisioning",
            Some(Provisioning),
            seen(InstanceState::Pending),
            deleted(nothing),
            terminating,
        ),
        row(
            "Any -> Terminating: deleted while Stopped",
            Some(Stopped),
            seen(InstanceState::Stopped),
            deleted(nothing),
            terminating,
        ),
        row(
            "Any -> Terminating: deleted while Failed",
            Some(Failed),
            seen(InstanceState::Running),
            deleted(nothing),
            terminating,
        ),
        row(
            "Any -> Terminating: deleted while Running, instance stopped",
            Some(Running),
            seen(InstanceState::Stopped),
            deleted(|f| f.cml = cml_ready(3)),
            terminating,
        ),
        row(
            "Draining -> Terminating: idle",
            Some(Draining),
            seen(InstanceState::Running),
            deleted(|f| {
                f.drain_started_at = Some(at(0));
                f.cml = cml_ready(0);
            }),
            terminating,
        ),
        row(
            "Draining -> Terminating: drainTimeout",
            Some(Draining),
            seen(InstanceState::Running),
            deleted(|f| {
                f.drain_started_at = Some(at(0));
                f.now = at(3600);
                f.cml = cml_ready(1);
            }),
            (Terminating, Terminate, Some(Reason::DrainTimeout)),
        ),
        row(
            "Terminating -> Terminating: shutting-down is not gone yet",
            Some(Terminating),
            seen(InstanceState::ShuttingDown),
            deleted(nothing),
            (Terminating, Terminate, None),
        ),
        row(
            "Terminating -> [*]: EC2 reports terminated",
            Some(Terminating),
            seen(InstanceState::Terminated),
            deleted(nothing),
            (Terminating, Release, None),
        ),
        row(
            "Stopped -> [*]: deleted, its instance already terminated",
            Some(Stopped),
            seen(InstanceState::Terminated),
            deleted(nothing),
            (Terminating, Release, Some(Reason::Terminated)),
        ),
        row(
            "Terminating -> [*]: EC2 does not know the instance",
            Some(Terminating),
            InstanceFacts::Missing { id: "i-1".into() },
            deleted(nothing),
            (Terminating, Release, None),
        ),
        row(
            "Any -> [*]: no instance was ever launched",
            Some(Pending),
            InstanceFacts::NotLaunched,
            deleted(nothing),
            (Terminating, Release, Some(Reason::Terminated)),
        ),
    ]);
}

#[test]
fn what_must_not_happen() {
    use Step::*;
    check(vec![
        row(
            "Stopped never goes straight to Running, even with CML ready",
            Some(Stopped),
            seen(InstanceState::Running),
            |f| f.cml = cml_ready(0),
            (Starting, Wait, None),
        ),
        row(
            "a stopping instance is not started: it is waited for",
            Some(Stopped),
            seen(InstanceState::Stopping),
            nothing,
            (Stopped, Wait, None),
        ),
        row(
            "Stopping is not undone by desiredState Running",
            Some(Stopping),
            seen(InstanceState::Running),
            nothing,
            (Stopping, Stop, None),
        ),
        row(
            "unknown usage never ends a drain early",
            Some(Draining),
            seen(InstanceState::Running),
            |f| {
                f.desired = DesiredState::Stopped;
                f.drain_started_at = Some(at(0));
                f.cml = CmlFacts::Ready {
                    running_nodes: None,
                };
            },
            (Draining, Wait, None),
        ),
        row(
            "lab instances the platform placed hold a drain",
            Some(Draining),
            seen(InstanceState::Running),
            |f| {
                f.desired = DesiredState::Stopped;
                f.drain_started_at = Some(at(0));
                f.cml = cml_ready(0);
                f.platform = PlatformFacts::Unknown { why: "404".into() };
            },
            (Draining, Wait, None),
        ),
        row(
            "no launch for a template that is not Ready",
            Some(Pending),
            InstanceFacts::NotLaunched,
            |f| {
                f.template = TemplateFacts::NotReady {
                    reason: "ImageNotFound".into(),
                    message: "none".into(),
                    timeouts: timeouts(),
                };
            },
            (Pending, Wait, Some(Reason::TemplateNotReady)),
        ),
        row(
            "no launch while the template is not reconciled",
            Some(Pending),
            InstanceFacts::NotLaunched,
            |f| f.template = TemplateFacts::Unresolved(timeouts()),
            (Pending, Wait, None),
        ),
        row(
            "no launch once an instance is recorded",
            Some(Pending),
            seen(InstanceState::Pending),
            nothing,
            (Provisioning, Wait, None),
        ),
        row(
            "a Failed worker is never started again",
            Some(Failed),
            seen(InstanceState::Stopped),
            nothing,
            (Failed, Terminate, None),
        ),
        row(
            "a Failed worker never launches again",
            Some(Failed),
            InstanceFacts::NotLaunched,
            nothing,
            (Failed, Wait, None),
        ),
        row(
            "Running does not stop by itself: it drains first",
            Some(Running),
            seen(InstanceState::Running),
            |f| f.desired = DesiredState::Stopped,
            (Draining, Wait, Some(Reason::DrainStarted)),
        ),
    ]);
}
