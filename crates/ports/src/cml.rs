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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TlsPolicy {
    /// Verify the chain against this PEM bundle of CAs.
    Ca(Vec<u8>),
    /// Accept only a certificate with one of these SHA-256 fingerprints. None yet is the first
    /// use: any certificate is accepted, and the probe reports the one it saw to be pinned.
    Pinned(Vec<CertificateFingerprint>),
    /// Accept any certificate: the explicit opt-in `insecureSkipTlsVerify`.
    SkipVerify,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy::Pinned(Vec::new())
    }
}

/// The SHA-256 of a certificate's DER, shown as OpenSSL prints it (`AB:CD:…`), so a person can
/// compare it with `openssl x509 -noout -fingerprint -sha256`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint(pub [u8; 32]);

impl std::fmt::Display for CertificateFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for CertificateFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertificateFingerprint({self})")
    }
}

impl std::str::FromStr for CertificateFingerprint {
    type Err = String;

    /// Accepts 64 hex digits in either case, with or without colons, and an optional
    /// `sha256:` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let body = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .unwrap_or(trimmed);
        let hex: Vec<u8> = body.bytes().filter(|b| *b != b':').collect();
        let malformed = || format!("{s:?} is not a SHA-256 fingerprint (64 hex digits)");
        if hex.len() != 64 {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks(2)) {
            let digits = std::str::from_utf8(pair).map_err(|_| malformed())?;
            *byte = u8::from_str_radix(digits, 16).map_err(|_| malformed())?;
        }
        Ok(CertificateFingerprint(bytes))
    }
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
    /// The certificate CML presented, when it was asked over TLS.
    pub certificate: Option<CertificateFingerprint>,
    /// What could not be read, one entry per endpoint; the rest of the report still holds.
    pub failures: Vec<EndpointFailure>,
}

/// A CML endpoint whose failure degrades only its own fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
pub enum CmlEndpoint {
    /// No login was possible (no credentials): every authenticated field is unknown.
    Authenticate,
    SystemHealth,
    Licensing,
    Labs,
    SystemStats,
}

impl CmlEndpoint {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [CmlEndpoint] = <CmlEndpoint as strum::VariantArray>::VARIANTS;

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
        self.into()
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(prefix = "Cml")]
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
    /// The certificate is not the one pinned for this worker: nothing was sent.
    CertificateChanged,
}

impl CmlErrorKind {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [CmlErrorKind] = <CmlErrorKind as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
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

#[cfg(test)]
mod tests {
    use super::CertificateFingerprint;

    #[test]
    fn a_fingerprint_reads_back_what_it_prints_in_any_spelling() {
        let fp = CertificateFingerprint(std::array::from_fn(|i| (i * 7) as u8));
        let shown = fp.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert!(shown.starts_with("00:07:0E:15"));
        for spelling in [
            shown.clone(),
            shown.to_lowercase(),
            shown.replace(':', ""),
            format!("sha256:{shown}"),
        ] {
            assert_eq!(spelling.parse::<CertificateFingerprint>(), Ok(fp));
        }
    }

    #[test]
    fn a_fingerprint_of_the_wrong_length_or_digits_is_refused() {
        for bad in ["", "AB:CD", &"G".repeat(64), &"A".repeat(66)] {
            let err = bad.parse::<CertificateFingerprint>().unwrap_err();
            assert!(err.contains("64 hex digits"), "{err}");
        }
    }
}
