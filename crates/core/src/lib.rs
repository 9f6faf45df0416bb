//! The resource controller's decisions, as pure functions of plain values: the Worker phase
//! machine and the autoscaler's planner. No I/O and no clock: the operator observes, calls these,
//! and acts on what they return; the simulator and the capacity planner call the same functions.

pub mod duration;
pub mod instance;
pub mod lead_time;
pub mod license;
pub mod licensing;
pub mod phase_machine;
pub mod planner;
pub mod scaling_schedule;
pub mod units;
pub mod worker;

pub use duration::{DURATION_PATTERN, GoDuration, ParseDurationError};
pub use instance::{Instance, InstanceState};
pub use license::License;
pub use licensing::SeatState;
pub use worker::{DesiredState, WorkerPhase};
