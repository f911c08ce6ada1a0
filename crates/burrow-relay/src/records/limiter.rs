//! Token buckets per source IP and per key, for the registry's rate limits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

/// One bucket; fractional tokens so slow rates stay exact.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by `K`, all with the same rate and burst. Full buckets are forgotten by
/// [`RateLimiter::prune`], so memory follows the number of recently active keys.
pub(crate) struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash> RateLimiter<K> {
    /// `rate` tokens per second up to `burst`; a rate of 0 (or less) means unlimited.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    fn unlimited(&self) -> bool {
        self.rate <= 0.0
    }

    /// Takes a token for `key` at `now`; false if its bucket is empty.
    pub(crate) fn allow(&self, key: K, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        let mut buckets = self.buckets.lock().expect("lock");
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have refilled by `now`: they behave exactly like new ones.
    pub(crate) fn prune(&self, now: Instant) {
        if self.unlimited() {
            return;
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.lock().expect("lock").retain(|_, b| {
            let dt = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + dt * rate < burst
        });
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.buckets.lock().expect("lock").len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let l = RateLimiter::new(2.0, 3);
        assert!((0..3).all(|_| l.allow(1, t0)));
        assert!(!l.allow(1, t0));
        // Another key has its own bucket.
        assert!(l.allow(2, t0));
        assert!(!l.allow(1, t0 + Duration::from_millis(400)));
        assert!(l.allow(1, t0 + Duration::from_millis(500)));
        assert!(!l.allow(1, t0 + Duration::from_millis(500)));

        assert_eq!(l.tracked(), 2);
        l.prune(t0 + Duration::from_millis(300));
        assert_eq!(l.tracked(), 2);
        l.prune(t0 + Duration::from_secs(10));
        assert_eq!(l.tracked(), 0);

        let free = RateLimiter::new(0.0, 1);
        assert!((0..1000).all(|_| free.allow(1, t0)));
    }
}
