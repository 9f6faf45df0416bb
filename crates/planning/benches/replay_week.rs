//! Replay speed and figures on the reference week with the sample templates' settings
//! (`make bench-simulate`, release build): labs on time, instance-hours against the lower
//! bound, and how long the replay of the week took. Under `cargo test` it replays a day.

use std::time::{Duration, Instant};

use ccm_core::{
    License,
    lead_time::LeadTime,
    planner::{Resources, TemplateView},
};
use ccm_planning::{Settings, Template, reference, replay};

/// The sample templates of deploy/examples, as the planner reads them.
fn samples() -> [Template; 2] {
    let view =
        |license, cpu: f64, memory_gib, storage_gib, nodes, scaling: (u32, u32, u32, u32, u32)| {
            let (min, max, warm, stopped, drains) = scaling;
            TemplateView {
                license,
                capacity: Resources {
                    cpu,
                    memory_gib,
                    storage_gib,
                    nodes,
                },
                min_workers: min,
                max_workers: max,
                warm_workers: warm,
                warm_room: None,
                max_stopped_workers: stopped,
                grace: Duration::from_secs(2 * 60),
                max_concurrent_drains: drains,
                last_scale_up: None,
                seats_available: None,
            }
        };
    [
        Template {
            name: "enterprise-large".into(),
            view: view(
                License::Enterprise,
                96.0,
                384.0,
                1000.0,
                500.0,
                (0, 10, 0, 4, 2),
            ),
            licensed: true,
            schedule: None,
            lead_time: Some(LeadTime::Auto),
        },
        Template {
            name: "personal-standard".into(),
            view: view(License::Personal, 48.0, 192.0, 500.0, 20.0, (0, 5, 0, 3, 1)),
            licensed: false,
            schedule: None,
            lead_time: Some(LeadTime::Auto),
        },
    ]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let mut week = reference::week(1);
    if !benching {
        let monday = week.iter().map(|b| b.start).min().expect("bookings");
        let tuesday = monday
            .checked_add(Duration::from_secs(86_400))
            .expect("time");
        week.retain(|b| b.start < tuesday);
    }
    let started = Instant::now();
    let out = replay(&samples(), &week, &Settings::default());
    let took = started.elapsed();
    print!("{}", out.table());
    println!(
        "replay of {} bookings after a warm-up run of them, {} rounds counted: {:.2} s in all",
        week.len(),
        out.rounds,
        took.as_secs_f64(),
    );
}
