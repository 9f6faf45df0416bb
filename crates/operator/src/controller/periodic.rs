//! A periodic task over the Worker cache, run only once the cache is synced: before that every
//! instance or record would look orphaned.

use std::time::Duration;

use kube::runtime::reflector::Store;
use tracing::debug;

use crate::crd::Worker;

/// Runs `task` every `interval` for as long as the caller polls this future.
pub async fn when_synced<F, Fut>(what: &str, interval: Duration, workers: &Store<Worker>, task: F)
where
    F: Fn() -> Fut,
    Fut: Future,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The store's readiness signal wakes only one waiter (the controller's own), so it is
        // re-polled on each tick instead of awaited once.
        let synced =
            tokio::time::timeout(Duration::from_millis(50), workers.wait_until_ready()).await;
        if !matches!(synced, Ok(Ok(()))) {
            debug!("{what} waits for the worker cache");
            continue;
        }
        task().await;
    }
}
