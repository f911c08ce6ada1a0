//! The TURN server core: its inputs and outputs, allocations' sockets and timers, and the
//! data path (indications, ChannelData, peers' datagrams); the requests are in `requests`.

mod requests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::allocation::{Allocation, Pending};
use super::channel_data::{self, ChannelData, MAX_CHANNEL, MIN_CHANNEL};
use super::credentials::{Credentials, Key, Refusal};
use super::nonce::Nonces;
use super::{
    FiveTuple, RelayId, Transport, TurnConfig, TurnStats, PROTOCOL_UDP, RESERVATION_LIFETIME,
};

/// Unsigned responses (challenges, errors before authentication) a second to one client
/// source: a client needs one or two per allocation, and a refresh every few minutes.
const UNSIGNED_PER_SEC: f64 = 20.0;
/// The burst of them (many clients behind one NAT start at once).
const UNSIGNED_BURST: f64 = 100.0;
/// Sources whose buckets are kept (older ones come back full).
const UNSIGNED_SOURCES: usize = 100_000;
use crate::rate::{source_prefix, KeyedBuckets, TokenBucket};
use crate::stun::{
    integrity, AttributeType, Class, Message, MessageWriter, Method, StunError, TransactionId,
};
use crate::Rng;

/// An address family of relayed addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn of(addr: SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// Which port a relayed socket must have (EVEN-PORT, RFC 8656 7.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortRequest {
    /// Any port.
    Any,
    /// An even port.
    Even,
    /// An even port, and the next one too, opened as relayed socket `next` and held for a
    /// later Allocate with the RESERVATION-TOKEN this one's response carries.
    EvenPair {
        /// The id the odd port is known by.
        next: RelayId,
    },
}

/// What the driver must do besides sending.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// Open a UDP socket on the relay address of `family`, with a port as `port` says, and
    /// answer with [`Input::RelayOpened`] or [`Input::RelayFailed`].
    OpenRelay {
        /// The id that the socket's datagrams and sends are known by.
        relay: RelayId,
        /// The address family.
        family: Family,
        /// The port wanted.
        port: PortRequest,
    },
    /// Close the socket (its allocation or reservation has ended).
    CloseRelay {
        /// The socket.
        relay: RelayId,
    },
}

/// Bytes to send.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Transmit {
    /// A response, a Data indication or ChannelData for a client, on its 5-tuple.
    Client {
        /// The client's 5-tuple.
        tuple: FiveTuple,
        /// The message.
        data: Vec<u8>,
    },
    /// A datagram for a peer, from a relayed socket.
    Peer {
        /// The relayed socket to send from.
        relay: RelayId,
        /// The peer.
        to: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
}

/// What the core wants done (see the crate's calling convention).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Output {
    /// Bytes to send.
    Transmit(Transmit),
    /// A socket to open or close.
    Event(Event),
    /// Nothing more until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

/// Everything that happens to the core.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A message from a client: a datagram on UDP, one framed message on TCP.
    Client {
        /// Its 5-tuple.
        tuple: FiveTuple,
        /// The message.
        packet: &'a [u8],
        /// Wall-clock time, Unix seconds, against which ephemeral usernames expire.
        unix_secs: u64,
    },
    /// A datagram a peer sent to a relayed socket.
    Peer {
        /// The socket it arrived on.
        relay: RelayId,
        /// The peer.
        from: SocketAddr,
        /// The datagram.
        packet: &'a [u8],
    },
    /// The socket [`Event::OpenRelay`] asked for is open at `addr` (for
    /// [`PortRequest::EvenPair`], its odd neighbour is open too).
    RelayOpened {
        /// The socket.
        relay: RelayId,
        /// Its relayed transport address, as clients and peers see it.
        addr: SocketAddr,
    },
    /// The socket [`Event::OpenRelay`] asked for could not be opened.
    RelayFailed {
        /// The socket.
        relay: RelayId,
    },
    /// A client's TCP connection closed: its allocation goes with it (RFC 8656 3.1).
    ClientClosed {
        /// The connection's 5-tuple.
        tuple: FiveTuple,
    },
    /// Time passed.
    Timeout,
}

/// A port held by EVEN-PORT for a later Allocate.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    token: [u8; 8],
    addr: SocketAddr,
    expires: Instant,
}

/// A request that passed authentication.
struct Authed {
    username: String,
    key: Key,
}

/// The TURN server core (see the module docs).
pub struct TurnServer {
    config: TurnConfig,
    credentials: Credentials,
    nonces: Nonces,
    rng: Rng,
    next_relay: u64,
    allocations: BTreeMap<RelayId, Allocation>,
    by_tuple: BTreeMap<FiveTuple, RelayId>,
    reserved: BTreeMap<RelayId, Reservation>,
    tokens: BTreeMap<[u8; 8], RelayId>,
    per_user: BTreeMap<String, usize>,
    per_ip: BTreeMap<IpAddr, usize>,
    /// Sockets being opened for allocations whose TCP connection closed meanwhile, with the
    /// reserved neighbour of an even pair: closed once open.
    orphans: BTreeMap<RelayId, Option<RelayId>>,
    /// Deadlines of allocations and reservations; an entry counts only while it equals its
    /// allocation's `deadline` or its reservation's expiry.
    timers: BinaryHeap<Reverse<(Instant, RelayId)>>,
    /// Unsigned responses per client source (see `send_response`).
    unsigned_answers: KeyedBuckets<IpAddr>,
    /// The latest input's time (none before the first).
    now: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: TurnStats,
}

impl TurnServer {
    /// A server with nothing allocated.
    pub fn new(config: TurnConfig, seed: u64) -> TurnServer {
        let mut rng = Rng::new(seed);
        let credentials = Credentials::new(&config.realm, &config.users, &config.secrets);
        let nonces = Nonces::new(rng.bytes(), config.nonce_lifetime);
        TurnServer {
            config,
            credentials,
            nonces,
            rng,
            next_relay: 1,
            allocations: BTreeMap::new(),
            by_tuple: BTreeMap::new(),
            reserved: BTreeMap::new(),
            tokens: BTreeMap::new(),
            per_user: BTreeMap::new(),
            per_ip: BTreeMap::new(),
            orphans: BTreeMap::new(),
            unsigned_answers: KeyedBuckets::new(UNSIGNED_PER_SEC, UNSIGNED_BURST, UNSIGNED_SOURCES),
            now: None,
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TurnStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Allocations now, including those waiting for their socket.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Relayed sockets the driver should have open or be opening: allocations' and reserved
    /// ports.
    pub fn relay_count(&self) -> usize {
        self.allocations.len() + self.reserved.len() + self.orphans.len()
    }

    /// Permissions and channels held in all allocations.
    pub fn permission_and_channel_count(&self) -> (usize, usize) {
        self.allocations.values().fold((0, 0), |(p, c), a| {
            (p + a.permissions.len(), c + a.channels.len())
        })
    }

    /// The relayed address of the allocation of `tuple`, once open.
    pub fn relayed_address(&self, tuple: &FiveTuple) -> Option<SocketAddr> {
        let id = self.by_tuple.get(tuple)?;
        self.allocations.get(id)?.relayed
    }

    /// Feeds one input (see the crate's calling convention).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
        match input {
            Input::Client {
                tuple,
                packet,
                unix_secs,
            } => self.handle_client(now, tuple, packet, unix_secs),
            Input::Peer {
                relay,
                from,
                packet,
            } => self.handle_peer(now, relay, from, packet),
            Input::RelayOpened { relay, addr } => self.relay_opened(now, relay, addr),
            Input::RelayFailed { relay } => self.relay_failed(relay),
            Input::ClientClosed { tuple } => self.client_closed(tuple),
            Input::Timeout => self.handle_timeout(now),
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if self.is_live_timer(at, id) {
                return Output::Timeout(Some(at));
            }
            self.timers.pop();
        }
        Output::Timeout(None)
    }

    fn is_live_timer(&self, at: Instant, id: RelayId) -> bool {
        match self.allocations.get(&id) {
            Some(a) => a.deadline == Some(at),
            None => self.reserved.get(&id).is_some_and(|r| r.expires == at),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.is_live_timer(at, id) {
                continue;
            }
            if let Some(a) = self.allocations.get_mut(&id) {
                a.deadline = None;
                if a.expires <= now {
                    self.stats.allocations_expired += 1;
                    self.remove_allocation(id);
                } else {
                    a.sweep(now);
                    self.reschedule(id);
                }
            } else if let Some(r) = self.reserved.remove(&id) {
                self.tokens.remove(&r.token);
                self.events.push_back(Event::CloseRelay { relay: id });
            }
        }
    }

    /// Puts the allocation's next expiry in the timer heap, unless an earlier entry is
    /// already there (it fires, finds nothing due, and comes back here).
    fn reschedule(&mut self, id: RelayId) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        if a.pending.is_some() {
            return;
        }
        let at = a.next_expiry();
        if a.deadline.is_none_or(|d| at < d) {
            a.deadline = Some(at);
            self.timers.push(Reverse((at, id)));
        }
    }

    /// Ends allocation `id` and has its socket closed.
    fn remove_allocation(&mut self, id: RelayId) {
        if self.forget(id).is_some() {
            self.events.push_back(Event::CloseRelay { relay: id });
        }
    }

    /// Takes allocation `id` out of every table and count.
    fn forget(&mut self, id: RelayId) -> Option<Allocation> {
        let a = self.allocations.remove(&id)?;
        self.by_tuple.remove(&a.tuple);
        decrement(&mut self.per_user, &a.username);
        decrement(&mut self.per_ip, &source_prefix(a.tuple.client.ip()));
        Some(a)
    }

    fn client_closed(&mut self, tuple: FiveTuple) {
        let Some(&id) = self.by_tuple.get(&tuple) else {
            return;
        };
        let pending = self.allocations.get(&id).and_then(|a| a.pending);
        match pending {
            // Its sockets are being opened: closed once they are.
            Some(p) => {
                self.forget(id);
                self.orphans.insert(id, p.reserve_next);
            }
            None => {
                self.stats.allocations_deleted += 1;
                self.remove_allocation(id);
            }
        }
    }

    fn next_relay_id(&mut self) -> RelayId {
        let id = RelayId(self.next_relay);
        self.next_relay += 1;
        id
    }

    // ---------------------------------------------------------------------------------------
    // Client messages

    fn handle_client(&mut self, now: Instant, tuple: FiveTuple, packet: &[u8], unix_secs: u64) {
        let Some(&first) = packet.first() else {
            return;
        };
        if channel_data::is_channel_data(first) {
            return self.client_channel_data(now, tuple, packet);
        }
        let msg = match Message::parse(packet) {
            Ok(msg) => msg,
            Err(StunError::UnknownComprehensionRequired {
                class: Class::Request,
                method,
                transaction_id,
                types,
            }) => {
                self.stats.bad_requests += 1;
                let mut data = Vec::new();
                let mut w = MessageWriter::new(&mut data, Class::Error, method, transaction_id);
                w.error_code(420, "Unknown Attribute")
                    .unknown_attributes(&types);
                self.finish(w, None, false);
                self.send_response(tuple, data, false);
                return;
            }
            Err(_) => {
                self.stats.dropped_unusable += 1;
                return;
            }
        };
        match (msg.class, msg.method) {
            (Class::Request, Method::ALLOCATE) => {
                self.allocate(now, unix_secs, tuple, packet, &msg)
            }
            (Class::Request, Method::REFRESH) => self.refresh(now, unix_secs, tuple, packet, &msg),
            (Class::Request, Method::CREATE_PERMISSION) => {
                self.create_permission(now, unix_secs, tuple, packet, &msg)
            }
            (Class::Request, Method::CHANNEL_BIND) => {
                self.channel_bind(now, unix_secs, tuple, packet, &msg)
            }
            (Class::Request, Method::BINDING) => {
                // A Binding on a TCP connection to the TURN port (ICE-TCP gathering).
                self.reply(tuple, &msg, Class::Success, None, |w| {
                    w.xor_mapped_address(tuple.client);
                });
            }
            (Class::Request, _) => {
                self.error(tuple, &msg, 400, "Bad Request: unknown method", None)
            }
            (Class::Indication, Method::SEND) => self.send_indication(now, tuple, &msg),
            _ => self.stats.dropped_unusable += 1,
        }
    }

    /// The open allocation of `tuple`, for data from its client.
    fn open_allocation(&mut self, tuple: &FiveTuple) -> Option<RelayId> {
        let id = self.by_tuple.get(tuple).copied();
        let open = id.filter(|id| {
            self.allocations
                .get(id)
                .is_some_and(|a| a.relayed.is_some())
        });
        if open.is_none() {
            self.stats.dropped_unusable += 1;
        }
        open
    }

    fn send_indication(&mut self, now: Instant, tuple: FiveTuple, msg: &Message<'_>) {
        let Some(id) = self.open_allocation(&tuple) else {
            return;
        };
        match (msg.xor_peer_address, msg.data) {
            (Some(peer), Some(data)) if peer.port() != 0 && !msg.dont_fragment => {
                self.relay_to_peer(now, id, peer, data)
            }
            _ => self.stats.dropped_unusable += 1,
        }
    }

    fn client_channel_data(&mut self, now: Instant, tuple: FiveTuple, packet: &[u8]) {
        let Ok(cd) = ChannelData::parse(packet, tuple.transport.framing()) else {
            self.stats.dropped_unusable += 1;
            return;
        };
        let Some(id) = self.open_allocation(&tuple) else {
            return;
        };
        match self.allocations[&id].channel_peer(now, cd.channel) {
            Some(peer) => self.relay_to_peer(now, id, peer, cd.data),
            None => self.stats.dropped_no_permission += 1,
        }
    }

    fn relay_to_peer(&mut self, now: Instant, id: RelayId, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        if !a.permits(now, peer.ip()) {
            self.stats.dropped_no_permission += 1;
            return;
        }
        if !a.take(now, data.len()) {
            self.stats.dropped_rate += 1;
            return;
        }
        self.stats.to_peer_packets += 1;
        self.stats.to_peer_bytes += data.len() as u64;
        self.transmits.push_back(Transmit::Peer {
            relay: id,
            to: peer,
            data: data.to_vec(),
        });
    }

    // ---------------------------------------------------------------------------------------
    // Peer data

    fn handle_peer(&mut self, now: Instant, id: RelayId, from: SocketAddr, packet: &[u8]) {
        let Some(a) = self.allocations.get_mut(&id) else {
            // A reserved port, or one closing: nobody to give it to.
            return;
        };
        if !a.permits(now, from.ip()) {
            self.stats.dropped_no_permission += 1;
            return;
        }
        if !a.take(now, packet.len()) {
            self.stats.dropped_rate += 1;
            return;
        }
        let tuple = a.tuple;
        let mut data = Vec::new();
        match a.channel_to(now, from) {
            Some(channel) => {
                ChannelData::encode(channel, packet, tuple.transport.framing(), &mut data)
            }
            None => {
                let fingerprint = a.fingerprint;
                let tid = TransactionId(self.rng.bytes());
                let mut w = MessageWriter::new(&mut data, Class::Indication, Method::DATA, tid);
                w.xor_peer_address(from).data(packet);
                if fingerprint {
                    w.finish_with_fingerprint();
                } else {
                    w.finish();
                }
            }
        }
        self.stats.to_client_packets += 1;
        self.stats.to_client_bytes += packet.len() as u64;
        self.transmits.push_back(Transmit::Client { tuple, data });
    }
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}
