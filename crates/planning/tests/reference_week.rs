//! The committed reference week is what the generator makes with seed 1, and replaying it is
//! deterministic.

use std::time::Duration;

use ccm_core::{
    License,
    planner::{Resources, TemplateView},
};
use ccm_planning::{Settings, Template, reference, replay, schedule};

fn committed() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/schedules/reference-week.csv"
    );
    std::fs::read_to_string(path).expect("read examples/schedules/reference-week.csv")
}

#[test]
fn the_committed_week_is_the_generators_with_seed_1() {
    assert_eq!(
        committed(),
        schedule::to_csv(&reference::week(1)),
        "stale: cargo run -p ccm-planning --example reference_week -- 1 > examples/schedules/reference-week.csv"
    );
}

#[test]
fn replaying_the_week_twice_gives_the_same_figures() {
    let bookings = schedule::parse(&committed()).expect("parses");
    let template = |name: &str, license, cpu, nodes, min, warm| Template {
        name: name.into(),
        view: TemplateView {
            license,
            capacity: Resources {
                cpu,
                memory_gib: cpu * 4.0,
                storage_gib: 1000.0,
                nodes,
            },
            min_workers: min,
            max_workers: 10,
            warm_workers: warm,
            warm_room: None,
            max_stopped_workers: 1,
            grace: Duration::from_secs(1800),
            max_concurrent_drains: 2,
            last_scale_up: None,
            seats_available: None,
        },
        licensed: true,
        schedule: None,
        lead_time: None,
    };
    let templates = [
        template("enterprise-large", License::Enterprise, 96.0, 500.0, 0, 0),
        template("personal-standard", License::Personal, 48.0, 20.0, 1, 1),
    ];
    // A coarser tick keeps the debug build quick; the figures are compared, not judged.
    let settings = Settings {
        tick: Duration::from_secs(60),
        ..Settings::default()
    };
    let one = replay(&templates, &bookings, &settings);
    assert_eq!(one, replay(&templates, &bookings, &settings));
    assert_eq!(one.labs as usize, bookings.len());
    assert!(one.on_time > 0 && one.running_hours >= one.lower_bound_hours);
    // Every lab on time and no idle worker ahead in the placement order: labs share workers
    // exactly as first fit with each worker there just in time has them.
    assert_eq!(one.on_time, one.labs, "{}", one.table());
    for t in &one.by_template {
        assert!((t.holding_labs - t.placement).abs() < 0.05, "{t:?}");
    }
}
