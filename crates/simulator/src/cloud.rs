//! An in-process cloud with EC2's semantics, for the local demo, tests and scale benchmarks.
//!
//! Instances go pending -> running after a boot delay, stop and start, terminate, carry tags and
//! honour ClientToken. The server side enforces EC2's request buckets by answering
//! `RequestLimitExceeded`, and faults can be injected: no capacity for a type (in a zone), a
//! launch failure rate, an instance vanishing. With a state file its instances outlive the
//! process, and two processes on one machine share them (see `journal.rs`).

mod faults_file;
mod journal;

use faults_file::FaultsFile;
pub use faults_file::InjectedFaults;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::time::Instant;

use ccm_ports::cloud::{
    ErrorKind, Image, ImageQuery, Instance, InstanceState, ProviderError, Result,
    api::{
        CloudApi, InstanceFilter, MAX_IDS_PER_DESCRIBE, MAX_RESULTS_PER_PAGE, Page, RunInstance,
    },
    glob,
    ratelimit::{Ec2Limits, Operation, RateLimits},
    tag,
};

/// How the simulated cloud behaves.
#[derive(Clone, Debug)]
pub struct SimulatedConfig {
    pub region: String,
    /// pending -> running, also after a start.
    pub boot_delay: Duration,
    /// stopping -> stopped.
    pub stop_delay: Duration,
    /// shutting-down -> terminated.
    pub terminate_delay: Duration,
    /// Subnet id -> availability zone.
    pub subnets: BTreeMap<String, String>,
    /// Instance types on offer.
    pub instance_types: Vec<String>,
    pub images: Vec<Image>,
    /// Enforce the account's request buckets server-side.
    pub throttle: bool,
    /// The account's request limits (raised ones too), as EC2 would enforce them.
    pub limits: Ec2Limits,
    /// Keep the instances in this file (a journal), so they outlive the process.
    pub state_file: Option<std::path::PathBuf>,
    /// Read injected faults from this file ([`InjectedFaults`] as JSON) while it exists.
    pub faults_file: Option<std::path::PathBuf>,
    /// Give instances private addresses on the loopback network (127.0.0.0/8), one each, so a
    /// test can serve a CML for every instance on its own address.
    pub loopback_addresses: bool,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        let region = "us-east-1".to_owned();
        SimulatedConfig {
            subnets: ["a", "b", "c"]
                .iter()
                .enumerate()
                .map(|(i, z)| {
                    (
                        format!("subnet-0000000{i}0000000{i}"),
                        format!("{region}{z}"),
                    )
                })
                .collect(),
            region,
            boot_delay: Duration::from_secs(3),
            stop_delay: Duration::from_secs(2),
            terminate_delay: Duration::from_secs(2),
            instance_types: [
                "m5zn.metal",
                "m5zn.12xlarge",
                "m6i.metal",
                "c5.metal",
                "c5.24xlarge",
                "m5.xlarge",
                "t3.medium",
            ]
            .map(String::from)
            .to_vec(),
            images: vec![
                Image {
                    id: "ami-0c0a1b2c3d4e5f601".into(),
                    name: Some("CML-2.8.1-build-14".into()),
                    creation_date: Some("2025-03-01T10:00:00.000Z".into()),
                    root_device_name: Some("/dev/sda1".into()),
                },
                Image {
                    id: "ami-0c0a1b2c3d4e5f602".into(),
                    name: Some("CML-2.9.0-build-7".into()),
                    creation_date: Some("2025-09-15T10:00:00.000Z".into()),
                    root_device_name: Some("/dev/sda1".into()),
                },
                Image {
                    id: "ami-0abcdef1234567890".into(),
                    name: Some("CML-2.9.1-build-3".into()),
                    creation_date: Some("2026-01-20T10:00:00.000Z".into()),
                    root_device_name: Some("/dev/sda1".into()),
                },
            ],
            throttle: true,
            limits: Ec2Limits::default(),
            state_file: None,
            loopback_addresses: false,
            faults_file: None,
        }
    }
}

#[derive(Debug)]
struct SimInstance {
    instance: Instance,
    /// The state the instance moves to, and when.
    next: Option<(InstanceState, Instant)>,
}

#[derive(Debug, Default)]
struct Faults {
    /// (type, zone): no capacity; a `None` zone means every zone.
    no_capacity: HashSet<(String, Option<String>)>,
    launch_failure_rate: f64,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, SimInstance>,
    /// Instance ids by their worker-uid tag (tags never change here), so the lookup every
    /// launch makes does not scan the whole fleet, as EC2's own filters would not.
    by_worker_uid: HashMap<String, BTreeSet<String>>,
    tokens: HashMap<String, String>,
    launched: u64,
    faults: Faults,
    journal: Option<journal::Journal>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("instances", &self.instances.len())
            .field("launched", &self.launched)
            .field("state_file", &self.journal.as_ref().map(|j| j.path()))
            .finish()
    }
}

impl State {
    /// Takes in what other processes wrote to the state file since last time.
    fn catch_up(&mut self) -> std::io::Result<()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let records = match journal.read_new()? {
            journal::Replay::Reset(records) => {
                self.instances.clear();
                self.by_worker_uid.clear();
                self.tokens.clear();
                self.launched = 0;
                records
            }
            journal::Replay::Added(records) => records,
        };
        for record in records {
            let Some(sim) = record.instance() else {
                continue;
            };
            if let Some(token) = record.token() {
                self.tokens
                    .insert(token.to_owned(), sim.instance.id.clone());
            }
            self.launched = self.launched.max(record.launched());
            self.insert(sim);
        }
        Ok(())
    }

    fn insert(&mut self, sim: SimInstance) {
        if let Some(uid) = sim.instance.tag(tag::WORKER_UID) {
            self.by_worker_uid
                .entry(uid.to_owned())
                .or_default()
                .insert(sim.instance.id.clone());
        }
        self.instances.insert(sim.instance.id.clone(), sim);
    }

    /// Writes the instances `ids` to the state file (with the token that launched `token.1`).
    fn persist(&mut self, ids: &[String], token: Option<(&str, &str)>) -> std::io::Result<()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let records: Vec<journal::Record> = ids
            .iter()
            .filter_map(|id| self.instances.get(id))
            .map(|sim| {
                let token = token
                    .filter(|(_, of)| *of == sim.instance.id)
                    .map(|(t, _)| t);
                journal::Record::new(sim, token, self.launched)
            })
            .collect();
        journal.append(&records)?;
        if journal.worth_compacting(self.instances.len()) {
            let by_id: HashMap<&str, &str> = self
                .tokens
                .iter()
                .map(|(t, id)| (id.as_str(), t.as_str()))
                .collect();
            let all: Vec<journal::Record> = self
                .instances
                .values()
                .map(|sim| {
                    journal::Record::new(
                        sim,
                        by_id.get(sim.instance.id.as_str()).copied(),
                        self.launched,
                    )
                })
                .collect();
            journal.compact(&all)?;
        }
        Ok(())
    }
}

/// The state of one call: the in-process lock and, with a state file, the file lock.
struct Session<'a> {
    state: std::sync::MutexGuard<'a, State>,
    _file: Option<journal::Locked>,
}

impl std::ops::Deref for Session<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Session<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

fn state_file_error(op: Operation, e: &std::io::Error) -> ProviderError {
    ProviderError::new(
        ErrorKind::Transient,
        op.as_str(),
        format!("simulated cloud state file: {e}"),
    )
}

/// The simulated cloud.
#[derive(Debug)]
pub struct SimulatedCloud {
    config: SimulatedConfig,
    limits: RateLimits,
    state: Mutex<State>,
    throttled: AtomicU64,
    faults_file: Option<FaultsFile>,
}

impl SimulatedCloud {
    /// A cloud in memory only.
    pub fn new(config: SimulatedConfig) -> SimulatedCloud {
        SimulatedCloud {
            limits: RateLimits::new(&config.limits),
            faults_file: config.faults_file.clone().map(FaultsFile::new),
            config,
            state: Mutex::new(State::default()),
            throttled: AtomicU64::new(0),
        }
    }

    /// A cloud kept in `config.state_file` when set: fails if the file cannot be opened.
    pub fn open(config: SimulatedConfig) -> std::io::Result<SimulatedCloud> {
        let journal = match &config.state_file {
            Some(path) => Some(journal::Journal::open(path)?),
            None => None,
        };
        let cloud = SimulatedCloud::new(config);
        {
            let mut state = cloud.state();
            state.journal = journal;
            let _file = match state.journal.as_ref() {
                Some(j) => Some(j.lock()?),
                None => None,
            };
            state.catch_up()?;
        }
        Ok(cloud)
    }

    /// Answers RunInstances for `instance_type` (in `zone`, or anywhere) with InsufficientInstanceCapacity.
    pub fn fail_capacity(&self, instance_type: &str, zone: Option<&str>) {
        self.state()
            .faults
            .no_capacity
            .insert((instance_type.to_owned(), zone.map(str::to_owned)));
    }

    /// Lets capacity for `instance_type` come back everywhere.
    pub fn restore_capacity(&self, instance_type: &str) {
        self.state()
            .faults
            .no_capacity
            .retain(|(t, _)| t != instance_type);
    }

    /// Fails this share (0.0 to 1.0) of launches with an internal error.
    pub fn set_launch_failure_rate(&self, rate: f64) {
        self.state().faults.launch_failure_rate = rate.clamp(0.0, 1.0);
    }

    /// The instance disappears as if someone terminated it behind our back.
    pub fn vanish(&self, id: &str) -> bool {
        let Ok(mut state) = self.session(Operation::TerminateInstances) else {
            return false;
        };
        match state.instances.get_mut(id) {
            Some(sim) => {
                sim.instance.state = InstanceState::Terminated;
                sim.instance.state_reason =
                    Some("Client.UserInitiatedShutdown: terminated outside the controller".into());
                sim.next = None;
                state.persist(&[id.to_owned()], None).is_ok()
            }
            None => false,
        }
    }

    /// How many calls were answered `RequestLimitExceeded`.
    pub fn throttled_calls(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Instances launched (not adopted or repeated by token) so far.
    pub fn launched(&self) -> u64 {
        self.state().launched
    }

    /// Every instance as the cloud (and its state file) has it now, terminated ones too: what a
    /// test watching the cloud from outside the controller sees, with no throttle or fault.
    pub fn instances(&self) -> std::io::Result<Vec<Instance>> {
        let state = self
            .session(Operation::DescribeInstances)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(state
            .instances
            .values()
            .map(|s| s.instance.clone())
            .collect())
    }

    /// The private address of the `n`th instance launched: in a private network, or on the
    /// loopback network (`127.a.b.1`, never shared) when configured so.
    fn private_address(&self, n: u64) -> String {
        if self.config.loopback_addresses {
            format!("127.{}.{}.1", (n >> 8) % 255 + 1, n % 256)
        } else {
            format!("10.{}.{}.{}", 16 + (n >> 16) % 16, (n >> 8) % 256, n % 256)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a call through the server-side bucket and the injected faults, then brings every
    /// instance up to date.
    fn admit(&self, op: Operation) -> Result<Session<'_>> {
        let injected = self.injected();
        let throttled = self.config.throttle && self.limits.try_acquire(op).is_err();
        if throttled || roll(injected.throttle_rate) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(ProviderError::from_code(
                op.as_str(),
                "RequestLimitExceeded",
                "Request limit exceeded.",
            ));
        }
        if roll(injected.server_error_rate) {
            return Err(ProviderError::from_code(
                op.as_str(),
                "InternalError",
                "An internal error has occurred (simulated).",
            ));
        }
        self.session(op)
    }

    /// The faults the faults file asks for now (none without one).
    fn injected(&self) -> InjectedFaults {
        self.faults_file
            .as_ref()
            .map(FaultsFile::current)
            .unwrap_or_default()
    }

    /// Locks the state (and the state file), reads what others wrote, and brings every instance
    /// up to date.
    fn session(&self, op: Operation) -> Result<Session<'_>> {
        let mut state = self.state();
        let file = match state.journal.as_ref() {
            Some(j) => Some(j.lock().map_err(|e| state_file_error(op, &e))?),
            None => None,
        };
        state.catch_up().map_err(|e| state_file_error(op, &e))?;
        let mut state = Session { state, _file: file };
        let now = Instant::now();
        for sim in state.instances.values_mut() {
            if let Some((target, at)) = sim.next
                && at <= now
            {
                sim.instance.state = target;
                sim.next = None;
                if target == InstanceState::Stopped || target == InstanceState::Terminated {
                    sim.instance.public_ip = None;
                }
            }
        }
        Ok(state)
    }

    fn not_found(op: Operation, missing: &[&String]) -> ProviderError {
        let ids = missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (noun, verb) = if missing.len() == 1 {
            ("ID", "does")
        } else {
            ("IDs", "do")
        };
        ProviderError::from_code(
            op.as_str(),
            "InvalidInstanceID.NotFound",
            format!("The instance {noun} '{ids}' {verb} not exist"),
        )
    }

    /// Fails with EC2's NotFound, naming them, if any of `ids` is unknown.
    fn all_known(state: &State, op: Operation, ids: &[String]) -> Result<()> {
        let missing: Vec<&String> = ids
            .iter()
            .filter(|id| !state.instances.contains_key(*id))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Self::not_found(op, &missing))
        }
    }

    /// Applies `change` to each instance, failing with NotFound first if any id is unknown.
    fn transition(
        &self,
        op: Operation,
        ids: &[String],
        change: impl Fn(&mut SimInstance, Instant),
    ) -> Result<()> {
        let mut state = self.admit(op)?;
        Self::all_known(&state, op, ids)?;
        let now = Instant::now();
        for id in ids {
            if let Some(sim) = state.instances.get_mut(id) {
                change(sim, now);
            }
        }
        state
            .persist(ids, None)
            .map_err(|e| state_file_error(op, &e))
    }
}

#[async_trait]
impl CloudApi for SimulatedCloud {
    fn region(&self) -> &str {
        &self.config.region
    }

    async fn run_instance(&self, request: RunInstance<'_>) -> Result<Instance> {
        let op = Operation::RunInstances;
        let mut state = self.admit(op)?;
        if let Some(existing) = state.tokens.get(request.client_token)
            && let Some(sim) = state.instances.get(existing)
        {
            return Ok(sim.instance.clone());
        }
        if !self
            .config
            .instance_types
            .iter()
            .any(|t| t == request.instance_type)
        {
            return Err(ProviderError::from_code(
                op.as_str(),
                "InvalidParameterValue",
                format!(
                    "Invalid value '{}' for InstanceType.",
                    request.instance_type
                ),
            ));
        }
        if !self
            .config
            .images
            .iter()
            .any(|i| i.id == request.spec.image_id)
        {
            return Err(ProviderError::from_code(
                op.as_str(),
                "InvalidAMIID.NotFound",
                format!("The image id '[{}]' does not exist", request.spec.image_id),
            ));
        }
        let zone = match request.subnet_id {
            Some(subnet) => self.config.subnets.get(subnet).cloned().ok_or_else(|| {
                ProviderError::from_code(
                    op.as_str(),
                    "InvalidSubnetID.NotFound",
                    format!("The subnet ID '{subnet}' does not exist"),
                )
            })?,
            None => format!("{}a", self.config.region),
        };
        let faults = &state.faults;
        let file_says_none = self
            .injected()
            .no_capacity
            .iter()
            .any(|t| t == request.instance_type);
        if file_says_none
            || faults
                .no_capacity
                .contains(&(request.instance_type.to_owned(), None))
            || faults
                .no_capacity
                .contains(&(request.instance_type.to_owned(), Some(zone.clone())))
        {
            return Err(ProviderError::from_code(
                op.as_str(),
                "InsufficientInstanceCapacity",
                format!(
                    "We currently do not have sufficient {} capacity in the Availability Zone you requested ({zone}).",
                    request.instance_type
                ),
            ));
        }
        if faults.launch_failure_rate > 0.0 && fastrand::f64() < faults.launch_failure_rate {
            return Err(ProviderError::from_code(
                op.as_str(),
                "InternalError",
                "An internal error has occurred (simulated launch failure).",
            ));
        }
        state.launched += 1;
        let n = state.launched;
        let id = format!("i-{:017x}", 0x5100_0000_0000u64 + n);
        let instance = Instance {
            id: id.clone(),
            state: InstanceState::Pending,
            instance_type: request.instance_type.to_owned(),
            availability_zone: Some(zone),
            private_ip: Some(self.private_address(n)),
            public_ip: request
                .spec
                .public_ip
                .then(|| format!("198.51.100.{}", n % 254 + 1)),
            image_id: Some(request.spec.image_id.clone()),
            launch_time: Some(Timestamp::now()),
            tags: request.tags.clone(),
            state_reason: None,
        };
        state
            .tokens
            .insert(request.client_token.to_owned(), id.clone());
        state.insert(SimInstance {
            instance: instance.clone(),
            next: Some((
                InstanceState::Running,
                Instant::now() + self.config.boot_delay,
            )),
        });
        state
            .persist(
                std::slice::from_ref(&id),
                Some((request.client_token, id.as_str())),
            )
            .map_err(|e| state_file_error(op, &e))?;
        Ok(instance)
    }

    async fn describe_instances(&self, ids: &[String]) -> Result<Vec<Instance>> {
        let op = Operation::DescribeInstances;
        if ids.len() > MAX_IDS_PER_DESCRIBE {
            return Err(ProviderError::from_code(
                op.as_str(),
                "InvalidParameterValue",
                "too many instance ids",
            ));
        }
        let state = self.admit(op)?;
        Self::all_known(&state, op, ids)?;
        Ok(ids
            .iter()
            .filter_map(|id| state.instances.get(id))
            .map(|s| s.instance.clone())
            .collect())
    }

    async fn list_instances(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>> {
        let state = self.admit(Operation::DescribeInstances)?;
        let after = next_token.unwrap_or_default();
        let by_uid = filter
            .tags
            .iter()
            .find(|(k, _)| k == tag::WORKER_UID)
            .map(|(_, uid)| state.by_worker_uid.get(uid));
        let candidates: Box<dyn Iterator<Item = (&String, &SimInstance)>> = match by_uid {
            Some(ids) => Box::new(
                ids.into_iter()
                    .flat_map(|ids| ids.range(after.clone()..))
                    .filter_map(|id| state.instances.get_key_value(id)),
            ),
            None => Box::new(state.instances.range(after.clone()..)),
        };
        let mut items = Vec::new();
        let mut next = None;
        for (id, sim) in candidates {
            if *id == after {
                continue;
            }
            let i = &sim.instance;
            let tags_match = filter.tags.iter().all(|(k, v)| i.tags.get(k) == Some(v));
            if !tags_match || (filter.exclude_terminated && i.state == InstanceState::Terminated) {
                continue;
            }
            if items.len() == usize::try_from(MAX_RESULTS_PER_PAGE).unwrap_or(1000) {
                next = items.last().map(|last: &Instance| last.id.clone());
                break;
            }
            items.push(i.clone());
        }
        Ok(Page {
            items,
            next_token: next,
        })
    }

    async fn start_instances(&self, ids: &[String]) -> Result<()> {
        let boot = self.config.boot_delay;
        self.transition(Operation::StartInstances, ids, |sim, now| {
            if sim.instance.state == InstanceState::Stopped {
                sim.instance.state = InstanceState::Pending;
                // As EC2 does: LaunchTime is the last start.
                sim.instance.launch_time = Some(Timestamp::now());
                sim.next = Some((InstanceState::Running, now + boot));
            }
        })
    }

    async fn stop_instances(&self, ids: &[String]) -> Result<()> {
        let delay = self.config.stop_delay;
        self.transition(Operation::StopInstances, ids, |sim, now| {
            if matches!(
                sim.instance.state,
                InstanceState::Pending | InstanceState::Running
            ) {
                sim.instance.state = InstanceState::Stopping;
                sim.next = Some((InstanceState::Stopped, now + delay));
            }
        })
    }

    async fn terminate_instances(&self, ids: &[String]) -> Result<()> {
        let delay = self.config.terminate_delay;
        self.transition(Operation::TerminateInstances, ids, |sim, now| {
            if !sim.instance.state.is_gone() {
                sim.instance.state = InstanceState::ShuttingDown;
                sim.next = Some((InstanceState::Terminated, now + delay));
            }
        })
    }

    async fn describe_images(&self, query: &ImageQuery) -> Result<Vec<Image>> {
        let _state = self.admit(Operation::DescribeImages)?;
        let images = &self.config.images;
        Ok(match query {
            ImageQuery::Id(id) => images.iter().filter(|i| &i.id == id).cloned().collect(),
            ImageQuery::NamePattern { pattern, .. } => images
                .iter()
                .filter(|i| i.name.as_deref().is_some_and(|n| glob::matches(pattern, n)))
                .cloned()
                .collect(),
        })
    }

    async fn check_instance_types(&self, types: &[String]) -> Result<()> {
        let _state = self.admit(Operation::DescribeInstanceTypes)?;
        let unknown: Vec<&str> = types
            .iter()
            .filter(|t| !self.config.instance_types.contains(t))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::from_code(
                Operation::DescribeInstanceTypes.as_str(),
                "InvalidInstanceType",
                format!(
                    "The following supplied instance types do not exist: [{}]",
                    unknown.join(", ")
                ),
            ))
        }
    }

    async fn subnet_zones(&self, subnet_ids: &[String]) -> Result<HashMap<String, String>> {
        let _state = self.admit(Operation::DescribeSubnets)?;
        let mut out = HashMap::new();
        for id in subnet_ids {
            let zone = self.config.subnets.get(id).ok_or_else(|| {
                ProviderError::new(
                    ErrorKind::NotFound,
                    Operation::DescribeSubnets.as_str(),
                    format!("The subnet ID '{id}' does not exist"),
                )
                .with_code("InvalidSubnetID.NotFound")
            })?;
            out.insert(id.clone(), zone.clone());
        }
        Ok(out)
    }
}

/// True with probability `rate` (0 to 1).
fn roll(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}
