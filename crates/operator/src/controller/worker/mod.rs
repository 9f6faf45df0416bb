//! The Worker reconciler: observe -> plan (pure, `phase_machine`) -> act -> status.
//!
//! The finalizer is managed here rather than with `kube::runtime::finalizer` because cleanup
//! (drain, then terminate, then wait for EC2 to confirm) spans many reconciles, each of which
//! must report progress in status.

mod act;
mod context;
mod events;
#[cfg(test)]
mod fixtures;
mod license;
mod observe;
mod remotes;
mod status;
mod unseen;

pub use context::WorkerContext;
pub use unseen::UnseenLaunches;

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::warn;

use act::{Acted, Cloud, Turn};

use super::{
    error::{Error, Result},
    status::{apply_status, as_stored},
};
use crate::{
    controller::events::EventSpec,
    crd::{
        Worker, WorkerStatus,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    phase_machine::{Plan, Recheck, Step, plan},
};

pub const FINALIZER: &str = "ccm.dev/terminate-instance";

/// What in a Worker is worth a reconcile when it changes: its spec (generation; deletion bumps
/// it too), annotations such as skip-drain, finalizers, and the deletion mark. Status is not:
/// the controller writes it, and motion is followed by requeues.
pub fn wakes_reconcile(worker: &Worker) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    worker.metadata.generation.hash(&mut h);
    worker.annotations().hash(&mut h);
    worker.finalizers().hash(&mut h);
    worker
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut h);
    Some(h.finish())
}

pub async fn reconcile(worker: Arc<Worker>, ctx: Arc<WorkerContext>) -> Result<Action> {
    let namespace = worker
        .namespace()
        .ok_or_else(|| Error::Invalid("a Worker must be namespaced".into()))?;
    // Built only for a write: most reconciles make none.
    let api = || Api::<Worker>::namespaced(ctx.client.clone(), &namespace);
    if let Some(action) = finalizer_gate(&worker, api).await? {
        return Ok(action);
    }
    let uid = worker.uid().unwrap_or_default();
    if launch_unseen(&worker, &ctx, &uid) {
        // Our own launch is not in the cache yet: acting on it would launch again.
        return Ok(Action::requeue(unseen::RECHECK));
    }

    let observed = observe_or_record(api, &worker, &ctx).await?;
    let plan = plan(&observed.facts);
    let cloud = match act::act(&worker, &ctx, &plan, &observed).await {
        Turn::Taken(cloud) => cloud,
        // Nothing changed: no write, no Event; back when the launch's turn is due.
        Turn::Queued(wait) => return Ok(Action::requeue(wait)),
    };
    let license = license::call(&worker, &ctx, &plan, &observed).await;
    let acted = Acted { cloud, license };
    let mut next = status::next(&worker, &observed, &plan, &acted);
    let sync_retry = sync(&worker, &observed, &plan, &mut next, &ctx).await;
    let next = write_status(api, &worker, &ctx, &uid, next, &acted).await?;
    account_for_seat(&worker, &ctx, &uid, &next);
    let events = events::decide(&worker, &observed, &plan, &acted, &next);
    announce(&ctx, &worker, &plan, events).await;
    if let Some(e) = acted.cloud.into_error() {
        return Err(e);
    }
    if plan.step == Step::Release {
        release(api, &worker, &ctx, &uid).await?;
        return Ok(Action::await_change());
    }
    ctx.reset_backoff(&uid);
    Ok(requeue(&ctx, plan.recheck, sync_retry))
}

/// Adds the finalizer to a live Worker, and lets a deleted one without it go: either way, the
/// action to return now. `None` once the finalizer is in place.
async fn finalizer_gate(worker: &Worker, api: impl Fn() -> Api<Worker>) -> Result<Option<Action>> {
    let deleting = worker.metadata.deletion_timestamp.is_some();
    let has_finalizer = worker.finalizers().iter().any(|f| f == FINALIZER);
    if !deleting && !has_finalizer {
        add_finalizer(&api(), worker).await?;
        return Ok(Some(Action::await_change()));
    }
    if deleting && !has_finalizer {
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

fn launch_unseen(worker: &Worker, ctx: &WorkerContext, uid: &str) -> bool {
    let cached_instance = worker
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.as_str());
    ctx.unseen_launches.behind(uid, cached_instance)
}

async fn observe_or_record(
    api: impl Fn() -> Api<Worker>,
    worker: &Worker,
    ctx: &WorkerContext,
) -> Result<observe::Observed> {
    let observed = observe::observe(worker, ctx).await;
    if let Err(e) = &observed {
        record_error(&api(), worker, ctx, e).await;
    }
    observed
}

/// Pushes the worker's record to the remotes, setting `Synced` in `next`: how soon to retry one
/// that does not hold it. A released worker's records go with it instead.
async fn sync(
    worker: &Worker,
    observed: &observe::Observed,
    plan: &Plan,
    next: &mut WorkerStatus,
    ctx: &WorkerContext,
) -> Option<Duration> {
    if plan.step == Step::Release {
        return None;
    }
    remotes::push(worker, observed, next, ctx).await
}

/// Counts the plan's transition and publishes the reconcile's Events.
async fn announce(ctx: &WorkerContext, worker: &Worker, plan: &Plan, events: Vec<EventSpec>) {
    if let Some((reason, _)) = &plan.event {
        ctx.metrics.transition(reason.as_str());
    }
    events::publish(ctx, worker, events).await;
}

/// Writes `next` if it differs from the stored status; returns it as stored.
async fn write_status(
    api: impl Fn() -> Api<Worker>,
    worker: &Worker,
    ctx: &WorkerContext,
    uid: &str,
    next: WorkerStatus,
    acted: &Acted,
) -> Result<WorkerStatus> {
    // Most reconciles change nothing: only a status that differs pays for the round trip.
    let next = if worker.status.as_ref() == Some(&next) {
        next
    } else {
        as_stored(next)
    };
    if worker.status.as_ref() != Some(&next) {
        apply_status(&api(), worker, &next).await?;
        if let Cloud::Launched { launched, .. } = &acted.cloud {
            ctx.unseen_launches.wrote(uid, &launched.instance.id);
        }
    }
    Ok(next)
}

/// The instance is gone: forget the worker everywhere, then let it go.
async fn release(
    api: impl Fn() -> Api<Worker>,
    worker: &Worker,
    ctx: &WorkerContext,
    uid: &str,
) -> Result<()> {
    forget_records(worker, ctx).await;
    ctx.unseen_launches.forget(uid);
    ctx.seats.release(uid);
    ctx.instance_cap.release(uid);
    remove_finalizer(&api(), worker).await?;
    Ok(())
}

/// A seat just reported as maybe held goes on the platform's audit trail; a seat given back
/// returns its grant to the budget.
fn account_for_seat(worker: &Worker, ctx: &WorkerContext, uid: &str, next: &WorkerStatus) {
    let old = worker.status.as_ref().and_then(|s| s.license.as_ref());
    let Some(license) = next.license.as_ref() else {
        return;
    };
    if license::newly_may_be_held(old, Some(license)) {
        let message = conditions::find(&next.conditions, ConditionType::Licensed)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        ctx.outbox
            .push(license::audit(worker, license, &message, now));
    }
    if license.seat == crate::crd::SeatState::Free {
        ctx.seats.release(uid);
    }
}

/// Back at the plan's recheck, or sooner to retry a remote's sync.
fn requeue(ctx: &WorkerContext, recheck: Recheck, sync_retry: Option<Duration>) -> Action {
    let recheck = match recheck {
        Recheck::Soon => ctx.settings.poll_interval,
        // Jittered, so a fleet created at once does not wake in the same second forever.
        Recheck::Steady => ctx
            .settings
            .resync_interval
            .mul_f64(0.9 + 0.2 * fastrand::f64()),
    };
    let retry = sync_retry.map(|d| d.max(Duration::from_millis(100)));
    Action::requeue(retry.map_or(recheck, |r| r.min(recheck)))
}

/// After termination the remotes' records go; a remote that is down does not hold the object:
/// the record sweep removes what is left once it answers.
async fn forget_records(worker: &Worker, ctx: &WorkerContext) {
    let Some(uid) = worker.uid() else { return };
    for (remote, result) in ctx.remotes.remove(&uid).await {
        if let Err(e) = result {
            warn!(worker = %status::name(worker), remote = remote.as_str(), error = %e,
                "could not remove the worker's record; the record sweep will");
        }
    }
}

/// Shows an error that stopped the reconcile early in the Ready condition and as an Event.
async fn record_error(api: &Api<Worker>, worker: &Worker, ctx: &WorkerContext, error: &Error) {
    let mut status = worker.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let not_ready = NewCondition::new(
        ConditionType::Ready,
        false,
        error.category(),
        error.to_string(),
    );
    let stamp = Stamp {
        generation: worker.metadata.generation,
        now,
    };
    conditions::set(&mut status.conditions, not_ready, stamp);
    if let Err(e) = apply_status(api, worker, &status).await {
        warn!(worker = %status::name(worker), error = %e, "could not record an error in status");
    }
    let event = EventSpec::warning(error.category(), "Reconcile", error.to_string());
    ctx.event(worker, event).await;
}

async fn add_finalizer(api: &Api<Worker>, worker: &Worker) -> Result<(), kube::Error> {
    let patch = if worker.metadata.finalizers.is_none() {
        json!([{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
    } else {
        json!([{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}])
    };
    patch_json(api, worker, patch).await
}

async fn remove_finalizer(api: &Api<Worker>, worker: &Worker) -> Result<(), kube::Error> {
    let Some(index) = worker.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    // The test guards against removing another finalizer if the list changed meanwhile.
    let patch =
        json!([{"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]);
    patch_json(api, worker, patch).await
}

async fn patch_json(
    api: &Api<Worker>,
    worker: &Worker,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &worker.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::{WorkerPhase, WorkerStatus};

    fn worker() -> Worker {
        let mut w = fixtures::worker(WorkerStatus::default());
        w.metadata.finalizers = Some(vec![FINALIZER.into()]);
        w
    }

    #[test]
    fn status_writes_do_not_wake_a_worker_but_its_spec_annotations_and_deletion_do() {
        let before = worker();
        let base = wakes_reconcile(&before);

        let mut status_only = before.clone();
        status_only.status = Some(WorkerStatus {
            phase: Some(WorkerPhase::Running),
            ..WorkerStatus::default()
        });
        status_only.metadata.resource_version = Some("42".into());
        assert_eq!(wakes_reconcile(&status_only), base);

        let mut spec = before.clone();
        spec.metadata.generation = Some(2);
        let mut annotated = before.clone();
        annotated
            .annotations_mut()
            .insert(crate::crd::SKIP_DRAIN_ANNOTATION.into(), "true".into());
        let mut unfinalized = before.clone();
        unfinalized.metadata.finalizers = None;
        let mut deleted = before.clone();
        deleted.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"),
        ));
        for changed in [spec, annotated, unfinalized, deleted] {
            assert_ne!(wakes_reconcile(&changed), base, "{:?}", changed.metadata);
        }
    }
}
