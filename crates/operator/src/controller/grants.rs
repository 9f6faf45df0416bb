//! Slots this process granted (a license seat, an instance under the cap) that the Worker cache
//! may not show yet: counted with what the cache shows, so two reconciles never both take the
//! last one. A grant is forgotten when released, or after a minute (the cache shows it by then).

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

use crate::lock::Locked;

/// How long a grant is remembered while the cache catches up.
const MEMORY: Duration = Duration::from_secs(60);

/// Grants by Worker UID, each in a pool (e.g. a product license).
#[derive(Default)]
pub struct Grants {
    granted: Mutex<HashMap<String, (String, Instant)>>,
}

impl Grants {
    /// Grants `uid` a slot of `pool` unless `limit` holders already have one: `seen` (from the
    /// cache) plus this pool's fresh grants, counted and granted under one lock. `Err` with the
    /// count when full.
    pub fn grant(
        &self,
        pool: &str,
        uid: &str,
        mut seen: BTreeSet<String>,
        limit: u32,
    ) -> Result<(), u32> {
        let mut granted = self.granted.locked();
        granted.retain(|_, (_, at)| at.elapsed() < MEMORY);
        seen.extend(
            granted
                .iter()
                .filter(|(_, (p, _))| p == pool)
                .map(|(u, _)| u.clone()),
        );
        if seen.contains(uid) {
            return Ok(());
        }
        let count = u32::try_from(seen.len()).unwrap_or(u32::MAX);
        if count >= limit {
            return Err(count);
        }
        granted.insert(uid.to_owned(), (pool.to_owned(), Instant::now()));
        Ok(())
    }

    /// The UIDs granted a slot of `pool` recently.
    pub fn pending(&self, pool: &str) -> BTreeSet<String> {
        let mut granted = self.granted.locked();
        granted.retain(|_, (_, at)| at.elapsed() < MEMORY);
        granted
            .iter()
            .filter(|(_, (p, _))| p == pool)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Forgets `uid`'s grant: its slot is free, or the Worker is gone.
    pub fn release(&self, uid: &str) {
        self.granted.locked().remove(uid);
    }
}
