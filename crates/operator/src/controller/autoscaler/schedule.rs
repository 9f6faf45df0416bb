//! The template's scaling schedule in this round: the `minWorkers` and `warmWorkers` to keep,
//! provided for a lead time ahead as demand is.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::{
    crd::{ScheduledLevels, WorkerTemplate},
    scaling_schedule::{Levels, UnknownTimeZone},
};

/// The levels to keep now, and why the schedule could not be read if it could not.
pub struct Scheduled {
    pub levels: Levels,
    /// `None` without a schedule.
    pub shown: Option<ScheduledLevels>,
    pub problem: Option<UnknownTimeZone>,
}

/// The spec's levels, or its schedule's from `now` to `now + lead_time`. A schedule whose time
/// zone is unknown keeps the highest level any of its windows sets: too many workers, never
/// too few.
pub fn levels(t: &WorkerTemplate, now: Timestamp, lead_time: Duration) -> Scheduled {
    let s = &t.spec.scaling;
    let spec = Levels {
        min_workers: s.min_workers,
        warm_workers: s.warm_workers,
    };
    let Some(schedule) = &s.schedule else {
        return Scheduled {
            levels: spec,
            shown: None,
            problem: None,
        };
    };
    let (levels, problem) = match schedule.resolve() {
        Ok(resolved) => (resolved.levels_within(spec, now, lead_time), None),
        Err(e) => (schedule.highest(spec), Some(e)),
    };
    Scheduled {
        levels,
        shown: Some(ScheduledLevels {
            min_workers: levels.min_workers,
            warm_workers: levels.warm_workers,
        }),
        problem,
    }
}
