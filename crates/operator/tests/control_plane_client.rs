//! The Control Plane API client against the test server that follows
//! `api/control-plane.openapi.yaml` (which checks what it is sent and what it answers).

use ccm_harness as support;

use std::time::Duration;

use resource_controller::{
    control_plane::{
        ControlPlaneClient, ControlPlaneConfig, LabInstanceState, License, ScalingEvent,
    },
    remote::RemoteErrorKind,
};
use serde_json::json;
use support::{
    control_plane_server::{ControlPlaneServer, Mode},
    records::sample,
};

const TOKEN: &str = "cp-test-token-8c1f";

fn client(server: &ControlPlaneServer, token: Option<&str>) -> ControlPlaneClient {
    ControlPlaneClient::new(ControlPlaneConfig {
        allow_http: true,
        url: server.url(),
        token: token.map(str::to_owned),
        ca_pem: None,
        timeout: Duration::from_millis(500),
    })
    .expect("client")
}

fn definition(id: &str) -> serde_json::Value {
    json!({
        "id": id, "name": "ccna-lab", "version": "3",
        "resource_requirements": {"cpu_cores": 8, "memory_gb": 32, "storage_gb": 40},
        "license_affinity": ["ENTERPRISE", "EVALUATION"], "node_count": 6
    })
}

#[tokio::test]
async fn every_operation_follows_the_contract() {
    let server = ControlPlaneServer::start().await;
    server.require_token(TOKEN);
    let cp = client(&server, Some(TOKEN));

    server.add_definition(definition("def-1"));
    server.add_instance(json!({
        "id": "inst-1", "definition_id": "def-1", "state": "PENDING", "worker_id": null,
        "timeslot_start": "2026-11-27T08:00:00Z", "timeslot_end": "2026-11-27T10:00:00Z"
    }));
    server.add_instance(json!({
        "id": "inst-2", "definition_id": "def-1", "state": "SCHEDULED", "worker_id": "uid-9",
        "timeslot_start": "2026-11-27T09:00:00Z", "timeslot_end": "2026-11-27T11:00:00Z"
    }));
    let pending = cp
        .lab_instances(LabInstanceState::Pending)
        .await
        .expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].worker_id, None);
    let scheduled = cp
        .lab_instances(LabInstanceState::Scheduled)
        .await
        .expect("scheduled");
    assert_eq!(scheduled[0].worker_id.as_deref(), Some("uid-9"));

    let d = cp.definition("def-1").await.expect("definition");
    assert_eq!(
        (d.node_count, d.license_affinity.clone()),
        (6, vec![License::Enterprise, License::Evaluation])
    );
    cp.definition("def-1").await.expect("cached");
    let reads = server
        .state()
        .requests
        .iter()
        .filter(|r| r.contains("definitions"))
        .count();
    assert_eq!(reads, 1, "definitions are immutable: read once");

    assert_eq!(
        cp.worker_capacity("uid-1").await.expect("capacity"),
        None,
        "an unknown worker is unknown usage"
    );
    server.set_capacity(
        "uid-1",
        json!({"worker_id": "uid-1", "allocated": {"cpu_cores": 8, "memory_gb": 32, "storage_gb": 40, "nodes": 6},
               "running_instances": 1, "scheduled_instances": 2, "next_timeslot_start": "2026-11-27T09:00:00Z"}),
    );
    let c = cp
        .worker_capacity("uid-1")
        .await
        .expect("capacity")
        .expect("known");
    assert_eq!((c.running_instances, c.scheduled_instances), (1, 2));

    let stored = cp
        .upsert_worker(&sample("uid-1", "Running"))
        .await
        .expect("upsert");
    assert_eq!(stored, sample("uid-1", "Running"));
    assert_eq!(
        server.record("uid-1").expect("stored")["license_type"],
        "ENTERPRISE"
    );
    assert_eq!(cp.workers().await.expect("list").len(), 1);
    cp.delete_worker("uid-1").await.expect("delete");
    cp.delete_worker("uid-1")
        .await
        .expect("a second delete finds it gone, which is done");
    assert!(cp.workers().await.expect("list").is_empty());

    let event = ScalingEvent {
        id: "t-create-1".into(),
        action: "create".into(),
        worker: Some("labs/t-abcde".into()),
        template: "labs/t".into(),
        reason: "2 lab instances within lead time".into(),
        triggered_by: "demand".into(),
        time: "2026-11-27T07:00:00Z".into(),
    };
    cp.post_scaling_event(&event).await.expect("post");
    cp.post_scaling_event(&event)
        .await
        .expect("repeat is harmless");
    assert_eq!(server.state().scaling_events.len(), 1);

    assert!(
        server
            .state()
            .authorizations
            .iter()
            .all(|a| a.as_deref() == Some(&format!("Bearer {TOKEN}")))
    );
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn faults_become_classified_errors_never_panics() {
    let server = ControlPlaneServer::start().await;
    server.require_token(TOKEN);

    let err = client(&server, Some("wrong"))
        .workers()
        .await
        .expect_err("wrong token");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized);
    assert!(err.message.contains("invalid bearer token"), "{err}");
    assert!(
        !err.message.contains("wrong"),
        "the token is not echoed: {err}"
    );

    let cp = client(&server, Some(TOKEN));
    server.set_mode(Mode::Failing);
    let err = cp
        .upsert_worker(&sample("uid-2", "Running"))
        .await
        .expect_err("500");
    assert_eq!(err.kind, RemoteErrorKind::ServerError);
    assert!(err.message.contains("injected failure"), "{err}");

    server.set_mode(Mode::Garbage);
    let err = cp.workers().await.expect_err("garbage");
    assert_eq!(err.kind, RemoteErrorKind::BadResponse);

    // A redirect is an error, never followed; an answer over 1 MiB is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let elsewhere = listener.local_addr().expect("addr").port();
    server.set_mode(Mode::Redirect(elsewhere));
    let err = cp.workers().await.expect_err("redirect");
    assert_eq!(err.kind, RemoteErrorKind::Rejected, "{err}");
    assert!(err.message.contains("302"), "{err}");
    assert!(listener.accept().is_err(), "the redirect was followed");
    server.set_mode(Mode::Oversized(2 << 20));
    let err = cp.workers().await.expect_err("too large");
    assert_eq!(err.kind, RemoteErrorKind::BadResponse, "{err}");
    assert!(err.message.contains("larger than"), "{err}");

    server.set_mode(Mode::Slow(Duration::from_secs(2)));
    let err = cp.workers().await.expect_err("slow");
    assert_eq!(err.kind, RemoteErrorKind::Timeout);

    server.set_mode(Mode::Down);
    let err = cp.workers().await.expect_err("down");
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);

    let nowhere = ControlPlaneClient::new(ControlPlaneConfig {
        allow_http: true,
        url: format!("http://127.0.0.1:{}", support::process::free_port()),
        token: None,
        ca_pem: None,
        timeout: Duration::from_millis(500),
    })
    .expect("client");
    let err = nowhere.workers().await.expect_err("nothing listens");
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_contract_checks_bodies_both_ways() {
    let contract = support::contract::control_plane();
    let good = serde_json::to_value(sample("uid-3", "Running")).expect("json");
    contract
        .check_request("put", "/api/internal/workers/{id}", &good)
        .expect("our record conforms");
    let mut lower = good.clone();
    lower["license_type"] = json!("enterprise");
    assert!(
        contract
            .check_request("put", "/api/internal/workers/{id}", &lower)
            .is_err()
    );
    let mut missing = good.clone();
    missing.as_object_mut().expect("object").remove("public_ip");
    assert!(
        contract
            .check_request("put", "/api/internal/workers/{id}", &missing)
            .is_err(),
        "nullable fields are still required"
    );
    assert!(
        contract
            .check(
                "get",
                "/api/v1/workers/{id}/capacity",
                404,
                &json!({"error": "x"})
            )
            .is_err(),
        "errors are {{detail}}"
    );
    assert!(
        contract
            .check(
                "delete",
                "/api/internal/workers/{id}",
                204,
                &serde_json::Value::Null
            )
            .is_ok()
    );
    assert!(
        contract
            .check("get", "/api/internal/workers", 200, &json!({"items": []}))
            .is_err(),
        "lists are bare arrays"
    );
}

#[tokio::test]
async fn tls_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, ca_pem) = ControlPlaneServer::start_tls(dir.path()).await;
    let with = |ca_pem: Option<Vec<u8>>| {
        ControlPlaneClient::new(ControlPlaneConfig {
            allow_http: true,
            url: server.url(),
            token: None,
            ca_pem,
            timeout: Duration::from_secs(2),
        })
        .expect("client")
    };
    assert!(server.url().starts_with("https://"));
    with(Some(ca_pem))
        .workers()
        .await
        .expect("trusted through the CA");
    let err = with(None)
        .workers()
        .await
        .expect_err("not trusted by the system roots");
    assert_eq!(err.kind, RemoteErrorKind::Unavailable);
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
    let err = ControlPlaneClient::new(ControlPlaneConfig {
        allow_http: true,
        url: server.url(),
        token: None,
        ca_pem: Some(b"not a pem".to_vec()),
        timeout: Duration::from_secs(2),
    })
    .expect_err("a CA file that is not PEM is refused at start-up");
    assert!(err.message.contains("CA bundle"), "{err}");
    assert_eq!(server.violations(), Vec::<String>::new());
}
