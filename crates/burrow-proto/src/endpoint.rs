//! The endpoint core: everything an endpoint decides about reaching its peers, without IO.
//!
//! Like quinn-proto's `Endpoint`, which "dispatches incoming datagrams to the related
//! Connection", [`EndpointCore`] owns every peer's hole punching ([`PeerPaths`]) by NodeId and
//! routes each disco packet to it, after opening and authenticating it. Around that it owns:
//!
//! - **disco sealing and opening**, one [`SharedKey`] per peer, nonces from the seed;
//! - **who is punched for**: only peers we dial ([`Input::Connect`]) or whose key a QUIC
//!   handshake proved ([`Input::Authenticated`]). A stranger's ping gets one pong, within
//!   per-source budgets, and what it sends through the relay waits unopened until its key is
//!   proven: nothing a stranger says makes us probe an address or tell it ours (see
//!   `strangers`);
//! - **whose QUIC a direct address carries**: proven paths, and tentatively the sources of
//!   authentic pings; a tentative claim takes no one's place, nothing takes a live path's
//!   (see `sources`);
//! - **budgets**: probes per destination IP, key agreements and pongs per source, and
//!   candidates filtered (no loopback unless we are on it, no link-local, private addresses
//!   only on our own subnets);
//! - **our public address and NAT hint**: Binding requests to the STUN servers (and to the
//!   alternate addresses or second ports they offer), and the address peers report in their
//!   pongs; two destinations that see different public ports mean a hard NAT;
//! - **deferred dials**: a dial starts punching once the primer TTL is measured and the NAT
//!   verdict is in, or after [`EndpointConfig::dial_wait`];
//! - **one timer heap** of per-peer deadlines, so a timeout touches only the peers that are due;
//! - **garbage collection** of peers whose connections ended, and of their spare sockets.
//!
//! It follows the crate's calling convention. One thing is read rather than fed: QUIC packets
//! go between quinn and the sockets without passing through the core (that is the data path),
//! so [`Input::Timeout`] carries a way to read when a peer last carried traffic, which the core
//! asks only for the peers whose deadlines are due.

mod reflexive;
mod sources;
mod strangers;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::disco::{self, Message, NatHint, SharedKey};
use crate::holepunch::{self, Dest, DirectPath, PeerPaths, PunchConfig};
use crate::identity::{NodeId, SecretKey};
use crate::rate::{source_prefix, KeyedBuckets, TokenBucket};
use crate::stun::{Class, Message as StunMessage, MessageWriter, Method, TransactionId};
use crate::Rng;
use reflexive::Reflexive;
use sources::{Change, Sources};
use strangers::Strangers;
/// The soonest a peer's deadline comes back after it was handled.
const MIN_TIMER_STEP: Duration = Duration::from_millis(1);

/// Settings of an [`EndpointCore`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Hole punching timings.
    pub punch: PunchConfig,
    /// Whether a relay carries our disco to peers. Without one nobody can answer a
    /// CallMeMaybe, so punching pings at once.
    pub relay: bool,
    /// STUN servers that tell us our public address (the relays' co-hosted STUN, typically).
    pub stun_servers: Vec<SocketAddr>,
    /// Our public address is asked again this often, which also holds the NAT mapping open.
    pub stun_every: Duration,
    /// Until a server answers, it is asked this often.
    pub stun_retry: Duration,
    /// A dial waits at most this long for the primer TTL and the NAT verdict before punching
    /// (the peer needs our public address, and a hard NAT's spares aim at the peer's).
    pub dial_wait: Duration,
    /// A peer with no traffic for this long, and no punching under way, is forgotten: its
    /// connection has ended (open connections send QUIC keep-alives every 15 s).
    pub peer_idle: Duration,
    /// Peers with punching state at once (dialled or proven); past it, proven keys wait.
    pub max_peers: usize,
    /// Strangers remembered at once (their disco keys and relayed packets); past it, the one
    /// first seen longest ago is forgotten.
    pub max_strangers: usize,
    /// How long a stranger's relayed packet waits for its QUIC handshake.
    pub stranger_held_for: Duration,
    /// Key agreements (an X25519 each) tried for strangers' packets per second, in all...
    pub stranger_keys_per_sec: f64,
    /// ...and from one source (an IPv4 address or IPv6 /64), so that junk from one place
    /// cannot spend everyone's budget.
    pub stranger_keys_per_source_per_sec: f64,
    /// Pongs sent to one destination (address or /64) per second for strangers' pings: a
    /// replayed ping from a spoofed source reflects no more than this.
    pub stranger_pongs_per_dest_per_sec: f64,
    /// Probes (pings, primers, birthday sprays) sent to one IP address per second, for all
    /// peers together...
    pub probes_per_ip_per_sec: f64,
    /// ...and at most this many at once (one birthday attempt: primers plus spray).
    pub probe_burst_per_ip: f64,
    /// Addresses tentatively claimed at once (see `sources`); past it, the oldest goes.
    pub max_tentative_sources: usize,
    /// Spare sockets (birthday probing) open at once across all peers.
    pub max_spares: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            punch: PunchConfig::default(),
            relay: true,
            stun_servers: Vec::new(),
            stun_every: Duration::from_secs(20),
            stun_retry: Duration::from_millis(500),
            dial_wait: Duration::from_secs(1),
            peer_idle: Duration::from_secs(60),
            max_peers: 4096,
            max_strangers: 1024,
            stranger_held_for: Duration::from_secs(30),
            stranger_keys_per_sec: 1024.0,
            stranger_keys_per_source_per_sec: 8.0,
            stranger_pongs_per_dest_per_sec: 8.0,
            probes_per_ip_per_sec: 1000.0,
            probe_burst_per_ip: 2500.0,
            max_tentative_sources: 4096,
            max_spares: 1024,
        }
    }
}

/// When a peer last carried QUIC traffic, as the data path saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// The last packet that came straight from the peer's direct path.
    pub direct_rx: Option<Instant>,
    /// The last packet either way, on any path.
    pub any: Option<Instant>,
}

/// What happens to an endpoint (see the crate's calling convention).
pub enum Input<'a> {
    /// A STUN or disco datagram on the main socket of its family (QUIC goes to quinn).
    Udp {
        /// The sender.
        from: SocketAddr,
        /// The datagram.
        packet: &'a [u8],
    },
    /// A disco datagram on spare socket `n` of `node`.
    Spare {
        /// The peer the spare socket was opened for.
        node: NodeId,
        /// The spare socket.
        n: u16,
        /// The sender.
        from: SocketAddr,
        /// The datagram.
        packet: &'a [u8],
    },
    /// A disco datagram that came through the relay, from `node` (the relay vouches for the
    /// sender's key; the seal is checked all the same).
    Relayed {
        /// The sender.
        node: NodeId,
        /// The datagram.
        packet: &'a [u8],
    },
    /// The application dials `node`, known by these direct addresses (maybe none). Dialling
    /// again adds addresses found later.
    Connect {
        /// The peer.
        node: NodeId,
        /// Its direct addresses.
        addrs: &'a [SocketAddr],
    },
    /// A QUIC handshake proved that the peer holds `node`'s key: it may be punched for now,
    /// and what it sent through the relay meanwhile is read.
    Authenticated {
        /// The peer.
        node: NodeId,
    },
    /// The application no longer admits `node` (a mesh revoked it, or it failed a membership
    /// check after its handshake): its punching state, paths, sources and held packets go, and
    /// it is a stranger again until the next [`Input::Authenticated`] or [`Input::Connect`].
    Revoked {
        /// The peer.
        node: NodeId,
    },
    /// Our interface addresses, with our ports (unchanged ones are ignored).
    LocalAddrs(Vec<SocketAddr>),
    /// The hops out of our NATs were measured: the primer TTL, or `None` when nothing could
    /// tell (then the configured one stays).
    PrimerTtl(Option<u8>),
    /// Time passes. The function tells when a peer last carried traffic.
    Timeout(&'a dyn Fn(&NodeId) -> Activity),
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// From the main socket of the address's family.
    Udp(SocketAddr),
    /// From spare socket `n` of `node` (opened by the driver on first use).
    Spare {
        /// The peer.
        node: NodeId,
        /// The spare socket.
        n: u16,
        /// The destination.
        to: SocketAddr,
    },
    /// Through the relay, to this key.
    Relay(NodeId),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub dest: Destination,
    /// The bytes: a sealed disco packet or a STUN request.
    pub payload: Vec<u8>,
    /// An IP TTL (hop limit) for this one datagram, for primers; `None` is the default.
    pub ttl: Option<u8>,
}

/// What the driver and the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Traffic to `node` takes this direct path now, or the relay (`None`).
    PathChanged {
        /// The peer.
        node: NodeId,
        /// The path.
        path: Option<DirectPath>,
    },
    /// QUIC from `addr` is `node`'s: a path there is proven, or an authentic ping came from
    /// there (see `sources`). Said when it changes.
    DirectSource {
        /// The peer.
        node: NodeId,
        /// The address.
        addr: SocketAddr,
    },
    /// QUIC from `addr` is nobody's any more.
    SourceReleased(SocketAddr),
    /// A stranger reached us with an authentic ping from `addr` (which it owns, as far as
    /// `sources` knows): until a path to it is proven, answer its QUIC there. That is how a
    /// peer that dials us without a relay gets its handshake answered.
    ReplyTo {
        /// The stranger.
        node: NodeId,
        /// Where its ping came from.
        addr: SocketAddr,
    },
    /// A configured STUN server answered; these are our direct addresses now (the public one
    /// first), for tickets.
    Candidates(Vec<SocketAddr>),
    /// What we tell peers of our NAT changed.
    Nat(NatHint),
    /// Spare sockets of `node` other than `keep` are no longer needed.
    SparesUnused {
        /// The peer.
        node: NodeId,
        /// The spare sockets still in use.
        keep: Vec<u16>,
    },
    /// The core forgot `node` (its connection ended): its spare sockets and direct path go,
    /// and traffic that comes back starts on the relay.
    PeerForgotten(NodeId),
}

/// What [`EndpointCore::poll_output`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A datagram to send.
    Transmit(Transmit),
    /// Something happened.
    Event(Event),
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

struct PeerState {
    key: SharedKey,
    paths: PeerPaths,
    /// Spare sockets the driver was told to use for this peer.
    spares: Vec<u16>,
    /// The deadline in the timer heap.
    deadline: Option<Instant>,
    /// When the state was made, or the peer last carried traffic, as far as we know.
    alive_at: Instant,
    /// The peer's latest CallMeMaybe (its usable candidates, its NAT, whether it answered),
    /// and when it came.
    last_call: Option<(Instant, Vec<SocketAddr>, NatHint, bool)>,
    /// When its punching last started over for a new connection.
    met_anew: Option<Instant>,
}

/// The sans-IO core of an endpoint (see the module docs).
pub struct EndpointCore {
    secret: SecretKey,
    me: NodeId,
    config: EndpointConfig,
    rng: Rng,
    /// Whether any input came yet (the first one asks the STUN servers).
    started: bool,
    /// Ordered, so that whatever the core does for every peer it does in the same order on
    /// every run.
    peers: BTreeMap<NodeId, PeerState>,
    /// Per-peer deadlines; an entry counts only while it equals its peer's `deadline`.
    timers: BinaryHeap<Reverse<(Instant, NodeId)>>,
    local: Vec<SocketAddr>,
    reflexive: Option<SocketAddr>,
    nat: NatHint,
    stun: Reflexive,
    strangers: Strangers,
    sources: Sources,
    stranger_keys: TokenBucket,
    stranger_keys_by_source: KeyedBuckets<IpAddr>,
    stranger_pongs_by_dest: KeyedBuckets<IpAddr>,
    probes_by_ip: KeyedBuckets<IpAddr>,
    /// Whether the primer TTL has been measured (or found unmeasurable).
    primer_known: bool,
    /// Dials waiting for the primer TTL and the NAT verdict, since when.
    deferred: Vec<(NodeId, Instant)>,
    spares_open: usize,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl EndpointCore {
    /// A core for the node `secret`; `seed` feeds STUN transaction ids, disco nonces and the
    /// peers' punching.
    pub fn new(secret: SecretKey, mut config: EndpointConfig, seed: u64) -> EndpointCore {
        if !config.relay {
            config.punch.responder_wait = Duration::ZERO;
        }
        // Tables of budgets hold about as many keys as the tables they protect.
        let keyed = |rate: f64, burst: f64| KeyedBuckets::new(rate, burst, config.max_strangers);
        EndpointCore {
            strangers: Strangers::new(config.max_strangers, config.stranger_held_for),
            sources: Sources::new(config.max_tentative_sources),
            stranger_keys: TokenBucket::new(
                config.stranger_keys_per_sec,
                config.stranger_keys_per_sec,
            ),
            stranger_keys_by_source: keyed(
                config.stranger_keys_per_source_per_sec,
                2.0 * config.stranger_keys_per_source_per_sec,
            ),
            stranger_pongs_by_dest: keyed(
                config.stranger_pongs_per_dest_per_sec,
                2.0 * config.stranger_pongs_per_dest_per_sec,
            ),
            probes_by_ip: KeyedBuckets::new(
                config.probes_per_ip_per_sec,
                config.probe_burst_per_ip,
                config.max_peers,
            ),
            me: secret.node_id(),
            secret,
            config,
            rng: Rng::new(seed),
            started: false,
            peers: BTreeMap::new(),
            timers: BinaryHeap::new(),
            local: Vec::new(),
            reflexive: None,
            nat: NatHint::Easy,
            stun: Reflexive::default(),
            primer_known: false,
            deferred: Vec::new(),
            spares_open: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Peers with punching state now (dialled or proven).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Strangers remembered now.
    pub fn stranger_count(&self) -> usize {
        self.strangers.len()
    }

    /// Addresses claimed now: tentatively, and by proven paths.
    pub fn source_counts(&self) -> (usize, usize) {
        self.sources.counts()
    }

    /// Whose QUIC packets from `addr` are, as the socket layer was told.
    pub fn source_owner(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.sources.owner(addr)
    }

    /// Spare sockets in use now, across all peers.
    pub fn spares_open(&self) -> usize {
        self.spares_open
    }

    /// What we tell peers of our NAT.
    pub fn nat_hint(&self) -> NatHint {
        self.nat
    }

    /// What we know of our NAT: [`EndpointCore::nat_hint`] once a STUN server has answered or
    /// peers' pongs showed a per-destination mapping; `None` before (the hint's
    /// [`NatHint::Easy`] then means only "not known").
    pub fn nat(&self) -> Option<NatHint> {
        (self.stun.answered || self.nat != NatHint::Easy).then_some(self.nat)
    }

    /// The direct path to `node`, if one is in use.
    pub fn path(&self, node: &NodeId) -> Option<DirectPath> {
        self.peers.get(node)?.paths.best()
    }

    /// Feeds one input (see the crate's calling convention).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if !self.started && !self.config.stun_servers.is_empty() {
            self.stun.next = Some(now);
        }
        self.started = true;
        match input {
            Input::Udp { from, packet } => {
                // Disco first: a sender key can start with STUN's magic cookie.
                if disco::looks_like_disco(packet) {
                    self.handle_disco(now, Dest::Direct(from), None, packet);
                } else {
                    self.handle_stun(now, from, packet);
                }
            }
            Input::Spare {
                node,
                n,
                from,
                packet,
            } => self.handle_disco(now, Dest::Spare(n, from), Some(node), packet),
            Input::Relayed { node, packet } => {
                self.handle_disco(now, Dest::Relay, Some(node), packet)
            }
            Input::Connect { node, addrs } => {
                self.meet_anew(now, node);
                if !self.trust(now, node) {
                    return;
                }
                let addrs = self.usable(addrs);
                self.feed(now, node, holepunch::Input::PeerCandidates(&addrs));
                if !self.deferred.iter().any(|(n, _)| *n == node) {
                    self.deferred.push((node, now));
                }
            }
            Input::Authenticated { node } => {
                self.meet_anew(now, node);
                self.trust(now, node);
            }
            Input::Revoked { node } => {
                self.deferred.retain(|(n, _)| *n != node);
                self.strangers.take(now, &node);
                self.forget(node);
            }
            Input::LocalAddrs(addrs) => {
                if addrs != self.local {
                    self.local = addrs;
                    self.update_candidates(now);
                }
            }
            Input::PrimerTtl(ttl) => {
                self.primer_known = true;
                if let Some(ttl) = ttl {
                    self.config.punch.primer_ttl = ttl;
                    self.feed_all(now, |_| holepunch::Input::PrimerTtl(ttl));
                }
            }
            Input::Timeout(activity) => self.handle_timeout(now, activity),
        }
        self.update_nat(now);
        self.start_due_dials(now);
        self.ask_stun(now);
    }

    /// The next thing to do: transmits first, then events, then the next timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        // Entries whose peer has since moved its deadline are dropped on the way.
        while let Some(&Reverse((at, node))) = self.timers.peek() {
            if self
                .peers
                .get(&node)
                .is_some_and(|p| p.deadline == Some(at))
            {
                break;
            }
            self.timers.pop();
        }
        let peers = self.timers.peek().map(|Reverse((at, _))| *at);
        let dials = self
            .deferred
            .iter()
            .map(|(_, at)| *at + self.config.dial_wait);
        let next = peers.into_iter().chain(dials).chain(self.stun.next).min();
        Output::Timeout(next)
    }

    /// Makes punching state for `node` (a peer we dial, or whose key QUIC proved) unless it
    /// has it, and reads what it sent while a stranger; false when it cannot be (our own key,
    /// no disco key for that NodeId, or too many peers).
    fn trust(&mut self, now: Instant, node: NodeId) -> bool {
        if node == self.me {
            return false;
        }
        if self.peers.contains_key(&node) {
            return true;
        }
        if self.peers.len() >= self.config.max_peers {
            return false;
        }
        let Ok(key) = SharedKey::new(&self.secret, &node) else {
            return false;
        };
        self.insert_peer(now, node, key.clone());
        let (held, seen_from) = self.strangers.take(now, &node);
        let seen_from = self.usable(&seen_from);
        self.feed(now, node, holepunch::Input::PeerCandidates(&seen_from));
        for packet in held {
            if let Ok(msg) = key.open(&packet) {
                self.handle_message(now, node, Dest::Relay, msg);
            }
        }
        true
    }

    fn insert_peer(&mut self, now: Instant, node: NodeId, key: SharedKey) {
        let paths = self.new_paths(now);
        self.peers.insert(
            node,
            PeerState {
                key,
                paths,
                spares: Vec::new(),
                deadline: None,
                alive_at: now,
                last_call: None,
                met_anew: None,
            },
        );
    }

    fn new_paths(&mut self, now: Instant) -> PeerPaths {
        let mut paths = PeerPaths::new(self.config.punch.clone(), self.rng.next_u64());
        paths.handle_input(now, holepunch::Input::OurCandidates(self.candidates()));
        paths.handle_input(now, holepunch::Input::Nat(self.nat));
        paths
    }

    /// A new connection to a peer already known (trusted) that has no direct path: its
    /// punching starts over.
    /// The peer may be a new incarnation of that key (a restarted node, or a node after the
    /// short-lived endpoint it joined a mesh with), at new addresses, and whatever an earlier
    /// attempt learnt or is still waiting for would only hold the new one back.
    ///
    /// At most once per punch window: the second of two connections that meet (both ends
    /// dialled) must not cut short the attempt the first began. The peer's latest call, if
    /// recent, is told to the new attempt, as it may be the new incarnation's own (sent before
    /// its connection was made), which it would not send again.
    fn meet_anew(&mut self, now: Instant, node: NodeId) {
        let window = self.config.punch.punch_window;
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < window);
        let Some(st) = self.peers.get(&node) else {
            return;
        };
        if st.paths.best().is_some() || recent(st.met_anew) {
            return;
        }
        let call = st.last_call.clone().filter(|(at, ..)| recent(Some(*at)));
        let paths = self.new_paths(now);
        if let Some(st) = self.peers.get_mut(&node) {
            st.paths = paths;
            st.alive_at = now;
            st.met_anew = Some(now);
        }
        if let Some((_, candidates, nat, answer)) = call {
            let msg = Message::CallMeMaybe {
                candidates,
                nat,
                answer,
            };
            self.feed(
                now,
                node,
                holepunch::Input::Message {
                    via: Dest::Relay,
                    msg,
                },
            );
        }
    }

    /// A disco packet, `via` an address or the relay, from `node` where the transport says
    /// (spare sockets and the relay) or the packet claims (the main sockets).
    fn handle_disco(&mut self, now: Instant, via: Dest, node: Option<NodeId>, packet: &[u8]) {
        let node = match node {
            Some(n) => n,
            None => match disco::sender(packet) {
                Ok(n) => n,
                Err(_) => return,
            },
        };
        if node == self.me {
            return;
        }
        let Some(st) = self.peers.get(&node) else {
            return match via {
                // No key agreement, no answer: it waits for the stranger's QUIC handshake.
                Dest::Relay => self.strangers.hold(now, node, packet),
                Dest::Direct(from) => self.answer_stranger(now, node, from, packet),
                // Spare sockets exist only for peers with state.
                Dest::Spare(..) => {}
            };
        };
        let Ok(msg) = st.key.open(packet) else {
            return;
        };
        self.handle_message(now, node, via, msg);
    }

    /// An authentic message from the peer `node`, which has punching state.
    fn handle_message(&mut self, now: Instant, node: NodeId, via: Dest, msg: Message) {
        let msg = match msg {
            Message::Ping { tx } => {
                if let Dest::Direct(from) | Dest::Spare(_, from) = via {
                    // Where the peer sends QUIC from before we have proven the path.
                    self.claim(node, from, false);
                }
                Message::Ping { tx }
            }
            Message::CallMeMaybe {
                candidates,
                nat,
                answer,
            } => {
                let candidates = self.usable(&candidates);
                if let Some(st) = self.peers.get_mut(&node) {
                    st.last_call = Some((now, candidates.clone(), nat, answer));
                }
                Message::CallMeMaybe {
                    candidates,
                    nat,
                    answer,
                }
            }
            pong => pong,
        };
        self.feed(now, node, holepunch::Input::Message { via, msg });
    }

    /// A stranger's direct packet: an authentic ping gets one pong (within the budgets), and
    /// its source is claimed tentatively, so QUIC from there reaches its handshake.
    fn answer_stranger(&mut self, now: Instant, node: NodeId, from: SocketAddr, packet: &[u8]) {
        let source = source_prefix(from.ip());
        let key = match self.strangers.get(&node).and_then(|s| s.key.clone()) {
            Some(k) => k,
            None => {
                if !self.stranger_keys_by_source.take(now, &source, 1.0)
                    || !self.stranger_keys.take(now, 1.0)
                {
                    return;
                }
                let Ok(k) = SharedKey::new(&self.secret, &node) else {
                    return;
                };
                k
            }
        };
        let Ok(Message::Ping { tx }) = key.open(packet) else {
            return;
        };
        let stranger = self.strangers.entry(node);
        stranger.key = Some(key.clone());
        let first = stranger.seen_at(from);
        self.claim(node, from, false);
        if first && self.sources.owner(&from) == Some(node) {
            self.events.push_back(Event::ReplyTo { node, addr: from });
        }
        if !self.stranger_pongs_by_dest.take(now, &source, 1.0) {
            return;
        }
        let pong = Message::Pong { tx, observed: from };
        if let Ok(payload) = key.seal(&self.me, &pong, self.rng.bytes()) {
            self.transmits.push_back(Transmit {
                dest: Destination::Udp(from),
                payload,
                ttl: None,
            });
        }
    }

    /// `node` claims `addr`, proven or tentatively; the socket layer hears of changes.
    fn claim(&mut self, node: NodeId, addr: SocketAddr, proven: bool) {
        let mut changes = Vec::new();
        if proven {
            let peers = &self.peers;
            let live = |other: &NodeId, a: SocketAddr| {
                peers.get(other).is_some_and(|p| p.paths.is_live(a))
            };
            self.sources.prove(node, addr, live, &mut changes);
        } else {
            self.sources.tentative(node, addr, &mut changes);
        }
        self.announce(changes);
    }

    fn announce(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.events.push_back(match c {
                Change::Claimed(node, addr) => Event::DirectSource { node, addr },
                Change::Released(addr) => Event::SourceReleased(addr),
            });
        }
    }

    /// The candidates worth probing: public addresses, loopback only when we are on it, private
    /// ones only on our own subnets (a /24 or /64 of an interface address), never link-local,
    /// multicast or unspecified ones.
    fn usable(&self, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        addrs
            .iter()
            .copied()
            .filter(|a| usable_candidate(a, &self.local))
            .collect()
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        let Ok(msg) = StunMessage::parse(packet) else {
            return;
        };
        let stun = &mut self.stun;
        let Some(i) = stun
            .pending
            .iter()
            .position(|(t, s)| *t == msg.transaction_id && *s == from)
        else {
            return;
        };
        stun.pending.swap_remove(i);
        let Some(mapped) = msg.mapped() else {
            return;
        };
        stun.answered = true;
        if stun.note_offers(from, &msg) {
            // Ask the alternate addresses too, to see whether our mapping depends on the
            // destination.
            stun.next = Some(now);
        }
        stun.mapped.retain(|(s, _)| *s != from);
        stun.mapped.push((from, mapped));
        // Our public address is what the configured servers see.
        if self.config.stun_servers.contains(&from) {
            if self.reflexive.is_some_and(|r| r != mapped) {
                // A new mapping: what peers saw of the old one is stale.
                self.stun.peer_views.clear();
            }
            self.reflexive = Some(mapped);
            self.update_candidates(now);
        }
    }

    /// Interface addresses and the public one, the public first.
    fn candidates(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self.reflexive.into_iter().collect();
        out.extend(self.local.iter().filter(|a| Some(**a) != self.reflexive));
        out
    }

    fn update_candidates(&mut self, now: Instant) {
        let ours = self.candidates();
        self.feed_all(now, |_| holepunch::Input::OurCandidates(ours.clone()));
        self.events.push_back(Event::Candidates(ours));
    }

    /// STUN answers and peers' pongs both tell us about our NAT.
    fn update_nat(&mut self, now: Instant) {
        let hint = self.stun.nat_hint(&self.local);
        if hint != self.nat {
            self.nat = hint;
            self.feed_all(now, |_| holepunch::Input::Nat(hint));
            self.events.push_back(Event::Nat(hint));
        }
    }

    /// Dials start punching once we know our primer TTL and what our NAT does, or have waited
    /// long enough for them.
    fn start_due_dials(&mut self, now: Instant) {
        if self.deferred.is_empty() {
            return;
        }
        let ready =
            self.primer_known && (self.stun.settled() || self.config.stun_servers.is_empty());
        let wait = self.config.dial_wait;
        let (due, waiting) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(_, at)| ready || now >= *at + wait);
        self.deferred = waiting;
        for (node, _) in due {
            self.feed(now, node, holepunch::Input::Start);
        }
    }

    fn ask_stun(&mut self, now: Instant) {
        if self.stun.next.is_none_or(|t| now < t) {
            return;
        }
        self.stun.pending.clear();
        let servers: Vec<SocketAddr> = self
            .config
            .stun_servers
            .iter()
            .chain(&self.stun.others)
            .copied()
            .collect();
        for server in servers {
            let tid = TransactionId(self.rng.bytes());
            let mut payload = Vec::with_capacity(20);
            MessageWriter::new(&mut payload, Class::Request, Method::BINDING, tid).finish();
            self.stun.pending.push((tid, server));
            self.transmits.push_back(Transmit {
                dest: Destination::Udp(server),
                payload,
                ttl: None,
            });
        }
        let every = if self.stun.answered {
            self.config.stun_every
        } else {
            self.config.stun_retry
        };
        self.stun.next = Some(now + every);
    }

    /// Peers' timers that are due: each reads its traffic, then its punching runs.
    fn handle_timeout(&mut self, now: Instant, activity: &dyn Fn(&NodeId) -> Activity) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, node))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self
                .peers
                .get(&node)
                .is_some_and(|st| st.deadline == Some(at))
            {
                due.push(node);
            }
        }
        for &node in &due {
            let Some(st) = self.peers.get_mut(&node) else {
                continue;
            };
            st.deadline = None;
            let seen = activity(&node);
            if let (Some(at), Some(d)) = (seen.direct_rx, st.paths.best()) {
                st.paths
                    .handle_input(now, holepunch::Input::Received { at, from: d.addr });
            }
            if let Some(t) = seen.any {
                st.paths.handle_input(now, holepunch::Input::Activity(t));
                st.alive_at = st.alive_at.max(t);
            }
            st.paths.handle_input(now, holepunch::Input::Timeout);
            let ended = !st.paths.is_punching()
                && now.saturating_duration_since(st.alive_at) >= self.config.peer_idle
                && !self.deferred.iter().any(|(n, _)| *n == node);
            if ended {
                self.forget(node);
            } else {
                self.flush(now, node);
            }
        }
        // A deadline just handled is never due again at once: whatever a peer's punching
        // says, the driver must not spin.
        for node in due {
            if let Some(st) = self.peers.get_mut(&node) {
                if st.deadline.is_some_and(|d| d <= now) {
                    let later = now + MIN_TIMER_STEP;
                    st.deadline = Some(later);
                    self.timers.push(Reverse((later, node)));
                }
            }
        }
        // Stale entries pile up when deadlines move; rebuild the heap before they dominate.
        if self.timers.len() > 4 * self.peers.len() + 64 {
            self.timers = self
                .peers
                .iter()
                .filter_map(|(n, st)| st.deadline.map(|d| Reverse((d, *n))))
                .collect();
        }
    }

    fn forget(&mut self, node: NodeId) {
        if let Some(st) = self.peers.remove(&node) {
            self.spares_open -= st.spares.len();
            let mut changes = Vec::new();
            self.sources.release(&node, &mut changes);
            self.announce(changes);
            self.events.push_back(Event::PeerForgotten(node));
        }
    }

    /// Feeds one peer's punching, then handles what it wants.
    fn feed(&mut self, now: Instant, node: NodeId, input: holepunch::Input<'_>) {
        if let Some(st) = self.peers.get_mut(&node) {
            st.paths.handle_input(now, input);
            self.flush(now, node);
        }
    }

    /// Feeds every peer's punching, in NodeId order.
    fn feed_all(&mut self, now: Instant, input: impl Fn(&NodeId) -> holepunch::Input<'static>) {
        let nodes: Vec<NodeId> = self.peers.keys().copied().collect();
        for node in nodes {
            self.feed(now, node, input(&node));
        }
    }

    /// Seals and queues what a peer's punching wants sent (probes within each destination
    /// IP's budget), passes on its events, closes the spares it no longer needs and
    /// reschedules its deadline.
    fn flush(&mut self, now: Instant, node: NodeId) {
        loop {
            let Some(st) = self.peers.get_mut(&node) else {
                return;
            };
            let t = match st.paths.poll_output() {
                holepunch::Output::Transmit(t) => t,
                holepunch::Output::Event(holepunch::Event::PathChanged(path)) => {
                    self.events.push_back(Event::PathChanged { node, path });
                    continue;
                }
                holepunch::Output::Event(holepunch::Event::Proven { addr, .. }) => {
                    self.claim(node, addr, true);
                    continue;
                }
                holepunch::Output::Event(holepunch::Event::Observed(addr)) => {
                    self.stun.note_peer_view(addr);
                    continue;
                }
                holepunch::Output::Timeout(at) => {
                    let gc = (!st.paths.is_punching()).then(|| st.alive_at + self.config.peer_idle);
                    let deadline = at.into_iter().chain(gc).min();
                    if deadline != st.deadline {
                        st.deadline = deadline;
                        if let Some(d) = deadline {
                            self.timers.push(Reverse((d, node)));
                        }
                    }
                    break;
                }
            };
            let (dest, to) = match t.dest {
                Dest::Direct(to) => (Destination::Udp(to), Some(to)),
                Dest::Spare(n, to) => {
                    if !st.spares.contains(&n) {
                        if self.spares_open >= self.config.max_spares {
                            continue;
                        }
                        st.spares.push(n);
                        self.spares_open += 1;
                    }
                    (Destination::Spare { node, n, to }, Some(to))
                }
                Dest::Relay if !self.config.relay => continue,
                Dest::Relay => (Destination::Relay(node), None),
            };
            // Whoever asks, one IP gets no more probes than its budget (answers are not probes).
            let probe = matches!(t.msg, Message::Ping { .. });
            if let (true, Some(to)) = (probe, to) {
                if !self.probes_by_ip.take(now, &to.ip(), 1.0) {
                    continue;
                }
            }
            let Some(st) = self.peers.get(&node) else {
                return;
            };
            let Ok(payload) = st.key.seal(&self.me, &t.msg, self.rng.bytes()) else {
                continue;
            };
            self.transmits.push_back(Transmit {
                dest,
                payload,
                ttl: t.ttl,
            });
        }
        self.close_unused_spares(node);
    }

    /// Once no attempt is under way, the spares that no live path uses can close.
    fn close_unused_spares(&mut self, node: NodeId) {
        let Some(st) = self.peers.get_mut(&node) else {
            return;
        };
        if st.paths.is_punching() || st.spares.is_empty() {
            return;
        }
        let keep: Vec<u16> = st
            .paths
            .spares_in_use()
            .filter(|n| st.spares.contains(n))
            .collect();
        if keep.len() < st.spares.len() {
            self.spares_open -= st.spares.len() - keep.len();
            st.spares.clone_from(&keep);
            self.events.push_back(Event::SparesUnused { node, keep });
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether a peer's candidate is worth probing, given our own interface addresses (`local`).
fn usable_candidate(addr: &SocketAddr, local: &[SocketAddr]) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(ip) => {
            let private = ip.is_private() || (ip.octets()[0] == 100 && ip.octets()[1] & 0xc0 == 64);
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local() {
                false
            } else if ip.is_loopback() {
                local.iter().any(|l| l.ip().is_loopback())
            } else if private {
                local.iter().any(|l| match l.ip() {
                    IpAddr::V4(l) => l.octets()[..3] == ip.octets()[..3],
                    IpAddr::V6(_) => false,
                })
            } else {
                true
            }
        }
        IpAddr::V6(ip) => {
            let s = ip.segments();
            let link_local = s[0] & 0xffc0 == 0xfe80;
            let unique_local = s[0] & 0xfe00 == 0xfc00;
            if ip.is_unspecified() || ip.is_multicast() || link_local {
                false
            } else if ip.is_loopback() {
                local.iter().any(|l| l.ip().is_loopback())
            } else if unique_local {
                local.iter().any(|l| match l.ip() {
                    IpAddr::V6(l) => l.segments()[..4] == s[..4],
                    IpAddr::V4(_) => false,
                })
            } else {
                true
            }
        }
    }
}
