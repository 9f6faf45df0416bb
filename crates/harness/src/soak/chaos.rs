//! The fault injector: every few seconds (seeded) one fault from the table, on top of those
//! still in force. Each fault heals itself after a few seconds; a killed replica comes back
//! under a new identity, as a pod would.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ccm_simulator::InjectedFaults;
use strum::VariantArray;
use warp::http::StatusCode;

use crate::{cml_server, control_plane_server};

use super::world::World;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, strum::VariantArray)]
pub enum Fault {
    KillLeader,
    TerminateLeader,
    RestartApiServer,
    PlatformDown,
    PlatformSlow,
    PlatformFailing,
    RestartStateEtcd,
    CmlDown,
    CmlGarbage,
    CmlNullCounts,
    CmlFailingEndpoint,
    Ec2Throttling,
    Ec2ServerErrors,
    Ec2NoCapacity,
}

/// What a fault acts on: two faults on one target never overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Replicas,
    ApiServer,
    Platform,
    StateEtcd,
    Cml,
    Ec2,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "leader killed (SIGKILL)",
            Fault::TerminateLeader => "leader stopped (SIGTERM)",
            Fault::RestartApiServer => "kube-apiserver restarted",
            Fault::PlatformDown => "Control Plane API down",
            Fault::PlatformSlow => "Control Plane API slow (3 s)",
            Fault::PlatformFailing => "Control Plane API answering 500",
            Fault::RestartStateEtcd => "state etcd restarted",
            Fault::CmlDown => "a CML down",
            Fault::CmlGarbage => "a CML answering garbage",
            Fault::CmlNullCounts => "a CML with null node counts",
            Fault::CmlFailingEndpoint => "a CML endpoint answering 500",
            Fault::Ec2Throttling => "EC2 throttling (40 %)",
            Fault::Ec2ServerErrors => "EC2 5xx (30 %)",
            Fault::Ec2NoCapacity => "EC2 without capacity",
        }
    }

    fn target(self) -> Target {
        match self {
            Fault::KillLeader | Fault::TerminateLeader => Target::Replicas,
            Fault::RestartApiServer => Target::ApiServer,
            Fault::PlatformDown | Fault::PlatformSlow | Fault::PlatformFailing => Target::Platform,
            Fault::RestartStateEtcd => Target::StateEtcd,
            Fault::CmlDown
            | Fault::CmlGarbage
            | Fault::CmlNullCounts
            | Fault::CmlFailingEndpoint => Target::Cml,
            Fault::Ec2Throttling | Fault::Ec2ServerErrors | Fault::Ec2NoCapacity => Target::Ec2,
        }
    }
}

/// Faults injected so far, by kind, and the targets under a fault now.
#[derive(Default)]
pub struct Chaos {
    pub injected: Mutex<BTreeMap<Fault, u32>>,
    busy: Mutex<Vec<Target>>,
    /// When the replicas may be signaled again.
    replicas_rest_until: Mutex<Option<Instant>>,
}

/// Between two signals to the leader: long enough for replicas to live a while (their memory
/// is sampled over their life) while a 2-minute run still kills one.
const REPLICA_REST: Duration = Duration::from_secs(45);

impl Chaos {
    /// Picks a fault whose target is free and sets it off; it heals by itself.
    pub fn inject(self: &Arc<Self>, world: &Arc<World>, rng: &mut fastrand::Rng) {
        let fault = Fault::VARIANTS[rng.usize(..Fault::VARIANTS.len())];
        let resting = lock(&self.replicas_rest_until).is_some_and(|t| Instant::now() < t);
        if fault.target() == Target::Replicas && resting {
            return;
        }
        {
            let mut busy = lock(&self.busy);
            if busy.contains(&fault.target()) {
                return;
            }
            busy.push(fault.target());
        }
        if fault.target() == Target::Replicas {
            *lock(&self.replicas_rest_until) = Some(Instant::now() + REPLICA_REST);
        }
        let lasts = Duration::from_millis(rng.u64(2_000..=8_000));
        let pick = rng.u64(..);
        let (chaos, world) = (self.clone(), world.clone());
        tokio::spawn(async move {
            let _free = Release(chaos.clone(), fault.target());
            if apply(&world, fault, lasts, pick).await {
                *lock(&chaos.injected).entry(fault).or_default() += 1;
            }
        });
    }

    /// Whether any fault is still in force.
    pub fn active(&self) -> bool {
        !lock(&self.busy).is_empty()
    }

    pub fn total(&self) -> u32 {
        lock(&self.injected).values().sum()
    }
}

/// Frees a fault's target when the fault is over, however its task ended.
struct Release(Arc<Chaos>, Target);

impl Drop for Release {
    fn drop(&mut self) {
        lock(&self.0.busy).retain(|t| *t != self.1);
    }
}

/// Applies `fault`, holds it for `lasts`, and heals it; `false` when there was nothing to
/// break (no leader at that moment, no live CML).
async fn apply(world: &Arc<World>, fault: Fault, lasts: Duration, pick: u64) -> bool {
    match fault {
        Fault::KillLeader => return signal_leader(world, "KILL", lasts).await,
        Fault::TerminateLeader => return signal_leader(world, "TERM", lasts).await,
        Fault::RestartApiServer => {
            let w = world.clone();
            return tokio::task::spawn_blocking(move || w.cp.restart_apiserver())
                .await
                .is_ok();
        }
        Fault::PlatformDown => platform(world, control_plane_server::Mode::Down, lasts).await,
        Fault::PlatformSlow => {
            let slow = control_plane_server::Mode::Slow(Duration::from_secs(3));
            platform(world, slow, lasts).await;
        }
        Fault::PlatformFailing => platform(world, control_plane_server::Mode::Failing, lasts).await,
        Fault::RestartStateEtcd => {
            world.etcd.stop();
            tokio::time::sleep(lasts).await;
            world.etcd.resume();
        }
        Fault::CmlDown => {
            return cml(world, pick, lasts, |s| s.set_mode(cml_server::Mode::Down)).await;
        }
        Fault::CmlGarbage => {
            return cml(world, pick, lasts, |s| {
                s.set_mode(cml_server::Mode::Garbage)
            })
            .await;
        }
        Fault::CmlNullCounts => {
            return cml(world, pick, lasts, |s| s.set_counts_unknown(true)).await;
        }
        Fault::CmlFailingEndpoint => {
            let endpoint = ["system_stats", "labs", "licensing"][(pick % 3) as usize];
            let error = Some(StatusCode::INTERNAL_SERVER_ERROR);
            return cml(world, pick, lasts, move |s| s.set_failing(endpoint, error)).await;
        }
        Fault::Ec2Throttling => {
            let faults = InjectedFaults {
                throttle_rate: 0.4,
                ..InjectedFaults::default()
            };
            ec2(world, faults, lasts).await;
        }
        Fault::Ec2ServerErrors => {
            let faults = InjectedFaults {
                server_error_rate: 0.3,
                ..InjectedFaults::default()
            };
            ec2(world, faults, lasts).await;
        }
        Fault::Ec2NoCapacity => {
            let faults = InjectedFaults {
                no_capacity: vec!["m5zn.metal".into()],
                ..InjectedFaults::default()
            };
            ec2(world, faults, lasts).await;
        }
    }
    true
}

/// Signals the leader (if one leads now) and starts its slot again after `lasts`.
async fn signal_leader(world: &World, signal: &str, lasts: Duration) -> bool {
    let mut leader = None;
    let ports: Vec<(usize, u16)> = world
        .slots()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.replica.as_ref().map(|r| (i, r.port)))
        .collect();
    for (i, port) in ports {
        let url = format!("http://127.0.0.1:{port}/readyz");
        let asked = tokio::time::timeout(Duration::from_secs(2), async {
            reqwest::get(&url).await.ok()?.text().await.ok()
        });
        let leads = asked
            .await
            .ok()
            .flatten()
            .is_some_and(|b| b.starts_with("leader"));
        if leads {
            leader = Some(i);
        }
    }
    let Some(i) = leader else { return false };
    {
        let mut slots = world.slots();
        let slot = &mut slots[i];
        slot.signaled = true;
        if let Some(r) = &slot.replica {
            let _ = std::process::Command::new("kill")
                .args([format!("-{signal}"), r.pid().to_string()])
                .status();
        }
    }
    tokio::time::sleep(lasts.min(Duration::from_secs(3))).await;
    let mut slots = world.slots();
    let slot = &mut slots[i];
    // SIGTERM leaves it time to step down; whatever remains goes.
    drop(slot.replica.take());
    world.launch(slot);
    true
}

async fn platform(world: &World, mode: control_plane_server::Mode, lasts: Duration) {
    world.platform.set_mode(mode);
    tokio::time::sleep(lasts).await;
    world.platform.set_mode(control_plane_server::Mode::Up);
}

/// Breaks the CML of one live instance (chosen by `pick`) for `lasts`, then heals it.
async fn cml(
    world: &World,
    pick: u64,
    lasts: Duration,
    break_it: impl Fn(&cml_server::CmlServer),
) -> bool {
    let live: Vec<_> = world
        .cml
        .all()
        .into_values()
        .filter(|s| s.mode() != cml_server::Mode::Down)
        .collect();
    if live.is_empty() {
        return false;
    }
    let server = &live[(pick % live.len() as u64) as usize];
    break_it(server);
    tokio::time::sleep(lasts).await;
    heal_cml(server);
    true
}

pub fn heal_cml(server: &cml_server::CmlServer) {
    server.set_mode(cml_server::Mode::Ready);
    server.set_counts_unknown(false);
    for endpoint in ["system_stats", "labs", "licensing"] {
        server.set_failing(endpoint, None);
    }
}

async fn ec2(world: &World, faults: InjectedFaults, lasts: Duration) {
    let _ = faults.write(&world.faults_file);
    tokio::time::sleep(lasts).await;
    let _ = InjectedFaults::default().write(&world.faults_file);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
