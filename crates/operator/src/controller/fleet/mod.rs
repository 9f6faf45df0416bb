//! How reconciles observe their instance without one cloud call per worker. A settled worker
//! reads a shared snapshot of its provider's instances for this cluster: one tag-filtered
//! listing (1,000 instances a page) serves every settled worker until it is `max_age` old. A
//! worker in motion needs news, not a listing taken before its last look: it is described by
//! id, in one call with every other worker asking at the moment ([`batch`]). A snapshot keeps
//! what observation reads (state, addresses, type, launch time), not the tags: at 10,000
//! workers those were most of its memory.

mod batch;

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

/// How fresh an observation needs its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The worker's instance is on the move (or should be): as the cloud says now.
    InMotion,
    /// The worker is settled (Running or Stopped, as asked): from a snapshot up to `max_age`
    /// old, so a settled fleet is listed a few times a resync, not every poll interval.
    Settled,
}

pub struct FleetCache {
    max_age: Duration,
    snapshots: Mutex<HashMap<String, Snapshot>>,
    batches: batch::DescribeBatches,
}

impl FleetCache {
    /// Settled workers read snapshots up to `max_age` old.
    pub fn new(max_age: Duration) -> FleetCache {
        FleetCache {
            max_age,
            snapshots: Mutex::new(HashMap::new()),
            batches: batch::DescribeBatches::default(),
        }
    }

    /// The instance `id` of `provider` (named `key`): for a settled worker from a fresh enough
    /// snapshot (without its tags); described by id (batched) when the worker is in motion or
    /// the snapshot cannot vouch for it (new, terminated, or acted on since).
    pub async fn instance(
        &self,
        key: &str,
        provider: &dyn CloudProvider,
        cluster_id: &str,
        id: &str,
        freshness: Freshness,
    ) -> Result<Option<Instance>> {
        if freshness == Freshness::Settled {
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
        self.batches.describe(key, provider, id).await
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
        ProviderKind::Simulated => kind.as_str().to_owned(),
        ProviderKind::Aws => format!("aws/{}", region.unwrap_or(default_region)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ccm_simulator::{SimulatedCloud, SimulatedConfig};

    use super::*;
    use crate::provider::{
        LaunchRequest, LaunchSpec, Provider, WorkerIdentity, ratelimit::Operation,
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

    /// A cloud whose describe calls take 100 ms, and which records their batches.
    struct SlowDescribes {
        inner: Provider,
        batches: std::sync::Mutex<Vec<usize>>,
    }

    #[async_trait::async_trait]
    impl CloudProvider for SlowDescribes {
        async fn resolve_image(
            &self,
            q: &crate::provider::ImageQuery,
        ) -> Result<crate::provider::Image> {
            self.inner.resolve_image(q).await
        }
        async fn launch(&self, r: &LaunchRequest) -> Result<crate::provider::Launched> {
            self.inner.launch(r).await
        }
        async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>> {
            self.batches.lock().unwrap().push(ids.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.inner.describe(ids).await
        }
        async fn list_managed(&self, cluster_id: &str) -> Result<Vec<Instance>> {
            self.inner.list_managed(cluster_id).await
        }
        async fn start(&self, id: &str) -> Result<()> {
            self.inner.start(id).await
        }
        async fn stop(&self, id: &str) -> Result<()> {
            self.inner.stop(id).await
        }
        async fn terminate(&self, id: &str) -> Result<()> {
            self.inner.terminate(id).await
        }
    }

    fn simulated() -> Provider {
        Provider::new(Arc::new(SimulatedCloud::new(SimulatedConfig::default())))
    }

    #[tokio::test(start_paused = true)]
    async fn one_listing_serves_every_settled_worker_until_it_is_old() {
        let p = simulated();
        let mut ids = Vec::new();
        for n in 0..20 {
            ids.push(launch(&p, &format!("w{n}")).await);
        }
        let cache = FleetCache::new(Duration::from_secs(15));
        let before = p.calls().of(Operation::DescribeInstances);
        let calls = || p.calls().of(Operation::DescribeInstances) - before;
        let look = |id: &str| {
            let (cache, p, id) = (&cache, &p, id.to_owned());
            async move {
                cache
                    .instance("sim", p, "c", &id, Freshness::Settled)
                    .await
                    .unwrap()
            }
        };
        for id in &ids {
            let seen = look(id).await.unwrap();
            assert!(seen.tags.is_empty(), "a snapshot keeps no tags");
        }
        assert_eq!(calls(), 1, "one listing for 20 workers");
        tokio::time::advance(Duration::from_secs(14)).await;
        look(&ids[0]).await;
        assert_eq!(calls(), 1, "a listing serves until it is max_age old");
        tokio::time::advance(Duration::from_secs(2)).await;
        look(&ids[0]).await;
        assert_eq!(calls(), 2, "then it is taken again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_in_motion_sees_its_instance_as_it_is_now() {
        let p = simulated();
        let id = launch(&p, "w").await;
        let cache = FleetCache::new(Duration::from_secs(60));
        let look = |freshness| cache.instance("sim", &p, "c", &id, freshness);
        let listed = look(Freshness::Settled).await.unwrap().unwrap();
        assert_eq!(listed.state, crate::provider::InstanceState::Pending);

        tokio::time::advance(Duration::from_secs(4)).await;
        let now = look(Freshness::InMotion).await.unwrap().unwrap();
        assert_eq!(
            now.state,
            crate::provider::InstanceState::Running,
            "not the listing taken before it booted"
        );
        let listed = look(Freshness::Settled).await.unwrap().unwrap();
        assert_eq!(
            listed.state,
            crate::provider::InstanceState::Pending,
            "a settled worker still reads the listing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn workers_asking_at_once_share_describe_calls() {
        let cloud = SlowDescribes {
            inner: simulated(),
            batches: std::sync::Mutex::new(Vec::new()),
        };
        let mut ids = Vec::new();
        for n in 0..50 {
            ids.push(launch(&cloud.inner, &format!("w{n}")).await);
        }
        let cache = FleetCache::new(Duration::from_secs(60));
        let seen = futures::future::join_all(
            ids.iter()
                .map(|id| cache.instance("sim", &cloud, "c", id, Freshness::InMotion)),
        )
        .await;
        for (id, seen) in ids.iter().zip(seen) {
            assert_eq!(seen.unwrap().map(|i| i.id).as_ref(), Some(id));
        }
        assert_eq!(
            *cloud.batches.lock().unwrap(),
            vec![1, 49],
            "the first asks alone; the rest gather while it is in flight"
        );

        let unknown = cache
            .instance(
                "sim",
                &cloud,
                "c",
                "i-00000000000000bad",
                Freshness::InMotion,
            )
            .await
            .unwrap();
        assert!(unknown.is_none(), "an id the cloud does not know");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_describe_bucket_makes_bigger_calls_not_more() {
        use crate::provider::{Ec2Limits, ProviderSettings, Rate};
        let settings = ProviderSettings {
            limits: Ec2Limits {
                describe: Rate::new(1, 1),
                ..Ec2Limits::default()
            },
            ..ProviderSettings::default()
        };
        let cloud = SimulatedCloud::new(SimulatedConfig::default());
        let p = Provider::with_settings(Arc::new(cloud), settings);
        let mut ids = Vec::new();
        for n in 0..30 {
            ids.push(launch(&p, &format!("w{n}")).await);
        }
        let before = p.calls().of(Operation::DescribeInstances);
        let cache = FleetCache::new(Duration::from_secs(60));
        let seen = futures::future::join_all(
            ids.iter()
                .map(|id| cache.instance("sim", &p, "c", id, Freshness::InMotion)),
        )
        .await;
        assert!(seen.iter().all(|s| matches!(s, Ok(Some(_)))));
        assert_eq!(
            p.calls().of(Operation::DescribeInstances) - before,
            1,
            "the ids gathered while the call waited for its token went with it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_whose_sender_gave_up_is_asked_for_again() {
        let cloud = Arc::new(SlowDescribes {
            inner: simulated(),
            batches: std::sync::Mutex::new(Vec::new()),
        });
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(launch(&cloud.inner, &format!("w{n}")).await);
        }
        let cache = Arc::new(FleetCache::new(Duration::from_secs(60)));
        let ask = |id: &String| {
            let (cache, cloud, id) = (cache.clone(), cloud.clone(), id.clone());
            tokio::spawn(async move {
                cache
                    .instance("sim", cloud.as_ref(), "c", &id, Freshness::InMotion)
                    .await
            })
        };
        let first = ask(&ids[0]);
        tokio::task::yield_now().await;
        // These two gather while the first is in flight; the sender of their batch gives up.
        let sender = ask(&ids[1]);
        tokio::task::yield_now().await;
        let waiter = ask(&ids[2]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        sender.abort();
        let seen = waiter.await.unwrap().unwrap().unwrap();
        assert_eq!(seen.id, ids[2]);
        assert!(first.await.unwrap().unwrap().is_some());
        assert_eq!(*cloud.batches.lock().unwrap(), vec![1, 2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn instances_we_touched_or_do_not_list_are_described() {
        let p = simulated();
        let id = launch(&p, "w").await;
        let cache = FleetCache::new(Duration::from_secs(60));
        cache
            .instance("sim", &p, "c", &id, Freshness::Settled)
            .await
            .unwrap();
        let before = p.calls().of(Operation::DescribeInstances);

        p.stop(&id).await.unwrap();
        cache.touched("sim", &id).await;
        let seen = cache
            .instance("sim", &p, "c", &id, Freshness::Settled)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen.state,
            crate::provider::InstanceState::Stopping,
            "not the stale listing"
        );
        assert_eq!(p.calls().of(Operation::DescribeInstances) - before, 1);

        let unlisted = cache
            .instance("sim", &p, "c", "i-00000000000000bad", Freshness::Settled)
            .await
            .unwrap();
        assert!(unlisted.is_none());
    }
}
