//! The endpoint's driver task: runs each peer's hole punching ([`PeerPaths`]) with real time,
//! seals and opens disco packets, learns our public address over STUN on the shared socket,
//! and moves peers between the relay and direct paths.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burrow_proto::disco::{self, SharedKey};
use burrow_proto::holepunch::{Dest, Event, PeerPaths, PunchConfig};
use burrow_proto::identity::{NodeId, SecretKey};
use burrow_proto::stun::{Class, Message as StunMessage, MessageWriter, Method, TransactionId};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, trace};

use super::peers::{Peer, PeerMap};
use super::socket::{Control, MagicSocket};
use crate::relay_client::RelayClient;

/// Our public address is asked again this often (which also holds the NAT mapping open).
const STUN_EVERY: Duration = Duration::from_secs(20);
/// Until a STUN server answers, it is asked this often.
const STUN_RETRY: Duration = Duration::from_millis(500);

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
}

pub(crate) struct Driver {
    pub secret: SecretKey,
    pub socket: Arc<MagicSocket>,
    pub peers: Arc<PeerMap>,
    pub relay: Option<RelayClient>,
    pub stun_servers: Vec<SocketAddr>,
    pub punch: PunchConfig,
    pub control: mpsc::Receiver<Control>,
    pub relayed_disco: mpsc::Receiver<Relayed>,
    pub commands: mpsc::Receiver<Command>,
    /// Our candidate addresses, for tickets.
    pub candidates: watch::Sender<Vec<SocketAddr>>,
    /// Bumped whenever a peer's path changes.
    pub path_changes: watch::Sender<u64>,
}

impl Driver {
    pub async fn run(mut self) {
        let me = self.secret.node_id();
        let mut states: HashMap<NodeId, PeerState> = HashMap::new();
        let mut local = local_candidates(&self.socket);
        let mut reflexive: Option<SocketAddr> = None;
        let mut stun_pending: Vec<(TransactionId, SocketAddr)> = Vec::new();
        let mut next_stun = Instant::now();
        let mut stun_answered = false;
        loop {
            let now = Instant::now();
            if now >= next_stun && !self.stun_servers.is_empty() {
                stun_pending.clear();
                for &server in &self.stun_servers {
                    let tid = TransactionId(rand::random());
                    let mut req = Vec::new();
                    MessageWriter::new(&mut req, Class::Request, Method::BINDING, tid).finish();
                    if let Some(udp) = self.socket.udp_for(&server) {
                        let _ = udp.send_control(server, &req, None);
                        stun_pending.push((tid, server));
                    }
                }
                next_stun = now
                    + if stun_answered {
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
                if let Some(t) = st.paths.poll_timeout(now) {
                    wake = wake.min(t);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                cmd = self.commands.recv() => match cmd {
                    None => return,
                    Some(Command::Connect { node, addrs }) => {
                        let Some(st) = self.state(&mut states, node, &local, reflexive) else { continue };
                        st.paths.add_peer_candidates(&addrs);
                        st.paths.start(Instant::now());
                        self.flush(me, st);
                    }
                },
                Some(Relayed(node, packet)) = self.relayed_disco.recv() => {
                    let Some(st) = self.state(&mut states, node, &local, reflexive) else { continue };
                    match st.key.open(&packet) {
                        Ok(msg) => {
                            st.paths.handle_message(Instant::now(), Dest::Relay, msg);
                            self.flush(me, st);
                        }
                        Err(e) => debug!(peer = %node.short(), "bad relayed disco packet: {e}"),
                    }
                }
                Some(Control::Udp(from, packet)) = self.control.recv() => {
                    // Disco first: a sender key can start with STUN's magic cookie.
                    let stun = (!disco::looks_like_disco(&packet)).then(|| StunMessage::parse(&packet).ok()).flatten();
                    if let Some(stun) = stun {
                        let Some(i) = stun_pending.iter().position(|(t, s)| *t == stun.transaction_id && *s == from) else { continue };
                        stun_pending.swap_remove(i);
                        let Some(mapped) = stun.mapped() else { continue };
                        stun_answered = true;
                        if reflexive != Some(mapped) {
                            debug!(%mapped, "public address");
                            reflexive = Some(mapped);
                            local = local_candidates(&self.socket);
                            let ours = merge(&local, reflexive);
                            // Sent even when unchanged: it tells waiters that STUN answered.
                            self.candidates.send_replace(ours.clone());
                            for st in states.values_mut() {
                                st.paths.set_our_candidates(ours.clone());
                            }
                        }
                        continue;
                    }
                    // Disco over UDP only from peers we already know: strangers cannot make us
                    // keep state.
                    let Ok(node) = disco::sender(&packet) else { continue };
                    let Some(st) = states.get_mut(&node) else { continue };
                    match st.key.open(&packet) {
                        Ok(msg) => {
                            trace!(peer = %node.short(), %from, ?msg, "disco");
                            // An authenticated packet: QUIC from this address is the peer's.
                            self.peers.set_direct_source(from, &st.peer);
                            st.paths.handle_message(Instant::now(), Dest::Direct(from), msg);
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
                Some(e.insert(PeerState { peer, key, paths }))
            }
        }
    }

    /// Sends what the peer's core wants sent, and applies its path changes.
    fn flush(&self, me: NodeId, st: &mut PeerState) {
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
                        // Allow QUIC from where we probe: the peer may switch first.
                        self.peers.set_direct_source(to, &st.peer);
                        if let Err(e) = udp.send_control(to, &packet, t.ttl) {
                            trace!(%to, "disco send: {e}");
                        }
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
                    self.path_changes.send_modify(|n| *n += 1);
                }
                Event::Observed(addr) => trace!(%addr, "observed by peer"),
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
