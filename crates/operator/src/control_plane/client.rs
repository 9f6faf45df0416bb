//! The Control Plane API over HTTP(S) with reqwest: bearer token, TLS verified (optionally
//! against a given CA), a timeout on every request, errors classified, never a panic on garbage.

use crate::{expiring::Expiring, lock::Locked};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Client, Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Definition, LabInstance, LabInstanceState, ScalingEvent, WorkerCapacity, WorkerRecord,
};
use crate::{
    http_error::{chain, preview},
    remote::{RemoteError, RemoteErrorKind},
};

/// How to reach the Control Plane API.
#[derive(Clone)]
pub struct ControlPlaneConfig {
    /// Base URL, e.g. `https://control-plane.example.com`.
    pub url: String,
    pub token: Option<String>,
    /// PEM bundle of the CA to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Send the token over plain `http://` too (`--control-plane-api-allow-http`): an explicit
    /// opt-in, for a platform reached through a local sidecar or in tests.
    pub allow_http: bool,
}

impl std::fmt::Debug for ControlPlaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

pub struct ControlPlaneClient {
    base: String,
    http: Client,
    token: Option<String>,
    /// Definitions are immutable versions: one read each while in use; one unused for
    /// [`DEFINITION_IDLE`] is dropped, so old labs' definitions do not pile up.
    definitions: Mutex<Expiring<String, Arc<Definition>>>,
}

impl std::fmt::Debug for ControlPlaneClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How long a lab definition no demand names any more is kept.
const DEFINITION_IDLE: Duration = Duration::from_secs(3600);

impl ControlPlaneClient {
    /// Checks the configuration; nothing is sent yet.
    pub fn new(config: ControlPlaneConfig) -> Result<ControlPlaneClient, RemoteError> {
        let base = config.url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base).map_err(|e| {
            RemoteError::new(
                RemoteErrorKind::Rejected,
                format!("CONTROL_PLANE_API_URL {base:?} is not a URL: {e}"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RemoteError::new(
                RemoteErrorKind::Rejected,
                format!("CONTROL_PLANE_API_URL {base:?} must be http or https"),
            ));
        }
        let has_token = config.token.as_ref().is_some_and(|t| !t.is_empty());
        if url.scheme() == "http" && has_token && !config.allow_http {
            return Err(RemoteError::new(
                RemoteErrorKind::Rejected,
                format!(
                    "refusing to send the Control Plane API token in clear text to {base:?}: use \
                     https, or accept the risk with --control-plane-api-allow-http"
                ),
            ));
        }
        let mut builder = crate::http_peer::client_builder(config.timeout);
        if let Some(pem) = &config.ca_pem {
            let cas = crate::tls::ca_certificates(pem).map_err(|e| {
                RemoteError::new(RemoteErrorKind::Rejected, format!("Control Plane API: {e}"))
            })?;
            builder = builder.tls_certs_only(cas);
        }
        let http = builder.build().map_err(|e| {
            RemoteError::new(
                RemoteErrorKind::Rejected,
                format!("cannot build an HTTP client: {e}"),
            )
        })?;
        Ok(ControlPlaneClient {
            base,
            http,
            token: config.token.filter(|t| !t.is_empty()),
            definitions: Mutex::new(Expiring::new(DEFINITION_IDLE)),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Lab instances in one state.
    pub async fn lab_instances(
        &self,
        state: LabInstanceState,
    ) -> Result<Vec<LabInstance>, RemoteError> {
        let path = format!("/api/v1/instances?state={}", state.as_str());
        self.json(self.send(Method::GET, &path, None::<&()>).await?)
            .await
    }

    /// A definition version, read once and then served from memory.
    pub async fn definition(&self, id: &str) -> Result<Arc<Definition>, RemoteError> {
        if let Some(d) = self.cached_definition(id) {
            return Ok(d);
        }
        let path = format!("/api/v1/definitions/{}", segment(id));
        let definition: Definition = self
            .json(self.send(Method::GET, &path, None::<&()>).await?)
            .await?;
        let definition = Arc::new(definition);
        self.definitions
            .locked()
            .insert(id.to_owned(), definition.clone());
        Ok(definition)
    }

    fn cached_definition(&self, id: &str) -> Option<Arc<Definition>> {
        self.definitions.locked().touch(&id.to_owned()).cloned()
    }

    /// A worker's usage; `None` when the API does not know the worker (usage unknown, not zero).
    pub async fn worker_capacity(&self, id: &str) -> Result<Option<WorkerCapacity>, RemoteError> {
        let path = format!("/api/v1/workers/{}/capacity", segment(id));
        let response = self.send(Method::GET, &path, None::<&()>).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.json(response).await.map(Some)
    }

    /// Creates or replaces a worker record; answers the stored record.
    pub async fn upsert_worker(&self, record: &WorkerRecord) -> Result<WorkerRecord, RemoteError> {
        let path = format!("/api/internal/workers/{}", segment(&record.id));
        self.json(self.send(Method::PUT, &path, Some(record)).await?)
            .await
    }

    /// Removes a worker record; one that is already gone counts as removed.
    pub async fn delete_worker(&self, id: &str) -> Result<(), RemoteError> {
        let path = format!("/api/internal/workers/{}", segment(id));
        let response = self.send(Method::DELETE, &path, None::<&()>).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(&path, response).await.map(drop)
    }

    /// Every worker record.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>, RemoteError> {
        self.json(
            self.send(Method::GET, "/api/internal/workers", None::<&()>)
                .await?,
        )
        .await
    }

    /// Records an autoscaler decision; a repeated id is accepted as already recorded.
    pub async fn post_scaling_event(&self, event: &ScalingEvent) -> Result<(), RemoteError> {
        let path = "/api/internal/scaling-events";
        let response = self.send(Method::POST, path, Some(event)).await?;
        check(path, response).await.map(drop)
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<reqwest::Response, RemoteError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|e| transport(path, e))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T, RemoteError> {
        let path = response.url().path().to_owned();
        let bytes = check(&path, response).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            RemoteError::new(
                RemoteErrorKind::BadResponse,
                format!("{path}: unexpected answer ({e}): {:?}", preview(&bytes)),
            )
        })
    }
}

/// An id as one URL path segment.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn transport(path: &str, e: reqwest::Error) -> RemoteError {
    let kind = if e.is_timeout() {
        RemoteErrorKind::Timeout
    } else if e.is_decode() || e.is_body() {
        RemoteErrorKind::BadResponse
    } else {
        RemoteErrorKind::Unavailable
    };
    RemoteError::new(kind, chain(path, &e))
}

/// The body of a successful answer, or the error the status and `{"detail"}` body say.
async fn check(path: &str, response: reqwest::Response) -> Result<Vec<u8>, RemoteError> {
    let status = response.status();
    let bytes = crate::http_peer::capped_body(response)
        .await
        .map_err(|e| match e {
            crate::http_peer::BodyError::Transport(e) => transport(path, e),
            too_large => {
                RemoteError::new(RemoteErrorKind::BadResponse, format!("{path}: {too_large}"))
            }
        })?;
    if status.is_success() {
        return Ok(bytes);
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        detail: String,
    }
    let detail = match serde_json::from_slice::<Detail>(&bytes) {
        Ok(d) => d.detail,
        Err(_) => format!("{:?}", preview(&bytes)),
    };
    let kind = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteErrorKind::Unauthorized,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            RemoteErrorKind::Unavailable
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => RemoteErrorKind::Unavailable,
        s if s.is_server_error() => RemoteErrorKind::ServerError,
        _ => RemoteErrorKind::Rejected,
    };
    Err(RemoteError::new(
        kind,
        format!("{path}: HTTP {status}: {detail}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("3f2a-b_c.d~e"), "3f2a-b_c.d~e");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn a_bad_url_is_a_clear_error_and_the_token_is_never_shown() {
        let config = ControlPlaneConfig {
            allow_http: false,
            url: "not a url".into(),
            token: Some("s3cret".into()),
            ca_pem: None,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        let err = ControlPlaneClient::new(config.clone()).expect_err("bad url");
        assert!(err.message.contains("not a URL"), "{err}");
        let err = ControlPlaneClient::new(ControlPlaneConfig {
            allow_http: false,
            url: "ftp://host".into(),
            ..config.clone()
        })
        .expect_err("bad scheme");
        assert!(err.message.contains("http or https"), "{err}");
        let err = ControlPlaneClient::new(ControlPlaneConfig {
            url: "http://platform.example".into(),
            ..config.clone()
        })
        .expect_err("a token over plain http");
        assert!(
            err.message.contains("--control-plane-api-allow-http"),
            "{err}"
        );
        assert!(!err.message.contains("s3cret"));
        let allowed = ControlPlaneClient::new(ControlPlaneConfig {
            url: "http://platform.example".into(),
            allow_http: true,
            ..config.clone()
        });
        assert!(allowed.is_ok(), "an explicit opt-in");
        let tokenless = ControlPlaneClient::new(ControlPlaneConfig {
            url: "http://platform.example".into(),
            token: None,
            ..config
        });
        assert!(tokenless.is_ok(), "nothing secret to send");
    }
}
