//! The worker record the platform sees, derived from the Worker alone (pure).

use kube::ResourceExt;

use crate::{
    control_plane::{RecordCapacity, RecordPortRange, WorkerRecord},
    crd::{Worker, WorkerPhase, WorkerStatus, WorkerTemplate},
    units,
};

/// The record of `worker` as `status` describes it; `updated_at` is left empty for the pusher to
/// stamp, so that an unchanged worker derives an identical record. `None` without a UID.
pub fn derive(
    worker: &Worker,
    template: &WorkerTemplate,
    status: &WorkerStatus,
) -> Option<WorkerRecord> {
    let phase = status.phase.unwrap_or(WorkerPhase::Pending);
    let instance = status.instance.as_ref();
    let cml = status.cml.as_ref();
    let spec = &template.spec;
    Some(WorkerRecord {
        id: worker.uid()?,
        name: worker.name_any(),
        namespace: worker.namespace().unwrap_or_default(),
        template: worker.spec.template_ref.name.clone(),
        license_type: spec.license_type.into(),
        phase: phase.as_str().to_owned(),
        accepting_assignments: phase == WorkerPhase::Running,
        instance_id: instance.map(|i| i.id.clone()),
        instance_type: instance.and_then(|i| i.instance_type.clone()),
        availability_zone: instance.and_then(|i| i.availability_zone.clone()),
        private_ip: instance.and_then(|i| i.private_ip.clone()),
        public_ip: instance.and_then(|i| i.public_ip.clone()),
        cml_endpoint: cml.and_then(|c| c.endpoint.clone()),
        cml_version: cml.and_then(|c| c.version.clone()),
        capacity: RecordCapacity {
            cpu_cores: spec.capacity.cpu_cores,
            memory_gb: units::whole_gb_from_gib(spec.capacity.memory_gib),
            storage_gb: units::whole_gb_from_gib(spec.capacity.storage_gib),
            max_nodes: spec.capacity.max_nodes,
        },
        port_range: RecordPortRange {
            start: spec.port_range.start,
            end: spec.port_range.end,
        },
        observed_generation: status.observed_generation,
        updated_at: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::{CmlStatus, InstanceStatus};

    fn worker() -> Worker {
        serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": "w1", "namespace": "labs", "uid": "uid-1", "generation": 3},
            "spec": {"templateRef": {"name": "t"}}
        }))
        .expect("worker")
    }

    fn template() -> WorkerTemplate {
        crate::crd::fixtures::template(json!({"metadata": {"namespace": "labs"}}))
    }

    #[test]
    fn only_a_running_worker_accepts_assignments() {
        for (phase, accepting) in [
            (WorkerPhase::Pending, false),
            (WorkerPhase::Provisioning, false),
            (WorkerPhase::Running, true),
            (WorkerPhase::Draining, false),
            (WorkerPhase::Stopping, false),
            (WorkerPhase::Stopped, false),
            (WorkerPhase::Starting, false),
            (WorkerPhase::Terminating, false),
            (WorkerPhase::Failed, false),
        ] {
            let status = WorkerStatus {
                phase: Some(phase),
                ..WorkerStatus::default()
            };
            let r = derive(&worker(), &template(), &status).expect("record");
            assert_eq!(r.accepting_assignments, accepting, "{phase:?}");
            assert_eq!(r.phase, phase.as_str());
        }
    }

    #[test]
    fn the_record_carries_the_instance_cml_and_template_capacity_in_whole_gb() {
        let status = WorkerStatus {
            phase: Some(WorkerPhase::Running),
            instance: Some(InstanceStatus {
                id: "i-1".into(),
                instance_type: Some("m5zn.metal".into()),
                availability_zone: Some("us-east-1a".into()),
                private_ip: Some("10.0.0.1".into()),
                ..InstanceStatus::default()
            }),
            cml: Some(CmlStatus {
                endpoint: Some("https://10.0.0.1:443".into()),
                version: Some("2.9.1".into()),
                ..CmlStatus::default()
            }),
            observed_generation: Some(3),
            ..WorkerStatus::default()
        };
        let r = derive(&worker(), &template(), &status).expect("record");
        let wire = serde_json::to_value(&r).expect("json");
        assert_eq!(wire["id"], "uid-1");
        assert_eq!(wire["license_type"], "ENTERPRISE");
        assert_eq!(wire["instance_id"], "i-1");
        assert_eq!(wire["public_ip"], serde_json::Value::Null);
        assert_eq!(wire["cml_version"], "2.9.1");
        // 192 GiB is 206.16 GB and 500 GiB 536.87 GB: rounded down, never offering too much.
        assert_eq!(
            wire["capacity"],
            json!({"cpu_cores": 48, "memory_gb": 206, "storage_gb": 536, "max_nodes": 20})
        );
        assert_eq!(wire["port_range"], json!({"start": 2000, "end": 9999}));
        assert_eq!(wire["observed_generation"], 3);
        // The same worker derives the same record: no push when nothing changed.
        assert_eq!(derive(&worker(), &template(), &status), Some(r));
    }
}
