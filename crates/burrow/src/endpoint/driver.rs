//! The endpoint's driver task: the I/O around the [`EndpointCore`], which makes every
//! decision. It reads the sockets' control packets (STUN answers, disco) and the relay's disco,
//! feeds them to the core with the time, sends what the core returns, opens and closes the
//! spare sockets it asks for, and applies its path changes to the socket layer. It sleeps until
//! the core's next deadline.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow_proto::disco;
use burrow_proto::endpoint::{Activity, Destination, EndpointCore, Event, Input, Output};
use burrow_proto::identity::NodeId;
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::peers::{Peer, PeerMap};
use super::socket::{send_with_ttl, Control, MagicSocket};
use super::DirectPath;
use crate::relay_client::RelayClient;

/// How long the driver sleeps when the core has nothing scheduled.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// What the endpoint asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// We are dialling `node`, known by these direct addresses: start punching.
    Connect {
        node: NodeId,
        addrs: Vec<SocketAddr>,
    },
    /// A QUIC handshake proved `node`'s key and the admission trusts it (or the application
    /// trusts it now).
    Authenticated { node: NodeId },
    /// `node` is not (or no longer) admitted: a stranger again.
    Revoked { node: NodeId },
}

/// A disco packet that came through the relay.
#[derive(Debug)]
pub(crate) struct Relayed(pub NodeId, pub Bytes);

pub(crate) struct Driver {
    pub core: EndpointCore,
    pub socket: Arc<MagicSocket>,
    pub peers: Arc<PeerMap>,
    pub relay: Option<RelayClient>,
    /// Where the hops out of our NATs are measured (an IPv4 STUN server), if anywhere.
    pub hops_server: Option<SocketAddr>,
    pub control: mpsc::Receiver<Control>,
    /// Where spare-socket readers send control packets...
    pub control_tx: mpsc::Sender<Control>,
    /// ...and QUIC packets (under the peer's made-up address).
    pub quic_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    pub relayed_disco: mpsc::Receiver<Relayed>,
    pub commands: mpsc::Receiver<Command>,
    /// Our candidate addresses, for tickets.
    pub candidates: watch::Sender<Vec<SocketAddr>>,
    /// Bumped whenever a peer's path changes.
    pub path_changes: watch::Sender<u64>,
    /// What we know of our NAT.
    pub nat: watch::Sender<Option<disco::NatHint>>,
    /// Readers of each peer's open spare sockets.
    pub spare_readers: HashMap<NodeId, Vec<(u16, JoinHandle<()>)>>,
}

impl Driver {
    pub(super) async fn run(mut self) {
        // The primer TTL is measured once, off the runtime.
        let (hops_tx, mut hops_rx) = tokio::sync::oneshot::channel();
        match self.hops_server {
            Some(server) => {
                tokio::task::spawn_blocking(move || {
                    let _ = hops_tx.send(super::hops::nat_exit_ttl(server));
                });
            }
            // Nothing to measure against: dials need not wait for it.
            None => drop(hops_tx),
        }
        let mut hops_pending = true;
        let local = local_candidates(&self.socket);
        self.core
            .handle_input(Instant::now(), Input::LocalAddrs(local));
        loop {
            let wake = self.apply();
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {
                    let peers = &self.peers;
                    let activity = |node: &NodeId| {
                        peers.by_node(node).map_or(Activity::default(), |p| {
                            let (direct_rx, any) = peers.times(&p);
                            Activity { direct_rx, any }
                        })
                    };
                    self.core.handle_input(Instant::now(), Input::Timeout(&activity));
                }
                ttl = &mut hops_rx, if hops_pending => {
                    hops_pending = false;
                    let ttl = ttl.ok().flatten();
                    debug!(?ttl, "primer TTL: hops to leave our NATs");
                    self.core.handle_input(Instant::now(), Input::PrimerTtl(ttl));
                }
                cmd = self.commands.recv() => match cmd {
                    None => return,
                    Some(Command::Connect { node, addrs }) => {
                        self.core.handle_input(Instant::now(), Input::Connect { node, addrs: &addrs });
                    }
                    Some(Command::Authenticated { node }) => {
                        self.core.handle_input(Instant::now(), Input::Authenticated { node });
                    }
                    Some(Command::Revoked { node }) => {
                        self.core.handle_input(Instant::now(), Input::Revoked { node });
                    }
                },
                Some(Relayed(node, packet)) = self.relayed_disco.recv() => {
                    self.core.handle_input(Instant::now(), Input::Relayed { node, packet: &packet });
                }
                Some(control) = self.control.recv() => {
                    let input = match &control {
                        Control::Udp(from, packet) => Input::Udp { from: *from, packet },
                        Control::Spare { node, n, from, packet } => {
                            Input::Spare { node: *node, n: *n, from: *from, packet }
                        }
                    };
                    self.core.handle_input(Instant::now(), input);
                }
            }
        }
    }

    /// Does what the core asks until it has nothing more; returns when to wake it next.
    fn apply(&mut self) -> Instant {
        loop {
            match self.core.poll_output() {
                Output::Transmit(t) => self.send(t.dest, &t.payload, t.ttl),
                Output::Event(e) => self.on_event(e),
                Output::Timeout(at) => return at.unwrap_or_else(|| Instant::now() + IDLE_WAKE),
            }
        }
    }

    fn send(&mut self, dest: Destination, payload: &[u8], ttl: Option<u8>) {
        match dest {
            Destination::Udp(to) => {
                if let Some(udp) = self.socket.udp_for(&to) {
                    if let Err(e) = udp.send_control(to, payload, ttl) {
                        trace!(%to, "send: {e}");
                    }
                }
            }
            Destination::Spare { node, n, to } => {
                let peer = self.peers.get_or_insert(node);
                let Some(spare) = self.spare(&peer, n, to) else {
                    return;
                };
                if let Err(e) = send_with_ttl(&spare, to, payload, ttl) {
                    trace!(%to, n, "send on a spare socket: {e}");
                }
            }
            Destination::Relay(node) => {
                if let Some(relay) = &self.relay {
                    let _ = relay.send(node, Bytes::copy_from_slice(payload));
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::PathChanged { node, path } => {
                debug!(peer = %node.short(), ?path, "path");
                let peer = self.peers.get_or_insert(node);
                peer.set_direct(path);
                if let Some(path) = &path {
                    self.send_held(&peer, path);
                }
                self.path_changes.send_modify(|n| *n += 1);
            }
            Event::DirectSource { node, addr } => {
                let peer = self.peers.get_or_insert_unconfirmed(node);
                self.peers.set_direct_source(addr, &peer);
                // What QUIC sent from there before the claim, it gets now.
                for datagram in self.socket.take_unclaimed(addr) {
                    let _ = self.quic_tx.try_send((peer.mapped, datagram));
                }
            }
            Event::SourceReleased(addr) => self.peers.remove_direct_source(&addr),
            Event::ReplyTo { node, addr } => {
                // A proven path, once there is one, takes its place.
                let peer = self.peers.get_or_insert_unconfirmed(node);
                if peer.direct().is_none() {
                    let path = DirectPath {
                        addr,
                        rtt: Duration::ZERO,
                        spare: None,
                    };
                    peer.set_direct(Some(path));
                    self.send_held(&peer, &path);
                }
            }
            Event::Candidates(ours) => {
                debug!(?ours, "our addresses");
                self.candidates.send_replace(ours);
                self.publish_nat();
                // A new public address may mean a new network: look at the interfaces again.
                let local = local_candidates(&self.socket);
                self.core
                    .handle_input(Instant::now(), Input::LocalAddrs(local));
            }
            Event::Nat(nat) => {
                debug!(?nat, "our NAT");
                self.publish_nat();
            }
            Event::SparesUnused { node, keep } => {
                if let Some(peer) = self.peers.by_node(&node) {
                    peer.retain_spares(|n| keep.contains(&n));
                }
                if let Some(rs) = self.spare_readers.get_mut(&node) {
                    rs.retain(|(n, reader)| {
                        let used = keep.contains(n);
                        if !used {
                            reader.abort();
                        }
                        used
                    });
                }
            }
            Event::PeerForgotten(node) => {
                debug!(peer = %node.short(), "peer forgotten");
                // Its connection ended (or it was revoked): traffic that comes back starts
                // afresh on the relay.
                let was_direct = self
                    .peers
                    .by_node(&node)
                    .is_some_and(|p| p.direct().is_some());
                self.peers.remove(&node);
                if was_direct {
                    self.path_changes.send_modify(|n| *n += 1);
                }
                for (_, reader) in self.spare_readers.remove(&node).unwrap_or_default() {
                    reader.abort();
                }
            }
        }
    }

    /// Tells the endpoint's readers what the core knows of our NAT now, if that is news.
    fn publish_nat(&self) {
        let known = self.core.nat();
        if *self.nat.borrow() != known {
            self.nat.send_replace(known);
        }
    }

    /// Sends the QUIC datagrams held while `peer` had no path (a handshake's first flight).
    fn send_held(&self, peer: &Peer, path: &DirectPath) {
        for datagram in peer.take_held() {
            let t = quinn::udp::Transmit {
                destination: path.addr,
                ecn: None,
                contents: &datagram,
                segment_size: None,
                src_ip: None,
            };
            let _ = self.socket.send_direct(peer, path, &t);
        }
    }

    /// Spare socket `n` of `peer`, opened (with a reader) on first use; `None` when binding
    /// fails.
    fn spare(&mut self, peer: &Arc<Peer>, n: u16, to: SocketAddr) -> Option<Arc<UdpSocket>> {
        if let Some(s) = peer.spare(n) {
            return Some(s);
        }
        if n == 0 {
            debug!(peer = %peer.node.short(), %to, "opening spare sockets");
        }
        let bind: SocketAddr = if to.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(bind)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .map_err(|e| debug!("spare socket: {e}"))
            .ok()?;
        let socket = Arc::new(socket);
        peer.add_spare(n, socket.clone());
        let reader = tokio::spawn(spare_reader(
            socket.clone(),
            n,
            peer.clone(),
            self.peers.clone(),
            self.control_tx.clone(),
            self.quic_tx.clone(),
        ));
        self.spare_readers
            .entry(peer.node)
            .or_default()
            .push((n, reader));
        Some(socket)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A dropped JoinHandle would leave its task (and its socket) running.
        for (_, reader) in self.spare_readers.drain().flat_map(|(_, rs)| rs) {
            reader.abort();
        }
    }
}

/// Reads a spare socket: disco to the driver, QUIC from the peer to quinn.
async fn spare_reader(
    socket: Arc<UdpSocket>,
    n: u16,
    peer: Arc<Peer>,
    peers: Arc<PeerMap>,
    control: mpsc::Sender<Control>,
    quic: mpsc::Sender<(SocketAddr, Bytes)>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let data = &buf[..len];
        if disco::looks_like_disco(data) {
            let _ = control.try_send(Control::Spare {
                node: peer.node,
                n,
                from,
                packet: Bytes::copy_from_slice(data),
            });
        } else if data.first().is_some_and(|b| b & 0x40 != 0)
            && peers
                .by_direct(&from)
                .is_some_and(|p| Arc::ptr_eq(&p, &peer))
        {
            peers.note_direct_rx(&peer);
            if quic
                .send((peer.mapped, Bytes::copy_from_slice(data)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Our interface addresses with our ports. Loopback only when bound to loopback (tests on
/// one machine); never link-local.
pub(crate) fn local_candidates(socket: &MagicSocket) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for udp in std::iter::once(&socket.v4).chain(socket.v6.as_ref()) {
        let Ok(bound) = udp.local_addr() else {
            continue;
        };
        if !bound.ip().is_unspecified() {
            out.push(bound);
            continue;
        }
        for ip in if_addrs::get_if_addrs()
            .unwrap_or_default()
            .iter()
            .map(|i| i.ip())
        {
            let usable = match ip {
                IpAddr::V4(v4) => bound.is_ipv4() && !v4.is_loopback() && !v4.is_link_local(),
                IpAddr::V6(v6) => {
                    bound.is_ipv6() && !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80
                }
            };
            if usable {
                out.push(SocketAddr::new(ip, bound.port()));
            }
        }
    }
    out
}

/// Reads the relay: QUIC packets to quinn (under the sender's made-up address), disco
/// packets to the driver.
pub(crate) async fn relay_reader(
    relay: RelayClient,
    peers: Arc<PeerMap>,
    quic: mpsc::Sender<(SocketAddr, Bytes)>,
    disco: mpsc::Sender<Relayed>,
    #[cfg(feature = "webrtc")] pages: Option<mpsc::Sender<(NodeId, Bytes)>>,
) {
    while let Some((src, payload, _url)) = relay.recv().await {
        if disco::looks_like_disco(&payload) {
            let _ = disco.try_send(Relayed(src, payload));
            continue;
        }
        #[cfg(feature = "webrtc")]
        if let Some(pages) = &pages {
            if burrow_proto::signal::looks_like_signal(&payload)
                || burrow_proto::page_conn::looks_like_page_conn(&payload)
            {
                let _ = pages.try_send((src, payload));
                continue;
            }
        }
        {
            let peer = peers.get_or_insert_unconfirmed(src);
            peers.note_activity(&peer);
            if quic.send((peer.mapped, payload)).await.is_err() {
                return;
            }
        }
    }
}
