//! A shared, short-lived snapshot of each provider's instances for this cluster, so reconciles
//! observe their instance without one describe call per worker: one tag-filtered listing
//! (1,000 instances a page) serves every worker until it is `max_age` old. A snapshot keeps
//! what observation reads (state, addresses, type, launch time), not the tags: at 10,000
//! workers those were most of its memory.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use tokio::{sync::Mutex, time::Instant};

use crate::{
    crd::ProviderKind,
    provider::{CloudProvider, Instance, Result},
};

struct Snapshot {
    taken: Instant,
    instances: HashMap<String, Instance>,
    /// Instances acted on since the snapshot: their listed state is stale.
    stale: HashSet<String>,
}

pub struct FleetCache {
    max_age: Duration,
    snapshots: Mutex<HashMap<String, Snapshot>>,
}

impl FleetCache {
    pub fn new(max_age: Duration) -> FleetCache {
        FleetCache {
            max_age,
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    /// The instance `id` of `provider` (named `key`), from a fresh enough snapshot (without its
    /// tags), or from a describe when the snapshot cannot vouch for it (new, terminated, or
    /// acted on since).
    pub async fn instance(
        &self,
        key: &str,
        provider: &dyn CloudProvider,
        cluster_id: &str,
        id: &str,
    ) -> Result<Option<Instance>> {
        {
            // Held across the refresh, so concurrent reconciles share one listing.
            let mut snapshots = self.snapshots.lock().await;
            let fresh = snapshots
                .get(key)
                .is_some_and(|s| s.taken.elapsed() < self.max_age);
            if !fresh {
                // The old snapshot goes first, so that at most one listing is in memory.
                snapshots.remove(key);
                let listed = provider.list_managed(cluster_id).await?;
                let instances = listed
                    .into_iter()
                    .map(|mut i| {
                        i.tags = BTreeMap::new();
                        (i.id.clone(), i)
                    })
                    .collect();
                snapshots.insert(
                    key.to_owned(),
                    Snapshot {
                        taken: Instant::now(),
                        instances,
                        stale: HashSet::new(),
                    },
                );
            }
            if let Some(snapshot) = snapshots.get(key)
                && !snapshot.stale.contains(id)
                && let Some(instance) = snapshot.instances.get(id)
            {
                return Ok(Some(instance.clone()));
            }
        }
        Ok(provider.describe(&[id.to_owned()]).await?.pop())
    }

    /// Marks `id` as changed by us, so its next observation asks the cloud.
    pub async fn touched(&self, key: &str, id: &str) {
        if let Some(snapshot) = self.snapshots.lock().await.get_mut(key) {
            snapshot.stale.insert(id.to_owned());
        }
    }
}

/// The cache key of a provider: its kind and region.
pub fn provider_key(kind: ProviderKind, region: Option<&str>, default_region: &str) -> String {
    match kind {
        ProviderKind::Simulated => "simulated".to_owned(),
        ProviderKind::Aws => format!("aws/{}", region.unwrap_or(default_region)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::provider::{
        LaunchRequest, LaunchSpec, Provider, WorkerIdentity,
        ratelimit::Operation,
        simulated::{SimulatedCloud, SimulatedConfig},
    };

    async fn launch(p: &Provider, name: &str) -> String {
        let request = LaunchRequest {
            worker: WorkerIdentity {
                cluster_id: "c".into(),
                namespace: "ns".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                template: "t".into(),
            },
            spec: LaunchSpec::basic("ami-0abcdef1234567890", &["m5zn.metal"]),
            attempt: 1,
        };
        p.launch(&request).await.unwrap().instance.id
    }

    #[tokio::test(start_paused = true)]
    async fn one_listing_serves_every_worker_until_it_is_old() {
        let p = Provider::new(Arc::new(SimulatedCloud::new(SimulatedConfig::default())));
        let mut ids = Vec::new();
        for n in 0..20 {
            ids.push(launch(&p, &format!("w{n}")).await);
        }
        let cache = FleetCache::new(Duration::from_secs(5));
        let before = p.calls().of(Operation::DescribeInstances);
        for id in &ids {
            let seen = cache.instance("sim", &p, "c", id).await.unwrap().unwrap();
            assert!(seen.tags.is_empty(), "a snapshot keeps no tags");
        }
        assert_eq!(
            p.calls().of(Operation::DescribeInstances) - before,
            1,
            "one listing for 20 workers"
        );

        tokio::time::advance(Duration::from_secs(6)).await;
        cache.instance("sim", &p, "c", &ids[0]).await.unwrap();
        assert_eq!(
            p.calls().of(Operation::DescribeInstances) - before,
            2,
            "refreshed when old"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn instances_we_touched_or_do_not_list_are_described() {
        let p = Provider::new(Arc::new(SimulatedCloud::new(SimulatedConfig::default())));
        let id = launch(&p, "w").await;
        let cache = FleetCache::new(Duration::from_secs(60));
        cache.instance("sim", &p, "c", &id).await.unwrap();
        let before = p.calls().of(Operation::DescribeInstances);

        p.stop(&id).await.unwrap();
        cache.touched("sim", &id).await;
        let seen = cache.instance("sim", &p, "c", &id).await.unwrap().unwrap();
        assert_eq!(
            seen.state,
            crate::provider::InstanceState::Stopping,
            "not the stale listing"
        );
        assert_eq!(p.calls().of(Operation::DescribeInstances) - before, 1);

        let unknown = cache
            .instance("sim", &p, "c", "i-00000000000000bad")
            .await
            .unwrap();
        assert!(unknown.is_none());
    }
}
