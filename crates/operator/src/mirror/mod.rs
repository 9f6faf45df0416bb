//! Level-based sync of worker records to the platform's remotes (the Control Plane API and
//! etcd). Each Worker reconcile derives its record and pushes it to each remote that has not
//! acknowledged that exact record; a push has a short deadline and a failing remote is retried
//! per worker with backoff, so a remote that is down or slow never holds up the lifecycle.

pub mod outbox;
pub mod record;
pub mod sweep;

use crate::lock::Locked;
use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::{
    backoff::Backoff,
    control_plane::{ControlPlaneClient, WorkerRecord},
    platform_etcd::EtcdStore,
    remote::{RemoteError, RemoteErrorKind},
};

/// One of the platform's remotes.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
pub enum RemoteName {
    ControlPlane,
    Etcd,
}

impl RemoteName {
    /// Every value, in declaration order: derived, so a new variant is in it.
    pub const ALL: &'static [RemoteName] = <RemoteName as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a worker's record stands with one remote after a push.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncState {
    /// The remote holds the current record.
    Synced,
    /// The last push failed; the next try is due after `retry_in`.
    Failing {
        error: RemoteError,
        retry_in: Duration,
    },
}

#[derive(Default)]
struct PushState {
    /// Hash of the record the remote last acknowledged.
    acked: Option<u64>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<RemoteError>,
}

/// The configured remotes and what each acknowledged.
pub struct Remotes {
    control_plane: Option<Arc<ControlPlaneClient>>,
    etcd: Option<EtcdStore>,
    deadline: Duration,
    backoff: Backoff,
    pushes: Mutex<HashMap<(RemoteName, String), PushState>>,
    /// Pushes each remote did not take, since start.
    failed: Mutex<HashMap<RemoteName, u64>>,
    /// Record removals a remote did not take, retried until it answers again.
    removals: Mutex<PendingRemovals>,
    /// Whether the last call to each remote was answered.
    up: Mutex<HashMap<RemoteName, bool>>,
}

/// The most removals kept for retry; past it the oldest is left to the record sweep.
const PENDING_REMOVALS: usize = 10_000;

/// Removals that failed, oldest first; lost on a restart, when the sweep finds them instead.
#[derive(Default)]
struct PendingRemovals(std::collections::VecDeque<(RemoteName, String)>);

impl PendingRemovals {
    fn add(&mut self, name: RemoteName, id: &str) {
        if self.0.iter().any(|(n, i)| *n == name && i == id) {
            return;
        }
        if self.0.len() >= PENDING_REMOVALS {
            self.0.pop_front();
        }
        self.0.push_back((name, id.to_owned()));
    }

    fn forget(&mut self, name: RemoteName, id: &str) {
        self.0.retain(|(n, i)| !(*n == name && i == id));
    }

    fn of(&self, name: RemoteName) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

impl Remotes {
    pub fn new(
        control_plane: Option<Arc<ControlPlaneClient>>,
        etcd: Option<EtcdStore>,
        deadline: Duration,
        backoff: Backoff,
    ) -> Remotes {
        Remotes {
            control_plane,
            etcd,
            deadline,
            backoff,
            pushes: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            removals: Mutex::new(PendingRemovals::default()),
            up: Mutex::new(HashMap::new()),
        }
    }

    /// Pushes each remote did not take, since start.
    pub fn failures(&self) -> Vec<(RemoteName, u64)> {
        let failed = self.failed.locked();
        self.configured()
            .into_iter()
            .map(|n| (n, failed.get(&n).copied().unwrap_or(0)))
            .collect()
    }

    /// No remote at all: a kubectl-only fleet.
    pub fn none() -> Remotes {
        Remotes::new(
            None,
            None,
            Duration::from_secs(2),
            Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.control_plane.is_none() && self.etcd.is_none()
    }

    pub fn control_plane(&self) -> Option<&Arc<ControlPlaneClient>> {
        self.control_plane.as_ref()
    }

    pub fn etcd(&self) -> Option<&EtcdStore> {
        self.etcd.as_ref()
    }

    /// The deadline of one remote request made on a reconcile's path.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn configured(&self) -> Vec<RemoteName> {
        let mut names = Vec::new();
        if self.control_plane.is_some() {
            names.push(RemoteName::ControlPlane);
        }
        if self.etcd.is_some() {
            names.push(RemoteName::Etcd);
        }
        names
    }

    /// Pushes `record` to every remote that has not acknowledged it, at once; a remote still in
    /// its backoff is not asked and reports its last failure.
    pub async fn push(&self, record: &WorkerRecord) -> Vec<(RemoteName, SyncState)> {
        let hash = fingerprint(record);
        let due: Vec<RemoteName> = {
            let pushes = self.pushes.locked();
            self.configured()
                .into_iter()
                .filter(|name| {
                    let state = pushes.get(&(*name, record.id.clone()));
                    let acked = state.and_then(|s| s.acked) == Some(hash);
                    let waiting = state
                        .and_then(|s| s.retry_at)
                        .is_some_and(|at| at > Instant::now());
                    !acked && !waiting
                })
                .collect()
        };
        let mut stamped = record.clone();
        stamped.updated_at = Timestamp::from_second(Timestamp::now().as_second())
            .unwrap_or_else(|_| Timestamp::now())
            .to_string();
        let results =
            futures::future::join_all(due.iter().map(|name| self.put(*name, &stamped))).await;
        let mut pushes = self.pushes.locked();
        for (name, result) in due.iter().zip(results) {
            let state = pushes.entry((*name, record.id.clone())).or_default();
            match result {
                Ok(()) => {
                    *state = PushState {
                        acked: Some(hash),
                        ..PushState::default()
                    }
                }
                Err(e) => {
                    *self.failed.locked().entry(*name).or_default() += 1;
                    state.acked = None;
                    state.retry_at = Some(Instant::now() + self.backoff.delay(state.failures));
                    state.failures = state.failures.saturating_add(1);
                    state.last_error = Some(e);
                }
            }
        }
        self.configured()
            .into_iter()
            .map(|name| {
                let state = pushes.get(&(name, record.id.clone()));
                let sync = match state {
                    Some(s) if s.acked == Some(hash) => SyncState::Synced,
                    Some(PushState {
                        last_error: Some(error),
                        retry_at,
                        ..
                    }) => SyncState::Failing {
                        error: error.clone(),
                        retry_in: retry_at
                            .map(|at| at.saturating_duration_since(Instant::now()))
                            .unwrap_or_default(),
                    },
                    _ => SyncState::Failing {
                        error: RemoteError::new(RemoteErrorKind::Unavailable, "not pushed yet"),
                        retry_in: Duration::ZERO,
                    },
                };
                (name, sync)
            })
            .collect()
    }

    async fn put(&self, name: RemoteName, record: &WorkerRecord) -> Result<(), RemoteError> {
        let call = async {
            match name {
                RemoteName::ControlPlane => match &self.control_plane {
                    Some(cp) => cp.upsert_worker(record).await.map(drop),
                    None => Ok(()),
                },
                RemoteName::Etcd => match &self.etcd {
                    Some(etcd) => etcd.put_worker(record).await,
                    None => Ok(()),
                },
            }
        };
        self.bounded(name, call).await
    }

    /// Runs one remote request within the deadline.
    pub async fn bounded<T>(
        &self,
        name: RemoteName,
        call: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        let result = match tokio::time::timeout(self.deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(RemoteError::new(
                RemoteErrorKind::Timeout,
                format!(
                    "{} did not answer within {:?}",
                    name.as_str(),
                    self.deadline
                ),
            )),
        };
        // A request the remote refused still got an answer: the remote is up.
        let up = match &result {
            Ok(_) => true,
            Err(e) => e.kind == RemoteErrorKind::Rejected,
        };
        self.up.locked().insert(name, up);
        result
    }

    /// Whether the last call to each remote called so far was answered.
    pub fn up(&self) -> Vec<(RemoteName, bool)> {
        let up = self.up.locked();
        let mut all: Vec<_> = up.iter().map(|(n, u)| (*n, *u)).collect();
        all.sort();
        all
    }

    /// Removes the worker's records from every remote, at once and within the deadline; what
    /// fails is retried by [`Remotes::retry_removals`] (and found by the sweep after a
    /// restart). Forgets what was acknowledged either way.
    pub async fn remove(&self, id: &str) -> Vec<(RemoteName, Result<(), RemoteError>)> {
        let names = self.configured();
        let results =
            futures::future::join_all(names.iter().map(|name| self.delete_from(*name, id))).await;
        let mut pushes = self.pushes.locked();
        let mut removals = self.removals.locked();
        for (name, result) in names.iter().zip(&results) {
            pushes.remove(&(*name, id.to_owned()));
            match result {
                Ok(()) => removals.forget(*name, id),
                Err(_) => removals.add(*name, id),
            }
        }
        names.into_iter().zip(results).collect()
    }

    /// Removals waiting for their remote to answer again.
    pub fn pending_removals(&self) -> usize {
        self.removals.locked().0.len()
    }

    /// Tries the removals that failed, oldest first, per remote; the first that fails again
    /// ends that remote's turn, so a remote still down costs one request. Returns how many went.
    pub async fn retry_removals(&self) -> usize {
        let mut done = 0;
        for name in self.configured() {
            let waiting = self.removals.locked().of(name);
            for id in waiting {
                if self.delete_from(name, &id).await.is_err() {
                    break;
                }
                self.removals.locked().forget(name, &id);
                done += 1;
            }
        }
        done
    }

    /// Removes the worker's records from one remote within the deadline; gone counts as done.
    pub async fn delete_from(&self, name: RemoteName, id: &str) -> Result<(), RemoteError> {
        let call = async {
            match name {
                RemoteName::ControlPlane => match &self.control_plane {
                    Some(cp) => cp.delete_worker(id).await,
                    None => Ok(()),
                },
                RemoteName::Etcd => match &self.etcd {
                    Some(etcd) => etcd.delete_worker(id).await,
                    None => Ok(()),
                },
            }
        };
        self.bounded(name, call).await
    }
}

/// Identifies a record's content, `updated_at` aside.
fn fingerprint(record: &WorkerRecord) -> u64 {
    let mut unstamped = record.clone();
    unstamped.updated_at = String::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    unstamped.hash(&mut h);
    h.finish()
}

/// How soon a worker whose record is not everywhere should be looked at again.
pub fn retry_in(states: &[(RemoteName, SyncState)]) -> Option<Duration> {
    states
        .iter()
        .filter_map(|(_, s)| match s {
            SyncState::Failing { retry_in, .. } => Some(*retry_in),
            SyncState::Synced => None,
        })
        .min()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_failed_removal_is_kept_once_and_the_oldest_goes_past_the_cap() {
        let mut pending = PendingRemovals::default();
        pending.add(RemoteName::Etcd, "a");
        pending.add(RemoteName::Etcd, "a");
        pending.add(RemoteName::ControlPlane, "a");
        assert_eq!(pending.of(RemoteName::Etcd), vec!["a"]);
        assert_eq!(pending.of(RemoteName::ControlPlane), vec!["a"]);
        pending.forget(RemoteName::Etcd, "a");
        assert!(pending.of(RemoteName::Etcd).is_empty());
        for n in 0..PENDING_REMOVALS + 1 {
            pending.add(RemoteName::Etcd, &n.to_string());
        }
        assert_eq!(pending.0.len(), PENDING_REMOVALS);
        assert!(
            pending.of(RemoteName::ControlPlane).is_empty(),
            "the oldest went"
        );
        assert_eq!(pending.of(RemoteName::Etcd)[0], "1");
    }

    /// A remote failing with `kind`, retried in 4 s.
    pub(crate) fn failing(kind: RemoteErrorKind) -> SyncState {
        SyncState::Failing {
            error: RemoteError::new(kind, "down"),
            retry_in: Duration::from_secs(4),
        }
    }

    #[test]
    fn retry_in_is_the_soonest_failing_remote() {
        let both = [
            (RemoteName::ControlPlane, SyncState::Synced),
            (RemoteName::Etcd, SyncState::Synced),
        ];
        assert_eq!(retry_in(&both), None);
        let etcd_down = [
            (RemoteName::ControlPlane, SyncState::Synced),
            (RemoteName::Etcd, failing(RemoteErrorKind::Unavailable)),
        ];
        assert_eq!(retry_in(&etcd_down), Some(Duration::from_secs(4)));
    }
}
