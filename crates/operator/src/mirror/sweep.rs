//! The record sweep: records in a remote whose Worker no longer exists are removed, so a worker
//! deleted while a remote was down leaves nothing behind once the remote is back.

use std::collections::HashSet;

use tracing::{debug, info, warn};

use super::{RemoteName, Remotes};
use crate::remote::RemoteError;

/// What one sweep did.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    pub removed: Vec<(RemoteName, String)>,
    pub failed: Vec<(RemoteName, RemoteError)>,
}

/// Sweeps each remote once. `known` is read after each listing, so a record pushed for a Worker
/// just created (which is in the cache before its first push) is never taken for an orphan.
/// Scoped to `namespace`, only records of that namespace are judged.
pub async fn sweep_once(
    remotes: &Remotes,
    namespace: Option<&str>,
    known: impl Fn() -> HashSet<String>,
) -> Swept {
    let mut swept = Swept::default();
    if let Some(cp) = remotes.control_plane() {
        match remotes
            .bounded(RemoteName::ControlPlane, cp.workers())
            .await
        {
            Ok(records) => {
                let known = known();
                let stale: Vec<String> = records
                    .into_iter()
                    .filter(|r| !known.contains(&r.id))
                    .filter(|r| namespace.is_none_or(|ns| ns == r.namespace))
                    .map(|r| r.id)
                    .collect();
                remove(remotes, RemoteName::ControlPlane, stale, &mut swept).await;
            }
            Err(e) => swept.failed.push((RemoteName::ControlPlane, e)),
        }
    }
    if let Some(etcd) = remotes.etcd() {
        match remotes.bounded(RemoteName::Etcd, etcd.worker_ids()).await {
            Ok(ids) => {
                let known = known();
                let mut stale = Vec::new();
                for id in ids.into_iter().filter(|id| !known.contains(id)) {
                    if let Some(ns) = namespace {
                        // Only the record says whose it is; an unreadable one is left alone.
                        match etcd.worker(&id).await {
                            Ok(Some(r)) if r.namespace == ns => {}
                            _ => continue,
                        }
                    }
                    stale.push(id);
                }
                remove(remotes, RemoteName::Etcd, stale, &mut swept).await;
            }
            Err(e) => swept.failed.push((RemoteName::Etcd, e)),
        }
    }
    for (remote, e) in &swept.failed {
        warn!(remote = remote.as_str(), error = %e, "record sweep could not finish");
    }
    debug!(removed = swept.removed.len(), "record sweep");
    swept
}

async fn remove(remotes: &Remotes, name: RemoteName, ids: Vec<String>, swept: &mut Swept) {
    for id in ids {
        match remotes.delete_from(name, &id).await {
            Ok(()) => {
                info!(remote = name.as_str(), worker_id = %id, "removed the record of a Worker that is gone");
                swept.removed.push((name, id));
            }
            Err(e) => {
                swept.failed.push((name, e));
                // The remote is failing: the next sweep tries again.
                return;
            }
        }
    }
}
