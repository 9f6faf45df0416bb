//! The etcd state store against a real etcd (the Go-built one, its own instance per test).

use ccm_harness as support;

use std::time::Duration;

use resource_controller::{
    backoff::Backoff,
    platform_etcd::{ClientIdentity, EtcdConfig, EtcdStore},
    remote::RemoteErrorKind,
};
use support::{records::sample, state_etcd::StateEtcd};

fn config(endpoint: String) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint],
        user: None,
        ca_pem: None,
        client_identity: None,
        timeout: Duration::from_secs(1),
    }
}

async fn store(etcd: &StateEtcd) -> EtcdStore {
    EtcdStore::connect(&config(etcd.endpoint()))
        .await
        .expect("connect")
}

async fn raw(etcd: &StateEtcd) -> etcd_client::Client {
    etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("raw client")
}

#[tokio::test]
async fn worker_records_are_written_listed_and_removed() {
    let etcd = StateEtcd::start();
    let store = store(&etcd).await;
    store
        .put_worker(&sample("uid-1", "Running"))
        .await
        .expect("put");
    store
        .put_worker(&sample("uid-2", "Draining"))
        .await
        .expect("put");

    let mut kv = raw(&etcd).await;
    let capacity = kv
        .get("/ccm/workers/uid-2/capacity", None)
        .await
        .expect("get");
    let capacity: serde_json::Value =
        serde_json::from_slice(capacity.kvs()[0].value()).expect("json");
    assert_eq!(
        capacity,
        serde_json::json!({"license_type": "ENTERPRISE", "accepting_assignments": false,
            "capacity": {"cpu_cores": 48, "memory_gb": 192, "storage_gb": 500, "max_nodes": 20}})
    );
    let state = store.worker("uid-1").await.expect("get").expect("stored");
    assert_eq!(state, sample("uid-1", "Running"));

    let mut ids = store.worker_ids().await.expect("list");
    ids.sort();
    assert_eq!(ids, vec!["uid-1".to_owned(), "uid-2".to_owned()]);
    store.delete_worker("uid-1").await.expect("delete");
    store
        .delete_worker("uid-1")
        .await
        .expect("deleting what is gone is done");
    assert_eq!(store.worker_ids().await.expect("list"), vec!["uid-2"]);
    assert_eq!(store.worker("uid-1").await.expect("get"), None);
}

#[tokio::test]
async fn a_stopped_etcd_is_an_error_and_a_restarted_one_serves_again() {
    let etcd = StateEtcd::start();
    let store = store(&etcd).await;
    store
        .put_worker(&sample("uid-1", "Running"))
        .await
        .expect("put");
    etcd.stop();
    let err = store
        .put_worker(&sample("uid-1", "Draining"))
        .await
        .expect_err("etcd is down");
    assert!(
        matches!(
            err.kind,
            RemoteErrorKind::Unavailable | RemoteErrorKind::Timeout
        ),
        "{err}"
    );
    etcd.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.put_worker(&sample("uid-1", "Draining")).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = e;
            }
            Err(e) => panic!("etcd never came back: {e}"),
        }
    }
    let state = store.worker("uid-1").await.expect("get").expect("stored");
    assert_eq!(state.phase, "Draining");
}

#[tokio::test]
async fn a_connection_to_a_port_where_nothing_listens_fails_at_the_first_request() {
    let port = support::process::free_port();
    let store = EtcdStore::connect(&config(format!("127.0.0.1:{port}")))
        .await
        .expect("connecting sends nothing yet");
    let err = store.worker_ids().await.expect_err("nothing listens");
    assert!(
        matches!(
            err.kind,
            RemoteErrorKind::Unavailable | RemoteErrorKind::Timeout
        ),
        "{err}"
    );
    assert!(err.message.starts_with("etcd list"), "{err}");
}

/// Waits until the watch counter passes `above`; returns how long it took.
async fn changed(rx: &mut tokio::sync::watch::Receiver<u64>, above: u64) -> Duration {
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|n| *n > above))
        .await
        .expect("the watch saw the change")
        .expect("watch alive");
    started.elapsed()
}

#[tokio::test]
async fn the_instances_watch_sees_puts_and_recovers_from_a_compacted_revision() {
    let etcd = StateEtcd::start();
    let store = store(&etcd).await;
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut kv = raw(&etcd).await;

    let mut rx = store.watch_instances(backoff);
    changed(&mut rx, 0).await; // the first listing
    let before = *rx.borrow();
    kv.put("/ccm/instances/inst-1", "{}", None)
        .await
        .expect("put");
    let took = changed(&mut rx, before).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Keys elsewhere are not demand.
    let before = *rx.borrow();
    kv.put("/ccm/other/x", "{}", None).await.expect("put");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*rx.borrow(), before);

    // A watch resumed from a revision etcd has compacted away re-lists and goes on.
    let old = kv
        .put("/ccm/instances/inst-2", "{}", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    let latest = kv
        .put("/ccm/instances/inst-3", "{}", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    kv.compact(latest, None).await.expect("compact");
    let mut resumed = store.watch_instances_from(Some(old - 1), backoff);
    changed(&mut resumed, 0).await; // the re-list after the compaction
    let before = *resumed.borrow();
    kv.put("/ccm/instances/inst-4", "{}", None)
        .await
        .expect("put");
    changed(&mut resumed, before).await;

    // And it survives etcd going away and coming back.
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.resume();
    let before = *rx.borrow();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while *rx.borrow() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watch never resumed"
        );
        let _ = kv.put("/ccm/instances/inst-5", "{}", None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn user_and_password_are_used_and_a_wrong_password_is_refused() {
    let etcd = StateEtcd::start();
    let mut admin = raw(&etcd).await;
    admin
        .user_add("root", "root-pw", None)
        .await
        .expect("add root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin.auth_enable().await.expect("enable auth");
    let with = |user: Option<(&str, &str)>| EtcdConfig {
        user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
        ..config(etcd.endpoint())
    };

    let store = EtcdStore::connect(&with(Some(("root", "root-pw"))))
        .await
        .expect("the right password");
    store
        .put_worker(&sample("uid-1", "Running"))
        .await
        .expect("put as root");
    assert!(!format!("{:?}", with(Some(("root", "root-pw")))).contains("root-pw"));

    let err = EtcdStore::connect(&with(Some(("root", "wrong"))))
        .await
        .expect_err("a wrong password");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized, "{err}");

    let anonymous = EtcdStore::connect(&with(None)).await.expect("connect");
    let err = anonymous.worker_ids().await.expect_err("no user, auth on");
    assert_eq!(err.kind, RemoteErrorKind::Unauthorized, "{err}");
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_etcd_that_requires_one() {
    let etcd = StateEtcd::start_mutual_tls();
    let certs = etcd.certificates().expect("mutual TLS");
    let read = |file: &str| std::fs::read(certs.join(file)).expect("read pem");
    let with = |identity: Option<ClientIdentity>| EtcdConfig {
        ca_pem: Some(read("ca.crt")),
        client_identity: identity,
        ..config(etcd.endpoint())
    };
    let identity = ClientIdentity {
        cert_pem: read("client.crt"),
        key_pem: read("client.key"),
    };
    assert!(!format!("{:?}", with(Some(identity.clone()))).contains("PRIVATE KEY"));

    let store = EtcdStore::connect(&with(Some(identity)))
        .await
        .expect("connect with a client certificate");
    store
        .put_worker(&sample("uid-1", "Running"))
        .await
        .expect("put over mutual TLS");
    assert_eq!(store.worker_ids().await.expect("list"), vec!["uid-1"]);

    // Without a certificate the handshake fails: unavailable, nothing written.
    let refused = match EtcdStore::connect(&with(None)).await {
        Err(e) => e,
        Ok(anonymous) => anonymous
            .worker_ids()
            .await
            .expect_err("no client certificate"),
    };
    assert_eq!(refused.kind, RemoteErrorKind::Unavailable, "{refused}");
}
