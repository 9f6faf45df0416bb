use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn policy() -> LicensePolicy {
    LicensePolicy {
        product: "CML_Enterprise".into(),
        expansion_nodes: None,
        registration_timeout: Duration::from_secs(300),
        deregistration_timeout: Duration::from_secs(120),
    }
}

fn seen(registration: &str, authorization: &str) -> LicenseView {
    LicenseView::Seen(LicenseSeen {
        registration: Some(registration.into()),
        authorization: Some(authorization.into()),
        product: Some("CML_Enterprise".into()),
        failure: None,
        node_feature: None,
    })
}

fn facts(view: LicenseView, seat: SeatState) -> LicenseFacts {
    LicenseFacts {
        policy: Some(policy()),
        view,
        seat,
        permit: true,
        ..LicenseFacts::default()
    }
}

fn step_of(v: &Verdict) -> Option<&LicenseStep> {
    match v {
        Verdict::Pending(step, _) => step.as_ref(),
        _ => None,
    }
}

#[test]
fn only_completed_and_in_compliance_is_licensed() {
    let licensed = verdict(
        &facts(seen(COMPLETED, IN_COMPLIANCE), SeatState::Registering),
        at(0),
    );
    assert_eq!(licensed, Verdict::Licensed);
    for (registration, authorization) in [
        (COMPLETED, "EVAL"),
        (COMPLETED, "OUT_OF_COMPLIANCE"),
        ("IN_PROGRESS", IN_COMPLIANCE),
        ("RETRY_IN_PROGRESS", "EVAL"),
        ("SOMETHING_NEW", "SOMETHING_NEW"),
    ] {
        let v = verdict(
            &facts(seen(registration, authorization), SeatState::Registering),
            at(0),
        );
        assert!(
            matches!(v, Verdict::Pending(None, _)),
            "{registration}/{authorization}: {v:?}"
        );
    }
}

#[test]
fn a_template_without_licensing_is_licensed_whatever_cml_says() {
    let mut f = facts(seen(NOT_REGISTERED, "EVAL"), SeatState::Free);
    f.policy = None;
    assert_eq!(verdict(&f, at(0)), Verdict::Licensed);
    assert_eq!(gate(&f, at(0)), Gate::Open);
    assert_eq!(steady_note(&f, SeatState::Free), None);
}

#[test]
fn not_registered_or_failed_registers_once_the_backoff_allows() {
    let f = facts(seen(NOT_REGISTERED, "EVAL"), SeatState::Free);
    assert_eq!(step_of(&verdict(&f, at(0))), Some(&LicenseStep::Register));
    let mut failed = facts(seen(FAILED, "EVAL"), SeatState::Registering);
    failed.registration_started_at = Some(at(0));
    failed.retry_at = Some(at(30));
    let v = verdict(&failed, at(10));
    assert_eq!(step_of(&v), None, "backing off");
    let Verdict::Pending(_, note) = &v else {
        panic!("{v:?}")
    };
    assert_eq!(note.reason, LicenseReason::RegistrationFailed);
    assert_eq!(
        step_of(&verdict(&failed, at(30))),
        Some(&LicenseStep::Register)
    );
}

#[test]
fn the_failure_reason_from_cml_is_shown() {
    let mut f = facts(seen(FAILED, "EVAL"), SeatState::Registering);
    if let LicenseView::Seen(s) = &mut f.view {
        s.failure = Some("The token is not valid".into());
    }
    let Verdict::Pending(_, note) = verdict(&f, at(0)) else {
        panic!()
    };
    assert!(
        note.message.contains("The token is not valid"),
        "{}",
        note.message
    );
}

#[test]
fn registration_times_out_from_its_first_request() {
    let mut f = facts(seen(FAILED, "EVAL"), SeatState::Registering);
    f.registration_started_at = Some(at(0));
    assert!(matches!(verdict(&f, at(299)), Verdict::Pending(..)));
    let Verdict::TimedOut(note) = verdict(&f, at(300)) else {
        panic!()
    };
    assert_eq!(note.reason, LicenseReason::RegistrationTimeout);
    f.view = LicenseView::Unknown { why: "down".into() };
    assert!(matches!(verdict(&f, at(300)), Verdict::TimedOut(_)));
}

#[test]
fn over_the_seat_budget_a_worker_without_a_seat_does_not_register() {
    let mut f = facts(seen(NOT_REGISTERED, "EVAL"), SeatState::Free);
    f.permit = false;
    let Verdict::Pending(None, note) = verdict(&f, at(0)) else {
        panic!()
    };
    assert_eq!(note.reason, LicenseReason::SeatsExhausted);
    // One that already claimed a seat goes on.
    f.seat = SeatState::Registering;
    assert_eq!(step_of(&verdict(&f, at(0))), Some(&LicenseStep::Register));
}

#[test]
fn expansion_nodes_are_set_after_registration_and_only_then_licensed() {
    let mut f = facts(seen(COMPLETED, IN_COMPLIANCE), SeatState::Held);
    f.policy.as_mut().unwrap().expansion_nodes = Some(20);
    let feature = |in_use| NodeFeature {
        id: "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_x".into(),
        in_use,
    };
    assert!(
        matches!(verdict(&f, at(0)), Verdict::Pending(None, _)),
        "no feature listed"
    );
    if let LicenseView::Seen(s) = &mut f.view {
        s.node_feature = Some(feature(Some(0)));
    }
    assert_eq!(
        step_of(&verdict(&f, at(0))),
        Some(&LicenseStep::SetNodeCount {
            id: feature(None).id,
            count: 20
        })
    );
    if let LicenseView::Seen(s) = &mut f.view {
        s.node_feature = Some(feature(Some(20)));
    }
    assert_eq!(verdict(&f, at(0)), Verdict::Licensed);
}

#[test]
fn a_held_seat_holds_a_stop_until_deregistered_or_the_timeout() {
    let f = facts(seen(COMPLETED, IN_COMPLIANCE), SeatState::Held);
    let Gate::Hold { step, since, note } = gate(&f, at(0)) else {
        panic!()
    };
    assert_eq!(step, Some(LicenseStep::Deregister));
    assert_eq!(since, at(0));
    assert_eq!(note.reason, LicenseReason::Deregistering);
    let mut later = facts(
        LicenseView::Unknown {
            why: "unreachable".into(),
        },
        SeatState::Deregistering,
    );
    later.deregistration_started_at = Some(at(0));
    assert!(matches!(gate(&later, at(119)), Gate::Hold { .. }));
    let Gate::OpenMayBeHeld(note) = gate(&later, at(120)) else {
        panic!()
    };
    assert_eq!(note.reason, LicenseReason::SeatMayBeHeld);
    // Confirmed free: the stop goes on.
    let freed = facts(seen(NOT_REGISTERED, "EVAL"), SeatState::Deregistering);
    assert_eq!(gate(&freed, at(1)), Gate::Open);
}

#[test]
fn a_registrations_backoff_does_not_delay_the_first_deregistration() {
    let mut f = facts(seen(FAILED, "EVAL"), SeatState::Registering);
    f.retry_at = Some(at(60));
    let Gate::Hold { step, .. } = gate(&f, at(0)) else {
        panic!()
    };
    assert_eq!(step, Some(LicenseStep::Deregister));
    f.deregistration_started_at = Some(at(0));
    let Gate::Hold { step, .. } = gate(&f, at(1)) else {
        panic!()
    };
    assert_eq!(step, None, "later attempts back off");
}

#[test]
fn a_seat_that_may_be_held_or_was_never_taken_does_not_hold_a_stop() {
    for seat in [SeatState::Free, SeatState::MayBeHeld] {
        let f = facts(seen(NOT_REGISTERED, "EVAL"), seat);
        assert_eq!(gate(&f, at(0)), Gate::Open, "{seat:?}");
    }
}

#[test]
fn seats_follow_what_cml_says() {
    use SeatState::*;
    let completed = seen(COMPLETED, IN_COMPLIANCE);
    let not_registered = seen(NOT_REGISTERED, "EVAL");
    let pending = seen("IN_PROGRESS", "EVAL");
    let table = [
        (Free, &completed, true, Held),
        (Free, &completed, false, Free),
        (Registering, &completed, false, Held),
        (MayBeHeld, &completed, true, Held),
        (Held, &not_registered, true, Free),
        (Deregistering, &not_registered, true, Free),
        // A 202 leaves CML unregistered while the Smart Account may keep the seat.
        (MayBeHeld, &not_registered, true, MayBeHeld),
        // Just asked: CML may not show the registration yet.
        (Registering, &not_registered, true, Registering),
        (Free, &pending, true, Registering),
        (Free, &pending, false, Free),
    ];
    for (seat, view, managed, want) in table {
        assert_eq!(
            seat_seen(seat, view, managed),
            want,
            "{seat:?} {view:?} {managed}"
        );
    }
    assert_eq!(
        seat_seen(Held, &LicenseView::Unknown { why: "x".into() }, true),
        Held
    );
}

#[test]
fn seats_follow_cmls_answers() {
    use SeatState::*;
    let register = LicenseStep::Register;
    let deregister = LicenseStep::Deregister;
    let table = [
        (Free, &register, Answer::Accepted, Registering),
        (Free, &register, Answer::Busy, Registering),
        (Free, &register, Answer::Refused("bad".into()), Free),
        (Held, &deregister, Answer::Freed, Free),
        (Held, &deregister, Answer::LocalOnly, MayBeHeld),
        (Held, &deregister, Answer::NodesRunning, Held),
        (Held, &deregister, Answer::NotRegistered, Free),
        (MayBeHeld, &deregister, Answer::NotRegistered, MayBeHeld),
        (Held, &deregister, Answer::Busy, Deregistering),
        (
            Held,
            &deregister,
            Answer::Failed("timeout".into()),
            Deregistering,
        ),
    ];
    for (seat, step, answer, want) in table {
        assert_eq!(
            seat_answered(seat, step, &answer),
            want,
            "{seat:?} {step:?} {answer:?}"
        );
    }
}

#[test]
fn the_backoff_doubles_to_two_minutes() {
    let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(delays, [5, 10, 20, 40, 80, 120, 120, 120]);
}
