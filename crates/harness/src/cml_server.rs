//! A CML API test server built from CML 2.9's published OpenAPI schemas (`tests/contracts/`), over
//! TLS with a certificate from its own CA. Every answer it gives is checked against those schemas
//! and a breach is recorded (`violations`), so it cannot drift into the shape the client expects.
//! It can be told to be not ready, slow, wrong or down, to refuse or fail single endpoints, and
//! to leave node counts null.

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use warp::{Filter, http::StatusCode, reply::Reply};

use super::contract;

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "cml-test-password";

/// The two compute hosts (UUID4 keys, as the schemas require) the running nodes spread over.
pub const COMPUTES: [&str; 2] = [
    "6a0a3c52-1f7e-4c1b-9d0e-0c6c1a5e2b01",
    "9b7e1d44-58a2-4f3c-8e61-3d2f9c0a7b02",
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
    /// What `licensing` reports as `authorization.status`.
    pub authorization: &'static str,
    /// Answers that broke the published contract.
    pub violations: Vec<String>,
}

#[derive(Clone)]
pub struct CmlServer {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca_pem: Vec<u8>,
    state: Arc<Mutex<State>>,
}

impl CmlServer {
    /// Starts a server on a free loopback port; it lives as long as the test's runtime.
    pub async fn start(dir: &Path) -> CmlServer {
        let (ca_pem, cert_pem, key_pem) = make_certificates(dir);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_slice(&key_pem).expect("server key");
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("tls config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
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
            violations: Vec::new(),
        }));
        let serving = state.clone();
        super::serve::spawn(listener, routes(state.clone()), Some(acceptor), move || {
            serving.lock().expect("test server state").mode == Mode::Down
        });
        CmlServer {
            port,
            ca_pem,
            state,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().expect("test server state").mode = mode;
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

    /// What Smart Licensing says about this worker's authorization.
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

    /// Answers given so far that broke the published contract.
    pub fn violations(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("test server state")
            .violations
            .clone()
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
    info.or(auth).unify().or(authed).unify()
}

/// The endpoints that need a JWT.
fn authed(
    st: &mut State,
    name: &str,
    query: &HashMap<String, String>,
    header: Option<&str>,
) -> warp::reply::Response {
    let path = format!("/{name}");
    let token = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !st.issued_tokens.iter().any(|t| t == token) {
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
        "system_health" => system_health(),
        "licensing" => licensing(st),
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

fn system_health() -> Value {
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
        "is_licensed": true,
        "is_enterprise": true,
        "controller": {"core_connected": true, "nodes_loaded": true, "images_loaded": true, "valid": true}
    })
}

fn licensing(st: &State) -> Value {
    json!({
        "registration": {"status": "COMPLETED", "smart_account": "Lab Platform", "virtual_account": "Workers", "expires": null},
        "authorization": {"status": st.authorization, "expires": null},
        "reservation_mode": false,
        "features": [{
            "id": "regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_2607650b-6ca8-46d5-81e5-e6688b7383c4",
            "name": "CML - Enterprise License", "in_use": st.running_nodes, "status": st.authorization,
            "min": 0, "max": 520
        }],
        "product_license": {"active": "CML_Enterprise", "is_enterprise": true}
    })
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
        _ => {}
    }
    handler(&mut state.lock().expect("test server state"))
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
pub fn make_certificates(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(dir).expect("cert dir");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=cml-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").expect("ext file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read pem");
    (read("ca.crt"), read("server.crt"), read("server.key"))
}

/// Creates Secret `name` in `namespace` holding this server's admin login.
pub async fn create_login_secret(client: &kube::Client, namespace: &str, name: &str) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "stringData": {"username": USERNAME, "password": PASSWORD}
    }))
    .expect("secret");
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .expect("create secret");
}
