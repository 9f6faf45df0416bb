//! Act: carry out the planner's decisions on Worker objects, and tell about each one (log line,
//! Events on the template and the worker, an audit record for the Control Plane API).

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::OwnerReference, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tracing::{debug, info};

use crate::{
    control_plane::ScalingEvent,
    controller::{autoscaler::TemplateContext, error::Error},
    controller::{events::EventSpec, reasons},
    crd::{TEMPLATE_LABEL, TemplateRef, Worker, WorkerSpec, WorkerTemplate},
    planner::{Action, Decision},
};

/// What acting changed: the decisions carried out and the Workers created.
#[derive(Default)]
pub struct Acted {
    pub done: Vec<Decision>,
    pub created: Vec<String>,
    pub error: Option<Error>,
}

/// A Worker the round acted on, as the audit record names it.
struct Subject {
    name: String,
    uid: Option<String>,
    generation: Option<i64>,
}

pub async fn act(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    decisions: &[Decision],
    workers: &[&Worker],
    now: Timestamp,
) -> Acted {
    let namespace = template.namespace().unwrap_or_default();
    let api: Api<Worker> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut acted = Acted::default();
    for decision in decisions {
        let mut made = Vec::new();
        let result = match &decision.action {
            Action::Create { count } => {
                let mut result = Ok(());
                for _ in 0..*count {
                    match create(&api, template).await {
                        Ok(w) => made.push(w),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                acted.created.extend(made.iter().map(|w| w.name.clone()));
                result
            }
            Action::Start { worker } | Action::CancelDrain { worker } => {
                desire(&api, worker, "Running").await
            }
            Action::Drain { worker } => {
                if !still_idle(ctx, workers, worker).await {
                    continue;
                }
                desire(&api, worker, "Draining").await
            }
            Action::Stop { worker } => desire(&api, worker, "Stopped").await,
            Action::Delete { worker } => api
                .delete(worker, &DeleteParams::default())
                .await
                .map(drop)
                .or_else(|e| match e {
                    kube::Error::Api(ref s) if s.code == 404 => Ok(()),
                    e => Err(e),
                }),
        };
        if let Err(e) = result {
            acted.error = Some(Error::Kube(e));
            break;
        }
        ctx.metrics.scaled(decision.action.name());
        let subjects = match decision.action.worker() {
            Some(name) => vec![subject(workers, name)],
            None => made,
        };
        tell(template, ctx, decision, &subjects, now).await;
        acted.done.push(decision.clone());
    }
    acted
}

/// The planner judged `name` idle from its status, which lags the platform by up to a resync:
/// ask the Control Plane API again right before draining, and leave it be unless it says zero.
async fn still_idle(ctx: &TemplateContext, workers: &[&Worker], name: &str) -> bool {
    let Some(cp) = ctx.remotes.control_plane() else {
        return true;
    };
    let Some(uid) = workers
        .iter()
        .find(|w| w.name_any() == name)
        .and_then(|w| w.uid())
    else {
        return false;
    };
    let fresh = ctx
        .remotes
        .bounded(
            crate::mirror::RemoteName::ControlPlane,
            cp.worker_capacity(&uid),
        )
        .await;
    let idle = matches!(
        &fresh,
        Ok(Some(c)) if c.running_instances == 0 && c.scheduled_instances == 0 && c.allocated.nodes == 0
    );
    let answer = format!(
        "{:?}",
        fresh.map(|c| c.map(|c| (c.running_instances, c.scheduled_instances)))
    );
    if idle {
        ctx.drain_refusals.changed(&uid, None);
    } else if ctx.drain_refusals.changed(&uid, Some(&answer)) {
        info!(worker = %name, usage = %answer, "not draining after all: the platform does not report it idle");
    } else {
        debug!(worker = %name, usage = %answer, "not draining after all, as before");
    }
    idle
}

/// The worker `name` as the round saw it.
fn subject(workers: &[&Worker], name: &str) -> Subject {
    let seen = workers.iter().find(|w| w.name_any() == name);
    Subject {
        name: name.to_owned(),
        uid: seen.and_then(|w| w.uid()),
        generation: seen.and_then(|w| w.metadata.generation),
    }
}

async fn create(api: &Api<Worker>, template: &WorkerTemplate) -> Result<Subject, kube::Error> {
    let name = template.name_any();
    let mut worker = Worker::new(
        "",
        WorkerSpec {
            template_ref: TemplateRef { name: name.clone() },
            desired_state: Default::default(),
        },
    );
    worker.metadata.name = None;
    worker.metadata.generate_name = Some(format!("{name}-"));
    worker.metadata.labels = Some([(TEMPLATE_LABEL.to_owned(), name.clone())].into());
    worker.metadata.owner_references = Some(vec![OwnerReference {
        api_version: WorkerTemplate::api_version(&()).into_owned(),
        kind: WorkerTemplate::kind(&()).into_owned(),
        name,
        uid: template.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    let created = api.create(&PostParams::default(), &worker).await?;
    Ok(Subject {
        name: created.name_any(),
        uid: created.uid(),
        generation: created.metadata.generation,
    })
}

async fn desire(api: &Api<Worker>, worker: &str, state: &str) -> Result<(), kube::Error> {
    api.patch(
        worker,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"desiredState": state}})),
    )
    .await
    .map(drop)
}

/// A log line, an Event on the template (and on the worker concerned), and an audit record
/// per worker.
async fn tell(
    template: &WorkerTemplate,
    ctx: &TemplateContext,
    decision: &Decision,
    subjects: &[Subject],
    now: Timestamp,
) {
    let namespace = template.namespace().unwrap_or_default();
    let full = format!("{namespace}/{}", template.name_any());
    let action = decision.action.name();
    let names: Vec<&str> = subjects.iter().map(|s| s.name.as_str()).collect();
    let subject = match &decision.action {
        Action::Create { count } => format!("{count} new ({})", names.join(", ")),
        other => other.worker().unwrap_or_default().to_owned(),
    };
    info!(template = %full, action, worker = %subject, trigger = decision.trigger.as_str(), reason = %decision.reason, "scaling decision");
    let reason = event_reason(&decision.action);
    let note = format!("{action} {subject}: {}", decision.reason);
    let event = EventSpec::normal(reason, "Scale", note);
    ctx.event(template, event.clone()).await;
    if let Some(worker) = decision.action.worker() {
        let target = Worker::new(
            worker,
            WorkerSpec {
                template_ref: TemplateRef {
                    name: template.name_any(),
                },
                desired_state: Default::default(),
            },
        );
        let mut target = target;
        target.metadata.namespace = Some(namespace.clone());
        ctx.event(&target, event).await;
    }
    for s in subjects {
        ctx.outbox.push(ScalingEvent {
            id: audit_id(template, action, s, now),
            action: action.to_owned(),
            worker: Some(format!("{namespace}/{}", s.name)),
            template: full.clone(),
            reason: decision.reason.clone(),
            triggered_by: decision.trigger.as_str().to_owned(),
            time: Timestamp::from_second(now.as_second())
                .unwrap_or(now)
                .to_string(),
        });
    }
}

/// The record's idempotency key: the worker's UID with the action, and for a change of an
/// existing worker the generation it was decided on, so the same decision taken again (say,
/// after its patch failed) is the same record. A worker the round did not see by UID falls
/// back to its name and the time.
fn audit_id(template: &WorkerTemplate, action: &str, s: &Subject, now: Timestamp) -> String {
    match (&s.uid, s.generation) {
        (Some(uid), _) if action == "create" => format!("{uid}-create"),
        (Some(uid), Some(generation)) => format!("{uid}-{action}-g{generation}"),
        _ => format!(
            "{}-{action}-{}-{}",
            template.uid().unwrap_or_default(),
            s.name,
            now.as_second()
        ),
    }
}

pub fn event_reason(action: &Action) -> &'static str {
    match action {
        Action::Create { .. } => reasons::SCALED_UP,
        Action::Start { .. } => reasons::WORKER_STARTED,
        Action::CancelDrain { .. } => reasons::DRAIN_CANCELLED,
        Action::Drain { .. } => reasons::SCALED_DOWN,
        Action::Stop { .. } => reasons::WORKER_STOPPED,
        Action::Delete { .. } => reasons::WORKER_DELETED,
    }
}
