//! The CML test server against CML 2.9's published OpenAPI schemas: every kind of answer it can
//! give is fetched raw and validated, so the server cannot drift from the real API and hide a
//! client bug (as it once did: running nodes read from the wrong level, always 0).

use ccm_harness as support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    cml_server::{
        CmlServer, INVALID_TOKEN, Mode, NODE_COUNT_FEATURE, PASSWORD, SmartAccount, USERNAME,
        VALID_TOKEN,
    },
    contract,
};

struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(server: &CmlServer) -> Raw {
        Raw {
            http: reqwest::Client::builder()
                .tls_danger_accept_invalid_certs(true)
                .build()
                .expect("client"),
            base: format!("https://127.0.0.1:{}/api/v0", server.port),
        }
    }

    async fn get(&self, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path_and_query}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Any method, with a JSON body or raw bytes; an empty answer reads as `null`.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(text) => request
                .header("content-type", "application/json")
                .body(text),
        };
        let response = request.send().await.expect("answer");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        (status, body)
    }

    async fn login(&self, password: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/authenticate", self.base))
            .json(&json!({"username": USERNAME, "password": password}))
            .send()
            .await
            .expect("answer");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Raw(&'static str),
}

/// Validates one answer with the contract, independently of the server's own check.
fn conforms(method: &str, path: &str, (status, body): &(u16, Value)) {
    let spec_path = path.split('?').next().unwrap_or(path);
    if let Err(e) = contract::cml().check(method, spec_path, *status, body) {
        panic!("{e}");
    }
}

const AUTHED: [&str; 4] = ["/system_health", "/licensing", "/labs", "/system_stats"];

#[tokio::test]
async fn every_kind_of_answer_follows_the_published_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CmlServer::start(dir.path()).await;
    let raw = Raw::new(&server);
    let mut kinds = 0;

    for mode in [Mode::NotReady, Mode::Ready] {
        server.set_mode(mode);
        conforms(
            "get",
            "/system_information",
            &raw.get("/system_information", None).await,
        );
        kinds += 1;
    }

    let refused = raw.login("wrong").await;
    assert_eq!(refused.0, 403);
    conforms("post", "/authenticate", &refused);
    let login = raw.login(PASSWORD).await;
    assert_eq!(login.0, 200);
    conforms("post", "/authenticate", &login);
    kinds += 2;
    let token = login.1.as_str().expect("a JWT string").to_owned();

    // Idle, busy over both computes with other users' labs, and counts left null.
    for (labs, nodes, unknown) in [(0, 0, false), (3, 7, false), (2, 5, true)] {
        server.set_usage(labs, nodes);
        server.set_counts_unknown(unknown);
        for path in AUTHED.into_iter().chain(["/labs?show_all=true"]) {
            conforms("get", path, &raw.get(path, Some(&token)).await);
            kinds += 1;
        }
    }
    server.set_usage(2, 5);
    server.set_counts_unknown(false);
    let (_, all) = raw.get("/labs?show_all=true", Some(&token)).await;
    let (_, own) = raw.get("/labs", Some(&token)).await;
    assert_eq!((all.as_array().map(Vec::len), own), (Some(2), json!([])));
    let (_, stats) = raw.get("/system_stats", Some(&token)).await;
    let per_compute: Vec<u64> = stats["computes"]
        .as_object()
        .expect("computes")
        .values()
        .map(|c| {
            c["stats"]["dominfo"]["running_nodes"]
                .as_u64()
                .expect("count")
        })
        .collect();
    assert_eq!(per_compute.len(), 2, "usage spreads over two computes");
    assert_eq!(per_compute.iter().sum::<u64>(), 5);

    // Errors: no token, and each endpoint refusing or failing.
    for path in AUTHED {
        let answer = raw.get(path, None).await;
        assert_eq!(answer.0, 401);
        conforms("get", path, &answer);
        kinds += 1;
        for code in [StatusCode::FORBIDDEN, StatusCode::INTERNAL_SERVER_ERROR] {
            let name = path.trim_start_matches('/');
            server.set_failing(name, Some(code));
            let answer = raw.get(path, Some(&token)).await;
            assert_eq!(answer.0, code.as_u16());
            conforms("get", path, &answer);
            server.set_failing(name, None);
            kinds += 1;
        }
    }

    assert_eq!(kinds, 2 + 2 + 15 + 12);
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_contract_rejects_the_shapes_the_server_once_gave() {
    let contract = contract::cml();
    // Each alone: the compute key, then the missing `stats` level.
    let old_stats = json!({
        "computes": {"compute-1": {"hostname": "cml", "is_controller": true, "stats": {
            "cpu": {"model": "x", "predicted": 1, "load": []},
            "memory": {"used": 0, "free": 1, "total": 1},
            "disk": {"used": 0, "free": 1, "total": 1},
            "dominfo": {"allocated_cpus": 0, "allocated_memory": 0, "running_nodes": 3}}}}
    });
    assert!(
        contract
            .check("get", "/system_stats", 200, &old_stats)
            .is_err()
    );
    let mut keyed = old_stats.clone();
    let compute = keyed["computes"]["compute-1"].take();
    keyed["computes"] = json!({"6a0a3c52-1f7e-4c1b-9d0e-0c6c1a5e2b01": compute});
    assert!(contract.check("get", "/system_stats", 200, &keyed).is_ok());
    let unwrapped = json!({"computes": {"6a0a3c52-1f7e-4c1b-9d0e-0c6c1a5e2b01":
        {"hostname": "cml", "is_controller": true, "dominfo": {"running_nodes": 3}}}});
    assert!(
        contract
            .check("get", "/system_stats", 200, &unwrapped)
            .is_err()
    );
    assert!(
        contract
            .check("get", "/system_stats", 200, &old_stats)
            .is_err()
    );
    let old_info = json!({"version": "2.9.1", "ready": true});
    assert!(
        contract
            .check("get", "/system_information", 200, &old_info)
            .is_err()
    );
    assert!(
        contract
            .check("get", "/labs", 200, &json!(["lab-0"]))
            .is_err()
    );
    assert!(
        contract
            .check(
                "get",
                "/system_health",
                200,
                &json!({"valid": true, "is_licensed": true})
            )
            .is_err()
    );
    assert!(
        contract
            .check("post", "/authenticate", 403, &json!("bad credentials"))
            .is_err()
    );
    assert!(
        contract
            .check("post", "/authenticate", 200, &json!({"token": "a.b.c"}))
            .is_err()
    );
}

/// One licensing call, its answer validated with the contract and its status as expected.
async fn licensing(
    raw: &Raw,
    token: Option<&str>,
    (method, path): (&str, &str),
    body: Body,
    expected: u16,
) -> Value {
    let verb = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let answer = raw.send(verb, path, body, token).await;
    assert_eq!(answer.0, expected, "{method} {path}: {answer:?}");
    conforms(method, path, &answer);
    answer.1
}

const STATUS: (&str, &str) = ("get", "/licensing");
const TRANSPORT: (&str, &str) = ("put", "/licensing/transport");
const PRODUCT: (&str, &str) = ("put", "/licensing/product_license");
const REGISTRATION: (&str, &str) = ("post", "/licensing/registration");
const FEATURES: (&str, &str) = ("patch", "/licensing/features");
const FEATURE_LIST: (&str, &str) = ("get", "/licensing/features");
const DEREGISTRATION: (&str, &str) = ("delete", "/licensing/deregistration");

/// Polls `GET /licensing` (each answer validated) until the registration is `wanted`.
async fn registration_is(raw: &Raw, token: &str, wanted: &str) -> Value {
    for _ in 0..100 {
        let status = licensing(raw, Some(token), STATUS, Body::None, 200).await;
        if status["registration"]["status"] == wanted {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("registration never {wanted}");
}

fn registration(token: &str) -> Body {
    Body::Json(json!({"token": token, "reregister": false}))
}

#[tokio::test]
async fn every_licensing_answer_follows_the_published_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CmlServer::start_in(dir.path(), SmartAccount::new()).await;
    server.set_registration_delay(std::time::Duration::from_millis(200));
    let raw = Raw::new(&server);
    let (_, login) = raw.login(PASSWORD).await;
    let token = login.as_str().expect("a JWT string").to_owned();
    let t = Some(token.as_str());

    // Not registered: every required key of the full status, and the refusals it brings.
    let status = licensing(&raw, t, STATUS, Body::None, 200).await;
    assert_eq!(status["registration"]["status"], "NOT_REGISTERED");
    assert_eq!(status["authorization"]["status"], "EVAL");
    assert_eq!(
        status["udi"]["product_uuid"],
        json!(server.product_instance())
    );
    assert_eq!(
        status["transport"]["proxy"],
        json!({"server": null, "port": null})
    );
    licensing(&raw, t, DEREGISTRATION, Body::None, 400).await;
    let count = |n: u32| Body::Json(json!([{"id": NODE_COUNT_FEATURE, "count": n}]));
    licensing(&raw, t, FEATURES, count(1), 400).await;
    licensing(&raw, t, FEATURE_LIST, Body::None, 200).await;

    // Transport and product: accepted, then the active product and an unknown one refused.
    let proxy = json!({"ssms": null, "proxy": {"server": "lab-proxy.example.com", "port": 80}});
    licensing(&raw, t, TRANSPORT, Body::Json(proxy), 204).await;
    let status = licensing(&raw, t, STATUS, Body::None, 200).await;
    assert_eq!(
        status["transport"]["proxy"]["server"],
        "lab-proxy.example.com"
    );
    licensing(&raw, t, PRODUCT, Body::Json(json!("CML_Education")), 204).await;
    licensing(&raw, t, PRODUCT, Body::Json(json!("CML_Education")), 400).await;
    licensing(&raw, t, PRODUCT, Body::Json(json!("CML_Unknown")), 400).await;

    // Registering: accepted, running (busy to a second request and to deregistration), done.
    licensing(&raw, t, REGISTRATION, registration(VALID_TOKEN), 204).await;
    let running = licensing(&raw, t, STATUS, Body::None, 200).await;
    assert_eq!(running["registration"]["status"], "IN_PROGRESS");
    licensing(&raw, t, REGISTRATION, registration(VALID_TOKEN), 409).await;
    licensing(&raw, t, DEREGISTRATION, Body::None, 409).await;
    let done = registration_is(&raw, &token, "COMPLETED").await;
    assert_eq!(done["authorization"]["status"], "IN_COMPLIANCE");
    licensing(&raw, t, REGISTRATION, registration(VALID_TOKEN), 400).await;

    // Features once registered.
    licensing(&raw, t, FEATURES, count(20), 204).await;
    licensing(&raw, t, FEATURES, count(301), 400).await;
    let unknown = Body::Json(json!([{"id": "regid.unknown,1.0_x", "count": 1}]));
    licensing(&raw, t, FEATURES, unknown, 400).await;
    licensing(&raw, t, FEATURE_LIST, Body::None, 200).await;

    // Deregistration: nodes running, then each forced answer, then for real.
    server.set_usage(0, 2);
    let running = licensing(&raw, t, DEREGISTRATION, Body::None, 400).await;
    assert_eq!(
        running["description"],
        "Cannot de-register when nodes are running"
    );
    server.set_usage(0, 0);
    for code in [409, 403, 400] {
        server.set_deregistration_answer(Some(code));
        licensing(&raw, t, DEREGISTRATION, Body::None, code).await;
    }
    server.set_deregistration_answer(Some(202));
    licensing(&raw, t, DEREGISTRATION, Body::None, 202).await;
    registration_is(&raw, &token, "NOT_REGISTERED").await;
    server.set_deregistration_answer(None);
    licensing(&raw, t, REGISTRATION, registration(VALID_TOKEN), 204).await;
    registration_is(&raw, &token, "COMPLETED").await;
    licensing(&raw, t, DEREGISTRATION, Body::None, 204).await;

    // A token Cisco does not know: accepted, then FAILED with the reason.
    licensing(&raw, t, REGISTRATION, registration(INVALID_TOKEN), 204).await;
    let failed = registration_is(&raw, &token, "FAILED").await;
    assert!(failed["registration"]["register_time"]["failure"].is_string());

    // No login, and each call refused or failing.
    let calls = [
        (
            TRANSPORT,
            Body::Json(json!({"proxy": {"server": null, "port": null}})),
        ),
        (PRODUCT, Body::Json(json!("CML_Personal"))),
        (REGISTRATION, registration(VALID_TOKEN)),
        (FEATURES, count(1)),
        (DEREGISTRATION, Body::None),
    ];
    for ((method, path), body) in calls {
        let name = path.trim_start_matches('/');
        licensing(&raw, None, (method, path), body.clone(), 401).await;
        for code in [StatusCode::FORBIDDEN, StatusCode::INTERNAL_SERVER_ERROR] {
            server.set_failing(name, Some(code));
            licensing(&raw, t, (method, path), body.clone(), code.as_u16()).await;
            server.set_failing(name, None);
        }
    }
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn request_bodies_that_break_the_contract_are_recorded_and_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = CmlServer::start_in(dir.path(), SmartAccount::new()).await;
    let raw = Raw::new(&server);
    let (_, login) = raw.login(PASSWORD).await;
    let t = login.as_str();

    let breaches = [
        (
            REGISTRATION,
            Body::Json(json!({"token": VALID_TOKEN, "reregister": false, "force": true})),
        ),
        (REGISTRATION, registration("has spaces and a colon:")),
        (REGISTRATION, Body::Json(json!({"reregister": false}))),
        (PRODUCT, Body::Json(json!("CML Enterprise"))),
        (PRODUCT, Body::Json(json!({"product": "CML_Enterprise"}))),
        (TRANSPORT, Body::Json(json!({"ssms": null}))),
        (
            TRANSPORT,
            Body::Json(json!({"ssms": "not a url", "proxy": {"server": null, "port": null}})),
        ),
        (FEATURES, Body::Json(json!([]))),
        (
            FEATURES,
            Body::Json(json!([{"id": NODE_COUNT_FEATURE, "count": -1}])),
        ),
        (
            FEATURES,
            Body::Json(json!({"id": NODE_COUNT_FEATURE, "count": 1})),
        ),
        (REGISTRATION, Body::Raw("{not json")),
    ];
    let n = breaches.len();
    for (call, body) in breaches {
        licensing(&raw, t, call, body, 400).await;
    }
    let violations = server.violations();
    assert_eq!(violations.len(), n, "{violations:#?}");
    assert!(
        violations.iter().all(|v| v.contains("request")),
        "{violations:#?}"
    );
    assert_eq!(server.registrations(), 0, "nothing was registered");
    assert_eq!(server.registration_status(), "NOT_REGISTERED");
    assert_eq!(server.product_license(), "CML_Enterprise");
    assert_eq!(server.transport(), None);
}

#[tokio::test]
async fn the_contract_reads_the_licensing_shapes_as_published() {
    let contract = contract::cml();
    let time = json!({"succeeded": null, "attempted": null, "scheduled": null, "status": null,
                      "failure": null, "success": null});
    let status = json!({
        "udi": {"hostname": "cml", "product_uuid": "5ea71ce5-0000-4000-8000-000000000001"},
        "registration": {"status": "COMPLETED", "register_time": time, "renew_time": time},
        "transport": {"proxy": {"server": null, "port": null}, "ssms": null,
                      "default_ssms": "https://smartreceiver.cisco.com/licservice/license"}
    });
    assert_eq!(contract.check("get", "/licensing", 200, &status), Ok(()));
    // Every key of a time info is required, if only as null.
    let mut partial = status.clone();
    partial["registration"]["register_time"] = json!({"failure": "x"});
    assert!(contract.check("get", "/licensing", 200, &partial).is_err());
    // The transport as read names the default server; as set it need not.
    let mut no_default = status.clone();
    no_default["transport"] = json!({"proxy": {"server": null, "port": null}});
    assert!(
        contract
            .check("get", "/licensing", 200, &no_default)
            .is_err()
    );
    let mut extra = status.clone();
    extra["registration"]["failure"] = json!("not here");
    assert!(contract.check("get", "/licensing", 200, &extra).is_err());
    assert!(
        contract
            .check(
                "get",
                "/licensing",
                200,
                &json!({"features": [{"name": "no id"}]})
            )
            .is_err()
    );

    // Bodies the client sends.
    assert!(
        contract
            .check_request(
                "post",
                "/licensing/registration",
                &json!({"token": VALID_TOKEN})
            )
            .is_ok()
    );
    assert!(
        contract
            .check_request(
                "post",
                "/licensing/registration",
                &json!({"token": VALID_TOKEN, "reregister": false, "force": true})
            )
            .is_err()
    );
    assert!(
        contract
            .check_request(
                "put",
                "/licensing/product_license",
                &json!("CML_Enterprise")
            )
            .is_ok()
    );
    assert!(
        contract
            .check_request("put", "/licensing/transport", &json!({"ssms": null}))
            .is_err(),
        "proxy is required, if only with null server and port"
    );
    let two = json!([{"id": "a", "count": 1}, {"id": "b", "count": 2}]);
    assert!(
        contract
            .check_request("patch", "/licensing/features", &two)
            .is_ok()
    );
    let three = json!([{"id": "a", "count": 1}, {"id": "b", "count": 2}, {"id": "c", "count": 3}]);
    assert!(
        contract
            .check_request("patch", "/licensing/features", &three)
            .is_err()
    );

    // Answers: no body on success; the deregistration 400 has none documented, and CML's
    // error body is read as its `default` one.
    let error = json!({"code": 400, "description": "Cannot de-register when nodes are running"});
    let dereg = "/licensing/deregistration";
    for status in [204, 202] {
        assert_eq!(
            contract.check("delete", dereg, status, &Value::Null),
            Ok(())
        );
        assert!(contract.check("delete", dereg, status, &error).is_err());
    }
    assert_eq!(contract.check("delete", dereg, 400, &error), Ok(()));
    assert_eq!(contract.check("delete", dereg, 400, &Value::Null), Ok(()));
    assert!(
        contract
            .check("delete", dereg, 400, &json!({"detail": "no"}))
            .is_err()
    );
    assert!(
        contract
            .check("post", "/licensing/registration", 409, &json!("busy"))
            .is_err()
    );
}
