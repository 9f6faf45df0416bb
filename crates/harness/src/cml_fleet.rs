//! A CML test server for every instance of the simulated cloud, each on the instance's own
//! loopback address (the cloud hands those out with `--sim-cml-over-https`) and one shared port,
//! all registering with one Smart Account: a fleet of workers as the controller meets it over
//! HTTPS. A server outlives its instance's stop and start, as a CML's disk does, and goes down
//! for good when the instance is terminated.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

use resource_controller::provider::{Instance, InstanceState};

use super::{
    cml_server::{CmlServer, Mode},
    process::free_port,
    smart_account::SmartAccount,
};

pub struct CmlFleet {
    /// The port every server listens on (the template's `cml.port`).
    pub port: u16,
    pub account: SmartAccount,
    dir: PathBuf,
    /// By instance id.
    servers: Mutex<BTreeMap<String, CmlServer>>,
}

impl CmlFleet {
    pub fn new(dir: &Path, account: SmartAccount) -> CmlFleet {
        CmlFleet {
            port: free_port(),
            account,
            dir: dir.to_owned(),
            servers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Serves a CML for each live instance not served yet; takes down those terminated.
    pub async fn follow(&self, instances: &[Instance]) {
        for i in instances {
            let terminated = matches!(
                i.state,
                InstanceState::Terminated | InstanceState::ShuttingDown
            );
            if terminated {
                if let Some(server) = self.server(&i.id) {
                    server.set_mode(Mode::Down);
                }
                continue;
            }
            let Some(ip) = i.private_ip.as_deref() else {
                continue;
            };
            if self.server(&i.id).is_none() {
                let dir = self.dir.join(&i.id);
                std::fs::create_dir_all(&dir).expect("CML server dir");
                let address = format!("{ip}:{}", self.port);
                let server = CmlServer::start_on(&dir, self.account.clone(), &address).await;
                self.lock().insert(i.id.clone(), server);
            }
        }
    }

    /// The server of instance `id`, once served.
    pub fn server(&self, id: &str) -> Option<CmlServer> {
        self.lock().get(id).cloned()
    }

    /// Every server so far, by instance id.
    pub fn all(&self) -> BTreeMap<String, CmlServer> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CmlServer>> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
