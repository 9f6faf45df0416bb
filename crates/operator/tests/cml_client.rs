//! The CML client against the CML API test server, over real TLS.

use ccm_harness as support;

use std::{collections::BTreeMap, time::Duration};

use resource_controller::cml::{
    CmlCredentials, CmlEndpoint, CmlErrorKind, CmlLicensing, CmlProbe, CmlTarget, Deregistration,
    HttpCml, LicenseAnswer, LicenseReport, LicenseToken, LicenseTransport, RegistrationRequest,
    TlsPolicy,
};
use serde_json::json;
use support::{
    cml_server::{
        CmlServer, INVALID_TOKEN, INVALID_TOKEN_REASON, Mode, PASSWORD, REGISTRATION_PENDING,
        USERNAME, VALID_TOKEN,
    },
    smart_account::{AccountOperation, NO_SEATS, SmartAccount},
};
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
    TlsPolicy::SkipVerify
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
    let trusted = TlsPolicy::Ca(server.ca_pem.clone());
    assert!(
        cml.probe(&target(&server, trusted, PASSWORD))
            .await
            .expect("probe with CA")
            .ready
    );

    let other_ca = support::cml_server::make_certificates(_dir.path().join("other").as_path()).0;
    let err = cml
        .probe(&target(&server, TlsPolicy::Ca(other_ca), PASSWORD))
        .await
        .expect_err("certificate from another CA");
    assert_eq!(err.kind, CmlErrorKind::Unreachable);
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn the_first_certificate_is_reported_then_only_it_is_accepted() {
    let (server, dir) = server().await;
    let cml = HttpCml::new(Duration::from_secs(5));
    let first_use = cml
        .probe(&target(&server, TlsPolicy::Pinned(Vec::new()), PASSWORD))
        .await
        .expect("first use accepts the certificate it is shown");
    let pinned = first_use.certificate.expect("the certificate is reported");
    assert_eq!(
        pinned.to_string(),
        server.fingerprint(),
        "as openssl prints it"
    );
    assert_eq!(first_use.running_nodes, Some(0), "the logged-in calls ran");

    let pin = TlsPolicy::Pinned(vec![pinned]);
    let report = cml
        .probe(&target(&server, pin.clone(), PASSWORD))
        .await
        .expect("the pinned certificate is accepted");
    assert_eq!(report.certificate, Some(pinned));

    let replaced = server.replace_certificate(&dir.path().join("replaced"));
    let (probes, logins) = (server.probes(), server.authentications());
    // A new client: the old one's pooled connection predates the change (a real replacement
    // of the host would have reset it).
    let fresh = HttpCml::new(Duration::from_secs(5));
    let err = fresh
        .probe(&target(&server, pin.clone(), PASSWORD))
        .await
        .expect_err("a changed certificate is refused");
    assert_eq!(err.kind, CmlErrorKind::CertificateChanged, "{err}");
    assert!(err.message.contains(&pinned.to_string()), "{err}");
    assert!(err.message.contains(&replaced), "{err}");
    assert_eq!(
        (server.probes(), server.authentications()),
        (probes, logins),
        "nothing reached the server with the new certificate"
    );

    let retrusted = TlsPolicy::Pinned(vec![pinned, replaced.parse().expect("fingerprint")]);
    let report = fresh
        .probe(&target(&server, retrusted, PASSWORD))
        .await
        .expect("the certificate named by the operator is accepted");
    assert_eq!(report.certificate.map(|f| f.to_string()), Some(replaced));
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

// Smart Licensing: registration, features and deregistration against the test server, whose
// product instance registers with a Smart Account the test can read.

async fn unregistered(account: SmartAccount) -> (CmlServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    (CmlServer::start_in(dir.path(), account).await, dir)
}

/// A freshly launched worker's CML whose registrations take `delay`, the client, and its target.
async fn fresh(
    account: SmartAccount,
    delay: Duration,
) -> (CmlServer, tempfile::TempDir, HttpCml, CmlTarget) {
    let (server, dir) = unregistered(account).await;
    server.set_registration_delay(delay);
    let to = target(&server, insecure(), PASSWORD);
    (server, dir, HttpCml::new(Duration::from_secs(5)), to)
}

fn request(product: Option<&str>, token: &str) -> RegistrationRequest {
    RegistrationRequest {
        transport: None,
        product: product.map(str::to_owned),
        token: LicenseToken(token.into()),
    }
}

/// The licensing calls the server took: method, path, status.
fn calls(server: &CmlServer) -> Vec<(String, String, u16)> {
    server
        .license_calls()
        .into_iter()
        .map(|c| (c.method, c.path, c.status))
        .collect()
}

fn call(method: &str, path: &str, status: u16) -> (String, String, u16) {
    (method.into(), path.into(), status)
}

/// Probes until the registration has ended, as a caller would: only `COMPLETED` and `FAILED`
/// end it; anything else (the server's `IN_PROGRESS` included) means not yet.
async fn registration_ends(cml: &HttpCml, to: &CmlTarget) -> LicenseReport {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let report = cml.probe(to).await.expect("probe");
        let license = report.license.expect("licensing answered");
        if matches!(
            license.registration.as_deref(),
            Some("COMPLETED" | "FAILED")
        ) {
            return license;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "registration never ended: {license:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A worker registered with `account`, its registration completed.
async fn registered(
    account: SmartAccount,
    cml: &HttpCml,
) -> (CmlServer, tempfile::TempDir, CmlTarget) {
    let (server, dir) = unregistered(account).await;
    server.set_registration_delay(Duration::from_millis(100));
    let to = target(&server, insecure(), PASSWORD);
    let answer = cml
        .register(&to, &request(None, VALID_TOKEN))
        .await
        .expect("register");
    assert_eq!(answer, LicenseAnswer::Accepted);
    assert_eq!(
        registration_ends(cml, &to).await.registration.as_deref(),
        Some("COMPLETED")
    );
    (server, dir, to)
}

#[tokio::test]
async fn a_registration_sets_transport_then_product_then_token_and_completes() {
    let account = SmartAccount::new();
    let (server, _dir) = unregistered(account.clone()).await;
    let cml = HttpCml::new(Duration::from_secs(5));
    let to = target(&server, insecure(), PASSWORD);
    let before = license_of(&cml, &to).await;
    assert_eq!(statuses(&before), (Some("NOT_REGISTERED"), Some("EVAL")));
    assert_eq!(before.product.as_deref(), Some("CML_Enterprise"));

    let transport = LicenseTransport {
        ssms: Some(
            "https://ssms-satellite.example.com:8443/Transportgateway/services/DeviceRequestHandler"
                .into(),
        ),
        proxy_server: Some("lab-proxy.example.com".into()),
        proxy_port: Some(3128),
    };
    let mut education = request(Some("CML_Education"), VALID_TOKEN);
    education.transport = Some(transport.clone());
    let answer = cml.register(&to, &education).await.expect("register");
    assert_eq!(answer, LicenseAnswer::Accepted);
    assert_eq!(
        calls(&server),
        vec![
            call("PUT", "/licensing/transport", 204),
            call("PUT", "/licensing/product_license", 204),
            call("POST", "/licensing/registration", 204),
        ]
    );
    assert_eq!(
        server.transport(),
        Some(
            json!({"ssms": transport.ssms, "proxy": {"server": "lab-proxy.example.com", "port": 3128}})
        )
    );

    // Running: neither registered nor failed, and still evaluating.
    let running = license_of(&cml, &to).await;
    assert_eq!(
        statuses(&running),
        (Some(REGISTRATION_PENDING), Some("EVAL"))
    );
    assert!(account.held().is_empty(), "no seat before it completes");

    let done = registration_ends(&cml, &to).await;
    assert_eq!(statuses(&done), (Some("COMPLETED"), Some("IN_COMPLIANCE")));
    assert_eq!(done.product_instance, Some(server.product_instance()));
    assert_eq!(done.hostname, Some(server.hostname()));
    assert_eq!(done.product.as_deref(), Some("CML_Education"));
    assert_eq!(done.failure, None);
    assert!(done.authorization_expires.is_some(), "{done:?}");
    let nodes = done
        .features
        .iter()
        .find(|f| f.is_node_count())
        .expect("a node-count feature");
    assert_eq!(
        (nodes.min, nodes.max, nodes.in_use),
        (Some(0), Some(300), Some(0))
    );
    assert_eq!(
        account.held(),
        BTreeMap::from([(server.product_instance(), "CML_Education".to_owned())])
    );
    assert_eq!(server.registrations(), 1);
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_product_is_sent_as_given_and_cml_refuses_the_active_one() {
    let (server, _dir, cml, to) = fresh(SmartAccount::new(), Duration::from_millis(100)).await;

    // The active product asked for again: refused, and the token is not sent.
    let answer = cml
        .register(&to, &request(Some("CML_Enterprise"), VALID_TOKEN))
        .await
        .expect("register");
    let LicenseAnswer::Refused(why) = answer else {
        panic!("a repeated product is refused: {answer:?}");
    };
    assert!(why.starts_with("product license: "), "{why}");
    assert_eq!(
        calls(&server),
        vec![call("PUT", "/licensing/product_license", 400)]
    );

    // The caller that read the active product passes none: only the token goes.
    let answer = cml
        .register(&to, &request(None, VALID_TOKEN))
        .await
        .expect("register");
    assert_eq!(answer, LicenseAnswer::Accepted);
    assert_eq!(
        calls(&server)[1..],
        [call("POST", "/licensing/registration", 204)]
    );
    assert_eq!(
        registration_ends(&cml, &to).await.product.as_deref(),
        Some("CML_Enterprise")
    );
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_registration_while_one_runs_is_busy() {
    let (server, _dir, cml, to) = fresh(SmartAccount::new(), Duration::from_secs(30)).await;
    let first = cml.register(&to, &request(None, VALID_TOKEN)).await;
    assert_eq!(first, Ok(LicenseAnswer::Accepted));
    let second = cml
        .register(&to, &request(None, VALID_TOKEN))
        .await
        .expect("register again");
    let LicenseAnswer::Busy(why) = second else {
        panic!("busy while registering: {second:?}");
    };
    assert!(why.starts_with("registration: "), "{why}");
    let dereg = cml.deregister(&to).await.expect("deregister");
    assert!(matches!(dereg, Deregistration::Busy(_)), "{dereg:?}");
    assert_eq!(server.registrations(), 1);
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_invalid_token_ends_failed_with_the_reason_in_the_report() {
    let account = SmartAccount::new();
    let (server, _dir, cml, to) = fresh(account.clone(), Duration::from_millis(100)).await;
    let answer = cml.register(&to, &request(None, INVALID_TOKEN)).await;
    assert_eq!(answer, Ok(LicenseAnswer::Accepted), "well formed: accepted");
    let report = registration_ends(&cml, &to).await;
    assert_eq!(statuses(&report), (Some("FAILED"), Some("EVAL")));
    assert_eq!(report.failure.as_deref(), Some(INVALID_TOKEN_REASON));
    assert!(account.held().is_empty());
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_account_out_of_seats_fails_the_next_worker_until_one_is_freed() {
    let account = SmartAccount::with_seats(1);
    let cml = HttpCml::new(Duration::from_secs(5));
    let (first, _first_dir, first_to) = registered(account.clone(), &cml).await;
    let (second, _dir) = unregistered(account.clone()).await;
    second.set_registration_delay(Duration::from_millis(100));
    let to = target(&second, insecure(), PASSWORD);
    assert_ne!(first.product_instance(), second.product_instance());

    let answer = cml.register(&to, &request(None, VALID_TOKEN)).await;
    assert_eq!(answer, Ok(LicenseAnswer::Accepted));
    let report = registration_ends(&cml, &to).await;
    assert_eq!(report.registration.as_deref(), Some("FAILED"));
    assert_eq!(report.failure.as_deref(), Some(NO_SEATS));

    assert_eq!(cml.deregister(&first_to).await, Ok(Deregistration::Freed));
    let answer = cml.register(&to, &request(None, VALID_TOKEN)).await;
    assert_eq!(answer, Ok(LicenseAnswer::Accepted), "FAILED may try again");
    assert_eq!(
        registration_ends(&cml, &to).await.registration.as_deref(),
        Some("COMPLETED")
    );
    assert_eq!(
        account.held().into_keys().collect::<Vec<_>>(),
        vec![second.product_instance()]
    );
    assert_eq!(first.violations(), Vec::<String>::new());
    assert_eq!(second.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn deregistration_frees_the_seat_and_a_second_one_is_not_registered() {
    let account = SmartAccount::new();
    let cml = HttpCml::new(Duration::from_secs(5));
    let (server, _dir, to) = registered(account.clone(), &cml).await;
    assert_eq!(account.held().len(), 1);

    assert_eq!(cml.deregister(&to).await, Ok(Deregistration::Freed));
    assert!(account.held().is_empty());
    assert_eq!(server.registration_status(), "NOT_REGISTERED");
    let license = license_of(&cml, &to).await;
    assert_eq!(statuses(&license), (Some("NOT_REGISTERED"), Some("EVAL")));

    let again = cml.deregister(&to).await.expect("deregister again");
    assert!(
        matches!(again, Deregistration::NotRegistered(_)),
        "{again:?}"
    );
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_local_only_deregistration_leaves_the_seat_held() {
    let account = SmartAccount::new();
    let cml = HttpCml::new(Duration::from_secs(5));
    let (server, _dir, to) = registered(account.clone(), &cml).await;
    server.set_deregistration_answer(Some(202));
    assert_eq!(cml.deregister(&to).await, Ok(Deregistration::LocalOnly));
    assert_eq!(server.registration_status(), "NOT_REGISTERED");
    assert_eq!(
        account.held().into_keys().collect::<Vec<_>>(),
        vec![server.product_instance()],
        "the seat leaks: only a person in the Smart Software Manager frees it"
    );
    server.set_deregistration_answer(None);
    let retry = cml.deregister(&to).await.expect("retry");
    assert!(
        matches!(retry, Deregistration::NotRegistered(_)),
        "{retry:?}"
    );
    assert!(account.remove_by_hand(&server.product_instance()));
    assert!(account.held().is_empty());
    // Cisco's side never heard of the local deregistration.
    let seen: Vec<AccountOperation> = account.history().into_iter().map(|e| e.operation).collect();
    assert_eq!(
        seen,
        vec![
            AccountOperation::Registered {
                product: "CML_Enterprise".into()
            },
            AccountOperation::RemovedByHand
        ]
    );
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn running_nodes_block_deregistration_and_free_nothing() {
    let account = SmartAccount::new();
    let cml = HttpCml::new(Duration::from_secs(5));
    let (server, _dir, to) = registered(account.clone(), &cml).await;
    server.set_usage(1, 3);
    let answer = cml.deregister(&to).await.expect("deregister");
    let Deregistration::NodesRunning(why) = answer else {
        panic!("nodes running: {answer:?}");
    };
    assert!(why.contains("nodes are running"), "{why}");
    assert_eq!(server.registration_status(), "COMPLETED");
    assert_eq!(account.held().len(), 1);

    server.set_usage(0, 0);
    assert_eq!(cml.deregister(&to).await, Ok(Deregistration::Freed));
    assert!(account.held().is_empty());
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_busy_or_refused_deregistration_keeps_the_registration() {
    let account = SmartAccount::new();
    let cml = HttpCml::new(Duration::from_secs(5));
    let (server, _dir, to) = registered(account.clone(), &cml).await;
    server.set_deregistration_answer(Some(409));
    let busy = cml.deregister(&to).await.expect("deregister");
    assert!(matches!(busy, Deregistration::Busy(_)), "{busy:?}");
    server.set_deregistration_answer(Some(403));
    let refused = cml.deregister(&to).await.expect("deregister");
    assert!(matches!(refused, Deregistration::Refused(_)), "{refused:?}");
    assert_eq!(account.held().len(), 1);
    server.set_deregistration_answer(None);
    assert_eq!(cml.deregister(&to).await, Ok(Deregistration::Freed));
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_feature_count_within_its_range_is_set_and_one_outside_refused() {
    let cml = HttpCml::new(Duration::from_secs(5));
    let (server, _dir, to) = registered(SmartAccount::new(), &cml).await;
    let license = license_of(&cml, &to).await;
    let nodes = license
        .features
        .iter()
        .find(|f| f.is_node_count())
        .expect("node count")
        .clone();

    assert_eq!(
        cml.set_feature(&to, &nodes.id, 20).await,
        Ok(LicenseAnswer::Accepted)
    );
    assert_eq!(server.feature_in_use(&nodes.id), Some(20));
    let license = license_of(&cml, &to).await;
    let read = license
        .features
        .iter()
        .find(|f| f.id == nodes.id)
        .expect("read");
    assert_eq!(read.in_use, Some(20));

    let max = nodes.max.expect("max");
    for (id, count) in [(nodes.id.as_str(), max + 1), ("regid.unknown,1.0_x", 1)] {
        let answer = cml.set_feature(&to, id, count).await.expect("set");
        let LicenseAnswer::Refused(why) = answer else {
            panic!("{id} {count}: {answer:?}");
        };
        assert!(why.starts_with("feature: "), "{why}");
    }
    assert_eq!(server.feature_in_use(&nodes.id), Some(20));
    assert_eq!(server.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn licensing_renews_an_expired_login_once() {
    let cml = HttpCml::new(Duration::from_secs(5));
    let (server, _dir, to) = registered(SmartAccount::new(), &cml).await;
    let logins = server.authentications();
    server.expire_tokens();
    assert_eq!(cml.deregister(&to).await, Ok(Deregistration::Freed));
    assert_eq!(server.authentications(), logins + 1);
}

#[tokio::test]
async fn the_token_never_shows_in_an_error_or_a_refusal() {
    let (server, _dir) = unregistered(SmartAccount::new()).await;
    let cml = HttpCml::new(Duration::from_millis(500));
    let to = target(&server, insecure(), PASSWORD);
    let secret = "not a token: it has spaces";
    let leaks = |text: String| text.contains(secret) || text.contains(VALID_TOKEN);
    let malformed = request(None, secret);
    assert!(!leaks(format!("{malformed:?}")));

    // CML echoes invalid input in its 400: the client passes the refusal on without the token.
    let answer = cml.register(&to, &malformed).await.expect("an answer");
    let LicenseAnswer::Refused(why) = &answer else {
        panic!("a malformed token is refused: {answer:?}");
    };
    assert!(why.contains("<redacted>"), "{why}");
    assert!(!leaks(format!("{answer:?}")), "{answer:?}");
    let [breach] = server.violations().try_into().expect("one breach");
    assert!(breach.contains("request breaks the contract"), "{breach}");

    let valid = request(None, VALID_TOKEN);
    server.set_failing(
        "licensing/registration",
        Some(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let err = cml.register(&to, &valid).await.expect_err("server error");
    assert_eq!(err.kind, CmlErrorKind::ServerError, "{err}");
    assert!(!leaks(format!("{err} {err:?}")), "{err:?}");
    server.set_failing("licensing/registration", Some(StatusCode::FORBIDDEN));
    let answer = cml.register(&to, &valid).await.expect("forbidden");
    assert!(matches!(answer, LicenseAnswer::Refused(_)), "{answer:?}");
    server.set_failing("licensing/registration", None);

    for (mode, kind) in [
        (Mode::Garbage, CmlErrorKind::BadResponse),
        (Mode::Slow(Duration::from_secs(3)), CmlErrorKind::Timeout),
        (Mode::Down, CmlErrorKind::Unreachable),
    ] {
        server.set_mode(mode);
        let err = cml.register(&to, &valid).await.expect_err("fails");
        assert_eq!(err.kind, kind, "{mode:?}: {err}");
        assert!(!leaks(format!("{err} {err:?}")), "{err:?}");
    }
    assert_eq!(server.registrations(), 0);
}

#[tokio::test]
async fn licensing_without_credentials_is_unauthorized() {
    let (server, _dir) = unregistered(SmartAccount::new()).await;
    let mut anonymous = target(&server, insecure(), PASSWORD);
    anonymous.credentials = None;
    let cml = HttpCml::new(Duration::from_secs(5));
    let err = cml.deregister(&anonymous).await.expect_err("no login");
    assert_eq!(err.kind, CmlErrorKind::Unauthorized);
    assert_eq!(server.license_calls(), vec![]);
}

/// What the probe read of Smart Licensing.
async fn license_of(cml: &HttpCml, to: &CmlTarget) -> LicenseReport {
    cml.probe(to)
        .await
        .expect("probe")
        .license
        .expect("license")
}

/// Registration and authorization status, as a pair.
fn statuses(l: &LicenseReport) -> (Option<&str>, Option<&str>) {
    (l.registration.as_deref(), l.authorization.as_deref())
}

/// A listener that counts the connections made to it: where a redirect would lead.
async fn counting_listener() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (port, count)
}

#[tokio::test]
async fn a_redirect_is_an_error_and_is_never_followed() {
    let (server, _dir) = server().await;
    let (port, visits) = counting_listener().await;
    server.set_mode(Mode::Redirect(port));
    let cml = HttpCml::new(Duration::from_secs(2));
    let to = target(&server, insecure(), PASSWORD);
    let err = cml.probe(&to).await.expect_err("a redirect is no answer");
    assert_eq!(err.kind, CmlErrorKind::BadResponse, "{err}");
    assert!(err.message.contains("302"), "{err}");
    let deregistered = cml.deregister(&to).await;
    assert!(deregistered.is_err(), "{deregistered:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(visits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_answer_over_one_mebibyte_is_refused_not_read() {
    let (server, _dir) = server().await;
    server.set_mode(Mode::Oversized(2 << 20));
    let cml = HttpCml::new(Duration::from_secs(5));
    let err = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect_err("too large");
    assert_eq!(err.kind, CmlErrorKind::BadResponse, "{err}");
    assert!(err.message.contains("larger than"), "{err}");
    // Just under the cap is read (and then found not to be CML's answer).
    server.set_mode(Mode::Oversized((1 << 20) - 16));
    let err = cml
        .probe(&target(&server, insecure(), PASSWORD))
        .await
        .expect_err("not CML's answer");
    assert!(err.message.contains("unexpected answer"), "{err}");
}
