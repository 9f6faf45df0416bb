//! The autoscaler's picture of the platform: lab instances not placed yet (PENDING or SCHEDULED
//! with no worker), each joined with its definition, and what is placed on each running worker
//! (its capacity record), read in one refresh so a round never weighs fresh demand against a
//! stale allocation. It is refreshed on every change under etcd's `/ccm/instances/` (debounced,
//! so a burst of writes costs one refresh), when a round finds a worker missing from it, and on
//! the resync interval as a backstop.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{StreamExt, stream};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use crate::{
    control_plane::{
        ControlPlaneClient, Definition, LabInstance, LabInstanceState, WorkerCapacity,
    },
    remote::{RemoteError, RemoteErrorKind},
};

/// One unplaced lab instance and what it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub instance_id: String,
    pub state: LabInstanceState,
    pub timeslot_start: Timestamp,
    pub timeslot_end: Timestamp,
    pub definition: Arc<Definition>,
}

/// What the platform wants placed, and what it has placed, as of one refresh.
#[derive(Clone, Debug, PartialEq)]
pub enum DemandSnapshot {
    Known {
        demand: Vec<Demand>,
        /// Instances left out, with why (a definition that cannot be read, a bad timeslot).
        skipped: Vec<(String, String)>,
        /// What is placed on each worker asked, by worker id.
        placements: Placements,
        at: Timestamp,
    },
    /// The instances could not be listed: demand is unknown (never "none").
    Unknown { error: RemoteError, at: Timestamp },
}

impl DemandSnapshot {
    pub fn demand(&self) -> Option<&[Demand]> {
        match self {
            DemandSnapshot::Known { demand, .. } => Some(demand),
            DemandSnapshot::Unknown { .. } => None,
        }
    }

    /// What the platform has placed on worker `id` as of this refresh: `None` when it was not
    /// asked (it was not running yet), `Some(None)` when its usage could not be read.
    pub fn placement(&self, id: &str) -> Option<Option<&WorkerCapacity>> {
        match self {
            DemandSnapshot::Known { placements, .. } => placements.get(id).map(|p| p.as_ref().ok()),
            DemandSnapshot::Unknown { .. } => None,
        }
    }
}

/// Each worker asked: its capacity record, or why it is unknown (never zero).
pub type Placements = BTreeMap<String, Result<WorkerCapacity, String>>;

/// The ids of the workers whose placements a refresh reads: those running or draining.
pub type PlacedWorkers = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How many capacity requests a refresh has in flight at once.
const CAPACITY_READS_IN_FLIGHT: usize = 16;

/// How many times a refresh reads the placements again when a lab was placed while they were
/// being read.
const PICTURE_TRIES: usize = 3;

/// Reads demand and placements once, together: the instances are listed before and after the
/// placements are read, and the picture is taken when nothing was placed in between (a lab
/// placed meanwhile would show both unplaced and in its worker's record). After
/// `PICTURE_TRIES` busy reads the listing taken before the placements is kept: a lab placed
/// meanwhile then counts twice (a worker too many, for a while), never not at all.
pub async fn read(
    cp: &ControlPlaneClient,
    workers: &[String],
    deadline: Duration,
) -> DemandSnapshot {
    let at = Timestamp::now();
    let mut listed = match list(cp, deadline).await {
        Ok(listed) => listed,
        Err(error) => return DemandSnapshot::Unknown { error, at },
    };
    let mut placed = placements(cp, workers, deadline).await;
    for _ in 1..PICTURE_TRIES {
        match list(cp, deadline).await {
            Ok(again) if same_placements(&listed, &again) => break,
            Ok(again) => {
                debug!("a lab was placed while the placements were read; reading again");
                listed = again;
                placed = placements(cp, workers, deadline).await;
            }
            Err(_) => break,
        }
    }
    let (demand, skipped) = unplaced(cp, listed, deadline).await;
    DemandSnapshot::Known {
        demand,
        skipped,
        placements: placed,
        at,
    }
}

/// Whether two listings place the same instances on the same workers.
fn same_placements(a: &[LabInstance], b: &[LabInstance]) -> bool {
    let key = |l: &[LabInstance]| {
        let mut k: Vec<(String, Option<String>)> = l
            .iter()
            .map(|i| (i.id.clone(), i.worker_id.clone()))
            .collect();
        k.sort();
        k
    };
    key(a) == key(b)
}

/// The capacity record of each of `workers`, read concurrently within `deadline` each.
async fn placements(cp: &ControlPlaneClient, workers: &[String], deadline: Duration) -> Placements {
    stream::iter(workers.iter().cloned())
        .map(|id| async move {
            let read = tokio::time::timeout(deadline, cp.worker_capacity(&id)).await;
            let placed = match read {
                Ok(Ok(Some(c))) => Ok(c),
                Ok(Ok(None)) => Err("the Control Plane API does not know the worker".to_owned()),
                Ok(Err(e)) => Err(format!("Control Plane API: {e}")),
                Err(_) => Err("its capacity took too long".to_owned()),
            };
            (id, placed)
        })
        .buffer_unordered(CAPACITY_READS_IN_FLIGHT)
        .collect()
        .await
}

/// The instances waiting or scheduled, placed or not.
async fn list(
    cp: &ControlPlaneClient,
    deadline: Duration,
) -> Result<Vec<LabInstance>, RemoteError> {
    tokio::time::timeout(deadline, async {
        let (pending, scheduled) = tokio::join!(
            cp.lab_instances(LabInstanceState::Pending),
            cp.lab_instances(LabInstanceState::Scheduled)
        );
        Ok::<_, RemoteError>([pending?, scheduled?].concat())
    })
    .await
    .unwrap_or_else(|_| {
        Err(RemoteError::new(
            RemoteErrorKind::Timeout,
            "listing lab instances took too long",
        ))
    })
}

/// The unplaced instances joined with their definitions, soonest first, and those left out.
async fn unplaced(
    cp: &ControlPlaneClient,
    instances: Vec<LabInstance>,
    deadline: Duration,
) -> (Vec<Demand>, Vec<(String, String)>) {
    let mut demand = Vec::new();
    let mut skipped = Vec::new();
    for instance in instances.into_iter().filter(|i| i.worker_id.is_none()) {
        match join(cp, &instance, deadline).await {
            Ok(d) => demand.push(d),
            Err(why) => skipped.push((instance.id.clone(), why)),
        }
    }
    demand.sort_by(|a, b| {
        (a.timeslot_start, &a.instance_id).cmp(&(b.timeslot_start, &b.instance_id))
    });
    (demand, skipped)
}

async fn join(
    cp: &ControlPlaneClient,
    instance: &LabInstance,
    deadline: Duration,
) -> Result<Demand, String> {
    let time = |what: &str, t: &str| {
        t.parse::<Timestamp>()
            .map_err(|e| format!("{what} {t:?} is not an RFC 3339 time: {e}"))
    };
    let definition = tokio::time::timeout(deadline, cp.definition(&instance.definition_id))
        .await
        .map_err(|_| format!("definition {} took too long", instance.definition_id))?
        .map_err(|e| format!("definition {}: {e}", instance.definition_id))?;
    Ok(Demand {
        instance_id: instance.id.clone(),
        state: instance.state,
        timeslot_start: time("timeslot_start", &instance.timeslot_start)?,
        timeslot_end: time("timeslot_end", &instance.timeslot_end)?,
        definition,
    })
}

/// When and how the feed refreshes.
pub struct Feed {
    pub cp: Arc<ControlPlaneClient>,
    /// The workers whose placements each refresh reads.
    pub workers: PlacedWorkers,
    /// Changes under `/ccm/instances/`, when etcd is configured.
    pub changes: Option<watch::Receiver<u64>>,
    /// Asked by a round that found a running worker missing from the picture.
    pub refresh: Arc<Notify>,
    pub resync: Duration,
    pub debounce: Duration,
    pub deadline: Duration,
}

/// Keeps `tx` current until every receiver is gone: a refresh at start, after each change seen
/// on `changes` (waiting `debounce` for the burst to settle), when asked, and every `resync`.
pub async fn run(feed: Feed, tx: watch::Sender<Option<Arc<DemandSnapshot>>>) {
    let Feed {
        cp,
        workers,
        mut changes,
        refresh,
        resync,
        debounce,
        deadline,
    } = feed;
    loop {
        let snapshot = read(&cp, &workers(), deadline).await;
        match &snapshot {
            DemandSnapshot::Known {
                demand,
                skipped,
                placements,
                ..
            } => {
                debug!(
                    unplaced = demand.len(),
                    skipped = skipped.len(),
                    workers = placements.len(),
                    "demand refreshed"
                );
                for (id, why) in skipped {
                    warn!(instance = %id, %why, "lab instance left out of demand");
                }
            }
            DemandSnapshot::Unknown { error, .. } => {
                warn!(%error, "demand unknown: cannot list lab instances")
            }
        }
        if tx.send(Some(Arc::new(snapshot))).is_err() {
            return;
        }
        let changed = async {
            match changes.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    // Let a burst of writes settle into one refresh.
                    tokio::time::sleep(debounce).await;
                    rx.borrow_and_update();
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = refresh.notified() => {}
            _ = tokio::time::sleep(resync) => {}
            _ = tx.closed() => return,
        }
    }
}
