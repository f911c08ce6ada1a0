//! Rate limits as token buckets: so many a second, with a burst; and one bucket per key (a
//! source address, a destination IP) in a table of bounded size.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up. It starts full; tokens
/// are fractional, so slow rates stay exact.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes `n` tokens if there are that many at `now`.
    pub fn take(&mut self, now: Instant, n: f64) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens even if that leaves the bucket in debt, for a cost that is known only
    /// once it is paid (a message already read); returns when the debt is repaid (`None`: no
    /// debt), the time to wait before spending again.
    pub fn take_into_debt(&mut self, now: Instant, n: f64) -> Option<Instant> {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            return None;
        }
        let wait = Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX);
        Some(
            now.checked_add(wait)
                .unwrap_or(now + Duration::from_secs(86_400)),
        )
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        // A `now` from the past refills nothing, and does not make the next refill bigger.
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }
}

/// One [`TokenBucket`] per key, for at most `capacity` keys: past that, the key first seen
/// longest ago is forgotten (and starts full if it comes back), so a flood of new keys makes
/// the table forgetful, never bigger.
#[derive(Clone, Debug)]
pub struct KeyedBuckets<K> {
    rate: f64,
    burst: f64,
    capacity: usize,
    buckets: BTreeMap<K, TokenBucket>,
    order: VecDeque<K>,
}

impl<K: Ord + Clone> KeyedBuckets<K> {
    /// Buckets of `rate` a second and `burst`, for at most `capacity` keys (at least 1).
    pub fn new(rate: f64, burst: f64, capacity: usize) -> KeyedBuckets<K> {
        KeyedBuckets {
            rate,
            burst,
            capacity: capacity.max(1),
            buckets: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Takes `n` tokens from `key`'s bucket if it has them at `now`.
    pub fn take(&mut self, now: Instant, key: &K, n: f64) -> bool {
        if !self.buckets.contains_key(key) {
            while self.buckets.len() >= self.capacity {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.buckets.remove(&old);
            }
            self.buckets
                .insert(key.clone(), TokenBucket::new(self.rate, self.burst));
            self.order.push_back(key.clone());
        }
        self.buckets.get_mut(key).is_some_and(|b| b.take(now, n))
    }

    /// Keys with a bucket now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The part of an address that one host or site can't choose freely: the whole IPv4 address,
/// or the /64 of an IPv6 one (a site is handed a /64 and may use every address in it).
pub fn source_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0);
        assert!((0..5).all(|_| b.take(t0, 1.0)));
        assert!(!b.take(t0, 1.0));
        assert!(b.take(t0 + Duration::from_millis(100), 1.0));
        assert!(!b.take(t0 + Duration::from_millis(100), 1.0));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later, 1.0)).count(), 5);
    }

    #[test]
    fn a_debt_is_repaid_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 500.0);
        assert_eq!(b.take_into_debt(t0, 500.0), None);
        assert_eq!(
            b.take_into_debt(t0, 250.0),
            Some(t0 + Duration::from_millis(250))
        );
        assert!(
            !b.take(t0 + Duration::from_millis(200), 1.0),
            "still in debt"
        );
        assert_eq!(b.take_into_debt(t0 + Duration::from_millis(250), 0.0), None);
    }

    #[test]
    fn time_going_back_refills_nothing() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut b = TokenBucket::new(1.0, 1.0);
        assert!(b.take(t1, 1.0));
        assert!(!b.take(t0, 1.0));
        assert!(
            !b.take(t1, 1.0),
            "the step back did not move the refill's start"
        );
    }

    #[test]
    fn keyed_buckets_are_separate_and_bounded() {
        let t0 = Instant::now();
        let mut k = KeyedBuckets::new(1.0, 2.0, 3);
        assert!(k.take(t0, &1, 1.0) && k.take(t0, &1, 1.0));
        assert!(!k.take(t0, &1, 1.0), "1 spent its burst");
        assert!(k.take(t0, &2, 2.0), "2 has its own");
        for key in 3..1000 {
            k.take(t0, &key, 1.0);
        }
        assert_eq!(k.len(), 3);
    }

    #[test]
    fn an_ipv6_site_is_one_source() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_prefix(a), source_prefix(b));
        assert_ne!(source_prefix(a), source_prefix(c));
        let v4: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(source_prefix(v4), v4);
    }
}
