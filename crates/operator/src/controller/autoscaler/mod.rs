//! The autoscaler, run by the WorkerTemplate reconciler once the template is Ready:
//! observe (its workers and its share of demand) -> plan (pure, `planner`) -> act
//! (create, patch `desiredState`, delete Workers) -> status.

mod act;
mod boots;
mod context;
mod expectations;
mod history;
mod observe;
mod schedule;
mod status;

use std::sync::Arc;

use kube::ResourceExt;
use tracing::debug;

pub use context::TemplateContext;
pub use expectations::Expectations;
pub use history::ScalingHistory;
pub use observe::template_view;

use super::error::Result;
use crate::{
    controller::{events::EventSpec, reasons},
    crd::{Worker, WorkerTemplate, WorkerTemplateStatus},
    planner::{self, Inputs},
};

/// Runs one round for `template`, writing into `status`. Returns `false` while the Worker cache
/// is not synced yet (nothing is decided on a partial view).
pub async fn reconcile(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    status: &mut WorkerTemplateStatus,
) -> Result<bool> {
    let Some(store) = ctx.worker_cache() else {
        return Ok(false);
    };
    let namespace = template.namespace().unwrap_or_default();
    let name = template.name_any();
    let key = format!("{namespace}/{name}");
    let all: Vec<Arc<Worker>> = store.state();
    let mine: Vec<&Worker> = all
        .iter()
        .map(Arc::as_ref)
        .filter(|w| w.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|w| w.spec.template_ref.name == name)
        .collect();
    let platform = ctx.remotes.control_plane().is_some();
    // One picture: demand and what is placed on each worker, from the same refresh.
    let snapshot = ctx.demand().borrow().clone();
    let placements = if platform {
        observe::Placements::Picture(snapshot.as_deref())
    } else {
        observe::Placements::NoPlatform
    };
    if mine.iter().any(|w| placements.lacks(w)) {
        ctx.demand_refresh().notify_one();
    }
    let mut views: Vec<_> = mine
        .iter()
        .map(|w| observe::worker_view(w, template, placements))
        .collect();
    let visible: Vec<String> = mine.iter().map(|w| w.name_any()).collect();
    let expected = ctx.expectations.pending(&key, &visible);
    views.extend(expected.iter().map(|n| observe::expected_view(n)));

    let templates = ctx.templates.in_namespace(&namespace);
    let (demand, unplaceable) =
        observe::demand_share(snapshot.as_deref(), platform, &name, &templates);
    let now = k8s_openapi::jiff::Timestamp::now();
    // The cached template can lag our own last status write: keep the newest scaling records.
    let uid = template.uid().unwrap_or_default();
    ctx.scaling_history.recall(&uid, status);
    let everyone: Vec<&Worker> = all.iter().map(Arc::as_ref).collect();
    status.license_seats = observe::license_seats(template, &everyone, &ctx.seats, &ctx.templates);
    boots::record(status, &mine);
    let lead_time = boots::lead_time(template, status, ctx.settings.scale_up_lead_time);
    status.scale_up_lead_time = Some(boots::shown(lead_time));
    let start_lead_time = boots::start_lead_time(template, status, lead_time);
    status.start_lead_time = Some(boots::shown(start_lead_time));
    let scheduled = schedule::levels(template, now, lead_time);
    status.scheduled_levels = scheduled.shown;
    if let Some(problem) = scheduled.problem {
        let note = format!("scaling.schedule: {problem}; keeping its highest levels");
        let event = EventSpec::warning(reasons::SCHEDULE_INVALID, "Scale", note);
        ctx.event(template, event).await;
    }
    let view = observe::template_view(
        template,
        status.last_scale_up.as_ref().map(|r| r.time.0),
        status.license_seats.as_ref(),
    )
    .with_levels(scheduled.levels);
    let plan = planner::plan(&Inputs {
        template: &view,
        workers: &views,
        demand: demand.as_deref(),
        lead_time,
        start_lead_time,
        now,
    });
    debug!(
        template = %key,
        demand = demand.as_ref().map_or(0, Vec::len),
        room = ?observe::room(&views, &view),
        decisions = plan.decisions.len(),
        held_stopped = plan.held_stopped.len(),
        "planned"
    );
    let acted = act::act(template, ctx, &plan.decisions, &mine, now).await;
    ctx.expectations.expect(&key, &acted.created);
    if ctx.unplaceable_is_new(&namespace, &unplaceable) {
        let note = format!(
            "no WorkerTemplate in {namespace} holds lab instances {} (license or size)",
            unplaceable.join(", ")
        );
        let event = EventSpec::warning(reasons::UNPLACEABLE, "Scale", note);
        ctx.event(template, event).await;
    }
    let counts = status::counts(&mine, expected.len() as u32 + acted.created.len() as u32);
    ctx.metrics.fleet(&key, &status::by_phase(&counts));
    ctx.metrics
        .template_figures(&key, &status::figures(&plan, &counts));
    status::apply(
        status,
        template,
        &plan,
        &acted.done,
        counts,
        unplaceable.len() as u32,
        now,
    );
    ctx.scaling_history.remember(&uid, status);
    match acted.error {
        Some(e) => Err(e),
        None => Ok(true),
    }
}
