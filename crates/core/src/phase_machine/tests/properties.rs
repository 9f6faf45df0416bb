//! Invariants of the phase machine over facts generated broadly: every phase, desired state,
//! deletion and skip-drain mark, instance state, CML and Control Plane API answer, template and
//! licensing state.

use jiff::SignedDuration;
use proptest::prelude::*;

use super::*;
use crate::licensing::{
    COMPLETED, FAILED, IN_COMPLIANCE, LicensePolicy, LicenseSeen, LicenseView, NOT_REGISTERED,
    SeatState,
};

fn offset() -> impl Strategy<Value = Timestamp> {
    (-20_000i64..20_000).prop_map(at)
}

fn instance_state() -> impl Strategy<Value = InstanceState> {
    prop::sample::select(vec![
        InstanceState::Pending,
        InstanceState::Running,
        InstanceState::Stopping,
        InstanceState::Stopped,
        InstanceState::ShuttingDown,
        InstanceState::Terminated,
    ])
}

fn instance_facts() -> impl Strategy<Value = InstanceFacts> {
    prop_oneof![
        Just(InstanceFacts::NotLaunched),
        Just(InstanceFacts::Missing { id: "i-1".into() }),
        (instance_state(), prop::option::of(offset()), any::<bool>()).prop_map(
            |(state, launch_time, reason)| {
                let mut i = instance(state);
                i.launch_time = launch_time;
                i.state_reason = reason.then(|| "Client.UserInitiatedShutdown".into());
                InstanceFacts::Seen(i)
            }
        ),
    ]
}

fn cml_facts() -> impl Strategy<Value = CmlFacts> {
    prop_oneof![
        Just(CmlFacts::NotProbed),
        Just(CmlFacts::NotReady),
        Just(CmlFacts::Unreachable {
            message: "CmlTimeout: slow".into()
        }),
        prop::option::of(0u32..3).prop_map(|running_nodes| CmlFacts::Ready { running_nodes }),
    ]
}

fn platform_facts() -> impl Strategy<Value = PlatformFacts> {
    prop_oneof![
        Just(PlatformFacts::NotConfigured),
        Just(PlatformFacts::NotAsked),
        Just(PlatformFacts::Unknown {
            why: "no such worker".into()
        }),
        (0u32..2, 0u32..2)
            .prop_map(|(running, scheduled)| PlatformFacts::Known { running, scheduled }),
    ]
}

fn template_facts() -> impl Strategy<Value = TemplateFacts> {
    let minutes = |m: u64| Duration::from_secs(60 * m);
    let timeouts =
        (1u64..20, 1u64..40, 0u64..300).prop_map(move |(launch, ready, drain)| Timeouts {
            launch: minutes(launch),
            ready: minutes(ready),
            drain: minutes(drain),
        });
    prop_oneof![
        Just(TemplateFacts::Missing),
        timeouts.clone().prop_map(TemplateFacts::Unresolved),
        timeouts
            .clone()
            .prop_map(|timeouts| TemplateFacts::NotReady {
                reason: "ImageNotFound".into(),
                message: "no image matches".into(),
                timeouts,
            }),
        timeouts.prop_map(TemplateFacts::Ready),
    ]
}

fn license_facts() -> impl Strategy<Value = LicenseFacts> {
    let policy =
        prop::option::of(
            (0u64..600, 0u64..300).prop_map(|(register, deregister)| LicensePolicy {
                product: "CML_Enterprise".into(),
                expansion_nodes: None,
                registration_timeout: Duration::from_secs(register),
                deregistration_timeout: Duration::from_secs(deregister),
            }),
        );
    let registration = prop::sample::select(vec![COMPLETED, NOT_REGISTERED, FAILED, "IN_PROGRESS"]);
    let authorization = prop::sample::select(vec![IN_COMPLIANCE, "EVAL"]);
    let view = prop_oneof![
        Just(LicenseView::NotAsked),
        Just(LicenseView::Unknown {
            why: "unreachable".into()
        }),
        (registration, authorization).prop_map(|(r, a)| LicenseView::Seen(LicenseSeen {
            registration: Some(r.into()),
            authorization: Some(a.into()),
            ..LicenseSeen::default()
        })),
    ];
    let seat = prop::sample::select(vec![
        SeatState::Free,
        SeatState::Registering,
        SeatState::Held,
        SeatState::Deregistering,
        SeatState::MayBeHeld,
    ]);
    let when = || prop::option::of(offset());
    (policy, view, seat, when(), when(), when(), any::<bool>()).prop_map(
        |(policy, view, seat, registration, deregistration, retry_at, permit)| LicenseFacts {
            policy,
            view,
            seat,
            registration_started_at: registration,
            deregistration_started_at: deregistration,
            retry_at,
            permit,
        },
    )
}

fn launch_facts() -> impl Strategy<Value = LaunchFacts> {
    (0u32..4, any::<bool>(), prop::option::of(offset())).prop_map(
        |(attempts, token_outstanding, started_at)| LaunchFacts {
            attempts,
            token_outstanding,
            started_at,
        },
    )
}

fn desired() -> impl Strategy<Value = DesiredState> {
    prop::sample::select(vec![
        DesiredState::Running,
        DesiredState::Draining,
        DesiredState::Stopped,
    ])
}

fn worker_facts() -> impl Strategy<Value = WorkerFacts> {
    let phase = prop::option::of(prop::sample::select(WorkerPhase::ALL.to_vec()));
    worker_facts_in(phase, instance_facts())
}

/// A worker that may hold labs: Running or Draining on a running instance.
fn busy_worker_facts() -> impl Strategy<Value = WorkerFacts> {
    let phase = prop::sample::select(vec![Some(Running), Some(Draining)]);
    let running = instance_facts().prop_map(|i| match i {
        InstanceFacts::Seen(mut i) => {
            i.state = InstanceState::Running;
            InstanceFacts::Seen(i)
        }
        _ => seen(InstanceState::Running),
    });
    worker_facts_in(phase, running)
}

fn worker_facts_in(
    phase: impl Strategy<Value = Option<WorkerPhase>>,
    instance: impl Strategy<Value = InstanceFacts>,
) -> impl Strategy<Value = WorkerFacts> {
    let marks = (any::<bool>(), any::<bool>(), desired());
    let observed = (instance, cml_facts(), platform_facts());
    let recorded = (template_facts(), launch_facts(), prop::option::of(offset()));
    (offset(), marks, phase, observed, recorded, license_facts()).prop_map(
        |(now, (deleting, skip_drain, desired), phase, observed, recorded, license)| {
            let (instance, cml, platform) = observed;
            let (template, launch, drain_started_at) = recorded;
            WorkerFacts {
                now,
                deleting,
                skip_drain,
                desired,
                phase,
                template,
                launch,
                instance,
                cml,
                platform,
                drain_started_at,
                license,
            }
        },
    )
}

/// Every source of usage said zero.
fn known_idle(f: &WorkerFacts) -> bool {
    let cml = f.cml
        == CmlFacts::Ready {
            running_nodes: Some(0),
        };
    let platform = matches!(
        f.platform,
        PlatformFacts::NotConfigured
            | PlatformFacts::Known {
                running: 0,
                scheduled: 0
            }
    );
    cml && platform
}

/// The drain (begun at `drain_started_at`, or now) has lasted its `drainTimeout`.
fn drain_timed_out(f: &WorkerFacts) -> bool {
    let since = f.drain_started_at.unwrap_or(f.now);
    let timeout = SignedDuration::try_from(f.template.timeouts().drain).expect("a short timeout");
    // As the machine counts it: a drain stamped ahead of the clock has lasted no time.
    f.now.duration_since(since).max(SignedDuration::ZERO) >= timeout
}

/// The moves each phase may make while the worker lives, from the diagram.
fn allowed(from: WorkerPhase, to: WorkerPhase) -> bool {
    let next: &[WorkerPhase] = match from {
        Pending => &[Pending, Provisioning, Running, Starting, Stopped, Failed],
        Provisioning => &[Provisioning, Running, Starting, Failed],
        Running => &[Running, Draining, Starting, Failed],
        Draining => &[Draining, Running, Stopping, Failed],
        Stopping => &[Stopping, Stopped, Failed],
        Stopped => &[Stopped, Starting, Pending, Failed],
        Starting => &[Starting, Running, Failed],
        Terminating => &[Terminating, Failed],
        Failed => &[Failed],
    };
    next.contains(&to)
}

/// Only these phases can be without a recorded instance: the others are reached by recording one.
fn may_be_unlaunched(phase: Option<WorkerPhase>) -> bool {
    matches!(phase, None | Some(Pending | Stopped | Failed))
}

/// EC2 taking `step`, and one transition of an instance in motion.
fn cloud_follows(instance: &mut InstanceFacts, step: Step) {
    let InstanceFacts::Seen(i) = instance else {
        return;
    };
    i.state = match (step, i.state) {
        (Step::Terminate, s) if !s.is_gone() => InstanceState::ShuttingDown,
        (Step::Stop, InstanceState::Running | InstanceState::Pending) => InstanceState::Stopping,
        (Step::Start, InstanceState::Stopped) => InstanceState::Pending,
        (_, InstanceState::Pending) => InstanceState::Running,
        (_, InstanceState::Stopping) => InstanceState::Stopped,
        (_, InstanceState::ShuttingDown) => InstanceState::Terminated,
        (_, s) => s,
    };
}

/// What the worker's status keeps of `p` for the next reconcile; the licensing call, if any,
/// is never confirmed (the worst case).
fn remember(f: &mut WorkerFacts, p: &Plan, tick: i64) {
    f.phase = Some(p.phase);
    f.drain_started_at = p.drain_started_at;
    f.license.deregistration_started_at = p.license.deregistration_started_at;
    if p.license.seat_may_be_held {
        f.license.seat = SeatState::MayBeHeld;
    }
    cloud_follows(&mut f.instance, p.step);
    f.now = f
        .now
        .checked_add(SignedDuration::from_secs(tick))
        .expect("in range");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_worker_that_may_hold_labs_is_never_stopped_or_terminated_before_its_drain_is_done(
        f in prop_oneof![worker_facts(), busy_worker_facts()],
    ) {
        let p = plan(&f);
        let may_hold_labs = matches!(f.phase, Some(Running | Draining))
            && matches!(&f.instance, InstanceFacts::Seen(i) if i.state == InstanceState::Running)
            && !(f.deleting && f.skip_drain);
        if may_hold_labs && !known_idle(&f) && !drain_timed_out(&f) {
            prop_assert!(
                !matches!(p.step, Step::Stop | Step::Terminate),
                "{:?} while usage is {:?} / {:?}", p.step, f.cml, f.platform
            );
        }
    }

    #[test]
    fn a_live_worker_moves_only_along_the_diagram(f in worker_facts()) {
        let mut f = f;
        f.deleting = false;
        if !may_be_unlaunched(f.phase) && f.instance == InstanceFacts::NotLaunched {
            f.instance = InstanceFacts::Missing { id: "i-1".into() };
        }
        let from = f.phase.unwrap_or(Pending);
        let p = plan(&f);
        prop_assert!(allowed(from, p.phase), "{from:?} -> {:?}", p.phase);
        prop_assert!(p.step != Step::Release, "only a deleted worker is released");
    }

    #[test]
    fn a_deleted_worker_drains_or_terminates(f in worker_facts()) {
        let mut f = f;
        f.deleting = true;
        let from = f.phase.unwrap_or(Pending);
        let p = plan(&f);
        let drains = p.phase == Draining && matches!(from, Running | Draining);
        prop_assert!(drains || p.phase == Terminating, "{from:?} -> {:?}", p.phase);
        let moves = matches!(p.step, Step::Launch { .. } | Step::Start | Step::Stop);
        prop_assert!(!moves, "{:?} for a deleted worker", p.step);
    }

    #[test]
    fn a_launch_is_never_repeated_for_a_settled_attempt(
        f in worker_facts(),
        outcomes in prop::collection::vec(0u8..3, 1..8),
    ) {
        let mut f = f;
        f.deleting = false;
        f.instance = InstanceFacts::NotLaunched;
        f.launch.started_at = Some(f.now);
        let mut settled: Vec<u32> = (1..=f.launch.attempts)
            .filter(|a| !(f.launch.token_outstanding && *a == f.launch.attempts))
            .collect();
        for outcome in outcomes {
            let p = plan(&f);
            let Step::Launch { attempt } = p.step else { break };
            prop_assert!(!settled.contains(&attempt), "attempt {attempt} again after {settled:?}");
            if f.launch.token_outstanding {
                prop_assert_eq!(attempt, f.launch.attempts.max(1), "an outstanding token is retried");
            }
            f.launch.attempts = attempt;
            // 0: transient (the token stays outstanding), 1: refused (settled), 2: launched.
            match outcome {
                0 => f.launch.token_outstanding = true,
                1 => {
                    f.launch.token_outstanding = false;
                    settled.push(attempt);
                }
                _ => {
                    f.phase = Some(Provisioning);
                    f.instance = seen(InstanceState::Pending);
                    let again = matches!(plan(&f).step, Step::Launch { .. });
                    prop_assert!(!again, "launched twice");
                    break;
                }
            }
        }
    }

    #[test]
    fn a_worker_with_a_recorded_instance_never_launches_another(f in worker_facts()) {
        let mut f = f;
        if f.instance == InstanceFacts::NotLaunched {
            f.instance = InstanceFacts::Missing { id: "i-1".into() };
        }
        let p = plan(&f);
        prop_assert!(!matches!(p.step, Step::Launch { .. }), "{:?} with {:?}", p.step, f.instance);
    }

    #[test]
    fn a_deletion_always_ends_in_release(f in worker_facts(), tick in 30i64..900) {
        let mut f = f;
        f.deleting = true;
        for _ in 0..2000 {
            let p = plan(&f);
            if p.step == Step::Release {
                return Ok(());
            }
            remember(&mut f, &p, tick);
        }
        prop_assert!(false, "not released: {:?}", plan(&f));
    }
}
