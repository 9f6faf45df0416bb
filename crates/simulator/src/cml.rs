//! A CML stand-in for workers of the simulated cloud: ready a while after its machine started
//! (or, when the cloud did not say, after it was first asked), idle, licensed. It sends nothing
//! over the network, and any process probing the same instance gets the same answer.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::time::Instant;

use ccm_ports::cml::{CmlError, CmlProbe, CmlReport, CmlTarget, LicenseReport};

pub struct SimulatedCml {
    boot: Duration,
    first_seen: Mutex<HashMap<String, Instant>>,
}

impl SimulatedCml {
    pub fn new(boot: Duration) -> SimulatedCml {
        SimulatedCml {
            boot,
            first_seen: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl CmlProbe for SimulatedCml {
    async fn probe(&self, target: &CmlTarget) -> Result<CmlReport, CmlError> {
        let ready = match target.booted_at {
            Some(booted) => {
                let up = Timestamp::now().duration_since(booted);
                !up.is_negative() && up.unsigned_abs() >= self.boot
            }
            None => {
                let now = Instant::now();
                let first = *self
                    .first_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(target.endpoint.clone())
                    .or_insert(now);
                now.duration_since(first) >= self.boot
            }
        };
        Ok(CmlReport {
            ready,
            version: Some("2.9.1+simulated".into()),
            licensed: ready.then_some(true),
            labs: ready.then_some(0),
            running_nodes: ready.then_some(0),
            license: ready.then(|| LicenseReport {
                registration: Some("COMPLETED".into()),
                authorization: Some("IN_COMPLIANCE".into()),
                // The stand-in does not know which license the template asked for.
                product: None,
                ..LicenseReport::default()
            }),
            failures: Vec::new(),
        })
    }
}
