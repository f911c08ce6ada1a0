//! Our public address as STUN servers and peers see it, and what it says of our NAT: two
//! destinations that see different public ports mean a mapping per destination (a hard NAT).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::disco::NatHint;
use crate::stun::{Message as StunMessage, TransactionId};

/// Peers' views of our public address kept, the latest first.
const PEER_VIEWS: usize = 8;
/// Alternate STUN addresses asked beside the configured servers.
const MAX_STUN_OTHERS: usize = 4;

/// Our public address as STUN servers and peers see it, and whether it depends on the
/// destination.
#[derive(Default)]
pub(super) struct Reflexive {
    /// Requests in flight: transaction, server.
    pub(super) pending: Vec<(TransactionId, SocketAddr)>,
    /// Alternate addresses servers offered (RFC 5780 OTHER-ADDRESS, or a second port on a
    /// one-address server), asked too.
    pub(super) others: Vec<SocketAddr>,
    /// The latest mapped address per server asked.
    pub(super) mapped: Vec<(SocketAddr, SocketAddr)>,
    /// Our main socket's address as peers saw it in their pongs.
    pub(super) peer_views: VecDeque<SocketAddr>,
    pub(super) answered: bool,
    /// When the servers are asked next.
    pub(super) next: Option<Instant>,
}

impl Reflexive {
    /// A server answered, and so did every alternate address offered: what we know of our
    /// mapping won't change soon.
    pub(super) fn settled(&self) -> bool {
        self.answered
            && self
                .others
                .iter()
                .all(|o| self.mapped.iter().any(|(s, _)| s == o))
    }

    /// Two destinations saw different public addresses: the NAT maps per destination. A
    /// peer's view counts where it saw the IP that STUN sees (not a LAN address).
    pub(super) fn hard_nat(&self) -> bool {
        let stun = self.mapped.iter().map(|(_, a)| *a);
        let peers = self
            .peer_views
            .iter()
            .copied()
            .filter(|a| self.mapped.iter().any(|(_, m)| m.ip() == a.ip()));
        let seen: Vec<SocketAddr> = stun.chain(peers).collect();
        seen.iter()
            .any(|a| seen.iter().any(|b| a.is_ipv4() == b.is_ipv4() && a != b))
    }

    /// What we tell peers of our NAT.
    pub(super) fn nat_hint(&self, local: &[SocketAddr]) -> NatHint {
        if self.hard_nat() {
            NatHint::Hard
        } else if !self.mapped.is_empty() && self.mapped.iter().all(|(_, m)| local.contains(m)) {
            NatHint::Open
        } else {
            NatHint::Easy
        }
    }

    /// Addresses a response offers for telling whether our mapping depends on the
    /// destination: OTHER-ADDRESS, or a one-address server's second port. Whether any is new.
    pub(super) fn note_offers(&mut self, from: SocketAddr, msg: &StunMessage<'_>) -> bool {
        let offers = msg
            .other_address
            .into_iter()
            .chain(msg.alternate_port.map(|p| SocketAddr::new(from.ip(), p)));
        let mut added = false;
        for other in offers {
            if other != from && !self.others.contains(&other) && self.others.len() < MAX_STUN_OTHERS
            {
                self.others.push(other);
                added = true;
            }
        }
        added
    }

    /// A peer saw our main socket at `addr`.
    pub(super) fn note_peer_view(&mut self, addr: SocketAddr) {
        if self.peer_views.front() != Some(&addr) {
            self.peer_views.retain(|a| *a != addr);
            self.peer_views.push_front(addr);
            self.peer_views.truncate(PEER_VIEWS);
        }
    }
}
