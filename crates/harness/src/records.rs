//! A sample worker record, as the controller would derive it.

use resource_controller::control_plane::{License, RecordCapacity, RecordPortRange, WorkerRecord};

pub fn sample(id: &str, phase: &str) -> WorkerRecord {
    let running = phase == "Running";
    WorkerRecord {
        id: id.into(),
        name: "w1".into(),
        namespace: "labs".into(),
        template: "t".into(),
        license_type: License::Enterprise,
        phase: phase.into(),
        accepting_assignments: running,
        instance_id: Some("i-1".into()),
        instance_type: Some("m5zn.metal".into()),
        availability_zone: Some("us-east-1a".into()),
        private_ip: Some("10.0.0.1".into()),
        public_ip: None,
        cml_endpoint: running.then(|| "https://10.0.0.1:443".into()),
        cml_version: running.then(|| "2.9.1".into()),
        capacity: RecordCapacity {
            cpu_cores: 48,
            memory_gb: 192,
            storage_gb: 500,
            max_nodes: 20,
        },
        port_range: RecordPortRange {
            start: 2000,
            end: 9999,
        },
        observed_generation: Some(1),
        updated_at: "2026-11-27T07:00:00Z".into(),
    }
}
