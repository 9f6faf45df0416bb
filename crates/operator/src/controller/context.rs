//! What every controller shares: the client, configuration, providers, remotes, the Worker and
//! template caches, metrics, Events, readiness and leadership. What one controller keeps for
//! itself is in its own context (`worker::WorkerContext`, `autoscaler::TemplateContext`).

use crate::lock::Locked;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::warn;

use kube::runtime::reflector::Store;

use super::{
    events::{EventSink, EventSpec},
    instance_cap::InstanceCap,
    seats::SeatBudget,
    template_cache::{TemplateCache, template_key},
};
use crate::{
    backoff::Backoff,
    crd::Worker,
    demand::DemandSnapshot,
    mirror::{Remotes, outbox::Outbox},
    provider::ProviderRegistry,
    telemetry::{Metrics, TEMPLATE_SERIES_LINGER, http::Ready},
};

/// Controller settings, filled from flags and environment by the CLI.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Value of the `ccm:cluster` tag: which instances are this controller's.
    pub cluster_id: String,
    /// Reconcile only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Re-check interval while something is in motion.
    pub poll_interval: Duration,
    /// Re-check interval in steady state (`RECONCILE_INTERVAL`).
    pub resync_interval: Duration,
    /// Workers reconciled at once.
    pub concurrency: u16,
    /// Instances tagged for this cluster with no Worker are terminated after this age.
    pub orphan_grace: Duration,
    pub orphan_sweep_interval: Duration,
    /// Per-object backoff of transient errors.
    pub error_backoff: Backoff,
    pub cml_timeout: Duration,
    /// Reach every worker's CML API at this host instead of its IP (local testing only).
    pub cml_host_override: Option<String>,
    /// How long a Secret read for CML probes is reused (a refused login drops it at once).
    pub secret_ttl: Duration,
    /// Interval of the sweep of remote records whose Worker is gone.
    pub record_sweep_interval: Duration,
    /// How long the demand feed lets a burst of etcd changes settle before it reads.
    pub demand_debounce: Duration,
    /// The demand feed's backstop refresh, for changes etcd did not announce.
    pub demand_resync: Duration,
    /// How far ahead of a lab's timeslot the autoscaler makes room for it (worker boot plus lab
    /// start-up).
    pub scale_up_lead_time: Duration,
    /// Most instances the controller keeps at once, over every Worker (`--max-instances`).
    pub max_instances: u32,
    /// Most workers per CML product license that may hold a seat (`--license-seats`).
    pub license_seats: std::collections::BTreeMap<String, u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_id: "default".into(),
            namespace: None,
            poll_interval: Duration::from_secs(5),
            resync_interval: Duration::from_secs(30),
            concurrency: 16,
            orphan_grace: Duration::from_secs(600),
            orphan_sweep_interval: Duration::from_secs(60),
            error_backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            cml_timeout: Duration::from_secs(10),
            cml_host_override: None,
            secret_ttl: Duration::from_secs(60),
            record_sweep_interval: Duration::from_secs(60),
            demand_debounce: Duration::from_millis(200),
            demand_resync: Duration::from_secs(30),
            scale_up_lead_time: Duration::from_secs(35 * 60),
            license_seats: std::collections::BTreeMap::new(),
            max_instances: 100,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub providers: ProviderRegistry,
    /// WorkerTemplates as last watched, shared by all worker reconciles.
    pub templates: TemplateCache,
    /// The Control Plane API and etcd, when configured, and what each acknowledged.
    pub remotes: Arc<Remotes>,
    /// The latest demand snapshot (`None` until the first read, or without a Control Plane API).
    demand: watch::Sender<Option<Arc<DemandSnapshot>>>,
    /// Wakes the demand feed for a refresh before its resync.
    demand_refresh: Arc<tokio::sync::Notify>,
    /// Scaling audit records on their way to the Control Plane API.
    pub outbox: Arc<Outbox>,
    /// The license seat budget.
    pub seats: SeatBudget,
    /// The cap on instances.
    pub instance_cap: InstanceCap,
    pub metrics: Arc<Metrics>,
    /// The Worker cache has synced.
    synced: std::sync::atomic::AtomicBool,
    /// This replica leads (always, without leader election).
    leading: std::sync::atomic::AtomicBool,
    /// The Worker cache, once the controllers run.
    workers: OnceLock<Store<Worker>>,
    recorder: EventSink,
    /// Consecutive transient failures per object UID, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

pub const CONTROLLER_NAME: &str = "resource-controller";

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        providers: ProviderRegistry,
        instance_id: &str,
    ) -> Context {
        let recorder = EventSink::new(client.clone(), CONTROLLER_NAME, instance_id);
        Context {
            templates: TemplateCache::default(),
            remotes: Arc::new(Remotes::none()),
            demand: watch::channel(None).0,
            demand_refresh: Arc::new(tokio::sync::Notify::new()),
            outbox: Arc::new(Outbox::new(1000)),
            seats: SeatBudget::new(settings.license_seats.clone()),
            instance_cap: InstanceCap::new(settings.max_instances),
            metrics: Arc::new(Metrics::default()),
            synced: std::sync::atomic::AtomicBool::new(false),
            leading: std::sync::atomic::AtomicBool::new(true),
            workers: OnceLock::new(),
            client,
            settings,
            providers,
            recorder,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the platform's remotes (none by default: a kubectl-only fleet).
    pub fn with_remotes(mut self, remotes: Remotes) -> Context {
        self.remotes = Arc::new(remotes);
        self
    }

    /// The Worker cache, once it holds the first full listing: a decision on a partial view
    /// (e.g. right after taking over the Lease) would count too few Workers and make more.
    pub fn worker_cache(&self) -> Option<&Store<Worker>> {
        self.workers
            .get()
            .filter(|_| self.synced.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(super) fn set_worker_cache(&self, store: Store<Worker>) {
        let _ = self.workers.set(store);
    }

    /// Starts as a standby, until the elector says otherwise.
    pub fn stand_by(&self) {
        self.leading
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this replica leads; a change counts as a lease transition.
    pub fn set_leading(&self, leading: bool) {
        let was = self
            .leading
            .swap(leading, std::sync::atomic::Ordering::Relaxed);
        if was != leading {
            self.metrics.lease_transition();
        }
    }

    /// Pulls counters kept elsewhere into the metrics, before a scrape.
    pub fn collect_metrics(&self) {
        self.metrics
            .leading(self.leading.load(std::sync::atomic::Ordering::Relaxed));
        self.metrics.audit_dropped_total(self.outbox.dropped());
        for (remote, total) in self.remotes.failures() {
            self.metrics.sync_failures_total(remote.as_str(), total);
        }
        for (remote, up) in self.remotes.up() {
            self.metrics.remote_up(remote.as_str(), up);
        }
        if let Some(store) = self.worker_cache() {
            let workers = store.state();
            let refs: Vec<&Worker> = workers.iter().map(Arc::as_ref).collect();
            self.metrics.license_seats(&SeatBudget::by_state(&refs));
            let now = k8s_openapi::jiff::Timestamp::now();
            let templates = self.templates.all();
            let overdue = super::overdue::count(&refs, &templates, now);
            self.metrics.overdue(&overdue);
            let live = templates.iter().map(|t| template_key(t)).collect();
            self.metrics.forget_templates(&live, TEMPLATE_SERIES_LINGER);
        }
        for c in self.providers.call_totals() {
            self.metrics.cloud_calls_total(
                c.provider.as_str(),
                &c.region,
                c.operation,
                c.outcome,
                c.count,
            );
        }
    }

    /// Ready once the Worker cache is synced; the text says which.
    pub fn readiness(&self) -> Ready {
        Ready::caches(self.synced.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(super) fn mark_synced(&self) {
        self.synced
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Follows the demand snapshot.
    pub fn demand(&self) -> watch::Receiver<Option<Arc<DemandSnapshot>>> {
        self.demand.subscribe()
    }

    /// The sender the demand feed publishes on.
    pub fn demand_feed(&self) -> watch::Sender<Option<Arc<DemandSnapshot>>> {
        self.demand.clone()
    }

    /// What wakes the demand feed for a refresh.
    pub fn demand_refresh(&self) -> Arc<tokio::sync::Notify> {
        self.demand_refresh.clone()
    }

    /// Publishes an Event on `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, event: EventSpec) {
        let note: String = event.note.chars().take(1000).collect();
        let reason = event.reason.as_ref();
        if let Err(e) = self
            .recorder
            .publish(
                obj.object_ref(&()),
                event.warning,
                reason,
                event.action,
                note,
            )
            .await
        {
            warn!(%reason, error = %e, "could not publish an Event");
        }
    }

    /// The delay before retrying `uid` after another transient failure.
    pub fn next_backoff(&self, uid: &str) -> Duration {
        let mut failures = self.failures.locked();
        let n = failures.entry(uid.to_owned()).or_insert(0);
        let delay = self.settings.error_backoff.delay(*n);
        *n = n.saturating_add(1);
        delay
    }

    /// Forgets the failures of `uid` after a successful reconcile.
    pub fn reset_backoff(&self, uid: &str) {
        self.failures.locked().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;

    use super::*;
    use crate::provider::aws_default_chain;

    #[tokio::test]
    async fn the_worker_cache_is_not_decided_on_before_its_first_listing() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = Client::try_from(config).expect("client");
        let providers = ProviderRegistry::new("us-east-1", aws_default_chain(None), None);
        let ctx = Context::new(client, Settings::default(), providers, "test");
        let (store, _writer) = reflector::store::<Worker>();
        ctx.set_worker_cache(store);
        assert!(ctx.worker_cache().is_none(), "hidden while syncing");
        ctx.mark_synced();
        assert!(ctx.worker_cache().is_some());
    }
}
