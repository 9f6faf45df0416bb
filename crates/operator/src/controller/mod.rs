//! The reconcilers (worker, template, orphan sweep), their shared context and error policy.

pub mod autoscaler;
mod context;
pub mod error;
pub mod events;
pub mod flags;
mod fleet;
mod grants;
pub mod instance_cap;
pub mod orphans;
mod overdue;
mod periodic;
pub mod reasons;
mod record_sweep;
mod removal_retries;
pub mod seats;
mod secrets;
mod status;
pub mod template;
pub(crate) mod template_cache;
pub mod worker;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt, channel::mpsc};
use kube::{
    Api, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info};

pub use context::{CONTROLLER_NAME, Context, Settings};

use autoscaler::TemplateContext;
use worker::WorkerContext;

use crate::{
    backoff::Backoff,
    crd::{Worker, WorkerPhase, WorkerTemplate},
    demand,
};

fn api<K>(ctx: &Context) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Runs the reconcilers until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let Some(template_watch) = ctx.templates.take_watch(api::<WorkerTemplate>(&ctx)) else {
        error!("this context already runs a controller; not starting another");
        return;
    };
    let config = Config::default().concurrency(ctx.settings.concurrency);
    // One watch of Workers feeds the worker cache, the worker reconciles and the autoscalers
    // (a second watch for the templates would double what the API server sends and we decode).
    let (wake_templates, template_wakes) = mpsc::unbounded();
    let (store, writer) = reflector::store();
    // The worker's own status writes do not wake it again: that would double every probe.
    let worker_watch = watcher(api::<Worker>(&ctx), watcher::Config::default())
        .default_backoff()
        .modify(strip_for_cache)
        .reflect(writer)
        .inspect_ok(move |event| wake_template_of(event, &wake_templates))
        .touched_objects()
        .predicate_filter(worker::wakes_reconcile, Default::default());
    let workers = Controller::for_stream(worker_watch, store.clone()).with_config(config.clone());
    let lookup = store.clone();
    // A template change wakes the workers built from it (and fills the template cache).
    let workers = workers.watches_stream(template_watch, move |t| {
        let (ns, name) = (t.namespace(), t.name_any());
        lookup
            .state()
            .into_iter()
            .filter(|w| w.namespace() == ns && w.spec.template_ref.name == name)
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect::<Vec<_>>()
    });
    ctx.set_worker_cache(store.clone());
    // A template's autoscaler wakes when its Workers change and when demand changes.
    let demand_changes = futures::stream::unfold(ctx.demand(), |mut rx| async move {
        rx.changed().await.ok().map(|()| ((), rx))
    });
    let templates = Controller::new(api::<WorkerTemplate>(&ctx), watcher::Config::default())
        .reconcile_on(coalesced(template_wakes, TEMPLATE_WAKE_PERIOD))
        .reconcile_all_on(demand_changes)
        .with_config(config);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = start_background(&ctx, &store);
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
    });
    futures::join!(
        run_workers(workers, &ctx, stopped(stop_rx.clone())),
        run_templates(templates, &ctx, stopped(stop_rx)),
    );
    for task in background {
        task.abort();
    }
}

/// Resolves once `stop` says so.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The Worker controller, with its own context, until `stop`.
async fn run_workers(
    workers: Controller<Worker>,
    ctx: &Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    workers
        .graceful_shutdown_on(stop)
        .run(
            |w, ctx| {
                let span = reconcile_span("worker", w.as_ref());
                timed("worker", worker::reconcile(w, ctx.clone()), ctx).instrument(span)
            },
            |w, e, ctx| status::error_policy("worker", w, e, &ctx),
            Arc::new(WorkerContext::new(ctx.clone())),
        )
        .for_each(|r| async move { debug!(result = ?r.map(|(o, _)| o.name), "worker reconciled") })
        .await;
}

/// The WorkerTemplate controller (and its autoscaler), with its own context, until `stop`.
async fn run_templates(
    templates: Controller<WorkerTemplate>,
    ctx: &Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    templates
        .graceful_shutdown_on(stop)
        .run(
            |t, ctx| {
                let span = reconcile_span("template", t.as_ref());
                timed("template", template::reconcile(t, ctx.clone()), ctx).instrument(span)
            },
            template::error_policy,
            Arc::new(TemplateContext::new(ctx.clone())),
        )
        .for_each(
            |r| async move { debug!(result = ?r.map(|(o, _)| o.name), "template reconciled") },
        )
        .await;
}

/// The tasks beside the reconcilers: readiness, the orphan and record sweeps, the retries of
/// record removals, the demand feed and the audit outbox's delivery. They end when the
/// returned handles are aborted.
fn start_background(ctx: &Arc<Context>, workers: &Store<Worker>) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(mark_ready_when_synced(ctx.clone(), workers.clone())),
        tokio::spawn(orphans::run(ctx.clone(), workers.clone())),
        tokio::spawn(record_sweep::run(ctx.clone(), workers.clone())),
        tokio::spawn(removal_retries::run(ctx.clone())),
    ];
    if let Some(cp) = ctx.remotes.control_plane().cloned() {
        let changes = ctx.remotes.etcd().map(|etcd| {
            etcd.watch_instances(Backoff::new(
                Duration::from_millis(500),
                ctx.settings.resync_interval,
            ))
        });
        let feed = demand::Feed {
            cp: cp.clone(),
            workers: placed_workers(workers.clone()),
            changes,
            refresh: ctx.demand_refresh(),
            resync: ctx.settings.demand_resync,
            debounce: ctx.settings.demand_debounce,
            deadline: ctx.remotes.deadline(),
        };
        tasks.push(tokio::spawn(demand::run(feed, ctx.demand_feed())));
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
            ctx.outbox
                .deliver(&cp, backoff, ctx.remotes.deadline())
                .await
        }));
    }
    tasks
}

/// The workers whose placements the demand feed reads: those the platform may have placed labs
/// on (running, or draining), by UID.
fn placed_workers(workers: Store<Worker>) -> demand::PlacedWorkers {
    Arc::new(move || {
        workers
            .state()
            .iter()
            .filter(|w| {
                matches!(
                    w.status.as_ref().and_then(|s| s.phase),
                    Some(WorkerPhase::Running | WorkerPhase::Draining)
                )
            })
            .filter_map(|w| w.uid())
            .collect()
    })
}

/// Readiness: the store's signal wakes only one waiter, so it is polled.
async fn mark_ready_when_synced(ctx: Arc<Context>, workers: Store<Worker>) {
    loop {
        let synced =
            tokio::time::timeout(Duration::from_millis(50), workers.wait_until_ready()).await;
        if matches!(synced, Ok(Ok(()))) {
            ctx.mark_synced();
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How often Worker changes may wake a template's autoscaler. Each run reads every Worker of
/// the template, so one per change would cost O(workers²) while a large fleet comes up.
const TEMPLATE_WAKE_PERIOD: Duration = Duration::from_secs(1);

/// The distinct templates woken during each `period`, at its end.
fn coalesced(
    mut wakes: mpsc::UnboundedReceiver<ObjectRef<WorkerTemplate>>,
    period: Duration,
) -> impl futures::Stream<Item = ObjectRef<WorkerTemplate>> + Send + 'static {
    let (out, coalesced) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut woken = std::collections::HashSet::new();
        loop {
            tokio::select! {
                wake = wakes.next() => match wake {
                    Some(template) => {
                        woken.insert(template);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    for template in woken.drain() {
                        if out.unbounded_send(template).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        for template in woken {
            let _ = out.unbounded_send(template);
        }
    });
    coalesced
}

/// A template's autoscaler counts the Workers built from it: any change to one, its deletion
/// included, wakes the template it names (owned by it or not).
fn wake_template_of(
    event: &watcher::Event<Worker>,
    wake: &mpsc::UnboundedSender<ObjectRef<WorkerTemplate>>,
) {
    let (watcher::Event::Apply(w) | watcher::Event::InitApply(w) | watcher::Event::Delete(w)) =
        event
    else {
        return;
    };
    let template = ObjectRef::new(&w.spec.template_ref.name);
    let template = match w.namespace() {
        Some(ns) => template.within(&ns),
        None => template,
    };
    // Fails only once the template controller has stopped, when nothing needs waking.
    let _ = wake.unbounded_send(template);
}

/// What the cache never reads: server-side apply's bookkeeping and kubectl's copy of the last
/// applied object, often most of a cached Worker's bytes.
fn strip_for_cache(worker: &mut Worker) {
    worker.managed_fields_mut().clear();
    worker
        .annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// The span of one reconcile: every line logged inside it names the controller and the object.
pub(crate) fn reconcile_span<K: kube::Resource>(
    controller: &'static str,
    obj: &K,
) -> tracing::Span {
    let object = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    tracing::info_span!("reconcile", controller, object)
}

/// Runs one reconcile and counts it, with its duration, by controller and result.
async fn timed<T, C: std::ops::Deref<Target = Context>>(
    controller: &'static str,
    reconcile: impl Future<Output = error::Result<T>>,
    ctx: Arc<C>,
) -> error::Result<T> {
    let started = tokio::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics
        .reconciled(controller, result.is_ok(), started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn worker(namespace: &str, name: &str, template: &str) -> Worker {
        serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"templateRef": {"name": template}}
        }))
        .expect("worker")
    }

    #[test]
    fn a_worker_change_or_deletion_wakes_the_template_it_names() {
        let (tx, mut rx) = mpsc::unbounded();
        let w = worker("labs", "w1", "big");
        for event in [
            watcher::Event::Apply(w.clone()),
            watcher::Event::InitApply(w.clone()),
            watcher::Event::Delete(w),
            watcher::Event::Init,
            watcher::Event::InitDone,
        ] {
            wake_template_of(&event, &tx);
        }
        drop(tx);
        let woken: Vec<_> = futures::executor::block_on(rx.by_ref().collect());
        assert_eq!(woken, vec![ObjectRef::new("big").within("labs"); 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn template_wakes_come_at_most_once_a_period_each() {
        let (tx, rx) = mpsc::unbounded();
        let mut out = Box::pin(coalesced(rx, Duration::from_secs(1)));
        // The interval's first tick is immediate; let it pass with nothing woken.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (a, b) = (
            ObjectRef::<WorkerTemplate>::new("a").within("ns"),
            ObjectRef::<WorkerTemplate>::new("b").within("ns"),
        );
        for _ in 0..1000 {
            tx.unbounded_send(a.clone()).expect("send");
        }
        tx.unbounded_send(b.clone()).expect("send");
        let mut first = vec![
            out.next().await.expect("a wake"),
            out.next().await.expect("a wake"),
        ];
        first.sort_by_key(|r| r.name.clone());
        assert_eq!(first, vec![a.clone(), b]);
        // Nothing more until something changes again.
        let quiet = tokio::time::timeout(Duration::from_secs(5), out.next()).await;
        assert!(quiet.is_err(), "woken with nothing changed: {quiet:?}");
        tx.unbounded_send(a.clone()).expect("send");
        assert_eq!(out.next().await, Some(a));
    }
}
