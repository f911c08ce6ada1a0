//! The TURN server core: requests, indications, ChannelData, relayed data and timers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::allocation::{Allocation, Pending};
use super::channel_data::{self, ChannelData, MAX_CHANNEL, MIN_CHANNEL};
use super::credentials::{Credentials, Key, Refusal};
use super::nonce::Nonces;
use super::{FiveTuple, PeerFilter, RelayId, PROTOCOL_UDP, RESERVATION_LIFETIME};
use crate::rate::{source_prefix, TokenBucket};
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

/// Limits that bound what clients can make the server hold and do.
#[derive(Clone, Debug, PartialEq)]
pub struct TurnLimits {
    /// Allocations and reserved ports at once; more get 508 (Insufficient Capacity).
    pub max_allocations: usize,
    /// Allocations one username may hold (0 = no cap); more get 486 (Allocation Quota
    /// Reached).
    pub max_allocations_per_user: usize,
    /// Allocations one client IP (an IPv6 /64) may hold (0 = no cap); more get 486.
    pub max_allocations_per_ip: usize,
    /// Bytes per second one allocation may relay, both ways together (0 = unlimited); over
    /// it, datagrams are dropped.
    pub rate_bytes_per_sec: u64,
    /// Bytes an allocation may relay at once above its rate.
    pub burst_bytes: u64,
    /// Peer IPs one allocation may have permissions for; more get 508.
    pub max_permissions: usize,
    /// Channels one allocation may bind; more get 508.
    pub max_channels: usize,
    /// Lifetime of an allocation that asks for less or nothing (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (RFC 8656: 3600 s).
    pub max_lifetime: Duration,
}

impl Default for TurnLimits {
    fn default() -> Self {
        TurnLimits {
            max_allocations: 10_000,
            max_allocations_per_user: 100,
            max_allocations_per_ip: 100,
            rate_bytes_per_sec: 12_500_000,
            burst_bytes: 2 * 1024 * 1024,
            max_permissions: 64,
            max_channels: 64,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// What the server is told.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    /// The realm of the long-term credentials.
    pub realm: String,
    /// Sent as SOFTWARE in responses, if set.
    pub software: Option<String>,
    /// Long-term users: name and password.
    pub users: Vec<(String, String)>,
    /// Shared secrets of ephemeral (TURN REST) credentials; several may be valid at once.
    pub secrets: Vec<String>,
    /// Whether the driver can relay over IPv4 and over IPv6.
    pub relay_v4: bool,
    /// See `relay_v4`.
    pub relay_v6: bool,
    /// The limits.
    pub limits: TurnLimits,
    /// The peers that may be reached.
    pub peers: PeerFilter,
    /// How long a nonce is good for; then requests get 438 (Stale Nonce) and a new one.
    pub nonce_lifetime: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            realm: "burrow".to_string(),
            software: None,
            users: Vec::new(),
            secrets: Vec::new(),
            relay_v4: true,
            relay_v6: false,
            limits: TurnLimits::default(),
            peers: PeerFilter::default(),
            nonce_lifetime: Duration::from_secs(600),
        }
    }
}

/// Counters of what the server did, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Allocations made (relayed socket opened).
    pub allocations_created: u64,
    /// Allocations that ended by expiring.
    pub allocations_expired: u64,
    /// Allocations deleted by a Refresh with lifetime 0 or by their TCP connection closing.
    pub allocations_deleted: u64,
    /// Requests without credentials, answered 401 with a realm and nonce (the normal first
    /// step of every client).
    pub challenges: u64,
    /// Requests with credentials that did not verify (unknown user, wrong password or realm).
    pub auth_failures: u64,
    /// Requests with an ephemeral username past its expiry.
    pub expired_credentials: u64,
    /// Requests with a stale or foreign nonce (438).
    pub stale_nonces: u64,
    /// Requests refused 400, 420, 440, 442 or 443.
    pub bad_requests: u64,
    /// Requests refused 403: a peer the filter denies.
    pub forbidden_peers: u64,
    /// Requests refused 437: no allocation, or one made by another Allocate.
    pub mismatches: u64,
    /// Requests refused 441: another username than the allocation's.
    pub wrong_credentials: u64,
    /// Allocates refused 486: a per-user or per-IP quota.
    pub quota_refused: u64,
    /// Requests refused 508: a capacity limit, or no relayed socket to be had.
    pub capacity_refused: u64,
    /// Permissions installed (not counting refreshes).
    pub permissions_created: u64,
    /// Channels bound (not counting refreshes).
    pub channels_bound: u64,
    /// Datagrams relayed to peers.
    pub to_peer_packets: u64,
    /// Bytes relayed to peers.
    pub to_peer_bytes: u64,
    /// Datagrams relayed to clients.
    pub to_client_packets: u64,
    /// Bytes relayed to clients.
    pub to_client_bytes: u64,
    /// Data dropped for want of a permission (or channel).
    pub dropped_no_permission: u64,
    /// Data dropped by the allocation's byte rate.
    pub dropped_rate: u64,
    /// Messages from clients without an allocation that could carry them, or malformed.
    pub dropped_unusable: u64,
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
                self.transmits.push_back(Transmit::Client { tuple, data });
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

    fn finish(&self, mut w: MessageWriter<'_>, key: Option<&Key>, fingerprint: bool) {
        if let Some(software) = &self.config.software {
            w.software(software);
        }
        match key {
            Some(key) => w.finish_with_integrity(key, fingerprint),
            None if fingerprint => w.finish_with_fingerprint(),
            None => w.finish(),
        }
    }

    /// Answers `msg` on `tuple`; with `key`, the response carries MESSAGE-INTEGRITY, and
    /// FINGERPRINT whenever the request had one.
    fn reply(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        class: Class,
        key: Option<&Key>,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        let data = self.response(
            msg.method,
            msg.transaction_id,
            class,
            key,
            msg.fingerprint,
            attrs,
        );
        self.transmits.push_back(Transmit::Client { tuple, data });
    }

    fn response(
        &self,
        method: Method,
        transaction_id: TransactionId,
        class: Class,
        key: Option<&Key>,
        fingerprint: bool,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut data = Vec::new();
        let mut w = MessageWriter::new(&mut data, class, method, transaction_id);
        attrs(&mut w);
        self.finish(w, key, fingerprint);
        data
    }

    fn count_error(&mut self, code: u16) {
        let s = &mut self.stats;
        match code {
            403 => s.forbidden_peers += 1,
            437 => s.mismatches += 1,
            441 => s.wrong_credentials += 1,
            486 => s.quota_refused += 1,
            508 => s.capacity_refused += 1,
            _ => s.bad_requests += 1,
        }
    }

    fn error(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        key: Option<&Key>,
    ) {
        self.count_error(code);
        self.reply(tuple, msg, Class::Error, key, |w| {
            w.error_code(code, reason);
        });
    }

    /// 401 or 438 with the realm and a fresh nonce, so the client can (re)try.
    fn challenge(&mut self, now: Instant, tuple: FiveTuple, msg: &Message<'_>, code: u16) {
        let nonce = self.nonces.issue(now, tuple.client);
        let reason = if code == 438 {
            "Stale Nonce"
        } else {
            "Unauthorized"
        };
        let realm = self.config.realm.clone();
        self.reply(tuple, msg, Class::Error, None, |w| {
            w.error_code(code, reason).realm(&realm).nonce(&nonce);
        });
    }

    /// RFC 8489 9.2.4: the long-term credential check. Answers the request itself when it
    /// fails.
    fn authenticate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) -> Option<Authed> {
        if msg.integrity.is_none() {
            self.stats.challenges += 1;
            self.challenge(now, tuple, msg, 401);
            return None;
        }
        let (Some(username), Some(realm), Some(nonce)) = (msg.username, msg.realm, msg.nonce)
        else {
            self.error(
                tuple,
                msg,
                400,
                "Bad Request: USERNAME, REALM and NONCE are needed",
                None,
            );
            return None;
        };
        if !self.nonces.is_valid(now, tuple.client, nonce) {
            self.stats.stale_nonces += 1;
            self.challenge(now, tuple, msg, 438);
            return None;
        }
        let keys = match self.credentials.keys(username, unix_secs) {
            Ok(keys) if realm == self.config.realm => keys,
            Err(Refusal::Expired) => {
                self.stats.expired_credentials += 1;
                self.challenge(now, tuple, msg, 401);
                return None;
            }
            _ => Vec::new(),
        };
        match keys.into_iter().find(|k| integrity::verify(packet, msg, k)) {
            Some(key) => Some(Authed {
                username: username.to_string(),
                key,
            }),
            None => {
                self.stats.auth_failures += 1;
                self.challenge(now, tuple, msg, 401);
                None
            }
        }
    }

    /// The allocation of `tuple` for a request other than Allocate, once open and made by
    /// the same user; otherwise the request is answered 437 or 441.
    fn allocation_for(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Option<RelayId> {
        let id = self.by_tuple.get(&tuple).copied();
        match id.and_then(|id| self.allocations.get(&id)) {
            Some(a) if a.pending.is_none() && a.username == auth.username => id,
            Some(a) if a.pending.is_none() => {
                self.error(tuple, msg, 441, "Wrong Credentials", Some(&auth.key));
                None
            }
            _ => {
                self.error(tuple, msg, 437, "Allocation Mismatch", Some(&auth.key));
                None
            }
        }
    }

    fn granted_lifetime(&self, requested: Option<u32>) -> u32 {
        let l = &self.config.limits;
        let (default, max) = (l.default_lifetime.as_secs(), l.max_lifetime.as_secs());
        let secs = requested.map_or(default, |r| u64::from(r).min(max).max(default));
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    fn allocate(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let key = Some(&auth.key);
        if let Some(&id) = self.by_tuple.get(&tuple) {
            let a = &self.allocations[&id];
            if a.transaction_id != msg.transaction_id {
                return self.error(tuple, msg, 437, "Allocation Mismatch", key);
            }
            // A retransmission: answered again once open (while pending, the answer to the
            // first is on its way).
            if a.pending.is_none() {
                self.allocate_success(now, id);
            }
            return;
        }
        match msg.requested_transport {
            None => return self.error(tuple, msg, 400, "Bad Request: no REQUESTED-TRANSPORT", key),
            Some(PROTOCOL_UDP) => {}
            Some(_) => return self.error(tuple, msg, 442, "Unsupported Transport Protocol", key),
        }
        if msg.dont_fragment {
            // RFC 8656 7.2: a server that cannot set DF treats it as unknown.
            self.count_error(420);
            return self.reply(tuple, msg, Class::Error, key, |w| {
                w.error_code(420, "Unknown Attribute")
                    .unknown_attributes(&[AttributeType::DONT_FRAGMENT.0]);
            });
        }
        if msg.reservation_token.is_some()
            && (msg.even_port.is_some() || msg.requested_address_family.is_some())
        {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
                key,
            );
        }
        // (With a RESERVATION-TOKEN the reserved port's family is the allocation's.)
        let family = match (msg.reservation_token, msg.requested_address_family) {
            (None, None | Some(0x01)) if self.config.relay_v4 => Some(Family::V4),
            (None, Some(0x02)) if self.config.relay_v6 => Some(Family::V6),
            (Some(_), _) => None,
            _ => return self.error(tuple, msg, 440, "Address Family not Supported", key),
        };
        let limits = &self.config.limits;
        let over = |cap: usize, held: Option<&usize>| cap != 0 && held.copied().unwrap_or(0) >= cap;
        let ip = source_prefix(tuple.client.ip());
        if over(
            limits.max_allocations_per_user,
            self.per_user.get(&auth.username),
        ) || over(limits.max_allocations_per_ip, self.per_ip.get(&ip))
        {
            return self.error(tuple, msg, 486, "Allocation Quota Reached", key);
        }
        let reserve = msg.even_port == Some(true);
        let room = self.config.limits.max_allocations;
        if self.relay_count() + 1 + usize::from(reserve) > room {
            return self.error(tuple, msg, 508, "Insufficient Capacity", key);
        }
        let lifetime = self.granted_lifetime(msg.lifetime);
        let (id, relayed, pending) = match msg.reservation_token {
            Some(token) => {
                let Some(id) = self.tokens.remove(&token) else {
                    return self.error(
                        tuple,
                        msg,
                        508,
                        "Insufficient Capacity: no such reservation",
                        key,
                    );
                };
                let Some(r) = self.reserved.remove(&id) else {
                    return self.error(tuple, msg, 508, "Insufficient Capacity", key);
                };
                (id, Some(r.addr), None)
            }
            None => {
                let family = family.unwrap_or(Family::V4);
                let id = self.next_relay_id();
                let reserve_next = reserve.then(|| self.next_relay_id());
                let port = match (msg.even_port, reserve_next) {
                    (_, Some(next)) => PortRequest::EvenPair { next },
                    (Some(false), _) => PortRequest::Even,
                    _ => PortRequest::Any,
                };
                self.events.push_back(Event::OpenRelay {
                    relay: id,
                    family,
                    port,
                });
                let pending = Pending {
                    lifetime,
                    reserve_next,
                };
                (id, None, Some(pending))
            }
        };
        let limits = &self.config.limits;
        let bucket = (limits.rate_bytes_per_sec > 0).then(|| {
            let rate = limits.rate_bytes_per_sec as f64;
            TokenBucket::new(rate, limits.burst_bytes.max(65_535) as f64)
        });
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        self.by_tuple.insert(tuple, id);
        self.allocations.insert(
            id,
            Allocation {
                tuple,
                username: auth.username,
                key: auth.key,
                transaction_id: msg.transaction_id,
                relayed,
                pending,
                reservation_token: None,
                fingerprint: msg.fingerprint,
                expires: now + Duration::from_secs(lifetime.into()),
                permissions: BTreeMap::new(),
                channels: BTreeMap::new(),
                channel_of: BTreeMap::new(),
                bucket,
                deadline: None,
            },
        );
        if relayed.is_some() {
            self.stats.allocations_created += 1;
            self.reschedule(id);
            self.allocate_success(now, id);
        }
    }

    /// The Allocate success response (RFC 8656 7.3) for allocation `id`.
    fn allocate_success(&mut self, now: Instant, id: RelayId) {
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        let Some(relayed) = a.relayed else {
            return;
        };
        let remaining = a.expires.saturating_duration_since(now).as_secs();
        let (tuple, token) = (a.tuple, a.reservation_token);
        let data = self.response(
            Method::ALLOCATE,
            a.transaction_id,
            Class::Success,
            Some(&a.key),
            a.fingerprint,
            |w| {
                w.xor_relayed_address(relayed)
                    .lifetime(u32::try_from(remaining).unwrap_or(u32::MAX));
                if let Some(token) = token {
                    w.reservation_token(token);
                }
                w.xor_mapped_address(tuple.client);
            },
        );
        self.transmits.push_back(Transmit::Client { tuple, data });
    }

    fn relay_opened(&mut self, now: Instant, id: RelayId, addr: SocketAddr) {
        if let Some(next) = self.orphans.remove(&id) {
            for relay in std::iter::once(id).chain(next) {
                self.events.push_back(Event::CloseRelay { relay });
            }
            return;
        }
        let Some(a) = self.allocations.get_mut(&id) else {
            // Nobody waits for it (a driver's mistake): give it back.
            self.events.push_back(Event::CloseRelay { relay: id });
            return;
        };
        let Some(pending) = a.pending.take() else {
            return;
        };
        a.relayed = Some(addr);
        a.expires = now + Duration::from_secs(pending.lifetime.into());
        if let (Some(next), Some(port)) = (pending.reserve_next, addr.port().checked_add(1)) {
            let token = self.rng.bytes::<8>();
            a.reservation_token = Some(token);
            let expires = now + RESERVATION_LIFETIME;
            let addr = SocketAddr::new(addr.ip(), port);
            self.reserved.insert(
                next,
                Reservation {
                    token,
                    addr,
                    expires,
                },
            );
            self.tokens.insert(token, next);
            self.timers.push(Reverse((expires, next)));
        }
        self.stats.allocations_created += 1;
        self.reschedule(id);
        self.allocate_success(now, id);
    }

    fn relay_failed(&mut self, id: RelayId) {
        self.orphans.remove(&id);
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        if a.pending.is_none() {
            return;
        }
        let tuple = a.tuple;
        let data = self.response(
            Method::ALLOCATE,
            a.transaction_id,
            Class::Error,
            Some(&a.key),
            a.fingerprint,
            |w| {
                w.error_code(508, "Insufficient Capacity: no relayed port");
            },
        );
        self.count_error(508);
        self.transmits.push_back(Transmit::Client { tuple, data });
        // Its socket was never opened, so there is none to close.
        self.forget(id);
    }

    fn refresh(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let Some(id) = self.allocation_for(tuple, msg, &auth) else {
            return;
        };
        let a = &self.allocations[&id];
        let family = a.relayed.map(Family::of);
        if let Some(f) = msg.requested_address_family {
            let asked = match f {
                0x01 => Some(Family::V4),
                0x02 => Some(Family::V6),
                _ => None,
            };
            if asked != family {
                let key = Some(&auth.key);
                return self.error(tuple, msg, 443, "Peer Address Family Mismatch", key);
            }
        }
        let lifetime = match msg.lifetime {
            Some(0) => {
                self.stats.allocations_deleted += 1;
                self.remove_allocation(id);
                0
            }
            requested => {
                let lifetime = self.granted_lifetime(requested);
                if let Some(a) = self.allocations.get_mut(&id) {
                    a.expires = now + Duration::from_secs(lifetime.into());
                }
                self.reschedule(id);
                lifetime
            }
        };
        self.reply(tuple, msg, Class::Success, Some(&auth.key), |w| {
            w.lifetime(lifetime);
        });
    }

    /// The checks every peer address of a CreatePermission or ChannelBind must pass: the
    /// allocation's family (443) and the peer filter (403). Answers the request on failure.
    fn peer_allowed(
        &mut self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        key: &Key,
        relayed: Option<SocketAddr>,
        peer: SocketAddr,
    ) -> bool {
        if relayed.map(Family::of) != Some(Family::of(peer)) {
            self.error(tuple, msg, 443, "Peer Address Family Mismatch", Some(key));
            return false;
        }
        if !self.config.peers.permits(peer.ip()) {
            self.error(tuple, msg, 403, "Forbidden", Some(key));
            return false;
        }
        true
    }

    fn create_permission(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let Some(id) = self.allocation_for(tuple, msg, &auth) else {
            return;
        };
        let key = &auth.key;
        let mut ips: Vec<IpAddr> = Vec::new();
        let relayed = self.allocations[&id].relayed;
        for peer in msg.peer_addresses() {
            if !self.peer_allowed(tuple, msg, key, relayed, peer) {
                return;
            }
            if !ips.contains(&peer.ip()) {
                ips.push(peer.ip());
            }
        }
        if ips.is_empty() {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: no XOR-PEER-ADDRESS",
                Some(key),
            );
        }
        let max = self.config.limits.max_permissions;
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        a.sweep(now);
        let new = ips
            .iter()
            .filter(|ip| !a.permissions.contains_key(ip))
            .count();
        if a.permissions.len() + new > max {
            return self.error(
                tuple,
                msg,
                508,
                "Insufficient Capacity: too many permissions",
                Some(key),
            );
        }
        for ip in ips {
            a.permit(now, ip);
        }
        self.stats.permissions_created += new as u64;
        self.reschedule(id);
        self.reply(tuple, msg, Class::Success, Some(key), |_| {});
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        unix_secs: u64,
        tuple: FiveTuple,
        packet: &[u8],
        msg: &Message<'_>,
    ) {
        let Some(auth) = self.authenticate(now, unix_secs, tuple, packet, msg) else {
            return;
        };
        let Some(id) = self.allocation_for(tuple, msg, &auth) else {
            return;
        };
        let key = &auth.key;
        let (Some(channel), Some(peer)) = (msg.channel_number, msg.xor_peer_address) else {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS are needed",
                Some(key),
            );
        };
        if !(MIN_CHANNEL..=MAX_CHANNEL).contains(&channel) || peer.port() == 0 {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: channel or peer port out of range",
                Some(key),
            );
        }
        let relayed = self.allocations[&id].relayed;
        if !self.peer_allowed(tuple, msg, key, relayed, peer) {
            return;
        }
        let limits = &self.config.limits;
        let (max_channels, max_permissions) = (limits.max_channels, limits.max_permissions);
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        a.sweep(now);
        let bound = a.channels.get(&channel).map(|c| c.peer);
        let of_peer = a.channel_of.get(&peer).copied();
        if bound.is_some_and(|p| p != peer) || of_peer.is_some_and(|c| c != channel) {
            return self.error(
                tuple,
                msg,
                400,
                "Bad Request: channel or peer bound otherwise",
                Some(key),
            );
        }
        let new_channel = bound.is_none();
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if (new_channel && a.channels.len() >= max_channels)
            || (new_permission && a.permissions.len() >= max_permissions)
        {
            return self.error(
                tuple,
                msg,
                508,
                "Insufficient Capacity: too many channels",
                Some(key),
            );
        }
        a.bind(now, channel, peer);
        self.stats.channels_bound += u64::from(new_channel);
        self.stats.permissions_created += u64::from(new_permission);
        self.reschedule(id);
        self.reply(tuple, msg, Class::Success, Some(key), |_| {});
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
