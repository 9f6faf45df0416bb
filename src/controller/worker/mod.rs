//! The Worker reconciler: observe -> plan (pure, `lifecycle::worker`) -> act -> status.
//!
//! The finalizer is managed here rather than with `kube::runtime::finalizer` because cleanup
//! (drain, then terminate, then wait for EC2 to confirm) spans many reconciles, each of which
//! must report progress in status.

mod act;
mod observe;
mod status;

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Context,
    error::{Error, Result},
    status::apply_status,
};
use crate::{
    crd::{Worker, conditions},
    lifecycle::worker::{Recheck, Step, plan},
};

pub const FINALIZER: &str = "ccm.dev/terminate-instance";

pub async fn reconcile(worker: Arc<Worker>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = worker
        .namespace()
        .ok_or_else(|| Error::Invalid("a Worker must be namespaced".into()))?;
    let api: Api<Worker> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = worker.metadata.deletion_timestamp.is_some();
    let has_finalizer = worker.finalizers().iter().any(|f| f == FINALIZER);
    if !deleting && !has_finalizer {
        add_finalizer(&api, &worker).await?;
        return Ok(Action::await_change());
    }
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }

    let observed = match observe::observe(&worker, &ctx).await {
        Ok(o) => o,
        Err(e) => {
            record_error(&api, &worker, &ctx, &e).await;
            return Err(e);
        }
    };
    let plan = plan(&observed.facts);
    let acted = act::act(&api, &worker, &ctx, &plan, &observed).await;
    let next = status::next(&worker, &observed, &plan, &acted);
    if worker.status.as_ref() != Some(&next) {
        apply_status(&api, worker.as_ref(), &next).await?;
    }
    if let Some((reason, message)) = &plan.event {
        info!(worker = %status::name(&worker), reason = reason.as_str(), %message, "transition");
        ctx.event(
            worker.as_ref(),
            reason.is_warning(),
            reason.as_str(),
            "Reconcile",
            message.clone(),
        )
        .await;
    }
    // A CML failure shows in the Ready condition; an Event marks each new kind of failure.
    if let Some((_, Err(e))) = &observed.cml {
        let before = worker
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, "Ready"))
            .map(|c| c.reason.clone());
        if before.as_deref() != Some(e.kind.as_str()) {
            ctx.event(
                worker.as_ref(),
                true,
                e.kind.as_str(),
                "ProbeCml",
                e.message.clone(),
            )
            .await;
        }
    }
    for (warning, reason, message) in &acted.events {
        ctx.event(
            worker.as_ref(),
            *warning,
            reason,
            "Reconcile",
            message.clone(),
        )
        .await;
    }
    if let Some(e) = acted.error {
        if acted.events.is_empty() {
            ctx.event(
                worker.as_ref(),
                true,
                e.category(),
                "Reconcile",
                e.to_string(),
            )
            .await;
        }
        return Err(e);
    }
    if plan.step == Step::Release {
        remove_finalizer(&api, &worker).await?;
        return Ok(Action::await_change());
    }
    ctx.reset_backoff(&worker.uid().unwrap_or_default());
    Ok(Action::requeue(match plan.recheck {
        Recheck::Soon => ctx.settings.poll_interval,
        Recheck::Steady => ctx.settings.resync_interval,
    }))
}

/// Shows an error that stopped the reconcile early in the Ready condition and as an Event.
async fn record_error(api: &Api<Worker>, worker: &Worker, ctx: &Context, error: &Error) {
    let mut status = worker.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    conditions::set(
        &mut status.conditions,
        "Ready",
        false,
        error.category(),
        error.to_string(),
        worker.metadata.generation,
        now,
    );
    if let Err(e) = apply_status(api, worker, &status).await {
        warn!(worker = %status::name(worker), error = %e, "could not record an error in status");
    }
    ctx.event(
        worker,
        true,
        error.category(),
        "Reconcile",
        error.to_string(),
    )
    .await;
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
