//! Strangers: keys that we do not dial and that have not proven themselves over QUIC. A
//! stranger's ping gets one pong (within budgets), which is all a peer dialling us without a
//! relay needs to reach us with QUIC; what it sends through the relay is kept, unopened, until
//! its QUIC handshake proves the key. Nothing a stranger sends makes us probe anyone, or tell
//! it our addresses.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::disco::SharedKey;
use crate::identity::NodeId;

/// Relayed packets kept per stranger (a CallMeMaybe and a retry).
const HELD_PER_STRANGER: usize = 2;
/// Addresses remembered per stranger (where its authentic pings came from).
const SEEN_FROM: usize = 4;

/// What we keep of one stranger.
#[derive(Default)]
pub(super) struct Stranger {
    /// Its disco key, once a direct packet from it was worth the key agreement.
    pub(super) key: Option<SharedKey>,
    /// Disco packets that came through the relay, unopened, and when.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// Where its authentic pings came from.
    seen_from: Vec<SocketAddr>,
}

impl Stranger {
    /// Remembers that an authentic ping came from `from`; whether that is new.
    pub(super) fn seen_at(&mut self, from: SocketAddr) -> bool {
        if self.seen_from.contains(&from) {
            return false;
        }
        if self.seen_from.len() >= SEEN_FROM {
            self.seen_from.remove(0);
        }
        self.seen_from.push(from);
        true
    }
}

/// At most `max` strangers; past that, the one first seen longest ago is forgotten.
pub(super) struct Strangers {
    max: usize,
    /// How long a relayed packet is worth keeping.
    held_for: Duration,
    table: BTreeMap<NodeId, Stranger>,
    order: VecDeque<NodeId>,
}

impl Strangers {
    pub(super) fn new(max: usize, held_for: Duration) -> Strangers {
        Strangers {
            max: max.max(1),
            held_for,
            table: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Strangers known now.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The stranger `node`, if known.
    pub(super) fn get(&mut self, node: &NodeId) -> Option<&mut Stranger> {
        self.table.get_mut(node)
    }

    /// The stranger `node`, made known if new.
    pub(super) fn entry(&mut self, node: NodeId) -> &mut Stranger {
        if !self.table.contains_key(&node) {
            while self.table.len() >= self.max {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.table.remove(&old);
            }
            // Forgotten ones leave stale names behind; drop them before they pile up.
            if self.order.len() > 2 * self.max {
                let table = &self.table;
                self.order.retain(|n| table.contains_key(n));
            }
            self.order.push_back(node);
        }
        self.table.entry(node).or_default()
    }

    /// Keeps a packet `node` sent through the relay, unopened.
    pub(super) fn hold(&mut self, now: Instant, node: NodeId, packet: &[u8]) {
        let s = self.entry(node);
        if s.held.len() >= HELD_PER_STRANGER {
            s.held.pop_front();
        }
        s.held.push_back((now, packet.to_vec()));
    }

    /// Forgets `node`, which is a stranger no more: its relayed packets still fresh at `now`,
    /// and where it pinged from.
    pub(super) fn take(&mut self, now: Instant, node: &NodeId) -> (Vec<Vec<u8>>, Vec<SocketAddr>) {
        let Some(s) = self.table.remove(node) else {
            return (Vec::new(), Vec::new());
        };
        let fresh = s
            .held
            .into_iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.held_for)
            .map(|(_, p)| p)
            .collect();
        (fresh, s.seen_from)
    }
}
