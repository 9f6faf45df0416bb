//! Status: what the worker is, as observed and as changed by this reconcile.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::{act::Acted, observe::Observed};
use crate::{
    controller::reasons,
    crd::{
        AllocatedUsage, CmlLicenseStatus, CmlStatus, InstanceStatus, UsageStatus, Worker,
        WorkerPhase, WorkerStatus, conditions,
    },
    phase_machine::{InstanceFacts, Plan},
    provider::Instance,
};

fn instance_status(
    i: &Instance,
    previous: Option<&InstanceStatus>,
    observed: &Observed,
) -> InstanceStatus {
    let (kind, region) = match &observed.provider {
        Some((kind, region, _)) => (Some(*kind), region.clone()),
        None => (None, None),
    };
    InstanceStatus {
        id: i.id.clone(),
        provider: previous.and_then(|p| p.provider).or(kind),
        region: previous.and_then(|p| p.region.clone()).or(region),
        instance_type: Some(i.instance_type.clone()),
        availability_zone: i.availability_zone.clone(),
        private_ip: i.private_ip.clone(),
        public_ip: i.public_ip.clone(),
        image_id: i.image_id.clone(),
        // As the API server stores it, so an unchanged instance compares equal.
        launch_time: i
            .launch_time
            .and_then(|t| Timestamp::from_second(t.as_second()).ok())
            .map(Time),
        state: Some(i.state.as_str().to_owned()),
    }
}

/// The next status of `worker`.
pub fn next(worker: &Worker, observed: &Observed, plan: &Plan, acted: &Acted) -> WorkerStatus {
    let no_status = WorkerStatus::default();
    let old = worker.status.as_ref().unwrap_or(&no_status);
    let now = observed.facts.now;
    let generation = worker.metadata.generation;
    let phase = acted.phase.unwrap_or(plan.phase);
    let mut s = old.clone();
    s.phase = Some(phase);
    s.observed_generation = generation;
    s.drain_started_at = plan.drain_started_at.map(Time);
    if let Some(launch) = &acted.launch {
        s.launch = Some(launch.clone());
    }
    let template_hash = observed
        .template
        .as_ref()
        .and_then(|t| t.status.as_ref())
        .and_then(|st| st.launch_spec_hash.clone());
    match (&acted.launched, &observed.facts.instance) {
        (Some(l), _) => {
            s.instance = Some(instance_status(&l.instance, None, observed));
            s.launch_spec_hash = template_hash.clone();
        }
        (None, InstanceFacts::Seen(i)) => {
            s.instance = Some(instance_status(i, old.instance.as_ref(), observed))
        }
        (None, InstanceFacts::Missing { .. }) => {
            if let Some(rec) = s.instance.as_mut() {
                rec.state = Some("not-found".into());
                rec.public_ip = None;
            }
        }
        (None, InstanceFacts::NotLaunched) => {}
    }
    if let Some((endpoint, result)) = &observed.cml {
        let no_cml = CmlStatus::default();
        let previous = old.cml.as_ref().unwrap_or(&no_cml);
        let mut probed = match result {
            Ok(r) => CmlStatus {
                endpoint: Some(endpoint.clone()),
                version: r.version.clone(),
                ready: r.ready,
                licensed: r.licensed,
                license: r.license.as_ref().map(|l| CmlLicenseStatus {
                    registration: l.registration.clone(),
                    authorization: l.authorization.clone(),
                    product: l.product.clone(),
                }),
                labs: r.labs,
                running_nodes: r.running_nodes,
                last_probe_time: Some(Time(now)),
            },
            Err(_) => CmlStatus {
                endpoint: Some(endpoint.clone()),
                ready: false,
                last_probe_time: Some(Time(now)),
                ..previous.clone()
            },
        };
        // A probe that found nothing new is not worth a write: the time moves with the answer.
        if old.cml.is_some() {
            let probe_time = std::mem::replace(
                &mut probed.last_probe_time,
                previous.last_probe_time.clone(),
            );
            if probed != *previous {
                probed.last_probe_time = probe_time;
            }
        }
        s.cml = Some(probed);
    }

    s.usage = usage(old, observed);

    let mut cs = std::mem::take(&mut s.conditions);
    // Launched
    match (
        &s.instance,
        s.launch.as_ref().and_then(|l| l.last_error.as_ref()),
    ) {
        (Some(i), _) => conditions::set(
            &mut cs,
            "Launched",
            true,
            reasons::LAUNCHED,
            format!("instance {}", i.id),
            generation,
            now,
        ),
        (None, Some(err)) => conditions::set(
            &mut cs,
            "Launched",
            false,
            reasons::LAUNCH_FAILED,
            err.clone(),
            generation,
            now,
        ),
        (None, None) => conditions::set(
            &mut cs,
            "Launched",
            false,
            reasons::NOT_LAUNCHED,
            "no instance yet",
            generation,
            now,
        ),
    }
    // Ready
    let cml_ready =
        s.cml.as_ref().is_some_and(|c| c.ready) && matches!(observed.cml, Some((_, Ok(_))));
    if let Some(e) = &acted.error {
        conditions::set(
            &mut cs,
            "Ready",
            false,
            e.category(),
            e.to_string(),
            generation,
            now,
        );
    } else if phase == WorkerPhase::Running && cml_ready {
        let version = s
            .cml
            .as_ref()
            .and_then(|c| c.version.clone())
            .unwrap_or_default();
        conditions::set(
            &mut cs,
            "Ready",
            true,
            reasons::CML_READY,
            format!("CML {version} is ready"),
            generation,
            now,
        );
    } else if let Some((reason, message)) = &plan.event {
        conditions::set(
            &mut cs,
            "Ready",
            false,
            reason.as_str(),
            message.clone(),
            generation,
            now,
        );
    } else if let Some((_, Err(e))) = &observed.cml {
        conditions::set(
            &mut cs,
            "Ready",
            false,
            e.kind.as_str(),
            e.message.clone(),
            generation,
            now,
        );
    } else if let Some(waiting) = plan
        .waiting
        .as_ref()
        .filter(|_| phase == WorkerPhase::Draining)
    {
        conditions::set(
            &mut cs,
            "Ready",
            false,
            reasons::DRAINING,
            waiting.clone(),
            generation,
            now,
        );
    } else if old.phase != Some(phase)
        || conditions::is_true(&cs, "Ready")
        || conditions::find(&cs, "Ready").is_none()
    {
        let (reason, message) = not_ready(phase);
        conditions::set(&mut cs, "Ready", false, reason, message, generation, now);
    }
    // CmlDegraded: what CML could not tell, so that those fields read as unknown.
    if let Some((_, Ok(report))) = &observed.cml
        && report.ready
    {
        let (degraded, reason, message) = match report.failures.as_slice() {
            [] => (
                false,
                reasons::ALL_ANSWERED.to_owned(),
                "every CML endpoint answered".to_owned(),
            ),
            [one] => (true, one.reason(), one.to_string()),
            several => (
                true,
                reasons::SEVERAL_ENDPOINTS.to_owned(),
                several
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        conditions::set(
            &mut cs,
            "CmlDegraded",
            degraded,
            &reason,
            message,
            generation,
            now,
        );
    }
    // Drifted
    match (&s.launch_spec_hash, &template_hash) {
        (Some(mine), Some(theirs)) if mine != theirs => conditions::set(
            &mut cs,
            "Drifted",
            true,
            reasons::LAUNCH_SPEC_CHANGED,
            format!("launched with spec {mine}; the template now has {theirs}"),
            generation,
            now,
        ),
        (Some(_), Some(_)) => conditions::set(
            &mut cs,
            "Drifted",
            false,
            reasons::UP_TO_DATE,
            "launched with the template's current spec",
            generation,
            now,
        ),
        _ => {}
    }
    s.conditions = cs;
    s
}

/// Usage as last observed: the Control Plane API's counts (absent when unknown) and the time the
/// worker was last seen busy by either source.
fn usage(old: &WorkerStatus, observed: &Observed) -> Option<UsageStatus> {
    let no_usage = UsageStatus::default();
    let previous = old.usage.as_ref().unwrap_or(&no_usage);
    let mut u = previous.clone();
    match &observed.usage {
        Some(Ok(Some(c))) => {
            u.running_instances = Some(c.running_instances);
            u.scheduled_instances = Some(c.scheduled_instances);
            u.allocated = Some(AllocatedUsage {
                cpu_cores: c.allocated.cpu_cores,
                memory_gb: c.allocated.memory_gb,
                storage_gb: c.allocated.storage_gb,
                nodes: c.allocated.nodes,
            });
            u.next_timeslot_start = c
                .next_timeslot_start
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(Time);
        }
        Some(_) => {
            u.running_instances = None;
            u.scheduled_instances = None;
            u.allocated = None;
            u.next_timeslot_start = None;
        }
        None => {}
    }
    let nodes = match &observed.cml {
        Some((_, Ok(r))) => r.running_nodes,
        _ => None,
    };
    let busy = |nodes: Option<u32>, u: &UsageStatus| {
        nodes.is_some_and(|n| n > 0)
            || u.running_instances.is_some_and(|n| n > 0)
            || u.scheduled_instances.is_some_and(|n| n > 0)
    };
    let was_busy = busy(old.cml.as_ref().and_then(|c| c.running_nodes), previous);
    // The idle clock moves when activity starts and when it ends, not on every busy probe: a
    // steady fleet makes no writes, and an idle worker's clock starts when it was last seen busy.
    let is_busy = busy(nodes, &u);
    if is_busy != was_busy || (is_busy && u.last_activity_time.is_none()) {
        u.last_activity_time = Some(Time(observed.facts.now));
    }
    (u != UsageStatus::default()).then_some(u)
}

fn not_ready(phase: WorkerPhase) -> (&'static str, &'static str) {
    match phase {
        WorkerPhase::Pending => (reasons::PENDING, "no instance yet"),
        WorkerPhase::Provisioning => (reasons::PROVISIONING, "waiting for the instance and CML"),
        WorkerPhase::Running => (reasons::CML_NOT_READY, "CML does not report ready"),
        WorkerPhase::Draining => (reasons::DRAINING, "taking no new labs"),
        WorkerPhase::Stopping => (reasons::STOPPING, "instance stopping"),
        WorkerPhase::Stopped => (reasons::STOPPED, "instance stopped"),
        WorkerPhase::Starting => (reasons::STARTING, "instance starting"),
        WorkerPhase::Terminating => (reasons::TERMINATING, "instance terminating"),
        WorkerPhase::Failed => (reasons::FAILED, "the worker failed"),
    }
}

/// Names the worker for logs.
pub fn name(worker: &Worker) -> String {
    format!(
        "{}/{}",
        worker.namespace().unwrap_or_default(),
        worker.name_any()
    )
}
