//! [`CmlProbe`] and [`CmlLicensing`] over HTTPS with reqwest, reading the answers as CML 2.9's
//! OpenAPI defines them.
//!
//! `system_information` (no auth) says whether CML is ready; then one login (or the cached JWT)
//! and `system_health`, `licensing`, `labs?show_all=true` and `system_stats` at once. Only
//! `system_information` and the login can fail the probe; each other endpoint that fails leaves
//! its own fields unknown and is named in [`CmlReport::failures`].
//!
//! Licensing (`tests/contracts/cml-licensing.md`): a registration sets the transport, then the
//! product license, then posts the token, stopping at the first call CML does not accept; the
//! statuses CML documents for each call become the port's answers (accepted, busy, refused), any
//! other is an error. The token is a secret: it is never put into an error, and any text CML
//! sends back is cleaned of it first (validation errors echo their input).

use crate::{expiring::Expiring, lock::Locked};
use std::{collections::HashMap, sync::Mutex, time::Duration};

use crate::http_error::{chain, preview};
use async_trait::async_trait;
use reqwest::{Client, Method, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    CmlCredentials, CmlEndpoint, CmlError, CmlErrorKind, CmlLicensing, CmlProbe, CmlReport,
    CmlTarget, Deregistration, EndpointFailure, LicenseAnswer, LicenseFeature, LicenseReport,
    LicenseToken, LicenseTransport, RegistrationRequest, TlsPolicy,
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
    udi: Option<Udi>,
    #[serde(default)]
    registration: Option<RegistrationStatus>,
    #[serde(default)]
    authorization: Option<AuthorizationStatus>,
    #[serde(default)]
    product_license: Option<ProductLicense>,
    /// Read entry by entry (see [`feature`]): one entry the client cannot use does not cost the
    /// registration and authorization read beside it.
    #[serde(default)]
    features: Option<Vec<Value>>,
}

/// Schema `Udi`: the product instance as the Smart Software Manager knows it.
#[derive(Deserialize)]
struct Udi {
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    product_uuid: Option<String>,
}

/// Schema `Registration`.
#[derive(Deserialize)]
struct RegistrationStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    register_time: Option<TimeInfo>,
}

/// Schema `LicensingTimeInfo`: only the failure is read.
#[derive(Deserialize)]
struct TimeInfo {
    #[serde(default)]
    failure: Option<String>,
}

/// Schema `Authorization`.
#[derive(Deserialize)]
struct AuthorizationStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    expires: Option<String>,
}

#[derive(Deserialize)]
struct ProductLicense {
    #[serde(default)]
    active: Option<String>,
}

fn license_report(licensing: Licensing) -> LicenseReport {
    let (registration, failure) = match licensing.registration {
        Some(r) => (r.status, r.register_time.and_then(|t| t.failure)),
        None => (None, None),
    };
    let (authorization, authorization_expires) = match licensing.authorization {
        Some(a) => (a.status, a.expires),
        None => (None, None),
    };
    let (hostname, product_instance) = match licensing.udi {
        Some(udi) => (udi.hostname, udi.product_uuid),
        None => (None, None),
    };
    LicenseReport {
        registration,
        authorization,
        product: licensing.product_license.and_then(|p| p.active),
        product_instance,
        hostname,
        failure,
        authorization_expires,
        features: licensing
            .features
            .unwrap_or_default()
            .iter()
            .filter_map(feature)
            .collect(),
    }
}

/// One `LicensingFeature`; only its `id` is required, so an entry without one is left out, and a
/// count that is no `u32` (the schema allows any integer for `in_use`) is unknown.
fn feature(entry: &Value) -> Option<LicenseFeature> {
    let count = |name: &str| {
        entry
            .get(name)?
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
    };
    Some(LicenseFeature {
        id: entry.get("id")?.as_str()?.to_owned(),
        in_use: count("in_use"),
        min: count("min"),
        max: count("max"),
    })
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

/// The HTTP CML client; keeps one connection pool per TLS policy (one per pinned worker) and
/// one JWT per worker, each dropped once unused for `IDLE`, so workers long gone cost nothing.
pub struct HttpCml {
    timeout: Duration,
    clients: Mutex<Expiring<TlsPolicy, Client>>,
    tokens: Mutex<Expiring<(String, String), String>>,
}

/// How long a connection pool or a login unused is kept: many resyncs.
const IDLE: Duration = Duration::from_secs(600);

impl HttpCml {
    pub fn new(timeout: Duration) -> HttpCml {
        HttpCml {
            timeout,
            clients: Mutex::new(Expiring::new(IDLE)),
            tokens: Mutex::new(Expiring::new(IDLE)),
        }
    }

    fn client(&self, tls: &TlsPolicy) -> Result<Client, CmlError> {
        let mut clients = self.clients.locked();
        if let Some(c) = clients.touch(tls) {
            return Ok(c.clone());
        }
        let builder = super::trust::configure(crate::http_peer::client_builder(self.timeout), tls)
            .map_err(|e| CmlError::new(CmlErrorKind::BadResponse, e))?;
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
            .touch(&Self::token_key(target, creds))
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

/// Logged-in requests to one worker: they share a JWT, renewed at most once when CML refuses it.
struct Session<'a> {
    cml: &'a HttpCml,
    client: &'a Client,
    target: &'a CmlTarget,
    creds: &'a CmlCredentials,
    token: tokio::sync::Mutex<String>,
}

impl<'a> Session<'a> {
    /// Starts with the cached JWT, or logs in when there is none.
    async fn open(
        cml: &'a HttpCml,
        client: &'a Client,
        target: &'a CmlTarget,
        creds: &'a CmlCredentials,
    ) -> Result<Session<'a>, CmlError> {
        let token = match cml.cached_token(target, creds) {
            Some(t) => t,
            None => cml.authenticate(client, target, creds).await?,
        };
        Ok(Session {
            cml,
            client,
            target,
            creds,
            token: tokio::sync::Mutex::new(token),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, CmlError> {
        let (url, response) = self.send(Method::GET, path_and_query, None).await?;
        decode(&url, response).await
    }

    /// Sends one request under `/api/v0/`; a 401 renews the login (once for all the requests
    /// that saw it) and sends it again. Returns the URL for error messages, and the answer.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(String, reqwest::Response), CmlError> {
        let url = format!("{}/api/v0/{path_and_query}", self.target.endpoint);
        let used = self.token.lock().await.clone();
        let response = self.attempt(&method, &url, &used, body).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok((url, response));
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
        let response = self.attempt(&method, &url, &renewed, body).await?;
        Ok((url, response))
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, CmlError> {
        let mut request = self.client.request(method.clone(), url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|e| transport(url, e))
    }

    /// One licensing call; `call` names it in a refusal, and `secret` is cleaned out of anything
    /// CML says back.
    async fn licensing(
        &self,
        call: &str,
        method: Method,
        path: &str,
        body: &Value,
        secret: Option<&LicenseToken>,
    ) -> Result<LicenseAnswer, CmlError> {
        let (url, response) = self.send(method, path, Some(body)).await?;
        let (status, description) = read_answer(&url, response, secret).await?;
        license_answer(call, status, description).map_err(|e| unexpected(&url, e))
    }
}

/// An answer's status and what CML said: its error `description`, or the start of the body.
async fn read_answer(
    url: &str,
    response: reqwest::Response,
    secret: Option<&LicenseToken>,
) -> Result<(StatusCode, String), CmlError> {
    let status = response.status();
    let bytes = body(url, response).await?;
    let description = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => body.description,
        Err(_) if bytes.is_empty() => status.to_string(),
        Err(_) => format!("{:?}", preview(&bytes)),
    };
    Ok((status, redact(&description, secret)))
}

/// `text` with every appearance of the token replaced, as written and as JSON escapes it.
fn redact(text: &str, secret: Option<&LicenseToken>) -> String {
    let Some(LicenseToken(token)) = secret.filter(|t| !t.0.is_empty()) else {
        return text.to_owned();
    };
    let escaped = serde_json::to_string(token).unwrap_or_default();
    let escaped = escaped.trim_matches('"');
    let mut clean = text.replace(token.as_str(), "<redacted>");
    if !escaped.is_empty() {
        clean = clean.replace(escaped, "<redacted>");
    }
    clean
}

/// A status the call does not document, with what CML said.
struct Unexpected(StatusCode, String);

/// How CML took a register, product, transport or feature call: 204, 409, 400 or 403.
fn license_answer(
    call: &str,
    status: StatusCode,
    description: String,
) -> Result<LicenseAnswer, Unexpected> {
    match status {
        StatusCode::NO_CONTENT => Ok(LicenseAnswer::Accepted),
        StatusCode::CONFLICT => Ok(LicenseAnswer::Busy(format!("{call}: {description}"))),
        StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => {
            Ok(LicenseAnswer::Refused(format!("{call}: {description}")))
        }
        other => Err(Unexpected(other, description)),
    }
}

/// How CML took `DELETE /licensing/deregistration`: 204, 202, 400 (two meanings), 409 or 403.
fn deregistration(status: StatusCode, description: String) -> Result<Deregistration, Unexpected> {
    match status {
        StatusCode::NO_CONTENT => Ok(Deregistration::Freed),
        StatusCode::ACCEPTED => Ok(Deregistration::LocalOnly),
        // The one 400 a worker can cure: "Cannot de-register when nodes are running".
        StatusCode::BAD_REQUEST if description.to_lowercase().contains("running") => {
            Ok(Deregistration::NodesRunning(description))
        }
        StatusCode::BAD_REQUEST => Ok(Deregistration::NotRegistered(description)),
        StatusCode::CONFLICT => Ok(Deregistration::Busy(description)),
        StatusCode::FORBIDDEN => Ok(Deregistration::Refused(description)),
        other => Err(Unexpected(other, description)),
    }
}

/// An undocumented status as an error: a renewed login still refused (401) is `Forbidden`, a
/// server failure `ServerError`, anything else (a 200 from a proxy, a 404) a `BadResponse`.
fn unexpected(url: &str, Unexpected(status, description): Unexpected) -> CmlError {
    let kind = match status {
        StatusCode::UNAUTHORIZED => CmlErrorKind::Forbidden,
        s if s.is_server_error() => CmlErrorKind::ServerError,
        _ => CmlErrorKind::BadResponse,
    };
    CmlError::new(kind, format!("{url}: HTTP {status}: {description}"))
}

/// `PUT /licensing/transport`'s body: every key present, `null` for Cisco's own server and no
/// proxy.
fn transport_body(transport: &LicenseTransport) -> Value {
    json!({
        "ssms": transport.ssms,
        "proxy": {"server": transport.proxy_server, "port": transport.proxy_port},
    })
}

fn transport(url: &str, e: reqwest::Error) -> CmlError {
    if let Some(changed) = super::trust::certificate_changed(&e) {
        return CmlError::new(
            CmlErrorKind::CertificateChanged,
            format!(
                "{url}: {changed}; nothing was sent (annotate the Worker with {}: <fingerprint> to trust the new one)",
                crate::crd::TRUST_CERTIFICATE_ANNOTATION
            ),
        );
    }
    let kind = if e.is_timeout() {
        CmlErrorKind::Timeout
    } else if e.is_decode() {
        CmlErrorKind::BadResponse
    } else {
        CmlErrorKind::Unreachable
    };
    CmlError::new(kind, chain(url, &e))
}

/// The answer's body, up to the cap: a larger one is not CML's answer.
async fn body(url: &str, response: reqwest::Response) -> Result<Vec<u8>, CmlError> {
    use crate::http_peer::{BodyError, capped_body};
    capped_body(response).await.map_err(|e| match e {
        BodyError::Transport(e) => transport(url, e),
        too_large => CmlError::new(CmlErrorKind::BadResponse, format!("{url}: {too_large}")),
    })
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
    let bytes = body(url, response).await?;
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
        let certificate = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .map(super::trust::fingerprint);
        let info: SystemInformation = decode(&url, response).await?;
        let mut report = CmlReport {
            ready: info.ready,
            version: info.version,
            certificate,
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
        let session = Session::open(self, &client, target, creds).await?;
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
            report.license = Some(license_report(licensing));
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

/// The licensing calls need a login: without credentials there is nothing to ask with.
fn credentials(target: &CmlTarget) -> Result<&CmlCredentials, CmlError> {
    target.credentials.as_ref().ok_or_else(|| {
        CmlError::new(
            CmlErrorKind::Unauthorized,
            "no credentials configured (spec.cml.credentialsSecretRef): licensing needs a login",
        )
    })
}

#[async_trait]
impl CmlLicensing for HttpCml {
    async fn register(
        &self,
        target: &CmlTarget,
        request: &RegistrationRequest,
    ) -> Result<LicenseAnswer, CmlError> {
        let client = self.client(&target.tls)?;
        let session = Session::open(self, &client, target, credentials(target)?).await?;
        let secret = Some(&request.token);
        if let Some(transport) = &request.transport {
            let body = transport_body(transport);
            let answer = session
                .licensing(
                    "transport",
                    Method::PUT,
                    "licensing/transport",
                    &body,
                    secret,
                )
                .await?;
            if answer != LicenseAnswer::Accepted {
                return Ok(answer);
            }
        }
        if let Some(product) = &request.product {
            let path = "licensing/product_license";
            let answer = session
                .licensing(
                    "product license",
                    Method::PUT,
                    path,
                    &json!(product),
                    secret,
                )
                .await?;
            if answer != LicenseAnswer::Accepted {
                return Ok(answer);
            }
        }
        // Exactly the two fields the schema has: it allows no other.
        let body = json!({"token": request.token.0, "reregister": false});
        session
            .licensing(
                "registration",
                Method::POST,
                "licensing/registration",
                &body,
                secret,
            )
            .await
    }

    async fn set_feature(
        &self,
        target: &CmlTarget,
        id: &str,
        count: u32,
    ) -> Result<LicenseAnswer, CmlError> {
        let client = self.client(&target.tls)?;
        let session = Session::open(self, &client, target, credentials(target)?).await?;
        let body = json!([{"id": id, "count": count}]);
        session
            .licensing("feature", Method::PATCH, "licensing/features", &body, None)
            .await
    }

    async fn deregister(&self, target: &CmlTarget) -> Result<Deregistration, CmlError> {
        let client = self.client(&target.tls)?;
        let session = Session::open(self, &client, target, credentials(target)?).await?;
        let (url, response) = session
            .send(Method::DELETE, "licensing/deregistration", None)
            .await?;
        let (status, description) = read_answer(&url, response, None).await?;
        deregistration(status, description).map_err(|e| unexpected(&url, e))
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

    fn report(licensing: serde_json::Value) -> LicenseReport {
        license_report(serde_json::from_value(licensing).expect("parses"))
    }

    #[test]
    fn the_license_report_reads_instance_failure_expiry_and_features() {
        let time = |failure: serde_json::Value| {
            json!({"succeeded": null, "attempted": "2025-01-01T00:00:00Z", "scheduled": null,
                   "status": "FAILED", "failure": failure, "success": "FAILED"})
        };
        let report = report(json!({
            "udi": {"hostname": "cml-7", "product_uuid": "5ea71ce5-0000-4000-8000-000000000007"},
            "registration": {"status": "FAILED", "register_time": time(json!("The ID token is not valid.")),
                             "renew_time": time(json!(null)), "expires": null},
            "authorization": {"status": "EVAL", "expires": "2025-04-01T00:00:00Z"},
            "product_license": {"active": "CML_Enterprise", "is_enterprise": true},
            "features": [{"id": "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_x", "in_use": 20, "min": 0, "max": 300}],
            "reservation_mode": false
        }));
        assert_eq!(
            report,
            LicenseReport {
                registration: Some("FAILED".into()),
                authorization: Some("EVAL".into()),
                product: Some("CML_Enterprise".into()),
                product_instance: Some("5ea71ce5-0000-4000-8000-000000000007".into()),
                hostname: Some("cml-7".into()),
                failure: Some("The ID token is not valid.".into()),
                authorization_expires: Some("2025-04-01T00:00:00Z".into()),
                features: vec![LicenseFeature {
                    id: "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_x".into(),
                    in_use: Some(20),
                    min: Some(0),
                    max: Some(300),
                }],
            }
        );
        assert!(report.features[0].is_node_count());
        assert_eq!(self::report(json!({})), LicenseReport::default());
    }

    #[test]
    fn a_feature_entry_the_client_cannot_use_costs_only_itself() {
        let report = report(json!({
            "registration": {"status": "COMPLETED"},
            "features": [
                {"name": "no id"},
                {"id": "base", "in_use": -1, "min": 0, "max": 5000000000u64},
                {"id": "nodes"}
            ]
        }));
        assert_eq!(report.registration.as_deref(), Some("COMPLETED"));
        let ids: Vec<(&str, Option<u32>, Option<u32>)> = report
            .features
            .iter()
            .map(|f| (f.id.as_str(), f.in_use, f.max))
            .collect();
        assert_eq!(ids, vec![("base", None, None), ("nodes", None, None)]);
    }

    #[test]
    fn a_deregistration_400_is_told_apart_by_its_description() {
        let answer = |status: u16, text: &str| {
            deregistration(StatusCode::from_u16(status).expect("status"), text.into()).ok()
        };
        let running = "Cannot de-register when nodes are running";
        assert_eq!(
            answer(400, running),
            Some(Deregistration::NodesRunning(running.into()))
        );
        assert_eq!(
            answer(400, "NODES ARE RUNNING"),
            Some(Deregistration::NodesRunning("NODES ARE RUNNING".into()))
        );
        assert_eq!(
            answer(400, "already deregistered"),
            Some(Deregistration::NotRegistered("already deregistered".into()))
        );
        assert_eq!(answer(204, ""), Some(Deregistration::Freed));
        assert_eq!(answer(202, ""), Some(Deregistration::LocalOnly));
        assert_eq!(answer(409, "x"), Some(Deregistration::Busy("x".into())));
        assert_eq!(answer(403, "x"), Some(Deregistration::Refused("x".into())));
        assert_eq!(answer(200, "x"), None);
        assert_eq!(answer(500, "x"), None);
    }

    #[test]
    fn a_licensing_answer_names_its_call_and_only_documented_statuses_are_answers() {
        let answer = |status: StatusCode| license_answer("product license", status, "no".into());
        assert_eq!(
            answer(StatusCode::NO_CONTENT).ok(),
            Some(LicenseAnswer::Accepted)
        );
        assert_eq!(
            answer(StatusCode::CONFLICT).ok(),
            Some(LicenseAnswer::Busy("product license: no".into()))
        );
        for refused in [StatusCode::BAD_REQUEST, StatusCode::FORBIDDEN] {
            assert_eq!(
                answer(refused).ok(),
                Some(LicenseAnswer::Refused("product license: no".into()))
            );
        }
        for (status, kind) in [
            (StatusCode::OK, CmlErrorKind::BadResponse),
            (StatusCode::UNAUTHORIZED, CmlErrorKind::Forbidden),
            (StatusCode::BAD_GATEWAY, CmlErrorKind::ServerError),
        ] {
            let Err(e) = answer(status) else {
                panic!("{status} is no answer");
            };
            assert_eq!(unexpected("https://cml/api/v0/x", e).kind, kind);
        }
    }

    #[test]
    fn the_token_is_cleaned_out_of_what_cml_says_back() {
        let token = LicenseToken("abc\"def".into());
        let said = r#"Invalid input: "abc\"def" does not match; raw abc"def"#;
        let clean = redact(said, Some(&token));
        assert!(!clean.contains("abc"), "{clean}");
        assert_eq!(redact("abc", None), "abc");
        assert_eq!(redact("abc", Some(&LicenseToken(String::new()))), "abc");
    }

    #[test]
    fn the_transport_body_has_every_key() {
        assert_eq!(
            transport_body(&LicenseTransport::default()),
            json!({"ssms": null, "proxy": {"server": null, "port": null}})
        );
        let proxied = LicenseTransport {
            ssms: Some(
                "https://sat.example.com/Transportgateway/services/DeviceRequestHandler".into(),
            ),
            proxy_server: Some("proxy.example.com".into()),
            proxy_port: Some(3128),
        };
        assert_eq!(
            transport_body(&proxied)["proxy"],
            json!({"server": "proxy.example.com", "port": 3128})
        );
    }

    #[test]
    fn negative_counts_do_not_parse() {
        let stats = json!({"computes": {"a": compute(json!(-1), json!(0))}});
        assert!(serde_json::from_value::<SystemStats>(stats).is_err());
    }
}
