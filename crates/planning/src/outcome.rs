//! What a replay found: labs on time and late, the fleet's cost and motion, and the lower
//! bound beside it.

use ccm_core::WorkerPhase;
use serde::Serialize;

/// A lab that started late, and by how much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Late {
    /// The lab instance's id.
    pub id: String,
    /// How long after its timeslot's start it was placed.
    pub by_seconds: u64,
}

/// The figures of one replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Labs in the schedule.
    pub labs: u32,
    /// Placed on a ready worker at their timeslot's start.
    pub on_time: u32,
    /// Placed later, latest first.
    pub late: Vec<Late>,
    /// Never placed: no worker had room before they ended.
    pub never_served: Vec<String>,
    /// Hours of instances EC2 bills: booting, ready or draining (not stopping or
    /// shutting down; a boot is counted whole, though EC2 bills from `running`, a minute or
    /// so into it).
    pub running_hours: f64,
    /// Hours of instances stopped (storage only).
    pub stopped_hours: f64,
    /// Most workers up at once.
    pub peak_workers: u32,
    /// Most license seats held at once (workers of licensing templates, booting to stopping).
    pub peak_seats: u32,
    /// Seat-hours held.
    pub seat_hours: f64,
    /// Workers launched.
    pub launches: u32,
    /// Stopped workers started again.
    pub starts: u32,
    /// Drains begun.
    pub drains: u32,
    /// Workers deleted.
    pub deletes: u32,
    /// The clairvoyant lower bound on running hours (see `bound`).
    pub lower_bound_hours: f64,
    /// Hours the labs hold workers under the platform's first-fit placement with every worker
    /// there just in time: a reference for the hours holding labs, not a bound (see
    /// `placement`).
    pub placement_hours: f64,
    /// Planner rounds run.
    pub rounds: u64,
    /// Simulated time, in hours.
    pub simulated_hours: f64,
    /// Where each template's hours went, beside its share of the bound.
    pub by_template: Vec<TemplateHours>,
    /// The fleet every five simulated minutes, for the picture (not in the JSON).
    #[serde(skip)]
    pub timeline: Vec<crate::picture::Sample>,
}

/// Where one template's hours went (running, and stopping beside), and its share of the
/// lower bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TemplateHours {
    /// The template's name.
    pub template: String,
    /// Hours of its workers holding labs.
    pub holding_labs: f64,
    /// Hours of its workers ready (or draining) with no lab.
    pub idle: f64,
    /// Hours of launches and starts, license registration included.
    pub booting: f64,
    /// Hours of stops and terminations, which EC2 does not bill.
    pub stopping: f64,
    /// Its share of the lower bound.
    pub lower_bound: f64,
    /// Its share of `Outcome::placement_hours`.
    pub placement: f64,
}

/// Whether EC2 bills an instance in `phase` (a live one, not stopped): it bills neither
/// stopping nor shutting-down.
pub(crate) fn billed(phase: WorkerPhase) -> bool {
    !matches!(phase, WorkerPhase::Stopping | WorkerPhase::Terminating)
}

impl TemplateHours {
    /// Counts `hours` of a live, not stopped worker in `phase`, holding labs or not.
    pub(crate) fn add(&mut self, phase: WorkerPhase, holding_labs: bool, hours: f64) {
        let bucket = match phase {
            _ if !billed(phase) => &mut self.stopping,
            WorkerPhase::Running | WorkerPhase::Draining if holding_labs => &mut self.holding_labs,
            WorkerPhase::Running | WorkerPhase::Draining => &mut self.idle,
            _ => &mut self.booting,
        };
        *bucket += hours;
    }

    /// Its billed hours: all but stopping.
    pub fn running(&self) -> f64 {
        self.holding_labs + self.idle + self.booting
    }
}

impl Outcome {
    /// The share of labs on time, from 0 to 1 (1 with no labs).
    pub fn on_time_ratio(&self) -> f64 {
        if self.labs == 0 {
            1.0
        } else {
            f64::from(self.on_time) / f64::from(self.labs)
        }
    }

    /// Running hours over the lower bound (`None` when the bound is zero).
    pub fn cost_ratio(&self) -> Option<f64> {
        (self.lower_bound_hours > 0.0).then(|| self.running_hours / self.lower_bound_hours)
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let pct = 100.0 * self.on_time_ratio();
        let worst = self
            .late
            .first()
            .map(|l| format!(" (latest {} by {})", l.id, minutes(l.by_seconds)))
            .unwrap_or_default();
        let rows = [
            ("labs", self.labs.to_string()),
            ("on time", format!("{} ({pct:.2} %)", self.on_time)),
            ("late", format!("{}{worst}", self.late.len())),
            ("never served", self.never_served.len().to_string()),
            (
                "instance-hours running",
                format!("{:.1}", self.running_hours),
            ),
            (
                "instance-hours stopped",
                format!("{:.1}", self.stopped_hours),
            ),
            (
                "lower bound (running)",
                format!("{:.1}", self.lower_bound_hours),
            ),
            (
                "running / lower bound",
                times(self.running_hours, self.lower_bound_hours),
            ),
            (
                "placement alone",
                format!(
                    "{:.1} ({} the bound: labs held where the platform put them)",
                    self.placement_hours,
                    times(self.placement_hours, self.lower_bound_hours)
                ),
            ),
            ("peak workers", self.peak_workers.to_string()),
            (
                "license seats",
                format!(
                    "peak {}, {:.1} seat-hours",
                    self.peak_seats, self.seat_hours
                ),
            ),
            ("launches", self.launches.to_string()),
            ("starts", self.starts.to_string()),
            ("drains", self.drains.to_string()),
            ("deletes", self.deletes.to_string()),
            (
                "simulated",
                format!("{:.1} h in {} rounds", self.simulated_hours, self.rounds),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out: String = rows
            .iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect();
        out += &self.hours_table();
        out
    }

    /// Where each template's hours went.
    fn hours_table(&self) -> String {
        let width = self
            .by_template
            .iter()
            .map(|t| t.template.len())
            .fold("running hours by template".len(), usize::max);
        let mut out = format!(
            "\n{:<width$}  {:>8}  {:>12}  {:>9}  {:>6}  {:>7}  {:>11}  {:>7}  {:>20}\n",
            "running hours by template",
            "running",
            "holding labs",
            "placement",
            "idle",
            "booting",
            "lower bound",
            "/ bound",
            "stopping (unbilled)"
        );
        for t in &self.by_template {
            out += &format!(
                "{:<width$}  {:>8.1}  {:>12.1}  {:>9.1}  {:>6.1}  {:>7.1}  {:>11.1}  {:>7}  {:>20.1}\n",
                t.template,
                t.running(),
                t.holding_labs,
                t.placement,
                t.idle,
                t.booting,
                t.lower_bound,
                times(t.running(), t.lower_bound),
                t.stopping
            );
        }
        out
    }
}

/// `hours / of` as "1.23x", or "-" when `of` is zero.
fn times(hours: f64, of: f64) -> String {
    if of > 0.0 {
        format!("{:.2}x", hours / of)
    } else {
        "-".to_owned()
    }
}

fn minutes(seconds: u64) -> String {
    format!("{}m{:02}s", seconds / 60, seconds % 60)
}
