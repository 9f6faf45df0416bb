//! A map whose entries lapse: the caches of clients, logins and images, which would otherwise
//! keep an entry for every worker or template that ever existed.

use std::{collections::HashMap, hash::Hash, time::Duration};

use tokio::time::Instant;

/// Entries older than `ttl` are never returned, and are dropped at the next insert.
#[derive(Debug)]
pub struct Expiring<K, V> {
    ttl: Duration,
    entries: HashMap<K, (V, Instant)>,
}

impl<K: Eq + Hash, V> Expiring<K, V> {
    pub fn new(ttl: Duration) -> Expiring<K, V> {
        Expiring {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// The value, while it is younger than the ttl.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(value, _)| value)
    }

    /// The value, while it is younger than the ttl; using it restarts its clock, so only what
    /// goes unused for a ttl lapses.
    pub fn touch(&mut self, key: &K) -> Option<&V> {
        let ttl = self.ttl;
        let (value, at) = self
            .entries
            .get_mut(key)
            .filter(|(_, at)| at.elapsed() < ttl)?;
        *at = Instant::now();
        Some(value)
    }

    /// Stores `value`, and drops every entry that lapsed.
    pub fn insert(&mut self, key: K, value: V) {
        let ttl = self.ttl;
        self.entries.retain(|_, (_, at)| at.elapsed() < ttl);
        self.entries.insert(key, (value, Instant::now()));
    }

    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Entries held, lapsed ones included until the next insert.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_entry_lapses_after_its_ttl_and_goes_at_the_next_insert() {
        let mut map = Expiring::new(Duration::from_secs(60));
        map.insert("a", 1);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(map.get(&"a"), Some(&1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(map.get(&"a"), None);
        assert_eq!(map.len(), 1);
        map.insert("b", 2);
        assert_eq!(map.len(), 1, "the lapsed entry is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_in_use_does_not_lapse() {
        let mut map = Expiring::new(Duration::from_secs(60));
        map.insert("a", 1);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(50)).await;
            assert_eq!(map.touch(&"a"), Some(&1));
        }
        assert_eq!(map.get(&"a"), Some(&1));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(map.touch(&"a"), None);
    }
}
