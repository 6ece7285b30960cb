//! [`Directory`]: cached identity lookups with the two-way handle check.
//!
//! Freshness: an entry younger than its TTL (`hit_ttl` for answers, `miss_ttl` for "not found") is
//! served as is. Up to `stale_ttl` beyond that it is still served, and a refetch starts in the
//! background (stale-while-revalidate). Older entries are refetched before answering. Transient
//! failures are never cached; a stale entry outlives them.
//!
//! Concurrent lookups of the same key share one fetch (coalescing), so a burst of firehose events for
//! one new repo makes one request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use butterfly_crypto::PublicKey;
use butterfly_syntax::{AtIdentifier, Did, Handle};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use url::Url;

use crate::cache::{CacheEntry, CacheKey, CacheStore, CachedValue, MemoryCache};
use crate::did_doc::DidDocument;
use crate::resolve::Resolver;
use crate::Error;

/// How long cached lookups are trusted.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// How long an answer (a document, a handle's DID) is fresh.
    pub hit_ttl: Duration,
    /// How long a definite "not found" is fresh.
    pub miss_ttl: Duration,
    /// How long past its TTL an entry may still be served while a refetch runs in the background.
    pub stale_ttl: Duration,
    /// The least time between two forced refetches of one DID after signature failures, so a stream
    /// of forged signatures cannot turn into a stream of requests.
    pub min_refetch_interval: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            hit_ttl: Duration::from_secs(60 * 60),
            miss_ttl: Duration::from_secs(5 * 60),
            stale_ttl: Duration::from_secs(24 * 60 * 60),
            min_refetch_interval: Duration::from_secs(10),
        }
    }
}

/// An identity whose handle was checked in both directions (or found not to check out).
#[derive(Clone, Debug)]
pub struct ResolvedIdentity {
    /// The DID.
    pub did: Did,
    /// The handle the DID document claims (first `at://` of `alsoKnownAs`), or, when looked up by
    /// handle, the handle asked for. Trust it only if `handle_verified`.
    pub handle: Option<Handle>,
    /// Whether the handle resolves to this DID and the DID's document lists the handle.
    pub handle_verified: bool,
    /// The PDS endpoint from the document.
    pub pds: Option<Url>,
    /// The atproto signing key from the document.
    pub signing_key: Option<PublicKey>,
    /// The whole DID document.
    pub document: Arc<DidDocument>,
}

type SharedLookup = Shared<BoxFuture<'static, Result<CacheEntry, Error>>>;

/// The one fetch of a key under way. `id` tells it apart from a later fetch of the same key, so that a
/// fetch overtaken by `purge` neither stores its (possibly outdated) answer nor unregisters its successor.
struct InFlight {
    id: u64,
    lookup: SharedLookup,
}

struct Inner {
    resolver: Resolver,
    store: Arc<dyn CacheStore>,
    config: CacheConfig,
    in_flight: Mutex<HashMap<CacheKey, InFlight>>,
    next_fetch_id: std::sync::atomic::AtomicU64,
    last_forced_refetch: Mutex<HashMap<Did, std::time::Instant>>,
}

/// Cached, coalesced identity lookups that verify handles both ways. Cheap to clone: clones share the
/// cache. Needs a tokio runtime (background revalidation is spawned on it).
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

enum Freshness {
    Fresh,
    Stale,
    Expired,
}

impl Directory {
    /// A directory with an in-memory cache of default size.
    pub fn new(resolver: Resolver, config: CacheConfig) -> Directory {
        Directory::with_store(resolver, config, Arc::new(MemoryCache::default()))
    }

    /// A directory keeping its cache in `store`.
    pub fn with_store(
        resolver: Resolver,
        config: CacheConfig,
        store: Arc<dyn CacheStore>,
    ) -> Directory {
        Directory {
            inner: Arc::new(Inner {
                resolver,
                store,
                config,
                in_flight: Mutex::new(HashMap::new()),
                next_fetch_id: std::sync::atomic::AtomicU64::new(0),
                last_forced_refetch: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The resolver underneath (uncached lookups).
    pub fn resolver(&self) -> &Resolver {
        &self.inner.resolver
    }

    /// Resolves a DID or a handle: see [`Directory::resolve_did`] and [`Directory::resolve_handle`].
    pub async fn resolve(&self, identifier: &AtIdentifier) -> Result<ResolvedIdentity, Error> {
        match identifier {
            AtIdentifier::Did(did) => self.resolve_did(did).await,
            AtIdentifier::Handle(handle) => self.resolve_handle(handle).await,
        }
    }

    /// Resolves a DID to its document, then checks the handle the document claims: it counts as
    /// verified only if it resolves back to this DID. A handle that fails is reported with
    /// `handle_verified: false`, never trusted.
    pub async fn resolve_did(&self, did: &Did) -> Result<ResolvedIdentity, Error> {
        let document = self.did_document(did).await?;
        let handle = document.claimed_handle();
        let handle_verified = match &handle {
            Some(handle) => matches!(self.handle_did(handle).await, Ok(found) if found == *did),
            None => false,
        };
        Ok(identity(did.clone(), handle, handle_verified, document))
    }

    /// Resolves a handle to a DID, fetches the DID's document and checks that it lists the handle.
    /// A document that does not is reported with `handle_verified: false`.
    pub async fn resolve_handle(&self, handle: &Handle) -> Result<ResolvedIdentity, Error> {
        let did = self.handle_did(handle).await?;
        let document = self.did_document(&did).await?;
        let handle_verified = document.lists_handle(handle);
        Ok(identity(
            did,
            Some(handle.normalized()),
            handle_verified,
            document,
        ))
    }

    /// The DID document of `did`, from the cache when fresh enough.
    pub async fn did_document(&self, did: &Did) -> Result<Arc<DidDocument>, Error> {
        match self.lookup(CacheKey::Did(did.clone())).await?.value {
            CachedValue::Document(document) => Ok(document),
            CachedValue::Missing(error) => Err(error),
            CachedValue::HandleDid(_) => Err(Error::Network {
                message: format!("{did}: cache store returned a handle entry for a DID"),
                transient: false,
            }),
        }
    }

    /// The DID a handle points to (one direction only), from the cache when fresh enough.
    pub async fn handle_did(&self, handle: &Handle) -> Result<Did, Error> {
        match self.lookup(CacheKey::handle(handle)).await?.value {
            CachedValue::HandleDid(did) => Ok(did),
            CachedValue::Missing(error) => Err(error),
            CachedValue::Document(_) => Err(Error::Network {
                message: format!("{handle}: cache store returned a document for a handle"),
                transient: false,
            }),
        }
    }

    /// Forgets what is cached for `identifier`: for a DID, its document and the handle it claimed; for a
    /// handle, its DID. Call it when a firehose `#identity` event arrives. A lookup already in flight is
    /// detached: its callers still get its answer, but it is not cached, and the next lookup fetches
    /// anew (the answer may predate the change that caused the purge).
    pub fn purge(&self, identifier: &AtIdentifier) {
        let mut keys = Vec::new();
        match identifier {
            AtIdentifier::Did(did) => {
                let key = CacheKey::Did(did.clone());
                if let Some(CacheEntry {
                    value: CachedValue::Document(document),
                    ..
                }) = self.inner.store.get(&key)
                {
                    if let Some(handle) = document.claimed_handle() {
                        keys.push(CacheKey::handle(&handle));
                    }
                }
                keys.push(key);
            }
            AtIdentifier::Handle(handle) => keys.push(CacheKey::handle(handle)),
        }
        let mut in_flight = self.lock_in_flight();
        for key in keys {
            self.inner.store.remove(&key);
            in_flight.remove(&key);
        }
    }

    /// Verifies `signature` over `message` with the signing key of `did`. If the cached key fails, the
    /// document is refetched once (keys rotate) and the check repeated before giving up with
    /// [`Error::BadSignature`]. Forced refetches of one DID are at least `min_refetch_interval` apart.
    pub async fn verify_signature(
        &self,
        did: &Did,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Error> {
        let key = self.signing_key(did).await?;
        if key.verify(message, signature).is_ok() {
            return Ok(());
        }
        if !self.may_force_refetch(did) {
            return Err(Error::BadSignature {
                did: did.to_string(),
            });
        }
        self.purge(&AtIdentifier::Did(did.clone()));
        let fresh = self.signing_key(did).await?;
        if fresh != key && fresh.verify(message, signature).is_ok() {
            return Ok(());
        }
        Err(Error::BadSignature {
            did: did.to_string(),
        })
    }

    /// The atproto signing key of `did`, from the cache when fresh enough.
    pub async fn signing_key(&self, did: &Did) -> Result<PublicKey, Error> {
        let document = self.did_document(did).await?;
        document.signing_key()?.ok_or_else(|| Error::NoSigningKey {
            did: did.to_string(),
        })
    }

    /// The signing key of `did` after a forced refetch of its document, for when a signature made
    /// with the cached key failed. Forced refetches of one DID are at least `min_refetch_interval`
    /// apart; within that interval the cached key is returned, so forged signatures cannot turn into a
    /// flood of lookups.
    pub async fn refetch_signing_key(&self, did: &Did) -> Result<PublicKey, Error> {
        if self.may_force_refetch(did) {
            self.purge(&AtIdentifier::Did(did.clone()));
        }
        self.signing_key(did).await
    }

    fn may_force_refetch(&self, did: &Did) -> bool {
        let now = std::time::Instant::now();
        let mut last = self
            .inner
            .last_forced_refetch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.len() > 100_000 {
            let interval = self.inner.config.min_refetch_interval;
            last.retain(|_, at| now.duration_since(*at) < interval);
        }
        match last.get(did) {
            Some(at) if now.duration_since(*at) < self.inner.config.min_refetch_interval => false,
            _ => {
                last.insert(did.clone(), now);
                true
            }
        }
    }

    fn freshness(&self, entry: &CacheEntry) -> Freshness {
        let ttl = match entry.value {
            CachedValue::Missing(_) => self.inner.config.miss_ttl,
            _ => self.inner.config.hit_ttl,
        };
        // A clock that went backwards makes the entry look new; that only delays a refetch.
        let age = SystemTime::now()
            .duration_since(entry.fetched_at)
            .unwrap_or_default();
        if age < ttl {
            Freshness::Fresh
        } else if age < ttl + self.inner.config.stale_ttl {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    async fn lookup(&self, key: CacheKey) -> Result<CacheEntry, Error> {
        if let Some(entry) = self.inner.store.get(&key) {
            match self.freshness(&entry) {
                Freshness::Fresh => return Ok(entry),
                Freshness::Stale => {
                    // Only the caller that starts the refetch drives it; later ones just serve.
                    let (refetch, started) = self.fetch_shared(key);
                    if started {
                        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                            runtime.spawn(async move {
                                let _ = refetch.await;
                            });
                        }
                    }
                    return Ok(entry);
                }
                Freshness::Expired => {}
            }
        }
        self.fetch_shared(key).0.await
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, InFlight>> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins the fetch of `key` under way, or starts one (then `true`). When done, a fetch that is still
    /// the registered one stores its answer and unregisters, under the same lock `purge` takes.
    fn fetch_shared(&self, key: CacheKey) -> (SharedLookup, bool) {
        let mut in_flight = self.lock_in_flight();
        if let Some(existing) = in_flight.get(&key) {
            return (existing.lookup.clone(), false);
        }
        let id = self
            .inner
            .next_fetch_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let directory = self.clone();
        let fetch_key = key.clone();
        let lookup = async move {
            let result = directory.fetch(&fetch_key).await;
            let mut in_flight = directory.lock_in_flight();
            if in_flight
                .get(&fetch_key)
                .is_some_and(|current| current.id == id)
            {
                in_flight.remove(&fetch_key);
                if let Ok(entry) = &result {
                    directory.inner.store.put(fetch_key, entry.clone());
                }
            }
            result
        }
        .boxed()
        .shared();
        in_flight.insert(
            key,
            InFlight {
                id,
                lookup: lookup.clone(),
            },
        );
        (lookup, true)
    }

    /// One uncached lookup; definite misses become [`CachedValue::Missing`], other failures errors.
    async fn fetch(&self, key: &CacheKey) -> Result<CacheEntry, Error> {
        let fetched = match key {
            CacheKey::Did(did) => self
                .inner
                .resolver
                .fetch_did_document(did)
                .await
                .map(|document| CachedValue::Document(Arc::new(document))),
            CacheKey::Handle(handle) => self
                .inner
                .resolver
                .fetch_handle_did(handle)
                .await
                .map(CachedValue::HandleDid),
        };
        let value = match fetched {
            Ok(value) => value,
            Err(error) if error.is_not_found() => CachedValue::Missing(error),
            Err(error) => {
                tracing::debug!(?key, %error, "identity lookup failed");
                return Err(error);
            }
        };
        Ok(CacheEntry {
            value,
            fetched_at: SystemTime::now(),
        })
    }
}

fn identity(
    did: Did,
    handle: Option<Handle>,
    handle_verified: bool,
    document: Arc<DidDocument>,
) -> ResolvedIdentity {
    ResolvedIdentity {
        pds: document.pds_endpoint(),
        // A broken key is reported as absent here; `Directory::signing_key` gives the error.
        signing_key: document.signing_key().ok().flatten(),
        did,
        handle,
        handle_verified,
        document,
    }
}
