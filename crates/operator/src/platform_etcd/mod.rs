//! The platform's etcd: the controller writes each worker's record under `/ccm/workers/{id}/`
//! for the scheduler to watch, and watches `/ccm/instances/` to learn of new demand at once.

pub mod flags;

use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, DeleteOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{
    backoff::Backoff,
    control_plane::{CapacityRecord, WorkerRecord},
    remote::{RemoteError, RemoteErrorKind},
};

pub const WORKERS_PREFIX: &str = "/ccm/workers/";
pub const INSTANCES_PREFIX: &str = "/ccm/instances/";

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdConfig {
    /// `host:port` or `http(s)://host:port`, one or more.
    pub endpoints: Vec<String>,
    pub user: Option<(String, String)>,
    /// PEM of the CA that signed etcd's certificate; TLS is used when set (or with https URLs).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM) for mutual TLS; TLS is used when set.
    pub client_identity: Option<ClientIdentity>,
    /// Deadline of each request.
    pub timeout: Duration,
}

/// The controller's own certificate and key for etcd's `--client-cert-auth`.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity(<key redacted>)")
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The etcd state store. Cloning shares the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn classify(what: &str, e: etcd_client::Error) -> RemoteError {
    use etcd_client::Error as E;
    let kind = match &e {
        E::GRpcStatus(status) => match status.code() {
            tonic::Code::DeadlineExceeded => RemoteErrorKind::Timeout,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                RemoteErrorKind::Unauthorized
            }
            // etcd refuses a wrong user or password, or none where auth is on, as an invalid
            // argument.
            tonic::Code::InvalidArgument
                if ["authentication failed", "user name is empty"]
                    .iter()
                    .any(|m| status.message().contains(m)) =>
            {
                RemoteErrorKind::Unauthorized
            }
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange => RemoteErrorKind::Rejected,
            // tonic reports a broken connection as Unknown with the transport error as source.
            tonic::Code::Unknown if std::error::Error::source(status).is_some() => {
                RemoteErrorKind::Unavailable
            }
            tonic::Code::Internal | tonic::Code::DataLoss | tonic::Code::Unknown => {
                RemoteErrorKind::ServerError
            }
            _ => RemoteErrorKind::Unavailable,
        },
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => {
            RemoteErrorKind::Rejected
        }
        _ => RemoteErrorKind::Unavailable,
    };
    RemoteError::new(kind, format!("etcd {what}: {e}"))
}

impl EtcdStore {
    /// Prepares the connection; with no user it sends nothing yet, so an etcd that is down shows
    /// at the first request (a condition), not as a start-up failure.
    pub async fn connect(config: &EtcdConfig) -> Result<EtcdStore, RemoteError> {
        if config.endpoints.is_empty() {
            return Err(RemoteError::new(
                RemoteErrorKind::Rejected,
                "no etcd endpoint given",
            ));
        }
        let tls = config.ca_pem.is_some()
            || config.client_identity.is_some()
            || config.endpoints.iter().any(|e| e.starts_with("https://"));
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| {
                let bare = e
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                format!("{}://{bare}", if tls { "https" } else { "http" })
            })
            .collect();
        let mut options = ConnectOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(10), config.timeout);
        if let Some((user, password)) = &config.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if tls {
            let mut tls = TlsOptions::new();
            if let Some(pem) = &config.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(id) = &config.client_identity {
                tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| classify("connect", e))?;
        Ok(EtcdStore { client, endpoints })
    }

    fn state_key(id: &str) -> String {
        format!("{WORKERS_PREFIX}{id}/state")
    }

    fn capacity_key(id: &str) -> String {
        format!("{WORKERS_PREFIX}{id}/capacity")
    }

    /// Writes `/ccm/workers/{id}/state` and `/capacity` in one transaction.
    pub async fn put_worker(&self, record: &WorkerRecord) -> Result<(), RemoteError> {
        let state = serde_json::to_vec(record)
            .map_err(|e| RemoteError::new(RemoteErrorKind::Rejected, e.to_string()))?;
        let capacity = serde_json::to_vec(&CapacityRecord::from(record))
            .map_err(|e| RemoteError::new(RemoteErrorKind::Rejected, e.to_string()))?;
        let txn = Txn::new().and_then([
            TxnOp::put(Self::state_key(&record.id), state, None),
            TxnOp::put(Self::capacity_key(&record.id), capacity, None),
        ]);
        self.client
            .kv_client()
            .txn(txn)
            .await
            .map(drop)
            .map_err(|e| classify("put", e))
    }

    /// Removes every key of the worker; a worker with no keys is already removed.
    pub async fn delete_worker(&self, id: &str) -> Result<(), RemoteError> {
        self.client
            .kv_client()
            .delete(
                format!("{WORKERS_PREFIX}{id}/"),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await
            .map(drop)
            .map_err(|e| classify("delete", e))
    }

    /// The ids that have keys under `/ccm/workers/`.
    pub async fn worker_ids(&self) -> Result<Vec<String>, RemoteError> {
        let response = self
            .client
            .kv_client()
            .get(
                WORKERS_PREFIX,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| classify("list", e))?;
        let mut ids: Vec<String> = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = std::str::from_utf8(kv.key()).ok()?;
                let rest = key.strip_prefix(WORKERS_PREFIX)?;
                rest.split('/').next().map(str::to_owned)
            })
            .filter(|id| !id.is_empty())
            .collect();
        ids.dedup();
        Ok(ids)
    }

    /// The stored record of a worker, if any.
    pub async fn worker(&self, id: &str) -> Result<Option<WorkerRecord>, RemoteError> {
        let response = self
            .client
            .kv_client()
            .get(Self::state_key(id), None)
            .await
            .map_err(|e| classify("get", e))?;
        match response.kvs().first() {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(kv.value()).map(Some).map_err(|e| {
                RemoteError::new(RemoteErrorKind::BadResponse, format!("etcd record: {e}"))
            }),
        }
    }

    /// Watches `/ccm/instances/` until every holder of the returned receiver has dropped it.
    /// The counter goes up on each change, and on each re-list (at start, and after a compacted
    /// revision) since changes may have been missed; a failed watch is resumed from the last
    /// revision seen, after a backoff.
    pub fn watch_instances(&self, backoff: Backoff) -> watch::Receiver<u64> {
        self.watch_instances_from(None, backoff)
    }

    /// As [`watch_instances`](Self::watch_instances), resuming after a known revision instead of
    /// listing first (a compacted one is re-listed).
    pub fn watch_instances_from(
        &self,
        revision: Option<i64>,
        backoff: Backoff,
    ) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0u64);
        let store = self.clone();
        tokio::spawn(async move { store.watch_loop(tx, revision, backoff).await });
        rx
    }

    async fn watch_loop(self, tx: watch::Sender<u64>, mut seen: Option<i64>, backoff: Backoff) {
        let mut failures = 0u32;
        while !tx.is_closed() {
            match self.watch_once(&tx, &mut seen).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    warn!(error = %e, "etcd watch on {INSTANCES_PREFIX} failed; resuming");
                    let delay = backoff.delay(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        }
    }

    /// Watches from just after `seen` (listing first when unknown) until the stream ends, the
    /// revision is compacted, or the watch is cancelled; `seen` follows the events.
    async fn watch_once(
        &self,
        tx: &watch::Sender<u64>,
        seen: &mut Option<i64>,
    ) -> Result<(), RemoteError> {
        let revision = match *seen {
            Some(r) => r,
            None => {
                let listed = self
                    .client
                    .kv_client()
                    .get(
                        INSTANCES_PREFIX,
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await
                    .map_err(|e| classify("list instances", e))?;
                let r = listed.header().map(|h| h.revision()).unwrap_or(0);
                *seen = Some(r);
                tx.send_modify(|n| *n += 1);
                r
            }
        };
        let mut stream = self
            .client
            .watch_client()
            .watch(
                INSTANCES_PREFIX,
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .map_err(|e| classify("watch", e))?;
        loop {
            let message = tokio::select! {
                m = stream.message() => m.map_err(|e| classify("watch", e))?,
                _ = tx.closed() => return Ok(()),
            };
            let Some(response) = message else {
                return Err(RemoteError::new(
                    RemoteErrorKind::Unavailable,
                    "etcd closed the watch",
                ));
            };
            if response.compact_revision() > 0 {
                debug!(
                    compacted = response.compact_revision(),
                    "etcd watch revision compacted; re-listing"
                );
                *seen = None;
                return Ok(());
            }
            if response.canceled() {
                return Err(RemoteError::new(
                    RemoteErrorKind::Unavailable,
                    format!("etcd cancelled the watch: {}", response.cancel_reason()),
                ));
            }
            if let Some(last) = response
                .events()
                .iter()
                .filter_map(|e| e.kv())
                .map(|kv| kv.mod_revision())
                .max()
            {
                *seen = Some(last);
                tx.send_modify(|n| *n += 1);
            }
        }
    }
}
