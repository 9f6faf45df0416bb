//! Act: carry out the plan's one cloud step. A launch first takes its turn at the launch rate
//! limit (waiting for it outside the reconcile); its idempotency token is a function of the
//! worker's UID and attempt, so a restart retries the same token and adopts by tag.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tracing::{debug, info};

use super::observe::Observed;
use crate::{
    controller::{error::Error, fleet::provider_key, worker::WorkerContext},
    controller::{events::EventSpec, reasons},
    crd::{
        LaunchStatus, Worker, WorkerPhase,
        conditions::{self, ConditionType},
    },
    phase_machine::{Plan, Step},
    provider::{
        CloudProvider, ErrorKind, ImageQuery, LaunchRequest, Launched, Provider, ProviderError,
        WorkerIdentity, client_token, launch_spec, tag,
    },
};

/// What acting changed.
#[derive(Default)]
pub struct Acted {
    pub launched: Option<Launched>,
    pub launch: Option<LaunchStatus>,
    pub phase: Option<WorkerPhase>,
    /// Events worth recording beyond the plan's own.
    pub events: Vec<EventSpec>,
    pub error: Option<Error>,
    /// The launch waits for its turn at the launch rate limit, this long: nothing was done.
    pub queued: Option<std::time::Duration>,
    /// The licensing call made, if any.
    pub license: Option<super::license::LicenseCall>,
    /// The launch waits for room under `--max-instances`: why.
    pub capped: Option<String>,
}

impl Acted {
    fn failed(error: Error) -> Acted {
        Acted {
            error: Some(error),
            ..Acted::default()
        }
    }
}

pub async fn act(worker: &Worker, ctx: &WorkerContext, plan: &Plan, observed: &Observed) -> Acted {
    let Some((kind, region, provider)) = &observed.provider else {
        return Acted::default();
    };
    let instance_id = worker
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.clone());
    let id = match (plan.step, &instance_id) {
        (Step::Launch { attempt }, _) => return launch(worker, ctx, observed, attempt).await,
        (Step::Start | Step::Stop | Step::Terminate, Some(id)) => id,
        _ => return Acted::default(),
    };
    if let Err(e) = ensure_owned(worker, ctx, provider.as_ref(), id).await {
        return Acted::failed(e);
    }
    let result = match plan.step {
        Step::Start => provider.start(id).await,
        Step::Stop => provider.stop(id).await,
        _ => provider.terminate(id).await,
    };
    let key = provider_key(*kind, region.as_deref(), ctx.providers.default_region());
    ctx.fleet.touched(&key, id).await;
    match result {
        // Already gone is what stop or terminate wanted; the next observation will say so.
        Ok(())
        | Err(ProviderError {
            kind: ErrorKind::NotFound,
            ..
        }) => Acted::default(),
        Err(e) => Acted::failed(e.into()),
    }
}

/// Before a start, stop or terminate: the instance must carry this cluster's tag and this
/// Worker's UID, as the cloud says now. A status that names someone else's instance (edited by
/// hand, copied, restored from a backup) never makes the controller touch it.
async fn ensure_owned(
    worker: &Worker,
    ctx: &WorkerContext,
    provider: &Provider,
    id: &str,
) -> Result<(), Error> {
    let found = provider
        .describe(&[id.to_owned()])
        .await
        .map_err(Error::from)?;
    let Some(instance) = found.into_iter().find(|i| i.id == id) else {
        // Gone: nothing to act on, and the next observation says so.
        return Ok(());
    };
    let uid = worker.uid().unwrap_or_default();
    let cluster = instance.tags.get(tag::CLUSTER).map(String::as_str);
    let owner = instance.tags.get(tag::WORKER_UID).map(String::as_str);
    if cluster == Some(ctx.settings.cluster_id.as_str()) && owner == Some(uid.as_str()) {
        return Ok(());
    }
    Err(Error::NotOwned(format!(
        "instance {id} is not this Worker's: its tags say cluster {} and worker {} (this is \
         cluster {} and Worker UID {uid}); the controller does not start, stop or terminate it",
        cluster.unwrap_or("(none)"),
        owner.unwrap_or("(none)"),
        ctx.settings.cluster_id,
    )))
}

/// A launch beyond `--max-instances` waits, saying so (`Some`: what to report instead of
/// launching); nothing is decided on a partial view.
fn over_instance_cap(worker: &Worker, ctx: &WorkerContext, uid: &str) -> Option<Acted> {
    let Some(store) = ctx.worker_cache() else {
        return Some(Acted {
            capped: Some("waiting for the Worker cache before counting instances".into()),
            ..Acted::default()
        });
    };
    let workers = store.state();
    let refs: Vec<&Worker> = workers.iter().map(|w| w.as_ref()).collect();
    ctx.instance_cap.permit(uid, &refs).err().map(|count| {
        let message = format!(
            "{count} Workers hold or are launching instances: the cap --max-instances {} is \
             reached; this launch waits for one to go",
            ctx.instance_cap.max()
        );
        // One Event when the wait begins, not one per look.
        let said = worker
            .status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, ConditionType::Launched))
            .is_some_and(|c| c.reason == reasons::INSTANCE_CAP_REACHED);
        let events = if said {
            Vec::new()
        } else {
            vec![EventSpec::warning(
                reasons::INSTANCE_CAP_REACHED,
                "Reconcile",
                message.clone(),
            )]
        };
        Acted {
            capped: Some(message),
            events,
            ..Acted::default()
        }
    })
}

async fn launch(worker: &Worker, ctx: &WorkerContext, observed: &Observed, attempt: u32) -> Acted {
    let (Some(template), Some((_, _, provider))) = (&observed.template, &observed.provider) else {
        return Acted::default();
    };
    let Some(image_id) = template
        .status
        .as_ref()
        .and_then(|s| s.resolved_image_id.clone())
    else {
        return Acted::default();
    };
    let uid = worker.uid().unwrap_or_default();
    if let Some(capped) = over_instance_cap(worker, ctx, &uid) {
        return capped;
    }
    let token = client_token(&uid, attempt);
    if let Some(wait) = provider.launch_turn(&token) {
        debug!(worker = %worker.name_any(), ?wait, "launch waits for its turn at the rate limit");
        return Acted {
            queued: Some(wait),
            ..Acted::default()
        };
    }
    let status = worker.status.clone().unwrap_or_default();
    let mut launch = status.launch.clone().unwrap_or_default();
    // The token is a function of the UID and the attempt, and the attempt one of what status
    // recorded, so a restart before the launch is written retries with the same token (and
    // adopts by tag first): it is written with the launch's outcome, not before, saving a write.
    launch.client_token = Some(token);
    launch.attempts = attempt;
    launch.started_at.get_or_insert(Time(observed.facts.now));

    // The image's root device name shapes the block device mapping.
    let image = match provider.resolve_image(&ImageQuery::Id(image_id)).await {
        Ok(image) => image,
        Err(e) => return launch_failed(launch, e),
    };
    let request = LaunchRequest {
        worker: WorkerIdentity {
            cluster_id: ctx.settings.cluster_id.clone(),
            namespace: worker.namespace().unwrap_or_default(),
            name: worker.name_any(),
            uid,
            template: template.name_any(),
        },
        spec: launch_spec(&template.spec, &image),
        attempt,
    };
    match provider.launch(&request).await {
        Ok(launched) => {
            info!(worker = %worker.name_any(), instance = %launched.instance.id, adopted = launched.adopted, "instance launched");
            launch.last_error = None;
            let (reason, verb) = if launched.adopted {
                (reasons::ADOPTED, "adopted")
            } else {
                (reasons::LAUNCHED, "launched")
            };
            let i = &launched.instance;
            let message = format!(
                "{verb} instance {} ({}) in {}",
                i.id,
                i.instance_type,
                i.availability_zone.as_deref().unwrap_or("an unknown zone")
            );
            Acted {
                launched: Some(launched),
                launch: Some(launch),
                phase: Some(WorkerPhase::Provisioning),
                events: vec![EventSpec::normal(reason, "Reconcile", message)],
                ..Acted::default()
            }
        }
        Err(e) => launch_failed(launch, e),
    }
}

fn launch_failed(mut launch: LaunchStatus, e: ProviderError) -> Acted {
    launch.last_error = Some(e.to_string());
    // A transient failure may hide a launch that happened: keep the token so the retry reuses it.
    if e.kind != ErrorKind::Transient {
        launch.client_token = None;
    }
    Acted {
        launch: Some(launch),
        events: vec![EventSpec::warning(
            reasons::LAUNCH_FAILED,
            "Reconcile",
            e.to_string(),
        )],
        ..Acted::failed(e.into())
    }
}
