//! Retries the record removals a remote did not take (`Remotes::retry_removals`) every second
//! while any wait, so a Worker deleted during an outage leaves no record within a second of
//! the remote's return, not a sweep interval later.

use std::{sync::Arc, time::Duration};

use tracing::info;

use super::Context;

/// How often waiting removals are tried: one request per second to a remote still down.
const EVERY: Duration = Duration::from_secs(1);

pub async fn run(ctx: Arc<Context>) {
    if ctx.remotes.is_empty() {
        return;
    }
    loop {
        tokio::time::sleep(EVERY).await;
        if ctx.remotes.pending_removals() == 0 {
            continue;
        }
        let done = ctx.remotes.retry_removals().await;
        if done > 0 {
            info!(
                removed = done,
                waiting = ctx.remotes.pending_removals(),
                "records of deleted workers removed after a remote came back"
            );
        }
    }
}
