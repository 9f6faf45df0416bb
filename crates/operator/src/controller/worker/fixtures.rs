//! Test fixtures: what the Worker reconcile's pure steps take (a Worker, what was observed,
//! the plan, what was done), built without a cluster, a cloud or CML.

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::{
    act::{Acted, Cloud},
    observe::{Observed, ProbedCml},
};
use crate::{
    cml::{CmlError, CmlErrorKind, CmlReport},
    crd::{
        DesiredState, Worker, WorkerPhase, WorkerStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    licensing::LicenseFacts,
    phase_machine::{
        CmlFacts, InstanceFacts, LaunchFacts, LicensePlan, Plan, PlatformFacts, Reason, Recheck,
        Step, TemplateFacts, WorkerFacts,
    },
    provider::{Instance, InstanceState, Launched},
};

/// The time of every fixture: a fixed instant, `minute` minutes on.
pub fn at(minute: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + minute * 60).expect("time")
}

/// Worker `ns/w1` (generation 1) with `status`.
pub fn worker(status: WorkerStatus) -> Worker {
    let mut w: Worker = serde_json::from_value(json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
        "metadata": {"name": "w1", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": {"templateRef": {"name": "t"}}
    }))
    .expect("worker");
    w.status = Some(status);
    w
}

/// A status in `phase`, with nothing else known.
pub fn status(phase: WorkerPhase) -> WorkerStatus {
    WorkerStatus {
        phase: Some(phase),
        ..WorkerStatus::default()
    }
}

/// Sets condition `type_` in `s`, as an earlier reconcile would have.
pub fn condition(s: &mut WorkerStatus, type_: ConditionType, status: bool, reason: &str) {
    let c = NewCondition::new(type_, status, reason.to_owned(), format!("{reason} before"));
    let stamp = Stamp {
        generation: Some(1),
        now: at(-10),
    };
    conditions::set(&mut s.conditions, c, stamp);
}

/// What a reconcile observed of a worker in `phase` with no template, provider or CML.
pub fn observed(phase: WorkerPhase) -> Observed {
    Observed {
        facts: WorkerFacts {
            now: at(0),
            deleting: false,
            skip_drain: false,
            desired: DesiredState::Running,
            phase: Some(phase),
            template: TemplateFacts::Missing,
            launch: LaunchFacts::default(),
            instance: InstanceFacts::NotLaunched,
            cml: CmlFacts::NotProbed,
            platform: PlatformFacts::NotConfigured,
            drain_started_at: None,
            license: LicenseFacts::default(),
        },
        template: None,
        provider: None,
        cml: None,
        usage: None,
    }
}

/// CML answered the probe with `report`.
pub fn answered(report: CmlReport) -> Option<ProbedCml> {
    Some(ProbedCml {
        endpoint: "https://10.0.0.1:443".into(),
        answer: Ok(report),
        target: None,
    })
}

/// CML answered ready, version 2.9.0.
pub fn ready_cml() -> CmlReport {
    CmlReport {
        ready: true,
        version: Some("2.9.0".into()),
        ..CmlReport::default()
    }
}

/// The probe failed with `kind`.
pub fn unanswered(kind: CmlErrorKind) -> Option<ProbedCml> {
    Some(ProbedCml {
        endpoint: "https://10.0.0.1:443".into(),
        answer: Err(CmlError::new(kind, "no answer")),
        target: None,
    })
}

/// A plan that keeps the worker in `phase` and does nothing.
pub fn plan(phase: WorkerPhase) -> Plan {
    Plan {
        phase,
        step: Step::Wait,
        event: None,
        drain_started_at: None,
        waiting: None,
        recheck: Recheck::Steady,
        license: LicensePlan::default(),
    }
}

/// The cloud step came to `cloud`; no licensing call.
pub fn acted(cloud: Cloud) -> Acted {
    Acted {
        cloud,
        license: None,
    }
}

/// Instance `i-1` (m5zn.metal in us-east-1a), launched or adopted by tag.
pub fn launched(adopted: bool) -> Launched {
    Launched {
        instance: Instance {
            id: "i-1".into(),
            state: InstanceState::Pending,
            instance_type: "m5zn.metal".into(),
            availability_zone: Some("us-east-1a".into()),
            private_ip: None,
            public_ip: None,
            image_id: Some("ami-1".into()),
            launch_time: Some(at(0)),
            tags: Default::default(),
            state_reason: None,
        },
        adopted,
    }
}

/// One reconcile as its pure steps see it: the status stored, what was observed, the plan, what
/// was done, and the next status so far.
pub struct Reconcile {
    pub old: WorkerStatus,
    pub observed: Observed,
    pub plan: Plan,
    pub acted: Acted,
    pub next: WorkerStatus,
}

impl Reconcile {
    /// A Running worker that stays so and does nothing, its Ready condition already False for
    /// `CmlNotReady`.
    pub fn running() -> Reconcile {
        let mut old = status(WorkerPhase::Running);
        condition(&mut old, ConditionType::Ready, false, "CmlNotReady");
        Reconcile {
            next: old.clone(),
            old,
            observed: observed(WorkerPhase::Running),
            plan: plan(WorkerPhase::Running),
            acted: acted(Cloud::Done),
        }
    }

    /// The worker moves from its stored phase to `phase`.
    pub fn moves_to(&mut self, phase: WorkerPhase) {
        self.next.phase = Some(phase);
        self.plan.phase = phase;
    }

    /// The worker is in `phase`, as it was before.
    pub fn stays_in(&mut self, phase: WorkerPhase) {
        self.old.phase = Some(phase);
        self.moves_to(phase);
    }

    /// The plan makes a transition worth an Event.
    pub fn transition(&mut self, reason: Reason, message: &str) {
        self.plan.event = Some((reason, message.into()));
    }

    /// The Worker as stored.
    pub fn worker(&self) -> Worker {
        worker(self.old.clone())
    }
}
