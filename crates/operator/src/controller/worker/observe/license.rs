//! Observe: the worker's licensing facts, from the template, CML's probe, status and the seat
//! budget.

use std::sync::Arc;

use kube::ResourceExt;

use super::ProbedCml;
use crate::{
    cml::{CmlEndpoint, LicenseReport},
    controller::worker::context::WorkerContext,
    crd::{SeatState, Worker, WorkerPhase, WorkerTemplate},
    licensing::{LicenseFacts, LicensePolicy, LicenseSeen, LicenseView, NodeFeature},
};

/// The template's licensing as the phase machine takes it.
fn policy(template: &WorkerTemplate) -> Option<LicensePolicy> {
    let l = template.spec.licensing.as_ref()?;
    Some(LicensePolicy {
        product: l.product(template.spec.license_type),
        expansion_nodes: l.expansion_nodes,
        registration_timeout: l.registration_timeout.as_std(),
        deregistration_timeout: l.deregistration_timeout.as_std(),
    })
}

/// What CML's `licensing` endpoint said in this probe.
pub(super) fn view(cml: Option<&ProbedCml>) -> LicenseView {
    let report = match cml.map(|c| &c.answer) {
        None => return LicenseView::NotAsked,
        Some(Err(e)) => return LicenseView::Unknown { why: e.to_string() },
        Some(Ok(r)) if !r.ready => return LicenseView::NotAsked,
        Some(Ok(r)) => r,
    };
    match &report.license {
        Some(l) => LicenseView::Seen(seen(l)),
        None => {
            let why = report
                .failures
                .iter()
                .find(|f| f.endpoint == CmlEndpoint::Licensing)
                .map_or_else(|| "licensing was not read".to_owned(), ToString::to_string);
            LicenseView::Unknown { why }
        }
    }
}

fn seen(l: &LicenseReport) -> LicenseSeen {
    LicenseSeen {
        registration: l.registration.clone(),
        authorization: l.authorization.clone(),
        product: l.product.clone(),
        failure: l.failure.clone(),
        node_feature: l
            .features
            .iter()
            .find(|f| f.is_node_count())
            .map(|f| NodeFeature {
                id: f.id.clone(),
                in_use: f.in_use,
            }),
    }
}

/// The licensing facts: the template's policy, what CML said, the seat from status, and
/// whether the seat budget lets a worker without a seat take one.
pub(super) fn facts(
    worker: &Worker,
    ctx: &WorkerContext,
    template: Option<&WorkerTemplate>,
    view: LicenseView,
) -> LicenseFacts {
    let status = worker.status.as_ref().and_then(|s| s.license.as_ref());
    let mut facts = LicenseFacts {
        policy: template.and_then(policy),
        view,
        seat: status.map(|s| s.seat).unwrap_or_default(),
        registration_started_at: status
            .and_then(|s| s.registration_started_at.as_ref().map(|t| t.0)),
        deregistration_started_at: status
            .and_then(|s| s.deregistration_started_at.as_ref().map(|t| t.0)),
        retry_at: status.and_then(|s| s.retry_after.as_ref().map(|t| t.0)),
        permit: true,
    };
    facts.permit = permit(worker, ctx, &facts);
    facts
}

/// Asks the seat budget only for a worker about to register: a grant is remembered.
fn permit(worker: &Worker, ctx: &WorkerContext, facts: &LicenseFacts) -> bool {
    let (Some(policy), Some(uid)) = (&facts.policy, worker.uid()) else {
        return true;
    };
    let registering = matches!(
        worker.status.as_ref().and_then(|s| s.phase),
        Some(WorkerPhase::Provisioning | WorkerPhase::Starting)
    );
    let unlicensed = matches!(&facts.view, LicenseView::Seen(s) if !s.licensed());
    if !(registering && unlicensed && facts.seat_now() == SeatState::Free) {
        return true;
    }
    let Some(store) = ctx.worker_cache() else {
        return false;
    };
    let workers: Vec<Arc<Worker>> = store.state();
    let refs: Vec<&Worker> = workers.iter().map(Arc::as_ref).collect();
    ctx.seats
        .permit(&uid, &policy.product, &refs, &ctx.templates)
}
