//! Which peer QUIC from a direct address belongs to. The socket layer files every QUIC
//! packet by its source address, so a wrong entry sends one peer's packets to another's
//! connection. An address is a peer's for good once a path to it is proven (a pong sealed by
//! that peer answered our ping there), and tentatively once an authentic ping came from it:
//! that is where a peer dialling us sends QUIC before we have proven anything. A tentative
//! claim takes no one's place, and nothing takes the place of a live path.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use crate::identity::NodeId;

/// A change for the socket layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// QUIC from the address is the peer's now.
    Claimed(NodeId, SocketAddr),
    /// QUIC from the address is nobody's.
    Released(SocketAddr),
}

/// The claims. Proven ones are bounded by the peers' paths; tentative ones by `max_tentative`
/// (the oldest goes first).
pub(super) struct Sources {
    max_tentative: usize,
    proven: BTreeMap<SocketAddr, NodeId>,
    tentative: BTreeMap<SocketAddr, NodeId>,
    order: VecDeque<SocketAddr>,
}

impl Sources {
    pub(super) fn new(max_tentative: usize) -> Sources {
        Sources {
            max_tentative: max_tentative.max(1),
            proven: BTreeMap::new(),
            tentative: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whose QUIC from `addr` is.
    pub(super) fn owner(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.proven
            .get(addr)
            .or_else(|| self.tentative.get(addr))
            .copied()
    }

    /// Claims (tentative) and proven claims, in that order.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.tentative.len(), self.proven.len())
    }

    /// `node` was proven at `addr`. `live(other, addr)` says whether another claimant still
    /// has a live path there, which keeps the address its.
    pub(super) fn prove(
        &mut self,
        node: NodeId,
        addr: SocketAddr,
        live: impl Fn(&NodeId, SocketAddr) -> bool,
        out: &mut Vec<Change>,
    ) {
        match self.proven.get(&addr) {
            Some(n) if *n == node => return,
            Some(other) if live(other, addr) => return,
            _ => {}
        }
        self.tentative.remove(&addr);
        self.proven.insert(addr, node);
        out.push(Change::Claimed(node, addr));
    }

    /// An authentic ping from `node` came from `addr`.
    pub(super) fn tentative(&mut self, node: NodeId, addr: SocketAddr, out: &mut Vec<Change>) {
        if self.proven.contains_key(&addr) || self.tentative.contains_key(&addr) {
            return;
        }
        while self.tentative.len() >= self.max_tentative {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if self.tentative.remove(&old).is_some() {
                out.push(Change::Released(old));
            }
        }
        if self.order.len() > 2 * self.max_tentative {
            let tentative = &self.tentative;
            self.order.retain(|a| tentative.contains_key(a));
        }
        self.tentative.insert(addr, node);
        self.order.push_back(addr);
        out.push(Change::Claimed(node, addr));
    }

    /// Every claim of `node` goes (its state was forgotten).
    pub(super) fn release(&mut self, node: &NodeId, out: &mut Vec<Change>) {
        for map in [&mut self.proven, &mut self.tentative] {
            let gone: Vec<SocketAddr> = map
                .iter()
                .filter(|(_, n)| *n == node)
                .map(|(a, _)| *a)
                .collect();
            for a in gone {
                map.remove(&a);
                out.push(Change::Released(a));
            }
        }
    }
}
