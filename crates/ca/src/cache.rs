//! A bounded cache of ready server configs, one per host and ALPN set.
//!
//! Every new TLS client connection asks for a config, and most go to a host seen before, so
//! minting is done once per host. The cache is bounded (a proxy left running for days may see
//! many hosts) and evicts the least recently used entry. Entries close to expiry count as
//! missing, so a long-running proxy re-mints before clients would see an expired certificate.
//!
//! Lookups hold a `std::sync::Mutex` only for a hash-map operation; minting happens outside the
//! lock, so concurrent handshakes for different hosts do not wait on each other's signing.

use crate::host::CertHost;
use rustls::ServerConfig;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::{Duration, OffsetDateTime};

/// How many configs the CA keeps by default.
pub(crate) const DEFAULT_CAPACITY: usize = 4096;

/// Entries whose certificate expires sooner than this are minted again.
pub(crate) const RENEW_BEFORE: Duration = Duration::days(1);

/// What a config is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    pub host: CertHost,
    pub alpn: Vec<Vec<u8>>,
}

struct Entry {
    config: Arc<ServerConfig>,
    not_after: OffsetDateTime,
}

impl Entry {
    fn is_fresh(&self, now: OffsetDateTime) -> bool {
        self.not_after - now > RENEW_BEFORE
    }
}

/// Thread-safe cache of server configs.
pub(crate) struct ConfigCache {
    lru: Mutex<Lru<CacheKey, Entry>>,
}

impl ConfigCache {
    pub(crate) fn new(capacity: usize) -> ConfigCache {
        ConfigCache {
            lru: Mutex::new(Lru::new(capacity)),
        }
    }

    /// The cached config for `key`, unless there is none or its certificate is about to expire.
    pub(crate) fn get(&self, key: &CacheKey, now: OffsetDateTime) -> Option<Arc<ServerConfig>> {
        let mut lru = self.lock();
        match lru.get(key) {
            Some(entry) if entry.is_fresh(now) => Some(entry.config.clone()),
            Some(_) => {
                lru.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `config` for `key` and returns it, or, if another thread cached a fresh config for
    /// the same key meanwhile, returns that one (so every caller shares one config per key).
    pub(crate) fn insert(
        &self,
        key: CacheKey,
        config: Arc<ServerConfig>,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Arc<ServerConfig> {
        let mut lru = self.lock();
        if let Some(existing) = lru.get(&key) {
            if existing.is_fresh(now) {
                return existing.config.clone();
            }
        }
        lru.insert(
            key,
            Entry {
                config: config.clone(),
                not_after,
            },
        );
        config
    }

    /// How many configs are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Lru<CacheKey, Entry>> {
        // Every operation leaves the map consistent (nothing in here panics halfway), so a
        // poisoned lock still guards a usable cache.
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A least-recently-used map: a hash map for lookups plus an index of entries by last use.
pub(crate) struct Lru<K, V> {
    capacity: usize,
    map: HashMap<K, (V, u64)>,
    by_use: BTreeMap<u64, K>,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `capacity` entries (at least one).
    pub(crate) fn new(capacity: usize) -> Lru<K, V> {
        Lru {
            capacity: capacity.max(1),
            map: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
        }
    }

    /// The value for `key`, marking it as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let (value, used) = self.map.get_mut(key)?;
        if let Some(k) = self.by_use.remove(used) {
            self.by_use.insert(self.clock, k);
        }
        *used = self.clock;
        Some(value)
    }

    /// Inserts or replaces `key`, then evicts the least recently used entries beyond capacity.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        self.clock += 1;
        if let Some((_, used)) = self.map.insert(key.clone(), (value, self.clock)) {
            self.by_use.remove(&used);
        }
        self.by_use.insert(self.clock, key);
        while self.map.len() > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &K) {
        if let Some((_, used)) = self.map.remove(key) {
            self.by_use.remove(&used);
        }
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(3);
        lru.insert("a", 1);
        lru.insert("b", 2);
        lru.insert("c", 3);
        assert_eq!(lru.get(&"a"), Some(&1)); // a is now the newest; b the oldest
        lru.insert("d", 4);
        assert_eq!(lru.len(), 3);
        assert_eq!(lru.get(&"b"), None);
        assert_eq!(lru.get(&"a"), Some(&1));
        assert_eq!(lru.get(&"c"), Some(&3));
        assert_eq!(lru.get(&"d"), Some(&4));
    }

    #[test]
    fn stays_bounded_and_consistent() {
        let mut lru = Lru::new(8);
        for i in 0..1000u32 {
            lru.insert(i, i * 2);
            if i % 3 == 0 {
                lru.get(&(i / 2));
            }
            if i % 7 == 6 {
                lru.remove(&(i - 1));
            }
            assert!(lru.len() <= 8);
            assert_eq!(lru.map.len(), lru.by_use.len(), "index out of step at {i}");
        }
        assert_eq!(lru.get(&999), Some(&1998));
        assert_eq!(lru.get(&0), None);
    }

    #[test]
    fn replacing_a_key_keeps_one_entry() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("a", 2);
        lru.insert("b", 3);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.get(&"a"), Some(&2));
        assert_eq!(lru.get(&"b"), Some(&3));
    }

    #[test]
    fn capacity_zero_still_holds_one() {
        let mut lru = Lru::new(0);
        lru.insert("a", 1);
        assert_eq!(lru.get(&"a"), Some(&1));
        lru.insert("b", 2);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get(&"b"), Some(&2));
    }
}
