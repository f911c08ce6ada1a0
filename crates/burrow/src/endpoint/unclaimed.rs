//! QUIC datagrams from an address no peer has claimed yet, kept a moment.
//!
//! A peer that still holds a live direct path to our address (we restarted on the same port:
//! a mesh member's daemon after the endpoint it joined with) answers our relayed handshake
//! straight, before its first authentic ping has claimed its address for it here. Dropped,
//! those packets would cost QUIC a probe timeout (about 1 s); kept, they go to QUIC when the
//! claim comes, which is the moment packets from that address would be let in anyway.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Datagrams kept at most, from all addresses together; the oldest goes first. A flood of
/// junk only pushes out what QUIC would resend.
pub(crate) const MAX_UNCLAIMED: usize = 16;
/// Longer datagrams are not kept (QUIC's are at most about 1,452 bytes on Ethernet).
pub(crate) const MAX_UNCLAIMED_LEN: usize = 1500;
/// How long one is kept: by then QUIC has sent it again.
pub(crate) const UNCLAIMED_FOR: Duration = Duration::from_secs(1);

/// The datagrams kept, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Unclaimed {
    held: VecDeque<(Instant, SocketAddr, Bytes)>,
}

impl Unclaimed {
    /// Keeps `datagram` from `from` (unless it is too long), pushing out the oldest if full.
    pub(crate) fn hold(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if datagram.len() > MAX_UNCLAIMED_LEN {
            return;
        }
        self.expire(now);
        if self.held.len() == MAX_UNCLAIMED {
            self.held.pop_front();
        }
        self.held
            .push_back((now, from, Bytes::copy_from_slice(datagram)));
    }

    /// The datagrams kept from `addr`, in the order they came, and forgotten.
    pub(crate) fn take(&mut self, now: Instant, addr: SocketAddr) -> Vec<Bytes> {
        self.expire(now);
        let mut taken = Vec::new();
        self.held.retain(|(_, from, d)| {
            let mine = *from == addr;
            if mine {
                taken.push(d.clone());
            }
            !mine
        });
        taken
    }

    fn expire(&mut self, now: Instant) {
        while self
            .held
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) >= UNCLAIMED_FOR)
        {
            self.held.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_claimed_address_gets_its_own_datagrams_in_order_once() {
        let now = Instant::now();
        let mut u = Unclaimed::default();
        u.hold(now, addr(1), b"a1");
        u.hold(now, addr(2), b"b1");
        u.hold(now, addr(1), b"a2");
        assert_eq!(u.take(now, addr(1)), [&b"a1"[..], b"a2"]);
        assert!(u.take(now, addr(1)).is_empty());
        assert_eq!(u.take(now, addr(2)), [&b"b1"[..]]);
    }

    #[test]
    fn the_store_is_bounded_in_count_length_and_age() {
        let now = Instant::now();
        let mut u = Unclaimed::default();
        for i in 0..=MAX_UNCLAIMED as u8 {
            u.hold(now, addr(1), &[i]);
        }
        let kept = u.take(now, addr(1));
        assert_eq!(kept.len(), MAX_UNCLAIMED);
        assert_eq!(kept[0], [1u8][..], "the oldest went");

        u.hold(now, addr(1), &[0; MAX_UNCLAIMED_LEN + 1]);
        u.hold(now, addr(1), &[0; MAX_UNCLAIMED_LEN]);
        assert_eq!(u.take(now, addr(1)).len(), 1, "too long is not kept");

        u.hold(now, addr(1), b"old");
        let later = now + UNCLAIMED_FOR;
        u.hold(later, addr(2), b"new");
        assert!(u.take(later, addr(1)).is_empty(), "expired");
        assert_eq!(u.take(later, addr(2)).len(), 1);
    }
}
