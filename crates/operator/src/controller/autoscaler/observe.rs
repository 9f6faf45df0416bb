//! Observe: the template's workers (from the Worker cache, plus those just created that the
//! cache has not shown yet) and its share of the demand, as the planner's plain values.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::{
    controller::{
        seats::{SeatBudget, template_product},
        template_cache::TemplateCache,
    },
    crd::{
        DO_NOT_DISRUPT_ANNOTATION, DesiredState, LicenseSeats, UsageStatus, Worker, WorkerPhase,
        WorkerStatus, WorkerTemplate, conditions,
    },
    demand::DemandSnapshot,
    planner::{DemandItem, Offer, Resources, TemplateView, Wanted, WorkerView, assign},
};

pub fn capacity(t: &WorkerTemplate) -> Resources {
    let c = &t.spec.capacity;
    Resources {
        cpu: f64::from(c.cpu_cores),
        memory_gb: f64::from(c.memory_gib),
        storage_gb: f64::from(c.storage_gib),
        nodes: f64::from(c.max_nodes),
    }
}

/// `last_scale_up`: the newest known (the cached template may not show our own last write).
pub fn template_view(
    t: &WorkerTemplate,
    last_scale_up: Option<Timestamp>,
    seats: Option<&LicenseSeats>,
) -> TemplateView {
    let s = &t.spec.scaling;
    TemplateView {
        license: t.spec.license_type.into(),
        capacity: capacity(t),
        min_workers: s.min_workers,
        max_workers: s.max_workers,
        warm_workers: s.warm_workers,
        max_stopped_workers: s.max_stopped_workers,
        grace: s.scale_down_grace_period.as_std(),
        max_concurrent_drains: s.max_concurrent_drains,
        last_scale_up,
        seats_available: seats.map(|s| s.available),
    }
}

/// The seats of the template's product, when the seat budget names it.
pub fn license_seats(
    t: &WorkerTemplate,
    workers: &[&Worker],
    budget: &SeatBudget,
    templates: &TemplateCache,
) -> Option<LicenseSeats> {
    let product = template_product(t)?;
    let usage = budget.usage(&product, workers, templates)?;
    Some(LicenseSeats {
        budget: usage.limit,
        in_use: usage.in_use,
        available: usage.available(),
        product,
    })
}

/// Whether `w` carries an ownerReference to `t`.
pub fn owned_by(w: &Worker, t: &WorkerTemplate) -> bool {
    let uid = t.uid();
    w.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref() && o.kind == "WorkerTemplate")
}

/// The planner's view of one worker. Busy is `Some(false)` only when every configured usage
/// source reads zero: CML's running nodes and, with a Control Plane API, its instance counts.
pub fn worker_view(w: &Worker, t: &WorkerTemplate, platform: bool) -> WorkerView {
    let (no_status, no_usage) = (WorkerStatus::default(), UsageStatus::default());
    let status = w.status.as_ref().unwrap_or(&no_status);
    let usage = status.usage.as_ref().unwrap_or(&no_usage);
    let nodes = status
        .cml
        .as_ref()
        .filter(|c| c.ready)
        .and_then(|c| c.running_nodes);
    let counts = if platform {
        usage.running_instances.zip(usage.scheduled_instances)
    } else {
        Some((0, 0))
    };
    let busy = match (nodes, counts) {
        (Some(n), Some((r, s))) => Some(n > 0 || r > 0 || s > 0),
        (Some(n), None) if n > 0 => Some(true),
        (None, Some((r, s))) if r > 0 || s > 0 => Some(true),
        _ => None,
    };
    let allocated = if platform {
        usage.allocated.as_ref().map(|a| Resources {
            cpu: a.cpu_cores,
            memory_gb: a.memory_gb,
            storage_gb: a.storage_gb,
            nodes: f64::from(a.nodes),
        })
    } else {
        Some(Resources::default())
    };
    // Idle since its last activity, else since it became ready, else since it was made.
    let ready_since = conditions::find(&status.conditions, conditions::ConditionType::Ready)
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.0);
    let idle_since = usage
        .last_activity_time
        .as_ref()
        .map(|t| t.0)
        .into_iter()
        .chain(ready_since)
        .max()
        .or_else(|| w.metadata.creation_timestamp.as_ref().map(|t| t.0));
    WorkerView {
        name: w.name_any(),
        owned: owned_by(w, t),
        phase: status.phase.unwrap_or(WorkerPhase::Pending),
        desired: w.spec.desired_state,
        deleting: w.metadata.deletion_timestamp.is_some(),
        do_not_disrupt: w
            .annotations()
            .get(DO_NOT_DISRUPT_ANNOTATION)
            .is_some_and(|v| v == "true"),
        busy,
        allocated,
        next_timeslot_start: usage.next_timeslot_start.as_ref().map(|t| t.0),
        idle_since,
    }
}

/// A worker just created that the cache does not show yet: on its way, with all its capacity.
pub fn expected_view(name: &str) -> WorkerView {
    WorkerView {
        name: name.to_owned(),
        owned: true,
        phase: WorkerPhase::Pending,
        desired: DesiredState::Running,
        deleting: false,
        do_not_disrupt: false,
        busy: None,
        allocated: Some(Resources::default()),
        next_timeslot_start: None,
        idle_since: None,
    }
}

/// Every template of the namespace, as offers. One not Ready yet still takes its share (it
/// scales once Ready), so demand is never called unplaceable while a template is starting up.
fn offers(templates: &[std::sync::Arc<WorkerTemplate>]) -> Vec<Offer> {
    templates
        .iter()
        .map(|t| Offer {
            name: t.name_any(),
            license: t.spec.license_type.into(),
            capacity: capacity(t),
        })
        .collect()
}

/// This template's share of `snapshot` and what no template can hold; `None` while unknown.
pub fn demand_share(
    snapshot: Option<&DemandSnapshot>,
    platform: bool,
    template: &str,
    templates: &[std::sync::Arc<WorkerTemplate>],
) -> (Option<Vec<DemandItem>>, Vec<String>) {
    if !platform {
        // A kubectl-only fleet: no demand, only the floors.
        return (Some(Vec::new()), Vec::new());
    }
    let Some(demand) = snapshot.and_then(|s| s.demand()) else {
        return (None, Vec::new());
    };
    let wanted: Vec<Wanted> = demand
        .iter()
        .map(|d| Wanted {
            item: DemandItem {
                id: d.instance_id.clone(),
                timeslot_start: d.timeslot_start,
                needs: Resources {
                    cpu: d.definition.resource_requirements.cpu_cores,
                    memory_gb: d.definition.resource_requirements.memory_gb,
                    storage_gb: d.definition.resource_requirements.storage_gb,
                    nodes: f64::from(d.definition.node_count),
                },
            },
            affinity: d.definition.license_affinity.clone(),
        })
        .collect();
    let (mut by_template, unplaceable): (BTreeMap<String, Vec<DemandItem>>, Vec<String>) =
        assign(&wanted, &offers(templates));
    (
        Some(by_template.remove(template).unwrap_or_default()),
        unplaceable,
    )
}
