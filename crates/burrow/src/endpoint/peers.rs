//! The peers an endpoint talks to, and the address QUIC knows each one by.
//!
//! quinn sees every peer at one stable, made-up address (an IPv6 unique-local address holding
//! a peer number), so that moving a peer between the relay and a direct path is invisible to
//! QUIC: no migration, and the streams carry on. The socket layer translates.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use burrow_proto::holepunch::DirectPath;
use burrow_proto::identity::NodeId;
use bytes::Bytes;

/// The /64 the made-up addresses live in (fd00::/8 is unique-local and never routed).
const MAPPED_PREFIX: [u16; 4] = [0xfdb7, 0x7277, 0x6275, 0x7277];
/// The port of every made-up address.
const MAPPED_PORT: u16 = 1;
/// Datagrams held per peer while no path exists (a QUIC handshake's first flight).
const MAX_HELD: usize = 8;

/// Whether `addr` is one of the made-up peer addresses.
pub(crate) fn is_mapped(addr: &SocketAddr) -> bool {
    match addr {
        SocketAddr::V6(a) => a.ip().segments()[..4] == MAPPED_PREFIX,
        SocketAddr::V4(_) => false,
    }
}

/// One peer, shared between the socket (which reads its route on every packet) and the disco
/// driver (which changes it).
#[derive(Debug)]
pub(crate) struct Peer {
    pub node: NodeId,
    /// The address quinn knows it by.
    pub mapped: SocketAddr,
    /// The direct path traffic takes; `None` means through the relay.
    direct: Mutex<Option<DirectPath>>,
    /// Spare sockets open for birthday probing towards this peer (see
    /// [`burrow_proto::holepunch`]), by number; a direct path may use one.
    spares: Mutex<Vec<(u16, Arc<tokio::net::UdpSocket>)>>,
    /// QUIC datagrams sent before any path existed (an endpoint without relays), sent once a
    /// direct path is proven instead of waiting for QUIC's retransmission.
    held: Mutex<Vec<Bytes>>,
    /// Milliseconds since the map's epoch of the last packet from the direct address.
    last_direct_rx: AtomicU64,
    /// Milliseconds since the map's epoch of the last QUIC packet either way, on any path.
    last_activity: AtomicU64,
}

impl Peer {
    /// The direct path in use, if any.
    pub fn direct(&self) -> Option<DirectPath> {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_direct(&self, path: Option<DirectPath>) {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = path;
    }

    /// Keeps a datagram that has no path yet (the first [`MAX_HELD`] only: QUIC resends).
    pub fn hold(&self, datagram: Bytes) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() < MAX_HELD {
            held.push(datagram);
        }
    }

    /// The held datagrams, emptied.
    pub fn take_held(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Spare socket `n`, if open.
    pub fn spare(&self, n: u16) -> Option<Arc<tokio::net::UdpSocket>> {
        let spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.iter().find(|s| s.0 == n).map(|s| s.1.clone())
    }

    pub fn add_spare(&self, n: u16, socket: Arc<tokio::net::UdpSocket>) {
        self.spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((n, socket));
    }

    /// Closes the spare sockets `keep` does not name; returns how many.
    pub fn retain_spares(&self, keep: impl Fn(u16) -> bool) -> usize {
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        let before = spares.len();
        spares.retain(|s| keep(s.0));
        before - spares.len()
    }
}

/// Every peer, by key, by made-up address and by the direct addresses it may send from.
#[derive(Debug)]
pub(crate) struct PeerMap {
    epoch: Instant,
    inner: RwLock<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    by_node: HashMap<NodeId, Arc<Peer>>,
    by_mapped: HashMap<SocketAddr, Arc<Peer>>,
    by_direct: HashMap<SocketAddr, Arc<Peer>>,
    next: u64,
}

impl PeerMap {
    pub fn new() -> PeerMap {
        PeerMap {
            epoch: Instant::now(),
            inner: RwLock::new(Maps {
                next: 1,
                ..Maps::default()
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The peer with this key, added if new. The bool says whether it was added.
    pub fn get_or_insert(&self, node: NodeId) -> (Arc<Peer>, bool) {
        if let Some(p) = self.read().by_node.get(&node) {
            return (p.clone(), false);
        }
        let mut maps = self.write();
        if let Some(p) = maps.by_node.get(&node) {
            return (p.clone(), false);
        }
        let n = maps.next;
        maps.next += 1;
        let s = MAPPED_PREFIX;
        let ip = Ipv6Addr::new(
            s[0],
            s[1],
            s[2],
            s[3],
            (n >> 48) as u16,
            (n >> 32) as u16,
            (n >> 16) as u16,
            n as u16,
        );
        let peer = Arc::new(Peer {
            node,
            mapped: SocketAddr::V6(SocketAddrV6::new(ip, MAPPED_PORT, 0, 0)),
            direct: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            last_direct_rx: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
        });
        maps.by_node.insert(node, peer.clone());
        maps.by_mapped.insert(peer.mapped, peer.clone());
        (peer, true)
    }

    pub fn by_node(&self, node: &NodeId) -> Option<Arc<Peer>> {
        self.read().by_node.get(node).cloned()
    }

    pub fn by_mapped(&self, addr: &SocketAddr) -> Option<Arc<Peer>> {
        self.read().by_mapped.get(addr).cloned()
    }

    pub fn by_direct(&self, addr: &SocketAddr) -> Option<Arc<Peer>> {
        self.read().by_direct.get(addr).cloned()
    }

    /// Packets from `addr` belong to `peer` (a proven or probed address of it).
    pub fn set_direct_source(&self, addr: SocketAddr, peer: &Arc<Peer>) {
        self.write().by_direct.insert(addr, peer.clone());
    }

    /// Packets from `peer`'s direct addresses are nobody's any more (its state was forgotten).
    pub fn forget_direct_sources(&self, peer: &Arc<Peer>) {
        self.write().by_direct.retain(|_, p| !Arc::ptr_eq(p, peer));
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "never".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, ms: u64) -> Option<Instant> {
        (ms != 0).then(|| self.epoch + Duration::from_millis(ms - 1))
    }

    /// A QUIC packet came from the peer's direct address.
    pub fn note_direct_rx(&self, peer: &Peer) {
        let now = self.now_ms();
        peer.last_direct_rx.store(now, Ordering::Relaxed);
        peer.last_activity.store(now, Ordering::Relaxed);
    }

    /// A QUIC packet went to or came from the peer, on any path.
    pub fn note_activity(&self, peer: &Peer) {
        peer.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When the last QUIC packet came straight from the peer, and when the last moved at all.
    pub fn times(&self, peer: &Peer) -> (Option<Instant>, Option<Instant>) {
        (
            self.at(peer.last_direct_rx.load(Ordering::Relaxed)),
            self.at(peer.last_activity.load(Ordering::Relaxed)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_distinct_and_recognised() {
        let map = PeerMap::new();
        let a = burrow_proto::identity::SecretKey::from_bytes([1; 32]).node_id();
        let b = burrow_proto::identity::SecretKey::from_bytes([2; 32]).node_id();
        let (pa, new_a) = map.get_or_insert(a);
        let (pb, _) = map.get_or_insert(b);
        let (pa2, again) = map.get_or_insert(a);
        assert!(new_a && !again);
        assert_eq!(pa.mapped, pa2.mapped);
        assert_ne!(pa.mapped, pb.mapped);
        assert!(is_mapped(&pa.mapped));
        assert!(!is_mapped(&"[fd00::1]:1".parse().unwrap()));
        assert_eq!(map.by_mapped(&pb.mapped).unwrap().node, b);
    }
}
