//! The lab platform as the soak plays it: labs are booked ahead (unplaced instances in the
//! Control Plane API, announced through etcd), placed first-fit at their timeslot's start on a
//! worker whose record accepts assignments, run there (its capacity record and its CML both
//! show them), and end. Bookings come in busy and quiet spells, so demand rises and falls.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::world::{MAX_NODES, World};

const NODES: [u32; 3] = [4, 8, 12];
/// A spell of busy or quiet booking.
const SPELL: Duration = Duration::from_secs(45);

/// One lab definition per size.
pub fn definitions() -> Vec<Value> {
    NODES
        .iter()
        .map(|nodes| {
            json!({
                "id": definition_id(*nodes), "name": definition_id(*nodes), "version": "1",
                "resource_requirements": {"cpu_cores": nodes * 2, "memory_gb": nodes * 8, "storage_gb": 20},
                "license_affinity": ["ENTERPRISE"], "node_count": nodes
            })
        })
        .collect()
}

fn definition_id(nodes: u32) -> String {
    format!("soak-lab-{nodes}")
}

#[derive(Clone, Debug)]
pub struct Lab {
    pub id: String,
    pub nodes: u32,
    pub start: Instant,
    pub end: Instant,
    /// Worker uid and instance id, once placed.
    pub placed: Option<(String, String)>,
    pub placed_at: Option<Instant>,
}

#[derive(Default)]
pub struct Platform {
    pub labs: BTreeMap<String, Lab>,
    pub booked: u32,
    pub placed: u32,
    /// Labs whose timeslot started but that ended without ever finding a worker with room.
    pub unserved: u32,
    /// How long each placed lab waited past its timeslot's start.
    pub waits: Vec<Duration>,
    next: u64,
}

impl Platform {
    /// One round: book (in a busy spell, more), place what starts, end what is over.
    pub async fn tick(&mut self, world: &World, rng: &mut fastrand::Rng, since: Instant) {
        let busy = (since.elapsed().as_secs() / SPELL.as_secs()).is_multiple_of(2);
        // About a lab every 4 s when busy (some 60 nodes running at once), every 16 s when quiet.
        if rng.f64() < if busy { 0.0625 } else { 0.0156 } {
            self.book(world, rng).await;
        }
        self.place(world);
        self.end(world, |lab| lab.end <= Instant::now());
    }

    async fn book(&mut self, world: &World, rng: &mut fastrand::Rng) {
        self.next += 1;
        let id = format!("lab-{}", self.next);
        let nodes = NODES[rng.usize(..NODES.len())];
        let ahead = Duration::from_secs(rng.u64(0..=40));
        let length = Duration::from_secs(rng.u64(15..=45));
        let start = Instant::now() + ahead;
        let lab = Lab {
            id: id.clone(),
            nodes,
            start,
            end: start + length,
            placed: None,
            placed_at: None,
        };
        world.platform.add_instance(json!({
            "id": id, "definition_id": definition_id(nodes), "state": "SCHEDULED", "worker_id": null,
            "timeslot_start": rfc3339(ahead), "timeslot_end": rfc3339(ahead + length)
        }));
        self.labs.insert(id.clone(), lab);
        self.booked += 1;
        announce(world, &id).await;
    }

    /// Places each lab whose timeslot started on the first worker accepting assignments with
    /// room, as the platform's records show them.
    fn place(&mut self, world: &World) {
        let records: Vec<Value> = world.platform.state().workers.values().cloned().collect();
        let now = Instant::now();
        let waiting: Vec<String> = self
            .labs
            .values()
            .filter(|l| l.placed.is_none() && l.start <= now)
            .map(|l| l.id.clone())
            .collect();
        for id in waiting {
            let nodes = self.labs[&id].nodes;
            let Some((uid, instance)) = records.iter().find_map(|r| {
                let accepting = r["accepting_assignments"] == true && r["phase"] == "Running";
                let uid = r["id"].as_str()?;
                let instance = r["instance_id"].as_str()?;
                (accepting && self.nodes_on(uid) + nodes <= MAX_NODES)
                    .then(|| (uid.to_owned(), instance.to_owned()))
            }) else {
                continue;
            };
            let lab = self.labs.get_mut(&id).expect("lab");
            lab.placed = Some((uid.clone(), instance.clone()));
            lab.placed_at = Some(now);
            self.waits.push(now.saturating_duration_since(lab.start));
            self.placed += 1;
            world.platform.state().instances.retain(|i| i["id"] != id);
            self.show(world, &uid, &instance);
        }
    }

    /// Ends the labs `over` picks; returns how many.
    pub fn end(&mut self, world: &World, over: impl Fn(&Lab) -> bool) -> usize {
        let done: Vec<Lab> = self.labs.values().filter(|l| over(l)).cloned().collect();
        for lab in &done {
            self.labs.remove(&lab.id);
            match &lab.placed {
                Some((uid, instance)) => self.show(world, uid, instance),
                None => {
                    // Cut before its start (the run ended) is not a lab the fleet failed.
                    if lab.start <= Instant::now() {
                        self.unserved += 1;
                    }
                    world
                        .platform
                        .state()
                        .instances
                        .retain(|i| i["id"] != lab.id);
                }
            }
        }
        done.len()
    }

    /// Labs running on the worker `uid` now.
    pub fn on(&self, uid: &str) -> Vec<&Lab> {
        self.labs
            .values()
            .filter(|l| l.placed.as_ref().is_some_and(|(u, _)| u == uid))
            .collect()
    }

    fn nodes_on(&self, uid: &str) -> u32 {
        self.on(uid).iter().map(|l| l.nodes).sum()
    }

    /// Shows the worker's labs in its capacity record and on its CML.
    fn show(&self, world: &World, uid: &str, instance: &str) {
        let labs = self.on(uid);
        let nodes: u32 = labs.iter().map(|l| l.nodes).sum();
        let count = u32::try_from(labs.len()).unwrap_or(u32::MAX);
        world.platform.set_capacity(
            uid,
            json!({"worker_id": uid,
                   "allocated": {"cpu_cores": nodes * 2, "memory_gb": nodes * 8, "storage_gb": 20 * count, "nodes": nodes},
                   "running_instances": count, "scheduled_instances": 0, "next_timeslot_start": null}),
        );
        if let Some(server) = world.cml.server(instance) {
            server.set_usage(count, nodes);
        }
    }
}

/// Tells the controller through etcd that demand changed; the demand resync covers a put
/// lost while etcd is down.
async fn announce(world: &World, id: &str) {
    let connect = etcd_client::Client::connect([world.etcd.endpoint()], None);
    if let Ok(Ok(mut kv)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
        let put = kv.put(format!("/ccm/instances/{id}"), "{}", None);
        let _ = tokio::time::timeout(Duration::from_secs(1), put).await;
    }
}

fn rfc3339(ahead: Duration) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::try_from(ahead).unwrap_or_default();
    at.round(jiff::Unit::Second).unwrap_or(at).to_string()
}
