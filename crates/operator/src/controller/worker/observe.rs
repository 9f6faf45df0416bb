//! Observe: gather what the phase machine needs from Kubernetes, the cloud and CML.

mod license;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::{
    cml::{CertificateFingerprint, CmlError, CmlErrorKind, CmlReport, CmlTarget, TlsPolicy},
    control_plane::WorkerCapacity,
    controller::{
        error::Result,
        fleet::{Freshness, provider_key},
        worker::context::WorkerContext,
    },
    crd::{
        CertificateTrust, CmlAccess, DesiredState, ProviderKind, SKIP_DRAIN_ANNOTATION,
        TRUST_CERTIFICATE_ANNOTATION, Worker, WorkerPhase, WorkerStatus, WorkerTemplate,
        conditions,
    },
    mirror::RemoteName,
    phase_machine::{
        CmlFacts, InstanceFacts, LaunchFacts, PlatformFacts, TemplateFacts, WorkerFacts,
    },
    provider::{Instance, InstanceState, Provider, ProviderUnavailable, SimulatedCml},
    remote::RemoteError,
};

/// Everything observed for one reconcile.
pub struct Observed {
    pub facts: WorkerFacts,
    pub template: Option<Arc<WorkerTemplate>>,
    /// The provider the worker's instance lives in (or will).
    pub provider: Option<ChosenProvider>,
    /// CML's answer, when the instance runs and CML was asked.
    pub cml: Option<ProbedCml>,
    /// The Control Plane API's view of the worker's usage, when it was asked: `Ok(None)` when
    /// it does not know the worker.
    pub usage: Option<Result<Option<WorkerCapacity>, RemoteError>>,
}

impl Observed {
    /// CML's report, when it answered.
    pub fn cml_report(&self) -> Option<&CmlReport> {
        self.cml.as_ref().and_then(|c| c.answer.as_ref().ok())
    }

    /// The probe's request, with its TLS policy, when one was sent: where a licensing call goes.
    pub fn cml_target(&self) -> Option<&CmlTarget> {
        self.cml.as_ref().and_then(|c| c.target.as_ref())
    }

    /// Why CML could not be asked or did not answer, when it was probed and failed.
    pub fn cml_error(&self) -> Option<&CmlError> {
        self.cml.as_ref().and_then(|c| c.answer.as_ref().err())
    }
}

/// The provider the worker's instance lives in (or will), and where.
pub struct ChosenProvider {
    pub kind: ProviderKind,
    /// The region asked for; `None` is the provider's default.
    pub region: Option<String>,
    pub provider: Arc<Provider>,
}

/// One probe of the worker's CML.
pub struct ProbedCml {
    /// The endpoint asked; empty when the instance has no address to ask.
    pub endpoint: String,
    pub answer: Result<CmlReport, CmlError>,
    /// The request as sent, with its credentials and TLS policy, for the licensing call the
    /// plan may ask for; `None` when it could not be built.
    pub target: Option<CmlTarget>,
}

pub async fn observe(worker: &Worker, ctx: &WorkerContext) -> Result<Observed> {
    let namespace = worker.namespace().unwrap_or_default();
    let no_status = WorkerStatus::default();
    let status = worker.status.as_ref().unwrap_or(&no_status);
    let template = ctx
        .templates
        .get(&ctx.client, &namespace, &worker.spec.template_ref.name)
        .await?;
    let template_facts = match &template {
        None => TemplateFacts::Missing,
        Some(t) => template_readiness(t),
    };
    let provider = which_provider(ctx, status, template.as_deref()).await?;
    let instance = instance_facts(worker, ctx, status, provider.as_ref()).await?;

    let running = matches!(&instance, InstanceFacts::Seen(i) if i.state == InstanceState::Running);
    let trusted = trusted_certificates(worker, &instance);
    let (cml, usage) = tokio::join!(
        probe_if_running(
            ctx,
            &namespace,
            running,
            &instance,
            template.as_deref(),
            provider.as_ref(),
            &trusted,
        ),
        ask_usage(worker, ctx, running),
    );
    let platform = platform_facts(ctx, usage.as_ref());
    let cml_facts = cml_facts(cml.as_ref());
    let license = license::facts(
        worker,
        ctx,
        template.as_deref(),
        license::view(cml.as_ref()),
    );

    let launch = launch_facts(status);
    let facts = WorkerFacts {
        now: Timestamp::now(),
        deleting: worker.metadata.deletion_timestamp.is_some(),
        skip_drain: worker
            .annotations()
            .get(SKIP_DRAIN_ANNOTATION)
            .is_some_and(|v| v == "true"),
        desired: worker.spec.desired_state,
        phase: status.phase,
        template: template_facts,
        launch,
        instance,
        cml: cml_facts,
        platform,
        drain_started_at: status.drain_started_at.as_ref().map(|t| t.0),
        license,
    };
    Ok(Observed {
        facts,
        template,
        provider,
        cml,
        usage,
    })
}

async fn which_provider(
    ctx: &WorkerContext,
    status: &WorkerStatus,
    template: Option<&WorkerTemplate>,
) -> Result<Option<ChosenProvider>> {
    // The instance's own record wins: the template may have been deleted or moved region since.
    let recorded = status.instance.as_ref();
    let (kind, region) = match (recorded.and_then(|i| i.provider), template) {
        (Some(kind), _) => (kind, recorded.and_then(|i| i.region.clone())),
        (None, Some(t)) => (t.spec.provider, t.spec.region.clone()),
        (None, None) => return Ok(None),
    };
    let provider = ctx.providers.get(kind, region.as_deref()).await?;
    Ok(Some(ChosenProvider {
        kind,
        region,
        provider,
    }))
}

/// The recorded instance as the fleet cache sees it.
async fn instance_facts(
    worker: &Worker,
    ctx: &WorkerContext,
    status: &WorkerStatus,
    provider: Option<&ChosenProvider>,
) -> Result<InstanceFacts> {
    let (Some(rec), Some(chosen)) = (status.instance.as_ref(), provider) else {
        return Ok(InstanceFacts::NotLaunched);
    };
    let key = provider_key(
        chosen.kind,
        chosen.region.as_deref(),
        ctx.providers.default_region(),
    );
    let seen = ctx
        .fleet
        .instance(
            &key,
            chosen.provider.as_ref(),
            &ctx.settings.cluster_id,
            &rec.id,
            freshness(worker, status),
        )
        .await?;
    Ok(match seen {
        Some(i) => InstanceFacts::Seen(i),
        None => InstanceFacts::Missing { id: rec.id.clone() },
    })
}

async fn probe_if_running(
    ctx: &WorkerContext,
    namespace: &str,
    running: bool,
    instance: &InstanceFacts,
    template: Option<&WorkerTemplate>,
    provider: Option<&ChosenProvider>,
    trusted: &Trusted,
) -> Option<ProbedCml> {
    match (instance, template, provider) {
        (InstanceFacts::Seen(i), Some(t), Some(chosen)) if running => {
            Some(probe_cml(ctx, namespace, t, chosen.kind, i, trusted).await)
        }
        _ => None,
    }
}

/// The worker's usage from the Control Plane API, when it is configured and the worker runs.
async fn ask_usage(
    worker: &Worker,
    ctx: &WorkerContext,
    running: bool,
) -> Option<Result<Option<WorkerCapacity>, RemoteError>> {
    match (ctx.remotes.control_plane(), worker.uid()) {
        (Some(cp), Some(uid)) if running => Some(
            ctx.remotes
                .bounded(RemoteName::ControlPlane, cp.worker_capacity(&uid))
                .await,
        ),
        _ => None,
    }
}

fn platform_facts(
    ctx: &WorkerContext,
    usage: Option<&Result<Option<WorkerCapacity>, RemoteError>>,
) -> PlatformFacts {
    match (usage, ctx.remotes.control_plane()) {
        (_, None) => PlatformFacts::NotConfigured,
        (None, Some(_)) => PlatformFacts::NotAsked,
        (Some(Ok(Some(c))), _) => PlatformFacts::Known {
            running: c.running_instances,
            scheduled: c.scheduled_instances,
        },
        (Some(Ok(None)), _) => PlatformFacts::Unknown {
            why: "the Control Plane API does not know the worker".into(),
        },
        (Some(Err(e)), _) => PlatformFacts::Unknown {
            why: format!("Control Plane API: {e}"),
        },
    }
}

fn cml_facts(cml: Option<&ProbedCml>) -> CmlFacts {
    match cml.map(|c| &c.answer) {
        None => CmlFacts::NotProbed,
        Some(Ok(r)) if r.ready => CmlFacts::Ready {
            running_nodes: r.running_nodes,
        },
        Some(Ok(_)) => CmlFacts::NotReady,
        Some(Err(e)) => CmlFacts::Unreachable {
            message: e.to_string(),
        },
    }
}

fn launch_facts(status: &WorkerStatus) -> LaunchFacts {
    let launch = status.launch.as_ref().cloned().unwrap_or_default();
    LaunchFacts {
        attempts: launch.attempts,
        token_outstanding: launch.client_token.is_some(),
        started_at: launch.started_at.map(|t| t.0),
    }
}

/// Settled: Running or Stopped as asked, and not being deleted. Anything else is in motion and
/// needs the instance as of the poll interval.
fn freshness(worker: &Worker, status: &WorkerStatus) -> Freshness {
    let settled = matches!(
        (status.phase, worker.spec.desired_state),
        (Some(WorkerPhase::Running), DesiredState::Running)
            | (Some(WorkerPhase::Stopped), DesiredState::Stopped)
    );
    if settled && worker.metadata.deletion_timestamp.is_none() {
        Freshness::Settled
    } else {
        Freshness::InMotion
    }
}

fn template_readiness(t: &WorkerTemplate) -> TemplateFacts {
    let timeouts = t.spec.scaling.timeouts();
    let Some(status) = &t.status else {
        return TemplateFacts::Unresolved(timeouts);
    };
    let ready = conditions::find(&status.conditions, conditions::ConditionType::Ready);
    match (ready, &status.resolved_image_id) {
        (Some(c), Some(_))
            if c.status == "True" && status.observed_generation == t.metadata.generation =>
        {
            TemplateFacts::Ready(timeouts)
        }
        (Some(c), _) if c.status != "True" => TemplateFacts::NotReady {
            reason: c.reason.clone(),
            message: c.message.clone(),
            timeouts,
        },
        _ => TemplateFacts::Unresolved(timeouts),
    }
}

/// Asks the worker's CML API and counts the outcome.
async fn probe_cml(
    ctx: &WorkerContext,
    namespace: &str,
    template: &WorkerTemplate,
    kind: ProviderKind,
    instance: &Instance,
    trusted: &Trusted,
) -> ProbedCml {
    let probe = ask_cml(ctx, namespace, template, kind, instance, trusted).await;
    ctx.metrics.cml_probed(match &probe.answer {
        Ok(r) if r.failures.is_empty() => "ok",
        Ok(_) => "degraded",
        Err(e) => e.kind.label(),
    });
    probe
}

/// Asks the worker's CML API; failures to even build the request become facts too.
async fn ask_cml(
    ctx: &WorkerContext,
    namespace: &str,
    template: &WorkerTemplate,
    kind: ProviderKind,
    instance: &Instance,
    trusted: &Trusted,
) -> ProbedCml {
    let failed = |endpoint, e| ProbedCml {
        endpoint,
        answer: Err(e),
        target: None,
    };
    let access = &template.spec.cml;
    let endpoint = match cml_endpoint(ctx, access, kind, instance) {
        Ok(endpoint) => endpoint,
        Err(e) => return failed(String::new(), e),
    };
    let target = match cml_target(ctx, namespace, access, &endpoint, instance, trusted).await {
        Ok(target) => target,
        Err(e) => return failed(endpoint, e),
    };
    let answer = match ctx.cml(kind) {
        Some(cml) => cml.probe(&target).await,
        None => Err(CmlError::new(
            CmlErrorKind::Unreachable,
            ProviderUnavailable("simulated").to_string(),
        )),
    };
    if let (Err(e), Some(r)) = (&answer, &access.credentials_secret_ref)
        && e.kind == CmlErrorKind::Unauthorized
    {
        // The Secret may have been fixed or rotated since it was read.
        ctx.secrets.forget(namespace, &r.name);
    }
    ProbedCml {
        endpoint,
        answer,
        target: Some(target),
    }
}

fn cml_endpoint(
    ctx: &WorkerContext,
    access: &CmlAccess,
    kind: ProviderKind,
    instance: &Instance,
) -> Result<String, CmlError> {
    let stand_in = matches!(
        (kind, ctx.providers.simulated_cml()),
        (ProviderKind::Simulated, Some(SimulatedCml::StandIn(_)))
    );
    match kind {
        ProviderKind::Simulated if stand_in => Ok(format!("simulated://{}", instance.id)),
        ProviderKind::Simulated | ProviderKind::Aws => {
            let ip = if access.use_private_ip {
                instance.private_ip.as_ref()
            } else {
                instance.public_ip.as_ref().or(instance.private_ip.as_ref())
            };
            match ctx.settings.cml_host_override.as_ref().or(ip) {
                Some(host) => Ok(format!("https://{host}:{}", access.port)),
                None => Err(CmlError::new(
                    CmlErrorKind::Unreachable,
                    format!("instance {} has no IP address", instance.id),
                )),
            }
        }
    }
}

/// The probe's target, with its credentials and CA read from their Secrets.
async fn cml_target(
    ctx: &WorkerContext,
    namespace: &str,
    access: &CmlAccess,
    endpoint: &str,
    instance: &Instance,
    trusted: &Trusted,
) -> Result<CmlTarget, CmlError> {
    let credentials = match &access.credentials_secret_ref {
        Some(r) => Some(
            ctx.secrets
                .credentials(&ctx.client, namespace, &r.name)
                .await
                .map_err(|e| CmlError::new(CmlErrorKind::Unauthorized, e.to_string()))?,
        ),
        None => None,
    };
    let tls = tls_policy(ctx, namespace, access, trusted).await?;
    Ok(CmlTarget {
        endpoint: endpoint.to_owned(),
        credentials,
        tls,
        booted_at: instance.launch_time,
    })
}

/// The certificates this worker's CML may present when none is verified by a CA: the one
/// pinned for its current instance and the one its annotation names. An annotation that is
/// not a fingerprint is an error, so a typo never widens the trust.
type Trusted = Result<Vec<CertificateFingerprint>, String>;

fn trusted_certificates(worker: &Worker, instance: &InstanceFacts) -> Trusted {
    let current = match instance {
        InstanceFacts::Seen(i) => Some(i.id.as_str()),
        _ => None,
    };
    let pinned = worker
        .status
        .as_ref()
        .and_then(|s| s.cml.as_ref())
        .and_then(|c| c.certificate.as_ref())
        .filter(|c| c.trust == CertificateTrust::Pinned)
        .filter(|c| current.is_some() && c.instance_id.as_deref() == current)
        .and_then(|c| c.sha256.as_deref())
        .and_then(|f| f.parse().ok());
    let annotated = match worker.annotations().get(TRUST_CERTIFICATE_ANNOTATION) {
        Some(value) => Some(
            value
                .parse::<CertificateFingerprint>()
                .map_err(|e| format!("annotation {TRUST_CERTIFICATE_ANNOTATION}: {e}"))?,
        ),
        None => None,
    };
    Ok(pinned.into_iter().chain(annotated).collect())
}

/// How to trust this worker's certificate: the explicit opt-out, the template's CA, or the
/// pinned certificates.
async fn tls_policy(
    ctx: &WorkerContext,
    namespace: &str,
    access: &CmlAccess,
    trusted: &Trusted,
) -> Result<TlsPolicy, CmlError> {
    if access.insecure_skip_tls_verify {
        return Ok(TlsPolicy::SkipVerify);
    }
    if let Some(r) = &access.ca_secret_ref {
        let pem = ctx
            .secrets
            .key(&ctx.client, namespace, &r.name, &r.key)
            .await
            .map_err(|e| CmlError::new(CmlErrorKind::Unreachable, e.to_string()))?;
        return Ok(TlsPolicy::Ca(pem));
    }
    match trusted {
        Ok(pins) => Ok(TlsPolicy::Pinned(pins.clone())),
        Err(why) => Err(CmlError::new(
            CmlErrorKind::CertificateChanged,
            format!("{why}; nothing was sent"),
        )),
    }
}
