//! The CML test server against CML 2.9's published OpenAPI schemas: every kind of answer it can
//! give is fetched raw and validated, so the server cannot drift from the real API and hide a
//! client bug (as it once did: running nodes read from the wrong level, always 0).

use ccm_harness as support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    cml_server::{CmlServer, Mode, PASSWORD, USERNAME},
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
