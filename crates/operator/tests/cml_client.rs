//! The CML client against the CML API test server, over real TLS.

use ccm_harness as support;

use std::time::Duration;

use resource_controller::cml::{
    CmlCredentials, CmlEndpoint, CmlErrorKind, CmlProbe, CmlTarget, HttpCml, TlsPolicy,
};
use support::cml_server::{CmlServer, Mode, PASSWORD, USERNAME};
use warp::http::StatusCode;

async fn server() -> (CmlServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (CmlServer::start(dir.path()).await, dir)
}

fn target(server: &CmlServer, tls: TlsPolicy, password: &str) -> CmlTarget {
    CmlTarget {
        booted_at: None,
        endpoint: format!("https://127.0.0.1:{}", server.port),
        credentials: Some(CmlCredentials {
            username: USERNAME.into(),
            password: password.into(),
        }),
        tls,
    }
}

fn insecure() -> TlsPolicy {
    TlsPolicy {
        insecure_skip_verify: true,
        ca_pem: None,
    }
}

#[tokio::test]
async fn a_ready_worker_reports_version_license_and_usage() {
    let (server, _dir) = server().await;
    server.set_usage(3, 12);
    let cml = HttpCml::new(Duration::from_secs(5));
    let report = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe");
    assert!(report.ready);
    assert_eq!(report.version.as_deref(), Some("2.9.1"));
    assert_eq!(report.licensed, Some(true));
    let license = report.license.expect("licensing answered");
    assert_eq!(license.registration.as_deref(), Some("COMPLETED"));
    assert_eq!(license.authorization.as_deref(), Some("IN_COMPLIANCE"));
    assert_eq!(license.product.as_deref(), Some("CML_Enterprise"));
    // Other users' labs count (show_all), and nodes on both computes.
    assert_eq!(report.labs, Some(3));
    assert_eq!(report.running_nodes, Some(12));
    assert_eq!(report.failures, vec![]);
    // The token is reused.
    cml.probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe again");
    assert_eq!(server.authentications(), 1);
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_null_node_count_makes_running_nodes_unknown_not_zero() {
    let (server, _dir) = server().await;
    server.set_usage(2, 5);
    server.set_counts_unknown(true);
    let report = HttpCml::new(Duration::from_secs(5))
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe");
    assert!(report.ready);
    assert_eq!(report.running_nodes, None);
    assert_eq!(report.labs, Some(2));
    let [failure] = report.failures.as_slice() else {
        panic!("one failure: {:?}", report.failures);
    };
    assert_eq!(
        (failure.endpoint, failure.error.kind),
        (CmlEndpoint::SystemStats, CmlErrorKind::Incomplete)
    );
    assert_eq!(failure.reason(), "SystemStatsIncomplete");
    assert!(failure.error.message.contains("running_nodes"), "{failure}");
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failing_optional_endpoint_degrades_only_its_own_fields() {
    let (server, _dir) = server().await;
    server.set_usage(1, 4);
    let cml = HttpCml::new(Duration::from_secs(5));
    let to = target(&server, insecure(), PASSWORD);
    let probe = || cml.probe(&to);

    // licensing refuses a user without the permission, as the spec allows.
    server.set_failing("licensing", Some(StatusCode::FORBIDDEN));
    let report = probe()
        .await
        .expect("a 403 from licensing does not fail the probe");
    assert!(report.ready);
    assert_eq!(report.license, None);
    assert_eq!(
        (report.licensed, report.labs, report.running_nodes),
        (Some(true), Some(1), Some(4))
    );
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].reason(), "LicensingForbidden");
    probe().await.expect("probe again");
    assert_eq!(
        server.authentications(),
        1,
        "a refused endpoint keeps the login"
    );
    server.set_failing("licensing", None);

    server.set_failing("system_stats", Some(StatusCode::INTERNAL_SERVER_ERROR));
    let report = probe().await.expect("stats failing");
    assert_eq!(report.running_nodes, None);
    assert!(report.license.is_some());
    assert_eq!(report.failures[0].reason(), "SystemStatsServerError");

    for endpoint in ["system_health", "licensing", "labs"] {
        server.set_failing(endpoint, Some(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let report = probe().await.expect("every optional endpoint failing");
    assert!(report.ready);
    assert_eq!(
        (report.licensed, report.labs, report.running_nodes),
        (None, None, None)
    );
    assert!(report.license.is_none());
    assert_eq!(report.failures.len(), 4);
    assert_eq!(server.authentications(), 1);
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn without_credentials_readiness_is_read_and_usage_stays_unknown() {
    let (server, _dir) = server().await;
    server.set_usage(1, 3);
    let mut anonymous = target(&server, insecure(), PASSWORD);
    anonymous.credentials = None;
    let report = HttpCml::new(Duration::from_secs(5))
        .probe(&anonymous)
        .await
        .expect("probe");
    assert!(report.ready);
    assert_eq!(report.running_nodes, None);
    assert_eq!(report.failures[0].endpoint, CmlEndpoint::Authenticate);
    assert_eq!(server.authentications(), 0);
}

#[tokio::test]
async fn an_expired_token_is_renewed_once() {
    let (server, _dir) = server().await;
    let cml = HttpCml::new(Duration::from_secs(5));
    cml.probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe");
    server.expire_tokens();
    let report = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe after expiry");
    assert!(report.ready);
    assert_eq!(report.failures, vec![]);
    // Four endpoints refused the old token at once; one login renewed it for all of them.
    assert_eq!(server.authentications(), 2);
}

#[tokio::test]
async fn not_ready_skips_the_authenticated_calls() {
    let (server, _dir) = server().await;
    server.set_mode(Mode::NotReady);
    let report = HttpCml::new(Duration::from_secs(5))
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe");
    assert!(!report.ready);
    assert_eq!(report.running_nodes, None);
    assert_eq!(server.authentications(), 0);
}

#[tokio::test]
async fn tls_is_verified_against_the_configured_ca() {
    let (server, _dir) = server().await;
    let cml = HttpCml::new(Duration::from_secs(5));
    let trusted = TlsPolicy {
        insecure_skip_verify: false,
        ca_pem: Some(server.ca_pem.clone()),
    };
    assert!(
        cml.probe(&target(&server, trusted, PASSWORD))
            .await
            .expect("probe with CA")
            .ready
    );

    let system_roots = TlsPolicy::default();
    let err = cml
        .probe(&target(&server, system_roots, PASSWORD))
        .await
        .expect_err("untrusted certificate");
    assert_eq!(err.kind, CmlErrorKind::Unreachable);
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn faults_become_classified_errors() {
    let (server, _dir) = server().await;
    let cml = HttpCml::new(Duration::from_millis(500));

    let err = cml
        .probe(&target(&server, insecure(), "wrong"))
        .await
        .expect_err("bad password");
    assert_eq!(err.kind, CmlErrorKind::Unauthorized);
    assert!(err.message.contains("Authentication failed"), "{err}");

    server.set_mode(Mode::Garbage);
    let err = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect_err("garbage");
    assert_eq!(err.kind, CmlErrorKind::BadResponse);
    assert!(err.message.contains("gateway error"), "{err}");

    server.set_mode(Mode::Slow(Duration::from_secs(3)));
    let err = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect_err("slow");
    assert_eq!(err.kind, CmlErrorKind::Timeout, "{err}");

    server.set_mode(Mode::Down);
    let err = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect_err("down");
    assert_eq!(err.kind, CmlErrorKind::Unreachable, "{err}");
}
