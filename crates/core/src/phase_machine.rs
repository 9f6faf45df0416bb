//! The Worker phase machine: from what was observed, the phase a worker is in and the one cloud
//! step to take next.

use std::time::Duration;

use jiff::Timestamp;

use crate::{
    DesiredState, GoDuration, Instance, InstanceState, WorkerPhase,
    licensing::{self, Gate, LicenseFacts, LicenseNote, LicenseStep, Verdict},
};

/// The template as the worker sees it. Its timeouts come from its spec, so they hold whatever
/// the state of its image: a worker draining while the image does not resolve keeps its
/// template's `drainTimeout`.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplateFacts {
    /// The WorkerTemplate does not exist.
    Missing,
    /// Not reconciled yet: wait quietly, it is not a problem.
    Unresolved(Timeouts),
    /// Reconciled but not Ready: nothing is launched for it.
    NotReady {
        /// The Ready condition's reason.
        reason: String,
        /// The Ready condition's message.
        message: String,
        /// The timeouts it sets.
        timeouts: Timeouts,
    },
    /// Ready, with the timeouts it sets.
    Ready(Timeouts),
}

impl TemplateFacts {
    fn timeouts(&self) -> Timeouts {
        match self {
            TemplateFacts::Ready(t)
            | TemplateFacts::Unresolved(t)
            | TemplateFacts::NotReady { timeouts: t, .. } => *t,
            TemplateFacts::Missing => Timeouts::default(),
        }
    }
}

/// The template's timeouts that the phase machine enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `launchTimeout`: longest wait for a launched instance to run.
    pub launch: Duration,
    /// `readyTimeout`: longest wait, after launch, for CML to report ready.
    pub ready: Duration,
    /// `drainTimeout`: longest a drain waits for labs to end before it is forced.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            launch: Duration::from_secs(600),
            ready: Duration::from_secs(1800),
            drain: Duration::from_secs(4 * 3600),
        }
    }
}

/// The cloud's view of the worker's instance.
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceFacts {
    /// No instance was ever recorded for the worker.
    NotLaunched,
    /// An instance was recorded but the cloud does not know it.
    Missing {
        /// The recorded instance id.
        id: String,
    },
    /// The instance as the cloud reports it.
    Seen(Instance),
}

/// What CML on the worker said, when it was asked.
#[derive(Clone, Debug, PartialEq)]
pub enum CmlFacts {
    /// Not asked (e.g. the instance is not running).
    NotProbed,
    /// Ready.
    Ready {
        /// Lab nodes running on the worker; `None` when CML did not report them.
        running_nodes: Option<u32>,
    },
    /// Answered, but not ready.
    NotReady,
    /// Could not be asked, or gave no usable answer.
    Unreachable {
        /// What went wrong.
        message: String,
    },
}

/// What the Control Plane API says is placed on the worker.
#[derive(Clone, Debug, PartialEq)]
pub enum PlatformFacts {
    /// No Control Plane API configured: CML alone says whether the worker is busy.
    NotConfigured,
    /// Not asked (the instance is not running).
    NotAsked,
    /// The API's counts of lab instances on the worker.
    Known {
        /// Lab instances running.
        running: u32,
        /// Lab instances scheduled.
        scheduled: u32,
    },
    /// The API failed, or does not know the worker: usage unknown, never zero.
    Unknown {
        /// What went wrong.
        why: String,
    },
}

/// Launch bookkeeping from status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchFacts {
    /// Launch attempts made so far.
    pub attempts: u32,
    /// A token is recorded for attempt `attempts` and no answer settled it: retry that attempt.
    pub token_outstanding: bool,
    /// When the first launch attempt began; `launchTimeout` counts from here.
    pub started_at: Option<Timestamp>,
}

/// Everything the phase machine looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerFacts {
    /// The current time.
    pub now: Timestamp,
    /// The Worker is being deleted.
    pub deleting: bool,
    /// Marked skip-drain: on deletion, terminate without draining first.
    pub skip_drain: bool,
    /// Its `desiredState`.
    pub desired: DesiredState,
    /// The phase in its status; `None` for a new worker.
    pub phase: Option<WorkerPhase>,
    /// Its template.
    pub template: TemplateFacts,
    /// Launch bookkeeping.
    pub launch: LaunchFacts,
    /// Its instance.
    pub instance: InstanceFacts,
    /// What CML on it said.
    pub cml: CmlFacts,
    /// What the Control Plane API says is placed on it.
    pub platform: PlatformFacts,
    /// When the current drain began, from status.
    pub drain_started_at: Option<Timestamp>,
    /// Its Smart Licensing.
    pub license: LicenseFacts,
}

/// The one cloud step to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do in the cloud now.
    Wait,
    /// Launch with the token of `attempt` (derived from the UID and the attempt).
    Launch {
        /// The attempt, counted from 1.
        attempt: u32,
    },
    /// Start the stopped instance.
    Start,
    /// Stop the instance.
    Stop,
    /// Terminate the instance.
    Terminate,
    /// Cleanup is complete: let the object go.
    Release,
}

/// Why the worker changed, as an Event reason (a bounded set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum Reason {
    /// The WorkerTemplate does not exist.
    TemplateNotFound,
    /// The WorkerTemplate is not Ready.
    TemplateNotReady,
    /// An instance is being launched.
    Launching,
    /// CML is ready: the worker runs.
    Provisioned,
    /// No instance running within `launchTimeout`.
    LaunchTimeout,
    /// CML not ready within `readyTimeout`.
    ReadyTimeout,
    /// The instance is gone, or going, without the controller asking.
    InstanceVanished,
    /// Draining began: no new labs.
    DrainStarted,
    /// A drain was called off: `desiredState` is Running again.
    DrainCancelled,
    /// No labs left: the drain is done.
    DrainCompleted,
    /// Labs still running after `drainTimeout`: the drain is forced.
    DrainTimeout,
    /// The instance is being stopped.
    Stopping,
    /// The instance stopped.
    Stopped,
    /// The instance is being started.
    Starting,
    /// The instance is being terminated.
    Terminating,
    /// The instance is terminated: the worker goes.
    Terminated,
    /// Not licensed within `registrationTimeout`.
    #[strum(to_string = "LicenseRegistrationTimeout")]
    RegistrationTimeout,
}

impl Reason {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [Reason] = <Reason as strum::VariantArray>::VARIANTS;

    /// The reason as an Event spells it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Warnings call for a person's attention.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::TemplateNotFound
                | Reason::TemplateNotReady
                | Reason::LaunchTimeout
                | Reason::ReadyTimeout
                | Reason::InstanceVanished
                | Reason::DrainTimeout
                | Reason::RegistrationTimeout
        )
    }
}

/// How soon to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recheck {
    /// Something is in motion: poll.
    Soon,
    /// Steady state: the periodic resync.
    Steady,
}

/// Licensing's part of a plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LicensePlan {
    /// The licensing call to make now.
    pub step: Option<LicenseStep>,
    /// The `Licensed` condition; `None` leaves it as it is.
    pub note: Option<LicenseNote>,
    /// When the current deregistration began, to record in status.
    pub deregistration_started_at: Option<Timestamp>,
    /// A stop or terminate goes on although the seat's return was not confirmed.
    pub seat_may_be_held: bool,
}

/// The outcome of the phase machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The phase the worker is in.
    pub phase: WorkerPhase,
    /// The cloud step to take.
    pub step: Step,
    /// A transition worth an Event, with its message.
    pub event: Option<(Reason, String)>,
    /// When the current drain began, to record in status; `None` outside a drain.
    pub drain_started_at: Option<Timestamp>,
    /// What a drain is waiting for, to show in status.
    pub waiting: Option<String>,
    /// How soon to look again.
    pub recheck: Recheck,
    /// Licensing's part.
    pub license: LicensePlan,
}

impl Plan {
    fn new(phase: WorkerPhase, step: Step, recheck: Recheck) -> Plan {
        Plan {
            phase,
            step,
            event: None,
            drain_started_at: None,
            waiting: None,
            recheck,
            license: LicensePlan::default(),
        }
    }

    fn licensing(mut self, step: Option<LicenseStep>, note: LicenseNote) -> Plan {
        self.license.step = step;
        self.license.note = Some(note);
        self
    }

    fn because(mut self, reason: Reason, message: impl Into<String>) -> Plan {
        self.event = Some((reason, message.into()));
        self
    }

    fn draining_since(mut self, at: Option<Timestamp>) -> Plan {
        self.drain_started_at = at;
        self
    }

    fn waiting_for(mut self, what: String) -> Plan {
        self.waiting = Some(what);
        self
    }
}

/// Why a drain is not complete: labs still running or placed, or a count that could not be
/// read (which never counts as zero), and when `drainTimeout` will force it.
fn drain_wait(f: &WorkerFacts, since: Timestamp, timeout: Duration) -> String {
    let mut what = Vec::new();
    match &f.cml {
        CmlFacts::Ready {
            running_nodes: Some(0),
        } => {}
        CmlFacts::Ready {
            running_nodes: Some(n),
        } => what.push(format!("{n} lab nodes still running")),
        CmlFacts::Ready {
            running_nodes: None,
        } => what.push("running lab nodes unknown (CML did not report them)".to_owned()),
        CmlFacts::NotReady => what.push("running lab nodes unknown (CML is not ready)".to_owned()),
        CmlFacts::Unreachable { message } => {
            what.push(format!("running lab nodes unknown ({message})"))
        }
        CmlFacts::NotProbed => {
            what.push("running lab nodes unknown (CML not asked yet)".to_owned())
        }
    }
    match &f.platform {
        PlatformFacts::NotConfigured | PlatformFacts::Known { running: 0, scheduled: 0 } => {}
        PlatformFacts::Known { running, scheduled } => what.push(format!(
            "the Control Plane API has {running} lab instances running and {scheduled} scheduled here"
        )),
        PlatformFacts::NotAsked => {
            what.push("lab instances unknown (Control Plane API not asked yet)".to_owned())
        }
        PlatformFacts::Unknown { why } => what.push(format!("lab instances unknown ({why})")),
    }
    let what = what.join("; ");
    match since.checked_add(timeout) {
        Ok(deadline) => {
            let deadline = Timestamp::from_second(deadline.as_second()).unwrap_or(deadline);
            format!("{what}; waiting, forced after drainTimeout at {deadline}")
        }
        Err(_) => format!("{what}; waiting"),
    }
}

/// How far past its timeout a phase may run before a worker counts as overdue: the reconcile
/// that acts on the timeout, and a license seat's release, fit well within it.
pub const OVERDUE_SLACK: Duration = Duration::from_secs(300);

/// Whether a worker that has been in `phase` since `since` is stuck: past the timeout that
/// should have moved it on, by more than [`OVERDUE_SLACK`]. `since` is when the launch (or the
/// start) began for Pending, Provisioning and Starting, and when the drain began for Draining;
/// the other phases have no timeout and are never overdue.
pub fn overdue(phase: WorkerPhase, since: Timestamp, t: Timeouts, now: Timestamp) -> bool {
    use WorkerPhase::*;
    let bound = match phase {
        Pending | Provisioning | Starting => t.launch + t.ready,
        Draining => t.drain,
        Running | Stopping | Stopped | Terminating | Failed => return false,
    };
    elapsed(now, Some(since)) > bound + OVERDUE_SLACK
}

fn elapsed(now: Timestamp, since: Option<Timestamp>) -> Duration {
    since
        .and_then(|s| now.duration_since(s).try_into().ok())
        .unwrap_or(Duration::ZERO)
}

fn human(d: Duration) -> String {
    GoDuration::from(d).to_string()
}

/// Decides the phase and the next step. Only the phase machine's own transitions raise an event.
pub fn plan(f: &WorkerFacts) -> Plan {
    let phase = f.phase.unwrap_or(WorkerPhase::Pending);
    let plan = if f.deleting {
        plan_delete(f, phase)
    } else {
        plan_live(f, phase)
    };
    let plan = with_steady_note(f, seat_gate(f, plan));
    // An event only for a real change of phase or a warning worth repeating once.
    match (&plan.event, f.phase) {
        (Some((reason, _)), Some(old)) if old == plan.phase && !reason.is_warning() => Plan {
            event: None,
            ..plan
        },
        _ => plan,
    }
}

/// A stop or terminate waits while the worker's license seat is given back (the drain, if any,
/// is over by then): in the phase it was decided from, so labs that start meanwhile are
/// drained again rather than cut.
fn seat_gate(f: &WorkerFacts, plan: Plan) -> Plan {
    if !matches!(plan.step, Step::Stop | Step::Terminate) {
        return plan;
    }
    match licensing::gate(&f.license, f.now) {
        Gate::Open => plan,
        Gate::OpenMayBeHeld(note) => {
            let mut plan = plan;
            plan.license.note = Some(note);
            plan.license.seat_may_be_held = true;
            plan
        }
        Gate::Hold { step, since, note } => {
            let was = f.phase.unwrap_or(WorkerPhase::Pending);
            let draining = matches!(was, WorkerPhase::Running | WorkerPhase::Draining)
                && matches!(plan.phase, WorkerPhase::Stopping | WorkerPhase::Terminating);
            let (phase, drain_since) = if draining {
                (WorkerPhase::Draining, f.drain_started_at.or(Some(f.now)))
            } else {
                (plan.phase, plan.drain_started_at)
            };
            let waiting = note.message.clone();
            let mut held = Plan::new(phase, Step::Wait, Recheck::Soon)
                .draining_since(drain_since)
                .waiting_for(waiting)
                .licensing(step, note);
            held.license.deregistration_started_at = Some(since);
            // A warning (a timeout that fails the worker) is still worth its Event.
            held.event = plan.event.filter(|(reason, _)| reason.is_warning());
            held
        }
    }
}

/// The `Licensed` condition when registration and deregistration said nothing.
fn with_steady_note(f: &WorkerFacts, mut plan: Plan) -> Plan {
    if seat_lost(f) {
        plan.license.seat_may_be_held = true;
        plan.license.note = Some(licensing::seat_lost_note());
    }
    if plan.license.note.is_none() {
        plan.license.note = licensing::steady_note(&f.license, f.license.seat_now());
    }
    plan
}

/// The machine is down or going while its seat was neither given back nor reported lost.
fn seat_lost(f: &WorkerFacts) -> bool {
    use licensing::SeatState::*;
    let counting = matches!(f.license.seat_now(), Registering | Held | Deregistering);
    let down = match &f.instance {
        InstanceFacts::NotLaunched => false,
        InstanceFacts::Missing { .. } => true,
        InstanceFacts::Seen(i) => {
            !matches!(i.state, InstanceState::Pending | InstanceState::Running)
        }
    };
    counting && down
}

/// CML is ready: the worker runs once it is licensed (when the template manages licenses).
fn when_licensed(f: &WorkerFacts, waiting: WorkerPhase, message: &str) -> Plan {
    use WorkerPhase::*;
    match licensing::verdict(&f.license, f.now) {
        Verdict::Licensed => {
            let message = match &f.license.policy {
                Some(p) => format!("{message}; licensed as {}", p.product),
                None => message.to_owned(),
            };
            Plan::new(Running, Step::Wait, Recheck::Steady).because(Reason::Provisioned, message)
        }
        Verdict::Pending(step, note) => {
            let waiting_for = note.message.clone();
            Plan::new(waiting, Step::Wait, Recheck::Soon)
                .waiting_for(waiting_for)
                .licensing(step, note)
        }
        Verdict::TimedOut(note) => {
            let message = note.message.clone();
            Plan::new(Failed, Step::Terminate, Recheck::Steady)
                .because(Reason::RegistrationTimeout, message)
                .licensing(None, note)
        }
    }
}

fn terminated(instance: &InstanceFacts) -> bool {
    match instance {
        InstanceFacts::NotLaunched | InstanceFacts::Missing { .. } => true,
        InstanceFacts::Seen(i) => i.state == InstanceState::Terminated,
    }
}

/// Idle only when every source that counts says zero: CML's running nodes and, when configured,
/// the Control Plane API's running and scheduled instances. Unknown is never idle.
fn idle(f: &WorkerFacts) -> bool {
    let cml_idle = matches!(
        f.cml,
        CmlFacts::Ready {
            running_nodes: Some(0)
        }
    );
    let platform_idle = matches!(
        f.platform,
        PlatformFacts::NotConfigured
            | PlatformFacts::Known {
                running: 0,
                scheduled: 0
            }
    );
    cml_idle && platform_idle
}

fn plan_delete(f: &WorkerFacts, phase: WorkerPhase) -> Plan {
    use WorkerPhase::*;
    if terminated(&f.instance) {
        return Plan::new(Terminating, Step::Release, Recheck::Soon).because(
            Reason::Terminated,
            "instance terminated; removing the worker",
        );
    }
    let InstanceFacts::Seen(instance) = &f.instance else {
        return Plan::new(Terminating, Step::Release, Recheck::Soon);
    };
    let drain_timeout = f.template.timeouts().drain;
    let drainable = !f.skip_drain
        && matches!(phase, Running | Draining)
        && instance.state == InstanceState::Running;
    if drainable && !idle(f) {
        let since = f.drain_started_at.unwrap_or(f.now);
        if elapsed(f.now, Some(since)) < drain_timeout {
            return Plan::new(Draining, Step::Wait, Recheck::Soon)
                .because(
                    Reason::DrainStarted,
                    "worker deleted: draining before termination",
                )
                .draining_since(Some(since))
                .waiting_for(drain_wait(f, since, drain_timeout));
        }
        return Plan::new(Terminating, Step::Terminate, Recheck::Soon).because(
            Reason::DrainTimeout,
            format!(
                "labs still running after drainTimeout {}; terminating anyway",
                human(drain_timeout)
            ),
        );
    }
    let why = if f.skip_drain {
        "worker deleted with skip-drain"
    } else {
        "worker deleted"
    };
    Plan::new(Terminating, Step::Terminate, Recheck::Soon).because(
        Reason::Terminating,
        format!("{why}: terminating {}", instance.id),
    )
}

/// A worker not being deleted: a missing or gone instance fails it, a failed worker keeps its
/// instance down, and otherwise the phase decides.
fn plan_live(f: &WorkerFacts, phase: WorkerPhase) -> Plan {
    use WorkerPhase::*;
    let instance = match &f.instance {
        InstanceFacts::NotLaunched => return plan_unlaunched(f, phase),
        InstanceFacts::Missing { id } => {
            return match phase {
                Failed => Plan::new(Failed, Step::Wait, Recheck::Steady),
                _ => Plan::new(Failed, Step::Wait, Recheck::Steady).because(
                    Reason::InstanceVanished,
                    format!("instance {id} no longer exists"),
                ),
            };
        }
        InstanceFacts::Seen(i) => i,
    };
    if phase == Failed {
        let step = if instance.state.is_gone() {
            Step::Wait
        } else {
            Step::Terminate
        };
        return Plan::new(Failed, step, Recheck::Steady);
    }
    if instance.state.is_gone() {
        let why = instance
            .state_reason
            .as_deref()
            .unwrap_or("no reason given");
        return Plan::new(Failed, Step::Wait, Recheck::Steady).because(
            Reason::InstanceVanished,
            format!(
                "instance {} is {} behind the controller's back: {why}",
                instance.id,
                instance.state.as_str()
            ),
        );
    }
    plan_phase(f, phase, instance)
}

/// A worker with a live instance: the next step by the phase it is in.
fn plan_phase(f: &WorkerFacts, phase: WorkerPhase, instance: &Instance) -> Plan {
    use WorkerPhase::*;
    let timeouts = f.template.timeouts();
    let cml_ready = matches!(f.cml, CmlFacts::Ready { .. });
    match phase {
        Pending | Provisioning => plan_provisioning(f, instance, timeouts, cml_ready),
        Running => match f.desired {
            DesiredState::Draining | DesiredState::Stopped => {
                Plan::new(Draining, Step::Wait, Recheck::Soon)
                    .because(Reason::DrainStarted, "draining: no new labs")
                    .draining_since(Some(f.now))
            }
            DesiredState::Running => match instance.state {
                InstanceState::Stopped => Plan::new(Starting, Step::Start, Recheck::Soon)
                    .because(Reason::Starting, "instance was stopped; starting it"),
                _ => Plan::new(Running, Step::Wait, Recheck::Steady),
            },
        },
        Draining => plan_drain(f, instance, timeouts),
        Stopping => match instance.state {
            InstanceState::Stopped => Plan::new(Stopped, Step::Wait, Recheck::Steady)
                .because(Reason::Stopped, "instance stopped"),
            InstanceState::Running | InstanceState::Pending => {
                Plan::new(Stopping, Step::Stop, Recheck::Soon)
            }
            _ => Plan::new(Stopping, Step::Wait, Recheck::Soon),
        },
        Stopped => match (f.desired, instance.state) {
            (DesiredState::Running, InstanceState::Stopped) => {
                Plan::new(Starting, Step::Start, Recheck::Soon)
                    .because(Reason::Starting, "starting the stopped instance")
            }
            (DesiredState::Running, InstanceState::Stopping) => {
                Plan::new(Stopped, Step::Wait, Recheck::Soon)
            }
            (_, InstanceState::Running | InstanceState::Pending) => {
                Plan::new(Starting, Step::Wait, Recheck::Soon)
            }
            _ => Plan::new(Stopped, Step::Wait, Recheck::Steady),
        },
        Starting => match instance.state {
            InstanceState::Running if cml_ready => {
                when_licensed(f, Starting, "started; CML is ready")
            }
            InstanceState::Stopped => Plan::new(Starting, Step::Start, Recheck::Soon),
            _ => Plan::new(Starting, Step::Wait, Recheck::Soon),
        },
        Terminating => Plan::new(Terminating, Step::Terminate, Recheck::Soon),
        Failed => Plan::new(Failed, Step::Wait, Recheck::Steady),
    }
}

/// Launched, not running yet: waits for the instance to run (within `launchTimeout`) and then
/// for CML to be ready (within `readyTimeout`).
fn plan_provisioning(
    f: &WorkerFacts,
    instance: &Instance,
    timeouts: Timeouts,
    cml_ready: bool,
) -> Plan {
    use WorkerPhase::*;
    match instance.state {
        InstanceState::Running if cml_ready => when_licensed(f, Provisioning, "CML is ready"),
        InstanceState::Running => {
            let since = instance.launch_time.or(f.launch.started_at);
            if elapsed(f.now, since) > timeouts.ready {
                Plan::new(Failed, Step::Terminate, Recheck::Steady).because(
                    Reason::ReadyTimeout,
                    format!(
                        "CML not ready within readyTimeout {}",
                        human(timeouts.ready)
                    ),
                )
            } else {
                Plan::new(Provisioning, Step::Wait, Recheck::Soon)
            }
        }
        InstanceState::Pending => {
            if elapsed(f.now, f.launch.started_at) > timeouts.launch {
                Plan::new(Failed, Step::Terminate, Recheck::Steady).because(
                    Reason::LaunchTimeout,
                    format!(
                        "instance {} not running within launchTimeout {}",
                        instance.id,
                        human(timeouts.launch)
                    ),
                )
            } else {
                Plan::new(Provisioning, Step::Wait, Recheck::Soon)
            }
        }
        InstanceState::Stopped => Plan::new(Starting, Step::Start, Recheck::Soon)
            .because(Reason::Starting, "instance was stopped; starting it"),
        _ => Plan::new(Provisioning, Step::Wait, Recheck::Soon),
    }
}

fn plan_drain(f: &WorkerFacts, instance: &Instance, timeouts: Timeouts) -> Plan {
    use WorkerPhase::*;
    let started = f.drain_started_at.unwrap_or(f.now);
    let since = Some(started);
    if f.desired == DesiredState::Running {
        return Plan::new(Running, Step::Wait, Recheck::Steady)
            .because(Reason::DrainCancelled, "desiredState is Running again");
    }
    if instance.state != InstanceState::Running {
        return Plan::new(Stopping, Step::Stop, Recheck::Soon)
            .because(Reason::Stopping, "instance not running; nothing to drain");
    }
    if idle(f) {
        return Plan::new(Stopping, Step::Stop, Recheck::Soon).because(
            Reason::DrainCompleted,
            "no labs running or placed; stopping the instance",
        );
    }
    if elapsed(f.now, since) >= timeouts.drain {
        return Plan::new(Stopping, Step::Stop, Recheck::Soon).because(
            Reason::DrainTimeout,
            format!(
                "labs still running after drainTimeout {}; stopping anyway",
                human(timeouts.drain)
            ),
        );
    }
    Plan::new(Draining, Step::Wait, Recheck::Soon)
        .draining_since(since)
        .waiting_for(drain_wait(f, started, timeouts.drain))
}

fn plan_unlaunched(f: &WorkerFacts, phase: WorkerPhase) -> Plan {
    use WorkerPhase::*;
    if phase == Failed {
        return Plan::new(Failed, Step::Wait, Recheck::Steady);
    }
    if f.desired != DesiredState::Running {
        // Nothing runs, so nothing to drain or stop.
        return Plan::new(Stopped, Step::Wait, Recheck::Steady);
    }
    let timeouts = match &f.template {
        TemplateFacts::Missing => {
            return Plan::new(Pending, Step::Wait, Recheck::Steady).because(
                Reason::TemplateNotFound,
                "the WorkerTemplate does not exist",
            );
        }
        TemplateFacts::Unresolved(_) => return Plan::new(Pending, Step::Wait, Recheck::Soon),
        TemplateFacts::NotReady {
            reason, message, ..
        } => {
            return Plan::new(Pending, Step::Wait, Recheck::Steady).because(
                Reason::TemplateNotReady,
                format!("the WorkerTemplate is not Ready ({reason}): {message}"),
            );
        }
        TemplateFacts::Ready(t) => *t,
    };
    if elapsed(f.now, f.launch.started_at) > timeouts.launch {
        return Plan::new(Failed, Step::Wait, Recheck::Steady).because(
            Reason::LaunchTimeout,
            format!(
                "no instance launched within launchTimeout {}",
                human(timeouts.launch)
            ),
        );
    }
    let attempt = if f.launch.token_outstanding {
        f.launch.attempts.max(1)
    } else {
        f.launch.attempts + 1
    };
    Plan::new(Pending, Step::Launch { attempt }, Recheck::Soon)
        .because(Reason::Launching, "launching an instance")
}

#[cfg(test)]
mod tests;
