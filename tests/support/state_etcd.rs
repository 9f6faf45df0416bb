//! The platform's etcd for tests: its own Go-built etcd instance (not the API server's), which a
//! test can stop and start again on the same port and data.

use std::{path::PathBuf, process::Child, sync::Mutex};

use super::{
    binaries::Binaries,
    controlplane::spawn_etcd,
    guardian::Guardian,
    process::{free_port, scratch_dir},
};

pub struct StateEtcd {
    pub port: u16,
    peer: u16,
    dir: PathBuf,
    etcd: PathBuf,
    child: Mutex<Option<Child>>,
    guardian: Guardian,
}

impl StateEtcd {
    pub fn start() -> StateEtcd {
        let dir = scratch_dir("state-etcd-");
        let guardian = Guardian::start(&dir);
        let e = StateEtcd {
            port: free_port(),
            peer: free_port(),
            etcd: Binaries::locate().etcd,
            dir,
            child: Mutex::new(None),
            guardian,
        };
        e.resume();
        e
    }

    /// `host:port` for the client.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills etcd, keeping its data.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same port and data (a no-op while it runs).
    pub fn resume(&self) {
        let mut child = self.child.lock().unwrap();
        if child.is_none() {
            *child = Some(spawn_etcd(
                &self.etcd,
                &self.dir.join("data"),
                self.port,
                self.peer,
                &self.dir.join("etcd.log"),
                &self.guardian,
            ));
        }
    }
}

impl Drop for StateEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}
