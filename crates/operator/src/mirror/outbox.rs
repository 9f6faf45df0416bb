//! Scaling audit records on their way to the Control Plane API: kept in order while it is down,
//! delivered one at a time (each with a stable idempotency id, so a repeat is harmless), and
//! bounded: past the bound the oldest record is dropped and counted.

use crate::lock::Locked;
use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use tracing::warn;

use crate::{backoff::Backoff, control_plane::ControlPlaneClient, control_plane::ScalingEvent};

pub struct Outbox {
    queue: Mutex<VecDeque<ScalingEvent>>,
    bound: usize,
    dropped: AtomicU64,
    delivered: AtomicU64,
    wake: Notify,
}

impl Outbox {
    pub fn new(bound: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            bound: bound.max(1),
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<ScalingEvent>> {
        self.queue.locked()
    }

    pub fn push(&self, event: ScalingEvent) {
        {
            let mut queue = self.queue();
            if queue.len() >= self.bound
                && let Some(old) = queue.pop_front()
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(id = %old.id, bound = self.bound, "audit outbox full: dropped its oldest record");
            }
            queue.push_back(event);
        }
        self.wake.notify_one();
    }

    /// Records dropped because the bound was hit.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn pending(&self) -> usize {
        self.queue().len()
    }

    /// Delivers records in order for as long as it is polled; a failed post is retried (the same
    /// record, first) after a backoff.
    pub async fn deliver(&self, cp: &ControlPlaneClient, backoff: Backoff, deadline: Duration) {
        let mut failures = 0u32;
        loop {
            let next = self.queue().front().cloned();
            let Some(event) = next else {
                self.wake.notified().await;
                continue;
            };
            let posted = tokio::time::timeout(deadline, cp.post_scaling_event(&event)).await;
            match posted {
                Ok(Ok(())) => {
                    failures = 0;
                    let mut queue = self.queue();
                    if queue.front().is_some_and(|e| e.id == event.id) {
                        queue.pop_front();
                    }
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    warn!(id = %event.id, error = %why, pending = self.pending(), "audit record not delivered; will retry");
                    tokio::time::sleep(backoff.delay(failures)).await;
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> ScalingEvent {
        ScalingEvent {
            id: id.into(),
            action: "create".into(),
            worker: None,
            template: "ns/t".into(),
            reason: "demand".into(),
            triggered_by: "demand".into(),
            time: "2026-11-27T07:00:00Z".into(),
        }
    }

    #[test]
    fn past_its_bound_the_oldest_record_is_dropped_and_counted() {
        let outbox = Outbox::new(2);
        for id in ["a", "b", "c"] {
            outbox.push(event(id));
        }
        assert_eq!(outbox.dropped(), 1);
        let ids: Vec<String> = outbox.queue().iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids, vec!["b", "c"]);
    }
}
