//! The simulated-time loop: at every round the platform places the labs whose timeslot has come
//! (first fit onto ready workers) and frees those that ended, the fleet moves on, and each
//! template's planner (the controller's own function) decides on the demand known by then. A
//! round runs at every event (a booking becomes known, a timeslot starts or ends, a worker's
//! boot or stop completes), as the controller reacts to each change, and a tick after the last
//! round at the latest, as its periodic resync does.
//!
//! By default the schedule is first replayed once as many whole weeks earlier as it takes not to
//! overlap, and only the second run is counted: the fleet starts as running the same settings
//! leaves it (stopped pools filled, boots measured for `auto`), not empty.

use std::time::Duration;

use ccm_core::{
    DesiredState, WorkerPhase,
    lead_time::{self, LeadTime, MAX_MARGIN},
    planner::{self, Creation, Inputs, Offer, TemplateView, Wanted},
    scaling_schedule::{Levels, Resolved},
};
use jiff::Timestamp;

use crate::{
    boot::Durations,
    bound,
    fleet::{Counts, Fleet},
    outcome::{Late, Outcome, TemplateHours, billed},
    picture::Sample,
    placement,
    schedule::Booking,
};

/// One WorkerTemplate as the replay uses it.
#[derive(Clone, Debug)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// Its scaling settings and capacity, as the planner reads them (`last_scale_up` and
    /// `seats_available` are the replay's to keep).
    pub view: TemplateView,
    /// Whether its workers register a license before they are ready.
    pub licensed: bool,
    /// Its scaling schedule: `minWorkers` and `warmWorkers` by time of week, over the view's.
    pub schedule: Option<Resolved>,
    /// Its `scaleUpLeadTime`; `None`: the controller's (`Settings::lead_time`).
    pub lead_time: Option<LeadTime>,
}

impl Template {
    /// The view as the planner sees it at `now`: the schedule's levels, provided for
    /// `lead_time` ahead, over the spec's.
    fn view_at(&self, now: Timestamp, lead_time: Duration) -> TemplateView {
        let Some(schedule) = &self.schedule else {
            return self.view.clone();
        };
        let spec = Levels {
            min_workers: self.view.min_workers,
            warm_workers: self.view.warm_workers,
        };
        self.view
            .clone()
            .with_levels(schedule.levels_within(spec, now, lead_time))
    }
}

/// How the replay runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--scale-up-lead-time`: demand starting within it counts now.
    pub lead_time: Duration,
    /// Longest time between rounds (the controller's resync; every event runs one at once).
    pub tick: Duration,
    /// How long workers take to come up and go down.
    pub durations: Durations,
    /// Seed of the duration draws.
    pub seed: u64,
    /// Start from an empty fleet, with no warm-up replay before.
    pub cold_start: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            lead_time: Duration::from_secs(35 * 60),
            tick: Duration::from_secs(10),
            durations: Durations::default(),
            seed: 1,
            cold_start: false,
        }
    }
}

/// A lab's course through the replay.
#[derive(Clone, Copy, Debug, Default)]
struct LabState {
    worker: Option<usize>,
    placed_at: Option<Timestamp>,
    ended: bool,
}

/// The replay's world at one moment.
struct World<'a> {
    templates: Vec<Template>,
    bookings: &'a [Booking],
    labs: Vec<LabState>,
    fleet: Fleet,
    settings: &'a Settings,
}

/// Replays `bookings` through `templates` and reports what happened, beside the lower bound.
pub fn replay(templates: &[Template], bookings: &[Booking], settings: &Settings) -> Outcome {
    replay_with_progress(templates, bookings, settings, &mut |_| {})
}

/// [`replay`], telling `progress` the share of simulated time done (0 to 1) at each whole
/// percent.
pub fn replay_with_progress(
    templates: &[Template],
    bookings: &[Booking],
    settings: &Settings,
    progress: &mut dyn FnMut(f64),
) -> Outcome {
    let licensed = templates.iter().map(|t| t.licensed).collect();
    let lead = longest_lead(templates, settings);
    let (measured_from, until) = span(bookings, lead);
    let all = if settings.cold_start {
        bookings.to_vec()
    } else {
        with_warm_up(
            bookings,
            until.duration_since(measured_from).unsigned_abs() + lead,
        )
    };
    let warm_up = all.len() - bookings.len();
    let mut world = World {
        templates: templates.to_vec(),
        bookings: &all,
        labs: vec![LabState::default(); all.len()],
        fleet: Fleet::new(settings.durations, licensed, settings.seed),
        settings,
    };
    let (from, _) = span(&all, lead);
    let offers = offers(templates);
    let assigned = bound::assignment(bookings, &offers);
    let mut outcome = Outcome {
        by_template: templates
            .iter()
            .map(|t| TemplateHours {
                template: t.name.clone(),
                ..TemplateHours::default()
            })
            .collect(),
        ..Outcome::default()
    };
    let mut events = Events::of(&all, measured_from);
    let mut now = from;
    let mut next_sample = measured_from;
    let total = until.duration_since(from).as_secs_f64().max(1.0);
    let mut told = 0;
    while now < until {
        let done = now.duration_since(from).as_secs_f64() / total;
        if (done * 100.0) as u32 > told {
            told = (done * 100.0) as u32;
            progress(done);
        }
        if now >= measured_from && outcome.rounds == 0 {
            // What the warm-up did is not counted.
            world.fleet.counts = Counts::default();
        }
        world.fleet.advance(now);
        world.end_labs(now);
        world.place_labs(now);
        world.plan(now);
        // The Worker controller acts on the decisions at once (a start, a drain).
        world.fleet.advance(now);
        let next = events
            .next_after(now)
            .into_iter()
            .chain(world.fleet.next_done_after(now))
            .fold(
                now.checked_add(settings.tick).unwrap_or(until),
                Timestamp::min,
            )
            .min(until);
        if now >= measured_from {
            let step = next.duration_since(now).unsigned_abs();
            world.account(&mut outcome, step);
            outcome.simulated_hours += step.as_secs_f64() / 3600.0;
            if now >= next_sample {
                let needed = bound::needed_at(bookings, &assigned, &offers, now);
                outcome.timeline.push(world.sample(now, needed));
                next_sample = now.checked_add(SAMPLE_EVERY).unwrap_or(until);
            }
            outcome.rounds += 1;
        }
        now = next;
    }
    progress(1.0);
    world.finish(&mut outcome, warm_up);
    let bounds = lower_bounds(templates, bookings, &assigned, settings);
    let placed = placement::holding_hours(bookings, &offers, &assigned);
    for ((hours, bound), placed) in outcome.by_template.iter_mut().zip(&bounds).zip(&placed) {
        hours.lower_bound = *bound;
        hours.placement = *placed;
    }
    outcome.lower_bound_hours = bounds.iter().sum();
    outcome.placement_hours = placed.iter().sum();
    outcome
}

/// The clairvoyant lower bound (see [`bound`]) on the instance-hours of serving `bookings` on
/// time with `templates` and the boot times of `settings`.
pub fn lower_bound(templates: &[Template], bookings: &[Booking], settings: &Settings) -> f64 {
    let assigned = bound::assignment(bookings, &offers(templates));
    lower_bounds(templates, bookings, &assigned, settings)
        .iter()
        .sum()
}

/// [`lower_bound`] per template, in the order of `templates`, for the bookings as `assigned`
/// to them.
fn lower_bounds(
    templates: &[Template],
    bookings: &[Booking],
    assigned: &[Option<usize>],
    settings: &Settings,
) -> Vec<f64> {
    let shortest_boot: Vec<Duration> = templates
        .iter()
        .map(|t| settings.durations.shortest_boot(t.licensed))
        .collect();
    bound::instance_hours(bookings, &offers(templates), assigned, &shortest_boot)
}

/// When bookings become known, start and end, and when counting begins, in order: the moments a
/// round must run at.
struct Events {
    at: Vec<Timestamp>,
    /// The first not yet passed.
    next: usize,
}

impl Events {
    fn of(bookings: &[Booking], counted_from: Timestamp) -> Events {
        let mut at: Vec<Timestamp> = bookings
            .iter()
            .flat_map(|b| [b.known_at, b.start, b.end])
            .chain([counted_from])
            .collect();
        at.sort_unstable();
        at.dedup();
        Events { at, next: 0 }
    }

    /// The first event after `now` (rounds only move forward).
    fn next_after(&mut self, now: Timestamp) -> Option<Timestamp> {
        while self.at.get(self.next).is_some_and(|t| *t <= now) {
            self.next += 1;
        }
        self.at.get(self.next).copied()
    }
}

/// How often the timeline of the picture is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(300);

/// The longest lead time any template may use: its own, the controller's, or with `auto` the
/// longest boot plus the margin.
fn longest_lead(templates: &[Template], settings: &Settings) -> Duration {
    let d = &settings.durations;
    let own = |t: &Template| match t.lead_time {
        Some(LeadTime::Fixed(lead)) => lead.as_std(),
        Some(LeadTime::Auto) => {
            let license = if t.licensed {
                d.license.high
            } else {
                Duration::ZERO
            };
            d.launch.high + license + MAX_MARGIN
        }
        None => Duration::ZERO,
    };
    templates
        .iter()
        .map(own)
        .fold(settings.lead_time, Duration::max)
}

/// `bookings` after the same bookings as many whole weeks earlier (so the time of week, and with
/// it a scaling schedule, is the same) as `length` (their span and a lead time) takes, so the two
/// runs stay apart; the earlier ids begin with `warm-up:`.
fn with_warm_up(bookings: &[Booking], length: Duration) -> Vec<Booking> {
    let weeks = length.as_secs().div_ceil(WEEK.as_secs()).max(1) as u32;
    let back = WEEK * weeks;
    let earlier = bookings.iter().map(|b| {
        let before = |t: Timestamp| t.checked_sub(back).unwrap_or(t);
        Booking {
            id: format!("warm-up:{}", b.id),
            start: before(b.start),
            end: before(b.end),
            known_at: before(b.known_at),
            ..b.clone()
        }
    });
    earlier.chain(bookings.iter().cloned()).collect()
}

const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// From one lead time before the first start (nothing earlier can matter) to the last end.
fn span(bookings: &[Booking], lead_time: Duration) -> (Timestamp, Timestamp) {
    let first = bookings
        .iter()
        .map(|b| b.start.checked_sub(lead_time).unwrap_or(b.start))
        .min()
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let last = bookings.iter().map(|b| b.end).max().unwrap_or(first);
    (first, last)
}

fn offers(templates: &[Template]) -> Vec<Offer> {
    templates
        .iter()
        .map(|t| Offer {
            name: t.name.clone(),
            license: t.view.license,
            capacity: t.view.capacity,
        })
        .collect()
}

impl World<'_> {
    /// Labs whose timeslot ended leave their worker.
    fn end_labs(&mut self, now: Timestamp) {
        for (k, b) in self.bookings.iter().enumerate() {
            let lab = &mut self.labs[k];
            if lab.ended || b.end > now {
                continue;
            }
            lab.ended = true;
            if let Some(w) = lab.worker {
                let w = &mut self.fleet.workers[w];
                w.labs.retain(|l| *l != k);
                w.allocated = w.allocated.minus(&b.needs);
                if w.labs.is_empty() {
                    w.idle_since = now;
                }
            }
        }
    }

    /// The platform places each lab whose timeslot has come, first fit onto a ready worker that
    /// takes new labs and whose license the lab accepts.
    fn place_labs(&mut self, now: Timestamp) {
        for (k, b) in self.bookings.iter().enumerate() {
            let lab = self.labs[k];
            if lab.worker.is_some() || lab.ended || b.start > now {
                continue;
            }
            let templates = &self.templates;
            let fits = self.fleet.workers.iter().position(|w| {
                let t = &templates[w.template].view;
                !w.gone
                    && w.phase == WorkerPhase::Running
                    && w.desired == DesiredState::Running
                    && b.licenses.contains(&t.license)
                    && t.capacity.minus(&w.allocated).fits(&b.needs)
            });
            if let Some(w) = fits {
                let worker = &mut self.fleet.workers[w];
                worker.labs.push(k);
                worker.allocated = worker.allocated.plus(&b.needs);
                self.labs[k] = LabState {
                    worker: Some(w),
                    placed_at: Some(now),
                    ended: false,
                };
            }
        }
    }

    /// Each template's planner on the demand known now, its decisions carried out.
    fn plan(&mut self, now: Timestamp) {
        let wanted: Vec<Wanted> = self
            .bookings
            .iter()
            .zip(&self.labs)
            .filter(|(b, l)| b.known_at <= now && l.worker.is_none() && !l.ended)
            .map(|(b, _)| b.wanted())
            .collect();
        let (mut shares, _) = planner::assign(&wanted, &offers(&self.templates));
        for k in 0..self.templates.len() {
            let demand = shares.remove(&self.templates[k].name).unwrap_or_default();
            let views = self.fleet.views(k);
            let lead = lead_time::in_use(
                self.templates[k].lead_time,
                self.fleet.measured_launches(k),
                self.settings.lead_time,
            );
            let start_lead = lead_time::start_in_use(
                self.templates[k].lead_time,
                self.fleet.measured_starts(k),
                lead,
            );
            let template = self.templates[k].view_at(now, lead);
            let plan = planner::plan(&Inputs {
                template: &template,
                workers: &views,
                demand: Some(&demand),
                lead_time: lead,
                start_lead_time: start_lead,
                now,
                creation: Creation::Allowed,
            });
            for decision in &plan.decisions {
                if decision.action.is_scale_up() {
                    self.templates[k].view.last_scale_up = Some(now);
                }
                self.fleet.act(k, &decision.action, now);
            }
        }
    }

    /// The fleet now, for the picture.
    fn sample(&self, now: Timestamp, needed: u32) -> Sample {
        let live = self.fleet.workers.iter().filter(|w| !w.gone);
        let (mut up, mut ready) = (0, 0);
        for w in live {
            up += u32::from(w.phase != WorkerPhase::Stopped);
            ready += u32::from(w.phase == WorkerPhase::Running);
        }
        Sample {
            at: now,
            needed,
            up,
            ready,
        }
    }

    /// Adds `step` (until the next round) of each worker's state to the totals.
    fn account(&self, outcome: &mut Outcome, step: Duration) {
        let hours = step.as_secs_f64() / 3600.0;
        let (mut up, mut seats) = (0, 0);
        for w in self.fleet.workers.iter().filter(|w| !w.gone) {
            if w.phase == WorkerPhase::Stopped {
                outcome.stopped_hours += hours;
                continue;
            }
            outcome.by_template[w.template].add(w.phase, !w.labs.is_empty(), hours);
            up += 1;
            // A licensed worker's seat counts from its boot until it stops or goes (it is given
            // back before either, so exactly while the instance is billed).
            if billed(w.phase) && self.templates[w.template].licensed {
                seats += 1;
                outcome.seat_hours += hours;
            }
        }
        outcome.peak_workers = outcome.peak_workers.max(up);
        outcome.peak_seats = outcome.peak_seats.max(seats);
    }

    /// The labs' fates (past the `warm_up` first ones) and the fleet's counts.
    fn finish(&self, outcome: &mut Outcome, warm_up: usize) {
        let measured = &self.bookings[warm_up..];
        outcome.labs = measured.len() as u32;
        for (b, lab) in measured.iter().zip(&self.labs[warm_up..]) {
            let late_by = lab
                .placed_at
                .map(|at| at.duration_since(b.start).as_secs_f64());
            match late_by {
                // A round runs at every start: placed then, a ready worker had room.
                Some(by) if by <= 0.0 => outcome.on_time += 1,
                Some(by) => outcome.late.push(Late {
                    id: b.id.clone(),
                    by_seconds: by as u64,
                }),
                None => outcome.never_served.push(b.id.clone()),
            }
        }
        outcome
            .late
            .sort_by(|a, b| b.by_seconds.cmp(&a.by_seconds).then(a.id.cmp(&b.id)));
        let c = &self.fleet.counts;
        (
            outcome.launches,
            outcome.starts,
            outcome.drains,
            outcome.deletes,
        ) = (c.launches, c.starts, c.drains, c.deletes);
        outcome.running_hours = outcome.by_template.iter().map(TemplateHours::running).sum();
    }
}
