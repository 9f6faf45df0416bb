//! The soak: two replicas of the binary run a fleet while a lab platform books and places labs,
//! an operator makes and breaks Workers by hand, and a seeded injector sets off faults all at
//! once (see [`chaos`]). The invariants ([`invariants`]) are checked every round and once the
//! faults stop; the report says what was injected, what was checked, what broke and how long
//! the fleet took to settle.

pub mod by_hand;
pub mod chaos;
pub mod invariants;
pub mod platform;
pub mod world;

use std::{
    fmt::Write as _,
    sync::Arc,
    time::{Duration, Instant},
};

use by_hand::ByHand;
use chaos::Chaos;
use invariants::Checks;
use platform::Platform;
use world::World;

/// A round of the platform, the checks and the injector's clock.
const ROUND: Duration = Duration::from_millis(250);
/// How long the fleet may take to settle once the faults stop: two resyncs, the scale-down
/// grace, drains and stops, with room for a slow machine.
const SETTLE: Duration = Duration::from_secs(180);

pub struct Config {
    pub duration: Duration,
    pub seed: u64,
}

impl Config {
    /// `SOAK_MINUTES` (else `default_minutes`) and `SOAK_SEED` (else a random one).
    pub fn from_env(default_minutes: f64) -> Config {
        let minutes = std::env::var("SOAK_MINUTES")
            .ok()
            .and_then(|m| m.parse::<f64>().ok())
            .unwrap_or(default_minutes);
        let seed = std::env::var("SOAK_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        Config {
            duration: Duration::from_secs_f64(minutes * 60.0),
            seed,
        }
    }
}

pub struct Report {
    pub text: String,
    pub violations: Vec<String>,
}

pub async fn run(config: Config) -> Report {
    let seed = config.seed;
    eprintln!(
        "soak: seed {seed}, {:.1} min (replay with SOAK_SEED={seed})",
        config.duration.as_secs_f64() / 60.0
    );
    let world = World::start().await;
    let chaos = Arc::new(Chaos::default());
    let mut parts = Parts {
        platform: Platform::default(),
        by_hand: ByHand::default(),
        checks: Checks::default(),
    };
    let mut rngs = [1, 2, 3].map(|k| fastrand::Rng::with_seed(seed ^ k));
    let started = Instant::now();
    let (mut next_fault, mut next_hand) = (started, started);
    while started.elapsed() < config.duration {
        let now = Instant::now();
        if now >= next_fault {
            chaos.inject(&world, &mut rngs[0]);
            next_fault = now + Duration::from_millis(rngs[0].u64(1_500..=4_000));
        }
        if now >= next_hand {
            parts.by_hand.act(&world, &mut rngs[1]).await;
            next_hand = now + Duration::from_millis(rngs[1].u64(3_000..=8_000));
        }
        parts.round(&world, Some((&mut rngs[2], started))).await;
    }
    while chaos.active() {
        parts.round(&world, None).await;
    }
    let last_fault = Instant::now();
    heal(&world);
    parts.platform.end(&world, |_| true);
    let settled = parts.settle(&world).await;
    let convergence = last_fault.elapsed();
    parts.checks.at_the_end(&world);
    if let Err(why) = settled {
        let v = format!("not settled {SETTLE:?} after the last fault: {why}");
        parts.checks.violations.push(v);
    }
    let text = parts.report(&config, &chaos, convergence, started.elapsed());
    Report {
        text,
        violations: parts.checks.violations,
    }
}

struct Parts {
    platform: Platform,
    by_hand: ByHand,
    checks: Checks,
}

impl Parts {
    /// One round: the platform (booking only while `booking` is given), then the checks.
    async fn round(&mut self, world: &World, booking: Option<(&mut fastrand::Rng, Instant)>) {
        let round = Instant::now() + ROUND;
        match booking {
            Some((rng, since)) => self.platform.tick(world, rng, since).await,
            None => {
                self.platform.end(world, |lab| lab.end <= Instant::now());
            }
        }
        self.checks.watch(world, &self.platform).await;
        tokio::time::sleep_until(round.into()).await;
    }

    /// Waits until every end invariant holds, checking the continuous ones meanwhile.
    async fn settle(&mut self, world: &World) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        loop {
            self.checks.watch(world, &self.platform).await;
            let why = match self.checks.unsettled(world).await {
                None => return Ok(()),
                Some(why) => why,
            };
            if Instant::now() > deadline {
                return Err(why);
            }
            tokio::time::sleep(ROUND * 2).await;
        }
    }

    fn report(
        &self,
        config: &Config,
        chaos: &Chaos,
        convergence: Duration,
        ran: Duration,
    ) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "soak: seed {}, faults for {:.1} min, {:.1} min in all\n",
            config.seed,
            config.duration.as_secs_f64() / 60.0,
            ran.as_secs_f64() / 60.0
        );
        let _ = writeln!(t, "| fault | injected |\n| --- | --- |");
        for (fault, n) in chaos
            .injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(t, "| {} | {n} |", fault.name());
        }
        let _ = writeln!(t, "| **all faults** | **{}** |\n", chaos.total());
        let p = &self.platform;
        let h = &self.by_hand;
        let c = &self.checks;
        let rows = [
            ("invariant checks made", c.made.to_string()),
            ("violations", c.violations.len().to_string()),
            (
                "labs booked / placed / never placed",
                format!("{} / {} / {}", p.booked, p.placed, p.unserved),
            ),
            (
                "labs placed within 1 s of their start / later",
                on_time(&p.waits),
            ),
            (
                "labs placed on a stale record, just before a stop",
                c.raced.to_string(),
            ),
            (
                "hand-made workers created / stopped / started / deleted",
                format!(
                    "{} / {} / {} / {}",
                    h.created, h.stopped, h.started, h.deleted
                ),
            ),
            (
                "replicas restarted after losing the Lease",
                c.lease_exits.to_string(),
            ),
            ("instances launched", c.instances_seen().to_string()),
            (
                "settled after the last fault",
                format!("{:.1} s", convergence.as_secs_f64()),
            ),
        ];
        let _ = writeln!(t, "| measure | value |\n| --- | --- |");
        for (what, value) in rows {
            let _ = writeln!(t, "| {what} | {value} |");
        }
        let _ = writeln!(t, "\n{}", memory(&c.rss));
        for v in &c.violations {
            let _ = writeln!(t, "\nVIOLATION: {v}");
        }
        t
    }
}

/// Resident memory of the replicas: at their first sample (5 s after start) and their last,
/// the median and the largest, and the longest-lived one's.
fn memory(rss: &invariants::Rss) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let spread = |mut v: Vec<u64>| {
        v.sort_unstable();
        let median = v.get(v.len() / 2).copied().unwrap_or(0);
        let most = v.last().copied().unwrap_or(0);
        format!(
            "median {:.1} MiB, largest {:.1} MiB",
            mib(median),
            mib(most)
        )
    };
    let first = spread(rss.values().map(|s| s.0).collect());
    let last = spread(rss.values().map(|s| s.1).collect());
    let longest = rss
        .iter()
        .max_by_key(|(_, s)| s.3.duration_since(s.2))
        .map(|(id, s)| {
            format!(
                "{id}, {:.0} s: {:.1} -> {:.1} MiB",
                s.3.duration_since(s.2).as_secs_f64(),
                mib(s.0),
                mib(s.1)
            )
        })
        .unwrap_or_default();
    format!(
        "| replicas' memory (RSS) | |\n| --- | --- |\n| replicas run | {} |\n\
         | first sample | {first} |\n| last sample | {last} |\n| longest-lived | {longest} |",
        rss.len()
    )
}

/// Labs placed within a second of their start, and the later ones with their median and
/// longest wait.
fn on_time(waits: &[Duration]) -> String {
    let mut late: Vec<Duration> = waits
        .iter()
        .copied()
        .filter(|w| *w > Duration::from_secs(1))
        .collect();
    late.sort();
    let on_time = waits.len() - late.len();
    match (late.get(late.len() / 2), late.last()) {
        (Some(median), Some(longest)) => format!(
            "{on_time} / {} (median {:.0} s, longest {:.0} s)",
            late.len(),
            median.as_secs_f64(),
            longest.as_secs_f64()
        ),
        _ => format!("{on_time} / 0"),
    }
}

/// Ends every fault still set and brings both replicas back.
fn heal(world: &World) {
    world
        .platform
        .set_mode(crate::control_plane_server::Mode::Up);
    world.etcd.resume();
    let _ = ccm_simulator::InjectedFaults::default().write(&world.faults_file);
    for server in world.cml.all().values() {
        if server.mode() != crate::cml_server::Mode::Down {
            chaos::heal_cml(server);
        }
    }
    for slot in world.slots().iter_mut() {
        if slot.replica.is_none() {
            world.launch(slot);
        }
    }
}
