//! Workers the autoscaler created that the Worker cache does not show yet. Until it does, they
//! count as on their way, so a reconcile that runs before the cache catches up never creates
//! them again (the same idea as controller-runtime's expectations).

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// How long a creation is expected before it is given up (the cache lags by far less).
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Expectations {
    created: Mutex<HashMap<String, Vec<(String, Instant)>>>,
}

impl Expectations {
    pub fn expect(&self, template: &str, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let now = Instant::now();
        self.created
            .locked()
            .entry(template.to_owned())
            .or_default()
            .extend(names.iter().map(|n| (n.clone(), now)));
    }

    /// Created workers of `template` not among `visible` yet; the visible and the stale are
    /// forgotten.
    pub fn pending(&self, template: &str, visible: &[String]) -> Vec<String> {
        let mut created = self.created.locked();
        let Some(list) = created.get_mut(template) else {
            return Vec::new();
        };
        list.retain(|(name, at)| !visible.contains(name) && at.elapsed() < PATIENCE);
        list.iter().map(|(name, _)| name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_created_worker_is_expected_until_seen_or_stale() {
        let e = Expectations::default();
        e.expect("ns/t", &["t-a".into(), "t-b".into()]);
        assert_eq!(e.pending("ns/t", &["t-a".into()]), vec!["t-b"]);
        assert_eq!(e.pending("ns/other", &[]), Vec::<String>::new());
        tokio::time::advance(PATIENCE).await;
        assert_eq!(e.pending("ns/t", &[]), Vec::<String>::new());
    }
}
