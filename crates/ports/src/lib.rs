//! The interfaces through which the resource controller reaches the outside world it drives: a
//! cloud ([`cloud::api::CloudApi`]) and the CML API on each worker ([`cml::CmlProbe`]), with the
//! values that cross them. The operator's EC2 and HTTP clients implement them, and so does the
//! simulator; nothing here talks to a network.

pub mod cloud;
pub mod cml;
