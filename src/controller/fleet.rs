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

/// How fresh a snapshot an observation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The worker's instance is on the move (or should be): the poll interval.
    InMotion,
    /// The worker is settled (Running or Stopped, as asked): a snapshot up to half a resync
    /// old, so a settled fleet is listed a few times a resync, not every poll interval.
    Settled,
}

pub struct FleetCache {
    max_age: Duration,
    settled_max_age: Duration,
    snapshots: Mutex<HashMap<String, Snapshot>>,
}

impl FleetCache {
    /// `max_age` for instances in motion, `settled_max_age` for settled ones.
    pub fn new(max_age: Duration, settled_max_age: Duration) -> FleetCache {
        FleetCache {
            max_age,
            settled_max_age: settled_max_age.max(max_age),
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
        freshness: Freshness,
    ) -> Result<Option<Instance>> {
        let max_age = match freshness {
            Freshness::InMotion => self.max_age,
            Freshness::Settled => self.settled_max_age,
        };
        {
            // Held across the refresh, so concurrent reconciles share one listing.
            let mut snapshots = self.snapshots.lock().await;
            let fresh = snapshots
                .get(key)
                .is_some_and(|s| s.taken.elapsed() < max_age);
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
        let cache = FleetCache::new(Duration::from_secs(5), Duration::from_secs(15));
        let before = p.calls().of(Operation::DescribeInstances);
        let listings = || p.calls().of(Operation::DescribeInstances) - before;
        let look = |id: &str, freshness| {
            let (cache, p, id) = (&cache, &p, id.to_owned());
            async move { cache.instance("sim", p, "c", &id, freshness).await.unwrap() }
        };
        for id in &ids {
            let seen = look(id, Freshness::InMotion).await.unwrap();
            assert!(seen.tags.is_empty(), "a snapshot keeps no tags");
        }
        assert_eq!(listings(), 1, "one listing for 20 workers");

        tokio::time::advance(Duration::from_secs(6)).await;
        look(&ids[0], Freshness::Settled).await;
        assert_eq!(
            listings(),
            1,
            "a settled worker takes a listing up to its own age"
        );
        look(&ids[0], Freshness::InMotion).await;
        assert_eq!(listings(), 2, "refreshed when old");
        tokio::time::advance(Duration::from_secs(16)).await;
        look(&ids[0], Freshness::Settled).await;
        assert_eq!(
            listings(),
            3,
            "refreshed when old even for a settled worker"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn instances_we_touched_or_do_not_list_are_described() {
        let p = Provider::new(Arc::new(SimulatedCloud::new(SimulatedConfig::default())));
        let id = launch(&p, "w").await;
        let cache = FleetCache::new(Duration::from_secs(60), Duration::from_secs(60));
        cache
            .instance("sim", &p, "c", &id, Freshness::InMotion)
            .await
            .unwrap();
        let before = p.calls().of(Operation::DescribeInstances);

        p.stop(&id).await.unwrap();
        cache.touched("sim", &id).await;
        let seen = cache
            .instance("sim", &p, "c", &id, Freshness::InMotion)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen.state,
            crate::provider::InstanceState::Stopping,
            "not the stale listing"
        );
        assert_eq!(p.calls().of(Operation::DescribeInstances) - before, 1);

        let unknown = cache
            .instance("sim", &p, "c", "i-00000000000000bad", Freshness::InMotion)
            .await
            .unwrap();
        assert!(unknown.is_none());
    }
}
