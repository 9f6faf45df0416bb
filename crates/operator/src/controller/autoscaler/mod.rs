//! The autoscaler, run by the WorkerTemplate reconciler whatever the state of the template's
//! image (without one it only creates nothing): observe (its workers and its share of demand,
//! as one `round::Round`) -> plan (pure, `planner`) -> act (create, patch `desiredState`,
//! delete Workers) -> status (pure).

mod act;
mod boots;
mod context;
mod expectations;
mod history;
mod observe;
mod round;
mod schedule;
mod status;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use tracing::debug;

pub use context::TemplateContext;
pub use expectations::Expectations;
pub use history::ScalingHistory;
pub use observe::template_view;

use super::error::Error;
use crate::{
    controller::{events::EventSpec, reasons},
    crd::{Worker, WorkerTemplate, WorkerTemplateStatus},
    planner::{Creation, Plan},
};
use round::Round;

/// What a round leaves for the template reconcile: the status to write, and the error that
/// stopped acting part way, if one did.
pub struct Outcome {
    pub status: WorkerTemplateStatus,
    pub error: Option<Error>,
}

/// Runs one round for `template` from `prior`: observe -> plan (pure) -> act -> status (pure),
/// then tells what it saw. `None` while the Worker cache is not synced yet (nothing is decided
/// on a partial view).
pub async fn reconcile(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    prior: &WorkerTemplateStatus,
    creation: Creation,
) -> Option<Outcome> {
    let store = ctx.worker_cache()?;
    let all: Vec<Arc<Worker>> = store.state();
    let now = Timestamp::now();
    let round = observe::round(template, ctx, &all, prior, creation, now);
    let plan = round.plan();
    debug!(
        template = %round.key,
        demand = round.demand.as_ref().map_or(0, Vec::len),
        room = ?observe::room(&round.views, &round.template),
        decisions = plan.decisions.len(),
        held_stopped = plan.held_stopped.len(),
        "planned"
    );
    let acted = act::act(template, ctx, &plan.decisions, &round.workers(), now).await;
    ctx.expectations.expect(&round.key, &acted.created);
    let status = status::next(prior, template, &round, &plan, &acted);
    tell(template, ctx, &round, &plan, &status).await;
    ctx.scaling_history
        .remember(&template.uid().unwrap_or_default(), &status);
    Some(Outcome {
        status,
        error: acted.error,
    })
}

/// The round's metrics, and Events for what it found wrong beyond its decisions (those are
/// told as they are carried out).
async fn tell(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    round: &Round,
    plan: &Plan,
    status: &WorkerTemplateStatus,
) {
    if let Some(problem) = &round.learnt.schedule_problem {
        let note = format!("scaling.schedule: {problem}; keeping its highest levels");
        let event = EventSpec::warning(reasons::SCHEDULE_INVALID, "Scale", note);
        ctx.event(template, event).await;
    }
    let namespace = template.namespace().unwrap_or_default();
    if ctx.unplaceable_is_new(&namespace, &round.unplaceable) {
        let note = format!(
            "no WorkerTemplate in {namespace} holds lab instances {} (license or size)",
            round.unplaceable.join(", ")
        );
        let event = EventSpec::warning(reasons::UNPLACEABLE, "Scale", note);
        ctx.event(template, event).await;
    }
    if let Some(counts) = &status.workers {
        ctx.metrics.fleet(&round.key, &status::by_phase(counts));
        ctx.metrics
            .template_figures(&round.key, &status::figures(plan, counts));
    }
}
