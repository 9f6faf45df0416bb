//! A simulated cloud and CML: in-process stand-ins with EC2's and CML's semantics (boot delays,
//! throttling, injectable faults), for tests, benchmarks, the dev environment and capacity
//! planning. Not the product: the `resource-controller` binary includes them only when built
//! with its `simulator` feature.

pub mod cloud;
pub mod cml;

pub use cloud::{InjectedFaults, SimulatedCloud, SimulatedConfig};
pub use cml::SimulatedCml;
