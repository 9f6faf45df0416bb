//! Replay speed and figures on the reference week with the sample templates' settings
//! (`make bench-simulate`, release build): labs on time, instance-hours against the lower
//! bound, and how long the replay of the week took. Under `cargo test` it replays a day.

use std::time::{Duration, Instant};

use ccm_core::{
    License,
    lead_time::LeadTime,
    planner::{Resources, TemplateView},
    scaling_schedule::{Resolved, ScalingSchedule},
};
use ccm_planning::{Settings, Template, reference, replay};

/// The sample templates of deploy/examples, as the planner reads them.
fn samples() -> [Template; 2] {
    let view =
        |license, cpu: f64, memory_gb, storage_gb, nodes, scaling: (u32, u32, u32, u32, u32)| {
            let (min, max, warm, stopped, drains) = scaling;
            TemplateView {
                license,
                capacity: Resources {
                    cpu,
                    memory_gb,
                    storage_gb,
                    nodes,
                },
                min_workers: min,
                max_workers: max,
                warm_workers: warm,
                warm_room: None,
                max_stopped_workers: stopped,
                grace: Duration::from_secs(10 * 60),
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
                (0, 10, 0, 0, 2),
            ),
            licensed: true,
            schedule: None,
            lead_time: Some(LeadTime::Auto),
        },
        Template {
            name: "personal-standard".into(),
            view: TemplateView {
                warm_room: Some(Resources {
                    cpu: 8.0,
                    memory_gb: 16.0,
                    storage_gb: 26.0,
                    nodes: 8.0,
                }),
                ..view(License::Personal, 48.0, 192.0, 500.0, 20.0, (0, 5, 0, 1, 1))
            },
            licensed: false,
            schedule: Some(evenings_and_weekends()),
            lead_time: Some(LeadTime::Auto),
        },
    ]
}

/// personal-standard's schedule: a warm worker (or room for a lab) while self-study is booked at short notice.
fn evenings_and_weekends() -> Resolved {
    let schedule: ScalingSchedule = serde_json::from_value(serde_json::json!({
        "timeZone": "UTC",
        "windows": [
            {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "from": "18:00", "to": "22:00", "warmWorkers": 1},
            {"days": ["Sat", "Sun"], "from": "10:00", "to": "20:00", "warmWorkers": 1}
        ]
    }))
    .expect("schedule");
    schedule.resolve().expect("UTC")
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
        "replay of {} bookings, {} rounds: {:.2} s ({:.1} µs a round)",
        week.len(),
        out.rounds,
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / out.rounds.max(1) as f64
    );
}
