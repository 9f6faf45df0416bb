//! Sync: push the worker's record to the platform's remotes and say in `Synced` which hold it.

use std::time::Duration;

use super::observe::Observed;
use crate::{
    controller::Context,
    crd::{Worker, WorkerStatus, conditions},
    sync::{self, record},
};

/// Pushes the record `next` describes; sets `Synced` in `next` and returns how soon to retry a
/// remote that does not hold it yet. Without remotes it does nothing; without the template (the
/// record needs its capacity and license) the remotes keep the last record.
pub async fn push(
    worker: &Worker,
    observed: &Observed,
    next: &mut WorkerStatus,
    ctx: &Context,
) -> Option<Duration> {
    if ctx.remotes.is_empty() {
        return None;
    }
    let template = observed.template.as_ref()?;
    let record = record::derive(worker, template, next)?;
    let states = ctx.remotes.push(&record).await;
    if let Some((synced, reason, message)) = sync::condition(&states) {
        conditions::set(
            &mut next.conditions,
            "Synced",
            synced,
            &reason,
            message,
            worker.metadata.generation,
            observed.facts.now,
        );
    }
    sync::retry_in(&states)
}
