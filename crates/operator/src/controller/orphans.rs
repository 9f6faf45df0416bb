//! The orphan sweep: instances tagged for this cluster whose Worker is gone, older than a grace
//! period, are terminated. A crash between launch and status, or a Worker removed by force,
//! must never leak an instance.

use std::{collections::HashSet, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use kube::{ResourceExt, runtime::reflector::Store};
use tracing::{debug, info, warn};

use super::Context;
use crate::{
    crd::Worker,
    provider::{InUse, tag},
};

/// Terminates orphans once; returns the ids it terminated.
pub async fn sweep_once(ctx: &Context, workers: &Store<Worker>) -> Vec<String> {
    let known: HashSet<String> = workers.state().iter().filter_map(|w| w.uid()).collect();
    let now = Timestamp::now();
    let mut terminated = Vec::new();
    for InUse { name, provider } in ctx.providers.in_use() {
        let instances = match provider.list_managed(&ctx.settings.cluster_id).await {
            Ok(list) => list,
            Err(e) => {
                warn!(provider = %name, error = %e, "orphan sweep could not list instances");
                continue;
            }
        };
        debug!(provider = %name, instances = instances.len(), workers = known.len(), "orphan sweep");
        for i in instances.into_iter().filter(|i| !i.state.is_gone()) {
            let owner = i.tag(tag::WORKER_UID).unwrap_or_default();
            if known.contains(owner) {
                continue;
            }
            // Scoped to one namespace, only that namespace's instances are ours to judge.
            let namespace = i
                .tag(tag::WORKER)
                .and_then(|w| w.split('/').next())
                .unwrap_or_default();
            if ctx
                .settings
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != namespace)
            {
                continue;
            }
            let age = i
                .launch_time
                .map(|t| now.duration_since(t))
                .and_then(|d| std::time::Duration::try_from(d).ok());
            if age.is_none_or(|a| a < ctx.settings.orphan_grace) {
                continue;
            }
            let worker = i.tag(tag::WORKER).unwrap_or("?");
            match provider.terminate(&i.id).await {
                Ok(()) => {
                    info!(instance = %i.id, %worker, %owner, provider = %name, "terminated orphan instance: its Worker no longer exists");
                    terminated.push(i.id.clone());
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    warn!(instance = %i.id, error = %e, "could not terminate orphan instance")
                }
            }
        }
    }
    terminated
}

/// Sweeps every `orphan_sweep_interval`, once the Worker cache is synced: before that every
/// instance would look orphaned.
pub async fn run(ctx: Arc<Context>, workers: Store<Worker>) {
    let interval = ctx.settings.orphan_sweep_interval;
    super::periodic::when_synced("orphan sweep", interval, &workers, || {
        sweep_once(&ctx, &workers)
    })
    .await;
}
