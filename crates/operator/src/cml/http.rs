//! [`CmlProbe`] over HTTPS with reqwest, reading the answers as CML 2.9's OpenAPI defines them.
//!
//! `system_information` (no auth) says whether CML is ready; then one login (or the cached JWT)
//! and `system_health`, `licensing`, `labs?show_all=true` and `system_stats` at once. Only
//! `system_information` and the login can fail the probe; each other endpoint that fails leaves
//! its own fields unknown and is named in [`CmlReport::failures`].

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use crate::http_error::{chain, preview};
use async_trait::async_trait;
use reqwest::{Client, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};

use super::{
    CmlCredentials, CmlEndpoint, CmlError, CmlErrorKind, CmlProbe, CmlReport, CmlTarget,
    EndpointFailure, LicenseReport, TlsPolicy,
};

/// Schema `SystemInformation`.
#[derive(Deserialize)]
struct SystemInformation {
    ready: bool,
    #[serde(default)]
    version: Option<String>,
}

/// Schema `SystemHealth`: `is_licensed` is required but nullable.
#[derive(Deserialize)]
struct SystemHealth {
    #[serde(default)]
    is_licensed: Option<bool>,
}

/// Schema `LicensingStatus`: every property optional.
#[derive(Deserialize)]
struct Licensing {
    #[serde(default)]
    registration: Option<StatusField>,
    #[serde(default)]
    authorization: Option<StatusField>,
    #[serde(default)]
    product_license: Option<ProductLicense>,
}

#[derive(Deserialize)]
struct StatusField {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct ProductLicense {
    #[serde(default)]
    active: Option<String>,
}

/// Schema `SystemStats`: `computes` maps compute ids to `ComputeHostWithStats`.
#[derive(Deserialize)]
struct SystemStats {
    #[serde(default)]
    computes: Option<HashMap<String, ComputeHostWithStats>>,
}

#[derive(Deserialize)]
struct ComputeHostWithStats {
    #[serde(default)]
    stats: Option<ComputeHostStatsWithDomInfo>,
}

#[derive(Deserialize)]
struct ComputeHostStatsWithDomInfo {
    #[serde(default)]
    dominfo: Option<DomInfo>,
}

/// Schema `DomInfo`: the counts are nullable and not required.
#[derive(Deserialize)]
struct DomInfo {
    #[serde(default)]
    running_nodes: Option<u64>,
    #[serde(default)]
    running_orphans: Option<u64>,
}

/// Running nodes summed over computes, orphans included; any count CML leaves out makes the total
/// unknown, and so does a CML that names no compute at all.
fn running_nodes(stats: &SystemStats) -> Result<u32, String> {
    let computes = match &stats.computes {
        Some(c) if !c.is_empty() => c,
        Some(_) => return Err("system_stats lists no compute".into()),
        None => return Err("system_stats has no computes".into()),
    };
    let mut total: u64 = 0;
    let mut ids: Vec<&String> = computes.keys().collect();
    ids.sort();
    for id in ids {
        let dominfo = computes[id]
            .stats
            .as_ref()
            .and_then(|s| s.dominfo.as_ref())
            .ok_or_else(|| format!("compute {id} has no stats.dominfo"))?;
        for (name, count) in [
            ("running_nodes", dominfo.running_nodes),
            ("running_orphans", dominfo.running_orphans),
        ] {
            let count = count.ok_or_else(|| format!("compute {id} reports no {name} count"))?;
            total = total.saturating_add(count);
        }
    }
    Ok(u32::try_from(total).unwrap_or(u32::MAX))
}

/// The HTTP CML client; keeps one connection pool per TLS policy and one JWT per worker.
pub struct HttpCml {
    timeout: Duration,
    clients: Mutex<HashMap<TlsPolicy, Client>>,
    tokens: Mutex<HashMap<(String, String), String>>,
}

impl HttpCml {
    pub fn new(timeout: Duration) -> HttpCml {
        HttpCml {
            timeout,
            clients: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, tls: &TlsPolicy) -> Result<Client, CmlError> {
        let mut clients = self.clients.locked();
        if let Some(c) = clients.get(tls) {
            return Ok(c.clone());
        }
        let mut builder = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .tls_danger_accept_invalid_certs(tls.insecure_skip_verify);
        if let Some(pem) = &tls.ca_pem {
            let cas = crate::tls::ca_certificates(pem)
                .map_err(|e| CmlError::new(CmlErrorKind::BadResponse, e))?;
            builder = builder.tls_certs_only(cas);
        }
        let client = builder.build().map_err(|e| {
            CmlError::new(
                CmlErrorKind::Unreachable,
                format!("cannot build an HTTP client: {e}"),
            )
        })?;
        clients.insert(tls.clone(), client.clone());
        Ok(client)
    }

    fn token_key(target: &CmlTarget, creds: &CmlCredentials) -> (String, String) {
        (target.endpoint.clone(), creds.username.clone())
    }

    fn cached_token(&self, target: &CmlTarget, creds: &CmlCredentials) -> Option<String> {
        self.tokens
            .locked()
            .get(&Self::token_key(target, creds))
            .cloned()
    }

    /// Logs in; a refusal is [`CmlErrorKind::Unauthorized`], the one error that fails a probe
    /// after `system_information`.
    async fn authenticate(
        &self,
        client: &Client,
        target: &CmlTarget,
        creds: &CmlCredentials,
    ) -> Result<String, CmlError> {
        let url = format!("{}/api/v0/authenticate", target.endpoint);
        let body = serde_json::json!({"username": creds.username, "password": creds.password});
        let response = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&url, e))?;
        let token: String = decode(&url, response).await.map_err(|e| match e.kind {
            CmlErrorKind::Forbidden => CmlError::new(
                CmlErrorKind::Unauthorized,
                format!("login as {} refused: {}", creds.username, e.message),
            ),
            _ => e,
        })?;
        self.tokens
            .locked()
            .insert(Self::token_key(target, creds), token.clone());
        Ok(token)
    }
}

/// One probe's logged-in requests: they share a JWT, renewed at most once when CML refuses it.
struct Session<'a> {
    cml: &'a HttpCml,
    client: &'a Client,
    target: &'a CmlTarget,
    creds: &'a CmlCredentials,
    token: tokio::sync::Mutex<String>,
}

impl Session<'_> {
    async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, CmlError> {
        let url = format!("{}/api/v0/{path_and_query}", self.target.endpoint);
        let used = self.token.lock().await.clone();
        let response = self.send(&url, &used).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return decode(&url, response).await;
        }
        let renewed = {
            let mut token = self.token.lock().await;
            if *token == used {
                *token = self
                    .cml
                    .authenticate(self.client, self.target, self.creds)
                    .await?;
            }
            token.clone()
        };
        let response = self.send(&url, &renewed).await?;
        decode(&url, response).await
    }

    async fn send(&self, url: &str, token: &str) -> Result<reqwest::Response, CmlError> {
        self.client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| transport(url, e))
    }
}

fn transport(url: &str, e: reqwest::Error) -> CmlError {
    let kind = if e.is_timeout() {
        CmlErrorKind::Timeout
    } else if e.is_decode() {
        CmlErrorKind::BadResponse
    } else {
        CmlErrorKind::Unreachable
    };
    CmlError::new(kind, chain(url, &e))
}

/// CML's error body (schemas `Error` and `ErrorResponse`).
#[derive(Deserialize)]
struct ErrorBody {
    description: String,
}

async fn decode<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, CmlError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| transport(url, e))?;
    if !status.is_success() {
        let detail = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => body.description,
            Err(_) => format!("{:?}", preview(&bytes)),
        };
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CmlErrorKind::Forbidden,
            s if s.is_server_error() => CmlErrorKind::ServerError,
            _ => CmlErrorKind::BadResponse,
        };
        return Err(CmlError::new(
            kind,
            format!("{url}: HTTP {status}: {detail}"),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        CmlError::new(
            CmlErrorKind::BadResponse,
            format!("{url}: unexpected answer ({e}): {:?}", preview(&bytes)),
        )
    })
}

/// Keeps an endpoint's answer, or records why its fields stay unknown.
fn answered<T>(
    failures: &mut Vec<EndpointFailure>,
    endpoint: CmlEndpoint,
    result: Result<T, CmlError>,
) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(error) => {
            failures.push(EndpointFailure { endpoint, error });
            None
        }
    }
}

#[async_trait]
impl CmlProbe for HttpCml {
    async fn probe(&self, target: &CmlTarget) -> Result<CmlReport, CmlError> {
        let client = self.client(&target.tls)?;
        let url = format!("{}/api/v0/system_information", target.endpoint);
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| transport(&url, e))?;
        let info: SystemInformation = decode(&url, response).await?;
        let mut report = CmlReport {
            ready: info.ready,
            version: info.version,
            ..CmlReport::default()
        };
        if !info.ready {
            return Ok(report);
        }
        let Some(creds) = target.credentials.as_ref() else {
            report.failures.push(EndpointFailure {
                endpoint: CmlEndpoint::Authenticate,
                error: CmlError::new(
                    CmlErrorKind::Unauthorized,
                    "no credentials configured (spec.cml.credentialsSecretRef): license, labs \
                     and running nodes stay unknown",
                ),
            });
            return Ok(report);
        };
        let token = match self.cached_token(target, creds) {
            Some(t) => t,
            None => self.authenticate(&client, target, creds).await?,
        };
        let session = Session {
            cml: self,
            client: &client,
            target,
            creds,
            token: tokio::sync::Mutex::new(token),
        };
        let (health, licensing, labs, stats) = tokio::join!(
            session.get::<SystemHealth>(CmlEndpoint::SystemHealth.path()),
            session.get::<Licensing>(CmlEndpoint::Licensing.path()),
            session.get::<Vec<String>>("labs?show_all=true"),
            session.get::<SystemStats>(CmlEndpoint::SystemStats.path()),
        );
        // A refused login fails the probe: nothing CML said can be trusted to be ours.
        for result in [
            health.as_ref().err(),
            licensing.as_ref().err(),
            labs.as_ref().err(),
            stats.as_ref().err(),
        ]
        .into_iter()
        .flatten()
        {
            if result.kind == CmlErrorKind::Unauthorized {
                return Err(result.clone());
            }
        }
        let failures = &mut report.failures;
        if let Some(health) = answered(failures, CmlEndpoint::SystemHealth, health) {
            report.licensed = health.is_licensed;
        }
        if let Some(licensing) = answered(failures, CmlEndpoint::Licensing, licensing) {
            report.license = Some(LicenseReport {
                registration: licensing.registration.and_then(|r| r.status),
                authorization: licensing.authorization.and_then(|a| a.status),
                product: licensing.product_license.and_then(|p| p.active),
                ..LicenseReport::default()
            });
        }
        if let Some(labs) = answered(failures, CmlEndpoint::Labs, labs) {
            report.labs = Some(u32::try_from(labs.len()).unwrap_or(u32::MAX));
        }
        let nodes = stats.and_then(|s| {
            running_nodes(&s).map_err(|why| CmlError::new(CmlErrorKind::Incomplete, why))
        });
        report.running_nodes = answered(failures, CmlEndpoint::SystemStats, nodes);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nodes(stats: serde_json::Value) -> Result<u32, String> {
        running_nodes(&serde_json::from_value(stats).expect("parses"))
    }

    fn compute(running: serde_json::Value, orphans: serde_json::Value) -> serde_json::Value {
        json!({"hostname": "c", "is_controller": false, "stats": {"dominfo": {
            "allocated_cpus": 4, "allocated_memory": 8, "total_nodes": 9,
            "running_nodes": running, "running_orphans": orphans}}})
    }

    #[test]
    fn running_nodes_are_summed_over_computes_with_orphans() {
        let stats = json!({"computes": {
            "a": compute(json!(3), json!(0)),
            "b": compute(json!(1), json!(1)),
        }});
        assert_eq!(nodes(stats), Ok(5));
    }

    #[test]
    fn any_missing_or_null_count_makes_running_nodes_unknown() {
        for (running, orphans) in [(json!(null), json!(0)), (json!(2), json!(null))] {
            let stats = json!({"computes": {"a": compute(json!(1), json!(0)), "b": compute(running, orphans)}});
            assert!(nodes(stats).is_err());
        }
        let no_orphans = json!({"computes": {"a": {"hostname": "c", "is_controller": true,
            "stats": {"dominfo": {"allocated_cpus": 0, "allocated_memory": 0, "running_nodes": 2}}}}});
        assert!(nodes(no_orphans).is_err());
    }

    #[test]
    fn a_stats_answer_without_computes_or_in_the_old_shape_is_unknown_not_zero() {
        assert!(nodes(json!({})).is_err());
        assert!(nodes(json!({"computes": {}})).is_err());
        // dominfo beside stats rather than inside it: the shape the client once misread as 0.
        let old = json!({"computes": {"a": {"hostname": "c", "dominfo": {"running_nodes": 5}}}});
        assert!(nodes(old).is_err());
    }

    #[test]
    fn negative_counts_do_not_parse() {
        let stats = json!({"computes": {"a": compute(json!(-1), json!(0))}});
        assert!(serde_json::from_value::<SystemStats>(stats).is_err());
    }
}
