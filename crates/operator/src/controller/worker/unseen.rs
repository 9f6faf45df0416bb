//! Launches this controller wrote to a Worker's status that the Worker cache does not show yet.
//! A reconcile that runs before the cache catches up would read no instance and launch again:
//! the ClientToken makes EC2 return the same instance, but the status write and the Event are
//! made twice. Until the cache shows the instance, such a reconcile waits instead.
//!
//! Only this controller writes `status.instance`, and watch events arrive in order, so a cached
//! Worker without the instance we wrote is behind our write, never ahead of it.

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// How long a written launch is waited for before the cache is trusted again (it lags by far
/// less; a retried launch is idempotent anyway).
const PATIENCE: Duration = Duration::from_secs(10);

/// How soon a reconcile that found the cache behind looks again.
pub const RECHECK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct UnseenLaunches {
    written: Mutex<HashMap<String, (String, Instant)>>,
}

impl UnseenLaunches {
    /// `instance` was written to the status of the Worker with `uid`.
    pub fn wrote(&self, uid: &str, instance: &str) {
        self.lock()
            .insert(uid.to_owned(), (instance.to_owned(), Instant::now()));
    }

    /// Whether the cached Worker (with `cached` as its instance) is behind a launch we wrote:
    /// then it should be looked at again after `RECHECK`. A launch seen, or waited for past
    /// `PATIENCE`, is forgotten.
    pub fn behind(&self, uid: &str, cached: Option<&str>) -> bool {
        let mut written = self.lock();
        let Some((instance, at)) = written.get(uid) else {
            return false;
        };
        if cached != Some(instance.as_str()) && at.elapsed() < PATIENCE {
            return true;
        }
        written.remove(uid);
        false
    }

    /// Forgets the Worker (it is gone).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.written.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_written_launch_is_waited_for_until_the_cache_shows_it() {
        let unseen = UnseenLaunches::default();
        assert!(
            !unseen.behind("uid-a", None),
            "nothing written, nothing to wait for"
        );
        unseen.wrote("uid-a", "i-1");
        assert!(unseen.behind("uid-a", None));
        assert!(
            !unseen.behind("uid-b", None),
            "only the worker written to waits"
        );
        assert!(!unseen.behind("uid-a", Some("i-1")));
        assert!(
            !unseen.behind("uid-a", None),
            "seen once, forgotten (a later relaunch writes anew)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_never_seen_is_given_up_after_the_patience() {
        let unseen = UnseenLaunches::default();
        unseen.wrote("uid-a", "i-1");
        tokio::time::advance(PATIENCE - Duration::from_millis(1)).await;
        assert!(unseen.behind("uid-a", Some("i-0")));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!unseen.behind("uid-a", None));
    }

    #[test]
    fn a_deleted_worker_is_forgotten() {
        let unseen = UnseenLaunches::default();
        unseen.wrote("uid-a", "i-1");
        unseen.forget("uid-a");
        assert!(!unseen.behind("uid-a", None));
    }
}
