//! The reconnect schedule: exponential, capped, jittered, reset by a healthy connection.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::BackoffConfig;

/// Counts consecutive failed or short-lived connections and turns the count into a wait.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    failures: u32,
    random: u64,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        // A per-process random seed from the standard library's hasher keys: jitter only needs to
        // differ between clients, not to be unpredictable.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x9e37_79b9_7f4a_7c15);
        Backoff {
            config,
            failures: 0,
            random: hasher.finish() | 1,
        }
    }

    /// Restarts the schedule: the connection that just ended delivered events, so the server is
    /// working and a cut is worth retrying at once (it may cut every few hundred events).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait before the next attempt. `connected_for` is how long the connection that just ended
    /// lasted (`None` when connecting failed); one that lasted `reset_after` restarts the schedule.
    pub(crate) fn next_delay(&mut self, connected_for: Option<Duration>) -> Duration {
        if connected_for.is_some_and(|lasted| lasted >= self.config.reset_after) {
            self.failures = 0;
        }
        let factor = 1u32 << self.failures.min(24);
        let ceiling = self
            .config
            .initial
            .saturating_mul(factor)
            .min(self.config.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = match spread.checked_add(1) {
            Some(modulus) => self.next_random() % modulus,
            None => self.next_random(),
        };
        half + Duration::from_nanos(jitter)
    }

    /// xorshift64: small, fast, good enough for jitter.
    fn next_random(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets_after_a_healthy_connection() {
        let mut backoff = Backoff::new(config());
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let delay = backoff.next_delay(None);
            ceilings.push(delay);
        }
        let expected = [1u64, 2, 4, 8, 16, 32, 60, 60, 60, 60];
        for (delay, ceiling) in ceilings.iter().zip(expected) {
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "{delay:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        // A short connection does not reset the schedule; a long one does.
        assert!(backoff.next_delay(Some(Duration::from_secs(1))) >= Duration::from_secs(30));
        assert!(backoff.next_delay(Some(Duration::from_secs(31))) <= Duration::from_secs(1));
        assert!(backoff.next_delay(None) <= Duration::from_secs(2));
    }

    #[test]
    fn jitter_varies() {
        let mut backoff = Backoff::new(BackoffConfig {
            max: Duration::from_secs(1),
            ..config()
        });
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| backoff.next_delay(None)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn zero_waits_stay_zero() {
        let mut backoff = Backoff::new(BackoffConfig {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            reset_after: Duration::ZERO,
        });
        assert_eq!(backoff.next_delay(None), Duration::ZERO);
    }
}
