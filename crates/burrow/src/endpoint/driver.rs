//! The endpoint's driver task: runs each peer's hole punching ([`PeerPaths`]) with real time,
//! seals and opens disco packets, learns our public address over STUN on the shared socket,
//! and moves peers between the relay and direct paths.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow_proto::disco::{self, NatHint, SharedKey};
use burrow_proto::holepunch::{Dest, Event, PeerPaths, PunchConfig};
use burrow_proto::identity::{NodeId, SecretKey};
use burrow_proto::stun::{Class, Message as StunMessage, MessageWriter, Method, TransactionId};
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use super::peers::{Peer, PeerMap};
use super::socket::{send_with_ttl, Control, MagicSocket};
use crate::relay_client::RelayClient;

/// Our public address is asked again this often (which also holds the NAT mapping open).
const STUN_EVERY: Duration = Duration::from_secs(20);
/// Until a STUN server answers, it is asked this often.
const STUN_RETRY: Duration = Duration::from_millis(500);
/// A dial waits at most this long for the primer TTL and our public address before punching
/// (the peer needs the public address, and hard-NAT peers aim their spares at it).
const HOPS_WAIT: Duration = Duration::from_secs(1);
/// A peer with no traffic for this long, and no punching under way, is forgotten by the
/// driver: its connection has ended (open connections send QUIC keep-alives every 15 s).
const PEER_STATE_IDLE: Duration = Duration::from_secs(60);
/// Spare sockets open at once across all peers (each is a file descriptor).
const MAX_SPARES: usize = 1024;
/// Peers with punching state at once; past it, pings from strangers are ignored.
const MAX_PEER_STATES: usize = 4096;
/// Pings from unknown keys whose key agreement we try per second: each costs an X25519
/// operation, so a flood of forged pings must not eat the CPU.
const STRANGER_PINGS_PER_SEC: u32 = 64;

/// What the endpoint asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// We are dialling `node`, known by these direct addresses: start punching.
    Connect {
        node: NodeId,
        addrs: Vec<SocketAddr>,
    },
}

/// A disco packet that came through the relay.
#[derive(Debug)]
pub(crate) struct Relayed(pub NodeId, pub Bytes);

struct PeerState {
    peer: Arc<Peer>,
    key: SharedKey,
    paths: PeerPaths,
    /// Readers of this peer's open spare sockets.
    spare_readers: Vec<(u16, JoinHandle<()>)>,
    /// Birthday probes sent to this peer (for the log).
    sprayed: u32,
}

pub(crate) struct Driver {
    pub secret: SecretKey,
    pub socket: Arc<MagicSocket>,
    pub peers: Arc<PeerMap>,
    pub relay: Option<RelayClient>,
    pub stun_servers: Vec<SocketAddr>,
    pub punch: PunchConfig,
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
    /// What STUN servers and peers tell us of our public address.
    pub stun: Stun,
}

/// Peers' views of our public address kept, the latest first.
const PEER_VIEWS: usize = 8;
/// Alternate STUN addresses asked beside the configured servers.
const MAX_STUN_OTHERS: usize = 4;

/// Our public address as STUN servers and peers see it, and whether it depends on the
/// destination.
#[derive(Default)]
pub(crate) struct Stun {
    /// Requests in flight: transaction, server.
    pending: Vec<(TransactionId, SocketAddr)>,
    /// Alternate addresses servers offered (RFC 5780 OTHER-ADDRESS, or a second port on a
    /// one-address server), asked too.
    others: Vec<SocketAddr>,
    /// The latest mapped address per server asked.
    mapped: Vec<(SocketAddr, SocketAddr)>,
    /// Our main socket's address as peers saw it in their pongs.
    peer_views: VecDeque<SocketAddr>,
    answered: bool,
}

impl Stun {
    /// A server answered, and so did every alternate address offered: what we know of our
    /// mapping won't change soon.
    fn settled(&self) -> bool {
        self.answered
            && self
                .others
                .iter()
                .all(|o| self.mapped.iter().any(|(s, _)| s == o))
    }

    /// Two destinations saw different public addresses: the NAT maps per destination. A
    /// peer's view counts where it saw the IP that STUN sees (not a LAN address).
    fn hard_nat(&self) -> bool {
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
    fn nat_hint(&self, local: &[SocketAddr]) -> NatHint {
        if self.hard_nat() {
            NatHint::Hard
        } else if !self.mapped.is_empty() && self.mapped.iter().all(|(_, m)| local.contains(m)) {
            NatHint::Open
        } else {
            NatHint::Easy
        }
    }

    /// Addresses a response offers for telling whether our mapping depends on the
    /// destination: OTHER-ADDRESS, or a one-address server's second port.
    fn note_offers(&mut self, from: SocketAddr, msg: &StunMessage<'_>) -> bool {
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
    fn note_peer_view(&mut self, addr: SocketAddr) {
        if self.peer_views.front() != Some(&addr) {
            self.peer_views.retain(|a| *a != addr);
            self.peer_views.push_front(addr);
            self.peer_views.truncate(PEER_VIEWS);
        }
    }
}

impl Driver {
    pub async fn run(mut self) {
        let me = self.secret.node_id();
        let mut states: HashMap<NodeId, PeerState> = HashMap::new();
        let mut local = local_candidates(&self.socket);
        let mut reflexive: Option<SocketAddr> = None;
        let mut nat = NatHint::Easy;
        let mut next_stun = Instant::now();
        // The primer TTL is measured once, off the runtime; dials wait for it (briefly).
        let (hops_tx, mut hops_rx) = tokio::sync::oneshot::channel();
        match self.stun_servers.iter().find(|s| s.is_ipv4()).copied() {
            Some(server) => {
                tokio::task::spawn_blocking(move || {
                    let _ = hops_tx.send(super::hops::nat_exit_ttl(server));
                });
            }
            None => drop(hops_tx),
        }
        let mut hops_known = false;
        let mut deferred: Vec<(NodeId, Instant)> = Vec::new();
        let mut strangers = RateWindow::default();
        loop {
            let now = Instant::now();
            // STUN answers and peers' pongs both tell us about our NAT.
            let hint = self.stun.nat_hint(&local);
            if hint != nat {
                nat = hint;
                debug!(?nat, "our NAT");
                for st in states.values_mut() {
                    st.paths.set_nat(nat);
                }
            }
            if now >= next_stun && !self.stun_servers.is_empty() {
                let stun = &mut self.stun;
                stun.pending.clear();
                for &server in self.stun_servers.iter().chain(&stun.others) {
                    let tid = TransactionId(rand::random());
                    let mut req = Vec::new();
                    MessageWriter::new(&mut req, Class::Request, Method::BINDING, tid).finish();
                    if let Some(udp) = self.socket.udp_for(&server) {
                        let _ = udp.send_control(server, &req, None);
                        stun.pending.push((tid, server));
                    }
                }
                next_stun = now
                    + if stun.answered {
                        STUN_EVERY
                    } else {
                        STUN_RETRY
                    };
            }
            let mut wake = if self.stun_servers.is_empty() {
                now + Duration::from_secs(3600)
            } else {
                next_stun
            };
            // Dials start punching once we know our primer TTL and public address, or waited
            // long enough for them.
            let ready = hops_known && (self.stun.settled() || self.stun_servers.is_empty());
            let due = |at: Instant| ready || now >= at + HOPS_WAIT;
            for (node, _) in deferred.iter().filter(|(_, at)| due(*at)) {
                if let Some(st) = states.get_mut(node) {
                    st.paths.start(now);
                }
            }
            deferred.retain(|(_, at)| !due(*at));
            if let Some((_, at)) = deferred.first() {
                wake = wake.min(*at + HOPS_WAIT);
            }
            for st in states.values_mut() {
                let (direct_rx, activity) = self.peers.times(&st.peer);
                if let (Some(t), Some(d)) = (direct_rx, st.peer.direct()) {
                    st.paths.note_received(t, d.addr);
                }
                if let Some(t) = activity {
                    st.paths.note_activity(t);
                }
                st.paths.handle_timeout(now);
                self.flush(me, st);
                if !st.paths.is_punching() && !st.spare_readers.is_empty() {
                    close_unused_spares(st);
                }
                if let Some(t) = st.paths.poll_timeout(now) {
                    wake = wake.min(t);
                }
            }
            // Peers whose connections ended: their punching state and spares go.
            states.retain(|node, st| {
                let (_, activity) = self.peers.times(&st.peer);
                st.paths.is_punching()
                    || deferred.iter().any(|(n, _)| n == node)
                    || activity.is_some_and(|t| now.saturating_duration_since(t) < PEER_STATE_IDLE)
            });
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                ttl = &mut hops_rx, if !hops_known => {
                    hops_known = true;
                    if let Ok(Some(ttl)) = ttl {
                        debug!(ttl, "primer TTL: hops to leave our NATs");
                        self.punch.primer_ttl = ttl;
                        for st in states.values_mut() {
                            st.paths.set_primer_ttl(ttl);
                        }
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => return,
                    Some(Command::Connect { node, addrs }) => {
                        let Some(st) = self.state(&mut states, node, &local, reflexive, nat) else { continue };
                        st.paths.add_peer_candidates(&addrs);
                        // Started by the loop's next turn, at once when nothing is missing.
                        deferred.push((node, Instant::now()));
                    }
                },
                Some(Relayed(node, packet)) = self.relayed_disco.recv() => {
                    let Some(st) = self.state(&mut states, node, &local, reflexive, nat) else { continue };
                    match st.key.open(&packet) {
                        Ok(msg) => {
                            st.paths.handle_message(Instant::now(), Dest::Relay, msg);
                            self.flush(me, st);
                        }
                        Err(e) => debug!(peer = %node.short(), "bad relayed disco packet: {e}"),
                    }
                }
                Some(control) = self.control.recv() => {
                    let (node, via, packet) = match control {
                        Control::Udp(from, packet) => {
                            // Disco first: a sender key can start with STUN's magic cookie.
                            if !disco::looks_like_disco(&packet) {
                                let Ok(msg) = StunMessage::parse(&packet) else { continue };
                                let stun = &mut self.stun;
                                let Some(i) = stun.pending.iter().position(|(t, s)| *t == msg.transaction_id && *s == from) else { continue };
                                stun.pending.swap_remove(i);
                                let Some(mapped) = msg.mapped() else { continue };
                                stun.answered = true;
                                if stun.note_offers(from, &msg) {
                                    // Ask the alternate addresses too, to see whether our
                                    // mapping depends on the destination.
                                    next_stun = Instant::now();
                                }
                                stun.mapped.retain(|(s, _)| *s != from);
                                stun.mapped.push((from, mapped));
                                // Our public address is what the configured servers see.
                                if self.stun_servers.contains(&from) && reflexive != Some(mapped) {
                                    debug!(%mapped, "public address");
                                    if reflexive.is_some() {
                                        // A new mapping: what peers saw of the old one is stale.
                                        stun.peer_views.clear();
                                    }
                                    reflexive = Some(mapped);
                                    local = local_candidates(&self.socket);
                                    let ours = merge(&local, reflexive);
                                    self.candidates.send_replace(ours.clone());
                                    for st in states.values_mut() {
                                        st.paths.set_our_candidates(ours.clone());
                                    }
                                } else if self.stun_servers.contains(&from) {
                                    // Unchanged, but it tells waiters that STUN answered.
                                    self.candidates.send_modify(|_| {});
                                }
                                continue;
                            }
                            // A stranger's disco makes state only if it is an authentic ping.
                            let Ok(node) = disco::sender(&packet) else { continue };
                            (node, Dest::Direct(from), packet)
                        }
                        Control::Spare { node, n, from, packet } => (node, Dest::Spare(n, from), packet),
                    };
                    let from = match via {
                        Dest::Direct(a) | Dest::Spare(_, a) => a,
                        Dest::Relay => continue,
                    };
                    if !states.contains_key(&node) {
                        // A peer that found our address itself (a ticket without relay, mDNS):
                        // its first packet is a ping, and only an authentic one makes state.
                        if states.len() >= MAX_PEER_STATES || !strangers.allow(Instant::now(), STRANGER_PINGS_PER_SEC) {
                            continue;
                        }
                        let Ok(key) = SharedKey::new(&self.secret, &node) else { continue };
                        if !matches!(key.open(&packet), Ok(disco::Message::Ping { .. })) {
                            continue;
                        }
                        debug!(peer = %node.short(), %from, "ping from a new peer");
                    }
                    let Some(st) = self.state(&mut states, node, &local, reflexive, nat) else { continue };
                    match st.key.open(&packet) {
                        Ok(msg) => {
                            trace!(peer = %node.short(), ?via, ?msg, "disco");
                            // An authenticated packet: QUIC from this address is the peer's.
                            self.peers.set_direct_source(from, &st.peer);
                            st.paths.handle_message(Instant::now(), via, msg);
                            self.flush(me, st);
                        }
                        Err(e) => debug!(peer = %node.short(), %from, "bad disco packet: {e}"),
                    }
                }
            }
        }
    }

    /// The state for `node`, created on first sight.
    fn state<'a>(
        &self,
        states: &'a mut HashMap<NodeId, PeerState>,
        node: NodeId,
        local: &[SocketAddr],
        reflexive: Option<SocketAddr>,
        nat: NatHint,
    ) -> Option<&'a mut PeerState> {
        use std::collections::hash_map::Entry;
        match states.entry(node) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                let key = SharedKey::new(&self.secret, &node)
                    .map_err(|err| debug!(peer = %node.short(), "no disco key: {err}"))
                    .ok()?;
                let (peer, _) = self.peers.get_or_insert(node);
                let mut paths = PeerPaths::new(self.punch.clone(), rand::random());
                paths.set_our_candidates(merge(local, reflexive));
                paths.set_nat(nat);
                Some(e.insert(PeerState {
                    peer,
                    key,
                    paths,
                    spare_readers: Vec::new(),
                    sprayed: 0,
                }))
            }
        }
    }

    /// Spare socket `n` of this peer, opened (with a reader) on first use; `None` past
    /// [`MAX_SPARES`] or when binding fails.
    fn spare(&self, st: &mut PeerState, n: u16, to: SocketAddr) -> Option<Arc<UdpSocket>> {
        if let Some(s) = st.peer.spare(n) {
            return Some(s);
        }
        if SPARES_OPEN.load(Ordering::Relaxed) >= MAX_SPARES {
            return None;
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
        SPARES_OPEN.fetch_add(1, Ordering::Relaxed);
        st.peer.add_spare(n, socket.clone());
        let reader = tokio::spawn(spare_reader(
            socket.clone(),
            n,
            st.peer.clone(),
            self.peers.clone(),
            self.control_tx.clone(),
            self.quic_tx.clone(),
        ));
        st.spare_readers.push((n, reader));
        Some(socket)
    }

    /// Sends what the peer's core wants sent, and applies its path changes.
    fn flush(&mut self, me: NodeId, st: &mut PeerState) {
        while let Some(t) = st.paths.poll_transmit() {
            let packet = match st.key.seal(&me, &t.msg, rand::random()) {
                Ok(p) => p,
                Err(e) => {
                    debug!("disco seal: {e}");
                    continue;
                }
            };
            match t.dest {
                Dest::Direct(to) => {
                    if let Some(udp) = self.socket.udp_for(&to) {
                        // Allow QUIC from where we probe: the peer may switch first. (Not from
                        // every port a birthday spray tries.)
                        if st.paths.knows(to) {
                            self.peers.set_direct_source(to, &st.peer);
                        } else {
                            st.sprayed += 1;
                            if st.sprayed % 512 == 1 {
                                debug!(peer = %st.peer.node.short(), ip = %to.ip(), sent = st.sprayed, "birthday spray");
                            }
                        }
                        if let Err(e) = udp.send_control(to, &packet, t.ttl) {
                            trace!(%to, "disco send: {e}");
                        }
                    }
                }
                Dest::Spare(n, to) => {
                    if n == 0 && t.ttl.is_some() {
                        debug!(peer = %st.peer.node.short(), %to, "priming spare sockets");
                    }
                    let Some(spare) = self.spare(st, n, to) else {
                        continue;
                    };
                    self.peers.set_direct_source(to, &st.peer);
                    if let Err(e) = send_with_ttl(&spare, to, &packet, t.ttl) {
                        trace!(%to, n, "disco send on a spare socket: {e}");
                    }
                }
                Dest::Relay => {
                    if let Some(relay) = &self.relay {
                        let _ = relay.send(st.peer.node, Bytes::from(packet));
                    }
                }
            }
        }
        while let Some(e) = st.paths.poll_event() {
            match e {
                Event::PathChanged(path) => {
                    debug!(peer = %st.peer.node.short(), ?path, "path");
                    st.peer.set_direct(path);
                    if let Some(path) = &path {
                        for datagram in st.peer.take_held() {
                            let t = quinn::udp::Transmit {
                                destination: path.addr,
                                ecn: None,
                                contents: &datagram,
                                segment_size: None,
                                src_ip: None,
                            };
                            let _ = self.socket.send_direct(&st.peer, path, &t);
                        }
                    }
                    self.path_changes.send_modify(|n| *n += 1);
                }
                Event::Observed(addr) => {
                    trace!(%addr, "observed by peer");
                    self.stun.note_peer_view(addr);
                }
            }
        }
    }
}

/// Counts events in one-second windows.
#[derive(Default)]
struct RateWindow {
    start: Option<Instant>,
    count: u32,
}

impl RateWindow {
    /// Whether one more event fits `per_sec` in the current window.
    fn allow(&mut self, now: Instant, per_sec: u32) -> bool {
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            self.start = Some(now);
            self.count = 0;
        }
        self.count += 1;
        self.count <= per_sec
    }
}

/// Spare sockets open now, across all endpoints of the process.
static SPARES_OPEN: AtomicUsize = AtomicUsize::new(0);

impl Drop for PeerState {
    fn drop(&mut self) {
        // Nobody watches the direct path any more: traffic that comes back starts on the relay.
        self.peer.set_direct(None);
        self.peer.take_held();
        self.peer.retain_spares(|_| false);
        for (_, reader) in self.spare_readers.drain(..) {
            reader.abort();
            SPARES_OPEN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Closes the spare sockets no live path uses.
fn close_unused_spares(st: &mut PeerState) {
    let keep: Vec<u16> = st.paths.spares_in_use().collect();
    st.peer.retain_spares(|n| keep.contains(&n));
    st.spare_readers.retain(|(n, reader)| {
        let used = keep.contains(n);
        if !used {
            reader.abort();
            SPARES_OPEN.fetch_sub(1, Ordering::Relaxed);
        }
        used
    });
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

fn merge(local: &[SocketAddr], reflexive: Option<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = reflexive.into_iter().collect();
    out.extend(local.iter().filter(|a| Some(**a) != reflexive));
    out
}

/// Reads the relay: QUIC packets to quinn (under the sender's made-up address), disco
/// packets to the driver.
pub(crate) async fn relay_reader(
    relay: RelayClient,
    peers: Arc<PeerMap>,
    quic: mpsc::Sender<(SocketAddr, Bytes)>,
    disco: mpsc::Sender<Relayed>,
) {
    while let Some((src, payload, _url)) = relay.recv().await {
        if disco::looks_like_disco(&payload) {
            let _ = disco.try_send(Relayed(src, payload));
        } else {
            let (peer, _) = peers.get_or_insert(src);
            peers.note_activity(&peer);
            if quic.send((peer.mapped, payload)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_that_sees_another_port_than_stun_means_a_hard_nat() {
        let mut stun = Stun::default();
        let local = [addr("10.1.0.2:4000")];
        assert_eq!(stun.nat_hint(&local), NatHint::Easy, "nothing known yet");
        stun.mapped
            .push((addr("203.0.113.30:3478"), addr("198.18.1.2:50000")));
        stun.note_peer_view(addr("198.18.1.2:50000"));
        assert_eq!(stun.nat_hint(&local), NatHint::Easy, "the same mapping");
        stun.note_peer_view(addr("10.1.0.2:4000"));
        assert_eq!(stun.nat_hint(&local), NatHint::Easy, "a LAN peer's view");
        stun.note_peer_view(addr("198.18.1.2:61234"));
        assert_eq!(stun.nat_hint(&local), NatHint::Hard);
        for port in 0..2 * PEER_VIEWS as u16 {
            stun.note_peer_view(addr(&format!("10.1.0.3:{port}")));
        }
        assert_eq!(stun.nat_hint(&local), NatHint::Easy, "old views age out");
    }

    #[test]
    fn a_second_stun_port_is_asked_and_a_differing_mapping_means_a_hard_nat() {
        let mut stun = Stun::default();
        let server = addr("203.0.113.30:3478");
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            Class::Success,
            Method::BINDING,
            TransactionId([1; 12]),
        );
        w.xor_mapped_address(addr("198.18.1.2:50000"))
            .alternate_port(3479);
        w.finish();
        let msg = StunMessage::parse(&buf).unwrap();
        assert!(stun.note_offers(server, &msg));
        assert_eq!(stun.others, [addr("203.0.113.30:3479")]);
        assert!(!stun.note_offers(server, &msg), "asked once");
        stun.mapped.push((server, addr("198.18.1.2:50000")));
        assert!(!stun.settled(), "waits for the second port");
        stun.answered = true;
        stun.mapped
            .push((addr("203.0.113.30:3479"), addr("198.18.1.2:50007")));
        assert!(stun.settled());
        assert_eq!(stun.nat_hint(&[]), NatHint::Hard);
    }
}
