//! The CML API on each worker: the HTTP client of [`ccm_ports::cml::CmlProbe`].

pub mod flags;
mod http;
pub mod trust;

pub use ccm_ports::cml::*;
pub use http::HttpCml;
