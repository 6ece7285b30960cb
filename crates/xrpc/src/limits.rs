//! Per-host limits: how many requests may be in flight, how fast new ones may start, and whether the
//! host told us to stay away for a while.
//!
//! A [`HostLimits`] is a registry with one entry per origin (`scheme://host:port`). Clones share the
//! registry, so every [`XrpcClient`](crate::XrpcClient) built with the same `HostLimits` counts against
//! the same per-host budget: an engine holding one client per PDS for thousands of repos still keeps
//! one limiter per host. Before each request (first attempts and retries alike) a client:
//! 1. takes one of the host's concurrency permits, held until the response body is read or, for a
//!    streamed body, until the stream is dropped;
//! 2. waits out a block the host imposed (`Retry-After`, or `ratelimit-remaining: 0` until
//!    `ratelimit-reset`), or fails with [`Error::RateLimited`](crate::Error::RateLimited) if that is
//!    longer than [`RetryPolicy::max_wait`](crate::RetryPolicy::max_wait);
//! 3. takes a token from the host's token bucket, if a [`RateLimit`] is configured, sleeping until one
//!    is due.
//!
//! Entries are never removed; each costs a few hundred bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::retry::RateLimitInfo;

/// A token bucket: `per_second` requests on average, with bursts of up to `burst`.
///
/// Values are clamped to sane minimums when a host is first seen: at least one request per thousand
/// seconds, and a burst of at least 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests that may start back to back after a quiet period.
    pub burst: u32,
}

/// The budget each host gets. `Default`: 8 requests in flight per host and no rate limit of our own
/// (the server's `ratelimit-*` headers and 429s still slow the client down).
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsConfig {
    /// Requests in flight per host at most (at least 1).
    pub max_concurrent: usize,
    /// Our own rate limit per host, if any.
    pub rate: Option<RateLimit>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent: 8,
            rate: None,
        }
    }
}

/// A cloneable, shared registry of per-host limits. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct HostLimits {
    registry: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    config: LimitsConfig,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits::new(LimitsConfig::default())
    }
}

impl HostLimits {
    /// A new, empty registry; every host it meets gets `config`.
    pub fn new(config: LimitsConfig) -> HostLimits {
        HostLimits {
            registry: Arc::new(Registry {
                config,
                hosts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The budget each host gets.
    pub fn config(&self) -> &LimitsConfig {
        &self.registry.config
    }

    /// The limiter of `url`'s origin, created on first use.
    pub(crate) fn host(&self, url: &Url) -> Arc<Host> {
        let key = url.origin().ascii_serialization();
        let mut hosts = lock(&self.registry.hosts);
        hosts
            .entry(key)
            .or_insert_with(|| Arc::new(Host::new(&self.registry.config)))
            .clone()
    }

    fn existing_host(&self, url: &Url) -> Option<Arc<Host>> {
        let key = url.origin().ascii_serialization();
        lock(&self.registry.hosts).get(&key).cloned()
    }

    /// The `ratelimit-*` headers last seen from `url`'s origin.
    pub fn rate_limit_info(&self, url: &Url) -> Option<RateLimitInfo> {
        self.existing_host(url)
            .and_then(|host| lock(&host.state).info.clone())
    }

    /// How long `url`'s origin has asked us to stay away, from now; `None` if it has not (or the time
    /// has passed). A scheduler can use it to work on other hosts meanwhile.
    pub fn blocked_for(&self, url: &Url) -> Option<Duration> {
        self.existing_host(url)
            .and_then(|host| host.blocked_for(Instant::now()))
    }

    /// How many hosts the registry has met.
    pub fn n_hosts(&self) -> usize {
        lock(&self.registry.hosts).len()
    }
}

/// The poisoned case only happens if a thread panicked while holding the lock; the data (counters and
/// instants) is still consistent, so it is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The longest a host is blocked for, whatever it asked: a `Retry-After` of 10^20 seconds must still
/// block the host rather than overflow the clock and be dropped.
const MAX_BLOCK: Duration = Duration::from_secs(365 * 24 * 3600);

/// One host's limiter.
#[derive(Debug)]
pub(crate) struct Host {
    permits: Arc<Semaphore>,
    bucket: Option<Mutex<TokenBucket>>,
    state: Mutex<HostState>,
}

#[derive(Debug, Default)]
struct HostState {
    blocked_until: Option<Instant>,
    info: Option<RateLimitInfo>,
}

impl Host {
    fn new(config: &LimitsConfig) -> Host {
        Host {
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            bucket: config
                .rate
                .map(|rate| Mutex::new(TokenBucket::new(rate, Instant::now()))),
            state: Mutex::new(HostState::default()),
        }
    }

    /// Waits until a request may start. `Err(wait)` when the host has blocked us for longer than
    /// `max_wait`. Cancel-safe: dropping the future gives back the permit (a token already taken from
    /// the bucket is spent).
    pub(crate) async fn admit(&self, max_wait: Duration) -> Result<OwnedSemaphorePermit, Duration> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("host semaphores are never closed");
        // The block may be extended while we sleep (another response said so), hence the loop.
        while let Some(wait) = self.blocked_for(Instant::now()) {
            if wait > max_wait {
                return Err(wait);
            }
            tokio::time::sleep(wait).await;
        }
        if let Some(bucket) = &self.bucket {
            let wait = lock(bucket).reserve(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(permit)
    }

    fn blocked_for(&self, now: Instant) -> Option<Duration> {
        let until = lock(&self.state).blocked_until?;
        let wait = until.saturating_duration_since(now);
        (!wait.is_zero()).then_some(wait)
    }

    /// Keeps every request to this host waiting for `wait` from now, at most [`MAX_BLOCK`] (never
    /// shortens a block).
    pub(crate) fn block_for(&self, wait: Duration) {
        let now = Instant::now();
        let until = now
            .checked_add(wait.min(MAX_BLOCK))
            .expect("a year from now is a valid instant");
        let mut state = lock(&self.state);
        if state.blocked_until.is_none_or(|current| current < until) {
            state.blocked_until = Some(until);
        }
    }

    /// Records a response's `ratelimit-*` headers; if the budget is used up, blocks the host until it
    /// resets and returns that wait.
    pub(crate) fn observe(&self, info: Option<RateLimitInfo>, now: SystemTime) -> Option<Duration> {
        let info = info?;
        let exhausted = info.exhausted_for(now);
        lock(&self.state).info = Some(info);
        if let Some(wait) = exhausted {
            self.block_for(wait);
        }
        exhausted
    }
}

/// The classic token bucket, in debt form: taking a token always succeeds, and a negative balance says
/// how long the taker must wait for its turn. So waiters queue up in order without a timer task.
#[derive(Debug)]
struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: RateLimit, now: Instant) -> TokenBucket {
        let burst = f64::from(rate.burst.max(1));
        TokenBucket {
            per_second: rate.per_second.max(0.001),
            burst,
            tokens: burst,
            updated: now,
        }
    }

    /// Takes a token; returns how long to wait before using it.
    fn reserve(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = self.updated.max(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_spaces_requests() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_second: 2.0,
                burst: 3,
            },
            start,
        );
        let waits: Vec<Duration> = (0..6).map(|_| bucket.reserve(start)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(500), ms(1000), ms(1500)]);
        // Two seconds later four tokens have come back, three of which repay the debt.
        assert_eq!(bucket.reserve(start + ms(2000)), ms(0));
        assert_eq!(bucket.reserve(start + ms(2000)), ms(500));
        // A long quiet period refills only up to the burst.
        let later = start + Duration::from_secs(100);
        let waits: Vec<Duration> = (0..4).map(|_| bucket.reserve(later)).collect();
        assert_eq!(waits, [ms(0), ms(0), ms(0), ms(500)]);
    }

    #[test]
    fn registry_shares_hosts_between_clones() {
        let limits = HostLimits::default();
        let clone = limits.clone();
        let a = Url::parse("https://pds.example.com/xrpc/a").expect("valid url");
        let b = Url::parse("https://pds.example.com:443/other").expect("valid url");
        let c = Url::parse("http://pds.example.com/").expect("valid url");
        assert!(Arc::ptr_eq(&limits.host(&a), &clone.host(&b)));
        assert!(!Arc::ptr_eq(&limits.host(&a), &clone.host(&c)));
        assert_eq!(limits.n_hosts(), 2);
    }

    #[test]
    fn blocks_only_grow_and_ratelimit_headers_block() {
        let limits = HostLimits::default();
        let url = Url::parse("https://pds.example.com/").expect("valid url");
        let host = limits.host(&url);
        assert_eq!(limits.blocked_for(&url), None);
        host.block_for(Duration::from_secs(30));
        host.block_for(Duration::from_secs(5));
        let wait = limits.blocked_for(&url).expect("blocked");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        // A wait too long for the clock still blocks, up to the cap.
        host.block_for(Duration::MAX);
        let wait = limits.blocked_for(&url).expect("blocked");
        assert!(wait > MAX_BLOCK - Duration::from_secs(5) && wait <= MAX_BLOCK);

        let other = Url::parse("https://other.example.com/").expect("valid url");
        let host = limits.host(&other);
        let now = SystemTime::now();
        let info = RateLimitInfo {
            remaining: Some(0),
            reset: Some(now + Duration::from_secs(40)),
            ..RateLimitInfo::default()
        };
        assert_eq!(
            host.observe(Some(info.clone()), now),
            Some(Duration::from_secs(40))
        );
        assert_eq!(limits.rate_limit_info(&other), Some(info));
        assert!(limits.blocked_for(&other).expect("blocked") > Duration::from_secs(35));
    }
}
