//! Runs the record sweep (`mirror::sweep`) every `record_sweep_interval` once the Worker cache is
//! synced, when a remote is configured.

use std::{collections::HashSet, sync::Arc};

use kube::{ResourceExt, runtime::reflector::Store};

use super::{Context, periodic};
use crate::{crd::Worker, mirror::sweep};

pub async fn run(ctx: Arc<Context>, workers: Store<Worker>) {
    if ctx.remotes.is_empty() {
        return;
    }
    let known = || -> HashSet<String> { workers.state().iter().filter_map(|w| w.uid()).collect() };
    let namespace = ctx.settings.namespace.as_deref();
    periodic::when_synced(
        "record sweep",
        ctx.settings.record_sweep_interval,
        &workers,
        || sweep::sweep_once(&ctx.remotes, namespace, known),
    )
    .await;
}
