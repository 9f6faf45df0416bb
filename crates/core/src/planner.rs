//! The autoscaler's planner: from a template, its workers and the demand assigned to it, the
//! scaling actions to take now, each with its reason. Pure: no I/O, no clock.
//!
//! Rules: demand within the lead time is packed first-fit-decreasing (by nodes) into the free
//! capacity of running workers and the whole capacity of workers on their way; what does not fit
//! reopens capacity in this order: cancel a drain, start a stopped worker, create a worker. A
//! stopped worker is started only for demand within the (shorter) start lead time; demand due
//! later holds it stopped, and nothing is launched for what it will hold. Never
//! more than `maxWorkers` workers that are not stopped; at least `minWorkers`, plus `warmWorkers`
//! idle running ones (with `warmRoom`, workers holding labs with that much free count too).
//! Idle workers (every usage source reads zero, nothing due within the grace
//! period, idle for the grace period, not do-not-disrupt, owned) beyond what is needed are
//! drained, longest idle first, at most `maxConcurrentDrains` at once, never within the grace
//! period after a scale-up and never while demand is unknown. A drained worker joins the stopped
//! pool while it has room, else it is deleted. Failed owned workers are deleted (and so replaced).
//! Workers made by hand count as capacity and are never touched.

use std::{cmp::Ordering, collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use crate::{DesiredState, GoDuration, License, WorkerPhase, scaling_schedule::Levels};

/// An amount of capacity (per worker, or what a lab needs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    /// CPU cores.
    pub cpu: f64,
    /// Memory, in GiB (binary: the templates' unit; see [`crate::units`]).
    pub memory_gib: f64,
    /// Storage, in GiB.
    pub storage_gib: f64,
    /// Lab nodes.
    pub nodes: f64,
}

impl Resources {
    /// Whether `need` fits within this, in every dimension.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cpu <= self.cpu
            && need.memory_gib <= self.memory_gib
            && need.storage_gib <= self.storage_gib
            && need.nodes <= self.nodes
    }

    /// What is left once `other` is taken away, never below zero in any dimension.
    pub fn minus(&self, other: &Resources) -> Resources {
        Resources {
            cpu: (self.cpu - other.cpu).max(0.0),
            memory_gib: (self.memory_gib - other.memory_gib).max(0.0),
            storage_gib: (self.storage_gib - other.storage_gib).max(0.0),
            nodes: (self.nodes - other.nodes).max(0.0),
        }
    }

    /// Both together, dimension by dimension.
    pub fn plus(&self, other: &Resources) -> Resources {
        Resources {
            cpu: self.cpu + other.cpu,
            memory_gib: self.memory_gib + other.memory_gib,
            storage_gib: self.storage_gib + other.storage_gib,
            nodes: self.nodes + other.nodes,
        }
    }

    /// Whether nothing is left in any dimension.
    pub fn is_zero(&self) -> bool {
        self.cpu <= 0.0 && self.memory_gib <= 0.0 && self.storage_gib <= 0.0 && self.nodes <= 0.0
    }
}

/// The template as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateView {
    /// License edition of its workers.
    pub license: License,
    /// Declared capacity of one worker.
    pub capacity: Resources,
    /// `minWorkers`: workers kept up at all times.
    pub min_workers: u32,
    /// `maxWorkers`: most workers that are not stopped.
    pub max_workers: u32,
    /// `warmWorkers`: idle running workers kept as headroom.
    pub warm_workers: u32,
    /// `warmRoom`: free capacity that lets a worker with labs count toward `warmWorkers`;
    /// `None`: only idle workers count.
    pub warm_room: Option<Resources>,
    /// `maxStoppedWorkers`: most drained workers kept stopped rather than deleted.
    pub max_stopped_workers: u32,
    /// `scaleDownGracePeriod`: how long a worker must sit idle before it is drained; nothing is
    /// drained within it after a scale-up either.
    pub grace: Duration,
    /// `maxConcurrentDrains`: most workers draining at once.
    pub max_concurrent_drains: u32,
    /// When capacity was last added, if known.
    pub last_scale_up: Option<Timestamp>,
    /// License seats the seat budget has left for more of its workers up (started or created);
    /// `None` without a budget.
    pub seats_available: Option<u32>,
}

impl TemplateView {
    /// This view with `minWorkers` and `warmWorkers` from `levels` (a scaling schedule's).
    pub fn with_levels(self, levels: Levels) -> TemplateView {
        TemplateView {
            min_workers: levels.min_workers,
            warm_workers: levels.warm_workers,
            ..self
        }
    }
}

/// One worker of the template as the planner sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
    /// The Worker's name.
    pub name: String,
    /// Made by this template's autoscaler (an ownerReference to it).
    pub owned: bool,
    /// Its phase.
    pub phase: WorkerPhase,
    /// Its `desiredState`.
    pub desired: DesiredState,
    /// Being deleted.
    pub deleting: bool,
    /// Marked do-not-disrupt: never drained.
    pub do_not_disrupt: bool,
    /// `Some(false)` only when every usage source reads zero; `None` when any is unknown.
    pub busy: Option<bool>,
    /// What the platform has placed on it; `None` when unknown.
    pub allocated: Option<Resources>,
    /// When the next lab timeslot placed on it starts, if any.
    pub next_timeslot_start: Option<Timestamp>,
    /// Since when it has been idle (its last activity, or when it came up).
    pub idle_since: Option<Timestamp>,
}

/// One lab instance this template should hold.
#[derive(Clone, Debug, PartialEq)]
pub struct DemandItem {
    /// The lab instance's id.
    pub id: String,
    /// When its timeslot starts.
    pub timeslot_start: Timestamp,
    /// What it takes of a worker.
    pub needs: Resources,
}

/// Everything the planner looks at, for one template.
pub struct Inputs<'a> {
    /// The template.
    pub template: &'a TemplateView,
    /// Its workers, both its own and those made by hand.
    pub workers: &'a [WorkerView],
    /// This template's share of the unplaced demand; `None` when demand is unknown.
    pub demand: Option<&'a [DemandItem]>,
    /// How far ahead demand is provided for: labs starting within it count now.
    pub lead_time: Duration,
    /// How far ahead a stopped worker is started for demand (at most `lead_time`, which it is
    /// when starts are not measured apart): demand due later holds a stopped worker unstarted.
    pub start_lead_time: Duration,
    /// The current time.
    pub now: Timestamp,
    /// Whether new workers may be created this round.
    pub creation: Creation,
}

/// Whether a round may create workers. When it may not, everything else goes on: failed
/// workers are deleted, idle ones drained and stopped, stopped ones started for demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Creation {
    /// New workers may be created.
    #[default]
    Allowed,
    /// None may be, and why (for instance: the template's image is not resolved).
    Blocked(String),
}

/// A change to make.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// New Workers owned by the template.
    Create {
        /// How many.
        count: u32,
    },
    /// `desiredState: Running` on a stopped worker.
    Start {
        /// The Worker's name.
        worker: String,
    },
    /// `desiredState: Running` on a draining worker.
    CancelDrain {
        /// The Worker's name.
        worker: String,
    },
    /// `desiredState: Draining`.
    Drain {
        /// The Worker's name.
        worker: String,
    },
    /// `desiredState: Stopped` on a drained worker: it joins the stopped pool.
    Stop {
        /// The Worker's name.
        worker: String,
    },
    /// Delete the Worker (its finalizer terminates the instance).
    Delete {
        /// The Worker's name.
        worker: String,
    },
}

impl Action {
    /// The action's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Start { .. } => "start",
            Action::CancelDrain { .. } => "cancel_drain",
            Action::Drain { .. } => "drain",
            Action::Stop { .. } => "stop",
            Action::Delete { .. } => "delete",
        }
    }

    /// The Worker it acts on; `None` for a creation.
    pub fn worker(&self) -> Option<&str> {
        match self {
            Action::Create { .. } => None,
            Action::Start { worker }
            | Action::CancelDrain { worker }
            | Action::Drain { worker }
            | Action::Stop { worker }
            | Action::Delete { worker } => Some(worker),
        }
    }

    /// Whether it adds capacity.
    pub fn is_scale_up(&self) -> bool {
        matches!(
            self,
            Action::Create { .. } | Action::Start { .. } | Action::CancelDrain { .. }
        )
    }
}

/// What prompted a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Lab demand within the lead time.
    Demand,
    /// Fewer than `minWorkers` up.
    MinWorkers,
    /// Fewer than `warmWorkers` idle.
    WarmWorkers,
    /// An idle worker beyond what is needed.
    Idle,
    /// A failed worker.
    Failed,
    /// The stopped pool and its room (`maxStoppedWorkers`).
    StoppedPool,
}

impl Trigger {
    /// The trigger's name, for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Demand => "demand",
            Trigger::MinWorkers => "min_workers",
            Trigger::WarmWorkers => "warm_workers",
            Trigger::Idle => "idle",
            Trigger::Failed => "failed",
            Trigger::StoppedPool => "stopped_pool",
        }
    }
}

/// One change to make, with what prompted it and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The change.
    pub action: Action,
    /// What prompted it.
    pub trigger: Trigger,
    /// Why, in words for people.
    pub reason: String,
}

/// The planner's output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The changes to make, in the order decided.
    pub decisions: Vec<Decision>,
    /// Workers that should be up (not stopped) once the decisions are carried out.
    pub desired_workers: u32,
    /// Unplaced lab instances assigned to the template.
    pub demand: u32,
    /// Of those, the ones whose timeslot starts within the lead time (or already has).
    pub within_lead_time: u32,
    /// Lab instances within the lead time that no capacity will hold (maxWorkers reached, or
    /// too big for one worker).
    pub unplaceable: u32,
    /// Why the plan holds back from what demand and floors ask, if it does.
    pub held: Option<Held>,
    /// Stopped workers held for demand due beyond the start lead time: started when it comes
    /// within it.
    pub held_stopped: Vec<String>,
}

/// What keeps a plan from doing all that demand and floors ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// No worker may be created this round ([`Creation::Blocked`]).
    CreationBlocked,
    /// The seat budget has no seat left for another worker up.
    SeatsExhausted,
    /// `maxWorkers` workers are up.
    MaxWorkers,
    /// Demand is unknown: no scale-up for demand, no scale-down.
    DemandUnknown,
}

/// A limit the plan met, with why in words for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Which limit.
    pub limit: Limit,
    /// Why, with what waits.
    pub why: String,
}

impl Plan {
    /// Whether the seat budget kept workers from coming up.
    pub fn seats_exhausted(&self) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.limit == Limit::SeatsExhausted)
    }
}

fn elapsed(now: Timestamp, since: Timestamp) -> Duration {
    now.duration_since(since)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

fn human(d: Duration) -> String {
    GoDuration::from(d).to_string()
}

/// A worker counting toward `maxWorkers`: not stopped, failed or going away.
fn is_up(w: &WorkerView) -> bool {
    // A stopped worker asked to run again is on its way up.
    let starting = w.desired == DesiredState::Running;
    let down = match w.phase {
        WorkerPhase::Failed => true,
        WorkerPhase::Stopped | WorkerPhase::Stopping => !starting,
        _ => false,
    };
    !(w.deleting || down)
}

/// Capacity a bin offers to demand.
struct Bin {
    /// The worker's index among the inputs' workers.
    worker: usize,
    free: Resources,
    used: bool,
}

/// Packs `items` first-fit-decreasing into `bins`; returns the items that did not fit.
fn pack<'a>(bins: &mut [Bin], items: &[&'a DemandItem]) -> Vec<&'a DemandItem> {
    let mut left = Vec::new();
    for item in items {
        match bins.iter_mut().find(|b| b.free.fits(&item.needs)) {
            Some(bin) => {
                bin.free = bin.free.minus(&item.needs);
                bin.used = true;
            }
            None => left.push(*item),
        }
    }
    left
}

fn by_size_desc(a: &&DemandItem, b: &&DemandItem) -> Ordering {
    b.needs
        .nodes
        .total_cmp(&a.needs.nodes)
        .then(b.needs.cpu.total_cmp(&a.needs.cpu))
        .then(b.needs.memory_gib.total_cmp(&a.needs.memory_gib))
        .then(a.id.cmp(&b.id))
}

/// Decisions as they are made, and the count of workers up that they lead to.
struct Draft {
    decisions: Vec<Decision>,
    up: u32,
    max: u32,
    /// Stopped workers that may be started, in the order to start them.
    startable: Vec<String>,
    /// Stopped workers held, unstarted, for demand due beyond the start lead time; they count
    /// toward maxWorkers and the seat budget already.
    held: Vec<String>,
    /// License seats left for more workers up; `None` without a budget.
    seats: Option<u32>,
    /// A worker could not come up for want of a seat.
    seat_limited: bool,
    /// Whether workers may be created this round.
    creation: Creation,
    /// A worker could not come up because none may be created.
    creation_refused: bool,
}

/// How one more worker comes up, or why it cannot.
enum Added {
    /// A stopped worker is started.
    Started,
    /// A new worker is to be created (the caller decides once for all of them).
    Created,
    /// maxWorkers or the seat budget leaves no room.
    NoRoom,
    /// There is room, but no stopped worker to start and none may be created.
    NoCreation,
}

impl Draft {
    fn decide(&mut self, action: Action, trigger: Trigger, reason: String) {
        self.decisions.push(Decision {
            action,
            trigger,
            reason,
        });
    }

    /// Fewer workers up or held than maxWorkers.
    fn below_max(&self) -> bool {
        self.up + (self.held.len() as u32) < self.max
    }

    fn room(&self) -> bool {
        self.below_max() && self.seats != Some(0)
    }

    /// Holds the next stopped worker for later demand; `false` when there is none or no room.
    fn hold_one(&mut self) -> bool {
        if self.startable.is_empty() {
            return false;
        }
        if !self.room() {
            self.seat_limited |= self.below_max();
            return false;
        }
        self.seats = self.seats.map(|n| n - 1);
        let worker = self.startable.remove(0);
        self.held.push(worker);
        true
    }

    /// One more worker up: a stopped one started if there is one, else a new one.
    fn add_one(&mut self, trigger: Trigger, why: &str) -> Added {
        if !self.room() {
            self.seat_limited |= self.below_max();
            return Added::NoRoom;
        }
        if self.startable.is_empty() {
            if self.creation != Creation::Allowed {
                self.creation_refused = true;
                return Added::NoCreation;
            }
            self.up += 1;
            self.seats = self.seats.map(|n| n - 1);
            return Added::Created;
        }
        self.up += 1;
        self.seats = self.seats.map(|n| n - 1);
        let worker = self.startable.remove(0);
        let reason = format!("{why}: starting stopped {worker}");
        self.decide(Action::Start { worker }, trigger, reason);
        Added::Started
    }

    /// Adds up to `n` workers up, held stopped ones first (they are wanted soon anyway);
    /// decides the creations among them at once.
    fn add(&mut self, n: u32, trigger: Trigger, why: &str) -> u32 {
        let mut created = 0;
        for _ in 0..n {
            if let Some(worker) = self.held.pop() {
                self.up += 1;
                let reason = format!("{why}: starting stopped {worker}");
                self.decide(Action::Start { worker }, trigger, reason);
                continue;
            }
            match self.add_one(trigger, why) {
                Added::Created => created += 1,
                Added::Started => {}
                Added::NoRoom | Added::NoCreation => break,
            }
        }
        if created > 0 {
            self.decide(Action::Create { count: created }, trigger, why.to_owned());
        }
        created
    }
}

/// The scaling actions to take now for one template, each with its reason.
pub fn plan(i: &Inputs) -> Plan {
    let t = i.template;
    let ws = i.workers;
    let mut d = Draft {
        decisions: Vec::new(),
        up: ws.iter().filter(|w| is_up(w)).count() as u32,
        max: t.max_workers,
        startable: Vec::new(),
        held: Vec::new(),
        seats: t.seats_available,
        seat_limited: false,
        creation: i.creation.clone(),
        creation_refused: false,
    };
    delete_failed(&mut d, ws);
    fill_stopped_pool(&mut d, t, ws);
    let due = due_demand(i);
    let within_lead_time = due.len() as u32;
    let mut bins = open_bins(t, ws);
    let left = pack(&mut bins, &due);
    let (left, draining_now) = cancel_drains(&mut d, t, ws, left);
    let short = add_for_demand(&mut d, i, left, within_lead_time);
    apply_floors(&mut d, t, ws, &bins);
    let unknown = scale_down(&mut d, i, &bins, draining_now);
    let held = short.held(&d, t, i.lead_time).or(unknown);
    Plan {
        desired_workers: d.up,
        decisions: d.decisions,
        demand: i.demand.map_or(0, |x| x.len() as u32),
        within_lead_time,
        unplaceable: short.capped + short.uncreated + short.too_big,
        held,
        held_stopped: d.held,
    }
}

/// Failed workers the autoscaler owns go (their finalizer terminates the instance); the
/// capacity they leave is made up later like any other.
fn delete_failed(d: &mut Draft, ws: &[WorkerView]) {
    for w in ws
        .iter()
        .filter(|w| w.owned && !w.deleting && w.phase == WorkerPhase::Failed)
    {
        d.decide(
            Action::Delete {
                worker: w.name.clone(),
            },
            Trigger::Failed,
            format!("{} failed; replacing it", w.name),
        );
    }
}

/// The stopped pool (workers stopped or on their way there): drained workers stay stopped
/// while it has room, the rest go once stopped. Those kept are the ones that may be started,
/// stopped ones before those still stopping (which EC2 starts only once stopped).
fn fill_stopped_pool(d: &mut Draft, t: &TemplateView, ws: &[WorkerView]) {
    let mut stopped: Vec<&WorkerView> = ws
        .iter()
        .filter(|w| w.owned && !w.deleting && w.desired != DesiredState::Running)
        .filter(|w| matches!(w.phase, WorkerPhase::Stopped | WorkerPhase::Stopping))
        .collect();
    // Those already in the pool first, then by name, for a stable choice.
    stopped.sort_by(|a, b| {
        (a.desired != DesiredState::Stopped, &a.name)
            .cmp(&(b.desired != DesiredState::Stopped, &b.name))
    });
    let mut kept: Vec<&WorkerView> = Vec::new();
    for (n, w) in stopped.iter().enumerate() {
        if (n as u32) < t.max_stopped_workers {
            kept.push(w);
            if w.desired == DesiredState::Draining && w.phase == WorkerPhase::Stopped {
                d.decide(
                    Action::Stop {
                        worker: w.name.clone(),
                    },
                    Trigger::StoppedPool,
                    format!(
                        "{} drained; kept stopped ({} of maxStoppedWorkers {})",
                        w.name,
                        n + 1,
                        t.max_stopped_workers
                    ),
                );
            }
        } else if w.phase == WorkerPhase::Stopped {
            d.decide(
                Action::Delete {
                    worker: w.name.clone(),
                },
                Trigger::StoppedPool,
                format!(
                    "{} stopped and the stopped pool is full (maxStoppedWorkers {})",
                    w.name, t.max_stopped_workers
                ),
            );
        }
    }
    kept.sort_by_key(|w| w.phase == WorkerPhase::Stopping);
    d.startable = kept.iter().map(|w| w.name.clone()).collect();
}

/// Demand within the lead time, biggest first.
fn due_demand<'a>(i: &Inputs<'a>) -> Vec<&'a DemandItem> {
    let horizon = i.now.checked_add(i.lead_time).unwrap_or(i.now);
    let mut due: Vec<&DemandItem> = i
        .demand
        .unwrap_or_default()
        .iter()
        .filter(|x| x.timeslot_start <= horizon)
        .collect();
    due.sort_by(by_size_desc);
    due
}

/// Capacity that takes demand now: running workers accepting labs (what is free on them) and
/// workers on their way (all of it).
fn open_bins(t: &TemplateView, ws: &[WorkerView]) -> Vec<Bin> {
    let mut bins: Vec<Bin> = Vec::new();
    for (k, w) in ws.iter().enumerate() {
        if w.deleting || w.desired != DesiredState::Running {
            continue;
        }
        let free = match w.phase {
            // Unknown allocation: count it full, so demand is never left unserved.
            WorkerPhase::Running => w
                .allocated
                .map_or(Resources::default(), |a| t.capacity.minus(&a)),
            // On their way, including stopped ones asked to run again.
            WorkerPhase::Pending
            | WorkerPhase::Provisioning
            | WorkerPhase::Starting
            | WorkerPhase::Stopped
            | WorkerPhase::Stopping => t.capacity,
            _ => continue,
        };
        bins.push(Bin {
            worker: k,
            free,
            used: false,
        });
    }
    bins
}

/// Reopens capacity for what is left, first by cancelling drains of owned workers (by name)
/// whose free capacity takes some of it. Returns what is still left and how many drains go on.
fn cancel_drains<'a>(
    d: &mut Draft,
    t: &TemplateView,
    ws: &[WorkerView],
    mut left: Vec<&'a DemandItem>,
) -> (Vec<&'a DemandItem>, u32) {
    let mut draining: Vec<(usize, &WorkerView)> = ws
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.owned
                && !w.deleting
                && w.desired == DesiredState::Draining
                && matches!(w.phase, WorkerPhase::Running | WorkerPhase::Draining)
        })
        .collect();
    draining.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let mut cancelled = Vec::new();
    for (k, w) in &draining {
        if left.is_empty() {
            break;
        }
        let free = w
            .allocated
            .map_or(Resources::default(), |a| t.capacity.minus(&a));
        let mut bin = [Bin {
            worker: *k,
            free,
            used: false,
        }];
        let rest = pack(&mut bin, &left);
        if bin[0].used {
            left = rest;
            cancelled.push(*k);
            d.decide(
                Action::CancelDrain {
                    worker: w.name.clone(),
                },
                Trigger::Demand,
                format!("new demand fits draining {}", w.name),
            );
        }
    }
    (left, (draining.len() - cancelled.len()) as u32)
}

/// Lab instances within the lead time that no capacity will hold.
struct Shortfall {
    /// Waiting for capacity: maxWorkers reached.
    capped: u32,
    /// Waiting for a worker that may not be created this round.
    uncreated: u32,
    /// Too big for one worker.
    too_big: u32,
}

impl Shortfall {
    /// Why the plan holds back, when a blocked creation, the seat budget or maxWorkers keeps
    /// demand or a floor waiting. A blocked creation is told even when nothing waits for it
    /// yet: nothing can be launched until it is lifted.
    fn held(&self, d: &Draft, t: &TemplateView, lead_time: Duration) -> Option<Held> {
        let due = human(lead_time);
        if let Creation::Blocked(why) = &d.creation {
            let waiting = if d.creation_refused {
                format!(
                    "{} lab instances due within {due} and the floors wait for new workers",
                    self.uncreated
                )
            } else {
                "nothing waits for a new worker yet".to_owned()
            };
            return Some(Held {
                limit: Limit::CreationBlocked,
                why: format!("no worker can be created ({why}); {waiting}"),
            });
        }
        let (limit, what) = if d.seat_limited {
            (
                Limit::SeatsExhausted,
                "no license seat left in the seat budget".to_owned(),
            )
        } else {
            (
                Limit::MaxWorkers,
                format!("maxWorkers {} reached", t.max_workers),
            )
        };
        (self.capped > 0 || d.seat_limited).then(|| Held {
            limit,
            why: format!(
                "{what}: {} lab instances due within {due} wait for capacity",
                self.capped
            ),
        })
    }
}

/// Reopens capacity for what is still left, up to maxWorkers: packs it into as many new
/// workers as it takes; those holding demand due within the start lead time come up first
/// (stopped ones started, else new ones); those holding only demand due later are stopped
/// workers held (started once it comes within the start lead time), else new ones.
fn add_for_demand(
    d: &mut Draft,
    i: &Inputs,
    left: Vec<&DemandItem>,
    within_lead_time: u32,
) -> Shortfall {
    let t = i.template;
    let why = format!(
        "{within_lead_time} lab instances due within {} do not fit the workers up",
        human(i.lead_time)
    );
    let (mut left, too_big): (Vec<&DemandItem>, Vec<&DemandItem>) =
        left.into_iter().partition(|x| t.capacity.fits(&x.needs));
    let start_by = i
        .now
        .checked_add(i.start_lead_time.min(i.lead_time))
        .unwrap_or(i.now);
    let mut wanted = Vec::new();
    while !left.is_empty() {
        let (worker, rest) = fill_one(t, left, start_by);
        wanted.push(worker);
        left = rest;
    }
    // Stable: the order of packing within each group.
    wanted.sort_by_key(|w| !w.soon);
    let mut created = 0u32;
    let mut short = Shortfall {
        capped: 0,
        uncreated: 0,
        too_big: too_big.len() as u32,
    };
    for w in &wanted {
        if !w.soon && d.hold_one() {
            continue;
        }
        match d.add_one(Trigger::Demand, &why) {
            Added::Created => created += 1,
            Added::Started => {}
            Added::NoRoom => short.capped += w.labs,
            Added::NoCreation => short.uncreated += w.labs,
        }
    }
    if created > 0 {
        d.decide(Action::Create { count: created }, Trigger::Demand, why);
    }
    short
}

/// A worker to bring up for demand: how many lab instances it takes, and whether any is due
/// within the start lead time.
struct NewWorker {
    labs: u32,
    soon: bool,
}

/// Packs `left` (biggest first) into one empty worker; returns it and what does not fit.
fn fill_one<'a>(
    t: &TemplateView,
    left: Vec<&'a DemandItem>,
    start_by: Timestamp,
) -> (NewWorker, Vec<&'a DemandItem>) {
    let mut free = t.capacity;
    let mut worker = NewWorker {
        labs: 0,
        soon: false,
    };
    let mut rest = Vec::new();
    for x in left {
        if free.fits(&x.needs) {
            free = free.minus(&x.needs);
            worker.labs += 1;
            worker.soon |= x.timeslot_start <= start_by;
        } else {
            rest.push(x);
        }
    }
    (worker, rest)
}

/// Floors: minWorkers up, then warmWorkers warm ones: idle capacity left after packing, on
/// workers up or coming up, and with `warmRoom` busy workers with that much free. A worker
/// whose usage is unknown may be warm: no worker is launched for it (nor drained for it, see
/// `scale_down`) until it is read.
fn apply_floors(d: &mut Draft, t: &TemplateView, ws: &[WorkerView], bins: &[Bin]) {
    let before_floor = d.up;
    if d.up < t.min_workers {
        let why = format!("fewer than minWorkers {} up", t.min_workers);
        d.add(t.min_workers - d.up, Trigger::MinWorkers, &why);
    }
    let unused = bins.iter().filter(|b| is_idle_bin(b, ws)).count() as u32;
    let maybe_warm = bins.iter().filter(|b| is_unknown_bin(b, ws)).count() as u32;
    let warm_up = unused + busy_with_room(t, ws, bins) + maybe_warm + (d.up - before_floor);
    if warm_up < t.warm_workers {
        let kind = if t.warm_room.is_some() {
            "with warmRoom free"
        } else {
            "idle"
        };
        let why = format!("fewer than warmWorkers {} {kind}", t.warm_workers);
        d.add(t.warm_workers - warm_up, Trigger::WarmWorkers, &why);
    }
}

/// Capacity no demand uses, on a worker that is idle or on its way.
fn is_idle_bin(b: &Bin, ws: &[WorkerView]) -> bool {
    let w = &ws[b.worker];
    !b.used && (w.phase != WorkerPhase::Running || w.busy == Some(false))
}

/// Capacity no demand uses, on a running worker whose usage or allocation is unknown (it may
/// be idle or roomy: one just Running that the picture of placements predates, or one whose
/// CML or platform record could not be read).
fn is_unknown_bin(b: &Bin, ws: &[WorkerView]) -> bool {
    let w = &ws[b.worker];
    !b.used && w.phase == WorkerPhase::Running && (w.busy.is_none() || w.allocated.is_none())
}

/// Running workers that are not idle but have `warmRoom` free once the demand is packed; none
/// without `warmRoom`. A worker whose usage or allocation is unknown has no room.
fn busy_with_room(t: &TemplateView, ws: &[WorkerView], bins: &[Bin]) -> u32 {
    let Some(room) = t.warm_room else {
        return 0;
    };
    bins.iter()
        .filter(|b| !is_idle_bin(b, ws) && b.free.fits(&room))
        .map(|b| b.worker)
        .filter(|&k| {
            let w = &ws[k];
            w.phase == WorkerPhase::Running && w.busy.is_some() && w.allocated.is_some()
        })
        .count() as u32
}

/// Scale down: drains idle workers beyond what is needed, longest idle first, at most
/// maxConcurrentDrains at once. Never while demand is unknown (then returns why it holds
/// back), after a scale-up, or within the grace period of the last one.
fn scale_down(d: &mut Draft, i: &Inputs, bins: &[Bin], draining_now: u32) -> Option<Held> {
    let t = i.template;
    let scaled_up = d.decisions.iter().any(|x| x.action.is_scale_up());
    let in_grace = t
        .last_scale_up
        .is_some_and(|at| elapsed(i.now, at) < t.grace);
    let idle = drain_candidates(i, bins);
    if i.demand.is_none() {
        return Some(Held {
            limit: Limit::DemandUnknown,
            why: "demand unknown: no scale-up for demand, no scale-down".into(),
        });
    }
    if !scaled_up && !in_grace && !idle.is_empty() {
        let keep_warm = t
            .warm_workers
            .saturating_sub(busy_with_room(t, i.workers, bins))
            .min(idle.len() as u32);
        let above_min = d.up.saturating_sub(t.min_workers);
        let surplus = (idle.len() as u32 - keep_warm).min(above_min);
        let slots = t.max_concurrent_drains.saturating_sub(draining_now);
        for w in idle.iter().take(surplus.min(slots) as usize) {
            d.up -= 1;
            let since = w
                .idle_since
                .map(|s| human(elapsed(i.now, s)))
                .unwrap_or_default();
            d.decide(
                Action::Drain {
                    worker: w.name.clone(),
                },
                Trigger::Idle,
                format!("{} idle for {since}, beyond what is needed", w.name),
            );
        }
    }
    None
}

/// Workers safe to drain that demand will not use, longest idle first (then by name).
fn drain_candidates<'a>(i: &Inputs<'a>, bins: &[Bin]) -> Vec<&'a WorkerView> {
    let used: Vec<usize> = bins.iter().filter(|b| b.used).map(|b| b.worker).collect();
    let mut idle: Vec<&WorkerView> = i
        .workers
        .iter()
        .enumerate()
        .filter(|(k, w)| !used.contains(k) && drainable(w, i.template, i.now))
        .map(|(_, w)| w)
        .collect();
    idle.sort_by(|a, b| (a.idle_since, &a.name).cmp(&(b.idle_since, &b.name)));
    idle
}

/// Idle and safe to drain: owned, running, wanted running, not protected, every usage source
/// reads zero (unknown is never idle), nothing due on it within the grace period, and idle for
/// the grace period.
fn drainable(w: &WorkerView, t: &TemplateView, now: Timestamp) -> bool {
    let nothing_due = w
        .next_timeslot_start
        .is_none_or(|s| s > now.checked_add(t.grace).unwrap_or(now));
    let nothing_allocated = w.allocated.is_none_or(|a| a.is_zero());
    w.owned
        && !w.deleting
        && !w.do_not_disrupt
        && w.phase == WorkerPhase::Running
        && w.desired == DesiredState::Running
        && w.busy == Some(false)
        && nothing_allocated
        && nothing_due
        && w.idle_since.is_some_and(|s| elapsed(now, s) >= t.grace)
}

/// A template on offer for demand, for the choice of template.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    /// The template's name.
    pub name: String,
    /// License edition of its workers.
    pub license: License,
    /// Declared capacity of one worker.
    pub capacity: Resources,
}

/// One unplaced lab instance with what it needs and which licenses may hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct Wanted {
    /// The lab instance.
    pub item: DemandItem,
    /// The licenses that may hold it.
    pub affinity: Vec<License>,
}

/// Assigns each lab instance to the smallest template (cpu, then memory, then name) whose
/// license it accepts and whose one worker holds it; returns the assignment by template name
/// and the ids no template can hold.
pub fn assign(
    wanted: &[Wanted],
    offers: &[Offer],
) -> (BTreeMap<String, Vec<DemandItem>>, Vec<String>) {
    let mut sorted: Vec<&Offer> = offers.iter().collect();
    sorted.sort_by(|a, b| {
        a.capacity
            .cpu
            .total_cmp(&b.capacity.cpu)
            .then(a.capacity.memory_gib.total_cmp(&b.capacity.memory_gib))
            .then(a.name.cmp(&b.name))
    });
    let mut by_template: BTreeMap<String, Vec<DemandItem>> = BTreeMap::new();
    let mut unplaceable = Vec::new();
    for w in wanted {
        match sorted
            .iter()
            .find(|o| w.affinity.contains(&o.license) && o.capacity.fits(&w.item.needs))
        {
            Some(o) => by_template
                .entry(o.name.clone())
                .or_default()
                .push(w.item.clone()),
            None => unplaceable.push(w.item.id.clone()),
        }
    }
    (by_template, unplaceable)
}

#[cfg(test)]
mod tests;
