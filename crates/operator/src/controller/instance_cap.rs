//! The controller-wide cap on instances (`--max-instances`): every Worker with an instance, or
//! with a launch in flight, counts, whoever made it (the autoscaler or a person with kubectl).
//! A launch beyond it waits. A slot just granted is remembered (`Grants`) until the Worker
//! cache shows the launch.

use kube::ResourceExt;

use super::grants::Grants;
use crate::crd::Worker;

/// The one pool of instance slots.
const POOL: &str = "instances";

pub struct InstanceCap {
    max: u32,
    granted: Grants,
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
            granted: Grants::default(),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Whether the Worker `uid` may launch now; `Err` with the count when the cap is reached.
    pub fn permit(&self, uid: &str, workers: &[&Worker]) -> Result<(), u32> {
        let seen = workers
            .iter()
            .filter(|w| holds_instance(w))
            .filter_map(|w| w.uid())
            .collect();
        self.granted.grant(POOL, uid, seen, self.max)
    }

    /// Forgets a grant: the Worker is gone.
    pub fn release(&self, uid: &str) {
        self.granted.release(uid);
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
