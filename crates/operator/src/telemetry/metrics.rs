//! The controller's metrics, in OpenMetrics text via prometheus-client. Labels are bounded:
//! controller, result, action, remote, template and phase; never a worker name or instance id.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::lock::Locked;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteLabels {
    pub remote: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloudCallLabels {
    pub provider: &'static str,
    pub region: String,
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FleetLabels {
    pub template: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabels {
    pub template: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DemandLabels {
    pub template: String,
    pub window: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub template: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LicenseCallLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeatLabels {
    pub product: String,
    pub state: &'static str,
}

/// One template's figures from the autoscaler's last round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateFigures {
    pub desired: u32,
    pub ready: u32,
    /// Unplaced lab instances assigned to the template.
    pub demand: u32,
    /// Of those, the ones starting within the lead time.
    pub due: u32,
    /// Why the autoscaler holds back, if it does.
    pub limited: Option<&'static str>,
}

/// Every reason `ccm_scaling_limited` can carry (the `ScalingLimited` condition's reasons).
pub const LIMIT_REASONS: [&str; 4] = [
    "ImageUnresolved",
    "MaxWorkersReached",
    "DemandUnknown",
    "LicenseSeatsExhausted",
];

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Family<ControllerLabels, Histogram>,
    scaling_actions: Family<ActionLabels, Counter>,
    sync_failures: Family<RemoteLabels, Counter>,
    cloud_calls: Family<CloudCallLabels, Counter>,
    cml_probes: Family<OutcomeLabels, Counter>,
    license_calls: Family<LicenseCallLabels, Counter>,
    license_seats: Family<SeatLabels, Gauge>,
    audit_dropped: Counter,
    workers: Family<FleetLabels, Gauge>,
    workers_overdue: Family<FleetLabels, Gauge>,
    worker_transitions: Family<ReasonLabels, Counter>,
    desired_workers: Family<TemplateLabels, Gauge>,
    ready_workers: Family<TemplateLabels, Gauge>,
    demand: Family<DemandLabels, Gauge>,
    scaling_limited: Family<LimitLabels, Gauge>,
    remote_up: Family<RemoteLabels, Gauge>,
    leader: Gauge,
    lease_transitions: Counter,
    /// The templates with series: when they were last set, and the phases set.
    templates: Mutex<BTreeMap<String, TemplateSeries>>,
}

/// What [`Metrics::forget_templates`] needs to remove a template's series.
struct TemplateSeries {
    set_at: Instant,
    phases: BTreeSet<&'static str>,
}

/// How long a template's series outlive it: past a template just created that the template
/// cache has not shown yet.
pub const TEMPLATE_SERIES_LINGER: Duration = Duration::from_secs(60);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ccm");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result (ok, error)",
            reconciles.clone(),
        );
        let reconcile_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            reconcile_seconds.clone(),
        );
        let scaling_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "scaling_actions",
            "Autoscaler decisions carried out, by action",
            scaling_actions.clone(),
        );
        let sync_failures = Family::<RemoteLabels, Counter>::default();
        registry.register(
            "sync_failures",
            "Pushes of worker records that a remote did not take, by remote",
            sync_failures.clone(),
        );
        let cloud_calls = Family::<CloudCallLabels, Counter>::default();
        registry.register(
            "cloud_api_calls",
            "Cloud API calls by provider, region, operation and outcome (ok or the error kind, \
             Throttled included)",
            cloud_calls.clone(),
        );
        let cml_probes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cml_probes",
            "Probes of workers' CML APIs by outcome (ok, degraded, or why it failed)",
            cml_probes.clone(),
        );
        let license_calls = Family::<LicenseCallLabels, Counter>::default();
        registry.register(
            "license_operations",
            "Smart Licensing calls to workers' CML by operation (register, set_node_count, \
             deregister) and outcome (accepted, busy, refused, freed, local_only, nodes_running, \
             not_registered, or why it failed)",
            license_calls.clone(),
        );
        let license_seats = Family::<SeatLabels, Gauge>::default();
        registry.register(
            "license_seats",
            "Workers holding (or maybe holding) a license seat, by product and state \
             (Registering, Held, Deregistering, MayBeHeld)",
            license_seats.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_records_dropped",
            "Scaling audit records dropped because the outbox was full",
            audit_dropped.clone(),
        );
        let workers = Family::<FleetLabels, Gauge>::default();
        registry.register(
            "workers",
            "Workers by template and phase, as the autoscaler last counted them",
            workers.clone(),
        );
        let workers_overdue = Family::<FleetLabels, Gauge>::default();
        registry.register(
            "workers_overdue",
            "Workers in a phase past the timeout that should have moved them on (launchTimeout \
             plus readyTimeout, drainTimeout) by more than 5 minutes, by template and phase",
            workers_overdue.clone(),
        );
        let worker_transitions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "worker_transitions",
            "Worker phase transitions by reason, as their Events name them (Launching, \
             DrainCompleted, DrainTimeout, LaunchTimeout, ReadyTimeout, InstanceVanished, ...)",
            worker_transitions.clone(),
        );
        let desired_workers = Family::<TemplateLabels, Gauge>::default();
        registry.register(
            "desired_workers",
            "Workers the autoscaler wants up (not stopped), by template",
            desired_workers.clone(),
        );
        let ready_workers = Family::<TemplateLabels, Gauge>::default();
        registry.register(
            "ready_workers",
            "Workers whose Ready condition is true, by template",
            ready_workers.clone(),
        );
        let demand = Family::<DemandLabels, Gauge>::default();
        registry.register(
            "demand_instances",
            "Unplaced lab instances assigned to the template, by window (all, or lead_time: \
             starting within the scale-up lead time)",
            demand.clone(),
        );
        let scaling_limited = Family::<LimitLabels, Gauge>::default();
        registry.register(
            "scaling_limited",
            "1 while the autoscaler holds back from what demand and floors ask, by template and \
             reason (MaxWorkersReached, DemandUnknown, LicenseSeatsExhausted)",
            scaling_limited.clone(),
        );
        let remote_up = Family::<RemoteLabels, Gauge>::default();
        registry.register(
            "remote_up",
            "1 if the last call to the remote (ControlPlane, Etcd) was answered, 0 if it failed \
             (unreachable, timeout, server error, refused credentials, garbage)",
            remote_up.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads (always 1 without leader election)",
            leader.clone(),
        );
        let lease_transitions = Counter::default();
        registry.register(
            "lease_transitions",
            "Times this replica started or stopped leading",
            lease_transitions.clone(),
        );
        Metrics {
            registry,
            leader,
            lease_transitions,
            reconciles,
            reconcile_seconds,
            scaling_actions,
            sync_failures,
            cloud_calls,
            cml_probes,
            license_calls,
            license_seats,
            audit_dropped,
            workers,
            workers_overdue,
            worker_transitions,
            desired_workers,
            ready_workers,
            demand,
            scaling_limited,
            remote_up,
            templates: Mutex::default(),
        }
    }
}

/// Raises `counter` to `total`, a count kept elsewhere (counters never go down).
fn raise_to(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    pub fn scaled(&self, action: &'static str) {
        self.scaling_actions
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    pub fn sync_failed(&self, remote: &'static str) {
        self.sync_failures
            .get_or_create(&RemoteLabels { remote })
            .inc();
    }

    /// Brings a remote's failure counter up to the total counted where the pushes happen.
    pub fn sync_failures_total(&self, remote: &'static str, total: u64) {
        raise_to(
            &self.sync_failures.get_or_create(&RemoteLabels { remote }),
            total,
        );
    }

    /// Brings a cloud call counter up to the total the provider counted.
    pub fn cloud_calls_total(
        &self,
        provider: &'static str,
        region: &str,
        operation: &'static str,
        outcome: &'static str,
        total: u64,
    ) {
        let labels = CloudCallLabels {
            provider,
            region: region.to_owned(),
            operation,
            outcome,
        };
        raise_to(&self.cloud_calls.get_or_create(&labels), total);
    }

    pub fn cml_probed(&self, outcome: &'static str) {
        self.cml_probes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one licensing call.
    pub fn license_call(&self, operation: &'static str, outcome: &'static str) {
        self.license_calls
            .get_or_create(&LicenseCallLabels { operation, outcome })
            .inc();
    }

    /// Seats by product and state, replacing what was there.
    pub fn license_seats(&self, counts: &std::collections::BTreeMap<(String, &'static str), u32>) {
        self.license_seats.clear();
        for ((product, state), n) in counts {
            self.license_seats
                .get_or_create(&SeatLabels {
                    product: product.clone(),
                    state,
                })
                .set(i64::from(*n));
        }
    }

    /// Brings the dropped-audit counter up to the outbox's own count.
    pub fn audit_dropped_total(&self, total: u64) {
        raise_to(&self.audit_dropped, total);
    }

    /// The template's workers by phase, replacing what was there.
    pub fn fleet(&self, template: &str, by_phase: &[(&'static str, u32)]) {
        let mut seen = self.templates.locked();
        let series = seen
            .entry(template.to_owned())
            .or_insert_with(|| TemplateSeries {
                set_at: Instant::now(),
                phases: BTreeSet::new(),
            });
        series.set_at = Instant::now();
        series.phases.extend(by_phase.iter().map(|(p, _)| *p));
        drop(seen);
        for (phase, n) in by_phase {
            self.workers
                .get_or_create(&FleetLabels {
                    template: template.to_owned(),
                    phase,
                })
                .set(i64::from(*n));
        }
    }

    /// Removes the series of templates not in `live` (`namespace/name`) and not set within
    /// `linger`: a deleted template leaves no figures behind.
    pub fn forget_templates(&self, live: &BTreeSet<String>, linger: Duration) {
        let mut seen = self.templates.locked();
        let gone: Vec<String> = seen
            .iter()
            .filter(|(t, s)| !live.contains(*t) && s.set_at.elapsed() >= linger)
            .map(|(t, _)| t.clone())
            .collect();
        for template in gone {
            let Some(series) = seen.remove(&template) else {
                continue;
            };
            self.remove_template(&template, &series.phases);
        }
    }

    fn remove_template(&self, template: &str, phases: &BTreeSet<&'static str>) {
        let t = || template.to_owned();
        for phase in phases {
            let labels = FleetLabels {
                template: t(),
                phase,
            };
            self.workers.remove(&labels);
        }
        self.desired_workers
            .remove(&TemplateLabels { template: t() });
        self.ready_workers.remove(&TemplateLabels { template: t() });
        for window in ["all", "lead_time"] {
            self.demand.remove(&DemandLabels {
                template: t(),
                window,
            });
        }
        for reason in LIMIT_REASONS {
            self.scaling_limited.remove(&LimitLabels {
                template: t(),
                reason,
            });
        }
    }

    /// Overdue workers by (template, phase), replacing what was there.
    pub fn overdue(&self, counts: &std::collections::BTreeMap<(String, &'static str), u32>) {
        self.workers_overdue.clear();
        for ((template, phase), n) in counts {
            self.workers_overdue
                .get_or_create(&FleetLabels {
                    template: template.clone(),
                    phase,
                })
                .set(i64::from(*n));
        }
    }

    /// Counts one phase transition.
    pub fn transition(&self, reason: &'static str) {
        self.worker_transitions
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// What the autoscaler last decided for a template.
    pub fn template_figures(&self, template: &str, f: &TemplateFigures) {
        let t = || TemplateLabels {
            template: template.to_owned(),
        };
        self.desired_workers
            .get_or_create(&t())
            .set(f.desired.into());
        self.ready_workers.get_or_create(&t()).set(f.ready.into());
        for (window, n) in [("all", f.demand), ("lead_time", f.due)] {
            let labels = DemandLabels {
                template: template.to_owned(),
                window,
            };
            self.demand.get_or_create(&labels).set(n.into());
        }
        for reason in LIMIT_REASONS {
            let labels = LimitLabels {
                template: template.to_owned(),
                reason,
            };
            let on = f.limited == Some(reason);
            self.scaling_limited.get_or_create(&labels).set(on.into());
        }
    }

    /// Whether the last call to `remote` was answered.
    pub fn remote_up(&self, remote: &'static str, up: bool) {
        self.remote_up
            .get_or_create(&RemoteLabels { remote })
            .set(up.into());
    }

    pub fn leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn lease_transition(&self) {
        self.lease_transitions.inc();
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_openmetrics_with_bounded_labels() {
        let m = Metrics::default();
        m.reconciled("worker", true, Duration::from_millis(30));
        m.reconciled("worker", false, Duration::from_millis(30));
        m.scaled("create");
        m.sync_failed("Etcd");
        m.audit_dropped_total(3);
        m.audit_dropped_total(3);
        m.fleet("ns/t", &[("Running", 2), ("Stopped", 1)]);
        m.cloud_calls_total("aws", "eu-west-1", "RunInstances", "Throttled", 2);
        m.cloud_calls_total("aws", "eu-west-1", "RunInstances", "Throttled", 1);
        m.cml_probed("Unreachable");
        m.transition("DrainTimeout");
        m.remote_up("ControlPlane", false);
        m.overdue(&[(("ns/t".to_owned(), "Draining"), 1)].into());
        let figures = TemplateFigures {
            desired: 3,
            ready: 2,
            demand: 5,
            due: 4,
            limited: Some("MaxWorkersReached"),
        };
        m.template_figures("ns/t", &figures);
        m.template_figures(
            "ns/t",
            &TemplateFigures {
                limited: None,
                ..figures
            },
        );
        let text = m.encode();
        assert!(
            text.contains("ccm_scaling_limited{template=\"ns/t\",reason=\"DemandUnknown\"} 0"),
            "every reason has a series"
        );
        for line in [
            "ccm_reconciles_total{controller=\"worker\",result=\"ok\"} 1",
            "ccm_reconciles_total{controller=\"worker\",result=\"error\"} 1",
            "ccm_reconcile_duration_seconds_count{controller=\"worker\"} 2",
            "ccm_scaling_actions_total{action=\"create\"} 1",
            "ccm_sync_failures_total{remote=\"Etcd\"} 1",
            "ccm_audit_records_dropped_total 3",
            "ccm_workers{template=\"ns/t\",phase=\"Running\"} 2",
            "ccm_cloud_api_calls_total{provider=\"aws\",region=\"eu-west-1\",operation=\"RunInstances\",outcome=\"Throttled\"} 2",
            "ccm_cml_probes_total{outcome=\"Unreachable\"} 1",
            "ccm_worker_transitions_total{reason=\"DrainTimeout\"} 1",
            "ccm_remote_up{remote=\"ControlPlane\"} 0",
            "ccm_workers_overdue{template=\"ns/t\",phase=\"Draining\"} 1",
            "ccm_desired_workers{template=\"ns/t\"} 3",
            "ccm_ready_workers{template=\"ns/t\"} 2",
            "ccm_demand_instances{template=\"ns/t\",window=\"lead_time\"} 4",
            "ccm_scaling_limited{template=\"ns/t\",reason=\"MaxWorkersReached\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn a_deleted_templates_series_go_once_they_have_lingered() {
        let m = Metrics::default();
        for t in ["ns/gone", "ns/live"] {
            m.fleet(t, &[("Running", 2), ("Stopped", 1)]);
            m.template_figures(t, &TemplateFigures::default());
        }
        let live: BTreeSet<String> = ["ns/live".to_owned()].into();
        m.forget_templates(&live, TEMPLATE_SERIES_LINGER);
        assert!(m.encode().contains("template=\"ns/gone\""), "set just now");
        m.forget_templates(&live, Duration::ZERO);
        let text = m.encode();
        assert!(!text.contains("ns/gone"), "{text}");
        for line in [
            "ccm_workers{template=\"ns/live\",phase=\"Stopped\"} 1",
            "ccm_desired_workers{template=\"ns/live\"} 0",
            "ccm_scaling_limited{template=\"ns/live\",reason=\"DemandUnknown\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
