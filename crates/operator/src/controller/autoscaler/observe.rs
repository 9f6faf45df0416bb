//! Observe: the template's workers (from the Worker cache, plus those just created that the
//! cache has not shown yet) and its share of the demand, as the planner's plain values, with
//! what the round learns for status: one [`Round`] of facts.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    TemplateContext, boots,
    round::{Learnt, Round},
    schedule,
};
use crate::{
    controller::{
        seats::{SeatBudget, template_product},
        template_cache::TemplateCache,
    },
    crd::{
        DO_NOT_DISRUPT_ANNOTATION, DesiredState, LicenseSeats, UsageStatus, WarmRoom, Worker,
        WorkerPhase, WorkerStatus, WorkerTemplate, WorkerTemplateStatus, conditions,
    },
    demand::DemandSnapshot,
    planner::{Creation, DemandItem, Offer, Resources, TemplateView, Wanted, WorkerView, assign},
    units,
};

/// Gathers one round for `template` from `all` the Workers of the cache, the demand feed's
/// picture and what the controller remembers; `prior` is the status the round starts from.
pub fn round(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    all: &[Arc<Worker>],
    prior: &WorkerTemplateStatus,
    creation: Creation,
    now: Timestamp,
) -> Round {
    let namespace = template.namespace().unwrap_or_default();
    let name = template.name_any();
    let key = format!("{namespace}/{name}");
    let workers = of_template(all, &namespace, &name);
    let platform = ctx.remotes.control_plane().is_some();
    // One picture: demand and what is placed on each worker, from the same refresh.
    let snapshot = ctx.demand().borrow().clone();
    let placements = if platform {
        Placements::Picture(snapshot.as_deref())
    } else {
        Placements::NoPlatform
    };
    if workers.iter().any(|w| placements.lacks(w)) {
        ctx.demand_refresh().notify_one();
    }
    let visible: Vec<String> = workers.iter().map(|w| w.name_any()).collect();
    let expected = ctx.expectations.pending(&key, &visible);
    let views = workers
        .iter()
        .map(|w| worker_view(w, template, placements))
        .chain(expected.iter().map(|n| expected_view(n)))
        .collect();
    let templates = ctx.templates.in_namespace(&namespace);
    let (demand, unplaceable) = demand_share(snapshot.as_deref(), platform, &name, &templates);
    let learnt = learn(template, ctx, all, &workers, prior);
    let lead = lead_times(template, &learnt, ctx.settings.scale_up_lead_time);
    let scheduled = schedule::levels(template, now, lead.0);
    let view = template_view(
        template,
        learnt.records.last_scale_up.as_ref().map(|r| r.time.0),
        learnt.license_seats.as_ref(),
    )
    .with_levels(scheduled.levels);
    Round {
        key,
        now,
        workers,
        expected,
        views,
        template: view,
        demand,
        unplaceable,
        lead_time: lead.0,
        start_lead_time: lead.1,
        creation,
        learnt: Learnt {
            scheduled_levels: scheduled.shown,
            schedule_problem: scheduled.problem.map(|p| p.to_string()),
            ..learnt
        },
    }
}

/// The Workers of `all` that name the template.
fn of_template(all: &[Arc<Worker>], namespace: &str, name: &str) -> Vec<Arc<Worker>> {
    all.iter()
        .filter(|w| w.namespace().as_deref() == Some(namespace))
        .filter(|w| w.spec.template_ref.name == name)
        .cloned()
        .collect()
}

/// What the round learns from the controller's memory, the seat budget and its workers' boots
/// (the schedule's levels come later, from the lead time these make).
fn learn(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    all: &[Arc<Worker>],
    workers: &[Arc<Worker>],
    prior: &WorkerTemplateStatus,
) -> Learnt {
    let everyone: Vec<&Worker> = all.iter().map(Arc::as_ref).collect();
    let mine: Vec<&Worker> = workers.iter().map(Arc::as_ref).collect();
    let uid = template.uid().unwrap_or_default();
    Learnt {
        records: ctx.scaling_history.recalled(&uid, prior),
        license_seats: license_seats(template, &everyone, &ctx.seats, &ctx.templates),
        boot_durations: boots::recorded(prior.boot_durations.as_ref(), &mine),
        ..Learnt::default()
    }
}

/// This round's lead time and start lead time, from the boots it measured.
fn lead_times(template: &WorkerTemplate, learnt: &Learnt, flag: Duration) -> (Duration, Duration) {
    let boots = learnt.boot_durations.as_ref();
    let lead = boots::lead_time(template, boots, flag);
    (lead, boots::start_lead_time(template, boots, lead))
}

pub fn capacity(t: &WorkerTemplate) -> Resources {
    let c = &t.spec.capacity;
    Resources {
        cpu: f64::from(c.cpu_cores),
        memory_gib: f64::from(c.memory_gib),
        storage_gib: f64::from(c.storage_gib),
        nodes: f64::from(c.max_nodes),
    }
}

fn warm_room(r: &WarmRoom) -> Resources {
    Resources {
        cpu: f64::from(r.cpu_cores),
        memory_gib: f64::from(r.memory_gib),
        storage_gib: f64::from(r.storage_gib),
        nodes: f64::from(r.nodes),
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
        warm_room: s.warm_room.as_ref().map(warm_room),
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

/// Where the platform's placements come from in this round.
#[derive(Clone, Copy)]
pub enum Placements<'a> {
    /// No Control Plane API: nothing is ever placed.
    NoPlatform,
    /// The picture of this round's demand snapshot (`None` until the first refresh).
    Picture(Option<&'a DemandSnapshot>),
}

impl Placements<'_> {
    /// What is placed on `w`, from the same refresh as the demand: `(running, scheduled)`
    /// instance counts, the resources allocated, and the next timeslot. One whose record could
    /// not be read, or any worker while there is no picture of demand, is unknown.
    fn of(&self, w: &Worker) -> Placed {
        let Placements::Picture(snapshot) = self else {
            return Placed {
                counts: Some((0, 0)),
                allocated: Some(Resources::default()),
                next_timeslot_start: None,
            };
        };
        let uid = w.uid().unwrap_or_default();
        let picture = snapshot.filter(|s| s.demand().is_some());
        match picture.map(|s| s.placement(&uid)) {
            Some(Some(Some(c))) => Placed {
                counts: Some((c.running_instances, c.scheduled_instances)),
                allocated: Some(allocated(
                    c.allocated.cpu_cores,
                    c.allocated.memory_gb,
                    c.allocated.storage_gb,
                    c.allocated.nodes,
                )),
                next_timeslot_start: c
                    .next_timeslot_start
                    .as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok()),
            },
            // Asked and not answered: unknown, so it takes no demand and is never drained.
            Some(Some(None)) => Placed::default(),
            Some(None) => Placed::as_the_picture_saw_it(),
            None => Placed::default(),
        }
    }

    /// Whether the picture was read but lacks `w`, which the platform may place labs on: it
    /// became Running after the refresh, so another refresh is due.
    pub fn lacks(&self, w: &Worker) -> bool {
        let Placements::Picture(Some(snapshot)) = self else {
            return false;
        };
        let placeable = matches!(
            w.status.as_ref().and_then(|s| s.phase),
            Some(WorkerPhase::Running | WorkerPhase::Draining)
        );
        let uid = w.uid().unwrap_or_default();
        placeable && snapshot.demand().is_some() && snapshot.placement(&uid).is_none()
    }
}

/// What the platform has placed on one worker; `None` fields are unknown.
#[derive(Default)]
struct Placed {
    counts: Option<(u32, u32)>,
    allocated: Option<Resources>,
    next_timeslot_start: Option<Timestamp>,
}

impl Placed {
    /// A worker that became Running after the refresh, as the picture saw it: on its way,
    /// nothing placed. Labs the platform placed on it since are still unplaced demand in this
    /// picture, so they count once, against its room; counting it full as well would count
    /// them twice and make a worker too many. Its counts are unknown: it is never drained on
    /// this picture.
    fn as_the_picture_saw_it() -> Placed {
        Placed {
            counts: None,
            allocated: Some(Resources::default()),
            next_timeslot_start: None,
        }
    }
}

/// Allocated capacity as the planner counts it (GiB), from a capacity record (GB).
fn allocated(cpu: f64, memory_gb: f64, storage_gb: f64, nodes: u32) -> Resources {
    Resources {
        cpu,
        memory_gib: units::gib_from_gb(memory_gb),
        storage_gib: units::gib_from_gb(storage_gb),
        nodes: f64::from(nodes),
    }
}

/// The planner's view of one worker. Busy is `Some(false)` only when every configured usage
/// source reads zero: CML's running nodes (from its status) and, with a Control Plane API, the
/// instances placed on it in this round's picture.
pub fn worker_view(w: &Worker, t: &WorkerTemplate, placements: Placements<'_>) -> WorkerView {
    let (no_status, no_usage) = (WorkerStatus::default(), UsageStatus::default());
    let status = w.status.as_ref().unwrap_or(&no_status);
    let usage = status.usage.as_ref().unwrap_or(&no_usage);
    let nodes = status
        .cml
        .as_ref()
        .filter(|c| c.ready)
        .and_then(|c| c.running_nodes);
    let placed = placements.of(w);
    let busy = match (nodes, placed.counts) {
        (Some(n), Some((r, s))) => Some(n > 0 || r > 0 || s > 0),
        (Some(n), None) if n > 0 => Some(true),
        (None, Some((r, s))) if r > 0 || s > 0 => Some(true),
        _ => None,
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
        allocated: placed.allocated,
        next_timeslot_start: placed.next_timeslot_start,
        idle_since,
    }
}

/// The workers with room for demand as the planner counts it, by name, phase and free nodes
/// (`None`: allocation unknown), for the debug log of a round.
pub fn room(views: &[WorkerView], t: &TemplateView) -> Vec<(String, WorkerPhase, Option<f64>)> {
    views
        .iter()
        .map(|w| {
            let free = w.allocated.map(|a| t.capacity.minus(&a).nodes);
            (w.name.clone(), w.phase, free)
        })
        .filter(|(_, _, free)| free.is_none_or(|n| n > 0.0))
        .collect()
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
                    memory_gib: units::gib_from_gb(d.definition.resource_requirements.memory_gb),
                    storage_gib: units::gib_from_gb(d.definition.resource_requirements.storage_gb),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::control_plane::{Allocated, WorkerCapacity};

    fn running(uid: &str) -> Worker {
        serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"templateRef": {"name": "t"}},
            "status": {"phase": "Running", "usage": {"runningInstances": 0, "scheduledInstances": 0,
                "allocated": {"cpuCores": 40.0, "memoryGB": 160.0, "storageGB": 40.0, "nodes": 20}}}
        }))
        .expect("worker")
    }

    fn placed(nodes: u32) -> WorkerCapacity {
        WorkerCapacity {
            worker_id: String::new(),
            allocated: Allocated {
                cpu_cores: f64::from(nodes) * 2.0,
                memory_gb: f64::from(nodes) * 8.0,
                storage_gb: 20.0,
                nodes,
            },
            running_instances: 0,
            scheduled_instances: 1,
            next_timeslot_start: None,
        }
    }

    #[test]
    fn placements_come_from_the_picture_and_never_from_a_status() {
        let snapshot = DemandSnapshot::Known {
            demand: Vec::new(),
            skipped: Vec::new(),
            placements: [
                ("asked".to_owned(), Ok(placed(12))),
                ("unread".to_owned(), Err("timeout".to_owned())),
            ]
            .into(),
            at: Timestamp::now(),
        };
        let picture = Placements::Picture(Some(&snapshot));
        let nodes = |p: &Placed| p.allocated.map(|a| a.nodes);
        // (worker, placements, allocated nodes, counts known)
        let table = [
            ("asked", picture, Some(12.0), true),
            ("unread", picture, None, false),
            // Running since the refresh: empty as the picture saw it, never drained on it; its
            // status (full, idle) is not read.
            ("new", picture, Some(0.0), false),
            ("asked", Placements::Picture(None), None, false),
            ("asked", Placements::NoPlatform, Some(0.0), true),
        ];
        for (uid, placements, expected_nodes, counts_known) in table {
            let p = placements.of(&running(uid));
            assert_eq!(nodes(&p), expected_nodes, "{uid}");
            assert_eq!(p.counts.is_some(), counts_known, "{uid}");
        }
        let unknown = DemandSnapshot::Unknown {
            error: crate::remote::RemoteError::new(crate::remote::RemoteErrorKind::Timeout, "x"),
            at: Timestamp::now(),
        };
        let p = Placements::Picture(Some(&unknown)).of(&running("asked"));
        assert!(
            p.allocated.is_none() && p.counts.is_none(),
            "demand unknown: all unknown"
        );
    }
}
