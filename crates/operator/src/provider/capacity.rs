//! Remembers where EC2 recently had no capacity, so launches skip those types for a while.

use crate::lock::Locked;
use std::{collections::HashMap, sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Instance types (per availability zone when known) that recently failed for lack of capacity.
#[derive(Debug)]
pub struct CapacityCache {
    ttl: Duration,
    /// (instance type, zone) -> when the entry expires; a `None` zone covers every zone.
    entries: Mutex<HashMap<(String, Option<String>), Instant>>,
}

impl CapacityCache {
    pub fn new(ttl: Duration) -> CapacityCache {
        CapacityCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records a failure of `instance_type` in `zone` (every zone when unknown).
    pub fn mark_exhausted(&self, instance_type: &str, zone: Option<&str>) {
        let mut entries = self.entries.locked();
        entries.insert(
            (instance_type.to_owned(), zone.map(str::to_owned)),
            Instant::now() + self.ttl,
        );
    }

    /// Whether `instance_type` is believed to have no capacity in `zone`. With no zone (the
    /// cloud picks the placement) any recent failure of the type counts, since it may pick the
    /// same zone again.
    pub fn is_exhausted(&self, instance_type: &str, zone: Option<&str>) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.locked();
        entries.retain(|_, expires| *expires > now);
        entries.keys().any(|(t, z)| {
            t == instance_type && (z.is_none() || zone.is_none() || z.as_deref() == zone)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_respect_zones() {
        let cache = CapacityCache::new(Duration::from_secs(300));
        cache.mark_exhausted("m5zn.metal", Some("us-east-1a"));
        assert!(cache.is_exhausted("m5zn.metal", Some("us-east-1a")));
        assert!(!cache.is_exhausted("m5zn.metal", Some("us-east-1b")));
        assert!(!cache.is_exhausted("c5.metal", Some("us-east-1a")));
        assert!(
            cache.is_exhausted("m5zn.metal", None),
            "unplaced launches avoid it too"
        );

        cache.mark_exhausted("c5.metal", None);
        assert!(cache.is_exhausted("c5.metal", Some("us-east-1b")));
        assert!(cache.is_exhausted("c5.metal", None));

        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(!cache.is_exhausted("m5zn.metal", Some("us-east-1a")));
        assert!(!cache.is_exhausted("c5.metal", None));
    }
}
