//! One allocation's state: its relayed address, lifetime, permissions and channels.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::credentials::Key;
use super::{FiveTuple, RelayId, CHANNEL_LIFETIME, PERMISSION_LIFETIME};
use crate::rate::TokenBucket;
use crate::stun::TransactionId;

/// A channel binding.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

/// What an Allocate waits for while the driver opens its relayed socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pending {
    /// The lifetime granted, seconds.
    pub(crate) lifetime: u32,
    /// The relay id the port after this one is reserved under (EVEN-PORT with R set).
    pub(crate) reserve_next: Option<RelayId>,
}

pub(crate) struct Allocation {
    pub(crate) tuple: FiveTuple,
    pub(crate) username: String,
    pub(crate) key: Key,
    /// The Allocate that made it: its retransmissions get the success response again.
    pub(crate) transaction_id: TransactionId,
    /// The relayed transport address, once the driver has opened it.
    pub(crate) relayed: Option<SocketAddr>,
    pub(crate) pending: Option<Pending>,
    /// The token of the port reserved with it, for the Allocate's retransmissions.
    pub(crate) reservation_token: Option<[u8; 8]>,
    /// Whether the client uses FINGERPRINT, so what the server sends it does too.
    pub(crate) fingerprint: bool,
    pub(crate) expires: Instant,
    pub(crate) permissions: BTreeMap<IpAddr, Instant>,
    pub(crate) channels: BTreeMap<u16, Channel>,
    pub(crate) channel_of: BTreeMap<SocketAddr, u16>,
    /// Bytes relayed either way, if the allocation's bandwidth is limited.
    pub(crate) bucket: Option<TokenBucket>,
    /// Its entry in the server's timer heap.
    pub(crate) deadline: Option<Instant>,
}

impl Allocation {
    pub(crate) fn permits(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions.get(&ip).is_some_and(|&t| t > now)
    }

    /// The peer bound to `channel`, if the binding is live.
    pub(crate) fn channel_peer(&self, now: Instant, channel: u16) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The live channel bound to `peer`.
    pub(crate) fn channel_to(&self, now: Instant, peer: SocketAddr) -> Option<u16> {
        let channel = *self.channel_of.get(&peer)?;
        self.channel_peer(now, channel).map(|_| channel)
    }

    pub(crate) fn permit(&mut self, now: Instant, ip: IpAddr) {
        self.permissions.insert(ip, now + PERMISSION_LIFETIME);
    }

    pub(crate) fn bind(&mut self, now: Instant, channel: u16, peer: SocketAddr) {
        let expires = now + CHANNEL_LIFETIME;
        self.channels.insert(channel, Channel { peer, expires });
        self.channel_of.insert(peer, channel);
        self.permit(now, peer.ip());
    }

    /// Whether `n` bytes may be relayed at `now`, taking them from the bucket.
    pub(crate) fn take(&mut self, now: Instant, n: usize) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take(now, n as f64))
    }

    /// Drops permissions and channels that have expired at `now`.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|_, &mut t| t > now);
        let expired: Vec<u16> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in expired {
            if let Some(c) = self.channels.remove(&n) {
                if self.channel_of.get(&c.peer) == Some(&n) {
                    self.channel_of.remove(&c.peer);
                }
            }
        }
    }

    /// When something of it next expires.
    pub(crate) fn next_expiry(&self) -> Instant {
        let perms = self.permissions.values().copied();
        let channels = self.channels.values().map(|c| c.expires);
        perms.chain(channels).fold(self.expires, Instant::min)
    }
}
