//! Leader election on a `coordination.k8s.io/v1` Lease, modelled on client-go's: a replica takes
//! the Lease when its holder has not renewed it for its duration (judged from when this replica
//! saw the record change, not from the holder's clock), renews every retry period, and stops
//! leading if it cannot renew within the renew deadline, before the Lease can expire. Every write
//! carries the resourceVersion read, so two replicas never both win.

pub mod flags;

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The holder and record this replica last saw, and when it saw the record change.
struct Observed {
    record: Option<(Option<String>, Option<String>)>,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(client: Client, config: ElectionConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Runs until `stop` resolves: `leading` is true while this replica leads. A leader steps
    /// down the moment the renew deadline passes since its last renewal, even while an attempt
    /// hangs on an unreachable API server. On `stop` a held Lease is released, so a standby takes
    /// over at its next retry.
    pub async fn run(self, leading: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let c = &self.config;
        let mut observed = Observed {
            record: None,
            at: Instant::now(),
        };
        let mut last_renew: Option<Instant> = None;
        let mut last_failure: Option<String> = None;
        loop {
            let attempt =
                tokio::time::timeout(c.retry_period, self.try_acquire_or_renew(&mut observed));
            tokio::select! {
                result = attempt => {
                    let failure = match &result {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some(format!("no answer within {:?}", c.retry_period)),
                    };
                    // Said once per kind of failure, e.g. a 403 from missing RBAC for Leases.
                    if failure.is_some() && failure != last_failure {
                        warn!(lease = %c.name, namespace = %c.namespace, error = failure.as_deref(), "lease request failed");
                    }
                    last_failure = failure;
                    if matches!(result, Ok(Ok(true))) {
                        last_renew = Some(Instant::now());
                        if !*leading.borrow() {
                            info!(identity = %c.identity, lease = %c.name, "became the leader");
                            let _ = leading.send(true);
                        }
                    }
                }
                _ = self.renew_deadline_passes(&leading, last_renew) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(c.retry_period) => {}
                _ = self.renew_deadline_passes(&leading, last_renew) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if *leading.borrow() {
            let _ = leading.send(false);
            self.release().await;
        }
    }

    /// Resolves when this replica leads and its renew deadline passes, after stepping down;
    /// never otherwise.
    async fn renew_deadline_passes(&self, leading: &watch::Sender<bool>, last: Option<Instant>) {
        let Some(last) = last.filter(|_| *leading.borrow()) else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(last + self.config.renew_deadline).await;
        warn!(identity = %self.config.identity, "could not renew the lease within the renew deadline; stepping down");
        let _ = leading.send(false);
    }

    /// One round of client-go's `tryAcquireOrRenew`: `Ok(true)` when this replica holds the Lease.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<bool, kube::Error> {
        let c = &self.config;
        let seconds = i32::try_from(c.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&c.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(c.name.clone()),
                    namespace: Some(c.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(c.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            self.api.create(&PostParams::default(), &lease).await?;
            return Ok(true);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
        );
        if observed.record.as_ref() != Some(&record) {
            observed.record = Some(record);
            observed.at = Instant::now();
        }
        let mine = holder.as_deref() == Some(c.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(c.lease_duration);
        if !mine && holder.is_some() && observed.at.elapsed() < duration {
            return Ok(false);
        }
        let mut next = spec.clone();
        next.holder_identity = Some(c.identity.clone());
        next.lease_duration_seconds = Some(seconds);
        next.renew_time = Some(now_micro());
        if !mine {
            next.acquire_time = Some(now_micro());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        // `replace` sends the resourceVersion read: a concurrent write makes this one fail.
        self.api
            .replace(&c.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }

    /// Gives the Lease up: no holder and a one-second duration, as client-go does.
    async fn release(&self) {
        let c = &self.config;
        let Ok(Some(mut lease)) = self.api.get_opt(&c.name).await else {
            return;
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(c.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        lease.spec = Some(spec);
        match self
            .api
            .replace(&c.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(identity = %c.identity, "released the lease"),
            Err(e) => warn!(error = %e, "could not release the lease"),
        }
    }
}
