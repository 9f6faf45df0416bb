//! One round of the autoscaler as facts: what `observe` gathers, the planner decides on and
//! the status step shows. Nothing is written before the plan.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;

use super::history::Records;
use crate::{
    crd::{BootDurations, LicenseSeats, ScheduledLevels, Worker},
    planner::{self, Creation, DemandItem, Inputs, Plan, TemplateView, WorkerView},
};

/// Everything one round knows before it decides.
pub struct Round {
    /// `namespace/name` of the template.
    pub key: String,
    pub now: Timestamp,
    /// The template's Workers as the cache shows them.
    pub workers: Vec<Arc<Worker>>,
    /// Workers created by earlier rounds that the cache does not show yet.
    pub expected: Vec<String>,
    /// Every worker as the planner sees it: `workers`, then `expected`.
    pub views: Vec<WorkerView>,
    /// The template as the planner sees it, with this round's levels.
    pub template: TemplateView,
    /// The template's share of the unplaced demand; `None` while it is unknown.
    pub demand: Option<Vec<DemandItem>>,
    /// Lab instances of the namespace that no template can hold.
    pub unplaceable: Vec<String>,
    pub lead_time: Duration,
    pub start_lead_time: Duration,
    /// Whether workers may be created (not while the template's image is unresolved).
    pub creation: Creation,
    /// What the round learnt that status shows as it is.
    pub learnt: Learnt,
}

/// What a round learns beside the planner's inputs, for status and Events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Learnt {
    /// The newest scale-up and scale-down records.
    pub records: Records,
    /// The seats of the template's product, with a seat budget.
    pub license_seats: Option<LicenseSeats>,
    /// The boots measured, with this round's.
    pub boot_durations: Option<BootDurations>,
    /// The floors a scaling schedule sets now.
    pub scheduled_levels: Option<ScheduledLevels>,
    /// Why the scaling schedule could not be read, if it could not.
    pub schedule_problem: Option<String>,
}

impl Round {
    /// The planner's decisions for this round: pure.
    pub fn plan(&self) -> Plan {
        planner::plan(&Inputs {
            template: &self.template,
            workers: &self.views,
            demand: self.demand.as_deref(),
            lead_time: self.lead_time,
            start_lead_time: self.start_lead_time,
            now: self.now,
            creation: self.creation.clone(),
        })
    }

    /// The template's Workers the cache shows.
    pub fn workers(&self) -> Vec<&Worker> {
        self.workers.iter().map(Arc::as_ref).collect()
    }
}
