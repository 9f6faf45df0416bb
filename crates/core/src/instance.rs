//! What the cloud reports about an instance, in EC2's vocabulary.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

/// Life-cycle state of an instance, as EC2 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Launched or starting, not running yet.
    Pending,
    /// Running.
    Running,
    /// On its way to stopped.
    Stopping,
    /// Stopped: no compute cost, can be started again.
    Stopped,
    /// On its way to terminated.
    ShuttingDown,
    /// Terminated: gone for good.
    Terminated,
}

impl InstanceState {
    /// The state as EC2 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }

    /// Reads a state as EC2 spells it; `None` for one it does not know.
    pub fn parse(s: &str) -> Option<InstanceState> {
        Some(match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            _ => return None,
        })
    }

    /// Terminated or on its way there: never coming back.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

/// What the cloud reports about one instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// Instance id, e.g. `i-0123456789abcdef0`.
    pub id: String,
    /// Life-cycle state.
    pub state: InstanceState,
    /// Instance type it runs as.
    pub instance_type: String,
    /// Availability zone, when the cloud reports one.
    pub availability_zone: Option<String>,
    /// Private IPv4 address, if it has one.
    pub private_ip: Option<String>,
    /// Public IPv4 address, if it has one.
    pub public_ip: Option<String>,
    /// Image (AMI) it was launched from.
    pub image_id: Option<String>,
    /// When it was launched.
    pub launch_time: Option<Timestamp>,
    /// Its tags, by key.
    pub tags: BTreeMap<String, String>,
    /// Why the instance is in its state, when the cloud says (e.g. a spontaneous termination).
    pub state_reason: Option<String>,
}

impl Instance {
    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}
