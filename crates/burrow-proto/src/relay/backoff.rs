//! When to try a relay again: exponential backoff with jitter, the relay's own
//! "restarting, come back in N ms" notice, and a much slower schedule after the relay replaced
//! the connection with a newer one for the same key (another node is using it).
//!
//! Jitter spreads the reconnects of many clients of one relay over time, so a restarted relay
//! is not hit by all of them at once. Its randomness comes from a seed, as every core's does,
//! so the same seed gives the same schedule.
//!
//! Not a poll-driven core (see the crate's calling convention): it sends nothing and owns no
//! timer. Its inputs are how connections ended and its one output is a delay, which the driver
//! asks for when a connection ends and then sleeps; so it is a small calculator with state.

use std::time::{Duration, Instant};

use crate::Rng;

/// How the delay is randomised.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Jitter {
    /// "Full jitter": uniform in `[0, min(max, initial * 2^attempt)]`.
    Full,
    /// "Decorrelated jitter": uniform in `[initial, min(max, previous * 3)]`.
    Decorrelated,
}

/// Backoff parameters.
#[derive(Clone, Debug)]
pub struct BackoffConfig {
    /// The base of the first delay.
    pub initial: Duration,
    /// No delay is ever longer than this (a restart notice's wait is clamped to it too).
    pub max: Duration,
    /// How the delay is randomised.
    pub jitter: Jitter,
    /// After a restart notice, the wait it asks for plus up to this much at random.
    pub restart_spread: Duration,
    /// While inside a restart notice's window (`reconnect_in + try_for`), retries are at most
    /// this far apart, so a relay that comes back is found again quickly.
    pub restart_retry_max: Duration,
    /// A restart notice's `try_for` is clamped to this, so a hostile relay cannot keep the
    /// client in fast-retry mode forever.
    pub restart_window_max: Duration,
    /// After the relay closed the connection because a newer one authenticated the same key
    /// (close code 4001, [`CLOSE_REPLACED`](super::server_conn::CLOSE_REPLACED)), the first
    /// wait's ceiling. It doubles with each replacement in a row, up to `replaced_max`, and a
    /// wait is never under half its ceiling: another node holds this key, and coming back at
    /// once would only evict it in turn.
    pub replaced_initial: Duration,
    /// The longest wait after a replacement. A connection that stays up longer than this
    /// ends a streak of replacements: nobody took its place meanwhile.
    pub replaced_max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            jitter: Jitter::Full,
            restart_spread: Duration::from_millis(250),
            restart_retry_max: Duration::from_millis(500),
            restart_window_max: Duration::from_secs(120),
            replaced_initial: Duration::from_secs(5),
            replaced_max: Duration::from_secs(120),
        }
    }
}

/// The backoff state of one relay.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    rng: Rng,
    /// Failed attempts since the last success.
    attempt: u32,
    /// The previous delay (decorrelated jitter grows from it).
    prev: Duration,
    /// The wait a restart notice asked for; the next delay honours it.
    notice: Option<Duration>,
    /// Until then, retries are capped at `restart_retry_max`.
    restart_window_end: Option<Instant>,
    /// Replacements in a row (see [`Backoff::replaced`]).
    replaced: u32,
    /// The last connection ended in a replacement: the next delay is a replaced wait.
    replaced_pending: bool,
}

/// A uniformly distributed value in `[lo, hi]` from 64 random bits.
fn uniform(lo: Duration, hi: Duration, rand: u64) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_nanos();
    // 128-bit multiply-shift, scaled so that u64::MAX reaches `hi` itself.
    let offset = span.saturating_mul(u128::from(rand) + 1) >> 64;
    lo + Duration::from_nanos(offset.min(u128::from(u64::MAX)) as u64)
}

impl Backoff {
    /// A fresh backoff: the first delay is the shortest. `seed` feeds the jitter (the driver
    /// passes a fresh random one, so clients spread out).
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            prev: config.initial,
            config,
            rng: Rng::new(seed),
            attempt: 0,
            notice: None,
            restart_window_end: None,
            replaced: 0,
            replaced_pending: false,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Failed attempts since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A connection succeeded and stayed up: start again from the shortest delay. A pending
    /// restart notice is kept (it is about the next disconnect).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.prev = self.config.initial;
    }

    /// The relay announced a restart: the next delay is `reconnect_in` (clamped to `max`) plus
    /// a random spread, and until `reconnect_in + try_for` has passed retries stay fast.
    pub fn restart_notice(&mut self, reconnect_in: Duration, try_for: Duration, now: Instant) {
        let wait = reconnect_in.min(self.config.max);
        let window = wait + try_for.min(self.config.restart_window_max);
        self.notice = Some(wait);
        // checked_add: an Instant far in the future could overflow; then skip the window.
        self.restart_window_end = now.checked_add(window);
        self.reset();
    }

    /// The relay closed a connection that had been up for `up_for` because a newer connection
    /// authenticated the same key. The next delay is a replaced wait (see
    /// [`BackoffConfig::replaced_initial`]), longer with each replacement in a row. Returns
    /// true if this one starts a streak: the moment to tell the user, once, that another node
    /// is using this key.
    pub fn replaced(&mut self, up_for: Duration) -> bool {
        if up_for > self.config.replaced_max {
            self.replaced = 0;
        }
        self.replaced = self.replaced.saturating_add(1);
        self.replaced_pending = true;
        self.replaced == 1
    }

    /// The delay before the next attempt, after a failed attempt or a lost connection.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        let rand = self.rng.next_u64();
        self.delay_with(now, rand)
    }

    /// [`Backoff::next_delay`] with `rand` as its 64 random bits (tests choose them, to reach
    /// the ends of each range).
    fn delay_with(&mut self, now: Instant, rand: u64) -> Duration {
        if std::mem::take(&mut self.replaced_pending) {
            // Neither `max` nor a restart window shortens it: a fast retry is the fight itself.
            let c = &self.config;
            let ceiling = c
                .replaced_initial
                .checked_mul(1u32 << (self.replaced - 1).min(20))
                .unwrap_or(c.replaced_max)
                .min(c.replaced_max);
            return uniform(ceiling / 2, ceiling, rand);
        }
        if let Some(wait) = self.notice.take() {
            return wait + uniform(Duration::ZERO, self.config.restart_spread, rand);
        }
        let c = &self.config;
        let delay = match c.jitter {
            Jitter::Full => {
                let ceiling = c
                    .initial
                    .checked_mul(1u32 << self.attempt.min(20))
                    .unwrap_or(c.max)
                    .min(c.max);
                uniform(Duration::ZERO, ceiling, rand)
            }
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3).min(c.max);
                uniform(c.initial.min(c.max), hi, rand)
            }
        };
        self.attempt = self.attempt.saturating_add(1);
        self.prev = delay.max(c.initial);
        match self.restart_window_end {
            Some(end) if now < end => delay.min(c.restart_retry_max),
            _ => {
                self.restart_window_end = None;
                delay
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn uniform_covers_the_range() {
        assert_eq!(uniform(ms(10), ms(20), 0), ms(10));
        assert!(uniform(ms(10), ms(20), u64::MAX) <= ms(20));
        assert!(uniform(ms(10), ms(20), u64::MAX) > ms(19));
        assert_eq!(uniform(ms(10), ms(20), 1 << 63), ms(15));
        assert_eq!(uniform(ms(30), ms(20), 5), ms(30));
    }

    #[test]
    fn full_jitter_grows_exponentially_up_to_max() {
        let now = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), 0);
        // With the largest random value the delay is the ceiling itself.
        let ceilings: Vec<_> = (0..10).map(|_| b.delay_with(now, u64::MAX)).collect();
        for (i, want) in [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
            .into_iter()
            .enumerate()
        {
            let got = ceilings[i];
            assert!(got <= ms(want) && got + ms(1) >= ms(want), "{i}: {got:?}");
        }
        assert_eq!(b.attempt(), 10);
        // With the smallest, it is zero: full jitter may retry at once.
        assert_eq!(b.delay_with(now, 0), Duration::ZERO);
        b.reset();
        assert!(b.delay_with(now, u64::MAX) <= ms(200));
    }

    #[test]
    fn full_jitter_spreads_clients_out() {
        let now = Instant::now();
        let delays: Vec<_> = (0..1000)
            .map(|seed| {
                let mut b = Backoff::new(BackoffConfig::default(), seed);
                b.delay_with(now, 0);
                b.delay_with(now, 0);
                b.next_delay(now) // third attempt: uniform in [0, 800ms]
            })
            .collect();
        assert!(delays.iter().all(|d| *d <= ms(800)));
        let mean = delays.iter().sum::<Duration>() / 1000;
        assert!(mean > ms(350) && mean < ms(450), "{mean:?}");
        let early = delays.iter().filter(|d| **d < ms(200)).count();
        assert!((150..350).contains(&early), "{early}");
    }

    #[test]
    fn decorrelated_jitter_stays_between_initial_and_max() {
        let now = Instant::now();
        let mut b = Backoff::new(
            BackoffConfig {
                jitter: Jitter::Decorrelated,
                ..Default::default()
            },
            7,
        );
        let mut prev = ms(200);
        for _ in 0..200 {
            let d = b.next_delay(now);
            assert!(d >= ms(200) && d <= ms(10_000), "{d:?}");
            assert!(d <= prev * 3, "{d:?} after {prev:?}");
            prev = d;
        }
        // Always taking the top value reaches max quickly and stays there.
        let mut b = Backoff::new(b.config().clone(), 7);
        let top: Vec<_> = (0..8).map(|_| b.delay_with(now, u64::MAX)).collect();
        assert!(top[0] > ms(599) && top[0] <= ms(600));
        assert_eq!(top[7], ms(10_000));
    }

    #[test]
    fn restart_notice_is_honoured_then_retries_stay_fast() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), 0);
        for _ in 0..6 {
            b.delay_with(t0, u64::MAX); // grown to seconds
        }
        b.restart_notice(ms(1000), ms(5000), t0);
        // The first wait is the notice's, plus at most the spread.
        assert_eq!(b.delay_with(t0, 0), ms(1000));
        b.restart_notice(ms(1000), ms(5000), t0);
        let d = b.delay_with(t0, u64::MAX);
        assert!(d > ms(1249) && d <= ms(1250), "{d:?}");
        // Failures inside the window retry at most restart_retry_max apart.
        for i in 0..20 {
            let d = b.delay_with(t0 + ms(1000 + i * 200), u64::MAX);
            assert!(d <= ms(500), "{d:?}");
        }
        // After the window, normal (grown) backoff resumes.
        assert_eq!(b.delay_with(t0 + ms(6001), u64::MAX), ms(10_000));
    }

    #[test]
    fn replacements_in_a_row_wait_longer_each_time_up_to_the_max() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), 0);
        // A fast-retry window is open: it must not shorten a replaced wait.
        b.restart_notice(ms(0), ms(60_000), t0);
        b.delay_with(t0, 0);
        let mut ceilings = Vec::new();
        for i in 0..8 {
            assert_eq!(
                b.replaced(ms(300)),
                i == 0,
                "only the first starts a streak"
            );
            let (lo, hi) = (b.clone().delay_with(t0, 0), b.delay_with(t0, u64::MAX));
            assert!(hi + ms(1) >= lo * 2 && lo * 2 >= hi, "{lo:?}..{hi:?}");
            ceilings.push(hi.as_secs());
        }
        assert_eq!(ceilings, [5, 10, 20, 40, 80, 120, 120, 120]);
        // A failure to connect after a replaced wait backs off as usual.
        assert!(b.delay_with(t0 + Duration::from_secs(61), u64::MAX) <= ms(200));
        // Two replacements within a streak, then a connection that outlived the longest
        // wait: the next replacement starts a new streak, from the first wait.
        assert!(!b.replaced(Duration::from_secs(120)));
        b.delay_with(t0, 0);
        assert!(b.replaced(Duration::from_secs(121)));
        assert_eq!(b.delay_with(t0, u64::MAX).as_secs(), 5);
    }

    #[test]
    fn hostile_restart_notices_are_clamped() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default(), 0);
        b.restart_notice(
            Duration::from_millis(u64::from(u32::MAX)),
            Duration::from_millis(u64::from(u32::MAX)),
            t0,
        );
        let d = b.delay_with(t0, u64::MAX);
        assert!(d <= ms(10_250), "{d:?}");
        // The fast-retry window is bounded too.
        for _ in 0..10 {
            b.delay_with(t0, u64::MAX);
        }
        assert_eq!(
            b.delay_with(t0 + Duration::from_secs(131), u64::MAX),
            ms(10_000)
        );
        // Zero waits are fine.
        b.restart_notice(Duration::ZERO, Duration::ZERO, t0);
        assert_eq!(b.delay_with(t0, 0), Duration::ZERO);
    }

    #[test]
    fn the_seed_decides_the_schedule() {
        let t0 = Instant::now();
        let schedule = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            (0..20).map(|_| b.next_delay(t0)).collect::<Vec<_>>()
        };
        assert_eq!(schedule(3), schedule(3));
        assert_ne!(schedule(3), schedule(4));
    }
}
