//! Capacity planning: a schedule of lab bookings replayed through the autoscaler's planner (the
//! same function the controller runs) in simulated time, with boot durations drawn from
//! distributions, beside a clairvoyant lower bound. Pure and seeded: the same inputs give the
//! same figures.

pub mod boot;
pub mod bound;
mod fleet;
pub mod outcome;
pub mod picture;
mod placement;
pub mod reference;
pub mod replay;
pub mod schedule;
pub mod sweep;

pub use boot::{Durations, Spread};
pub use outcome::Outcome;
pub use replay::{Settings, Template, replay, replay_with_progress};
pub use schedule::{Booking, ScheduleError};
