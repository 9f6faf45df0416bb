//! `resource-controller simulate` as a user runs it: the sample template and a schedule file in,
//! a table or JSON out; a malformed schedule refused with its line and field named.

use ccm_harness as support;

use serde_json::json;
use std::process::{Command, Output};

fn simulate(schedule: &str, extra: &[&str]) -> Output {
    simulate_with(schedule, extra, None)
}

/// Runs simulate, against the cluster of `kubeconfig` when given.
fn simulate_with(schedule: &str, extra: &[&str], kubeconfig: Option<&std::path::Path>) -> Output {
    let dir = support::process::scratch_dir("simulate-");
    let file = dir.join("schedule.csv");
    std::fs::write(&file, schedule).expect("write the schedule");
    let template =
        support::repo_root().join("deploy/examples/workertemplate-enterprise-large.yaml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_resource-controller"));
    if let Some(k) = kubeconfig {
        command.env("KUBECONFIG", k);
    }
    command
        .arg("simulate")
        .arg("--templates")
        .arg(&template)
        .arg("--schedule")
        .arg(&file)
        .args(extra)
        .output()
        .expect("run simulate")
}

const SCHEDULE: &str = "\
id,start,end,known_at,nodes,cpu_cores,memory_gb,storage_gb,licenses
ccna-1,2026-12-07T09:00:00Z,2026-12-07T12:00:00Z,2026-12-01T10:00:00Z,12,24,48,20,ENTERPRISE
ccna-2,2026-12-07T09:00:00Z,2026-12-07T12:00:00Z,2026-12-01T10:00:00Z,12,24,48,20,ENTERPRISE
";

#[test]
fn a_schedule_replays_to_a_table_and_to_json() {
    let out = simulate(SCHEDULE, &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains(
            "templates enterprise-large; 2 bookings; lead time 35m (enterprise-large auto)"
        ),
        "the sample's own lead time is used: {table}"
    );
    assert!(
        table.contains("on time                 2 (100.00 %)"),
        "{table}"
    );
    let by_template = table
        .lines()
        .skip_while(|l| !l.starts_with("running hours by template"))
        .nth(1)
        .unwrap_or_default();
    assert!(by_template.starts_with("enterprise-large"), "{table}");
    let out = simulate(SCHEDULE, &["--output", "json", "--seed", "3"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["labs"], 2);
    assert_eq!(json["on_time"], 2);
    assert!(json["lower_bound_hours"].as_f64().expect("bound") > 0.0);
    assert!(json["running_hours"].as_f64() >= json["lower_bound_hours"].as_f64());
    let hours = &json["by_template"][0];
    assert_eq!(hours["template"], "enterprise-large");
    let part = |k: &str| hours[k].as_f64().expect(k);
    let sum = part("holding_labs") + part("idle") + part("booting");
    let running = json["running_hours"].as_f64().expect("running");
    assert!((sum - running).abs() < 1e-6, "{hours} against {running}");
    assert_eq!(hours["lower_bound"], json["lower_bound_hours"]);
    assert_eq!(hours["placement"], json["placement_hours"]);
    assert!(part("placement") > 0.0);
    assert!(table.contains("placement alone"), "{table}");
    // After the warm-up run the sample's stopped pool starts a worker; from an empty fleet one
    // is launched.
    assert!(
        table.contains("after a warm-up run of the same bookings"),
        "{table}"
    );
    assert_eq!((&json["launches"], &json["starts"]), (&json!(0), &json!(1)));
    let out = simulate(SCHEDULE, &["--output", "json", "--cold-start"]);
    let cold: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((&cold["launches"], &cold["starts"]), (&json!(1), &json!(0)));
    assert_eq!(cold["on_time"], 2);
}

#[test]
fn a_malformed_schedule_is_refused_with_its_line_and_field() {
    let bad = SCHEDULE.replace("ccna-2,2026-12-07T09:00:00Z", "ccna-2,9am");
    let out = simulate(&bad, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3, field start"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing printed for a refused schedule"
    );
}

#[test]
fn a_sweep_prints_the_trade_off_and_a_picture_is_drawn() {
    let out = simulate(SCHEDULE, &["--sweep", "enterprise-large.warmWorkers=0..1"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("enterprise-large.warmWorkers=0"), "{table}");
    assert!(table.contains("enterprise-large.warmWorkers=1"), "{table}");
    assert!(table.contains("best with >= 99.9 % on time"), "{table}");
    let dir = support::process::scratch_dir("simulate-");
    let picture = dir.join("week.svg");
    let out = simulate(SCHEDULE, &["--picture", &picture.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&picture).expect("the picture");
    assert!(svg.starts_with("<svg") && svg.contains("width=\"1200\" height=\"420\""));
    assert_eq!(svg.matches("<polyline").count(), 3);
    let trade_off = dir.join("sweep.svg");
    let path = trade_off.display().to_string();
    let out = simulate(
        SCHEDULE,
        &["--sweep", "warmWorkers=0..2", "--picture", &path],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&trade_off).expect("the trade-off");
    assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    let refused = simulate(SCHEDULE, &["--sweep", "colour=1..2"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not one of"));
}

#[tokio::test]
async fn boot_durations_come_from_a_live_templates_measurements() {
    use kube::{
        Api,
        api::{Patch, PatchParams, PostParams},
    };
    use resource_controller::crd::WorkerTemplate;
    let cp = support::ControlPlane::shared();
    let client = cp.client().await;
    let ns = support::TestNamespace::create(&client, "simulate").await;
    let templates: Api<WorkerTemplate> = Api::namespaced(client.clone(), &ns.name);
    let template: WorkerTemplate = serde_json::from_value(serde_json::json!({
        "apiVersion": "ccm.dev/v1alpha1", "kind": "WorkerTemplate",
        "metadata": {"name": "live"},
        "spec": {"instanceType": "m5zn.metal", "image": {"namePattern": "CML-2.9.*"},
                 "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
                 "licenseType": "Personal", "scaling": {"maxWorkers": 3}}
    }))
    .expect("template");
    templates
        .create(&PostParams::default(), &template)
        .await
        .expect("create");
    let sample = |worker: &str, kind: &str, seconds: u64| {
        serde_json::json!({"worker": worker, "kind": kind, "seconds": seconds,
                           "readyAt": "2026-12-01T10:00:00Z"})
    };
    let status = serde_json::json!({"status": {"bootDurations": {"recent": [
        sample("a", "Launch", 420), sample("b", "Launch", 540), sample("c", "Start", 150)
    ]}}});
    templates
        .patch_status("live", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let live = format!("{}/live", ns.name);
    let out = simulate_with(SCHEDULE, &["--from-cluster", &live], Some(&cp.kubeconfig));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("launch 7m..9m, start 2m30s, seed"),
        "{table}"
    );
    let missing = format!("{}/nowhere", ns.name);
    let out = simulate_with(
        SCHEDULE,
        &["--from-cluster", &missing],
        Some(&cp.kubeconfig),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading WorkerTemplate"));
    ns.delete().await;
}
