use super::*;

const MIN: Duration = Duration::from_secs(60);

fn at(mins: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + mins * 60).unwrap()
}

fn cap(cpu: f64, mem: f64, nodes: f64) -> Resources {
    Resources {
        cpu,
        memory_gib: mem,
        storage_gib: 500.0,
        nodes,
    }
}

fn template() -> TemplateView {
    TemplateView {
        license: License::Enterprise,
        capacity: cap(48.0, 192.0, 20.0),
        min_workers: 0,
        max_workers: 5,
        warm_workers: 0,
        warm_room: None,
        max_stopped_workers: 0,
        grace: 30 * MIN,
        max_concurrent_drains: 1,
        last_scale_up: None,
        seats_available: None,
    }
}

fn worker(name: &str, phase: WorkerPhase) -> WorkerView {
    WorkerView {
        name: name.into(),
        owned: true,
        phase,
        desired: match phase {
            WorkerPhase::Stopped => DesiredState::Stopped,
            _ => DesiredState::Running,
        },
        deleting: false,
        do_not_disrupt: false,
        busy: Some(false),
        allocated: Some(Resources::default()),
        next_timeslot_start: None,
        idle_since: Some(at(-5)),
    }
}

/// An idle running worker, idle for an hour.
fn idle(name: &str) -> WorkerView {
    WorkerView {
        idle_since: Some(at(-60)),
        ..worker(name, WorkerPhase::Running)
    }
}

fn busy(name: &str, nodes: f64) -> WorkerView {
    WorkerView {
        busy: Some(true),
        allocated: Some(Resources {
            cpu: nodes * 2.0,
            memory_gib: nodes * 8.0,
            storage_gib: 40.0,
            nodes,
        }),
        ..worker(name, WorkerPhase::Running)
    }
}

fn lab(id: &str, in_mins: i64, nodes: f64) -> DemandItem {
    DemandItem {
        id: id.into(),
        timeslot_start: at(in_mins),
        needs: Resources {
            cpu: nodes * 2.0,
            memory_gib: nodes * 8.0,
            storage_gib: 40.0,
            nodes,
        },
    }
}

fn run(t: &TemplateView, ws: &[WorkerView], demand: Option<&[DemandItem]>) -> Plan {
    run_with(t, ws, demand, Creation::Allowed)
}

fn run_with(
    t: &TemplateView,
    ws: &[WorkerView],
    demand: Option<&[DemandItem]>,
    creation: Creation,
) -> Plan {
    plan(&Inputs {
        template: t,
        workers: ws,
        demand,
        lead_time: 35 * MIN,
        start_lead_time: 35 * MIN,
        now: at(0),
        creation,
    })
}

fn blocked() -> Creation {
    Creation::Blocked("image unresolved: no image matches CML-2.9.*".into())
}

/// Why the plan holds back; empty when it does not.
fn held(p: &Plan) -> &str {
    p.held.as_ref().map_or("", |h| h.why.as_str())
}

fn actions(p: &Plan) -> Vec<Action> {
    p.decisions.iter().map(|d| d.action.clone()).collect()
}

fn create(count: u32) -> Action {
    Action::Create { count }
}

fn named(f: fn(String) -> Action, w: &str) -> Action {
    f(w.to_owned())
}

fn drain(w: &str) -> Action {
    named(|worker| Action::Drain { worker }, w)
}

fn start(w: &str) -> Action {
    named(|worker| Action::Start { worker }, w)
}

fn delete(w: &str) -> Action {
    named(|worker| Action::Delete { worker }, w)
}

// --- scale up for demand ---

#[test]
fn nothing_to_do_with_no_workers_and_no_demand() {
    let p = run(&template(), &[], Some(&[]));
    assert_eq!(actions(&p), vec![]);
    assert_eq!(p.desired_workers, 0);
}

#[test]
fn demand_within_the_lead_time_and_no_capacity_creates_one_worker() {
    let p = run(&template(), &[], Some(&[lab("a", 10, 6.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
    assert_eq!((p.desired_workers, p.within_lead_time), (1, 1));
    assert_eq!(p.decisions[0].trigger, Trigger::Demand);
}

#[test]
fn demand_already_due_counts_too() {
    let p = run(&template(), &[], Some(&[lab("a", -10, 6.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
}

#[test]
fn demand_beyond_the_lead_time_waits() {
    let p = run(&template(), &[], Some(&[lab("a", 36, 6.0)]));
    assert_eq!(actions(&p), vec![]);
    assert_eq!((p.demand, p.within_lead_time), (1, 0));
}

#[test]
fn demand_exactly_at_the_lead_time_counts() {
    let p = run(&template(), &[], Some(&[lab("a", 35, 6.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
}

#[test]
fn labs_are_packed_by_nodes_into_as_few_workers_as_hold_them() {
    // 12 + 8 fit one worker of 20 nodes; 10 + 6 + 4 fit another.
    let demand = [
        lab("a", 5, 8.0),
        lab("b", 5, 4.0),
        lab("c", 5, 12.0),
        lab("d", 5, 6.0),
        lab("e", 5, 10.0),
    ];
    let p = run(&template(), &[], Some(&demand));
    assert_eq!(actions(&p), vec![create(2)]);
}

#[test]
fn cpu_limits_packing_as_well_as_nodes() {
    let mut t = template();
    t.capacity = cap(8.0, 192.0, 20.0);
    // Each lab needs 4 nodes = 8 cpus: one per worker.
    let demand = [lab("a", 5, 4.0), lab("b", 5, 4.0), lab("c", 5, 4.0)];
    let p = run(&t, &[], Some(&demand));
    assert_eq!(actions(&p), vec![create(3)]);
}

#[test]
fn demand_that_fits_a_running_worker_launches_nothing() {
    let ws = [busy("w1", 10.0)];
    let p = run(&template(), &ws, Some(&[lab("a", 5, 8.0)]));
    assert_eq!(actions(&p), vec![]);
}

#[test]
fn demand_beyond_a_running_workers_free_capacity_creates_one() {
    let ws = [busy("w1", 14.0)];
    let p = run(&template(), &ws, Some(&[lab("a", 5, 8.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
}

#[test]
fn a_running_worker_with_unknown_allocation_is_counted_full() {
    let mut w = worker("w1", WorkerPhase::Running);
    w.allocated = None;
    let p = run(&template(), &[w], Some(&[lab("a", 5, 2.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
}

#[test]
fn workers_on_their_way_count_with_all_their_capacity() {
    for phase in [
        WorkerPhase::Pending,
        WorkerPhase::Provisioning,
        WorkerPhase::Starting,
    ] {
        let ws = [worker("w1", phase)];
        let p = run(
            &template(),
            &ws,
            Some(&[lab("a", 5, 12.0), lab("b", 5, 8.0)]),
        );
        assert_eq!(actions(&p), vec![], "{phase:?}");
    }
}

#[test]
fn demand_that_fits_a_stopped_worker_starts_it_instead_of_launching() {
    let mut t = template();
    t.max_stopped_workers = 2;
    let ws = [worker("s1", WorkerPhase::Stopped)];
    let p = run(&t, &ws, Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![start("s1")]);
    assert_eq!(p.desired_workers, 1);
}

#[test]
fn a_stopped_worker_already_asked_to_run_holds_demand() {
    for phase in [WorkerPhase::Stopped, WorkerPhase::Stopping] {
        let mut w = worker("s1", phase);
        w.desired = DesiredState::Running;
        let p = run(&template(), &[w], Some(&[lab("a", 5, 6.0)]));
        assert_eq!(actions(&p), vec![], "{phase:?}");
        assert_eq!(p.desired_workers, 1);
    }
}

#[test]
fn a_worker_still_stopping_is_started_too() {
    let mut t = template();
    t.max_stopped_workers = 1;
    let mut w = worker("s1", WorkerPhase::Stopping);
    w.desired = DesiredState::Stopped;
    let p = run(&t, &[w], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![start("s1")]);
}

#[test]
fn a_stopped_worker_is_started_before_one_still_stopping() {
    let mut t = template();
    t.max_stopped_workers = 2;
    let stopping = WorkerView {
        desired: DesiredState::Stopped,
        ..worker("a-stopping", WorkerPhase::Stopping)
    };
    let ws = [stopping, worker("b-stopped", WorkerPhase::Stopped)];
    let p = run(&t, &ws, Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![start("b-stopped")]);
}

#[test]
fn stopped_workers_are_started_before_any_is_created() {
    let mut t = template();
    t.max_stopped_workers = 2;
    let ws = [worker("s1", WorkerPhase::Stopped)];
    let demand = [lab("a", 5, 15.0), lab("b", 5, 15.0)];
    let p = run(&t, &ws, Some(&demand));
    assert_eq!(actions(&p), vec![start("s1"), create(1)]);
}

/// A round with a start lead time of 10 minutes (starts measured apart from launches).
fn run_starting_late(t: &TemplateView, ws: &[WorkerView], demand: &[DemandItem]) -> Plan {
    plan(&Inputs {
        template: t,
        workers: ws,
        demand: Some(demand),
        lead_time: 35 * MIN,
        start_lead_time: 10 * MIN,
        now: at(0),
        creation: Creation::Allowed,
    })
}

#[test]
fn a_stopped_worker_is_started_only_a_start_lead_time_ahead_and_held_until_then() {
    let mut t = template();
    t.max_stopped_workers = 2;
    let ws = [worker("s1", WorkerPhase::Stopped)];
    // Table: minutes until the lab's timeslot -> what the round does.
    for (in_mins, expect, held) in [
        (30, vec![], vec!["s1"]),
        (11, vec![], vec!["s1"]),
        (10, vec![start("s1")], vec![]),
        (3, vec![start("s1")], vec![]),
    ] {
        let p = run_starting_late(&t, &ws, &[lab("a", in_mins, 6.0)]);
        assert_eq!(actions(&p), expect, "lab in {in_mins} min");
        assert_eq!(p.held_stopped, held, "lab in {in_mins} min");
    }
}

#[test]
fn demand_beyond_the_start_lead_time_launches_only_what_stopped_workers_cannot_hold() {
    let mut t = template();
    t.max_stopped_workers = 2;
    let ws = [worker("s1", WorkerPhase::Stopped)];
    // Three 15-node labs in 20 minutes: one stopped worker holds one, two are launched now.
    let demand = [lab("a", 20, 15.0), lab("b", 20, 15.0), lab("c", 20, 15.0)];
    let p = run_starting_late(&t, &ws, &demand);
    assert_eq!(actions(&p), vec![create(2)]);
    assert_eq!(p.held_stopped, vec!["s1"]);
    // One due soon and one later: the soon one takes the stopped worker, the later one a launch.
    let demand = [lab("a", 5, 15.0), lab("b", 20, 15.0)];
    let p = run_starting_late(&t, &ws, &demand);
    assert_eq!(actions(&p), vec![start("s1"), create(1)]);
    assert!(p.held_stopped.is_empty());
}

#[test]
fn a_held_stopped_worker_counts_toward_max_workers_and_the_seat_budget() {
    let mut t = template();
    t.max_stopped_workers = 2;
    t.max_workers = 2;
    let ws = [busy("b1", 20.0), worker("s1", WorkerPhase::Stopped)];
    let demand = [lab("a", 20, 15.0), lab("b", 20, 15.0)];
    let p = run_starting_late(&t, &ws, &demand);
    assert_eq!(
        actions(&p),
        vec![],
        "s1 held for a; nothing beyond maxWorkers for b"
    );
    assert_eq!(p.held_stopped, vec!["s1"]);
    assert_eq!(p.unplaceable, 1);
    assert!(held(&p).contains("maxWorkers 2"));
    // With the seat budget's last seat taken by s1, b waits for a seat.
    t.max_workers = 5;
    t.seats_available = Some(1);
    let p = run_starting_late(&t, &ws, &demand);
    assert_eq!(actions(&p), vec![]);
    assert!(p.seats_exhausted());
}

#[test]
fn a_floor_starts_a_held_stopped_worker_rather_than_launch() {
    let mut t = template();
    t.max_stopped_workers = 2;
    t.min_workers = 1;
    let ws = [worker("s1", WorkerPhase::Stopped)];
    let p = run_starting_late(&t, &ws, &[lab("a", 20, 6.0)]);
    assert_eq!(actions(&p), vec![start("s1")]);
    assert_eq!(p.decisions[0].trigger, Trigger::MinWorkers);
    assert!(p.held_stopped.is_empty());
}

#[test]
fn new_demand_that_fits_a_draining_worker_cancels_its_drain() {
    let mut w = busy("w1", 4.0);
    w.phase = WorkerPhase::Draining;
    w.desired = DesiredState::Draining;
    let p = run(&template(), &[w], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(
        actions(&p),
        vec![Action::CancelDrain {
            worker: "w1".into()
        }]
    );
}

#[test]
fn demand_over_max_workers_is_capped_with_a_reason() {
    let mut t = template();
    t.max_workers = 2;
    let demand: Vec<DemandItem> = (0..4).map(|n| lab(&format!("l{n}"), 5, 15.0)).collect();
    let p = run(&t, &[], Some(&demand));
    assert_eq!(actions(&p), vec![create(2)]);
    assert_eq!(p.unplaceable, 2);
    assert!(held(&p).contains("maxWorkers 2"), "{:?}", p.held);
}

#[test]
fn a_lab_bigger_than_one_worker_is_unplaceable_not_launched_for() {
    let p = run(&template(), &[], Some(&[lab("a", 5, 25.0)]));
    assert_eq!(actions(&p), vec![]);
    assert_eq!(p.unplaceable, 1);
}

#[test]
fn hand_made_workers_hold_demand_too() {
    let mut w = worker("mine", WorkerPhase::Running);
    w.owned = false;
    let p = run(&template(), &[w], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![]);
}

#[test]
fn unknown_demand_neither_scales_up_for_demand_nor_down() {
    let p = run(&template(), &[idle("w1")], None);
    assert_eq!(actions(&p), vec![]);
    assert!(held(&p).contains("demand unknown"));
}

// --- no creation (the template's image is not resolved) ---

#[test]
fn with_creation_blocked_everything_but_a_launch_goes_on() {
    let pooled = |t: &mut TemplateView| t.max_stopped_workers = 2;
    let floor = |t: &mut TemplateView| t.min_workers = 1;
    let none = |_: &mut TemplateView| {};
    let mut drained = worker("d1", WorkerPhase::Stopped);
    drained.desired = DesiredState::Draining;
    let stop = named(|worker| Action::Stop { worker }, "d1");
    let two_labs = vec![lab("a", 5, 15.0), lab("b", 5, 15.0)];
    type Row = (
        &'static str,
        fn(&mut TemplateView),
        Vec<WorkerView>,
        Vec<DemandItem>,
        Vec<Action>,
        &'static str,
    );
    // (row, template change, workers, demand, actions, what the hold says waits)
    let table: [Row; 7] = [
        (
            "a failed worker is deleted",
            none,
            vec![worker("f1", WorkerPhase::Failed)],
            vec![],
            vec![delete("f1")],
            "nothing waits",
        ),
        (
            "an idle worker is drained",
            none,
            vec![idle("w1")],
            vec![],
            vec![drain("w1")],
            "nothing waits",
        ),
        (
            "a drained worker joins the stopped pool",
            pooled,
            vec![drained],
            vec![],
            vec![stop],
            "nothing waits",
        ),
        (
            "demand starts a stopped worker",
            pooled,
            vec![worker("s1", WorkerPhase::Stopped)],
            vec![lab("a", 5, 15.0)],
            vec![start("s1")],
            "nothing waits",
        ),
        (
            "demand beyond the stopped pool waits",
            pooled,
            vec![worker("s1", WorkerPhase::Stopped)],
            two_labs,
            vec![start("s1")],
            "1 lab instances due",
        ),
        (
            "demand with no stopped worker waits",
            none,
            vec![],
            vec![lab("a", 5, 15.0)],
            vec![],
            "1 lab instances due",
        ),
        (
            "a floor with no stopped worker waits",
            floor,
            vec![],
            vec![],
            vec![],
            "the floors wait",
        ),
    ];
    for (row, change, ws, demand, expected, waits) in table {
        let mut t = template();
        change(&mut t);
        let p = run_with(&t, &ws, Some(&demand), blocked());
        assert_eq!(actions(&p), expected, "{row}");
        let waiting = u32::from(waits.starts_with('1'));
        assert_eq!(p.unplaceable, waiting, "{row}");
        let h = p.held.as_ref().expect(row);
        assert_eq!(h.limit, Limit::CreationBlocked, "{row}");
        assert!(
            h.why.contains("no image matches CML-2.9.*"),
            "{row}: {}",
            h.why
        );
        assert!(h.why.contains(waits), "{row}: {}", h.why);
    }
}

#[test]
fn a_blocked_creation_is_told_before_max_workers_and_seats_and_nothing_waits_when_nothing_is_needed()
 {
    let mut t = template();
    t.min_workers = 1;
    let p = run_with(&t, &[], Some(&[]), blocked());
    assert!(
        held(&p).contains("the floors wait for new workers"),
        "{}",
        held(&p)
    );
    let p = run_with(
        &template(),
        &[idle("w1")],
        Some(&[lab("a", 5, 6.0)]),
        blocked(),
    );
    assert_eq!(actions(&p), vec![]);
    assert!(
        held(&p).contains("nothing waits for a new worker yet"),
        "{}",
        held(&p)
    );
    t.min_workers = 0;
    t.seats_available = Some(0);
    let p = run_with(&t, &[], Some(&[lab("a", 5, 6.0)]), blocked());
    assert_eq!(
        p.held.as_ref().map(|h| h.limit),
        Some(Limit::CreationBlocked)
    );
    assert!(!p.seats_exhausted());
    let p = run_with(&template(), &[idle("w1")], None, blocked());
    assert_eq!(
        p.held.as_ref().map(|h| h.limit),
        Some(Limit::CreationBlocked),
        "demand unknown too"
    );
}

// --- floors ---

#[test]
fn min_workers_are_kept() {
    let mut t = template();
    t.min_workers = 2;
    let p = run(&t, &[], Some(&[]));
    assert_eq!(actions(&p), vec![create(2)]);
    assert_eq!(p.decisions[0].trigger, Trigger::MinWorkers);
}

#[test]
fn min_workers_start_stopped_ones_first() {
    let mut t = template();
    t.min_workers = 1;
    t.max_stopped_workers = 1;
    let p = run(&t, &[worker("s1", WorkerPhase::Stopped)], Some(&[]));
    assert_eq!(actions(&p), vec![start("s1")]);
}

#[test]
fn warm_workers_are_idle_headroom_on_top_of_demand() {
    let mut t = template();
    t.warm_workers = 1;
    let p = run(&t, &[], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![create(1), create(1)]);
    assert_eq!(p.decisions[1].trigger, Trigger::WarmWorkers);
    assert_eq!(p.desired_workers, 2);
}

#[test]
fn an_idle_running_worker_is_warm_headroom() {
    let mut t = template();
    t.warm_workers = 1;
    let p = run(&t, &[worker("w1", WorkerPhase::Running)], Some(&[]));
    assert_eq!(actions(&p), vec![]);
}

#[test]
fn floors_stop_at_max_workers() {
    let mut t = template();
    t.max_workers = 1;
    t.min_workers = 1;
    t.warm_workers = 1;
    let p = run(&t, &[], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
}

fn room(nodes: f64) -> Option<Resources> {
    Some(Resources {
        nodes,
        ..Resources::default()
    })
}

#[test]
fn with_warm_room_a_busy_worker_with_that_much_free_is_warm() {
    let mut t = template();
    t.warm_workers = 1;
    let ws = [busy("w1", 6.0)];
    // Without warmRoom only an idle worker is warm: one more comes up.
    assert_eq!(actions(&run(&t, &ws, Some(&[]))), vec![create(1)]);
    // 14 of 20 nodes free: room for 8.
    t.warm_room = room(8.0);
    assert_eq!(actions(&run(&t, &ws, Some(&[]))), vec![]);
    // Room for 15 it has not.
    t.warm_room = room(15.0);
    let p = run(&t, &ws, Some(&[]));
    assert_eq!(actions(&p), vec![create(1)]);
    assert!(p.decisions[0].reason.contains("warmRoom"), "{p:?}");
}

#[test]
fn warm_room_counts_what_is_free_once_demand_is_packed() {
    let mut t = template();
    t.warm_workers = 1;
    t.warm_room = room(8.0);
    // 6 allocated and 8 due: 6 nodes left, less than the room.
    let p = run(&t, &[busy("w1", 6.0)], Some(&[lab("a", 5, 8.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
    assert_eq!(p.decisions[0].trigger, Trigger::WarmWorkers);
}

#[test]
fn a_worker_whose_usage_or_allocation_is_unknown_launches_no_warm_worker_and_drains_none() {
    let unknown_usage = WorkerView {
        busy: None,
        ..busy("w1", 6.0)
    };
    let unknown_allocation = WorkerView {
        allocated: None,
        ..busy("w1", 6.0)
    };
    // Just Running and not yet in the picture of placements: nothing placed as it saw it.
    let just_running = WorkerView {
        busy: None,
        ..worker("w1", WorkerPhase::Running)
    };
    for warm_room in [None, room(8.0)] {
        let mut t = template();
        t.warm_workers = 1;
        t.warm_room = warm_room;
        for w in [&unknown_usage, &unknown_allocation, &just_running] {
            // It may be warm: no launch for it.
            let alone = run(&t, std::slice::from_ref(w), Some(&[]));
            assert_eq!(actions(&alone), vec![], "{w:?} with room {warm_room:?}");
            // It may be busy: the idle warm worker beside it stays.
            let beside = run(&t, &[w.clone(), idle("w2")], Some(&[]));
            assert_eq!(actions(&beside), vec![], "{w:?} with room {warm_room:?}");
        }
    }
    // Known busy: one warm worker more.
    let mut t = template();
    t.warm_workers = 1;
    assert_eq!(
        actions(&run(&t, &[busy("w1", 6.0)], Some(&[]))),
        vec![create(1)]
    );
}

// --- scale down ---

#[test]
fn an_idle_worker_past_the_grace_period_is_drained() {
    let p = run(&template(), &[idle("w1")], Some(&[]));
    assert_eq!(actions(&p), vec![drain("w1")]);
    assert_eq!(p.decisions[0].trigger, Trigger::Idle);
    assert_eq!(p.desired_workers, 0);
}

#[test]
fn an_idle_worker_within_the_grace_period_stays() {
    let p = run(
        &template(),
        &[worker("w1", WorkerPhase::Running)],
        Some(&[]),
    );
    assert_eq!(actions(&p), vec![]);
}

#[test]
fn a_worker_with_usage_or_unknown_usage_is_never_drained() {
    for busy in [Some(true), None] {
        let mut w = idle("w1");
        w.busy = busy;
        assert_eq!(
            actions(&run(&template(), &[w], Some(&[]))),
            vec![],
            "{busy:?}"
        );
    }
}

#[test]
fn a_worker_with_instances_allocated_is_never_drained() {
    let mut w = idle("w1");
    w.allocated = Some(cap(4.0, 8.0, 1.0));
    assert_eq!(actions(&run(&template(), &[w], Some(&[]))), vec![]);
}

#[test]
fn a_worker_with_a_timeslot_due_within_the_grace_period_stays() {
    let mut w = idle("w1");
    w.next_timeslot_start = Some(at(20));
    assert_eq!(actions(&run(&template(), &[w.clone()], Some(&[]))), vec![]);
    w.next_timeslot_start = Some(at(45));
    assert_eq!(
        actions(&run(&template(), &[w], Some(&[]))),
        vec![drain("w1")]
    );
}

#[test]
fn do_not_disrupt_and_hand_made_workers_are_never_drained() {
    let mut protected = idle("w1");
    protected.do_not_disrupt = true;
    let mut mine = idle("w2");
    mine.owned = false;
    assert_eq!(
        actions(&run(&template(), &[protected, mine], Some(&[]))),
        vec![]
    );
}

#[test]
fn max_concurrent_drains_holds_and_the_longest_idle_goes_first() {
    let mut a = idle("a");
    a.idle_since = Some(at(-40));
    let mut b = idle("b");
    b.idle_since = Some(at(-90));
    let p = run(&template(), &[a.clone(), b.clone()], Some(&[]));
    assert_eq!(actions(&p), vec![drain("b")]);

    let mut t = template();
    t.max_concurrent_drains = 2;
    let p = run(&t, &[a.clone(), b.clone()], Some(&[]));
    assert_eq!(actions(&p), vec![drain("b"), drain("a")]);

    let mut draining = idle("c");
    draining.desired = DesiredState::Draining;
    draining.phase = WorkerPhase::Draining;
    let p = run(&template(), &[a, b, draining], Some(&[]));
    assert_eq!(actions(&p), vec![], "one drain already under way");
}

#[test]
fn no_scale_down_within_the_grace_period_of_a_scale_up() {
    let mut t = template();
    t.last_scale_up = Some(at(-10));
    assert_eq!(actions(&run(&t, &[idle("w1")], Some(&[]))), vec![]);
    t.last_scale_up = Some(at(-31));
    assert_eq!(
        actions(&run(&t, &[idle("w1")], Some(&[]))),
        vec![drain("w1")]
    );
}

#[test]
fn min_and_warm_workers_are_not_drained() {
    let mut t = template();
    t.min_workers = 1;
    assert_eq!(actions(&run(&t, &[idle("w1")], Some(&[]))), vec![]);
    let mut t = template();
    t.warm_workers = 1;
    let p = run(&t, &[idle("w1"), idle("w2")], Some(&[]));
    assert_eq!(actions(&p), vec![drain("w1")]);
}

#[test]
fn with_warm_room_a_busy_worker_with_room_lets_the_idle_warm_worker_go() {
    let mut t = template();
    t.warm_workers = 1;
    let ws = [busy("w1", 6.0), idle("w2")];
    assert_eq!(actions(&run(&t, &ws, Some(&[]))), vec![]);
    t.warm_room = room(8.0);
    assert_eq!(actions(&run(&t, &ws, Some(&[]))), vec![drain("w2")]);
    // Its usage unknown, the busy worker's room does not count: the idle one stays.
    let unknown = [
        WorkerView {
            busy: None,
            ..busy("w1", 6.0)
        },
        idle("w2"),
    ];
    assert_eq!(actions(&run(&t, &unknown, Some(&[]))), vec![]);
}

#[test]
fn an_idle_worker_that_demand_will_use_is_not_drained() {
    let p = run(&template(), &[idle("w1")], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![]);
}

// --- the stopped pool and failures ---

#[test]
fn a_drained_worker_joins_the_stopped_pool_while_it_has_room() {
    let mut t = template();
    t.max_stopped_workers = 1;
    let mut drained = worker("d1", WorkerPhase::Stopped);
    drained.desired = DesiredState::Draining;
    let p = run(&t, &[drained.clone()], Some(&[]));
    assert_eq!(
        actions(&p),
        vec![Action::Stop {
            worker: "d1".into()
        }]
    );
    let p = run(
        &t,
        &[worker("s0", WorkerPhase::Stopped), drained],
        Some(&[]),
    );
    assert_eq!(actions(&p), vec![delete("d1")], "pool full");
}

#[test]
fn with_no_stopped_pool_a_drained_worker_is_deleted() {
    let mut drained = worker("d1", WorkerPhase::Stopped);
    drained.desired = DesiredState::Draining;
    assert_eq!(
        actions(&run(&template(), &[drained], Some(&[]))),
        vec![delete("d1")]
    );
}

#[test]
fn a_failed_owned_worker_is_deleted_and_replaced_for_its_demand() {
    let ws = [worker("f1", WorkerPhase::Failed)];
    let p = run(&template(), &ws, Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![delete("f1"), create(1)]);
    let mut t = template();
    t.min_workers = 1;
    let p = run(&t, &ws, Some(&[]));
    assert_eq!(actions(&p), vec![delete("f1"), create(1)]);
}

#[test]
fn a_failed_hand_made_worker_is_left_alone() {
    let mut w = worker("f1", WorkerPhase::Failed);
    w.owned = false;
    assert_eq!(actions(&run(&template(), &[w], Some(&[]))), vec![]);
}

#[test]
fn workers_going_away_count_for_nothing() {
    let mut w = worker("w1", WorkerPhase::Running);
    w.deleting = true;
    let p = run(&template(), &[w], Some(&[lab("a", 5, 6.0)]));
    assert_eq!(actions(&p), vec![create(1)]);
}

// --- template choice ---

fn offer(name: &str, license: License, cpu: f64) -> Offer {
    Offer {
        name: name.into(),
        license,
        capacity: cap(cpu, cpu * 4.0, 20.0),
    }
}

fn wanted(id: &str, nodes: f64, affinity: &[License]) -> Wanted {
    Wanted {
        item: lab(id, 5, nodes),
        affinity: affinity.to_vec(),
    }
}

#[test]
fn the_smallest_template_whose_license_and_capacity_fit_is_chosen() {
    let offers = [
        offer("large", License::Enterprise, 96.0),
        offer("small", License::Enterprise, 16.0),
        offer("personal", License::Personal, 8.0),
    ];
    let (by, unplaceable) = assign(
        &[
            wanted("a", 2.0, &[License::Enterprise]),
            wanted("b", 10.0, &[License::Enterprise]),
            wanted("c", 1.0, &[License::Personal, License::Enterprise]),
        ],
        &offers,
    );
    let ids = |t: &str| -> Vec<String> {
        by.get(t)
            .map(|v| v.iter().map(|d| d.id.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(ids("small"), vec!["a"]);
    assert_eq!(ids("large"), vec!["b"]);
    assert_eq!(ids("personal"), vec!["c"]);
    assert!(unplaceable.is_empty());
}

#[test]
fn a_license_no_template_offers_is_unplaceable() {
    let (by, unplaceable) = assign(
        &[wanted("a", 2.0, &[License::Evaluation])],
        &[offer("e", License::Enterprise, 48.0)],
    );
    assert!(by.is_empty());
    assert_eq!(unplaceable, vec!["a"]);
}

#[test]
fn equal_templates_are_chosen_by_name() {
    let (by, _) = assign(
        &[wanted("a", 2.0, &[License::Enterprise])],
        &[
            offer("b", License::Enterprise, 48.0),
            offer("a", License::Enterprise, 48.0),
        ],
    );
    assert!(by.contains_key("a"));
}

// --- invariants ---

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn phase() -> impl Strategy<Value = WorkerPhase> {
        let phases = WorkerPhase::ALL.iter().copied();
        prop::sample::select(
            phases
                .filter(|p| *p != WorkerPhase::Terminating)
                .collect::<Vec<_>>(),
        )
    }

    fn a_worker() -> impl Strategy<Value = WorkerView> {
        (
            phase(),
            prop::sample::select(vec![
                DesiredState::Running,
                DesiredState::Draining,
                DesiredState::Stopped,
            ]),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(any::<bool>()),
            prop::option::of(0.0f64..20.0),
            -120i64..0,
            any::<bool>(),
        )
            .prop_map(
                |(phase, desired, owned, protected, busy, nodes, idle, deleting)| WorkerView {
                    name: String::new(),
                    owned,
                    phase,
                    desired,
                    deleting,
                    do_not_disrupt: protected,
                    busy,
                    allocated: nodes.map(|n| cap(n * 2.0, n * 4.0, n)),
                    next_timeslot_start: None,
                    idle_since: Some(at(idle)),
                },
            )
    }

    fn scenario() -> impl Strategy<Value = (TemplateView, Vec<WorkerView>, Option<Vec<DemandItem>>)>
    {
        (
            0u32..4,
            0u32..8,
            0u32..3,
            0u32..3,
            1u32..3,
            prop::collection::vec(a_worker(), 0..8),
            prop::option::of(prop::collection::vec((0i64..60, 1.0f64..20.0), 0..10)),
        )
            .prop_map(|(min, extra, warm, stopped, drains, mut ws, demand)| {
                let mut t = template();
                t.min_workers = min;
                t.max_workers = min + extra;
                t.warm_workers = warm.min(t.max_workers);
                t.max_stopped_workers = stopped;
                t.max_concurrent_drains = drains;
                for (k, w) in ws.iter_mut().enumerate() {
                    w.name = format!("w{k}");
                }
                let demand = demand.map(|d| {
                    d.into_iter()
                        .enumerate()
                        .map(|(k, (start, nodes))| lab(&format!("l{k}"), start, nodes))
                        .collect()
                });
                (t, ws, demand)
            })
    }

    fn up_after(ws: &[WorkerView], p: &Plan) -> i64 {
        let mut up = ws.iter().filter(|w| is_up(w)).count() as i64;
        for d in &p.decisions {
            match &d.action {
                Action::Create { count } => up += i64::from(*count),
                Action::Start { .. } => up += 1,
                Action::Drain { .. } => up -= 1,
                _ => {}
            }
        }
        up
    }

    fn created(p: &Plan) -> u32 {
        p.decisions
            .iter()
            .map(|d| match d.action {
                Action::Create { count } => count,
                _ => 0,
            })
            .sum()
    }

    proptest! {
        #[test]
        fn holding_stopped_workers_launches_no_more_and_stays_within_max_workers(
            (t, ws, demand) in scenario(),
            start_lead in 0u32..36,
        ) {
            let demand = demand.unwrap_or_default();
            let p = plan(&Inputs {
                template: &t,
                workers: &ws,
                demand: Some(&demand),
                lead_time: 35 * MIN,
                start_lead_time: MIN * start_lead,
                now: at(0),
                creation: Creation::Allowed,
            });
            let early = run(&t, &ws, Some(&demand));
            prop_assert!(created(&p) <= created(&early), "{:?} launches more than {:?}", p.decisions, early.decisions);
            let up_before = ws.iter().filter(|w| is_up(w)).count() as i64;
            if created(&p) > 0 || !p.held_stopped.is_empty() {
                let committed = up_after(&ws, &p) + p.held_stopped.len() as i64;
                prop_assert!(committed <= i64::from(t.max_workers).max(up_before));
            }
            for name in &p.held_stopped {
                let w = ws.iter().find(|w| &w.name == name).expect("a known worker");
                prop_assert!(w.owned && matches!(w.phase, WorkerPhase::Stopped | WorkerPhase::Stopping));
                // Held means kept stopped: it may join the stopped pool, nothing else.
                let other = |d: &Decision| d.action.worker() == Some(name) && !matches!(d.action, Action::Stop { .. });
                prop_assert!(!p.decisions.iter().any(other), "{:?}", p.decisions);
            }
        }

        #[test]
        fn invariants((t, ws, demand) in scenario()) {
            let p = run(&t, &ws, demand.as_deref());
            let up_before = ws.iter().filter(|w| is_up(w)).count() as i64;
            let created: u32 = p.decisions.iter().map(|d| match d.action { Action::Create { count } => count, _ => 0 }).sum();
            let started = p.decisions.iter().filter(|d| matches!(d.action, Action::Start { .. })).count() as i64;
            // Never above maxWorkers by its own doing.
            if created > 0 || started > 0 {
                prop_assert!(up_after(&ws, &p) <= i64::from(t.max_workers).max(up_before));
            }
            // Never below minWorkers by its own doing.
            if p.decisions.iter().any(|d| matches!(d.action, Action::Drain { .. })) {
                prop_assert!(up_after(&ws, &p) >= i64::from(t.min_workers));
            }
            for d in &p.decisions {
                if let Some(name) = d.action.worker() {
                    let w = ws.iter().find(|w| w.name == name).expect("a known worker");
                    // Hand-made workers are never touched.
                    prop_assert!(w.owned, "{:?} on hand-made {}", d.action, name);
                    if let Action::Drain { .. } = d.action {
                        prop_assert_eq!(w.busy, Some(false));
                        prop_assert!(!w.do_not_disrupt);
                        prop_assert!(w.allocated.is_none_or(|a| a.is_zero()));
                    }
                }
            }
            // No launch for demand that fits what is up or on its way.
            let due: Vec<&DemandItem> = demand.as_deref().unwrap_or_default().iter()
                .filter(|d| d.timeslot_start <= at(35)).collect();
            if due.is_empty() && created > 0 {
                prop_assert!(p.decisions.iter().all(|d| d.trigger != Trigger::Demand));
            }
            // Same input, same output.
            prop_assert_eq!(run(&t, &ws, demand.as_deref()), p);
        }

        #[test]
        fn a_blocked_creation_launches_nothing_and_changes_nothing_else_when_nothing_is_launched(
            (t, ws, demand) in scenario(),
        ) {
            let allowed = run(&t, &ws, demand.as_deref());
            let p = run_with(&t, &ws, demand.as_deref(), blocked());
            prop_assert_eq!(created(&p), 0);
            prop_assert_eq!(p.held.as_ref().map(|h| h.limit), Some(Limit::CreationBlocked));
            if created(&allowed) == 0 {
                prop_assert_eq!(&p.decisions, &allowed.decisions);
            }
            // What it starts, deletes, drains or stops is what the round may do without a launch.
            for d in &p.decisions {
                if let Some(name) = d.action.worker() {
                    let w = ws.iter().find(|w| w.name == name).expect("a known worker");
                    prop_assert!(w.owned, "{:?} on hand-made {}", d.action, name);
                }
            }
        }

        #[test]
        fn demand_that_fits_one_empty_worker_on_its_way_launches_nothing(nodes in 1.0f64..20.0, phase in prop::sample::select(vec![WorkerPhase::Pending, WorkerPhase::Provisioning, WorkerPhase::Starting])) {
            let ws = [worker("w", phase)];
            let p = run(&template(), &ws, Some(&[lab("a", 5, nodes)]));
            prop_assert!(p.decisions.iter().all(|d| !d.action.is_scale_up()));
        }
    }
}

#[test]
fn the_seat_budget_caps_workers_coming_up_and_says_so() {
    let mut t = template();
    t.seats_available = Some(2);
    let demand = [lab("a", 5, 20.0), lab("b", 5, 20.0), lab("c", 5, 20.0)];
    let p = run(&t, &[], Some(&demand));
    assert_eq!(actions(&p), vec![create(2)]);
    assert!(p.seats_exhausted());
    assert!(held(&p).contains("license seat"), "{:?}", p.held);
    // Starting a stopped worker takes a seat as well.
    t.seats_available = Some(1);
    t.max_stopped_workers = 2;
    let stopped = [
        worker("s1", WorkerPhase::Stopped),
        worker("s2", WorkerPhase::Stopped),
    ];
    let p = run(&t, &stopped, Some(&demand[..2]));
    assert_eq!(actions(&p), vec![start("s1")]);
    assert!(p.seats_exhausted());
}

#[test]
fn without_a_budget_or_with_seats_to_spare_nothing_is_held_for_seats() {
    let mut t = template();
    let demand = [lab("a", 5, 20.0), lab("b", 5, 20.0)];
    for seats in [None, Some(2), Some(9)] {
        t.seats_available = seats;
        let p = run(&t, &[], Some(&demand));
        assert_eq!(actions(&p), vec![create(2)], "{seats:?}");
        assert!(!p.seats_exhausted());
        assert_eq!(p.held, None);
    }
}
