//! The controller-wide cap on instances (`--max-instances`): every Worker with an instance, or
//! with a launch in flight, counts, whoever made it (the autoscaler or a person with kubectl).
//! A launch beyond it waits. A slot just granted is remembered until the Worker cache shows the
//! launch, so two reconciles never both take the last one.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::ResourceExt;
use tokio::time::Instant;

use crate::{crd::Worker, lock::Locked};

/// How long a granted slot is remembered while the cache catches up.
const GRANT_MEMORY: Duration = Duration::from_secs(60);

pub struct InstanceCap {
    max: u32,
    granted: Mutex<HashMap<String, Instant>>,
}

/// Whether the Worker holds (or is getting) an instance.
fn holds_instance(w: &Worker) -> bool {
    let Some(status) = &w.status else {
        return false;
    };
    let live = status
        .instance
        .as_ref()
        .is_some_and(|i| !matches!(i.state.as_deref(), Some("terminated" | "not-found")));
    let launching = status
        .launch
        .as_ref()
        .is_some_and(|l| l.client_token.is_some());
    live || launching
}

impl InstanceCap {
    pub fn new(max: u32) -> InstanceCap {
        InstanceCap {
            max,
            granted: Mutex::new(HashMap::new()),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether the Worker `uid` may launch now; `Err` with the count when the cap is reached.
    pub fn permit(&self, uid: &str, workers: &[&Worker]) -> Result<(), u32> {
        let mut holders: std::collections::HashSet<String> = workers
            .iter()
            .filter(|w| holds_instance(w))
            .filter_map(|w| w.uid())
            .collect();
        let mut granted = self.granted.locked();
        granted.retain(|_, at| at.elapsed() < GRANT_MEMORY);
        holders.extend(granted.keys().cloned());
        if holders.contains(uid) {
            return Ok(());
        }
        let count = holders.len() as u32;
        if count >= self.max {
            return Err(count);
        }
        granted.insert(uid.to_owned(), Instant::now());
        Ok(())
    }

    /// Forgets a grant: the Worker is gone.
    pub fn release(&self, uid: &str) {
        self.granted.locked().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn worker(uid: &str, instance: bool) -> Worker {
        let mut w: Worker = serde_json::from_value(json!({
            "apiVersion": "ccm.dev/v1alpha1", "kind": "Worker",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid},
            "spec": {"templateRef": {"name": "t"}}
        }))
        .expect("worker");
        if instance {
            w.status = Some(
                serde_json::from_value(json!({"instance": {"id": "i-1", "state": "running"}}))
                    .expect("status"),
            );
        }
        w
    }

    #[test]
    fn launches_beyond_the_cap_wait_and_grants_count_until_seen() {
        let cap = InstanceCap::new(2);
        let running = worker("a", true);
        let workers = [&running];
        assert_eq!(cap.permit("a", &workers), Ok(()), "already holds one");
        assert_eq!(cap.permit("b", &workers), Ok(()), "the second slot");
        assert_eq!(
            cap.permit("c", &workers),
            Err(2),
            "granted to b, not seen yet"
        );
        assert_eq!(cap.permit("b", &workers), Ok(()), "b keeps its grant");
        cap.release("b");
        assert_eq!(cap.permit("c", &workers), Ok(()));
    }
}
