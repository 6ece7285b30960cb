//! Where `Directory` keeps lookups between calls: the [`CacheStore`] trait and an in-memory store.
//!
//! The store only keeps entries with the time they were fetched; the directory decides what is fresh,
//! stale or expired (see `CacheConfig`). That keeps the trait small enough for the engine to back it
//! with its own database later.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use butterfly_syntax::{Did, Handle};

use crate::did_doc::DidDocument;
use crate::Error;

/// What is cached: a DID's document, or a handle's DID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// A DID document lookup.
    Did(Did),
    /// A handle lookup, by normalized (lowercase) handle.
    Handle(Handle),
}

impl CacheKey {
    /// The key for a handle lookup (normalizes the handle).
    pub fn handle(handle: &Handle) -> CacheKey {
        CacheKey::Handle(handle.normalized())
    }
}

/// A cached answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachedValue {
    /// A DID document.
    Document(Arc<DidDocument>),
    /// The DID a handle points to (one direction only: the directory checks the other).
    HandleDid(Did),
    /// A definite negative answer (not found, deactivated), cached for the miss TTL.
    Missing(Error),
}

/// A cached answer and when it was fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The answer.
    pub value: CachedValue,
    /// When it was fetched (wall clock, so that a persistent store keeps meaning across restarts).
    pub fetched_at: SystemTime,
}

/// Storage for cached lookups. Implementations must be cheap and must not block for long: they are
/// called on every lookup.
pub trait CacheStore: Send + Sync {
    /// The entry for `key`, however old.
    fn get(&self, key: &CacheKey) -> Option<CacheEntry>;
    /// Stores or replaces the entry for `key`.
    fn put(&self, key: CacheKey, entry: CacheEntry);
    /// Forgets `key`.
    fn remove(&self, key: &CacheKey);
}

/// An in-memory [`CacheStore`] holding at most `capacity` entries. When full, the oldest-fetched eighth
/// is dropped, so the cost of eviction is spread over many inserts.
#[derive(Debug)]
pub struct MemoryCache {
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
    capacity: usize,
}

impl MemoryCache {
    /// A cache of at most `capacity` entries (at least 8).
    pub fn new(capacity: usize) -> MemoryCache {
        MemoryCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(8),
        }
    }

    /// The number of entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, CacheEntry>> {
        // A panic while holding this lock cannot leave the map half-updated, so poisoning is ignored.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCache::new(100_000)
    }
}

impl CacheStore for MemoryCache {
    fn get(&self, key: &CacheKey) -> Option<CacheEntry> {
        self.lock().get(key).cloned()
    }

    fn put(&self, key: CacheKey, entry: CacheEntry) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let mut ages: Vec<SystemTime> =
                entries.values().map(|entry| entry.fetched_at).collect();
            let cut = (self.capacity / 8).max(1);
            ages.select_nth_unstable(cut - 1);
            let threshold = ages[cut - 1];
            entries.retain(|_, entry| entry.fetched_at > threshold);
        }
        entries.insert(key, entry);
    }

    fn remove(&self, key: &CacheKey) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn evicts_the_oldest_when_full() {
        let cache = MemoryCache::new(16);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..40u64 {
            let did = Did::parse(&format!("did:web:host{i}.example.com")).expect("test DID");
            cache.put(
                CacheKey::Did(did),
                CacheEntry {
                    value: CachedValue::Missing(Error::DidNotFound { did: i.to_string() }),
                    fetched_at: start + Duration::from_secs(i),
                },
            );
            assert!(cache.len() <= 16);
        }
        let newest = Did::parse("did:web:host39.example.com").expect("test DID");
        assert!(cache.get(&CacheKey::Did(newest)).is_some());
        let oldest = Did::parse("did:web:host0.example.com").expect("test DID");
        assert!(cache.get(&CacheKey::Did(oldest)).is_none());
    }
}
