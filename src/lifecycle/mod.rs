//! Pure decision logic: no I/O, fed with plain observed values, unit-tested exhaustively.

pub mod autoscale;
pub mod worker;
