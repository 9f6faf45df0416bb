//! The WorkerTemplate reconciler: the template is Ready when its image resolves; the resolved
//! image and the launch spec hash go to status for the workers; then the autoscaler runs.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::{Api, ResourceExt, runtime::controller::Action};

use super::{
    autoscaler::TemplateContext,
    error::{Error, Result},
    status::{apply_status, as_stored},
};
use crate::{
    controller::{events::EventSpec, reasons},
    crd::{
        WorkerTemplate,
        conditions::{self, ConditionType, NewCondition, Stamp},
    },
    provider::{self, CloudProvider},
};

pub async fn reconcile(template: Arc<WorkerTemplate>, ctx: Arc<TemplateContext>) -> Result<Action> {
    let namespace = template
        .namespace()
        .ok_or_else(|| Error::Invalid("a WorkerTemplate must be namespaced".into()))?;
    let api: Api<WorkerTemplate> = Api::namespaced(ctx.client.clone(), &namespace);
    let spec = &template.spec;
    let mut status = template.status.clone().unwrap_or_default();
    let generation = template.metadata.generation;
    let now = Timestamp::now();
    // The API server's validation guarantees one of id / namePattern.
    let query = provider::image_query(spec)
        .ok_or_else(|| Error::Invalid("image has neither id nor namePattern".into()))?;
    let outcome = match ctx
        .providers
        .get(spec.provider, spec.region.as_deref())
        .await
    {
        Ok(provider) => provider.resolve_image(&query).await.map_err(Error::from),
        Err(unavailable) => Err(Error::from(unavailable)),
    };
    let was_ready = conditions::is_true(&status.conditions, ConditionType::Ready);
    let stamp = Stamp { generation, now };
    let result = match outcome {
        Ok(image) => {
            status.resolved_image_id = Some(image.id.clone());
            status.launch_spec_hash = Some(provider::launch_spec(spec, &image).hash());
            let name = image.name.unwrap_or_else(|| image.id.clone());
            let message = format!("image {} ({name})", image.id);
            let ready = NewCondition::new(
                ConditionType::Ready,
                true,
                reasons::IMAGE_RESOLVED,
                message.clone(),
            );
            conditions::set(&mut status.conditions, ready, stamp);
            if !was_ready {
                let event = EventSpec::normal(reasons::IMAGE_RESOLVED, "ResolveImage", message);
                ctx.event(template.as_ref(), event).await;
            }
            // Autoscale once the template is Ready; until the Worker cache is, look again soon.
            match super::autoscaler::reconcile(&template, &ctx, &mut status).await {
                Ok(true) => Ok(Action::requeue(ctx.settings.resync_interval)),
                Ok(false) => Ok(Action::requeue(ctx.settings.poll_interval)),
                Err(e) => Err(e),
            }
        }
        Err(error) => {
            let not_ready = NewCondition::new(
                ConditionType::Ready,
                false,
                error.category(),
                error.to_string(),
            );
            conditions::set(&mut status.conditions, not_ready, stamp);
            let event = EventSpec::warning(error.category(), "ResolveImage", error.to_string());
            ctx.event(template.as_ref(), event).await;
            Err(error)
        }
    };
    status.observed_generation = generation;
    let status = as_stored(status);
    if template.status.as_ref() != Some(&status) {
        apply_status(&api, template.as_ref(), &status).await?;
    }
    result
}
