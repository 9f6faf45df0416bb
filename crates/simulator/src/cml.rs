//! A CML stand-in for workers of the simulated cloud: ready a while after its machine started
//! (or, when the cloud did not say, after it was first asked), idle, and licensed through Smart
//! Licensing like a real one: a registration completes a short while after it is requested and
//! holds a seat in a simulated Smart Account until it is given back. It sends nothing over the
//! network, and any process probing the same instance gets the same answer.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::time::Instant;

use ccm_ports::cml::{
    CmlError, CmlLicensing, CmlProbe, CmlReport, CmlTarget, Deregistration, LicenseAnswer,
    LicenseFeature, LicenseReport, RegistrationRequest,
};

/// The node-count feature the stand-in lists.
pub const NODE_COUNT_FEATURE: &str =
    "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_2607650b-6ca8-46d5-81e5-e6688b7383c4";

/// A registration token the stand-in refuses, as Cisco refuses one that is not valid.
pub const INVALID_TOKEN_PREFIX: &str = "invalid";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Registration {
    NotRegistered,
    Pending { since: Instant, valid: bool },
    Completed,
    Failed,
}

#[derive(Clone, Debug)]
struct Licensing {
    registration: Registration,
    product: String,
    node_count: u32,
}

impl Default for Licensing {
    fn default() -> Self {
        Licensing {
            registration: Registration::NotRegistered,
            product: "CML_Enterprise".into(),
            node_count: 0,
        }
    }
}

pub struct SimulatedCml {
    boot: Duration,
    license_delay: Duration,
    first_seen: Mutex<HashMap<String, Instant>>,
    licensing: Mutex<HashMap<String, Licensing>>,
    /// The Smart Account: seats held, product instance -> product.
    seats: Mutex<BTreeMap<String, String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The product instance of the machine behind `endpoint` (`simulated://<instance id>`).
fn product_instance(endpoint: &str) -> String {
    let instance = endpoint.rsplit('/').next().unwrap_or(endpoint);
    format!("simulated-{instance}")
}

impl SimulatedCml {
    /// Ready `boot` after the machine started; registrations complete after 3 s.
    pub fn new(boot: Duration) -> SimulatedCml {
        SimulatedCml::with_license_delay(boot, Duration::from_secs(3))
    }

    pub fn with_license_delay(boot: Duration, license_delay: Duration) -> SimulatedCml {
        SimulatedCml {
            boot,
            license_delay,
            first_seen: Mutex::new(HashMap::new()),
            licensing: Mutex::new(HashMap::new()),
            seats: Mutex::new(BTreeMap::new()),
        }
    }

    /// Seats the simulated Smart Account holds: product instance -> product.
    pub fn seats_held(&self) -> BTreeMap<String, String> {
        locked(&self.seats).clone()
    }

    fn ready(&self, target: &CmlTarget) -> bool {
        match target.booted_at {
            Some(booted) => {
                let up = Timestamp::now().duration_since(booted);
                !up.is_negative() && up.unsigned_abs() >= self.boot
            }
            None => {
                let now = Instant::now();
                let first = *locked(&self.first_seen)
                    .entry(target.endpoint.clone())
                    .or_insert(now);
                now.duration_since(first) >= self.boot
            }
        }
    }

    /// The machine's licensing, with a registration whose delay has passed settled.
    fn settled(&self, endpoint: &str) -> Licensing {
        let mut all = locked(&self.licensing);
        let l = all.entry(endpoint.to_owned()).or_default();
        if let Registration::Pending { since, valid } = l.registration
            && since.elapsed() >= self.license_delay
        {
            l.registration = if valid {
                locked(&self.seats).insert(product_instance(endpoint), l.product.clone());
                Registration::Completed
            } else {
                Registration::Failed
            };
        }
        l.clone()
    }

    fn report(&self, endpoint: &str) -> LicenseReport {
        let l = self.settled(endpoint);
        let (registration, authorization) = match l.registration {
            Registration::NotRegistered => ("NOT_REGISTERED", "EVAL"),
            Registration::Pending { .. } => ("IN_PROGRESS", "EVAL"),
            Registration::Completed => ("COMPLETED", "IN_COMPLIANCE"),
            Registration::Failed => ("FAILED", "EVAL"),
        };
        LicenseReport {
            registration: Some(registration.into()),
            authorization: Some(authorization.into()),
            product: Some(l.product.clone()),
            product_instance: Some(product_instance(endpoint)),
            hostname: Some(endpoint.rsplit('/').next().unwrap_or(endpoint).to_owned()),
            failure: (l.registration == Registration::Failed)
                .then(|| "The token is not valid".to_owned()),
            authorization_expires: None,
            features: vec![LicenseFeature {
                id: NODE_COUNT_FEATURE.into(),
                in_use: Some(l.node_count),
                min: Some(0),
                max: Some(300),
            }],
        }
    }
}

#[async_trait]
impl CmlProbe for SimulatedCml {
    async fn probe(&self, target: &CmlTarget) -> Result<CmlReport, CmlError> {
        let ready = self.ready(target);
        let license = ready.then(|| self.report(&target.endpoint));
        Ok(CmlReport {
            ready,
            version: Some("2.9.1+simulated".into()),
            licensed: license
                .as_ref()
                .map(|l| l.registration.as_deref() == Some("COMPLETED")),
            labs: ready.then_some(0),
            running_nodes: ready.then_some(0),
            license,
            // No TLS here: nothing to pin.
            certificate: None,
            failures: Vec::new(),
        })
    }
}

#[async_trait]
impl CmlLicensing for SimulatedCml {
    async fn register(
        &self,
        target: &CmlTarget,
        request: &RegistrationRequest,
    ) -> Result<LicenseAnswer, CmlError> {
        let current = self.settled(&target.endpoint);
        let mut all = locked(&self.licensing);
        let l = all.entry(target.endpoint.clone()).or_default();
        match current.registration {
            Registration::Pending { .. } => {
                return Ok(LicenseAnswer::Busy("a registration is in progress".into()));
            }
            Registration::Completed => {
                return Ok(LicenseAnswer::Refused("already registered".into()));
            }
            _ => {}
        }
        if let Some(product) = &request.product {
            if *product == l.product {
                return Ok(LicenseAnswer::Refused(format!(
                    "product license: {product} is already active"
                )));
            }
            l.product = product.clone();
        }
        l.registration = Registration::Pending {
            since: Instant::now(),
            valid: !request.token.0.starts_with(INVALID_TOKEN_PREFIX),
        };
        Ok(LicenseAnswer::Accepted)
    }

    async fn set_feature(
        &self,
        target: &CmlTarget,
        id: &str,
        count: u32,
    ) -> Result<LicenseAnswer, CmlError> {
        let mut all = locked(&self.licensing);
        let l = all.entry(target.endpoint.clone()).or_default();
        if id != NODE_COUNT_FEATURE || count > 300 {
            return Ok(LicenseAnswer::Refused(format!(
                "feature {id}: count {count}"
            )));
        }
        l.node_count = count;
        Ok(LicenseAnswer::Accepted)
    }

    async fn deregister(&self, target: &CmlTarget) -> Result<Deregistration, CmlError> {
        let current = self.settled(&target.endpoint);
        if current.registration != Registration::Completed {
            let mut all = locked(&self.licensing);
            let l = all.entry(target.endpoint.clone()).or_default();
            l.registration = Registration::NotRegistered;
            return Ok(Deregistration::NotRegistered(
                "The Product has already been deregistered".into(),
            ));
        }
        locked(&self.licensing)
            .entry(target.endpoint.clone())
            .or_default()
            .registration = Registration::NotRegistered;
        locked(&self.seats).remove(&product_instance(&target.endpoint));
        Ok(Deregistration::Freed)
    }
}

#[cfg(test)]
mod tests {
    use ccm_ports::cml::{LicenseToken, TlsPolicy};

    use super::*;

    fn target() -> CmlTarget {
        CmlTarget {
            endpoint: "simulated://i-1".into(),
            credentials: None,
            tls: TlsPolicy::default(),
            booted_at: None,
        }
    }

    fn request(token: &str) -> RegistrationRequest {
        RegistrationRequest {
            transport: None,
            product: None,
            token: LicenseToken(token.into()),
        }
    }

    async fn registration(cml: &SimulatedCml) -> Option<String> {
        let report = cml.probe(&target()).await.expect("probe");
        report.license.and_then(|l| l.registration)
    }

    #[tokio::test]
    async fn a_registration_completes_after_its_delay_and_holds_a_seat_until_given_back() {
        let cml = SimulatedCml::with_license_delay(Duration::ZERO, Duration::from_millis(50));
        assert_eq!(registration(&cml).await.as_deref(), Some("NOT_REGISTERED"));
        let answer = cml
            .register(&target(), &request("tok"))
            .await
            .expect("register");
        assert_eq!(answer, LicenseAnswer::Accepted);
        assert_eq!(registration(&cml).await.as_deref(), Some("IN_PROGRESS"));
        let busy = cml
            .register(&target(), &request("tok"))
            .await
            .expect("register");
        assert!(matches!(busy, LicenseAnswer::Busy(_)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(registration(&cml).await.as_deref(), Some("COMPLETED"));
        assert_eq!(cml.seats_held().len(), 1);
        let gone = cml.deregister(&target()).await.expect("deregister");
        assert_eq!(gone, Deregistration::Freed);
        assert!(cml.seats_held().is_empty());
        assert_eq!(registration(&cml).await.as_deref(), Some("NOT_REGISTERED"));
    }

    #[tokio::test]
    async fn an_invalid_token_fails_with_a_reason_and_holds_nothing() {
        let cml = SimulatedCml::with_license_delay(Duration::ZERO, Duration::ZERO);
        cml.register(&target(), &request("invalid-token"))
            .await
            .expect("register");
        let report = cml.probe(&target()).await.expect("probe");
        let license = report.license.expect("license");
        assert_eq!(license.registration.as_deref(), Some("FAILED"));
        assert!(license.failure.is_some());
        assert!(cml.seats_held().is_empty());
    }
}
