//! [`CmlProbe`] over HTTPS with reqwest: `system_information` without auth, then `authenticate`
//! and the JWT for `system_health`, `licensing`, `labs` and `system_stats`, re-authenticating once
//! on 401.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use reqwest::{Client, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};

use super::{
    CmlCredentials, CmlError, CmlErrorKind, CmlProbe, CmlReport, CmlTarget, LicenseReport,
    TlsPolicy,
};

#[derive(Deserialize)]
struct SystemInformation {
    ready: bool,
    version: Option<String>,
}

#[derive(Deserialize)]
struct SystemHealth {
    #[serde(default)]
    is_licensed: Option<bool>,
}

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

#[derive(Deserialize)]
struct SystemStats {
    #[serde(default)]
    computes: HashMap<String, ComputeStats>,
}

#[derive(Deserialize)]
struct ComputeStats {
    #[serde(default)]
    dominfo: Option<DomInfo>,
}

#[derive(Deserialize)]
struct DomInfo {
    #[serde(default)]
    running_nodes: u32,
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
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(tls) {
            return Ok(c.clone());
        }
        let mut builder = Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .tls_danger_accept_invalid_certs(tls.insecure_skip_verify);
        if let Some(pem) = &tls.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).map_err(|e| {
                CmlError::new(
                    CmlErrorKind::BadResponse,
                    format!("the CA bundle is not valid PEM: {e}"),
                )
            })?;
            builder = builder.tls_certs_only([ca]);
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
        let token: String = decode(&url, response).await?;
        let key = (target.endpoint.clone(), creds.username.clone());
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token.clone());
        Ok(token)
    }

    /// A GET with the worker's JWT; on 401 the token is renewed once.
    async fn authed_get<T: DeserializeOwned>(
        &self,
        client: &Client,
        target: &CmlTarget,
        creds: &CmlCredentials,
        path: &str,
    ) -> Result<T, CmlError> {
        let url = format!("{}/api/v0/{path}", target.endpoint);
        let key = (target.endpoint.clone(), creds.username.clone());
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let mut token = match cached {
            Some(t) => t,
            None => self.authenticate(client, target, creds).await?,
        };
        for renewed in [false, true] {
            let response = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| transport(&url, e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !renewed {
                token = self.authenticate(client, target, creds).await?;
                continue;
            }
            return decode(&url, response).await;
        }
        Err(CmlError::new(
            CmlErrorKind::Unauthorized,
            format!("{url}: token refused after renewal"),
        ))
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
    let mut message = format!("{url}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    CmlError::new(kind, message)
}

async fn decode<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, CmlError> {
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(CmlError::new(
            CmlErrorKind::Unauthorized,
            format!("{url}: HTTP {status}"),
        ));
    }
    if status.is_server_error() {
        return Err(CmlError::new(
            CmlErrorKind::ServerError,
            format!("{url}: HTTP {status}"),
        ));
    }
    if !status.is_success() {
        return Err(CmlError::new(
            CmlErrorKind::BadResponse,
            format!("{url}: HTTP {status}"),
        ));
    }
    let bytes = response.bytes().await.map_err(|e| transport(url, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let shown: String = String::from_utf8_lossy(&bytes).chars().take(120).collect();
        CmlError::new(
            CmlErrorKind::BadResponse,
            format!("{url}: unexpected answer ({e}): {shown:?}"),
        )
    })
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
        let Some(creds) = target.credentials.as_ref().filter(|_| info.ready) else {
            return Ok(report);
        };
        let health: SystemHealth = self
            .authed_get(&client, target, creds, "system_health")
            .await?;
        let licensing: Licensing = self.authed_get(&client, target, creds, "licensing").await?;
        let labs: Vec<serde_json::Value> = self.authed_get(&client, target, creds, "labs").await?;
        let stats: SystemStats = self
            .authed_get(&client, target, creds, "system_stats")
            .await?;
        report.licensed = health.is_licensed;
        report.license = Some(LicenseReport {
            registration: licensing.registration.and_then(|r| r.status),
            authorization: licensing.authorization.and_then(|a| a.status),
            product: licensing.product_license.and_then(|p| p.active),
        });
        report.labs = Some(u32::try_from(labs.len()).unwrap_or(u32::MAX));
        report.running_nodes = Some(
            stats
                .computes
                .values()
                .filter_map(|c| c.dominfo.as_ref())
                .map(|d| d.running_nodes)
                .sum(),
        );
        Ok(report)
    }
}
