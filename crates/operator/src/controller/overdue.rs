//! Workers stuck in a phase past the timeout that should have moved them on, counted by
//! template and phase from the Worker cache at each scrape (the `CcmWorkersOverdue` alert).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::{
    controller::template_cache::template_key,
    crd::{Worker, WorkerPhase, WorkerTemplate},
    phase_machine,
};

/// The phases with a timeout, the only ones a worker can be overdue in.
const BOUNDED: [WorkerPhase; 4] = [
    WorkerPhase::Pending,
    WorkerPhase::Provisioning,
    WorkerPhase::Starting,
    WorkerPhase::Draining,
];

/// Overdue workers by (`namespace/template`, phase): every template's bounded phases, zero
/// included, so an alert has a series before the first stuck worker. A worker whose template is
/// not cached is judged on the default timeouts.
pub fn count(
    workers: &[&Worker],
    templates: &[Arc<WorkerTemplate>],
    now: Timestamp,
) -> BTreeMap<(String, &'static str), u32> {
    let mut counts = BTreeMap::new();
    let mut bounds = HashMap::new();
    for t in templates {
        let key = template_key(t);
        for phase in BOUNDED {
            counts.insert((key.clone(), phase.as_str()), 0);
        }
        bounds.insert(key, t.spec.scaling.timeouts());
    }
    for w in workers {
        let Some((phase, since)) = phase_since(w) else {
            continue;
        };
        let key = format!(
            "{}/{}",
            w.namespace().unwrap_or_default(),
            w.spec.template_ref.name
        );
        let t = bounds.get(&key).copied().unwrap_or_default();
        if phase_machine::overdue(phase, since, t, now) {
            *counts.entry((key, phase.as_str())).or_insert(0) += 1;
        }
    }
    counts
}

/// The worker's phase and when the wait its timeout bounds began: the launch (or start) for
/// the phases before Running, the drain for Draining.
fn phase_since(w: &Worker) -> Option<(WorkerPhase, Timestamp)> {
    let status = w.status.as_ref()?;
    let phase = status.phase?;
    let since = match phase {
        WorkerPhase::Pending | WorkerPhase::Provisioning | WorkerPhase::Starting => {
            status.launch.as_ref()?.started_at.as_ref()?.0
        }
        WorkerPhase::Draining => status.drain_started_at.as_ref()?.0,
        _ => return None,
    };
    Some((phase, since))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn worker(name: &str, status: serde_json::Value) -> Worker {
        serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"templateRef": {"name": "t"}},
            "status": status
        }))
        .expect("worker")
    }

    #[test]
    fn only_workers_past_their_phase_timeout_count_by_template_and_phase() {
        let now: Timestamp = "2026-12-03T12:00:00Z".parse().expect("time");
        let long_ago = "2026-12-03T06:00:00Z";
        let lately = "2026-12-03T11:50:00Z";
        let workers = [
            worker(
                "stuck-launch",
                json!({"phase": "Provisioning", "launch": {"attempts": 1, "startedAt": long_ago}}),
            ),
            worker(
                "booting",
                json!({"phase": "Provisioning", "launch": {"attempts": 1, "startedAt": lately}}),
            ),
            worker(
                "stuck-drain",
                json!({"phase": "Draining", "drainStartedAt": long_ago}),
            ),
            worker(
                "draining",
                json!({"phase": "Draining", "drainStartedAt": lately}),
            ),
            worker(
                "running",
                json!({"phase": "Running", "launch": {"attempts": 1, "startedAt": long_ago}}),
            ),
            worker("no-times", json!({"phase": "Starting"})),
        ];
        let refs: Vec<&Worker> = workers.iter().collect();
        let template: WorkerTemplate = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"provider": "simulated", "instanceType": "m5zn.metal",
                     "image": {"namePattern": "CML-2.9.*"},
                     "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
                     "licenseType": "Personal",
                     "scaling": {"maxWorkers": 5, "launchTimeout": "10m", "readyTimeout": "30m", "drainTimeout": "1h"}}
        }))
        .expect("template");
        let counts = count(&refs, &[Arc::new(template)], now);
        let expected = BTreeMap::from([
            (("ns/t".to_owned(), "Pending"), 0),
            (("ns/t".to_owned(), "Provisioning"), 1),
            (("ns/t".to_owned(), "Starting"), 0),
            (("ns/t".to_owned(), "Draining"), 1),
        ]);
        assert_eq!(counts, expected);
    }
}
