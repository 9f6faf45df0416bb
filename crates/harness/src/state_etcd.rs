//! The platform's etcd for tests: its own Go-built etcd instance (not the API server's), which a
//! test can stop and start again on the same port and data.

use std::{
    path::PathBuf,
    process::Child,
    sync::{Mutex, MutexGuard},
};

use resource_controller::platform_etcd::{EtcdConfig, EtcdStore};

use super::{
    binaries::Binaries,
    controlplane::spawn_etcd_with,
    guardian::Guardian,
    process::{free_port, scratch_dir},
};

pub struct StateEtcd {
    pub port: u16,
    peer: u16,
    /// With mutual TLS: the directory of its certificates, and its plain health port.
    tls: Option<(PathBuf, u16)>,
    dir: PathBuf,
    etcd: PathBuf,
    child: Mutex<Option<Child>>,
    guardian: Guardian,
}

impl StateEtcd {
    pub fn start() -> StateEtcd {
        StateEtcd::start_serving(false)
    }

    /// An etcd that serves only clients presenting a certificate from its CA: the files are
    /// in [`StateEtcd::certificates`], the client's common name is `ccm`.
    pub fn start_mutual_tls() -> StateEtcd {
        StateEtcd::start_serving(true)
    }

    fn start_serving(mutual_tls: bool) -> StateEtcd {
        let dir = scratch_dir("state-etcd-");
        let tls = mutual_tls.then(|| {
            let certs = dir.join("certs");
            crate::certs::make_mutual_tls(&certs, "ccm");
            (certs, free_port())
        });
        let guardian = Guardian::start(&dir);
        let etcd = Binaries::locate().etcd;
        // A port found free can be taken before etcd binds it: try again on others.
        for _ in 0..5 {
            let (port, peer) = (free_port(), free_port());
            match spawn_etcd_with(
                &etcd,
                &dir.join("data"),
                (port, peer),
                tls.as_ref().map(|(d, m)| (d.as_path(), *m)),
                &dir.join("etcd.log"),
                &guardian,
            ) {
                Ok(child) => {
                    return StateEtcd {
                        port,
                        peer,
                        tls,
                        dir,
                        etcd,
                        child: Mutex::new(Some(child)),
                        guardian,
                    };
                }
                Err(e) if e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("etcd found no free port in 5 tries");
    }

    /// The directory holding `ca.crt` and the client's `client.crt`/`client.key` (mutual TLS
    /// only).
    pub fn certificates(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|(dir, _)| dir.as_path())
    }

    /// `host:port` for the client.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    // A test that panicked while holding the lock must still be able to stop etcd.
    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The controller's client of this etcd (plain, no user), with `timeout` per call.
    pub async fn store(&self, timeout: std::time::Duration) -> EtcdStore {
        EtcdStore::connect(&EtcdConfig {
            endpoints: vec![self.endpoint()],
            user: None,
            ca_pem: None,
            client_identity: None,
            timeout,
        })
        .await
        .expect("connect to the state etcd")
    }

    /// Kills etcd, keeping its data.
    pub fn stop(&self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same port and data (a no-op while it runs).
    pub fn resume(&self) {
        let mut child = self.child();
        if child.is_none() {
            let started = spawn_etcd_with(
                &self.etcd,
                &self.dir.join("data"),
                (self.port, self.peer),
                self.tls.as_ref().map(|(d, m)| (d.as_path(), *m)),
                &self.dir.join("etcd.log"),
                &self.guardian,
            );
            *child = Some(started.unwrap_or_else(|e| panic!("{e}")));
        }
    }
}

impl Drop for StateEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}
