//! NAT behaviour discovery (RFC 5780) as a sans-IO state machine: the core of `netcheck`.
//!
//! [`NatBehaviour`] follows the crate's calling convention. The driver owns up to three UDP
//! sockets ([`SocketId`]); it feeds [`Input::Start`], then every datagram and timeout, sends the
//! transmits that [`NatBehaviour::poll_output`] hands out, sleeps until the timeout it hands out
//! last, and reads the [`Findings`] once [`Event::Done`] comes. Transaction IDs come from the
//! seed and requests are kept in the order they were sent, so the same seed and inputs give the
//! same datagrams in the same order. The machine asks, in parallel:
//!
//! * every server for a Binding from the main socket (public address, RTT, multi-server
//!   evidence of a symmetric mapping);
//! * the first server that offers OTHER-ADDRESS for the mapping tests (RFC 5780 4.3: same
//!   request to the alternate IP, then to the alternate IP and port);
//! * the same server for the filtering tests (RFC 5780 4.4: CHANGE-REQUEST for IP and port, and
//!   for port only), from a second socket whose mapping has seen no other destination, because a
//!   NAT with address-dependent filtering would otherwise let the alternate IP in;
//! * the main socket's own public address (hairpinning, RFC 5780 4.5).
//!
//! A server with one IP address and a second port (burrow's ALTERNATE-PORT, see
//! [`crate::stun::server`]) serves the same tests with the port alone, when no server offers
//! OTHER-ADDRESS: a mapping that changes with the destination port is address-and-port
//! dependent, and one that does not is reported endpoint-independent (an address-dependent
//! mapping would look the same, unless servers at other IPs saw another mapping). A changed
//! port that gets through shows only that filtering is not port-dependent, so endpoint-
//! independent and address-dependent filtering both report `unknown`.
//!
//! Negative answers (a filter that drops a response) only show as silence, so each probe has a
//! timeout derived from the RTT measured so far, and everything ends by the deadline.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::stun::{Class, Message, MessageWriter, Method, TransactionId};
use crate::Rng;

/// First retransmission interval; doubled after each send (RFC 8489 6.2.1 uses 500 ms, a
/// diagnostic with a 3 s budget needs to be quicker).
const INITIAL_RTO: Duration = Duration::from_millis(100);
/// Most sends of one request.
const MAX_SENDS: u32 = 6;
/// Least time to wait for an answer that may never come (a filtered response).
const MIN_SILENCE: Duration = Duration::from_millis(500);
/// The error recorded for a server that never answered.
pub const TIMEOUT: &str = "timeout: no response";

/// How a NAT maps an internal address to external ones (RFC 4787 4.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mapping {
    /// No translation: the public address is a local one.
    None,
    /// One external address for every destination.
    EndpointIndependent,
    /// A new external address per destination IP.
    AddressDependent,
    /// A new external address per destination IP and port.
    AddressAndPortDependent,
    /// Not determined.
    Unknown,
}

/// Which inbound packets a NAT or firewall lets through (RFC 4787 5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filtering {
    /// Nothing is filtered and nothing is translated.
    None,
    /// Anyone may send to a mapping.
    EndpointIndependent,
    /// Only IPs the mapping has sent to.
    AddressDependent,
    /// Only the exact IP and port the mapping has sent to.
    AddressAndPortDependent,
    /// Not determined.
    Unknown,
}

/// The classic (RFC 3489) name of a NAT's behaviour.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NatType {
    /// No NAT, no filtering.
    Open,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Mapping depends on the destination.
    Symmetric,
    /// No STUN server answered over UDP.
    UdpBlocked,
    /// Not enough evidence.
    Unknown,
}

macro_rules! names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The name used in reports and JSON.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
names!(Mapping { None => "none", EndpointIndependent => "endpoint-independent",
    AddressDependent => "address-dependent", AddressAndPortDependent => "address-and-port-dependent",
    Unknown => "unknown" });
names!(Filtering { None => "none", EndpointIndependent => "endpoint-independent",
    AddressDependent => "address-dependent", AddressAndPortDependent => "address-and-port-dependent",
    Unknown => "unknown" });
names!(NatType { Open => "open", FullCone => "full-cone", RestrictedCone => "restricted-cone",
    PortRestrictedCone => "port-restricted-cone", Symmetric => "symmetric", UdpBlocked => "udp-blocked",
    Unknown => "unknown" });

impl NatType {
    /// The classic name for a mapping and filtering pair.
    pub fn classify(mapping: Mapping, filtering: Filtering) -> NatType {
        match (mapping, filtering) {
            (Mapping::AddressDependent | Mapping::AddressAndPortDependent, _) => NatType::Symmetric,
            (
                Mapping::None,
                Filtering::None | Filtering::EndpointIndependent | Filtering::Unknown,
            ) => NatType::Open,
            (Mapping::None | Mapping::EndpointIndependent, Filtering::AddressDependent) => {
                NatType::RestrictedCone
            }
            (Mapping::None | Mapping::EndpointIndependent, Filtering::AddressAndPortDependent) => {
                NatType::PortRestrictedCone
            }
            (Mapping::EndpointIndependent, Filtering::EndpointIndependent | Filtering::None) => {
                NatType::FullCone
            }
            (Mapping::EndpointIndependent | Mapping::Unknown, _) => NatType::Unknown,
        }
    }
}

/// The driver's sockets, as the machine names them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SocketId {
    /// The IPv4 socket whose mapping is reported (and later used by the endpoint).
    Main4,
    /// A second IPv4 socket, used only for the filtering tests.
    Filter4,
    /// The IPv6 socket.
    Main6,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub socket: SocketId,
    /// The destination.
    pub to: SocketAddr,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// What the machine is told when it starts.
#[derive(Clone, Debug)]
pub struct NatBehaviourConfig {
    /// STUN servers, IPv4 and IPv6, in order of preference.
    pub servers: Vec<SocketAddr>,
    /// The sockets the driver managed to bind, with their local addresses (wildcard IPs allowed).
    pub sockets: Vec<(SocketId, SocketAddr)>,
    /// Every IP address of the host's interfaces, to tell "no NAT" from NAT.
    pub local_ips: Vec<IpAddr>,
    /// When the report must be final.
    pub deadline: Instant,
}

/// What happens to the machine (see the crate's calling convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Send the first Binding requests. Other inputs before it are ignored, and a second one
    /// does nothing.
    Start,
    /// A datagram arrived.
    Datagram {
        /// The socket it arrived on.
        socket: SocketId,
        /// The sender.
        from: SocketAddr,
        /// The datagram.
        packet: &'a [u8],
    },
    /// Time passes: requests are retransmitted, and silence answers the probes that waited
    /// long enough.
    Timeout,
}

/// What the machine reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The findings are final ([`NatBehaviour::findings`]); nothing more is sent, and the
    /// timeout is `None` from now on.
    Done,
}

/// What [`NatBehaviour::poll_output`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A datagram to send.
    Transmit(Transmit),
    /// Something happened.
    Event(Event),
    /// Nothing more to do until then (`None`: until the next input, or never once done).
    Timeout(Option<Instant>),
}

/// What one server told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerResult {
    /// The server's address.
    pub addr: SocketAddr,
    /// Round-trip time of the Binding request, if answered.
    pub rtt: Option<Duration>,
    /// Our address as the server saw it.
    pub mapped: Option<SocketAddr>,
    /// Whether it offered an alternate address (RFC 5780).
    pub other_address: Option<SocketAddr>,
    /// Why it gave nothing, if it did not.
    pub error: Option<String>,
}

/// The conclusions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Findings {
    /// Whether any server answered over UDP.
    pub udp: bool,
    /// The public IPv4 address and port of the main socket.
    pub public_addr: Option<SocketAddr>,
    /// The public IPv6 address and port, when IPv6 works.
    pub public_addr_v6: Option<SocketAddr>,
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// The classic NAT type.
    pub nat_type: NatType,
    /// Whether a packet to our own public address came back (None when not tested).
    pub hairpinning: Option<bool>,
    /// Per-server results, in configuration order.
    pub servers: Vec<ServerResult>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Probe {
    /// Test I to server `i`.
    Binding(usize),
    /// Mapping test II: alternate IP, primary port.
    MapAltIp,
    /// Mapping test III: alternate IP and port.
    MapAltBoth,
    /// The mapping test of a one-address server: primary IP, alternate port.
    MapAltPort,
    /// Filtering test II: CHANGE-REQUEST for IP and port.
    FilterBoth,
    /// Filtering test III: CHANGE-REQUEST for port only.
    FilterPort,
    /// A request to our own public address.
    Hairpin,
}

struct Outstanding {
    tid: TransactionId,
    probe: Probe,
    socket: SocketId,
    to: SocketAddr,
    payload: Vec<u8>,
    first_sent: Instant,
    next_send: Instant,
    sends: u32,
    /// When silence counts as the answer; None means "at the deadline".
    give_up: Option<Instant>,
}

/// The server chosen for the behaviour tests.
#[derive(Clone, Copy)]
struct TestServer {
    primary: SocketAddr,
    other: Other,
}

/// What the test server offers beside its primary address.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Other {
    /// Another IP and port (RFC 5780 OTHER-ADDRESS).
    Address(SocketAddr),
    /// Another port on the primary IP (ALTERNATE-PORT).
    Port(u16),
}

impl TestServer {
    /// Where a response to CHANGE-REQUEST for the port only comes from.
    fn alt_port(&self) -> SocketAddr {
        let port = match self.other {
            Other::Address(a) => a.port(),
            Other::Port(p) => p,
        };
        SocketAddr::new(self.primary.ip(), port)
    }
}

/// The RFC 5780 tests of one host's NAT, from the first request to the findings.
pub struct NatBehaviour {
    config: NatBehaviourConfig,
    rng: Rng,
    started: bool,
    /// Requests awaiting an answer, in the order they were first sent: retransmissions go out
    /// in that order on every run (a map with random iteration order would shuffle them).
    outstanding: Vec<Outstanding>,
    queue: VecDeque<Transmit>,
    events: VecDeque<Event>,
    results: Vec<ServerResult>,
    max_rtt: Option<Duration>,
    rfc5780: Option<TestServer>,
    map_alt_ip: Option<Option<SocketAddr>>,
    map_alt_both: Option<Option<SocketAddr>>,
    map_alt_port: Option<Option<SocketAddr>>,
    filter_both: Option<bool>,
    filter_port: Option<bool>,
    hairpin: Option<bool>,
    done: bool,
}

impl NatBehaviour {
    /// Creates the machine; nothing is sent before [`Input::Start`]. `seed` feeds the
    /// transaction IDs, which an off-path attacker must not guess (the driver passes a fresh
    /// random one).
    pub fn new(config: NatBehaviourConfig, seed: u64) -> Self {
        let results = config
            .servers
            .iter()
            .map(|&addr| ServerResult {
                addr,
                rtt: None,
                mapped: None,
                other_address: None,
                error: None,
            })
            .collect();
        NatBehaviour {
            config,
            rng: Rng::new(seed),
            started: false,
            outstanding: Vec::new(),
            queue: VecDeque::new(),
            events: VecDeque::new(),
            results,
            max_rtt: None,
            rfc5780: None,
            map_alt_ip: None,
            map_alt_both: None,
            map_alt_port: None,
            filter_both: None,
            filter_port: None,
            hairpin: None,
            done: false,
        }
    }

    fn has_socket(&self, id: SocketId) -> bool {
        self.config.sockets.iter().any(|(s, _)| *s == id)
    }

    /// Feeds one input (see the crate's calling convention).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Start => self.start(now),
            _ if !self.started || self.done => {}
            Input::Datagram {
                socket,
                from,
                packet,
            } => self.handle_datagram(now, socket, from, packet),
            Input::Timeout => self.handle_timeout(now),
        }
    }

    /// The next thing to do: transmits first, then events, then the next timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.queue.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.next_timeout())
    }

    /// Whether the findings are final.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Sends the first Binding requests.
    fn start(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        for i in 0..self.results.len() {
            let addr = self.results[i].addr;
            let socket = if addr.is_ipv4() {
                SocketId::Main4
            } else {
                SocketId::Main6
            };
            if self.has_socket(socket) {
                self.send_probe(Probe::Binding(i), socket, addr, now, |_| {});
            } else {
                self.results[i].error = Some(format!("no {} socket", family(addr)));
            }
        }
        self.check_done(now);
    }

    fn send_probe(
        &mut self,
        probe: Probe,
        socket: SocketId,
        to: SocketAddr,
        now: Instant,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) {
        let tid = TransactionId(self.rng.bytes());
        let mut payload = Vec::with_capacity(64);
        let mut w = MessageWriter::new(&mut payload, Class::Request, Method::BINDING, tid);
        attrs(&mut w);
        w.finish_with_fingerprint();
        let give_up = match probe {
            Probe::Binding(_) => self.max_rtt.map(|rtt| now + silence(rtt).max(4 * rtt)),
            _ => Some(now + silence(self.max_rtt.unwrap_or(Duration::ZERO))),
        };
        self.queue.push_back(Transmit {
            socket,
            to,
            payload: payload.clone(),
        });
        self.outstanding.push(Outstanding {
            tid,
            probe,
            socket,
            to,
            payload,
            first_sent: now,
            next_send: now + INITIAL_RTO,
            sends: 1,
            give_up,
        });
    }

    /// When a timeout has something to do.
    fn next_timeout(&self) -> Option<Instant> {
        if self.done || !self.started {
            return None;
        }
        let mut next = self.config.deadline;
        for o in &self.outstanding {
            if o.sends < MAX_SENDS {
                next = next.min(o.next_send);
            }
            if let Some(t) = o.give_up {
                next = next.min(t);
            }
        }
        Some(next)
    }

    /// Retransmits and expires probes.
    fn handle_timeout(&mut self, now: Instant) {
        let deadline_passed = now >= self.config.deadline;
        let (expired, waiting): (Vec<Outstanding>, Vec<Outstanding>) =
            std::mem::take(&mut self.outstanding)
                .into_iter()
                .partition(|o| deadline_passed || o.give_up.is_some_and(|t| now >= t));
        self.outstanding = waiting;
        for o in &mut self.outstanding {
            if o.sends < MAX_SENDS && now >= o.next_send {
                self.queue.push_back(Transmit {
                    socket: o.socket,
                    to: o.to,
                    payload: o.payload.clone(),
                });
                o.sends += 1;
                o.next_send = now + INITIAL_RTO * 2u32.pow(o.sends - 1);
            }
        }
        for o in expired {
            self.on_silence(o.probe);
        }
        self.check_done(now);
    }

    fn on_silence(&mut self, probe: Probe) {
        match probe {
            Probe::Binding(i) => {
                let r = &mut self.results[i];
                if r.error.is_none() {
                    r.error = Some(TIMEOUT.into());
                }
            }
            Probe::MapAltIp => self.map_alt_ip = Some(None),
            Probe::MapAltBoth => self.map_alt_both = Some(None),
            Probe::MapAltPort => self.map_alt_port = Some(None),
            Probe::FilterBoth => self.filter_both = Some(false),
            Probe::FilterPort => self.filter_port = Some(false),
            Probe::Hairpin => self.hairpin = Some(false),
        }
    }

    fn handle_datagram(&mut self, now: Instant, socket: SocketId, from: SocketAddr, packet: &[u8]) {
        let Ok(msg) = Message::parse(packet) else {
            return;
        };
        let Some(i) = self
            .outstanding
            .iter()
            .position(|o| o.tid == msg.transaction_id)
        else {
            return;
        };
        let o = &self.outstanding[i];
        if o.socket != socket {
            return;
        }
        if o.probe == Probe::Hairpin {
            // Our own request came back through the NAT.
            if msg.class == Class::Request {
                self.outstanding.remove(i);
                self.hairpin = Some(true);
            }
            self.check_done(now);
            return;
        }
        if msg.class != Class::Success && msg.class != Class::Error {
            return;
        }
        let o = self.outstanding.remove(i);
        // Karn: an RTT is only trustworthy for a request sent once.
        let rtt = now.saturating_duration_since(if o.sends == 1 {
            o.first_sent
        } else {
            o.next_send - INITIAL_RTO * 2u32.pow(o.sends - 1)
        });
        if msg.class == Class::Error {
            let code = msg.error_code.map(|e| e.code).unwrap_or(0);
            match o.probe {
                Probe::Binding(i) => {
                    self.results[i].rtt = Some(rtt);
                    self.results[i].error = Some(format!("error response {code}"));
                }
                // A server that refuses a test leaves its question open.
                Probe::FilterBoth
                | Probe::FilterPort
                | Probe::MapAltIp
                | Probe::MapAltBoth
                | Probe::MapAltPort => self.rfc5780_unusable(),
                Probe::Hairpin => {}
            }
            self.check_done(now);
            return;
        }
        let mapped = msg.mapped();
        match o.probe {
            Probe::Binding(i) => {
                let r = &mut self.results[i];
                r.rtt = Some(rtt);
                r.mapped = mapped;
                r.other_address = msg.other_address;
                if mapped.is_none() {
                    r.error = Some("response without a mapped address".into());
                }
                self.max_rtt = Some(self.max_rtt.map_or(rtt, |m| m.max(rtt)));
                let silence_after = silence(self.max_rtt.unwrap_or(rtt));
                for o in &mut self.outstanding {
                    if matches!(o.probe, Probe::Binding(_)) && o.give_up.is_none() {
                        o.give_up = Some(o.first_sent + silence_after.max(4 * rtt));
                    }
                }
                let offered = match (msg.other_address, msg.alternate_port) {
                    (Some(a), _)
                        if a.is_ipv4() && a.ip() != from.ip() && a.port() != from.port() =>
                    {
                        Some(Other::Address(a))
                    }
                    (_, Some(p)) if p != from.port() => Some(Other::Port(p)),
                    _ => None,
                };
                // The first server that can test, or a second IP over a second port.
                let better = matches!(
                    (self.rfc5780.map(|s| s.other), offered),
                    (None, Some(_)) | (Some(Other::Port(_)), Some(Other::Address(_)))
                );
                if let (Some(mapped), Some(other), true, true) =
                    (mapped, offered, from.is_ipv4(), better)
                {
                    self.start_behaviour_tests(
                        TestServer {
                            primary: from,
                            other,
                        },
                        mapped,
                        now,
                    );
                }
            }
            Probe::MapAltIp => self.map_alt_ip = Some(mapped),
            Probe::MapAltBoth => self.map_alt_both = Some(mapped),
            Probe::MapAltPort => self.map_alt_port = Some(mapped),
            Probe::FilterBoth | Probe::FilterPort => {
                // Only a response from the changed address proves the filter let it in.
                let Some(server) = self.rfc5780 else { return };
                let expected = match (o.probe, server.other) {
                    (Probe::FilterBoth, Other::Address(a)) => a,
                    _ => server.alt_port(),
                };
                if from != expected {
                    self.rfc5780_unusable();
                } else if o.probe == Probe::FilterBoth {
                    self.filter_both = Some(true);
                } else {
                    self.filter_port = Some(true);
                }
            }
            Probe::Hairpin => unreachable!("handled above"),
        }
        self.check_done(now);
    }

    /// Starts (or, for a better server, starts over) the mapping, filtering and hairpinning
    /// tests.
    fn start_behaviour_tests(&mut self, server: TestServer, mapped: SocketAddr, now: Instant) {
        self.outstanding
            .retain(|o| matches!(o.probe, Probe::Binding(_)));
        (self.map_alt_ip, self.map_alt_both, self.map_alt_port) = (None, None, None);
        (self.filter_both, self.filter_port, self.hairpin) = (None, None, None);
        self.rfc5780 = Some(server);
        let primary = server.primary;
        match server.other {
            Other::Address(other) => {
                let alt_ip = SocketAddr::new(other.ip(), primary.port());
                self.send_probe(Probe::MapAltIp, SocketId::Main4, alt_ip, now, |_| {});
                self.send_probe(Probe::MapAltBoth, SocketId::Main4, other, now, |_| {});
            }
            Other::Port(_) => {
                let alt_port = server.alt_port();
                self.send_probe(Probe::MapAltPort, SocketId::Main4, alt_port, now, |_| {});
            }
        }
        if self.has_socket(SocketId::Filter4) {
            if matches!(server.other, Other::Address(_)) {
                self.send_probe(Probe::FilterBoth, SocketId::Filter4, primary, now, |w| {
                    w.change_request(true, true);
                });
            }
            self.send_probe(Probe::FilterPort, SocketId::Filter4, primary, now, |w| {
                w.change_request(false, true);
            });
        }
        if !self.is_local(mapped, SocketId::Main4) {
            self.send_probe(Probe::Hairpin, SocketId::Main4, mapped, now, |_| {});
        }
    }

    /// The server misbehaved on a behaviour test: forget its answers.
    fn rfc5780_unusable(&mut self) {
        self.outstanding
            .retain(|o| matches!(o.probe, Probe::Binding(_)));
        self.map_alt_ip = Some(None);
        self.map_alt_both = Some(None);
        self.map_alt_port = Some(None);
        self.filter_both = None;
        self.filter_port = None;
    }

    fn is_local(&self, mapped: SocketAddr, socket: SocketId) -> bool {
        let port = self
            .config
            .sockets
            .iter()
            .find(|(s, _)| *s == socket)
            .map(|(_, a)| a.port());
        port == Some(mapped.port()) && self.config.local_ips.contains(&mapped.ip())
    }

    fn check_done(&mut self, now: Instant) {
        if !self.done && (self.outstanding.is_empty() || now >= self.config.deadline) {
            self.outstanding.clear();
            self.done = true;
            self.events.push_back(Event::Done);
        }
    }

    /// The findings so far; final once [`Event::Done`] came.
    pub fn findings(&self) -> Findings {
        let v4: Vec<&ServerResult> = self
            .results
            .iter()
            .filter(|r| r.addr.is_ipv4() && r.mapped.is_some())
            .collect();
        let udp = self.results.iter().any(|r| r.rtt.is_some());
        let public_addr = self
            .rfc5780
            .and_then(|s| v4.iter().find(|r| r.addr == s.primary))
            .or(v4.first())
            .and_then(|r| r.mapped);
        let public_addr_v6 = self
            .results
            .iter()
            .find(|r| r.addr.is_ipv6() && r.mapped.is_some())
            .and_then(|r| r.mapped);

        let open = public_addr.is_some_and(|a| self.is_local(a, SocketId::Main4));
        let mapping = match public_addr {
            None => Mapping::Unknown,
            Some(_) if open => Mapping::None,
            Some(first) => {
                // Several servers at different IPs show whether the mapping depends on the
                // destination, though not whether the port matters.
                let by_servers = (v4.len() >= 2).then(|| {
                    if v4.iter().all(|r| r.mapped == Some(first)) {
                        Mapping::EndpointIndependent
                    } else {
                        Mapping::AddressDependent
                    }
                });
                match (self.map_alt_ip, self.map_alt_both, self.map_alt_port) {
                    (Some(Some(alt_ip)), _, _) if alt_ip == first => Mapping::EndpointIndependent,
                    (Some(Some(alt_ip)), Some(Some(alt_both)), _) if alt_both == alt_ip => {
                        Mapping::AddressDependent
                    }
                    (Some(Some(_)), Some(Some(_)), _) => Mapping::AddressAndPortDependent,
                    (_, _, Some(Some(alt_port))) if alt_port != first => {
                        Mapping::AddressAndPortDependent
                    }
                    (_, _, Some(Some(_))) => by_servers.unwrap_or(Mapping::EndpointIndependent),
                    _ => by_servers.unwrap_or(Mapping::Unknown),
                }
            }
        };
        let filtering = match (self.filter_both, self.filter_port) {
            (Some(true), _) if mapping == Mapping::None => Filtering::None,
            (Some(true), _) => Filtering::EndpointIndependent,
            (Some(false), Some(true)) => Filtering::AddressDependent,
            // A changed source port alone was filtered.
            (Some(false) | None, Some(false)) => Filtering::AddressAndPortDependent,
            _ => Filtering::Unknown,
        };
        let nat_type = if !udp {
            // Blocked only if something was actually sent and met silence.
            let sent = self
                .results
                .iter()
                .any(|r| r.error.as_deref() == Some(TIMEOUT));
            if sent {
                NatType::UdpBlocked
            } else {
                NatType::Unknown
            }
        } else {
            NatType::classify(mapping, filtering)
        };
        Findings {
            udp,
            public_addr,
            public_addr_v6,
            mapping,
            filtering,
            nat_type,
            hairpinning: self.hairpin,
            servers: self.results.clone(),
        }
    }
}

fn silence(rtt: Duration) -> Duration {
    (3 * rtt + Duration::from_millis(200)).max(MIN_SILENCE)
}

fn family(addr: SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

#[cfg(test)]
mod tests;
