//! Act: carry out the plan's one cloud step. A launch first takes its turn at the launch rate
//! limit (waiting for it outside the reconcile); its idempotency token is a function of the
//! worker's UID and attempt, so a restart retries the same token and adopts by tag.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tracing::{debug, info};

use super::{license::LicenseCall, observe::Observed};
use crate::{
    controller::{error::Error, fleet::provider_key, worker::context::WorkerContext},
    crd::{LaunchStatus, Worker, WorkerPhase},
    phase_machine::{Plan, Step},
    provider::{
        CloudProvider, ErrorKind, ImageQuery, LaunchRequest, Launched, Provider, ProviderError,
        WorkerIdentity, client_token, launch_spec, tag,
    },
};

/// What this reconcile did: the cloud step's outcome, and the licensing call made, if any.
pub struct Acted {
    pub cloud: Cloud,
    pub license: Option<LicenseCall>,
}

/// The plan's cloud step, taken or waiting for its turn.
pub enum Turn {
    /// The launch waits for its turn at the launch rate limit, this long: nothing was done.
    Queued(Duration),
    Taken(Cloud),
}

/// What the plan's cloud step came to.
#[derive(Debug)]
pub enum Cloud {
    /// Nothing to record: no step, or a start, stop or terminate that the next observation shows.
    Done,
    /// The launch waits for room under `--max-instances`: why.
    Capped(String),
    /// An instance launched (or adopted by tag), and the launch as it is to be recorded.
    Launched {
        launched: Box<Launched>,
        launch: LaunchStatus,
    },
    /// The launch failed: the launch as it is to be recorded (with the cloud's error in
    /// `last_error`), and the error the reconcile ends with.
    LaunchFailed { launch: LaunchStatus, error: Error },
    /// A start, stop or terminate failed, or the instance is not this Worker's.
    Failed(Error),
}

impl Cloud {
    /// The error the step failed with, if it did.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Cloud::LaunchFailed { error, .. } | Cloud::Failed(error) => Some(error),
            Cloud::Done | Cloud::Capped(_) | Cloud::Launched { .. } => None,
        }
    }

    /// The error the reconcile ends with, if the step failed.
    pub fn into_error(self) -> Option<Error> {
        match self {
            Cloud::LaunchFailed { error, .. } | Cloud::Failed(error) => Some(error),
            Cloud::Done | Cloud::Capped(_) | Cloud::Launched { .. } => None,
        }
    }

    /// The phase after this step, `planned` but for a launch: that moves the worker on at once,
    /// its instance being provisioned.
    pub fn phase(&self, planned: WorkerPhase) -> WorkerPhase {
        match self {
            Cloud::Launched { .. } => WorkerPhase::Provisioning,
            _ => planned,
        }
    }

    /// The launch's bookkeeping to record, when a launch was tried.
    pub fn launch(&self) -> Option<&LaunchStatus> {
        match self {
            Cloud::Launched { launch, .. } | Cloud::LaunchFailed { launch, .. } => Some(launch),
            Cloud::Done | Cloud::Capped(_) | Cloud::Failed(_) => None,
        }
    }
}

pub async fn act(worker: &Worker, ctx: &WorkerContext, plan: &Plan, observed: &Observed) -> Turn {
    let Some(chosen) = &observed.provider else {
        return Turn::Taken(Cloud::Done);
    };
    let instance_id = worker
        .status
        .as_ref()
        .and_then(|s| s.instance.as_ref())
        .map(|i| i.id.as_str());
    let id = match (plan.step, instance_id) {
        (Step::Launch { attempt }, _) => return launch(worker, ctx, observed, attempt).await,
        (Step::Start | Step::Stop | Step::Terminate, Some(id)) => id,
        _ => return Turn::Taken(Cloud::Done),
    };
    let provider = chosen.provider.as_ref();
    if let Err(e) = ensure_owned(worker, ctx, provider, id).await {
        return Turn::Taken(Cloud::Failed(e));
    }
    let result = match plan.step {
        Step::Start => provider.start(id).await,
        Step::Stop => provider.stop(id).await,
        _ => provider.terminate(id).await,
    };
    let region = chosen.region.as_deref();
    let key = provider_key(chosen.kind, region, ctx.providers.default_region());
    ctx.fleet.touched(&key, id).await;
    Turn::Taken(match result {
        // Already gone is what stop or terminate wanted; the next observation will say so.
        Ok(())
        | Err(ProviderError {
            kind: ErrorKind::NotFound,
            ..
        }) => Cloud::Done,
        Err(e) => Cloud::Failed(e.into()),
    })
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

/// A launch beyond `--max-instances` waits, saying why (`Some`: what to report instead of
/// launching); nothing is decided on a partial view.
fn over_instance_cap(ctx: &WorkerContext, uid: &str) -> Option<String> {
    let Some(store) = ctx.worker_cache() else {
        return Some("waiting for the Worker cache before counting instances".into());
    };
    let workers = store.state();
    let refs: Vec<&Worker> = workers.iter().map(|w| w.as_ref()).collect();
    ctx.instance_cap.permit(uid, &refs).err().map(|count| {
        format!(
            "{count} Workers hold or are launching instances: the cap --max-instances {} is \
             reached; this launch waits for one to go",
            ctx.instance_cap.max()
        )
    })
}

async fn launch(worker: &Worker, ctx: &WorkerContext, observed: &Observed, attempt: u32) -> Turn {
    let (Some(template), Some(chosen)) = (&observed.template, &observed.provider) else {
        return Turn::Taken(Cloud::Done);
    };
    let Some(image_id) = template
        .status
        .as_ref()
        .and_then(|s| s.resolved_image_id.clone())
    else {
        return Turn::Taken(Cloud::Done);
    };
    let provider = &chosen.provider;
    let uid = worker.uid().unwrap_or_default();
    if let Some(why) = over_instance_cap(ctx, &uid) {
        return Turn::Taken(Cloud::Capped(why));
    }
    let token = client_token(&uid, attempt);
    if let Some(wait) = provider.launch_turn(&token) {
        debug!(worker = %worker.name_any(), ?wait, "launch waits for its turn at the rate limit");
        return Turn::Queued(wait);
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
        Err(e) => return Turn::Taken(launch_failed(launch, e)),
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
    Turn::Taken(match provider.launch(&request).await {
        Ok(launched) => {
            info!(worker = %worker.name_any(), instance = %launched.instance.id, adopted = launched.adopted, "instance launched");
            launch.last_error = None;
            Cloud::Launched {
                launched: Box::new(launched),
                launch,
            }
        }
        Err(e) => launch_failed(launch, e),
    })
}

fn launch_failed(mut launch: LaunchStatus, e: ProviderError) -> Cloud {
    launch.last_error = Some(e.to_string());
    // A transient failure may hide a launch that happened: keep the token so the retry reuses it.
    if e.kind != ErrorKind::Transient {
        launch.client_token = None;
    }
    Cloud::LaunchFailed {
        launch,
        error: e.into(),
    }
}
