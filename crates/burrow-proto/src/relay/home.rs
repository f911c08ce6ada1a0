//! Choosing the home relay: the connected relay with the lowest measured round-trip time,
//! kept until another is clearly better, so that small RTT noise does not make it flap.

use std::time::Duration;

/// When a connected home relay gives way to a faster one.
#[derive(Clone, Debug)]
pub struct HomeConfig {
    /// The other relay's RTT must be at most this fraction of the home relay's RTT...
    pub switch_ratio: f64,
    /// ...and at least this much lower.
    pub switch_margin: Duration,
}

impl Default for HomeConfig {
    fn default() -> Self {
        HomeConfig {
            switch_ratio: 0.75,
            switch_margin: Duration::from_millis(5),
        }
    }
}

/// What the selector knows of one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Authenticated and usable.
    pub connected: bool,
    /// Smoothed RTT, once measured.
    pub rtt: Option<Duration>,
}

/// The home relay choice over relays numbered by their index in the candidate list.
#[derive(Clone, Debug, Default)]
pub struct HomeSelector {
    config: HomeConfig,
    home: Option<usize>,
}

impl HomeSelector {
    /// A selector with no home yet.
    pub fn new(config: HomeConfig) -> Self {
        HomeSelector { config, home: None }
    }

    /// The current home relay.
    pub fn home(&self) -> Option<usize> {
        self.home
    }

    /// Re-evaluates the choice after any relay's state or RTT changed; returns the home.
    ///
    /// - A home that is no longer connected is replaced at once by the best connected relay
    ///   (lowest RTT; unmeasured ones after measured ones; ties by list order).
    /// - A connected home is only replaced when another relay's RTT beats it by both
    ///   [`HomeConfig::switch_ratio`] and [`HomeConfig::switch_margin`]. While the home's own
    ///   RTT is unmeasured it is kept: the measurement is moments away.
    pub fn update(&mut self, candidates: &[Candidate]) -> Option<usize> {
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.connected)
            // None sorts after every Some; min_by_key keeps the first of equals.
            .min_by_key(|(_, c)| (c.rtt.is_none(), c.rtt))
            .map(|(i, _)| i);
        let current = self
            .home
            .filter(|&h| candidates.get(h).is_some_and(|c| c.connected));
        self.home = match (current, best) {
            (None, best) => best,
            (Some(h), Some(b)) if h != b => match (candidates[h].rtt, candidates[b].rtt) {
                (Some(home_rtt), Some(best_rtt))
                    if best_rtt.as_secs_f64()
                        <= home_rtt.as_secs_f64() * self.config.switch_ratio
                        && best_rtt + self.config.switch_margin <= home_rtt =>
                {
                    Some(b)
                }
                _ => Some(h),
            },
            (Some(h), _) => Some(h),
        };
        self.home
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(rtt_ms: u64) -> Candidate {
        Candidate {
            connected: true,
            rtt: Some(Duration::from_millis(rtt_ms)),
        }
    }
    const DOWN: Candidate = Candidate {
        connected: false,
        rtt: None,
    };
    const UNMEASURED: Candidate = Candidate {
        connected: true,
        rtt: None,
    };

    #[test]
    fn no_connected_relay_means_no_home() {
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[]), None);
        assert_eq!(s.update(&[DOWN, DOWN]), None);
    }

    #[test]
    fn first_connected_relay_becomes_home_and_keeps_it_until_measured() {
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[DOWN, UNMEASURED]), Some(1));
        assert_eq!(s.update(&[up(10), UNMEASURED]), Some(1));
        // Measured and clearly worse: switch.
        assert_eq!(s.update(&[up(10), up(80)]), Some(0));
    }

    #[test]
    fn lowest_rtt_wins_when_choosing_fresh() {
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[up(30), up(20), UNMEASURED, up(25)]), Some(1));
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[UNMEASURED, UNMEASURED]), Some(0));
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[up(20), up(20)]), Some(0));
    }

    #[test]
    fn hysteresis_prevents_flapping() {
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[up(40), up(45)]), Some(0));
        // Noise around similar values never moves it.
        for (a, b) in [(45, 40), (50, 38), (40, 45), (52, 40), (41, 39)] {
            assert_eq!(s.update(&[up(a), up(b)]), Some(0), "{a} vs {b}");
        }
        // 25% better but under the absolute margin (loopback-like RTTs): stay.
        assert_eq!(s.update(&[up(4), up(1)]), Some(0));
        // Clearly better by both measures: switch, and stay there.
        assert_eq!(s.update(&[up(40), up(29)]), Some(1));
        assert_eq!(s.update(&[up(30), up(29)]), Some(1));
        assert_eq!(s.update(&[up(25), up(29)]), Some(1));
    }

    #[test]
    fn losing_the_home_fails_over_to_the_best_connected() {
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[up(10), up(50), up(30)]), Some(0));
        assert_eq!(s.update(&[DOWN, up(50), up(30)]), Some(2));
        assert_eq!(s.update(&[DOWN, up(50), DOWN]), Some(1));
        assert_eq!(s.update(&[DOWN, DOWN, DOWN]), None);
        // The old home comes back: it is the only one, so it is home.
        assert_eq!(s.update(&[UNMEASURED, DOWN, DOWN]), Some(0));
    }

    #[test]
    fn a_shrunk_candidate_list_does_not_panic() {
        let mut s = HomeSelector::default();
        assert_eq!(s.update(&[up(1), up(2), up(3)]), Some(0));
        assert_eq!(s.update(&[DOWN, DOWN, up(3)]), Some(2));
        assert_eq!(s.update(&[up(1)]), Some(0));
    }
}
