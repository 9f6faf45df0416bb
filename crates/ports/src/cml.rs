//! The CML API on each worker, as the operator asks it: is it ready, is it licensed, how busy.

use async_trait::async_trait;

/// Where a worker's CML API is and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmlTarget {
    /// `https://<ip>:<port>`
    pub endpoint: String,
    pub credentials: Option<CmlCredentials>,
    pub tls: TlsPolicy,
    /// When the machine last started, as the cloud says (EC2's LaunchTime). Only the simulated
    /// stand-in reads it: its CML answers ready a set time after that.
    pub booted_at: Option<jiff::Timestamp>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct CmlCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for CmlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmlCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to trust the worker's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsPolicy {
    pub insecure_skip_verify: bool,
    /// PEM bundle of the CA to trust instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// What CML said. A field is `None` when CML did not say: its endpoint failed (see `failures`)
/// or the answer left it null. Unknown is never read as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CmlReport {
    pub ready: bool,
    pub version: Option<String>,
    pub licensed: Option<bool>,
    pub labs: Option<u32>,
    pub running_nodes: Option<u32>,
    pub license: Option<LicenseReport>,
    /// What could not be read, one entry per endpoint; the rest of the report still holds.
    pub failures: Vec<EndpointFailure>,
}

/// A CML endpoint whose failure degrades only its own fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmlEndpoint {
    /// No login was possible (no credentials): every authenticated field is unknown.
    Authenticate,
    SystemHealth,
    Licensing,
    Labs,
    SystemStats,
}

impl CmlEndpoint {
    /// Every value, in declaration order.
    pub const ALL: [CmlEndpoint; 5] = [
        CmlEndpoint::Authenticate,
        CmlEndpoint::SystemHealth,
        CmlEndpoint::Licensing,
        CmlEndpoint::Labs,
        CmlEndpoint::SystemStats,
    ];

    /// The path under `/api/v0/`.
    pub fn path(self) -> &'static str {
        match self {
            CmlEndpoint::Authenticate => "authenticate",
            CmlEndpoint::SystemHealth => "system_health",
            CmlEndpoint::Licensing => "licensing",
            CmlEndpoint::Labs => "labs",
            CmlEndpoint::SystemStats => "system_stats",
        }
    }

    /// The first part of a `CmlDegraded` reason, e.g. `Licensing` in `LicensingForbidden`.
    pub fn reason_prefix(self) -> &'static str {
        match self {
            CmlEndpoint::Authenticate => "Authenticate",
            CmlEndpoint::SystemHealth => "SystemHealth",
            CmlEndpoint::Licensing => "Licensing",
            CmlEndpoint::Labs => "Labs",
            CmlEndpoint::SystemStats => "SystemStats",
        }
    }
}

/// One endpoint that did not give what the report needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFailure {
    pub endpoint: CmlEndpoint,
    pub error: CmlError,
}

impl EndpointFailure {
    /// A condition and Event reason from a bounded set, e.g. `LicensingForbidden`.
    pub fn reason(&self) -> String {
        format!(
            "{}{}",
            self.endpoint.reason_prefix(),
            self.error.kind.label()
        )
    }
}

impl std::fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.endpoint.path(), self.error)
    }
}

/// What CML's `licensing` endpoint said about Smart Licensing (schema `LicensingStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseReport {
    /// Registration with Smart Software Licensing, e.g. `COMPLETED`.
    pub registration: Option<String>,
    /// Authorization, e.g. `IN_COMPLIANCE` or `OUT_OF_COMPLIANCE`.
    pub authorization: Option<String>,
    /// The active product license, e.g. `CML_Enterprise`.
    pub product: Option<String>,
    /// `udi.product_uuid`: the product instance in the Smart Software Manager.
    pub product_instance: Option<String>,
    /// `udi.hostname`: the product instance's name in the Smart Software Manager.
    pub hostname: Option<String>,
    /// `registration.register_time.failure`: why the last registration attempt failed.
    pub failure: Option<String>,
    /// `authorization.expires`, as CML wrote it.
    pub authorization_expires: Option<String>,
    /// `features`: the licensed features and their counts.
    pub features: Vec<LicenseFeature>,
}

/// One licensed feature (schema `LicensingFeature`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseFeature {
    /// e.g. `regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_...`.
    pub id: String,
    /// The count requested now.
    pub in_use: Option<u32>,
    pub min: Option<u32>,
    pub max: Option<u32>,
}

impl LicenseFeature {
    /// Whether this is the node-count feature that expansion nodes set.
    pub fn is_node_count(&self) -> bool {
        self.id.contains("CML_NODE_COUNT")
    }
}

/// A Smart Licensing registration token. Never printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct LicenseToken(pub String);

impl std::fmt::Debug for LicenseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LicenseToken(<redacted>)")
    }
}

/// Where CML reaches Cisco's licensing servers (schema `LicensingTransport`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LicenseTransport {
    /// A Smart Software Manager satellite's URL; Cisco's own when `None`.
    pub ssms: Option<String>,
    pub proxy_server: Option<String>,
    pub proxy_port: Option<u16>,
}

/// One registration, in the order CML wants it: transport, product, then the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationRequest {
    /// Set first, when given.
    pub transport: Option<LicenseTransport>,
    /// Set only when it differs from the active product license (CML refuses a repeat).
    pub product: Option<String>,
    pub token: LicenseToken,
}

/// How CML took a licensing request that it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LicenseAnswer {
    /// 204: accepted (a registration then runs in the background).
    Accepted,
    /// 409: another licensing operation runs; back off and try again.
    Busy(String),
    /// 400 or 403: refused, with CML's reason.
    Refused(String),
}

/// How CML answered `DELETE /licensing/deregistration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deregistration {
    /// 204: deregistered with Cisco; the seat is free.
    Freed,
    /// 202: deregistered locally only (the call to Cisco timed out): the seat may still be held.
    LocalOnly,
    /// 400 "Cannot de-register when nodes are running": the worker is not empty.
    NodesRunning(String),
    /// 400 otherwise: already deregistered.
    NotRegistered(String),
    /// 409: not now; back off.
    Busy(String),
    /// 403: refused.
    Refused(String),
}

/// Why CML could not be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmlErrorKind {
    Unreachable,
    Timeout,
    /// The login was refused (or no credentials could be read): the only error that drops the
    /// cached credentials.
    Unauthorized,
    /// An endpoint refused the logged-in user (401/403), e.g. `licensing` for a non-admin.
    Forbidden,
    /// The answer follows the contract but leaves a count we need null or missing.
    Incomplete,
    /// An answer that does not follow the API contract.
    BadResponse,
    ServerError,
}

impl CmlErrorKind {
    /// Every value, in declaration order.
    pub const ALL: [CmlErrorKind; 7] = [
        CmlErrorKind::Unreachable,
        CmlErrorKind::Timeout,
        CmlErrorKind::Unauthorized,
        CmlErrorKind::Forbidden,
        CmlErrorKind::Incomplete,
        CmlErrorKind::BadResponse,
        CmlErrorKind::ServerError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CmlErrorKind::Unreachable => "CmlUnreachable",
            CmlErrorKind::Timeout => "CmlTimeout",
            CmlErrorKind::Unauthorized => "CmlUnauthorized",
            CmlErrorKind::Forbidden => "CmlForbidden",
            CmlErrorKind::Incomplete => "CmlIncomplete",
            CmlErrorKind::BadResponse => "CmlBadResponse",
            CmlErrorKind::ServerError => "CmlServerError",
        }
    }

    /// The kind without its `Cml` prefix, e.g. `Unreachable`: a metric label.
    pub fn label(self) -> &'static str {
        let reason = self.as_str();
        reason.strip_prefix("Cml").unwrap_or(reason)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct CmlError {
    pub kind: CmlErrorKind,
    pub message: String,
}

impl CmlError {
    pub fn new(kind: CmlErrorKind, message: impl Into<String>) -> CmlError {
        CmlError {
            kind,
            message: message.into(),
        }
    }
}

/// Asks a worker's CML API how it is.
#[async_trait]
pub trait CmlProbe: Send + Sync {
    async fn probe(&self, target: &CmlTarget) -> Result<CmlReport, CmlError>;
}

/// Smart Licensing calls on a worker's CML (`tests/contracts/cml-licensing.md`).
#[async_trait]
pub trait CmlLicensing: Send + Sync {
    /// Sets the transport and the product when asked, then requests registration.
    async fn register(
        &self,
        target: &CmlTarget,
        request: &RegistrationRequest,
    ) -> Result<LicenseAnswer, CmlError>;

    /// Sets a feature's count (`PATCH /licensing/features`), e.g. the expansion nodes.
    async fn set_feature(
        &self,
        target: &CmlTarget,
        id: &str,
        count: u32,
    ) -> Result<LicenseAnswer, CmlError>;

    /// Gives the seat back (`DELETE /licensing/deregistration`).
    async fn deregister(&self, target: &CmlTarget) -> Result<Deregistration, CmlError>;
}

/// A worker's CML API: probed, and licensed.
pub trait CmlApi: CmlProbe + CmlLicensing {}

impl<T: CmlProbe + CmlLicensing> CmlApi for T {}
