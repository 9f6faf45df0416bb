//! What must hold, checked every round while faults fly (`watch`) and once they stop
//! (`settled`): one live instance per Worker, no orphan past its grace, no worker stopped or
//! terminated under running labs, no seat held by a worker that is gone, no unexpected exit.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use kube::ResourceExt;
use resource_controller::{
    crd::{
        DesiredState, Worker, WorkerPhase,
        conditions::{self, ConditionType},
    },
    provider::{Instance, InstanceState, tag},
};

use super::{
    platform::{Lab, Platform},
    world::{BY_HAND, CLASS, ORPHAN_GRACE, World},
};

/// A lab placed this shortly before its worker was seen stopping raced the stop: the platform
/// read a record that was already stale (a real platform can do the same).
const RACE: Duration = Duration::from_millis(1500);
/// How long a gone worker's seat may stay held: its deregistration may be retried this long.
const SEAT_GRACE: Duration = Duration::from_secs(30);
/// Resident memory by replica identity: first and last sample in KiB, and when each was taken.
pub type Rss = BTreeMap<String, (u64, u64, Instant, Instant)>;

/// What the planner wants up with no labs: `minWorkers` 1, and that idle worker is also the
/// `warmWorkers` 1 of headroom (an idle running worker counts as warm).
const IDLE_FLEET: u32 = 1;
/// The orphan sweep runs every 2 s; give it a few rounds past the grace.
const ORPHAN_SLACK: Duration = Duration::from_secs(20);

#[derive(Default)]
pub struct Checks {
    pub made: u64,
    pub violations: Vec<String>,
    /// Labs placed just before their worker stopped (see `RACE`).
    pub raced: u32,
    /// Replicas that exited to start afresh after losing the Lease (and were started again).
    pub lease_exits: u32,
    seen: HashMap<String, InstanceState>,
    orphan_since: HashMap<String, Instant>,
    seat_since: HashMap<String, Instant>,
    reported: HashSet<String>,
    born: HashMap<String, Instant>,
    pub rss: Rss,
}

impl Checks {
    /// One round of the continuous checks.
    pub async fn watch(&mut self, world: &World, platform: &Platform) {
        let Ok(instances) = world.cloud.instances() else {
            return;
        };
        world.cml.follow(&instances).await;
        self.one_live_instance_each(&instances);
        self.no_stop_under_labs(&instances, platform);
        if let Some(workers) = world.list_workers().await {
            self.no_orphans(&instances, &workers);
        }
        self.no_seat_held_by_the_gone(world, &instances);
        self.no_unexpected_exit(world);
        self.sample_memory(world);
    }

    /// Instances the checks have seen, terminated ones included.
    pub fn instances_seen(&self) -> usize {
        self.seen.len()
    }

    fn violation(&mut self, key: String, what: String) {
        if self.reported.insert(key) {
            eprintln!("soak: VIOLATION {what}");
            self.violations.push(what);
        }
    }

    fn one_live_instance_each(&mut self, instances: &[Instance]) {
        self.made += 1;
        let mut by_worker: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for i in instances.iter().filter(|i| live(i)) {
            if let Some(uid) = i.tags.get(tag::WORKER_UID) {
                by_worker.entry(uid).or_default().push(&i.id);
            }
        }
        for (uid, ids) in by_worker.into_iter().filter(|(_, ids)| ids.len() > 1) {
            self.violation(
                format!("two:{uid}"),
                format!("worker {uid} has {} live instances: {ids:?}", ids.len()),
            );
        }
    }

    /// A stop or termination seen now on an instance that was up: its labs must be over.
    fn no_stop_under_labs(&mut self, instances: &[Instance], platform: &Platform) {
        self.made += 1;
        for i in instances {
            let before = self.seen.insert(i.id.clone(), i.state);
            let was_up = matches!(
                before,
                Some(InstanceState::Running | InstanceState::Pending)
            );
            let going = matches!(
                i.state,
                InstanceState::Stopping
                    | InstanceState::Stopped
                    | InstanceState::ShuttingDown
                    | InstanceState::Terminated
            );
            let Some(uid) = i.tags.get(tag::WORKER_UID) else {
                continue;
            };
            if !(was_up && going) {
                continue;
            }
            let labs = platform.on(uid);
            let (raced, settled): (Vec<&&Lab>, Vec<&&Lab>) = labs
                .iter()
                .partition(|l| l.placed_at.is_some_and(|at| at.elapsed() < RACE));
            self.raced += u32::try_from(raced.len()).unwrap_or(0);
            if !settled.is_empty() {
                let ids: Vec<&str> = settled.iter().map(|l| l.id.as_str()).collect();
                self.violation(
                    format!("labs:{}", i.id),
                    format!(
                        "instance {} of worker {uid} went {:?} under running labs {ids:?}",
                        i.id, i.state
                    ),
                );
            }
        }
    }

    fn no_orphans(&mut self, instances: &[Instance], workers: &[Worker]) {
        self.made += 1;
        let uids: HashSet<String> = workers.iter().filter_map(|w| w.uid()).collect();
        let now = Instant::now();
        let orphans: Vec<&Instance> = instances
            .iter()
            .filter(|i| live(i))
            .filter(|i| {
                i.tags
                    .get(tag::WORKER_UID)
                    .is_none_or(|u| !uids.contains(u))
            })
            .collect();
        self.orphan_since
            .retain(|id, _| orphans.iter().any(|o| &o.id == id));
        for o in orphans {
            let since = *self.orphan_since.entry(o.id.clone()).or_insert(now);
            if since.elapsed() > ORPHAN_GRACE + ORPHAN_SLACK {
                self.violation(
                    format!("orphan:{}", o.id),
                    format!(
                        "instance {} ({:?}) has had no Worker for {:?}",
                        o.id,
                        o.state,
                        since.elapsed()
                    ),
                );
            }
        }
    }

    fn no_seat_held_by_the_gone(&mut self, world: &World, instances: &[Instance]) {
        self.made += 1;
        let held = world.cml.account.held();
        let gone: HashSet<&str> = instances
            .iter()
            .filter(|i| !live(i))
            .map(|i| i.id.as_str())
            .collect();
        let now = Instant::now();
        let mut leaking = Vec::new();
        for (id, server) in world.cml.all() {
            if gone.contains(id.as_str()) && held.contains_key(&server.product_instance()) {
                leaking.push(id);
            }
        }
        self.seat_since.retain(|id, _| leaking.contains(id));
        for id in leaking {
            let since = *self.seat_since.entry(id.clone()).or_insert(now);
            if since.elapsed() > SEAT_GRACE {
                self.violation(
                    format!("seat:{id}"),
                    format!("instance {id} is gone but its license seat is still held"),
                );
            }
        }
    }

    /// A replica may exit by itself only to start afresh after losing the Lease.
    fn no_unexpected_exit(&mut self, world: &World) {
        self.made += 1;
        for exit in world.supervise() {
            if exit.lost_lease {
                self.lease_exits += 1;
            } else {
                self.violation(
                    format!("exit:{}", exit.identity),
                    format!("replica {} exited by itself ({})", exit.identity, exit.what),
                );
            }
        }
    }

    fn sample_memory(&mut self, world: &World) {
        let now = Instant::now();
        let pids: Vec<(String, u32)> = world
            .slots()
            .iter()
            .filter(|s| !s.signaled)
            .filter_map(|s| s.replica.as_ref().map(|r| (r.identity.clone(), r.pid())))
            .collect();
        for (identity, pid) in pids {
            let born = *self.born.entry(identity.clone()).or_insert(now);
            // Skip the first seconds: a process still loading is not its steady size.
            if born.elapsed() < Duration::from_secs(5) {
                continue;
            }
            let Some(kib) = resident_kib(pid) else {
                continue;
            };
            let entry = self.rss.entry(identity).or_insert((kib, kib, now, now));
            entry.1 = kib;
            entry.3 = now;
        }
    }

    /// Why the world has not settled yet, or `None` once it has: every record mirrors its
    /// Worker, the fleet is what the planner wants, no orphan and no stray seat.
    pub async fn unsettled(&self, world: &World) -> Option<String> {
        let workers = world.list_workers().await?;
        let instances = world.cloud.instances().ok()?;
        let uids: HashSet<String> = workers.iter().filter_map(|w| w.uid()).collect();
        if let Some(why) = records_mirror(world, &workers, &uids).await {
            return Some(why);
        }
        if let Some(why) = fleet_as_planned(world, &workers).await {
            return Some(why);
        }
        if let Some(i) = instances.iter().filter(|i| live(i)).find(|i| {
            i.tags
                .get(tag::WORKER_UID)
                .is_none_or(|u| !uids.contains(u))
        }) {
            return Some(format!("instance {} has no Worker", i.id));
        }
        let held = world.cml.account.held();
        for (id, server) in world.cml.all() {
            let live_now = instances.iter().any(|i| i.id == id && live(i));
            if !live_now && held.contains_key(&server.product_instance()) {
                return Some(format!("instance {id} is gone but holds a seat"));
            }
        }
        None
    }

    /// Violations only visible at the end: panics in any replica's log, and requests or
    /// answers that broke a published contract.
    pub fn at_the_end(&mut self, world: &World) {
        self.made += 1;
        let logs: Vec<_> = world.slots().iter().flat_map(|s| s.logs.clone()).collect();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("panicked") {
                self.violation(
                    format!("panic:{}", log.display()),
                    format!("a panic in {}", log.display()),
                );
            }
        }
        for v in world.platform.violations() {
            self.violation(
                format!("cp:{v}"),
                format!("Control Plane API contract: {v}"),
            );
        }
        for (id, server) in world.cml.all() {
            for v in server.violations() {
                self.violation(format!("cml:{id}:{v}"), format!("CML {id} contract: {v}"));
            }
        }
    }
}

fn live(i: &Instance) -> bool {
    !matches!(
        i.state,
        InstanceState::Terminated | InstanceState::ShuttingDown
    )
}

fn phase(w: &Worker) -> Option<WorkerPhase> {
    w.status.as_ref().and_then(|s| s.phase)
}

/// Every Worker Synced, its record in both remotes showing its phase; no record of a gone one.
async fn records_mirror(
    world: &World,
    workers: &[Worker],
    uids: &HashSet<String>,
) -> Option<String> {
    for w in workers {
        let uid = w.uid().unwrap_or_default();
        let name = w.name_any();
        let status = w.status.as_ref()?;
        if !conditions::is_true(&status.conditions, ConditionType::Synced) {
            return Some(format!("{name} is not Synced"));
        }
        let Some(phase) = status.phase else {
            return Some(format!("{name} has no phase"));
        };
        let instance = status.instance.as_ref().map(|i| i.id.as_str());
        let cp = world.platform.record(&uid);
        let cp_shows = cp
            .as_ref()
            .map(|r| (r["phase"].as_str(), r["instance_id"].as_str()));
        if cp_shows != Some((Some(phase.as_str()), instance)) {
            return Some(format!(
                "{name} is {phase:?} on {instance:?}; Control Plane API record {cp:?}"
            ));
        }
        let etcd = world.store.worker(&uid).await.ok().flatten();
        let etcd_shows = etcd
            .as_ref()
            .map(|r| (r.phase.as_str(), r.instance_id.as_deref()));
        if etcd_shows != Some((phase.as_str(), instance)) {
            return Some(format!(
                "{name} is {phase:?} on {instance:?}; etcd record shows {etcd_shows:?}"
            ));
        }
    }
    let cp_ids: Vec<String> = world.platform.state().workers.keys().cloned().collect();
    if let Some(stray) = cp_ids.iter().find(|id| !uids.contains(*id)) {
        return Some(format!(
            "Control Plane API keeps a record of gone worker {stray}"
        ));
    }
    let etcd_ids = world.store.worker_ids().await.ok()?;
    if let Some(stray) = etcd_ids.iter().find(|id| !uids.contains(*id)) {
        return Some(format!("etcd keeps a record of gone worker {stray}"));
    }
    None
}

/// The autoscaled template has as many Running workers as it wants up and none on the move;
/// every hand-made worker is in its desired state.
async fn fleet_as_planned(world: &World, workers: &[Worker]) -> Option<String> {
    let template = world.template_api().get(CLASS).await.ok()?;
    let status = template.status.as_ref()?;
    let desired = status.desired_workers?;
    let demand = status.demand.as_ref().map(|d| d.instances);
    if desired != IDLE_FLEET || demand != Some(0) {
        return Some(format!(
            "{CLASS} wants {desired} up for demand {demand:?}; with no labs it should want {IDLE_FLEET}"
        ));
    }
    let owned = |t: &'static str| {
        workers
            .iter()
            .filter(move |w| w.spec.template_ref.name == t)
            .filter(|w| w.metadata.deletion_timestamp.is_none())
    };
    let running = owned(CLASS)
        .filter(|w| phase(w) == Some(WorkerPhase::Running))
        .count();
    let moving: Vec<String> = owned(CLASS)
        .filter(|w| !matches!(phase(w), Some(WorkerPhase::Running | WorkerPhase::Stopped)))
        .map(|w| {
            let why = crate::workers::ready_message(w);
            format!("{} {:?}: {why}", w.name_any(), phase(w))
        })
        .collect();
    if running != desired as usize || !moving.is_empty() {
        return Some(format!(
            "{CLASS}: {running} Running, {desired} desired, on the move {moving:?}"
        ));
    }
    for w in owned(BY_HAND) {
        let wanted = match w.spec.desired_state {
            DesiredState::Running => WorkerPhase::Running,
            DesiredState::Stopped => WorkerPhase::Stopped,
            DesiredState::Draining => continue,
        };
        if phase(w) != Some(wanted) {
            return Some(format!(
                "{} is {:?}, wanted {wanted:?}: {}",
                w.name_any(),
                phase(w),
                crate::workers::ready_message(w)
            ));
        }
    }
    None
}

/// `VmRSS` of a process, in KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, uid: &str, state: InstanceState) -> Instance {
        Instance {
            id: id.into(),
            state,
            instance_type: "m5zn.metal".into(),
            availability_zone: None,
            private_ip: None,
            public_ip: None,
            image_id: None,
            launch_time: None,
            tags: [(tag::WORKER_UID.to_owned(), uid.to_owned())].into(),
            state_reason: None,
        }
    }

    fn lab_on(uid: &str, placed_ago: Duration) -> Platform {
        let now = Instant::now();
        let mut platform = Platform::default();
        let lab = Lab {
            id: "lab-1".into(),
            nodes: 8,
            start: now,
            end: now + Duration::from_secs(60),
            placed: Some((uid.into(), "i-1".into())),
            placed_at: now.checked_sub(placed_ago),
        };
        platform.labs.insert(lab.id.clone(), lab);
        platform
    }

    #[test]
    fn two_live_instances_of_one_worker_are_a_violation_and_a_terminated_one_is_not() {
        let mut checks = Checks::default();
        checks.one_live_instance_each(&[
            instance("i-1", "u1", InstanceState::Running),
            instance("i-2", "u1", InstanceState::Terminated),
            instance("i-3", "u2", InstanceState::Stopped),
        ]);
        assert!(checks.violations.is_empty(), "{:?}", checks.violations);
        checks.one_live_instance_each(&[
            instance("i-1", "u1", InstanceState::Running),
            instance("i-2", "u1", InstanceState::Pending),
        ]);
        assert_eq!(checks.violations.len(), 1, "{:?}", checks.violations);
    }

    #[test]
    fn a_stop_under_a_running_lab_is_a_violation_unless_the_lab_raced_it() {
        let up = [instance("i-1", "u1", InstanceState::Running)];
        let stopping = [instance("i-1", "u1", InstanceState::Stopping)];

        let mut checks = Checks::default();
        let settled = lab_on("u1", Duration::from_secs(10));
        checks.no_stop_under_labs(&up, &settled);
        assert!(checks.violations.is_empty(), "running is fine");
        checks.no_stop_under_labs(&stopping, &settled);
        assert_eq!(checks.violations.len(), 1, "{:?}", checks.violations);

        let mut checks = Checks::default();
        let raced = lab_on("u1", Duration::ZERO);
        checks.no_stop_under_labs(&up, &raced);
        checks.no_stop_under_labs(&stopping, &raced);
        assert!(checks.violations.is_empty(), "{:?}", checks.violations);
        assert_eq!(checks.raced, 1);

        let mut checks = Checks::default();
        checks.no_stop_under_labs(&up, &Platform::default());
        checks.no_stop_under_labs(&stopping, &Platform::default());
        assert!(checks.violations.is_empty(), "no labs, no violation");
    }

    #[test]
    fn an_instance_without_its_worker_is_a_violation_only_past_the_grace() {
        let orphan = [instance("i-1", "gone", InstanceState::Running)];
        let mut checks = Checks::default();
        checks.no_orphans(&orphan, &[]);
        assert!(checks.violations.is_empty(), "within the grace");
        let long_ago = Instant::now()
            .checked_sub(ORPHAN_GRACE + ORPHAN_SLACK + Duration::from_secs(1))
            .expect("an instant in the past");
        checks.orphan_since.insert("i-1".into(), long_ago);
        checks.no_orphans(&orphan, &[]);
        assert_eq!(checks.violations.len(), 1, "{:?}", checks.violations);
    }
}
