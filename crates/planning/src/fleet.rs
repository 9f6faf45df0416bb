//! The simulated fleet: each worker's phase as the Worker controller would move it, timed from
//! the boot durations, and what is placed on it. The planner sees it through `WorkerView`s,
//! exactly as the controller shows it a real fleet.

use std::collections::VecDeque;

use ccm_core::{
    DesiredState, WorkerPhase,
    lead_time::{KEPT, Measured, measure},
    planner::{Action, Resources, WorkerView},
};
use jiff::Timestamp;

use crate::boot::Durations;

/// One simulated worker.
#[derive(Clone, Debug)]
pub(crate) struct SimWorker {
    pub(crate) name: String,
    pub(crate) template: usize,
    pub(crate) phase: WorkerPhase,
    pub(crate) desired: DesiredState,
    /// When the phase in motion (Pending, Starting, Stopping, Terminating) completes.
    pub(crate) done_at: Option<Timestamp>,
    /// Labs on it, by booking index.
    pub(crate) labs: Vec<usize>,
    pub(crate) allocated: Resources,
    pub(crate) idle_since: Timestamp,
    /// When its launch or start began.
    pub(crate) boot_began: Timestamp,
    /// Gone: terminated.
    pub(crate) gone: bool,
}

/// What happened to the fleet, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) launches: u32,
    pub(crate) starts: u32,
    pub(crate) drains: u32,
    pub(crate) stops: u32,
    pub(crate) deletes: u32,
}

/// The workers of every template, and the draws of their durations.
pub(crate) struct Fleet {
    pub(crate) workers: Vec<SimWorker>,
    pub(crate) counts: Counts,
    /// Each template's last launches to Ready, in seconds, as its status measures them.
    launches: Vec<VecDeque<u64>>,
    /// Each template's last starts to Ready, likewise.
    starts: Vec<VecDeque<u64>>,
    durations: Durations,
    licensed: Vec<bool>,
    rng: fastrand::Rng,
}

fn after(now: Timestamp, d: std::time::Duration) -> Timestamp {
    now.checked_add(d).unwrap_or(now)
}

impl Fleet {
    pub(crate) fn new(durations: Durations, licensed: Vec<bool>, seed: u64) -> Fleet {
        Fleet {
            workers: Vec::new(),
            counts: Counts::default(),
            launches: vec![VecDeque::new(); licensed.len()],
            starts: vec![VecDeque::new(); licensed.len()],
            durations,
            licensed,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Time to Ready from a launch or a start, license registration included.
    fn ready_in(&mut self, template: usize, start: bool) -> std::time::Duration {
        let boot = if start {
            self.durations.start
        } else {
            self.durations.launch
        };
        let license = if self.licensed[template] {
            self.durations.license.draw(&mut self.rng)
        } else {
            std::time::Duration::ZERO
        };
        boot.draw(&mut self.rng) + license
    }

    /// Moves every worker on as far as `now` allows, as the Worker controller would.
    pub(crate) fn advance(&mut self, now: Timestamp) {
        for k in 0..self.workers.len() {
            self.advance_one(k, now);
        }
    }

    fn advance_one(&mut self, k: usize, now: Timestamp) {
        use WorkerPhase::*;
        let due = self.workers[k].done_at.is_some_and(|at| at <= now);
        let (phase, desired, idle) = {
            let w = &self.workers[k];
            (w.phase, w.desired, w.labs.is_empty())
        };
        let next = match (phase, desired) {
            (Pending | Starting, _) if due => Some((Running, None)),
            (Running, DesiredState::Draining) => Some((Draining, None)),
            (Running | Draining, DesiredState::Stopped) if idle => {
                let stop = self.durations.stop.draw(&mut self.rng);
                Some((Stopping, Some(after(now, stop))))
            }
            (Draining, DesiredState::Running) => Some((Running, None)),
            (Draining, DesiredState::Draining) if idle => {
                let stop = self.durations.stop.draw(&mut self.rng);
                Some((Stopping, Some(after(now, stop))))
            }
            (Stopping, _) if due => Some((Stopped, None)),
            (Stopped, DesiredState::Running) => {
                self.counts.starts += 1;
                let t = self.workers[k].template;
                let ready = self.ready_in(t, true);
                self.workers[k].boot_began = now;
                Some((Starting, Some(after(now, ready))))
            }
            (Terminating, _) if due => {
                self.workers[k].gone = true;
                None
            }
            _ => None,
        };
        if let Some((phase, done_at)) = next {
            if phase == Running && matches!(self.workers[k].phase, Pending | Starting) {
                self.measure_boot(k, now);
            }
            let w = &mut self.workers[k];
            if phase == Running {
                w.idle_since = now;
            }
            w.phase = phase;
            w.done_at = done_at;
            // A worker that moved may move again at once (a finished drain stops).
            self.advance_one(k, now);
        }
    }

    /// Records worker `k`'s launch or start, done at `now`, among its template's last ones.
    fn measure_boot(&mut self, k: usize, now: Timestamp) {
        let w = &self.workers[k];
        let seconds = now.duration_since(w.boot_began).as_secs().max(0) as u64;
        let kept = match w.phase {
            WorkerPhase::Starting => &mut self.starts[w.template],
            _ => &mut self.launches[w.template],
        };
        kept.push_back(seconds);
        if kept.len() > KEPT {
            kept.pop_front();
        }
    }

    /// The quantiles of the template's last launches, as `scaleUpLeadTime: auto` reads them.
    pub(crate) fn measured_launches(&self, template: usize) -> Option<Measured> {
        measure(self.launches[template].iter().copied())
    }

    /// The quantiles of the template's last starts from stopped.
    pub(crate) fn measured_starts(&self, template: usize) -> Option<Measured> {
        measure(self.starts[template].iter().copied())
    }

    /// The first moment after `now` a worker's boot, stop or termination completes.
    pub(crate) fn next_done_after(&self, now: Timestamp) -> Option<Timestamp> {
        self.workers
            .iter()
            .filter_map(|w| w.done_at)
            .filter(|at| *at > now)
            .min()
    }

    /// The template's live workers as the planner sees them.
    pub(crate) fn views(&self, template: usize) -> Vec<WorkerView> {
        self.live(template)
            .map(|(_, w)| WorkerView {
                name: w.name.clone(),
                owned: true,
                phase: w.phase,
                desired: w.desired,
                deleting: w.phase == WorkerPhase::Terminating,
                do_not_disrupt: false,
                busy: Some(!w.labs.is_empty()),
                allocated: Some(w.allocated),
                next_timeslot_start: None,
                idle_since: Some(w.idle_since),
            })
            .collect()
    }

    /// The template's workers that are not gone, with their indices.
    pub(crate) fn live(&self, template: usize) -> impl Iterator<Item = (usize, &SimWorker)> {
        self.workers
            .iter()
            .enumerate()
            .filter(move |(_, w)| w.template == template && !w.gone)
    }

    /// Carries out one of the planner's decisions for `template` at `now`.
    pub(crate) fn act(&mut self, template: usize, action: &Action, now: Timestamp) {
        match action {
            Action::Create { count } => {
                for _ in 0..*count {
                    self.launch(template, now);
                }
            }
            Action::Start { worker } | Action::CancelDrain { worker } => {
                self.desire(template, worker, DesiredState::Running)
            }
            Action::Drain { worker } => {
                self.counts.drains += 1;
                self.desire(template, worker, DesiredState::Draining)
            }
            Action::Stop { worker } => {
                self.counts.stops += 1;
                self.desire(template, worker, DesiredState::Stopped)
            }
            Action::Delete { worker } => {
                self.counts.deletes += 1;
                let terminate = self.durations.terminate.draw(&mut self.rng);
                if let Some(w) = self.named(template, worker) {
                    w.phase = WorkerPhase::Terminating;
                    w.done_at = Some(after(now, terminate));
                }
            }
        }
    }

    fn launch(&mut self, template: usize, now: Timestamp) {
        self.counts.launches += 1;
        let ready = self.ready_in(template, false);
        let name = format!("t{template}-w{}", self.workers.len());
        self.workers.push(SimWorker {
            name,
            template,
            phase: WorkerPhase::Pending,
            desired: DesiredState::Running,
            done_at: Some(after(now, ready)),
            labs: Vec::new(),
            allocated: Resources::default(),
            idle_since: now,
            boot_began: now,
            gone: false,
        });
    }

    fn desire(&mut self, template: usize, name: &str, desired: DesiredState) {
        if let Some(w) = self.named(template, name) {
            w.desired = desired;
        }
    }

    fn named(&mut self, template: usize, name: &str) -> Option<&mut SimWorker> {
        self.workers
            .iter_mut()
            .find(|w| w.template == template && !w.gone && w.name == name)
    }
}
