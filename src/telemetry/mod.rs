//! What the controller tells the outside about itself: metrics and the health endpoints.

pub mod http;
mod metrics;

pub use metrics::Metrics;
