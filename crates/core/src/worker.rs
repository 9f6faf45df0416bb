//! The states a worker is asked to be in and the phases it passes through.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The state an operator or the autoscaler asks a worker to be in.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DesiredState {
    /// Serving labs.
    #[default]
    Running,
    /// Taking no new labs; stops or goes away once the running ones end.
    Draining,
    /// Instance stopped: no compute cost, quick to start again.
    Stopped,
}

/// Where a worker is in its life.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::VariantArray,
    strum::IntoStaticStr,
)]
pub enum WorkerPhase {
    /// Accepted, no instance yet.
    Pending,
    /// Instance launched; waiting for EC2 `running` and the CML API to report ready.
    Provisioning,
    /// Ready and accepting labs.
    Running,
    /// Taking no new labs, waiting for running ones to end.
    Draining,
    /// Instance stopping.
    Stopping,
    /// Instance stopped.
    Stopped,
    /// Stopped instance starting again.
    Starting,
    /// Instance being terminated before the object goes.
    Terminating,
    /// Launch or readiness timed out, or the instance vanished.
    Failed,
}

impl WorkerPhase {
    /// Every value, in the order a worker's life goes through them (the declaration order):
    /// derived, so a new variant is in it.
    pub const ALL: &'static [WorkerPhase] = <WorkerPhase as strum::VariantArray>::VARIANTS;

    /// The phase as status and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
