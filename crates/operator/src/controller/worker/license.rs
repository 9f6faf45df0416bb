//! The worker's Smart Licensing, in the reconcile's steps after observing (its facts are
//! gathered in `observe::license`): the one licensing call the plan asks for, the `license`
//! status and `Licensed` condition, and the Events of a seat that changes hands. The token is
//! read only to register and never shown.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{context::WorkerContext, observe::Observed};
use crate::{
    cml::{Deregistration, LicenseAnswer, LicenseToken, LicenseTransport, RegistrationRequest},
    control_plane::ScalingEvent,
    controller::{events::EventSpec, reasons},
    crd::{LicenseStatus, LicensingSpec, SeatState, Worker, WorkerPhase, WorkerTemplate},
    licensing::{self, Answer, LicenseNote, LicenseReason, LicenseStep, LicenseView},
    phase_machine::Plan,
};

/// What one licensing call did.
pub struct LicenseCall {
    pub step: LicenseStep,
    pub answer: Answer,
}

/// Makes the licensing call the plan asks for, if any.
pub async fn call(
    worker: &Worker,
    ctx: &WorkerContext,
    plan: &Plan,
    observed: &Observed,
) -> Option<LicenseCall> {
    let step = plan.license.step.clone()?;
    let answer = match answer(worker, ctx, &step, observed).await {
        Ok(a) => a,
        Err(why) => Answer::Failed(why),
    };
    ctx.metrics.license_call(operation(&step), outcome(&answer));
    Some(LicenseCall { step, answer })
}

async fn answer(
    worker: &Worker,
    ctx: &WorkerContext,
    step: &LicenseStep,
    observed: &Observed,
) -> Result<Answer, String> {
    let (Some(target), Some(template), Some(chosen)) = (
        observed.cml_target(),
        &observed.template,
        &observed.provider,
    ) else {
        return Err("CML cannot be asked: the instance is not running".into());
    };
    let kind = chosen.kind;
    let cml = ctx
        .cml(kind)
        .ok_or_else(|| format!("no CML client for provider {}", kind.as_str()))?;
    let answer = match step {
        LicenseStep::Register => {
            let spec = template
                .spec
                .licensing
                .as_ref()
                .ok_or("the template no longer manages licenses")?;
            let request = registration(worker, ctx, template, spec, observed).await?;
            from_answer(
                cml.register(target, &request)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        LicenseStep::SetNodeCount { id, count } => from_answer(
            cml.set_feature(target, id, *count)
                .await
                .map_err(|e| e.to_string())?,
        ),
        LicenseStep::Deregister => {
            from_deregistration(cml.deregister(target).await.map_err(|e| e.to_string())?)
        }
    };
    Ok(answer)
}

/// The registration request: the token from its Secret, the transport, and the product only
/// when CML runs another (CML refuses to set the active one again).
async fn registration(
    worker: &Worker,
    ctx: &WorkerContext,
    template: &WorkerTemplate,
    spec: &LicensingSpec,
    observed: &Observed,
) -> Result<RegistrationRequest, String> {
    let namespace = worker.namespace().unwrap_or_default();
    let secret = &spec.token_secret_ref.name;
    let token = ctx
        .secrets
        .key(&ctx.client, &namespace, secret, "token")
        .await
        .map_err(|e| e.to_string())?;
    let token = String::from_utf8(token)
        .map(|t| t.trim().to_owned())
        .map_err(|_| format!("Secret {namespace}/{secret}: key token is not text"))?;
    let product = spec.product(template.spec.license_type);
    let active = match &observed.facts.license.view {
        LicenseView::Seen(s) => s.product.clone(),
        _ => None,
    };
    Ok(RegistrationRequest {
        transport: spec.transport.as_ref().map(|t| LicenseTransport {
            ssms: t.satellite_url.clone(),
            proxy_server: t.proxy.as_ref().map(|p| p.server.clone()),
            proxy_port: t.proxy.as_ref().map(|p| p.port),
        }),
        product: (active.as_deref() != Some(product.as_str())).then_some(product),
        token: LicenseToken(token),
    })
}

fn from_answer(a: LicenseAnswer) -> Answer {
    match a {
        LicenseAnswer::Accepted => Answer::Accepted,
        LicenseAnswer::Busy(_) => Answer::Busy,
        LicenseAnswer::Refused(why) => Answer::Refused(why),
    }
}

fn from_deregistration(d: Deregistration) -> Answer {
    match d {
        Deregistration::Freed => Answer::Freed,
        Deregistration::LocalOnly => Answer::LocalOnly,
        Deregistration::NodesRunning(_) => Answer::NodesRunning,
        Deregistration::NotRegistered(_) => Answer::NotRegistered,
        Deregistration::Busy(_) => Answer::Busy,
        Deregistration::Refused(why) => Answer::Refused(why),
    }
}

fn operation(step: &LicenseStep) -> &'static str {
    match step {
        LicenseStep::Register => "register",
        LicenseStep::SetNodeCount { .. } => "set_node_count",
        LicenseStep::Deregister => "deregister",
    }
}

fn outcome(answer: &Answer) -> &'static str {
    match answer {
        Answer::Accepted => "accepted",
        Answer::Busy => "busy",
        Answer::Refused(_) => "refused",
        Answer::Freed => "freed",
        Answer::LocalOnly => "local_only",
        Answer::NodesRunning => "nodes_running",
        Answer::NotRegistered => "not_registered",
        Answer::Failed(_) => "failed",
    }
}

/// The `license` status: what CML said (kept from before when it could not say), the seat
/// after this reconcile, its timers and the backoff.
pub fn status(
    old: Option<&LicenseStatus>,
    observed: &Observed,
    plan: &Plan,
    call: Option<&LicenseCall>,
) -> Option<LicenseStatus> {
    let facts = &observed.facts.license;
    let now = observed.facts.now;
    let report = observed.cml_report().and_then(|r| r.license.as_ref());
    if facts.policy.is_none() && old.is_none() && report.is_none() {
        return None;
    }
    let mut s = old.cloned().unwrap_or_default();
    if let Some(l) = report {
        s.product_instance_id = l.product_instance.clone().or(s.product_instance_id);
        s.hostname = l.hostname.clone().or(s.hostname);
        s.registration = l.registration.clone();
        s.authorization = l.authorization.clone();
        s.authorization_expires = l.authorization_expires.clone();
        s.product = l.product.clone();
    }
    let mut seat = facts.seat_now();
    let deregistering = plan.license.deregistration_started_at.is_some();
    if deregistering && s.deregistration_started_at.is_none() {
        // A deregistration backs off on its own count, not the registration's.
        s.attempts = 0;
    }
    if let Some(c) = call {
        seat = licensing::seat_answered(seat, &c.step, &c.answer);
        s.attempts = s.attempts.saturating_add(1);
        s.retry_after = now
            .checked_add(licensing::retry_delay(s.attempts))
            .ok()
            .map(Time);
        if c.step == LicenseStep::Register && s.registration_started_at.is_none() {
            s.registration_started_at = Some(Time(now));
        }
    } else if matches!(seat, SeatState::Held | SeatState::Free) {
        s.attempts = 0;
        s.retry_after = None;
    }
    if plan.license.seat_may_be_held {
        seat = SeatState::MayBeHeld;
    }
    let registering = matches!(
        plan.phase,
        WorkerPhase::Provisioning | WorkerPhase::Starting | WorkerPhase::Failed
    );
    if seat == SeatState::Held || !registering {
        s.registration_started_at = None;
    }
    s.deregistration_started_at = plan.license.deregistration_started_at.map(Time);
    s.seat = seat;
    Some(s)
}

/// The `Licensed` condition's content: the plan's, unless CML's answer says more.
pub fn note(plan: &Plan, call: Option<&LicenseCall>) -> Option<LicenseNote> {
    let answered = call.and_then(|c| match (&c.step, &c.answer) {
        (_, Answer::Refused(why)) => Some(LicenseNote {
            licensed: false,
            reason: LicenseReason::RegistrationRefused,
            message: format!("CML refused: {why}"),
        }),
        (LicenseStep::Deregister, Answer::NodesRunning) => Some(LicenseNote {
            licensed: false,
            reason: LicenseReason::Deregistering,
            message: "CML still runs lab nodes: the seat stays until they end (the drain goes \
                      on)"
            .into(),
        }),
        (_, Answer::Failed(why)) => Some(LicenseNote {
            licensed: false,
            reason: plan
                .license
                .note
                .as_ref()
                .map_or(LicenseReason::Unknown, |n| n.reason),
            message: format!("licensing call failed: {why}"),
        }),
        _ => None,
    });
    answered.or_else(|| plan.license.note.clone())
}

/// Events of a seat that changed hands: registered, given back, or maybe left held.
pub fn seat_events(old: Option<&LicenseStatus>, next: Option<&LicenseStatus>) -> Vec<EventSpec> {
    let before = old.map(|s| s.seat).unwrap_or_default();
    let Some(next) = next else {
        return Vec::new();
    };
    let who = format!(
        "product instance {} (host {})",
        next.product_instance_id.as_deref().unwrap_or("unknown"),
        next.hostname.as_deref().unwrap_or("unknown")
    );
    let event = match (before, next.seat) {
        (b, SeatState::Held) if b != SeatState::Held => EventSpec::normal(
            LicenseReason::Registered.as_str(),
            "License",
            format!(
                "registered as {}: {who}",
                next.product.as_deref().unwrap_or("an unknown product")
            ),
        ),
        (SeatState::Held | SeatState::Deregistering | SeatState::Registering, SeatState::Free) => {
            EventSpec::normal(
                reasons::LICENSE_DEREGISTERED,
                "License",
                format!("license seat given back: {who}"),
            )
        }
        (b, SeatState::MayBeHeld) if b != SeatState::MayBeHeld => EventSpec::warning(
            LicenseReason::SeatMayBeHeld.as_str(),
            "License",
            format!(
                "the license seat may still be held by {who}: release it in the Smart Software \
                 Manager (docs/operations.md, runbook \"A license seat may be held\")"
            ),
        ),
        _ => return Vec::new(),
    };
    vec![event]
}

/// When the seat was just reported as maybe held: the time, for the audit record.
pub fn newly_may_be_held(old: Option<&LicenseStatus>, next: Option<&LicenseStatus>) -> bool {
    let before = old.map(|s| s.seat).unwrap_or_default();
    next.is_some_and(|n| n.seat == SeatState::MayBeHeld) && before != SeatState::MayBeHeld
}

/// The audit record of a seat just reported as maybe held, for the platform's trail.
pub fn audit(worker: &Worker, next: &LicenseStatus, message: &str, now: Timestamp) -> ScalingEvent {
    let namespace = worker.namespace().unwrap_or_default();
    let instance = next.product_instance_id.as_deref().unwrap_or("unknown");
    ScalingEvent {
        id: format!(
            "{}-license_seat_may_be_held-{instance}",
            worker.uid().unwrap_or_default()
        ),
        action: "license_seat_may_be_held".into(),
        worker: Some(format!("{namespace}/{}", worker.name_any())),
        template: format!("{namespace}/{}", worker.spec.template_ref.name),
        reason: message.to_owned(),
        triggered_by: "license".into(),
        time: Timestamp::from_second(now.as_second())
            .unwrap_or(now)
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        cml::{CmlReport, LicenseReport},
        controller::worker::fixtures::{answered, at, observed, plan},
        licensing::{COMPLETED, IN_COMPLIANCE, LicensePolicy, LicenseSeen},
    };

    /// What `status` decides from: the stored license status, the observation, the plan and
    /// the licensing call made.
    struct LicenseCase {
        old: Option<LicenseStatus>,
        observed: Observed,
        plan: Plan,
        call: Option<LicenseCall>,
    }

    impl LicenseCase {
        /// A booting worker whose template manages licenses; no license status yet, CML not
        /// asked, no call.
        fn new() -> LicenseCase {
            let mut observed = observed(WorkerPhase::Provisioning);
            observed.facts.license.policy = Some(LicensePolicy {
                product: "CML_Enterprise".into(),
                expansion_nodes: None,
                registration_timeout: Duration::from_secs(600),
                deregistration_timeout: Duration::from_secs(120),
            });
            LicenseCase {
                old: None,
                observed,
                plan: plan(WorkerPhase::Provisioning),
                call: None,
            }
        }

        /// The license status stored before, as `old` makes it from the default.
        fn before(&mut self, old: fn(&mut LicenseStatus)) {
            let mut s = LicenseStatus::default();
            old(&mut s);
            self.observed.facts.license.seat = s.seat;
            self.old = Some(s);
        }

        fn called(&mut self, step: LicenseStep, answer: Answer) {
            self.call = Some(LicenseCall { step, answer });
        }

        /// CML says it is registered and authorized.
        fn cml_licensed(&mut self) {
            self.observed.facts.license.view = LicenseView::Seen(LicenseSeen {
                registration: Some(COMPLETED.into()),
                authorization: Some(IN_COMPLIANCE.into()),
                ..LicenseSeen::default()
            });
        }
    }

    /// What the table checks of a license status; times in seconds (minutes for the clocks)
    /// from the fixtures' now.
    #[derive(Debug, Default, PartialEq)]
    struct Seen<'a> {
        seat: SeatState,
        attempts: u32,
        retry_in_secs: Option<i64>,
        registering_since_minute: Option<i64>,
        deregistering_since_minute: Option<i64>,
        registration: Option<&'a str>,
        product_instance: Option<&'a str>,
    }

    fn seen(s: &LicenseStatus) -> Seen<'_> {
        let now = at(0);
        let minute = |t: &Option<Time>| t.as_ref().map(|t| t.0.duration_since(now).as_secs() / 60);
        Seen {
            seat: s.seat,
            attempts: s.attempts,
            retry_in_secs: s
                .retry_after
                .as_ref()
                .map(|t| t.0.duration_since(now).as_secs()),
            registering_since_minute: minute(&s.registration_started_at),
            deregistering_since_minute: minute(&s.deregistration_started_at),
            registration: s.registration.as_deref(),
            product_instance: s.product_instance_id.as_deref(),
        }
    }

    #[test]
    fn the_license_status_keeps_what_cml_said_the_seat_its_clocks_and_the_backoff() {
        type Row = (&'static str, fn(&mut LicenseCase), Option<Seen<'static>>);
        let rows: &[Row] = &[
            (
                "no licensing, no seat and no report: no license status",
                |c| c.observed.facts.license.policy = None,
                None,
            ),
            (
                "a managed worker has one before CML says anything",
                |_| {},
                Some(Seen::default()),
            ),
            (
                "CML's report is recorded, keeping the identity it did not repeat",
                |c| {
                    c.observed.facts.license.policy = None;
                    c.before(|s| s.product_instance_id = Some("pi-1".into()));
                    c.observed.cml = answered(CmlReport {
                        ready: true,
                        license: Some(LicenseReport {
                            registration: Some(COMPLETED.into()),
                            ..LicenseReport::default()
                        }),
                        ..CmlReport::default()
                    });
                },
                Some(Seen {
                    registration: Some(COMPLETED),
                    product_instance: Some("pi-1"),
                    ..Seen::default()
                }),
            ),
            (
                "a registration request takes the seat, counts and backs off",
                |c| c.called(LicenseStep::Register, Answer::Accepted),
                Some(Seen {
                    seat: SeatState::Registering,
                    attempts: 1,
                    retry_in_secs: Some(5),
                    registering_since_minute: Some(0),
                    ..Seen::default()
                }),
            ),
            (
                "another request backs off longer; the registration began with the first",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Registering;
                        s.attempts = 1;
                        s.registration_started_at = Some(Time(at(-1)));
                    });
                    c.called(LicenseStep::Register, Answer::Busy);
                },
                Some(Seen {
                    seat: SeatState::Registering,
                    attempts: 2,
                    retry_in_secs: Some(10),
                    registering_since_minute: Some(-1),
                    ..Seen::default()
                }),
            ),
            (
                "a registration under way without a call keeps its backoff",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Registering;
                        s.attempts = 2;
                        s.retry_after = Some(Time(at(1)));
                        s.registration_started_at = Some(Time(at(-5)));
                    });
                },
                Some(Seen {
                    seat: SeatState::Registering,
                    attempts: 2,
                    retry_in_secs: Some(60),
                    registering_since_minute: Some(-5),
                    ..Seen::default()
                }),
            ),
            (
                "a seat held ends the backoff and the registration clock",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Registering;
                        s.attempts = 3;
                        s.retry_after = Some(Time(at(1)));
                        s.registration_started_at = Some(Time(at(-5)));
                    });
                    c.cml_licensed();
                },
                Some(Seen {
                    seat: SeatState::Held,
                    ..Seen::default()
                }),
            ),
            (
                "outside a boot no registration clock runs",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Registering;
                        s.registration_started_at = Some(Time(at(-5)));
                    });
                    c.plan.phase = WorkerPhase::Running;
                },
                Some(Seen {
                    seat: SeatState::Registering,
                    ..Seen::default()
                }),
            ),
            (
                "a failed boot keeps its registration clock",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Registering;
                        s.registration_started_at = Some(Time(at(-5)));
                    });
                    c.plan.phase = WorkerPhase::Failed;
                },
                Some(Seen {
                    seat: SeatState::Registering,
                    registering_since_minute: Some(-5),
                    ..Seen::default()
                }),
            ),
            (
                "a deregistration counts its attempts afresh",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Held;
                        s.attempts = 3;
                    });
                    c.plan.phase = WorkerPhase::Draining;
                    c.plan.license.deregistration_started_at = Some(at(0));
                    c.called(LicenseStep::Deregister, Answer::Busy);
                },
                Some(Seen {
                    seat: SeatState::Deregistering,
                    attempts: 1,
                    retry_in_secs: Some(5),
                    deregistering_since_minute: Some(0),
                    ..Seen::default()
                }),
            ),
            (
                "a deregistration under way goes on counting",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Deregistering;
                        s.attempts = 1;
                        s.deregistration_started_at = Some(Time(at(-2)));
                    });
                    c.plan.phase = WorkerPhase::Draining;
                    c.plan.license.deregistration_started_at = Some(at(-2));
                    c.called(LicenseStep::Deregister, Answer::Busy);
                },
                Some(Seen {
                    seat: SeatState::Deregistering,
                    attempts: 2,
                    retry_in_secs: Some(10),
                    deregistering_since_minute: Some(-2),
                    ..Seen::default()
                }),
            ),
            (
                "a seat given back is free, and the plan's deregistration clock ends",
                |c| {
                    c.before(|s| {
                        s.seat = SeatState::Deregistering;
                        s.attempts = 1;
                        s.deregistration_started_at = Some(Time(at(-2)));
                    });
                    c.plan.phase = WorkerPhase::Stopping;
                    c.called(LicenseStep::Deregister, Answer::Freed);
                },
                Some(Seen {
                    seat: SeatState::Free,
                    attempts: 2,
                    retry_in_secs: Some(10),
                    ..Seen::default()
                }),
            ),
            (
                "a stop that goes on unconfirmed leaves the seat maybe held",
                |c| {
                    c.before(|s| s.seat = SeatState::Deregistering);
                    c.plan.phase = WorkerPhase::Stopping;
                    c.plan.license.seat_may_be_held = true;
                },
                Some(Seen {
                    seat: SeatState::MayBeHeld,
                    ..Seen::default()
                }),
            ),
        ];
        for (name, arrange, expected) in rows {
            let mut c = LicenseCase::new();
            arrange(&mut c);
            let got = status(c.old.as_ref(), &c.observed, &c.plan, c.call.as_ref());
            assert_eq!(got.as_ref().map(seen), *expected, "{name}");
        }
    }
}
