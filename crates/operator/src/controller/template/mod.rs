//! The WorkerTemplate reconciler, in named steps: resolve the image (`image`), which sets
//! `Ready` and whether workers may be created; run the autoscaler's round whatever the image's
//! state; write status; then tell the image's Event and return its error. A failed image
//! lookup blocks launches only: drains, stops, starts and deletions go on.

mod image;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt, runtime::controller::Action};

use super::{
    autoscaler::{self, TemplateContext},
    error::{Error, Result},
    status::{apply_status, as_stored},
};
use crate::crd::{
    WorkerTemplate, WorkerTemplateStatus,
    conditions::{self, ConditionType},
};

pub async fn reconcile(template: Arc<WorkerTemplate>, ctx: Arc<TemplateContext>) -> Result<Action> {
    let namespace = template
        .namespace()
        .ok_or_else(|| Error::Invalid("a WorkerTemplate must be namespaced".into()))?;
    let prior = template.status.clone().unwrap_or_default();
    let was_ready = conditions::is_true(&prior.conditions, ConditionType::Ready);
    let found = image::resolve(&template, &ctx.providers).await;
    let status = image::status(prior, &template, &found, Timestamp::now());
    let round = autoscaler::reconcile(&template, &ctx, &status, image::creation(&found)).await;
    let synced = round.is_some();
    let (status, round_error) = match round {
        Some(outcome) => (outcome.status, outcome.error),
        None => (status, None),
    };
    write_status(&ctx, &namespace, &template, status).await?;
    if let Some(event) = image::event(was_ready, &found) {
        ctx.event(template.as_ref(), event).await;
    }
    found?;
    if let Some(error) = round_error {
        return Err(error);
    }
    // Until the Worker cache is synced, look again soon.
    Ok(Action::requeue(if synced {
        ctx.settings.resync_interval
    } else {
        ctx.settings.poll_interval
    }))
}

/// Writes `status` (for this generation) when it differs from the stored one.
async fn write_status(
    ctx: &TemplateContext,
    namespace: &str,
    template: &WorkerTemplate,
    status: WorkerTemplateStatus,
) -> Result<()> {
    let status = as_stored(WorkerTemplateStatus {
        observed_generation: template.metadata.generation,
        ..status
    });
    if template.status.as_ref() != Some(&status) {
        let api: Api<WorkerTemplate> = Api::namespaced(ctx.client.clone(), namespace);
        apply_status(&api, template, &status).await?;
    }
    Ok(())
}

/// After a failed round, when to come back: never later than the resync interval, even for an
/// error that waiting alone will not cure (an image that does not resolve), since the round
/// drains, stops and starts workers whatever the image's state.
pub fn error_policy(
    template: Arc<WorkerTemplate>,
    error: &Error,
    ctx: Arc<TemplateContext>,
) -> Action {
    let resync = ctx.settings.resync_interval;
    let retry = super::status::retry_after("template", template.as_ref(), error, &ctx);
    Action::requeue(retry.map_or(resync, |backoff| backoff.min(resync)))
}
