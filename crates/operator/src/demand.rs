//! The demand feed for the autoscaler: lab instances the platform has not placed yet (PENDING or
//! SCHEDULED with no worker), each joined with its definition, as one shared snapshot. It is
//! refreshed on every change under etcd's `/ccm/instances/` (debounced, so a burst of writes
//! costs one refresh) and on the resync interval as a backstop.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{
    control_plane::{ControlPlaneClient, Definition, InstanceState, LabInstance},
    remote::{RemoteError, RemoteErrorKind},
};

/// One unplaced lab instance and what it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub instance_id: String,
    pub state: InstanceState,
    pub timeslot_start: Timestamp,
    pub timeslot_end: Timestamp,
    pub definition: Arc<Definition>,
}

/// What the platform wants placed, as of one refresh.
#[derive(Clone, Debug, PartialEq)]
pub enum DemandSnapshot {
    Known {
        demand: Vec<Demand>,
        /// Instances left out, with why (a definition that cannot be read, a bad timeslot).
        skipped: Vec<(String, String)>,
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
}

/// Reads the current demand once.
pub async fn read(cp: &ControlPlaneClient, deadline: Duration) -> DemandSnapshot {
    let at = Timestamp::now();
    let listed = tokio::time::timeout(deadline, async {
        let (pending, scheduled) = tokio::join!(
            cp.instances(InstanceState::Pending),
            cp.instances(InstanceState::Scheduled)
        );
        Ok::<_, RemoteError>([pending?, scheduled?].concat())
    })
    .await
    .unwrap_or_else(|_| {
        Err(RemoteError::new(
            RemoteErrorKind::Timeout,
            "listing lab instances took too long",
        ))
    });
    let instances = match listed {
        Ok(i) => i,
        Err(error) => return DemandSnapshot::Unknown { error, at },
    };
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
    DemandSnapshot::Known {
        demand,
        skipped,
        at,
    }
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

/// Keeps `tx` current until every receiver is gone: a refresh at start, after each change seen
/// on `changes` (waiting `debounce` for the burst to settle), and every `resync`.
pub async fn run(
    cp: Arc<ControlPlaneClient>,
    mut changes: Option<watch::Receiver<u64>>,
    resync: Duration,
    debounce: Duration,
    deadline: Duration,
    tx: watch::Sender<Option<Arc<DemandSnapshot>>>,
) {
    loop {
        let snapshot = read(&cp, deadline).await;
        match &snapshot {
            DemandSnapshot::Known {
                demand, skipped, ..
            } => {
                debug!(
                    unplaced = demand.len(),
                    skipped = skipped.len(),
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
            _ = tokio::time::sleep(resync) => {}
            _ = tx.closed() => return,
        }
    }
}
