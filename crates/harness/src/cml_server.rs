//! A CML API test server built from CML 2.9's published OpenAPI schemas (`tests/contracts/`), over
//! TLS with a certificate from its own CA. Every answer it gives, and every request body it is
//! sent, is checked against those schemas and a breach is recorded (`violations`), so it cannot
//! drift into the shape the client expects. It can be told to be not ready, slow, wrong or down,
//! to refuse or fail single endpoints, and to leave node counts null.
//!
//! Smart Licensing (`/licensing/...`, as `tests/contracts/cml-licensing.md` describes it): each
//! server is one product instance (its own `udi.product_uuid` and hostname) registering with a
//! [`SmartAccount`] that several servers may share. A registration is accepted (204), shows
//! `IN_PROGRESS` for a set delay (a status real CML never names, so a client that takes any
//! unknown status for success is caught), then ends `COMPLETED` with a seat held in the account,
//! or `FAILED` with the reason in `register_time.failure` (an invalid token, no seats left).
//! Deregistration frees the seat (204), or is refused while nodes run (400), or can be told to
//! answer 202: deregistered on the server only, the seat still held in the account, a leak.
//! The licensing calls are logged in order (`license_calls`).

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    },
};
use warp::{
    Filter,
    http::{Method, StatusCode},
    reply::Reply,
};

pub use super::certs::make_certificates;
use super::contract;
pub use super::smart_account::SmartAccount;

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "cml-test-password";

/// The two compute hosts (UUID4 keys, as the schemas require) the running nodes spread over.
pub const COMPUTES: [&str; 2] = [
    "6a0a3c52-1f7e-4c1b-9d0e-0c6c1a5e2b01",
    "9b7e1d44-58a2-4f3c-8e61-3d2f9c0a7b02",
];

/// A registration token of the account (shaped as the schema's token pattern requires).
pub const VALID_TOKEN: &str =
    "NzY1ZjE1ZjQtOTQwZS00YzVlLWE1NGYtYzY5ZjIyZDg5NjkxLTE3ODc0%0AMzM1MjcxOTF8dmFsaWQ%3D";
/// A well-formed token Cisco does not know: accepted with 204, then the registration fails.
pub const INVALID_TOKEN: &str =
    "OWQ0YzEyYTctNWUxZi00ZDI2LTg3ZjYtMmE0YjNjMWQ5ZTBhLTE3ODc0%0AMzM1MjcxOTF8cmV2b2tlZA%3D%3D";
/// `register_time.failure` after [`INVALID_TOKEN`].
pub const INVALID_TOKEN_REASON: &str = "The ID token is not valid.";
/// `registration.status` while a registration runs: deliberately none of the values real CML was
/// seen giving, so a client must wait for `COMPLETED` rather than for "not NOT_REGISTERED".
pub const REGISTRATION_PENDING: &str = "IN_PROGRESS";
/// The product licenses CML takes.
pub const PRODUCTS: [&str; 6] = [
    "CML_Enterprise",
    "CML_Education",
    "CML_Personal",
    "CML_Personal40",
    "CML_NotForResale",
    "CML_Internal",
];
/// The base feature every product instance has.
pub const BASE_FEATURE: &str =
    "regid.2019-10.com.cisco.CML_ENT_BASE,1.0_6d3a3f2e-2b8c-4c57-9d8e-1f0b7c5a9e41";
/// The node-count feature expansion nodes set.
pub const NODE_COUNT_FEATURE: &str =
    "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_2607650b-6ca8-46d5-81e5-e6688b7383c4";
/// Cisco's own licensing server, the transport's default.
pub const DEFAULT_SSMS: &str = "https://smartreceiver.cisco.com/licservice/license";
/// How long a registration runs unless told otherwise.
pub const REGISTRATION_DELAY: Duration = Duration::from_secs(1);
/// What CML says when asked to deregister a worker that still runs nodes.
pub const NODES_RUNNING: &str = "Cannot de-register when nodes are running";
/// What CML says when asked to deregister a worker that is not registered.
pub const ALREADY_DEREGISTERED: &str =
    "The Product has already been deregistered from Smart Software Licensing.";

/// A licensed feature: id, name, min, max, and the count it starts with.
struct FeatureSpec {
    id: &'static str,
    name: &'static str,
    min: u32,
    max: u32,
    initial: u32,
}

const FEATURES: [FeatureSpec; 2] = [
    FeatureSpec {
        id: BASE_FEATURE,
        name: "CML - Enterprise License",
        min: 1,
        max: 1,
        initial: 1,
    },
    FeatureSpec {
        id: NODE_COUNT_FEATURE,
        name: "CML - Expansion Nodes",
        min: 0,
        max: 300,
        initial: 0,
    },
];

/// How the server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ready,
    NotReady,
    /// Answers that do not follow the contract (not checked against it).
    Garbage,
    /// Answers after this long.
    Slow(Duration),
    /// Closes every connection at once.
    Down,
    /// Answers every request with a redirect to this port on localhost (a hostile CML).
    Redirect(u16),
    /// Answers every request with this many bytes of JSON-looking padding (a hostile CML).
    Oversized(usize),
}

#[derive(Debug)]
pub struct State {
    pub mode: Mode,
    /// Running nodes over all computes; the first compute gets the larger half.
    pub running_nodes: u32,
    /// Labs of other users: only `show_all=true` lists them to the probing admin.
    pub labs: u32,
    /// `running_nodes` of the second compute reported as null (the schema allows it).
    pub counts_unknown: bool,
    /// Endpoints told to answer with an error status, by name (`licensing`, `system_stats`, ...).
    pub failing: HashMap<String, StatusCode>,
    pub issued_tokens: Vec<String>,
    pub authentications: u32,
    /// `system_information` requests answered: one per probe.
    pub probes: u32,
    /// What `licensing` reports as `authorization.status` once registered.
    pub authorization: &'static str,
    /// This server's product instance and its Smart Licensing state.
    pub smart: SmartLicensing,
    /// Answers, and request bodies, that broke the published contract.
    pub violations: Vec<String>,
}

/// One licensing call that changes something (not `GET /licensing`), as the server answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LicenseCall {
    /// `PUT`, `POST`, `PATCH`, `DELETE`.
    pub method: String,
    /// As the contract names it, e.g. `/licensing/registration`.
    pub path: String,
    pub status: u16,
    pub at: jiff::Timestamp,
}

/// The Smart Licensing agent of one CML server: one product instance in a [`SmartAccount`].
#[derive(Debug)]
pub struct SmartLicensing {
    account: SmartAccount,
    product_instance: String,
    hostname: String,
    registration: Registration,
    product: String,
    /// The last `PUT /licensing/transport` body.
    transport: Option<Value>,
    /// `in_use` of each of [`FEATURES`], in order.
    in_use: [u32; 2],
    delay: Duration,
    deregistration_answer: Option<u16>,
    calls: Vec<LicenseCall>,
    /// Registration requests accepted (204).
    accepted: u32,
}

#[derive(Clone, Debug)]
enum Registration {
    NotRegistered,
    /// Requested; decided once the delay has passed since `started`.
    Running {
        since: jiff::Timestamp,
        started: Instant,
        valid_token: bool,
    },
    Completed {
        at: jiff::Timestamp,
    },
    Failed {
        at: jiff::Timestamp,
        reason: String,
    },
}

/// Product instances started in this process, so servers sharing an account differ.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl SmartLicensing {
    fn new(account: SmartAccount, port: u16) -> SmartLicensing {
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        SmartLicensing {
            account,
            product_instance: uuid4(0x5ea7_1ce5, (u64::from(port) << 16) | n),
            hostname: format!("cml-worker-{port}"),
            registration: Registration::NotRegistered,
            product: PRODUCTS[0].to_owned(),
            transport: None,
            in_use: FEATURES.map(|f| f.initial),
            delay: REGISTRATION_DELAY,
            deregistration_answer: None,
            calls: Vec::new(),
            accepted: 0,
        }
    }

    /// Decides a registration whose time has come: the account gives a seat, or says why not.
    fn settle(&mut self) {
        let Registration::Running {
            since,
            started,
            valid_token,
        } = self.registration
        else {
            return;
        };
        if started.elapsed() < self.delay {
            return;
        }
        let at = later(since, self.delay);
        self.registration = if !valid_token {
            Registration::Failed {
                at,
                reason: INVALID_TOKEN_REASON.to_owned(),
            }
        } else {
            match self
                .account
                .take_seat(&self.product_instance, &self.product)
            {
                Ok(()) => Registration::Completed { at },
                Err(reason) => Registration::Failed { at, reason },
            }
        };
    }

    fn registered(&self) -> bool {
        matches!(self.registration, Registration::Completed { .. })
    }

    fn status(&self) -> &'static str {
        status_of(&self.registration)
    }
}

#[derive(Clone)]
pub struct CmlServer {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    state: Arc<Mutex<State>>,
    certificate: Arc<SwappableCertificate>,
    connections: super::serve::Connections,
}

/// The server's certificate, replaceable while it serves.
#[derive(Debug)]
struct SwappableCertificate(Mutex<(Arc<CertifiedKey>, String)>);

impl SwappableCertificate {
    fn new(cert_pem: &[u8], key_pem: &[u8]) -> SwappableCertificate {
        SwappableCertificate(Mutex::new(certified_key(cert_pem, key_pem)))
    }

    fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) {
        *self.0.lock().expect("certificate") = certified_key(cert_pem, key_pem);
    }

    fn fingerprint(&self) -> String {
        self.0.lock().expect("certificate").1.clone()
    }
}

impl ResolvesServerCert for SwappableCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.lock().expect("certificate").0.clone())
    }
}

/// The key and chain rustls serves, and the certificate's fingerprint as `openssl` prints it.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> (Arc<CertifiedKey>, String) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .expect("server certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("server key");
    let signing = tokio_rustls::rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(key)
        .expect("signing key");
    let key = Arc::new(CertifiedKey::new(certs, signing));
    (key, openssl_fingerprint(cert_pem))
}

/// `openssl x509 -noout -fingerprint -sha256`, the value a person would compare with.
fn openssl_fingerprint(cert_pem: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(cert_pem)
        .expect("write certificate");
    let out = child.wait_with_output().expect("openssl fingerprint");
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, fingerprint) = text
        .trim()
        .split_once('=')
        .expect("openssl prints NAME=FINGERPRINT");
    fingerprint.to_owned()
}

impl CmlServer {
    /// Starts a server on a free loopback port; it lives as long as the test's runtime. Its
    /// product instance is already registered (`COMPLETED`, `IN_COMPLIANCE`) with an account of
    /// its own, as a worker licensed by hand before the controller managed licensing.
    pub async fn start(dir: &Path) -> CmlServer {
        let server = CmlServer::start_in(dir, SmartAccount::new()).await;
        server.register_by_hand();
        server
    }

    /// Starts a server whose product instance is new to `account` and not registered
    /// (`NOT_REGISTERED`, `EVAL`), as a freshly launched worker.
    pub async fn start_in(dir: &Path, account: SmartAccount) -> CmlServer {
        CmlServer::start_on(dir, account, "127.0.0.1:0").await
    }

    /// As [`CmlServer::start_in`], listening on `address` (`ip:port`; port 0 picks one).
    pub async fn start_on(dir: &Path, account: SmartAccount, address: &str) -> CmlServer {
        let (ca_pem, cert_pem, key_pem) = make_certificates(dir);
        let certificate = Arc::new(SwappableCertificate::new(&cert_pem, &key_pem));
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(address)
            .await
            .unwrap_or_else(|e| panic!("bind {address}: {e}"));
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Ready,
            running_nodes: 0,
            labs: 0,
            counts_unknown: false,
            failing: HashMap::new(),
            issued_tokens: Vec::new(),
            authentications: 0,
            probes: 0,
            authorization: "IN_COMPLIANCE",
            smart: SmartLicensing::new(account, port),
            violations: Vec::new(),
        }));
        let serving = state.clone();
        let connections =
            super::serve::spawn(listener, routes(state.clone()), Some(acceptor), move || {
                serving.lock().expect("test server state").mode == Mode::Down
            });
        CmlServer {
            port,
            ca_pem,
            state,
            certificate,
            connections,
        }
    }

    /// The SHA-256 fingerprint of the certificate it presents, as OpenSSL prints it.
    pub fn fingerprint(&self) -> String {
        self.certificate.fingerprint()
    }

    /// Presents a new certificate (made in `dir`), as a CML whose host was replaced or whose
    /// certificate was regenerated: open connections are closed, so every client meets it;
    /// returns its fingerprint.
    pub fn replace_certificate(&self, dir: &Path) -> String {
        let (_, cert_pem, key_pem) = make_certificates(dir);
        self.certificate.replace(&cert_pem, &key_pem);
        self.connections.close_all();
        self.fingerprint()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("test server state").mode = mode;
    }

    pub fn mode(&self) -> Mode {
        self.lock().mode
    }

    /// Labs of other users and running nodes, as set.
    pub fn usage(&self) -> (u32, u32) {
        let st = self.lock();
        (st.labs, st.running_nodes)
    }

    /// Labs (of other users) and running nodes, spread over both computes.
    pub fn set_usage(&self, labs: u32, running_nodes: u32) {
        let mut s = self.state.lock().expect("test server state");
        s.labs = labs;
        s.running_nodes = running_nodes;
    }

    /// Makes the second compute report its running nodes as null.
    pub fn set_counts_unknown(&self, unknown: bool) {
        self.state.lock().expect("test server state").counts_unknown = unknown;
    }

    /// Makes one endpoint (`licensing`, `labs`, `system_stats`, `system_health`) answer with
    /// `status` and an error body; `None` heals it.
    pub fn set_failing(&self, endpoint: &str, status: Option<StatusCode>) {
        let mut s = self.state.lock().expect("test server state");
        match status {
            Some(code) => s.failing.insert(endpoint.to_owned(), code),
            None => s.failing.remove(endpoint),
        };
    }

    /// What Smart Licensing says about this worker's authorization once it is registered
    /// (default `IN_COMPLIANCE`); before, it is `EVAL`.
    pub fn set_authorization(&self, authorization: &'static str) {
        self.state.lock().expect("test server state").authorization = authorization;
    }

    /// Forgets every issued token, as a restarted CML would.
    pub fn expire_tokens(&self) {
        self.state
            .lock()
            .expect("test server state")
            .issued_tokens
            .clear();
    }

    pub fn probes(&self) -> u32 {
        self.state.lock().expect("test server state").probes
    }

    pub fn authentications(&self) -> u32 {
        self.state
            .lock()
            .expect("test server state")
            .authentications
    }

    /// Answers given so far, and request bodies sent, that broke the published contract.
    pub fn violations(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("test server state")
            .violations
            .clone()
    }

    /// Registers the product instance at once, as a person on CML's UI would have before the
    /// test: `COMPLETED` with a seat, or `FAILED` when the account has none left.
    pub fn register_by_hand(&self) {
        let mut st = self.lock();
        let smart = &mut st.smart;
        let at = jiff::Timestamp::now();
        smart.registration = match smart
            .account
            .take_seat(&smart.product_instance, &smart.product)
        {
            Ok(()) => Registration::Completed { at },
            Err(reason) => Registration::Failed { at, reason },
        };
    }

    /// The Smart Account this server's product instance registers with.
    pub fn account(&self) -> SmartAccount {
        self.lock().smart.account.clone()
    }

    /// This server's `udi.product_uuid`: its product instance in the Smart Account.
    pub fn product_instance(&self) -> String {
        self.lock().smart.product_instance.clone()
    }

    /// This server's `udi.hostname`.
    pub fn hostname(&self) -> String {
        self.lock().smart.hostname.clone()
    }

    /// `registration.status` now, e.g. `NOT_REGISTERED`, [`REGISTRATION_PENDING`], `COMPLETED`.
    pub fn registration_status(&self) -> String {
        let mut st = self.lock();
        st.smart.settle();
        st.smart.status().to_owned()
    }

    /// The active product license.
    pub fn product_license(&self) -> String {
        self.lock().smart.product.clone()
    }

    /// Sets the active product license, as a person on the CML UI would.
    pub fn set_product_license(&self, product: &str) {
        self.lock().smart.product = product.to_owned();
    }

    /// How long a registration runs before it completes or fails (default
    /// [`REGISTRATION_DELAY`]); applies to registrations not yet decided too.
    pub fn set_registration_delay(&self, delay: Duration) {
        self.lock().smart.delay = delay;
    }

    /// Makes `DELETE /licensing/deregistration` answer `status`: 202 deregisters on the server
    /// only and leaves the seat held in the account (a leak); 409, 400, 403 refuse with CML's
    /// error body. `None` heals it.
    pub fn set_deregistration_answer(&self, status: Option<u16>) {
        self.lock().smart.deregistration_answer = status;
    }

    /// The licensing calls that change something, in the order they came (logged in only).
    pub fn license_calls(&self) -> Vec<LicenseCall> {
        self.lock().smart.calls.clone()
    }

    /// Registration requests accepted (answered 204).
    pub fn registrations(&self) -> u32 {
        self.lock().smart.accepted
    }

    /// The last transport set (`PUT /licensing/transport` body), if any.
    pub fn transport(&self) -> Option<Value> {
        self.lock().smart.transport.clone()
    }

    /// A feature's `in_use` count, e.g. of [`NODE_COUNT_FEATURE`].
    pub fn feature_in_use(&self, id: &str) -> Option<u32> {
        let st = self.lock();
        FEATURES
            .iter()
            .position(|f| f.id == id)
            .map(|i| st.smart.in_use[i])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("test server state")
    }
}

type Shared = Arc<Mutex<State>>;

fn routes(
    state: Shared,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    let with_state = warp::any().map(move || state.clone());
    let info = warp::path!("api" / "v0" / "system_information")
        .and(warp::get())
        .and(with_state.clone())
        .then(|s: Shared| async move {
            respond(&s, |st| {
                st.probes += 1;
                let ready = st.mode != Mode::NotReady;
                answer(
                    st,
                    "get",
                    "/system_information",
                    StatusCode::OK,
                    json!({"version": "2.9.1", "ready": ready, "allow_ssh_pubkey_auth": false, "oui": null}),
                )
            })
            .await
        });
    let auth = warp::path!("api" / "v0" / "authenticate")
        .and(warp::post())
        .and(warp::body::json())
        .and(with_state.clone())
        .then(|body: Value, s: Shared| async move {
            respond(&s, move |st| {
                if body["username"] == USERNAME && body["password"] == PASSWORD {
                    st.authentications += 1;
                    let token = jwt(st.authentications);
                    st.issued_tokens.push(token.clone());
                    answer(st, "post", "/authenticate", StatusCode::OK, json!(token))
                } else {
                    error(
                        st,
                        "post",
                        "/authenticate",
                        StatusCode::FORBIDDEN,
                        "Authentication failed!",
                    )
                }
            })
            .await
        });
    let licensing = warp::path!("api" / "v0" / "licensing" / String)
        .and(warp::method())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .and(with_state.clone())
        .then(
            |name: String,
             method: Method,
             header: Option<String>,
             body: bytes::Bytes,
             s: Shared| async move {
                let response = respond(&s, |st| {
                    licensing_call(st, &method, &name, header.as_deref(), &body)
                })
                .await;
                if name == "registration" && response.status() == StatusCode::NO_CONTENT {
                    decide_later(&s);
                }
                response
            },
        );
    let authed =
        warp::path!("api" / "v0" / String)
            .and(warp::get())
            .and(warp::query::<HashMap<String, String>>())
            .and(warp::header::optional::<String>("authorization"))
            .and(with_state)
            .then(
                |name: String,
                 query: HashMap<String, String>,
                 header: Option<String>,
                 s: Shared| async move {
                    respond(&s, move |st| authed(st, &name, &query, header.as_deref())).await
                },
            );
    info.or(auth)
        .unify()
        .or(licensing)
        .unify()
        .or(authed)
        .unify()
}

/// Decides the registration just accepted once its delay has passed, as CML's agent does in the
/// background; requests in between decide it too, should the delay change.
fn decide_later(state: &Shared) {
    let state = state.clone();
    let delay = state.lock().expect("test server state").smart.delay;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        state.lock().expect("test server state").smart.settle();
    });
}

/// Whether the request carries a JWT this server issued.
fn logged_in(st: &State, header: Option<&str>) -> bool {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    st.issued_tokens.iter().any(|t| t == token)
}

/// The endpoints that need a JWT.
fn authed(
    st: &mut State,
    name: &str,
    query: &HashMap<String, String>,
    header: Option<&str>,
) -> warp::reply::Response {
    let path = format!("/{name}");
    if !logged_in(st, header) {
        return error(
            st,
            "get",
            &path,
            StatusCode::UNAUTHORIZED,
            "No authorization token provided.",
        );
    }
    if let Some(code) = st.failing.get(name).copied() {
        return error(st, "get", &path, code, "Injected failure.");
    }
    let body = match name {
        "system_health" => system_health(st),
        "licensing" => {
            st.smart.settle();
            licensing(st)
        }
        // The probing admin owns none of the labs: only show_all lists other users' labs.
        "labs" if query.get("show_all").map(String::as_str) == Some("true") => {
            json!(
                (0..st.labs)
                    .map(|i| uuid4(0x1ab5, u64::from(i)))
                    .collect::<Vec<_>>()
            )
        }
        "labs" => json!([]),
        "system_stats" => system_stats(st),
        _ => return error(st, "get", &path, StatusCode::NOT_FOUND, "Not found."),
    };
    answer(st, "get", &path, StatusCode::OK, body)
}

/// The calls under `/licensing/`: logged in only, each request body checked against the
/// contract, each call that changes something logged.
fn licensing_call(
    st: &mut State,
    method: &Method,
    name: &str,
    header: Option<&str>,
    body: &[u8],
) -> warp::reply::Response {
    let path = format!("/licensing/{name}");
    let verb = method.as_str().to_ascii_lowercase();
    if !logged_in(st, header) {
        return error(
            st,
            &verb,
            &path,
            StatusCode::UNAUTHORIZED,
            "No authorization token provided.",
        );
    }
    st.smart.settle();
    let response = match st.failing.get(&format!("licensing/{name}")).copied() {
        Some(code) => error(st, &verb, &path, code, "Injected failure."),
        None => licensing_operation(st, &verb, &path, body),
    };
    if *method != Method::GET {
        st.smart.calls.push(LicenseCall {
            method: method.as_str().to_owned(),
            path,
            status: response.status().as_u16(),
            at: jiff::Timestamp::now(),
        });
    }
    response
}

fn licensing_operation(
    st: &mut State,
    verb: &str,
    path: &str,
    body: &[u8],
) -> warp::reply::Response {
    let known = matches!(
        (verb, path),
        ("put", "/licensing/product_license")
            | ("put", "/licensing/transport")
            | ("post", "/licensing/registration")
            | ("patch", "/licensing/features")
    );
    let request = if known {
        match request_body(verb, path, body) {
            Ok(value) => value,
            Err(breach) => return invalid_input(st, verb, path, breach),
        }
    } else {
        Value::Null
    };
    match (verb, path) {
        ("put", "/licensing/product_license") => set_product_license(st, &request),
        ("put", "/licensing/transport") => {
            st.smart.transport = Some(request);
            empty(st, verb, path, StatusCode::NO_CONTENT)
        }
        ("post", "/licensing/registration") => request_registration(st, &request),
        ("patch", "/licensing/features") => set_features(st, &request),
        ("get", "/licensing/features") => {
            st.smart.settle();
            let features = licensing(st)["features"].clone();
            answer(st, verb, path, StatusCode::OK, features)
        }
        ("delete", "/licensing/deregistration") => deregister(st),
        _ => error(st, verb, path, StatusCode::NOT_FOUND, "Not found."),
    }
}

/// A request body the contract allows, or the breach.
fn request_body(verb: &str, path: &str, body: &[u8]) -> Result<Value, String> {
    let value = serde_json::from_slice::<Value>(body)
        .map_err(|e| format!("{verb} {path} request is not JSON: {e}"))?;
    contract::cml().check_request(verb, path, &value)?;
    Ok(value)
}

/// A request that broke the contract: recorded, and answered as CML answers invalid input,
/// 400 with a description naming what was wrong (and echoing the value, as validation errors
/// do, which a client must not pass on when it is a secret).
fn invalid_input(st: &mut State, verb: &str, path: &str, breach: String) -> warp::reply::Response {
    let description = format!("Invalid input: {breach}");
    st.violations.push(breach);
    error(st, verb, path, StatusCode::BAD_REQUEST, &description)
}

/// `PUT /licensing/product_license`: a known product other than the active one.
fn set_product_license(st: &mut State, product: &Value) -> warp::reply::Response {
    let path = "/licensing/product_license";
    let product = product.as_str().unwrap_or_default();
    if !PRODUCTS.contains(&product) {
        let why = format!("Invalid product license {product}.");
        return error(st, "put", path, StatusCode::BAD_REQUEST, &why);
    }
    // Real CML was seen refusing the product already active.
    if product == st.smart.product {
        let why = format!("Product license {product} is already active.");
        return error(st, "put", path, StatusCode::BAD_REQUEST, &why);
    }
    st.smart.product = product.to_owned();
    empty(st, "put", path, StatusCode::NO_CONTENT)
}

/// `POST /licensing/registration`: runs in the background (see [`SmartLicensing::settle`]).
fn request_registration(st: &mut State, request: &Value) -> warp::reply::Response {
    let path = "/licensing/registration";
    let reregister = request["reregister"].as_bool().unwrap_or(false);
    match st.smart.registration {
        Registration::Running { .. } => {
            return error(
                st,
                "post",
                path,
                StatusCode::CONFLICT,
                "Registration cannot be requested at this time: another licensing operation is in progress.",
            );
        }
        Registration::Completed { .. } if !reregister => {
            return error(
                st,
                "post",
                path,
                StatusCode::BAD_REQUEST,
                "The Product is already registered with Smart Software Licensing.",
            );
        }
        _ => {}
    }
    st.smart.registration = Registration::Running {
        since: jiff::Timestamp::now(),
        started: Instant::now(),
        valid_token: request["token"] != INVALID_TOKEN,
    };
    st.smart.accepted += 1;
    empty(st, "post", path, StatusCode::NO_CONTENT)
}

/// `PATCH /licensing/features`: registered only; each id known, each count within min..max.
fn set_features(st: &mut State, request: &Value) -> warp::reply::Response {
    let path = "/licensing/features";
    if !st.smart.registered() {
        return error(
            st,
            "patch",
            path,
            StatusCode::BAD_REQUEST,
            "The Product is not registered with Smart Software Licensing.",
        );
    }
    let mut in_use = st.smart.in_use;
    for item in request.as_array().map(Vec::as_slice).unwrap_or_default() {
        let id = item["id"].as_str().unwrap_or_default();
        let count = item["count"].as_u64().unwrap_or_default();
        let Some(i) = FEATURES.iter().position(|f| f.id == id) else {
            let why = format!("Unknown feature {id}.");
            return error(st, "patch", path, StatusCode::BAD_REQUEST, &why);
        };
        let f = &FEATURES[i];
        match u32::try_from(count) {
            Ok(n) if (f.min..=f.max).contains(&n) => in_use[i] = n,
            _ => {
                let why = format!("Count {count} of {id} is outside {}..{}.", f.min, f.max);
                return error(st, "patch", path, StatusCode::BAD_REQUEST, &why);
            }
        }
    }
    st.smart.in_use = in_use;
    empty(st, "patch", path, StatusCode::NO_CONTENT)
}

/// `DELETE /licensing/deregistration`: the knob first, then CML's own rules.
fn deregister(st: &mut State) -> warp::reply::Response {
    let path = "/licensing/deregistration";
    let conflict = "Deregistration cannot be requested at this time.";
    match st.smart.deregistration_answer {
        Some(202) => {
            // Done on the server; Cisco never heard of it, so the account keeps the seat.
            st.smart.registration = Registration::NotRegistered;
            return empty(st, "delete", path, StatusCode::ACCEPTED);
        }
        Some(code) if code != 204 => {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let why = match code {
                StatusCode::CONFLICT => conflict,
                StatusCode::BAD_REQUEST => ALREADY_DEREGISTERED,
                StatusCode::FORBIDDEN => "Access is denied.",
                _ => "Injected failure.",
            };
            return error(st, "delete", path, code, why);
        }
        _ => {}
    }
    if matches!(st.smart.registration, Registration::Running { .. }) {
        return error(st, "delete", path, StatusCode::CONFLICT, conflict);
    }
    if st.running_nodes > 0 {
        return error(st, "delete", path, StatusCode::BAD_REQUEST, NODES_RUNNING);
    }
    if !st.smart.registered() {
        return error(
            st,
            "delete",
            path,
            StatusCode::BAD_REQUEST,
            ALREADY_DEREGISTERED,
        );
    }
    st.smart.account.free_seat(&st.smart.product_instance);
    st.smart.registration = Registration::NotRegistered;
    empty(st, "delete", path, StatusCode::NO_CONTENT)
}

fn system_health(st: &State) -> Value {
    let compute = |i: usize| {
        json!({
            "kvm_vmx_enabled": true, "enough_cpus": true, "lld_connected": true,
            "lld_synced": true, "libvirt": true, "fabric": true, "device_mux": true,
            "refplat_images_available": true, "docker_shim": true, "valid": true,
            "admission_state": "READY", "is_controller": i == 0, "hostname": format!("cml-compute-{i}")
        })
    };
    json!({
        "valid": true,
        "computes": {COMPUTES[0]: compute(0), COMPUTES[1]: compute(1)},
        "is_licensed": st.smart.registered(),
        "is_enterprise": true,
        "controller": {"core_connected": true, "nodes_loaded": true, "images_loaded": true, "valid": true}
    })
}

/// `GET /licensing`: schema `LicensingStatus`, every property given.
fn licensing(st: &State) -> Value {
    let smart = &st.smart;
    let registered = smart.registered();
    let feature_status = if registered { st.authorization } else { "EVAL" };
    let features: Vec<Value> = FEATURES
        .iter()
        .zip(smart.in_use)
        .map(|(f, in_use)| {
            json!({
                "id": f.id, "name": f.name, "description": f.name, "version": "1.0",
                "in_use": in_use, "status": feature_status, "min": f.min, "max": f.max,
                "minEndDate": null, "maxEndDate": null
            })
        })
        .collect();
    let transport = smart.transport.as_ref();
    let ssms = transport
        .and_then(|t| t["ssms"].as_str())
        .unwrap_or(DEFAULT_SSMS);
    let proxy = transport
        .map(|t| t["proxy"].clone())
        .unwrap_or_else(|| json!({"server": null, "port": null}));
    json!({
        "udi": {"hostname": smart.hostname, "product_uuid": smart.product_instance},
        "registration": registration_status(&smart.registration),
        "authorization": authorization_status(&smart.registration, st.authorization),
        "reservation_mode": false,
        "features": features,
        "product_license": {"active": smart.product, "is_enterprise": smart.product == PRODUCTS[0]},
        "transport": {"proxy": proxy, "ssms": ssms, "default_ssms": DEFAULT_SSMS}
    })
}

/// Schema `Registration`, with both `LicensingTimeInfo`s.
fn registration_status(registration: &Registration) -> Value {
    let (register_time, renew_time, expires, accounts) = match registration {
        Registration::NotRegistered => (time_info(), time_info(), Value::Null, false),
        Registration::Running { since, .. } => {
            let mut register = time_info();
            register["attempted"] = stamp(*since);
            (register, time_info(), Value::Null, false)
        }
        Registration::Completed { at } => {
            let mut register = time_info();
            register["succeeded"] = stamp(*at);
            register["attempted"] = stamp(*at);
            register["status"] = json!("SUCCEEDED");
            register["success"] = json!("SUCCEEDED");
            let mut renew = time_info();
            renew["scheduled"] = stamp(later(*at, days(180)));
            (register, renew, stamp(later(*at, days(365))), true)
        }
        Registration::Failed { at, reason } => {
            let mut register = time_info();
            register["attempted"] = stamp(*at);
            register["status"] = json!("FAILED");
            register["failure"] = json!(reason);
            register["success"] = json!("FAILED");
            (register, time_info(), Value::Null, false)
        }
    };
    let account = |name: &str| if accounts { json!(name) } else { Value::Null };
    json!({
        "status": status_of(registration),
        "smart_account": account("Lab Platform"),
        "virtual_account": account("Workers"),
        "register_time": register_time,
        "renew_time": renew_time,
        "expires": expires
    })
}

/// Schema `Authorization`: evaluation until registered, then `authorization` (a knob).
fn authorization_status(registration: &Registration, authorization: &str) -> Value {
    match registration {
        Registration::Completed { at } => {
            let mut renew = time_info();
            renew["scheduled"] = stamp(later(*at, days(30)));
            json!({
                "status": authorization,
                "renew_time": renew,
                "expires": stamp(later(*at, days(90)))
            })
        }
        _ => json!({"status": "EVAL", "renew_time": time_info(), "expires": null}),
    }
}

fn status_of(registration: &Registration) -> &'static str {
    match registration {
        Registration::NotRegistered => "NOT_REGISTERED",
        Registration::Running { .. } => REGISTRATION_PENDING,
        Registration::Completed { .. } => "COMPLETED",
        Registration::Failed { .. } => "FAILED",
    }
}

/// Schema `LicensingTimeInfo` with nothing known yet: every key is required, each nullable.
fn time_info() -> Value {
    json!({"succeeded": null, "attempted": null, "scheduled": null, "status": null,
           "failure": null, "success": null})
}

/// RFC 3339 to the second, as a `date-time`.
fn stamp(t: jiff::Timestamp) -> Value {
    json!(
        jiff::Timestamp::from_second(t.as_second())
            .unwrap_or(t)
            .to_string()
    )
}

fn later(t: jiff::Timestamp, by: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(by)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

fn system_stats(st: &State) -> Value {
    let second = st.running_nodes / 2;
    let first = st.running_nodes - second;
    let compute = |i: usize, running: Value| {
        json!({
            "hostname": format!("cml-compute-{i}"),
            "is_controller": i == 0,
            "stats": {
                "cpu": {"count": 48, "percent": 12.5, "model": "Intel Xeon", "predicted": 48, "load": [0.5, 0.4, 0.3]},
                "memory": {"used": 1.0e10, "free": 3.0e11, "total": 3.1e11},
                "disk": {"used": 2.0e10, "free": 4.0e11, "total": 4.2e11},
                "dominfo": {
                    "allocated_cpus": 2 * running.as_u64().unwrap_or(0),
                    "allocated_memory": 2048 * running.as_u64().unwrap_or(0),
                    "total_nodes": running, "total_orphans": 0,
                    "running_nodes": running, "running_orphans": 0
                }
            }
        })
    };
    let second = if st.counts_unknown {
        Value::Null
    } else {
        json!(second)
    };
    json!({
        "computes": {COMPUTES[0]: compute(0, json!(first)), COMPUTES[1]: compute(1, second)},
        "all": {
            "cpu": {"count": 96, "percent": 12.5},
            "memory": {"used": 2.0e10, "free": 6.0e11, "total": 6.2e11},
            "disk": {"used": 4.0e10, "free": 8.0e11, "total": 8.4e11}
        },
        "controller": {"disk": {"used": 1.0e10, "free": 1.0e11, "total": 1.1e11}}
    })
}

/// A token shaped as the schema's JWT pattern requires.
fn jwt(n: u32) -> String {
    format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9-{n}.c2lnbmF0dXJl")
}

/// A deterministic UUID4 (version and variant digits as the schemas' pattern requires).
pub fn uuid4(prefix: u32, n: u64) -> String {
    format!("{prefix:08x}-0000-4000-8000-{n:012x}")
}

/// A JSON answer, checked against the published contract first.
fn answer(
    st: &mut State,
    method: &str,
    path: &str,
    code: StatusCode,
    body: Value,
) -> warp::reply::Response {
    if let Err(e) = contract::cml().check(method, path, code.as_u16(), &body) {
        st.violations.push(e);
    }
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}

/// An answer without a body (204, 202), checked against the contract first.
fn empty(st: &mut State, method: &str, path: &str, code: StatusCode) -> warp::reply::Response {
    if let Err(e) = contract::cml().check(method, path, code.as_u16(), &Value::Null) {
        st.violations.push(e);
    }
    warp::reply::with_status(warp::reply(), code).into_response()
}

/// CML's error body, `{code, description}`.
fn error(
    st: &mut State,
    method: &str,
    path: &str,
    code: StatusCode,
    description: &str,
) -> warp::reply::Response {
    answer(
        st,
        method,
        path,
        code,
        json!({"code": code.as_u16(), "description": description}),
    )
}

/// Applies the mode (slow, garbage) around a handler.
async fn respond(
    state: &Shared,
    handler: impl FnOnce(&mut State) -> warp::reply::Response,
) -> warp::reply::Response {
    let mode = state.lock().expect("test server state").mode;
    match mode {
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Garbage => {
            return warp::reply::with_status("<html>gateway error</html>", StatusCode::OK)
                .into_response();
        }
        Mode::Redirect(port) => {
            let to = format!("http://127.0.0.1:{port}/stolen");
            let found = warp::reply::with_status(warp::reply(), StatusCode::FOUND);
            return warp::reply::with_header(found, "location", to).into_response();
        }
        Mode::Oversized(len) => {
            let body = format!("\"{}\"", "x".repeat(len));
            return warp::reply::with_status(body, StatusCode::OK).into_response();
        }
        _ => {}
    }
    handler(&mut state.lock().expect("test server state"))
}

/// Creates Secret `name` in `namespace` holding this server's admin login.
pub async fn create_login_secret(client: &kube::Client, namespace: &str, name: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"ccm.dev/usage": "cml"}},
        "stringData": {"username": USERNAME, "password": PASSWORD}
    }))
    .expect("secret");
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .expect("create secret");
}
