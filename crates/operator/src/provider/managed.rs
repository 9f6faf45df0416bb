//! [`Provider`]: the cloud policy over a raw [`CloudApi`]: rate limits, throttling backoff,
//! idempotent launch with adoption by tag, instance-type fallback, and batched describes.

use crate::{expiring::Expiring, lock::Locked};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tracing::{info, warn};

use super::{
    CloudProvider, ErrorKind, GatheredIds, Image, ImageQuery, Instance, LaunchRequest, Launched,
    ProviderError, Result,
    api::{CloudApi, InstanceFilter, MAX_IDS_PER_DESCRIBE, RunInstance},
    capacity::CapacityCache,
    ratelimit::{Ec2Limits, Operation, RateLimits},
    tag,
    turns::LaunchTurns,
};
use crate::backoff::Backoff;

/// Tunables of the policy; the defaults suit EC2.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// Retries of a throttled call before giving up with `Throttled`.
    pub throttle_retries: u32,
    pub throttle_backoff: Backoff,
    /// How long an instance type stays skipped after an insufficient-capacity answer.
    pub capacity_ttl: Duration,
    /// The account's request limits, enforced client-side.
    pub limits: Ec2Limits,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            throttle_retries: 5,
            throttle_backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(20)),
            capacity_ttl: Duration::from_secs(300),
            limits: Ec2Limits::default(),
        }
    }
}

/// Counts of cloud calls by operation and outcome, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CallCounts {
    counts: Mutex<HashMap<(Operation, &'static str), u64>>,
    total: AtomicU64,
}

impl CallCounts {
    fn record(&self, op: Operation, outcome: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self.counts.locked().entry((op, outcome)).or_default() += 1;
    }

    /// Calls of `op` that ended with `outcome` (`ok` or an [`ErrorKind`] label).
    pub fn get(&self, op: Operation, outcome: &str) -> u64 {
        let counts = self.counts.locked();
        counts
            .iter()
            .filter(|((o, out), _)| *o == op && *out == outcome)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Calls of `op` whatever the outcome.
    pub fn of(&self, op: Operation) -> u64 {
        let counts = self.counts.locked();
        counts
            .iter()
            .filter(|((o, _), _)| *o == op)
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A snapshot, e.g. for exporting as metrics.
    pub fn snapshot(&self) -> Vec<(Operation, &'static str, u64)> {
        let counts = self.counts.locked();
        counts
            .iter()
            .map(|((op, out), n)| (*op, *out, *n))
            .collect()
    }
}

/// The cloud provider the reconcilers use, for one account and region.
pub struct Provider {
    api: Arc<dyn CloudApi>,
    limits: RateLimits,
    settings: ProviderSettings,
    capacity: CapacityCache,
    known_types: Mutex<HashSet<String>>,
    subnet_zones: Mutex<HashMap<String, String>>,
    /// Images found, by query, and when: every launch asks for its image's root device name
    /// (which an AMI id never changes), and every template reconcile for the newest match of its
    /// name pattern (which changes when an image is published, not every second).
    /// Entries lapse after [`IMAGE_TTL`], so a deleted template's query does not stay.
    images: Mutex<Expiring<ImageQuery, Image>>,
    turns: LaunchTurns,
    calls: CallCounts,
}

/// How long an image found is taken as still the answer without asking again.
const IMAGE_TTL: Duration = Duration::from_secs(60);

impl Provider {
    pub fn new(api: Arc<dyn CloudApi>) -> Provider {
        Provider::with_settings(api, ProviderSettings::default())
    }

    pub fn with_settings(api: Arc<dyn CloudApi>, settings: ProviderSettings) -> Provider {
        let run = settings.limits.run_instances;
        Provider {
            api,
            limits: RateLimits::new(&settings.limits),
            capacity: CapacityCache::new(settings.capacity_ttl),
            settings,
            known_types: Mutex::new(HashSet::new()),
            images: Mutex::new(Expiring::new(IMAGE_TTL)),
            turns: LaunchTurns::new(run.burst, run.per_second),
            subnet_zones: Mutex::new(HashMap::new()),
            calls: CallCounts::default(),
        }
    }

    pub fn calls(&self) -> &CallCounts {
        &self.calls
    }

    pub fn capacity_cache(&self) -> &CapacityCache {
        &self.capacity
    }

    /// The newest image matching `query`, asked of the cloud.
    async fn describe_image(&self, query: &ImageQuery) -> Result<Image> {
        let images = self
            .call(Operation::DescribeImages, || {
                self.api.describe_images(query)
            })
            .await?;
        let newest = images.into_iter().max_by(|a, b| {
            a.creation_date
                .cmp(&b.creation_date)
                .then_with(|| a.id.cmp(&b.id))
        });
        newest.ok_or_else(|| {
            let what = match query {
                ImageQuery::Id(id) => format!("image {id} does not exist or is not available"),
                ImageQuery::NamePattern { pattern, owners } if owners.is_empty() => {
                    format!("no image matches name pattern {pattern:?}")
                }
                ImageQuery::NamePattern { pattern, owners } => {
                    format!(
                        "no image owned by {} matches name pattern {pattern:?}",
                        owners.join(", ")
                    )
                }
            };
            ProviderError::new(
                ErrorKind::NotFound,
                "DescribeImages",
                format!("{what} in {}", self.api.region()),
            )
        })
    }

    /// One cloud call through its bucket, retried with backoff while throttled.
    async fn call<T, F, Fut>(&self, op: Operation, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_with_token(op, false, f).await
    }

    /// [`Self::call`], its first attempt's token already taken when `token_taken`.
    async fn call_with_token<T, F, Fut>(
        &self,
        op: Operation,
        mut token_taken: bool,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut retries = 0;
        loop {
            if !std::mem::take(&mut token_taken) {
                self.limits.acquire(op).await;
            }
            let result = f().await;
            self.calls.record(
                op,
                result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok"),
            );
            match result {
                Err(e)
                    if e.kind == ErrorKind::Throttled
                        && retries < self.settings.throttle_retries =>
                {
                    let delay = self.settings.throttle_backoff.delay(retries);
                    warn!(
                        operation = op.as_str(),
                        ?delay,
                        "cloud throttled the call; backing off"
                    );
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                other => return other,
            }
        }
    }

    async fn list(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .call(Operation::DescribeInstances, || {
                    self.api.list_instances(filter, next.clone())
                })
                .await?;
            out.extend(page.items);
            match page.next_token {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => return Ok(out),
            }
        }
    }

    /// Describes `ids` in batches of at most 1,000; the first call's token is already taken
    /// when `token_taken`.
    async fn describe_chunks(&self, ids: &[String], token_taken: bool) -> Result<Vec<Instance>> {
        let mut out = Vec::with_capacity(ids.len());
        for (n, chunk) in ids.chunks(MAX_IDS_PER_DESCRIBE).enumerate() {
            out.extend(
                self.describe_batch(chunk.to_vec(), token_taken && n == 0)
                    .await?,
            );
        }
        Ok(out)
    }

    /// Describes one batch; drops ids the cloud says do not exist and asks again. The first
    /// call's token is already taken when `token_taken`.
    async fn describe_batch(
        &self,
        mut ids: Vec<String>,
        mut token_taken: bool,
    ) -> Result<Vec<Instance>> {
        while !ids.is_empty() {
            let result = self
                .call_with_token(
                    Operation::DescribeInstances,
                    std::mem::take(&mut token_taken),
                    || self.api.describe_instances(&ids),
                )
                .await;
            match result {
                Err(e) if e.is_not_found() => {
                    let missing = ids_named_in(&e.message, &ids);
                    if missing.is_empty() {
                        return Err(e);
                    }
                    ids.retain(|id| !missing.contains(id));
                }
                other => return other,
            }
        }
        Ok(Vec::new())
    }

    async fn ensure_types_offered(&self, types: &[String]) -> Result<()> {
        let unknown: Vec<String> = {
            let known = self.known_types.locked();
            types
                .iter()
                .filter(|t| !known.contains(*t))
                .cloned()
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        self.call(Operation::DescribeInstanceTypes, || {
            self.api.check_instance_types(&unknown)
        })
        .await?;
        self.known_types.locked().extend(unknown);
        Ok(())
    }

    async fn zones_of(&self, subnets: &[String]) -> Result<HashMap<String, String>> {
        let missing: Vec<String> = {
            let zones = self.subnet_zones.locked();
            subnets
                .iter()
                .filter(|s| !zones.contains_key(*s))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let found = self
                .call(Operation::DescribeSubnets, || {
                    self.api.subnet_zones(&missing)
                })
                .await?;
            self.subnet_zones.locked().extend(found);
        }
        let zones = self.subnet_zones.locked();
        Ok(subnets
            .iter()
            .filter_map(|s| zones.get(s).map(|z| (s.clone(), z.clone())))
            .collect())
    }

    /// Instances already tagged for this worker in this cluster, oldest first; keeps the
    /// oldest, ends the rest. Another cluster's instance is never adopted nor ended.
    async fn adopt_existing(&self, request: &LaunchRequest) -> Result<Option<Instance>> {
        let filter = InstanceFilter {
            tags: vec![
                (tag::WORKER_UID.to_owned(), request.worker.uid.clone()),
                (tag::CLUSTER.to_owned(), request.worker.cluster_id.clone()),
            ],
            exclude_terminated: true,
        };
        let mut found: Vec<Instance> = self
            .list(&filter)
            .await?
            .into_iter()
            .filter(|i| !i.state.is_gone())
            .collect();
        found.sort_by(|a, b| {
            a.launch_time
                .cmp(&b.launch_time)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut found = found.into_iter();
        let Some(keep) = found.next() else {
            return Ok(None);
        };
        let extra: Vec<String> = found.map(|i| i.id).collect();
        if !extra.is_empty() {
            warn!(worker = %request.worker.name, keep = %keep.id, ?extra, "terminating duplicate instances of one worker");
            self.call(Operation::TerminateInstances, || {
                self.api.terminate_instances(&extra)
            })
            .await?;
        }
        Ok(Some(keep))
    }
}

#[async_trait]
impl CloudProvider for Provider {
    async fn resolve_image(&self, query: &ImageQuery) -> Result<Image> {
        if let Some(image) = self.images.locked().get(query) {
            return Ok(image.clone());
        }
        let found = self.describe_image(query).await;
        if let Ok(image) = &found {
            self.images.locked().insert(query.clone(), image.clone());
        }
        found
    }

    fn launch_turn(&self, client_token: &str) -> Option<Duration> {
        self.turns.turn(client_token)
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Launched> {
        if let Some(instance) = self.adopt_existing(request).await? {
            info!(worker = %request.worker.name, instance = %instance.id, "adopted an existing instance");
            return Ok(Launched {
                instance,
                adopted: true,
            });
        }
        let spec = &request.spec;
        if spec.instance_types.is_empty() {
            return Err(ProviderError::new(
                ErrorKind::InvalidRequest,
                "RunInstances",
                "no instance type given",
            ));
        }
        self.ensure_types_offered(&spec.instance_types).await?;
        let zones = self.zones_of(&spec.subnet_ids).await?;
        let subnets: Vec<Option<&str>> = if spec.subnet_ids.is_empty() {
            vec![None]
        } else {
            spec.subnet_ids.iter().map(|s| Some(s.as_str())).collect()
        };
        let tags = request.worker.tags(&spec.extra_tags);
        let base_token = request.client_token();
        let mut last_capacity_error = None;
        let mut candidate = 0usize;
        for instance_type in &spec.instance_types {
            for subnet in &subnets {
                let zone = subnet.and_then(|s| zones.get(s)).map(String::as_str);
                let token = match candidate {
                    0 => base_token.clone(),
                    n => format!("{base_token}-{n}"),
                };
                candidate += 1;
                if self.capacity.is_exhausted(instance_type, zone) {
                    continue;
                }
                let run = RunInstance {
                    spec,
                    instance_type,
                    subnet_id: *subnet,
                    tags: &tags,
                    client_token: &token,
                };
                match self
                    .call(Operation::RunInstances, || {
                        self.api.run_instance(run.clone())
                    })
                    .await
                {
                    Ok(instance) => {
                        return Ok(Launched {
                            instance,
                            adopted: false,
                        });
                    }
                    Err(e) if e.kind == ErrorKind::InsufficientCapacity => {
                        let failed_zone = e.availability_zone.as_deref().or(zone);
                        warn!(%instance_type, zone = ?failed_zone, "no capacity; trying the next candidate");
                        self.capacity.mark_exhausted(instance_type, failed_zone);
                        last_capacity_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last_capacity_error.unwrap_or_else(|| {
            ProviderError::new(
                ErrorKind::InsufficientCapacity,
                "RunInstances",
                format!(
                    "no capacity for {} in the last {:?} (remembered); not asking again yet",
                    spec.instance_types.join(", "),
                    self.capacity.ttl()
                ),
            )
        }))
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>> {
        self.describe_chunks(ids, false).await
    }

    async fn describe_gathered(&self, take: GatheredIds<'_>) -> Result<Vec<Instance>> {
        self.limits.acquire(Operation::DescribeInstances).await;
        self.describe_chunks(&take(), true).await
    }

    async fn list_managed(&self, cluster_id: &str) -> Result<Vec<Instance>> {
        self.list(&InstanceFilter {
            tags: vec![
                (tag::MANAGED.to_owned(), "true".to_owned()),
                (tag::CLUSTER.to_owned(), cluster_id.to_owned()),
            ],
            exclude_terminated: true,
        })
        .await
    }

    async fn start(&self, id: &str) -> Result<()> {
        let ids = [id.to_owned()];
        self.call(Operation::StartInstances, || self.api.start_instances(&ids))
            .await
    }

    async fn stop(&self, id: &str) -> Result<()> {
        let ids = [id.to_owned()];
        self.call(Operation::StopInstances, || self.api.stop_instances(&ids))
            .await
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        let ids = [id.to_owned()];
        self.call(Operation::TerminateInstances, || {
            self.api.terminate_instances(&ids)
        })
        .await
    }
}

/// The ids of `asked` that an EC2 NotFound message names ("The instance IDs 'i-1, i-2' do not exist").
fn ids_named_in(message: &str, asked: &[String]) -> HashSet<String> {
    let named: HashSet<&str> = message
        .split(['\'', ',', ' ', '"'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    asked
        .iter()
        .filter(|id| named.contains(id.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ids_a_not_found_message_names() {
        let asked: Vec<String> = ["i-1", "i-2", "i-3"].map(String::from).to_vec();
        let named = ids_named_in("The instance IDs 'i-1, i-3' do not exist", &asked);
        assert_eq!(named, HashSet::from(["i-1".to_owned(), "i-3".to_owned()]));
        let named = ids_named_in("The instance ID 'i-2' does not exist", &asked);
        assert_eq!(named, HashSet::from(["i-2".to_owned()]));
        assert!(ids_named_in("something else", &asked).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_image_found_is_asked_for_again_only_after_a_while() {
        use ccm_simulator::{SimulatedCloud, SimulatedConfig};
        let config = SimulatedConfig::default();
        let id = config.images[0].id.clone();
        let p = Provider::new(Arc::new(SimulatedCloud::new(config)));
        let asked = || p.calls().of(Operation::DescribeImages);
        let by_id = ImageQuery::Id(id.clone());
        for _ in 0..3 {
            assert_eq!(p.resolve_image(&by_id).await.unwrap().id, id);
        }
        assert_eq!(asked(), 1);
        let pattern = ImageQuery::NamePattern {
            pattern: "CML-2.9.*".into(),
            owners: Vec::new(),
        };
        let newest = p.resolve_image(&pattern).await.unwrap();
        assert_eq!(p.resolve_image(&pattern).await.unwrap(), newest);
        assert_eq!(asked(), 2, "a pattern is its own query, remembered too");
        tokio::time::advance(IMAGE_TTL).await;
        p.resolve_image(&by_id).await.unwrap();
        p.resolve_image(&pattern).await.unwrap();
        assert_eq!(asked(), 4, "asked again once old");
        // A missing image is never remembered.
        let missing = ImageQuery::Id("ami-00000000000000bad".into());
        assert!(p.resolve_image(&missing).await.is_err());
        assert!(p.resolve_image(&missing).await.is_err());
        assert_eq!(asked(), 6);
        // A query no one asks any more (its template was deleted) goes.
        tokio::time::advance(IMAGE_TTL).await;
        p.resolve_image(&by_id).await.unwrap();
        assert_eq!(p.images.locked().len(), 1);
    }
}
