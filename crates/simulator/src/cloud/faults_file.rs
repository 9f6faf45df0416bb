//! Faults injected from a file, so a process other than the one running the cloud (the soak's
//! fault injector, a person in the dev environment) can make EC2 misbehave: a share of calls
//! throttled or failing with a 5xx, and instance types without capacity. The file is read again
//! whenever it changes; a missing file is no fault, and a file that does not parse keeps the
//! faults read before (a half-written file must not clear them).

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

/// What the file asks for. Rates are shares of calls, 0 to 1.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectedFaults {
    /// Calls answered `RequestLimitExceeded`.
    #[serde(default)]
    pub throttle_rate: f64,
    /// Calls answered `InternalError` (a 5xx).
    #[serde(default)]
    pub server_error_rate: f64,
    /// Instance types with no capacity anywhere.
    #[serde(default)]
    pub no_capacity: Vec<String>,
}

impl InjectedFaults {
    /// Writes `self` to `path` at once (a new file renamed over the old one).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, path)
    }
}

/// The file and what was last read from it.
#[derive(Debug)]
pub(super) struct FaultsFile {
    path: PathBuf,
    last: Mutex<(Option<SystemTime>, InjectedFaults)>,
}

impl FaultsFile {
    pub(super) fn new(path: PathBuf) -> FaultsFile {
        FaultsFile {
            path,
            last: Mutex::new((None, InjectedFaults::default())),
        }
    }

    /// The faults now, read again if the file changed.
    pub(super) fn current(&self) -> InjectedFaults {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified != last.0 {
            match modified {
                None => *last = (None, InjectedFaults::default()),
                Some(at) => {
                    let read = std::fs::read_to_string(&self.path)
                        .ok()
                        .and_then(|t| serde_json::from_str::<InjectedFaults>(&t).ok());
                    if let Some(faults) = read {
                        *last = (Some(at), faults);
                    }
                }
            }
        }
        last.1.clone()
    }
}
