//! The CML client against the CML API test server, over real TLS.

mod support;

use std::time::Duration;

use resource_controller::cml::{
    CmlCredentials, CmlErrorKind, CmlProbe, CmlTarget, HttpCml, TlsPolicy,
};
use support::cml_server::{CmlServer, Mode, PASSWORD, USERNAME};

async fn server() -> (CmlServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (CmlServer::start(dir.path()).await, dir)
}

fn target(server: &CmlServer, tls: TlsPolicy, password: &str) -> CmlTarget {
    CmlTarget {
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
    assert_eq!(report.labs, Some(3));
    assert_eq!(report.running_nodes, Some(12));
    // The token is reused.
    cml.probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect("probe again");
    assert_eq!(server.authentications(), 1);
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
