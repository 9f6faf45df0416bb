//! A Control Plane API test server that follows `api/control-plane.openapi.yaml`: it checks every
//! request body and every answer against that file (breaches are kept in `violations`), records
//! what it was sent, and can be told to be down, slow, failing, answering garbage, or to require
//! a token.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use warp::{Filter, http::StatusCode, reply::Reply};

use super::contract;

/// How the server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Refuses new connections (and answers 503 on those opened before).
    Down,
    /// Answers after this long.
    Slow(Duration),
    /// 500 with an error body to everything.
    Failing,
    /// 200 with a body that is not JSON.
    Garbage,
    /// A redirect to this port on localhost, for everything (a hostile platform).
    Redirect(u16),
    /// 200 with this many bytes of body (a hostile platform).
    Oversized(usize),
}

#[derive(Debug)]
pub struct State {
    pub mode: Mode,
    /// The bearer token every request must carry, when set.
    pub token: Option<String>,
    /// Worker records by id.
    pub workers: BTreeMap<String, Value>,
    /// Every record PUT, in order.
    pub puts: Vec<Value>,
    pub deletes: Vec<String>,
    pub instances: Vec<Value>,
    pub definitions: HashMap<String, Value>,
    /// Capacity by worker id; a worker with none answers zero usage if it has a record, else 404.
    pub capacities: HashMap<String, Value>,
    pub scaling_events: Vec<Value>,
    /// `METHOD path` of every request answered.
    pub requests: Vec<String>,
    /// Authorization headers seen (to check the token is sent, and sent only here).
    pub authorizations: Vec<Option<String>>,
    pub violations: Vec<String>,
}

#[derive(Clone)]
pub struct ControlPlaneServer {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<State>>,
}

type Shared = Arc<Mutex<State>>;

impl ControlPlaneServer {
    /// Plain HTTP.
    pub async fn start() -> ControlPlaneServer {
        ControlPlaneServer::serve(None).await
    }

    /// HTTPS with a certificate from its own CA (PEM returned), made in `dir`.
    pub async fn start_tls(dir: &std::path::Path) -> (ControlPlaneServer, Vec<u8>) {
        let (ca_pem, cert_pem, key_pem) = super::cml_server::make_certificates(dir);
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem).expect("server key");
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (ControlPlaneServer::serve(Some(acceptor)).await, ca_pem)
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> ControlPlaneServer {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Up,
            token: None,
            workers: BTreeMap::new(),
            puts: Vec::new(),
            deletes: Vec::new(),
            instances: Vec::new(),
            definitions: HashMap::new(),
            capacities: HashMap::new(),
            scaling_events: Vec::new(),
            requests: Vec::new(),
            authorizations: Vec::new(),
            violations: Vec::new(),
        }));
        let serving = state.clone();
        // Its clients reconnect after a failure anyway: no need to close connections by hand.
        let _connections = super::serve::spawn(listener, routes(state.clone()), tls, move || {
            serving.lock().expect("test server state").mode == Mode::Down
        });
        ControlPlaneServer {
            addr,
            scheme,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("test server state")
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    pub fn require_token(&self, token: &str) {
        self.state().token = Some(token.to_owned());
    }

    pub fn record(&self, id: &str) -> Option<Value> {
        self.state().workers.get(id).cloned()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    pub fn add_definition(&self, definition: Value) {
        let id = definition["id"].as_str().expect("id").to_owned();
        self.state().definitions.insert(id, definition);
    }

    pub fn add_instance(&self, instance: Value) {
        self.state().instances.push(instance);
    }

    pub fn set_capacity(&self, worker_id: &str, capacity: Value) {
        self.state()
            .capacities
            .insert(worker_id.to_owned(), capacity);
    }
}

/// One request as the routes see it.
struct Request {
    method: &'static str,
    /// The path as the spec names it, e.g. `/api/internal/workers/{id}`.
    template: &'static str,
    id: Option<String>,
    query: HashMap<String, String>,
    body: Option<Value>,
    authorization: Option<String>,
}

fn routes(
    state: Shared,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
+ Clone
+ Send
+ Sync
+ 'static {
    let state = warp::any().map(move || state.clone());
    warp::method()
        .and(warp::path::full())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::bytes())
        .and(state)
        .then(
            |method: warp::http::Method,
             path: warp::path::FullPath,
             query: HashMap<String, String>,
             authorization: Option<String>,
             body: bytes::Bytes,
             s: Shared| async move {
                let mode = s.lock().expect("test server state").mode;
                match mode {
                    Mode::Slow(d) => tokio::time::sleep(d).await,
                    Mode::Garbage => {
                        return warp::reply::with_status("<html>oops", StatusCode::OK)
                            .into_response();
                    }
                    Mode::Redirect(port) => {
                        let to = format!("http://127.0.0.1:{port}/stolen");
                        let found = warp::reply::with_status(warp::reply(), StatusCode::FOUND);
                        return warp::reply::with_header(found, "location", to).into_response();
                    }
                    Mode::Oversized(len) => {
                        let body = format!("[\"{}\"]", "x".repeat(len));
                        return warp::reply::with_status(body, StatusCode::OK).into_response();
                    }
                    _ => {}
                }
                let Some((m, template, id)) = route(method.as_str(), path.as_str()) else {
                    return warp::reply::with_status("no such route", StatusCode::NOT_FOUND)
                        .into_response();
                };
                let body = (!body.is_empty()).then(|| serde_json::from_slice(&body));
                let body = match body {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(_)) => {
                        let mut st = s.lock().expect("test server state");
                        return answer(
                            &mut st,
                            m,
                            template,
                            StatusCode::BAD_REQUEST,
                            json!({"detail": "body is not JSON"}),
                        );
                    }
                };
                let request = Request {
                    method: m,
                    template,
                    id,
                    query,
                    body,
                    authorization,
                };
                let mut st = s.lock().expect("test server state");
                handle(&mut st, request)
            },
        )
}

/// The operation a method and path name, as the spec spells its path.
fn route(method: &str, path: &str) -> Option<(&'static str, &'static str, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let id = |s: &str| Some(percent_decode(s));
    match (method, parts.as_slice()) {
        ("GET", ["api", "v1", "instances"]) => Some(("get", "/api/v1/instances", None)),
        ("GET", ["api", "v1", "definitions", d]) => {
            Some(("get", "/api/v1/definitions/{id}", id(d)))
        }
        ("GET", ["api", "v1", "workers", w, "capacity"]) => {
            Some(("get", "/api/v1/workers/{id}/capacity", id(w)))
        }
        ("GET", ["api", "internal", "workers"]) => Some(("get", "/api/internal/workers", None)),
        ("PUT", ["api", "internal", "workers", w]) => {
            Some(("put", "/api/internal/workers/{id}", id(w)))
        }
        ("DELETE", ["api", "internal", "workers", w]) => {
            Some(("delete", "/api/internal/workers/{id}", id(w)))
        }
        ("POST", ["api", "internal", "scaling-events"]) => {
            Some(("post", "/api/internal/scaling-events", None))
        }
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(st: &mut State, r: Request) -> warp::reply::Response {
    st.requests
        .push(format!("{} {}", r.method.to_uppercase(), r.template));
    st.authorizations.push(r.authorization.clone());
    if let Some(token) = &st.token
        && r.authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        return answer(
            st,
            r.method,
            r.template,
            StatusCode::UNAUTHORIZED,
            json!({"detail": "missing or invalid bearer token"}),
        );
    }
    if st.mode == Mode::Down {
        // A connection opened before the outage: answered as a proxy with no backend would.
        return answer(
            st,
            r.method,
            r.template,
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"detail": "no healthy upstream"}),
        );
    }
    if st.mode == Mode::Failing {
        return answer(
            st,
            r.method,
            r.template,
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"detail": "injected failure"}),
        );
    }
    if let Some(body) = &r.body
        && let Err(e) = contract::control_plane().check_request(r.method, r.template, body)
    {
        // A client that breaks the contract is told so, as the real API would.
        st.violations.push(format!("client: {e}"));
        return answer(
            st,
            r.method,
            r.template,
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": e}),
        );
    }
    let id = r.id.clone().unwrap_or_default();
    match (r.method, r.template) {
        ("get", "/api/v1/instances") => {
            let Some(state) = r
                .query
                .get("state")
                .filter(|s| *s == "PENDING" || *s == "SCHEDULED")
            else {
                return answer(
                    st,
                    r.method,
                    r.template,
                    StatusCode::BAD_REQUEST,
                    json!({"detail": "state must be PENDING or SCHEDULED"}),
                );
            };
            let list: Vec<Value> = st
                .instances
                .iter()
                .filter(|i| i["state"] == state.as_str())
                .cloned()
                .collect();
            answer(st, r.method, r.template, StatusCode::OK, json!(list))
        }
        ("get", "/api/v1/definitions/{id}") => match st.definitions.get(&id).cloned() {
            Some(d) => answer(st, r.method, r.template, StatusCode::OK, d),
            None => not_found(st, &r, "no such definition"),
        },
        ("get", "/api/v1/workers/{id}/capacity") => {
            // A worker the API holds a record of and placed nothing on has zero usage.
            let known = st.workers.contains_key(&id).then(|| {
                json!({"worker_id": id, "allocated": {"cpu_cores": 0, "memory_gb": 0, "storage_gb": 0, "nodes": 0},
                       "running_instances": 0, "scheduled_instances": 0, "next_timeslot_start": null})
            });
            match st.capacities.get(&id).cloned().or(known) {
                Some(c) => answer(st, r.method, r.template, StatusCode::OK, c),
                None => not_found(st, &r, "no such worker"),
            }
        }
        ("get", "/api/internal/workers") => {
            let list: Vec<Value> = st.workers.values().cloned().collect();
            answer(st, r.method, r.template, StatusCode::OK, json!(list))
        }
        ("put", "/api/internal/workers/{id}") => {
            let body = r.body.clone().unwrap_or(Value::Null);
            if body["id"] != id.as_str() {
                return answer(
                    st,
                    r.method,
                    r.template,
                    StatusCode::BAD_REQUEST,
                    json!({"detail": "id in path and body differ"}),
                );
            }
            st.puts.push(body.clone());
            st.workers.insert(id, body.clone());
            answer(st, r.method, r.template, StatusCode::OK, body)
        }
        ("delete", "/api/internal/workers/{id}") => {
            st.deletes.push(id.clone());
            match st.workers.remove(&id) {
                Some(_) => answer(
                    st,
                    r.method,
                    r.template,
                    StatusCode::NO_CONTENT,
                    Value::Null,
                ),
                None => not_found(st, &r, "no such worker"),
            }
        }
        ("post", "/api/internal/scaling-events") => {
            let body = r.body.clone().unwrap_or(Value::Null);
            let seen = st.scaling_events.iter().any(|e| e["id"] == body["id"]);
            if !seen {
                st.scaling_events.push(body.clone());
            }
            let code = if seen {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            answer(st, r.method, r.template, code, body)
        }
        _ => answer(
            st,
            r.method,
            r.template,
            StatusCode::NOT_FOUND,
            json!({"detail": "no such route"}),
        ),
    }
}

fn not_found(st: &mut State, r: &Request, detail: &str) -> warp::reply::Response {
    answer(
        st,
        r.method,
        r.template,
        StatusCode::NOT_FOUND,
        json!({"detail": detail}),
    )
}

/// An answer, checked against the contract first.
fn answer(
    st: &mut State,
    method: &str,
    template: &str,
    code: StatusCode,
    body: Value,
) -> warp::reply::Response {
    if let Err(e) = contract::control_plane().check(method, template, code.as_u16(), &body) {
        st.violations.push(e);
    }
    if code == StatusCode::NO_CONTENT {
        return warp::reply::with_status(warp::reply(), code).into_response();
    }
    warp::reply::with_status(warp::reply::json(&body), code).into_response()
}
