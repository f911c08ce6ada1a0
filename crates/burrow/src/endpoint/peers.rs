//! The peers an endpoint talks to, and the address QUIC knows each one by.
//!
//! quinn sees every peer at one stable, made-up address (an IPv6 unique-local address holding
//! a peer number), so that moving a peer between the relay and a direct path is invisible to
//! QUIC: no migration, and the streams carry on. The socket layer translates.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// Peers known only as senders through the relay, not yet dialled or proven by a handshake:
/// past this many, the oldest is forgotten (a flood of relayed keys cannot grow the map).
pub(crate) const MAX_UNCONFIRMED: usize = 4096;

/// Whether `addr` is one of the made-up peer addresses.
#[cfg(test)]
fn is_mapped(addr: &SocketAddr) -> bool {
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
    /// Dialled by us, or its key proven by a handshake (else a sender through the relay).
    confirmed: AtomicBool,
}

impl Peer {
    /// The direct path in use, if any.
    pub(super) fn direct(&self) -> Option<DirectPath> {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_direct(&self, path: Option<DirectPath>) {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = path;
    }

    /// Keeps a datagram that has no path yet (the first [`MAX_HELD`] only: QUIC resends).
    pub(super) fn hold(&self, datagram: Bytes) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() < MAX_HELD {
            held.push(datagram);
        }
    }

    /// The held datagrams, emptied.
    pub(super) fn take_held(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Spare socket `n`, if open.
    pub(super) fn spare(&self, n: u16) -> Option<Arc<tokio::net::UdpSocket>> {
        let spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.iter().find(|s| s.0 == n).map(|s| s.1.clone())
    }

    pub(super) fn add_spare(&self, n: u16, socket: Arc<tokio::net::UdpSocket>) {
        self.spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((n, socket));
    }

    /// Closes the spare sockets `keep` does not name; returns how many.
    pub(super) fn retain_spares(&self, keep: impl Fn(u16) -> bool) -> usize {
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
    /// Peers not yet dialled or proven, oldest first (stale names are skipped).
    unconfirmed: VecDeque<NodeId>,
    /// How many of `by_node` are unconfirmed.
    unconfirmed_count: usize,
    next: u64,
}

impl PeerMap {
    pub(super) fn new() -> PeerMap {
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

    /// The peer with this key, added if new, and confirmed: we dial it, or a handshake
    /// proved its key.
    pub(super) fn get_or_insert(&self, node: NodeId) -> Arc<Peer> {
        if let Some(p) = self.read().by_node.get(&node) {
            if p.confirmed.load(Ordering::Relaxed) {
                return p.clone();
            }
        }
        let mut maps = self.write();
        if let Some(p) = maps.by_node.get(&node).cloned() {
            if !p.confirmed.swap(true, Ordering::Relaxed) {
                maps.unconfirmed_count -= 1;
            }
            return p;
        }
        maps.insert(node, true)
    }

    /// The peer with this key, added unconfirmed if new (a sender through the relay).
    pub(super) fn get_or_insert_unconfirmed(&self, node: NodeId) -> Arc<Peer> {
        if let Some(p) = self.read().by_node.get(&node) {
            return p.clone();
        }
        let mut maps = self.write();
        if let Some(p) = maps.by_node.get(&node) {
            return p.clone();
        }
        while maps.unconfirmed_count >= MAX_UNCONFIRMED {
            let Some(old) = maps.unconfirmed.pop_front() else {
                break;
            };
            if maps
                .by_node
                .get(&old)
                .is_some_and(|p| !p.confirmed.load(Ordering::Relaxed))
            {
                maps.remove(&old);
            }
        }
        // Confirmed and removed ones leave stale names behind; drop them before they pile up.
        if maps.unconfirmed.len() > 2 * MAX_UNCONFIRMED {
            let Maps {
                by_node,
                unconfirmed,
                ..
            } = &mut *maps;
            unconfirmed.retain(|n| {
                by_node
                    .get(n)
                    .is_some_and(|p| !p.confirmed.load(Ordering::Relaxed))
            });
        }
        maps.unconfirmed.push_back(node);
        maps.insert(node, false)
    }

    /// Forgets `node` (its connection ended): its made-up and direct addresses go.
    pub(super) fn remove(&self, node: &NodeId) {
        self.write().remove(node);
    }

    /// The peers we dial or whose key a handshake proved (not mere senders through the
    /// relay), with when each last carried a QUIC packet.
    pub(super) fn confirmed(&self) -> Vec<(Arc<Peer>, Option<Instant>)> {
        self.read()
            .by_node
            .values()
            .filter(|p| p.confirmed.load(Ordering::Relaxed))
            .map(|p| (p.clone(), self.times(p).1))
            .collect()
    }

    /// Peers known now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.read().by_node.len()
    }
}

impl Maps {
    fn insert(&mut self, node: NodeId, confirmed: bool) -> Arc<Peer> {
        let n = self.next;
        self.next += 1;
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
            confirmed: AtomicBool::new(confirmed),
        });
        self.by_node.insert(node, peer.clone());
        self.by_mapped.insert(peer.mapped, peer.clone());
        if !confirmed {
            self.unconfirmed_count += 1;
        }
        peer
    }

    fn remove(&mut self, node: &NodeId) {
        let Some(p) = self.by_node.remove(node) else {
            return;
        };
        if !p.confirmed.load(Ordering::Relaxed) {
            self.unconfirmed_count -= 1;
        }
        self.by_mapped.remove(&p.mapped);
        self.by_direct.retain(|_, q| !Arc::ptr_eq(q, &p));
    }
}

impl PeerMap {
    pub(super) fn by_node(&self, node: &NodeId) -> Option<Arc<Peer>> {
        self.read().by_node.get(node).cloned()
    }

    pub(super) fn by_mapped(&self, addr: &SocketAddr) -> Option<Arc<Peer>> {
        self.read().by_mapped.get(addr).cloned()
    }

    pub(super) fn by_direct(&self, addr: &SocketAddr) -> Option<Arc<Peer>> {
        self.read().by_direct.get(addr).cloned()
    }

    /// Packets from `addr` belong to `peer` (a proven or probed address of it).
    pub(super) fn set_direct_source(&self, addr: SocketAddr, peer: &Arc<Peer>) {
        self.write().by_direct.insert(addr, peer.clone());
    }

    /// Packets from `addr` are nobody's any more.
    pub(super) fn remove_direct_source(&self, addr: &SocketAddr) {
        self.write().by_direct.remove(addr);
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "never".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn at(&self, ms: u64) -> Option<Instant> {
        (ms != 0).then(|| self.epoch + Duration::from_millis(ms - 1))
    }

    /// A QUIC packet came from the peer's direct address.
    pub(super) fn note_direct_rx(&self, peer: &Peer) {
        let now = self.now_ms();
        peer.last_direct_rx.store(now, Ordering::Relaxed);
        peer.last_activity.store(now, Ordering::Relaxed);
    }

    /// A QUIC packet went to or came from the peer, on any path.
    pub(super) fn note_activity(&self, peer: &Peer) {
        peer.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When the last QUIC packet came straight from the peer, and when the last moved at all.
    pub(super) fn times(&self, peer: &Peer) -> (Option<Instant>, Option<Instant>) {
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
        let pa = map.get_or_insert(a);
        let pb = map.get_or_insert(b);
        let pa2 = map.get_or_insert(a);
        assert!(Arc::ptr_eq(&pa, &pa2));
        assert_eq!(pa.mapped, pa2.mapped);
        assert_ne!(pa.mapped, pb.mapped);
        assert!(is_mapped(&pa.mapped));
        assert!(!is_mapped(&"[fd00::1]:1".parse().unwrap()));
        assert_eq!(map.by_mapped(&pb.mapped).unwrap().node, b);
    }

    #[test]
    fn relayed_senders_are_bounded_and_confirmed_peers_stay() {
        let map = PeerMap::new();
        let key = |i: u32| {
            let mut b = [7u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            burrow_proto::identity::SecretKey::from_bytes(b).node_id()
        };
        let dialled = map.get_or_insert(key(0));
        let proven = map.get_or_insert_unconfirmed(key(1));
        map.get_or_insert(key(1));
        for i in 2..(MAX_UNCONFIRMED as u32 * 3) {
            map.get_or_insert_unconfirmed(key(i));
        }
        assert_eq!(map.len(), MAX_UNCONFIRMED + 2);
        assert!(Arc::ptr_eq(&map.by_node(&key(0)).unwrap(), &dialled));
        assert!(Arc::ptr_eq(&map.by_node(&key(1)).unwrap(), &proven));
        assert!(
            map.by_node(&key(2)).is_none(),
            "the oldest relayed sender went"
        );
        let confirmed: Vec<_> = map.confirmed().iter().map(|(p, _)| p.node).collect();
        assert_eq!(confirmed.len(), 2, "relayed senders are not peers yet");
        assert!(confirmed.contains(&key(0)) && confirmed.contains(&key(1)));
        map.remove(&key(0));
        assert!(map.by_mapped(&dialled.mapped).is_none());
    }
}
