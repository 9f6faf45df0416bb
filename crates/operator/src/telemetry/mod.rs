//! What the controller tells the outside about itself: logs, metrics and the health endpoints.

pub mod http;
mod logging;
mod metrics;

pub use logging::{LogFormat, init as init_logging};
pub use metrics::{LIMIT_REASONS, Metrics, TEMPLATE_SERIES_LINGER, TemplateFigures};
