//! A CML API test server that follows the contract the controller relies on, over TLS with a
//! certificate from its own CA, and that can be told to be not ready, slow, wrong or down.

use std::{
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use warp::{Filter, http::StatusCode, reply::Reply};

pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "cml-test-password";

/// How the server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ready,
    NotReady,
    /// Answers that do not follow the contract.
    Garbage,
    /// Answers after this long.
    Slow(Duration),
    /// Closes every connection at once.
    Down,
}

#[derive(Debug)]
pub struct State {
    pub mode: Mode,
    pub running_nodes: u32,
    pub labs: u32,
    pub issued_tokens: Vec<String>,
    pub authentications: u32,
    /// `system_information` requests answered: one per probe.
    pub probes: u32,
    /// What `licensing` reports as `authorization.status`.
    pub authorization: &'static str,
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
            issued_tokens: Vec::new(),
            authentications: 0,
            probes: 0,
            authorization: "IN_COMPLIANCE",
        }));
        let routes = routes(state.clone());
        let serving = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if serving.lock().unwrap().mode == Mode::Down {
                    drop(stream);
                    continue;
                }
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(warp::service(routes.clone()));
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    }
                });
            }
        });
        CmlServer {
            port,
            ca_pem,
            state,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    pub fn set_usage(&self, labs: u32, running_nodes: u32) {
        let mut s = self.state.lock().unwrap();
        s.labs = labs;
        s.running_nodes = running_nodes;
    }

    /// What Smart Licensing says about this worker's authorization.
    pub fn set_authorization(&self, authorization: &'static str) {
        self.state.lock().unwrap().authorization = authorization;
    }

    /// Forgets every issued token, as a restarted CML would.
    pub fn expire_tokens(&self) {
        self.state.lock().unwrap().issued_tokens.clear();
    }

    pub fn probes(&self) -> u32 {
        self.state.lock().unwrap().probes
    }

    pub fn authentications(&self) -> u32 {
        self.state.lock().unwrap().authentications
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
                match st.mode {
                    Mode::NotReady => json(serde_json::json!({"version": "2.9.1", "ready": false})),
                    _ => json(serde_json::json!({"version": "2.9.1", "ready": true})),
                }
            })
            .await
        });
    let auth = warp::path!("api" / "v0" / "authenticate")
        .and(warp::post())
        .and(warp::body::json())
        .and(with_state.clone())
        .then(|body: serde_json::Value, s: Shared| async move {
            respond(&s, move |st| {
                if body["username"] == USERNAME && body["password"] == PASSWORD {
                    st.authentications += 1;
                    let token = format!("jwt-{}", st.authentications);
                    st.issued_tokens.push(token.clone());
                    json(serde_json::json!(token))
                } else {
                    status(StatusCode::FORBIDDEN, "bad credentials")
                }
            })
            .await
        });
    let authed = |path: &'static str| {
        warp::path("api")
            .and(warp::path("v0"))
            .and(warp::path(path))
            .and(warp::path::end())
            .and(warp::get())
            .and(warp::header::optional::<String>("authorization"))
            .and(with_state.clone())
            .then(move |header: Option<String>, s: Shared| async move {
                respond(&s, move |st| {
                    let token = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")).unwrap_or_default();
                    if !st.issued_tokens.iter().any(|t| t == token) {
                        return status(StatusCode::UNAUTHORIZED, "no valid token");
                    }
                    match path {
                        "system_health" => json(serde_json::json!({"valid": true, "is_licensed": true, "is_enterprise": false})),
                        "licensing" => json(serde_json::json!({
                            "registration": {"status": "COMPLETED", "smart_account": "Lab Platform"},
                            "authorization": {"status": st.authorization},
                            "reservation_mode": false,
                            "product_license": {"active": "CML_Enterprise", "is_enterprise": true},
                            "features": [{"name": "CML - Enterprise License", "in_use": st.running_nodes, "status": st.authorization}]
                        })),
                        "labs" => json(serde_json::json!((0..st.labs).map(|i| format!("lab-{i}")).collect::<Vec<_>>())),
                        _ => json(serde_json::json!({
                            "computes": {"compute-1": {"hostname": "cml", "dominfo": {"running_nodes": st.running_nodes, "total_nodes": st.running_nodes}}},
                            "all": {}
                        })),
                    }
                })
                .await
            })
    };
    info.or(auth)
        .unify()
        .or(authed("system_health"))
        .unify()
        .or(authed("licensing"))
        .unify()
        .or(authed("labs"))
        .unify()
        .or(authed("system_stats"))
        .unify()
}

/// Applies the mode (slow, garbage) around a handler.
async fn respond(
    state: &Shared,
    handler: impl FnOnce(&mut State) -> warp::reply::Response,
) -> warp::reply::Response {
    let mode = state.lock().unwrap().mode;
    match mode {
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Garbage => {
            return warp::reply::with_status("<html>gateway error</html>", StatusCode::OK)
                .into_response();
        }
        _ => {}
    }
    handler(&mut state.lock().unwrap())
}

fn json(value: serde_json::Value) -> warp::reply::Response {
    warp::reply::json(&value).into_response()
}

fn status(code: StatusCode, text: &'static str) -> warp::reply::Response {
    warp::reply::with_status(text, code).into_response()
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn make_certificates(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
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
