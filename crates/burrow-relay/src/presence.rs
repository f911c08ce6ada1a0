//! Which keys are connected to this relay, and for how much of the time it has known them:
//! the relay's own observation of a key, its reputation v1.
//!
//! A key's reputation is the share of the reputation window (a day by default), or of the
//! time since this relay first saw it if that is longer, that the key has been connected
//! here, from 0 to 1. It is what this relay saw, nothing more: it starts again when the relay
//! restarts, it says nothing of what a key does, and it grows only with time held connected,
//! so a fresh key starts at 0 and cannot buy a high one quickly. That is its whole Sybil
//! defence: one operator can hold many keys connected for a day and give each a full share.
//! Keys are tracked at most [`MAX_TRACKED`]; past that the one gone longest is forgotten.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burrow_proto::identity::NodeId;

/// Keys whose presence is kept at most.
pub(crate) const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
struct Seen {
    first: Instant,
    /// Time connected before the current connection (or all of it, while none is).
    connected: Duration,
    /// Since when it is connected, while it is; a key may hold two sessions a moment while one
    /// replaces the other.
    since: Option<Instant>,
    sessions: u32,
    last: Instant,
}

/// The keys' presence (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct Presence {
    seen: Mutex<BTreeMap<NodeId, Seen>>,
}

impl Presence {
    /// `node` authenticated a session now.
    pub(crate) fn connected(&self, node: NodeId, now: Instant) {
        let mut seen = self.seen.lock().expect("lock");
        if !seen.contains_key(&node) && seen.len() >= MAX_TRACKED {
            let gone_longest = seen
                .iter()
                .filter(|(_, s)| s.sessions == 0)
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| *k);
            match gone_longest {
                Some(k) => {
                    seen.remove(&k);
                }
                // Every key tracked is connected: more clients than tracked keys.
                None => return,
            }
        }
        let s = seen.entry(node).or_insert(Seen {
            first: now,
            connected: Duration::ZERO,
            since: None,
            sessions: 0,
            last: now,
        });
        s.sessions += 1;
        s.since.get_or_insert(now);
        s.last = now;
    }

    /// A session of `node` ended now.
    pub(crate) fn disconnected(&self, node: &NodeId, now: Instant) {
        let mut seen = self.seen.lock().expect("lock");
        let Some(s) = seen.get_mut(node) else {
            return;
        };
        s.sessions = s.sessions.saturating_sub(1);
        s.last = now;
        if s.sessions == 0 {
            if let Some(since) = s.since.take() {
                s.connected += now.saturating_duration_since(since);
            }
        }
    }

    /// Whether `node` is connected now.
    pub(crate) fn is_online(&self, node: &NodeId) -> bool {
        let seen = self.seen.lock().expect("lock");
        seen.get(node).is_some_and(|s| s.sessions > 0)
    }

    /// `node`'s reputation at `now` over `window` (see the module's doc): 0 for a key never
    /// seen.
    pub(crate) fn reputation(&self, node: &NodeId, now: Instant, window: Duration) -> f64 {
        let seen = self.seen.lock().expect("lock");
        let Some(s) = seen.get(node) else {
            return 0.0;
        };
        let current = s
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let known = now.saturating_duration_since(s.first).max(window);
        if known.is_zero() {
            return 0.0;
        }
        ((s.connected + current).as_secs_f64() / known.as_secs_f64()).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId {
        burrow_proto::identity::SecretKey::from_bytes([n; 32]).node_id()
    }

    #[test]
    fn reputation_is_the_share_of_the_window_a_key_was_connected() {
        let p = Presence::default();
        let t0 = Instant::now();
        let window = Duration::from_secs(100);
        let (a, b) = (node(1), node(2));
        assert_eq!(p.reputation(&a, t0, window), 0.0);
        p.connected(a, t0);
        assert!(p.is_online(&a) && !p.is_online(&b));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!((p.reputation(&a, at(10), window) - 0.10).abs() < 1e-9);
        // A second session replacing the first a moment: one presence.
        p.connected(a, at(20));
        p.disconnected(&a, at(21));
        p.disconnected(&a, at(30));
        assert!(!p.is_online(&a));
        assert!((p.reputation(&a, at(50), window) - 0.30).abs() < 1e-9);
        // Past the window, the share is of all the time the relay has known it.
        p.connected(a, at(150));
        assert!((p.reputation(&a, at(200), window) - 80.0 / 200.0).abs() < 1e-9);
        p.connected(b, at(200));
        assert!((p.reputation(&b, at(400), window) - 1.0).abs() < 1e-9);
    }
}
