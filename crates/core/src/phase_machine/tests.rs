use std::collections::BTreeMap;

use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn instance(state: InstanceState) -> Instance {
    Instance {
        id: "i-1".into(),
        state,
        instance_type: "m5zn.metal".into(),
        availability_zone: Some("us-east-1a".into()),
        private_ip: Some("10.0.0.1".into()),
        public_ip: None,
        image_id: Some("ami-1".into()),
        launch_time: Some(at(0)),
        tags: BTreeMap::new(),
        state_reason: None,
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        launch: Duration::from_secs(600),
        ready: Duration::from_secs(1800),
        drain: Duration::from_secs(3600),
    }
}

fn facts(phase: Option<WorkerPhase>, instance: InstanceFacts) -> WorkerFacts {
    WorkerFacts {
        now: at(60),
        deleting: false,
        skip_drain: false,
        desired: DesiredState::Running,
        phase,
        template: TemplateFacts::Ready(timeouts()),
        launch: LaunchFacts {
            attempts: 1,
            token_outstanding: false,
            started_at: Some(at(0)),
        },
        instance,
        cml: CmlFacts::NotProbed,
        platform: PlatformFacts::NotConfigured,
        drain_started_at: None,
        license: LicenseFacts::default(),
    }
}

fn seen(state: InstanceState) -> InstanceFacts {
    InstanceFacts::Seen(instance(state))
}

use WorkerPhase::*;

#[test]
fn a_new_worker_launches_attempt_one() {
    let mut f = facts(None, InstanceFacts::NotLaunched);
    f.launch = LaunchFacts::default();
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Pending, Step::Launch { attempt: 1 }));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::Launching));
}

#[test]
fn an_outstanding_token_retries_the_same_attempt_and_a_settled_one_the_next() {
    let mut f = facts(Some(Pending), InstanceFacts::NotLaunched);
    f.launch.attempts = 2;
    f.launch.token_outstanding = true;
    assert_eq!(plan(&f).step, Step::Launch { attempt: 2 });
    f.launch.token_outstanding = false;
    assert_eq!(plan(&f).step, Step::Launch { attempt: 3 });
    assert_eq!(
        plan(&f).event,
        None,
        "no event for a retry in the same phase"
    );
}

#[test]
fn a_missing_or_unready_template_keeps_the_worker_pending() {
    let mut f = facts(None, InstanceFacts::NotLaunched);
    f.template = TemplateFacts::Missing;
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Pending, Step::Wait));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::TemplateNotFound));

    f.template = TemplateFacts::Unresolved(timeouts());
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.step, p.event),
        (Pending, Step::Wait, None),
        "not reconciled yet is no warning"
    );

    f.template = image_not_found();
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Pending, Step::Wait));
    let (reason, message) = p.event.unwrap();
    assert_eq!(reason, Reason::TemplateNotReady);
    assert!(message.contains("ImageNotFound") && message.contains("no image matches"));
}

fn image_not_found() -> TemplateFacts {
    TemplateFacts::NotReady {
        reason: "ImageNotFound".into(),
        message: "no image matches".into(),
        timeouts: timeouts(),
    }
}

#[test]
fn a_template_whose_image_does_not_resolve_keeps_its_timeouts_and_its_workers_move() {
    // A drain holds until the template's drainTimeout (1h here), not the default 4h.
    let mut f = facts(Some(Draining), seen(InstanceState::Running));
    f.template = image_not_found();
    f.desired = DesiredState::Draining;
    f.drain_started_at = Some(at(0));
    f.cml = CmlFacts::Ready {
        running_nodes: Some(2),
    };
    f.now = at(3599);
    assert_eq!(plan(&f).step, Step::Wait);
    f.now = at(3600);
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Stopping, Step::Stop));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::DrainTimeout));
    // A drain with the labs gone stops the instance.
    f.now = at(60);
    f.cml = CmlFacts::Ready {
        running_nodes: Some(0),
    };
    assert_eq!(plan(&f).step, Step::Stop);
    // A stopped worker asked to run is started: it needs no image.
    let mut f = facts(Some(Stopped), seen(InstanceState::Stopped));
    f.template = image_not_found();
    assert_eq!((plan(&f).phase, plan(&f).step), (Starting, Step::Start));
    // So is one deleted: drained and terminated.
    let mut f = facts(Some(Stopped), seen(InstanceState::Stopped));
    f.template = image_not_found();
    f.deleting = true;
    assert_eq!(plan(&f).step, Step::Terminate);
}

#[test]
fn launching_for_longer_than_launch_timeout_fails() {
    let mut f = facts(Some(Pending), InstanceFacts::NotLaunched);
    f.now = at(601);
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Failed, Step::Wait));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::LaunchTimeout));

    let mut f = facts(Some(Provisioning), seen(InstanceState::Pending));
    f.now = at(601);
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.step),
        (Failed, Step::Terminate),
        "a failed worker costs nothing"
    );
}

#[test]
fn provisioning_waits_for_running_and_cml() {
    let f = facts(Some(Provisioning), seen(InstanceState::Pending));
    assert_eq!(
        (plan(&f).phase, plan(&f).step, plan(&f).recheck),
        (Provisioning, Step::Wait, Recheck::Soon)
    );

    let mut f = facts(Some(Provisioning), seen(InstanceState::Running));
    f.cml = CmlFacts::NotReady;
    assert_eq!(plan(&f).phase, Provisioning);
    f.cml = CmlFacts::Unreachable {
        message: "refused".into(),
    };
    assert_eq!(plan(&f).phase, Provisioning);
    f.cml = CmlFacts::Ready {
        running_nodes: Some(0),
    };
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Running, Step::Wait));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::Provisioned));
}

#[test]
fn cml_never_ready_fails_after_ready_timeout() {
    let mut f = facts(Some(Provisioning), seen(InstanceState::Running));
    f.cml = CmlFacts::NotReady;
    f.now = at(1799);
    assert_eq!(plan(&f).phase, Provisioning);
    f.now = at(1801);
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Failed, Step::Terminate));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::ReadyTimeout));
}

#[test]
fn an_instance_gone_behind_our_back_fails_the_worker() {
    for phase in [Provisioning, Running, Draining, Stopped] {
        let mut i = instance(InstanceState::Terminated);
        i.state_reason = Some("Client.UserInitiatedShutdown".into());
        let p = plan(&facts(Some(phase), InstanceFacts::Seen(i)));
        assert_eq!((p.phase, p.step), (Failed, Step::Wait), "{phase:?}");
        let (reason, message) = p.event.unwrap();
        assert_eq!(reason, Reason::InstanceVanished);
        assert!(message.contains("UserInitiatedShutdown"));

        let p = plan(&facts(
            Some(phase),
            InstanceFacts::Missing { id: "i-1".into() },
        ));
        assert_eq!(p.phase, Failed);
    }
}

#[test]
fn a_failed_worker_stays_failed_and_terminates_a_live_instance() {
    assert_eq!(
        plan(&facts(Some(Failed), seen(InstanceState::Running))).step,
        Step::Terminate
    );
    assert_eq!(
        plan(&facts(Some(Failed), seen(InstanceState::Terminated))).step,
        Step::Wait
    );
    assert_eq!(
        plan(&facts(Some(Failed), InstanceFacts::NotLaunched)).phase,
        Failed
    );
}

#[test]
fn draining_waits_for_labs_then_stops() {
    let mut f = facts(Some(Running), seen(InstanceState::Running));
    f.desired = DesiredState::Draining;
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Draining, Step::Wait));
    assert_eq!(p.drain_started_at, Some(at(60)));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::DrainStarted));

    let mut f = facts(Some(Draining), seen(InstanceState::Running));
    f.desired = DesiredState::Draining;
    f.drain_started_at = Some(at(30));
    f.cml = CmlFacts::Ready {
        running_nodes: Some(3),
    };
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.step, p.drain_started_at),
        (Draining, Step::Wait, Some(at(30)))
    );
    assert_eq!(p.event, None);

    f.cml = CmlFacts::Unreachable {
        message: "timeout".into(),
    };
    assert_eq!(
        plan(&f).step,
        Step::Wait,
        "unknown usage never ends a drain early"
    );

    f.cml = CmlFacts::Ready {
        running_nodes: Some(0),
    };
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Stopping, Step::Stop));
    assert_eq!(p.event.map(|e| e.0), Some(Reason::DrainCompleted));
}

#[test]
fn a_drain_past_its_timeout_is_forced_with_a_warning() {
    let mut f = facts(Some(Draining), seen(InstanceState::Running));
    f.desired = DesiredState::Draining;
    f.drain_started_at = Some(at(0));
    f.now = at(3600);
    f.cml = CmlFacts::Ready {
        running_nodes: Some(2),
    };
    let p = plan(&f);
    assert_eq!((p.phase, p.step), (Stopping, Step::Stop));
    let (reason, _) = p.event.unwrap();
    assert_eq!(reason, Reason::DrainTimeout);
    assert!(reason.is_warning());
}

#[test]
fn running_again_cancels_a_drain() {
    let mut f = facts(Some(Draining), seen(InstanceState::Running));
    f.drain_started_at = Some(at(0));
    f.cml = CmlFacts::Ready {
        running_nodes: Some(2),
    };
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.step, p.drain_started_at),
        (Running, Step::Wait, None)
    );
    assert_eq!(p.event.map(|e| e.0), Some(Reason::DrainCancelled));
}

#[test]
fn stop_then_start() {
    let mut f = facts(Some(Running), seen(InstanceState::Running));
    f.desired = DesiredState::Stopped;
    assert_eq!(plan(&f).phase, Draining, "a stop drains first");

    let mut f = facts(Some(Stopping), seen(InstanceState::Stopping));
    f.desired = DesiredState::Stopped;
    assert_eq!((plan(&f).phase, plan(&f).step), (Stopping, Step::Wait));
    f.instance = seen(InstanceState::Stopped);
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.event.map(|e| e.0)),
        (Stopped, Some(Reason::Stopped))
    );

    let mut f = facts(Some(Stopped), seen(InstanceState::Stopped));
    f.desired = DesiredState::Stopped;
    assert_eq!((plan(&f).phase, plan(&f).step), (Stopped, Step::Wait));
    f.desired = DesiredState::Running;
    assert_eq!((plan(&f).phase, plan(&f).step), (Starting, Step::Start));

    let mut f = facts(Some(Starting), seen(InstanceState::Pending));
    assert_eq!((plan(&f).phase, plan(&f).step), (Starting, Step::Wait));
    f.instance = seen(InstanceState::Running);
    f.cml = CmlFacts::Ready {
        running_nodes: Some(0),
    };
    assert_eq!(plan(&f).phase, Running);
}

#[test]
fn an_unlaunched_worker_asked_to_stop_is_stopped() {
    let mut f = facts(None, InstanceFacts::NotLaunched);
    f.desired = DesiredState::Stopped;
    assert_eq!((plan(&f).phase, plan(&f).step), (Stopped, Step::Wait));
}

#[test]
fn delete_drains_a_busy_worker_first() {
    let mut f = facts(Some(Running), seen(InstanceState::Running));
    f.deleting = true;
    f.cml = CmlFacts::Ready {
        running_nodes: Some(1),
    };
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.step, p.drain_started_at),
        (Draining, Step::Wait, Some(at(60)))
    );

    f.phase = Some(Draining);
    f.drain_started_at = Some(at(0));
    f.cml = CmlFacts::Ready {
        running_nodes: Some(0),
    };
    assert_eq!(
        (plan(&f).phase, plan(&f).step),
        (Terminating, Step::Terminate)
    );

    f.cml = CmlFacts::Ready {
        running_nodes: Some(1),
    };
    f.now = at(3601);
    let p = plan(&f);
    assert_eq!(
        (p.phase, p.step, p.event.map(|e| e.0)),
        (Terminating, Step::Terminate, Some(Reason::DrainTimeout))
    );
}

#[test]
fn delete_with_skip_drain_or_while_provisioning_terminates_at_once() {
    let mut f = facts(Some(Running), seen(InstanceState::Running));
    f.deleting = true;
    f.skip_drain = true;
    f.cml = CmlFacts::Ready {
        running_nodes: Some(5),
    };
    assert_eq!(plan(&f).step, Step::Terminate);

    let mut f = facts(Some(Provisioning), seen(InstanceState::Pending));
    f.deleting = true;
    assert_eq!(
        (plan(&f).phase, plan(&f).step),
        (Terminating, Step::Terminate)
    );
}

#[test]
fn the_object_goes_only_once_the_instance_is_terminated_or_unknown() {
    let mut f = facts(Some(Terminating), seen(InstanceState::ShuttingDown));
    f.deleting = true;
    assert_eq!(
        plan(&f).step,
        Step::Terminate,
        "shutting-down is not terminated yet"
    );
    f.instance = seen(InstanceState::Terminated);
    assert_eq!(plan(&f).step, Step::Release);
    f.instance = InstanceFacts::Missing { id: "i-1".into() };
    assert_eq!(plan(&f).step, Step::Release);
    f.instance = InstanceFacts::NotLaunched;
    assert_eq!(plan(&f).step, Step::Release);
}

fn unknown_usages() -> Vec<CmlFacts> {
    vec![
        CmlFacts::NotProbed,
        CmlFacts::NotReady,
        CmlFacts::Unreachable {
            message: "CmlTimeout: slow".into(),
        },
        CmlFacts::Ready {
            running_nodes: None,
        },
    ]
}

#[test]
fn unknown_usage_holds_a_drain_and_a_delete_until_drain_timeout() {
    for deleting in [false, true] {
        for cml in unknown_usages() {
            let mut f = facts(Some(Draining), seen(InstanceState::Running));
            f.deleting = deleting;
            f.desired = DesiredState::Stopped;
            f.drain_started_at = Some(at(0));
            f.cml = cml.clone();
            let p = plan(&f);
            assert_eq!(
                (p.phase, p.step),
                (Draining, Step::Wait),
                "deleting={deleting} {cml:?}"
            );
            let waiting = p.waiting.expect("says what it waits for");
            assert!(waiting.contains("unknown"), "{waiting}");
            assert!(
                waiting.contains("2027-01-15T09:00:00Z"),
                "names the deadline: {waiting}"
            );

            f.now = at(3600);
            let p = plan(&f);
            let step = if deleting {
                Step::Terminate
            } else {
                Step::Stop
            };
            assert_eq!(p.step, step, "deleting={deleting} {cml:?}");
            assert_eq!(p.event.map(|e| e.0), Some(Reason::DrainTimeout));
        }
    }
}

#[test]
fn a_waiting_drain_says_how_many_nodes_still_run() {
    let mut f = facts(Some(Draining), seen(InstanceState::Running));
    f.desired = DesiredState::Draining;
    f.drain_started_at = Some(at(0));
    f.cml = CmlFacts::Ready {
        running_nodes: Some(5),
    };
    let waiting = plan(&f).waiting.expect("waiting");
    assert!(
        waiting.starts_with("5 lab nodes still running"),
        "{waiting}"
    );
}

#[test]
fn lab_instances_the_platform_placed_hold_a_drain_whatever_cml_says() {
    for (platform, drains) in [
        (PlatformFacts::NotConfigured, true),
        (
            PlatformFacts::Known {
                running: 0,
                scheduled: 0,
            },
            true,
        ),
        (
            PlatformFacts::Known {
                running: 1,
                scheduled: 0,
            },
            false,
        ),
        (
            PlatformFacts::Known {
                running: 0,
                scheduled: 2,
            },
            false,
        ),
        (
            PlatformFacts::Unknown {
                why: "no such worker".into(),
            },
            false,
        ),
        (PlatformFacts::NotAsked, false),
    ] {
        for deleting in [false, true] {
            let mut f = facts(Some(Draining), seen(InstanceState::Running));
            f.deleting = deleting;
            f.desired = DesiredState::Stopped;
            f.drain_started_at = Some(at(0));
            f.cml = CmlFacts::Ready {
                running_nodes: Some(0),
            };
            f.platform = platform.clone();
            let p = plan(&f);
            assert_eq!(
                p.step != Step::Wait,
                drains,
                "{platform:?} deleting={deleting}"
            );
            if !drains {
                let waiting = p.waiting.expect("says why");
                assert!(waiting.contains("lab instances"), "{waiting}");
                f.now = at(3600);
                assert_ne!(plan(&f).step, Step::Wait, "drainTimeout still forces it");
            }
        }
    }
}

#[test]
fn a_worker_is_overdue_only_past_its_phase_timeout_and_the_slack() {
    let t = Timeouts {
        launch: Duration::from_secs(600),
        ready: Duration::from_secs(1800),
        drain: Duration::from_secs(3600),
    };
    let slack = OVERDUE_SLACK.as_secs() as i64;
    // (phase, seconds in it, overdue)
    let table = [
        (Pending, 600 + 1800 + slack, false),
        (Pending, 600 + 1800 + slack + 1, true),
        (Provisioning, 2400 + slack + 1, true),
        (Starting, 2400, false),
        (Starting, 2400 + slack + 1, true),
        (Draining, 3600 + slack, false),
        (Draining, 3600 + slack + 1, true),
        (Running, 1_000_000, false),
        (Stopped, 1_000_000, false),
        (Stopping, 1_000_000, false),
        (Terminating, 1_000_000, false),
        (Failed, 1_000_000, false),
    ];
    for (phase, secs, expected) in table {
        assert_eq!(
            overdue(phase, at(0), t, at(secs)),
            expected,
            "{phase:?} after {secs} s"
        );
    }
    // A clock that went backwards is not a stuck worker.
    assert!(!overdue(Draining, at(100), t, at(0)));
}

mod licensing_in_the_phase_machine {
    use super::*;
    use crate::licensing::{
        COMPLETED, IN_COMPLIANCE, LicensePolicy, LicenseReason, LicenseSeen, LicenseStep,
        LicenseView, NOT_REGISTERED, SeatState,
    };

    fn licensed_facts(phase: WorkerPhase, seat: SeatState, registration: &str) -> WorkerFacts {
        let mut f = facts(Some(phase), seen(InstanceState::Running));
        f.cml = CmlFacts::Ready {
            running_nodes: Some(0),
        };
        f.license = LicenseFacts {
            policy: Some(LicensePolicy {
                product: "CML_Enterprise".into(),
                expansion_nodes: None,
                registration_timeout: Duration::from_secs(300),
                deregistration_timeout: Duration::from_secs(120),
            }),
            view: LicenseView::Seen(LicenseSeen {
                registration: Some(registration.into()),
                authorization: Some(
                    if registration == COMPLETED {
                        IN_COMPLIANCE
                    } else {
                        "EVAL"
                    }
                    .into(),
                ),
                ..LicenseSeen::default()
            }),
            seat,
            permit: true,
            ..LicenseFacts::default()
        };
        f
    }

    #[test]
    fn a_ready_cml_runs_only_once_licensed() {
        let f = licensed_facts(Provisioning, SeatState::Free, NOT_REGISTERED);
        let p = plan(&f);
        assert_eq!((p.phase, p.step), (Provisioning, Step::Wait));
        assert_eq!(p.license.step, Some(LicenseStep::Register));
        let f = licensed_facts(Provisioning, SeatState::Registering, COMPLETED);
        let p = plan(&f);
        assert_eq!(p.phase, Running);
        assert_eq!(
            p.license.note.map(|n| n.reason),
            Some(LicenseReason::Registered)
        );
    }

    #[test]
    fn a_started_worker_registers_again() {
        let f = licensed_facts(Starting, SeatState::Free, NOT_REGISTERED);
        let p = plan(&f);
        assert_eq!(
            (p.phase, p.license.step),
            (Starting, Some(LicenseStep::Register))
        );
    }

    #[test]
    fn a_finished_drain_gives_the_seat_back_before_the_stop() {
        let mut f = licensed_facts(Draining, SeatState::Held, COMPLETED);
        f.desired = DesiredState::Stopped;
        f.drain_started_at = Some(at(0));
        let p = plan(&f);
        assert_eq!((p.phase, p.step), (Draining, Step::Wait));
        assert_eq!(p.license.step, Some(LicenseStep::Deregister));
        assert_eq!(
            p.drain_started_at,
            Some(at(0)),
            "the drain clock keeps running"
        );
        assert_eq!(p.event, None);
        let mut freed = licensed_facts(Draining, SeatState::Deregistering, NOT_REGISTERED);
        freed.desired = DesiredState::Stopped;
        freed.drain_started_at = Some(at(0));
        let p = plan(&freed);
        assert_eq!((p.phase, p.step), (Stopping, Step::Stop));
        assert_eq!(p.license.step, None);
    }

    #[test]
    fn a_delete_gives_the_seat_back_even_with_skip_drain() {
        let mut f = licensed_facts(Running, SeatState::Held, COMPLETED);
        f.deleting = true;
        f.skip_drain = true;
        let p = plan(&f);
        assert_eq!(p.step, Step::Wait);
        assert_eq!(p.license.step, Some(LicenseStep::Deregister));
    }

    #[test]
    fn a_seat_not_confirmed_within_the_timeout_lets_the_terminate_go_on() {
        let mut f = licensed_facts(Running, SeatState::Deregistering, COMPLETED);
        f.deleting = true;
        f.license.view = LicenseView::Unknown {
            why: "unreachable".into(),
        };
        f.cml = CmlFacts::Unreachable {
            message: "unreachable".into(),
        };
        f.skip_drain = true;
        f.license.deregistration_started_at = Some(at(-120));
        let p = plan(&f);
        assert_eq!(p.step, Step::Terminate);
        assert!(p.license.seat_may_be_held);
    }

    #[test]
    fn registration_past_its_timeout_fails_the_worker_and_still_deregisters_first() {
        let mut f = licensed_facts(Provisioning, SeatState::Registering, "FAILED");
        f.license.registration_started_at = Some(at(-300));
        let p = plan(&f);
        assert_eq!((p.phase, p.step), (Failed, Step::Wait));
        assert_eq!(p.license.step, Some(LicenseStep::Deregister));
        assert_eq!(p.event.map(|e| e.0), Some(Reason::RegistrationTimeout));
    }

    #[test]
    fn an_instance_gone_while_its_seat_is_held_reports_the_seat() {
        let mut f = licensed_facts(Running, SeatState::Held, COMPLETED);
        f.instance = InstanceFacts::Missing { id: "i-1".into() };
        f.cml = CmlFacts::NotProbed;
        f.license.view = LicenseView::NotAsked;
        let p = plan(&f);
        assert!(p.license.seat_may_be_held);
        assert_eq!(
            p.license.note.map(|n| n.reason),
            Some(LicenseReason::SeatMayBeHeld)
        );
    }
}

mod properties;
mod transitions;
