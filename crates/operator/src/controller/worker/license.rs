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
