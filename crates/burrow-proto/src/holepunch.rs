//! Hole punching with one peer: which direct paths exist, proving them with disco probes, and
//! choosing the one traffic takes (or none, meaning the relay).
//!
//! The exchange, designed so that no full-strength probe reaches a NAT before that NAT's own
//! host has sent towards the probe's source (a bare Linux router that sees such an early packet
//! keeps a conntrack entry for it, and then gives its host's next mapping a different port):
//!
//! 1. The initiator sends CallMeMaybe (its candidates) through the relay, and *primes* the
//!    candidates it already knows: pings with a small TTL that open its own NAT's mapping and
//!    filter towards them but expire before they reach the peer's network.
//! 2. The responder primes the initiator's candidates, answers with its own CallMeMaybe
//!    (marked as an answer), and waits for the initiator's pings (or
//!    [`PunchConfig::responder_wait`]).
//! 3. The initiator, on that answer, primes the responder's candidates and pings them at full
//!    strength: both sides are primed by now. Each pong proves a path. The responder starts
//!    pinging as soon as a ping reaches it.
//!
//! Relayed messages get lost (a side whose relay connection is still being made, a peer not
//! yet on the relay), and a lost call would leave both sides waiting for the next attempt. So
//! the initiator sends its call again every [`PunchConfig::call_retry`] until any call comes
//! back, and every call not marked as an answer is answered: two sides that both called
//! answer each other, and a side that answered once answers again when asked again.
//!
//! A proven path stays in use while packets arrive on it. When it goes quiet the core probes it,
//! and when probes go unanswered for [`PunchConfig::pong_timeout`] it is dropped: traffic goes
//! back to the relay and punching is retried after [`PunchConfig::retry_after`]. Among live
//! paths the lowest RTT wins, with hysteresis.
//!
//! **Hard NATs.** A NAT that maps per destination (symmetric) gives its host a fresh public
//! port towards the peer, which no candidate names. When exactly one side is hard, the pair
//! uses birthday probing: the hard side primes [`PunchConfig::spare_sockets`] extra sockets
//! towards the easy side's public address (each gets its own random mapping), and the easy side
//! pings random ports of the hard side's public IP, [`PunchConfig::spray_batch`] every
//! [`PunchConfig::spray_interval`], at most [`PunchConfig::spray_max`] per attempt, stopping
//! as soon as a path is proven. With 256 mappings among 64,512 ports, 2,048 probes find one
//! with a chance of 1 - (1 - 256/64512)^2048 > 99.9%. When both sides are hard no port can be
//! guessed, and the pair stays on the relay.
//!
//! Only a pong that answers a ping we sent to that very address proves a path, and disco
//! packets are authenticated end to end (see [`crate::disco`]), so a third host can neither
//! forge nor redirect a path.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::disco::{Message, NatHint, TxId, MAX_CANDIDATES};
use crate::Rng;

/// Timings and limits of hole punching.
#[derive(Clone, Debug)]
pub struct PunchConfig {
    /// TTL of priming pings: enough to leave our own NAT, too little to reach the peer's network.
    /// 2 passes one home router and expires at the next hop. A host behind two NATs (CGNAT)
    /// needs 3; deriving it from the measured hop count is still to do.
    pub primer_ttl: u8,
    /// Pings to each unproven candidate this often while punching.
    pub probe_interval: Duration,
    /// How long one punching attempt lasts.
    pub punch_window: Duration,
    /// A primed side waits this long for the other's pings before pinging on its own.
    pub responder_wait: Duration,
    /// A call with no call back in this long is sent again (until the window ends).
    pub call_retry: Duration,
    /// After an attempt found nothing, or the direct path died, the next attempt starts this
    /// much later, if the connection carried traffic in the meantime.
    pub retry_after: Duration,
    /// While traffic flows, a path quiet for this long is probed.
    pub active_heartbeat: Duration,
    /// While idle, a path is probed this often, to hold the NAT mappings open.
    pub idle_keepalive: Duration,
    /// Traffic older than this makes the connection idle.
    pub idle_after: Duration,
    /// A path whose probes go unanswered this long is dead.
    pub pong_timeout: Duration,
    /// Extra sockets a hard-NAT side opens for birthday probing (0 turns it off).
    pub spare_sockets: u16,
    /// Random-port probes an easy side sends to a hard-NAT peer per spray interval...
    pub spray_batch: u16,
    /// ...this often...
    pub spray_interval: Duration,
    /// ...and at most this many per attempt.
    pub spray_max: u16,
    /// A birthday attempt lasts this long (room for the responder's wait and the whole
    /// spray)...
    pub birthday_window: Duration,
    /// ...and the first one that finds nothing is retried this soon, with fresh spares and a
    /// fresh port order, instead of after [`PunchConfig::retry_after`].
    pub birthday_retry: Duration,
    /// A faster path replaces the current one only below this fraction of its RTT...
    pub switch_ratio: f64,
    /// ...and by at least this much.
    pub switch_margin: Duration,
}

impl Default for PunchConfig {
    fn default() -> Self {
        PunchConfig {
            primer_ttl: 2,
            probe_interval: Duration::from_millis(200),
            punch_window: Duration::from_secs(5),
            responder_wait: Duration::from_secs(1),
            call_retry: Duration::from_secs(1),
            retry_after: Duration::from_secs(10),
            active_heartbeat: Duration::from_millis(500),
            idle_keepalive: Duration::from_secs(10),
            idle_after: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(1),
            spare_sockets: 256,
            spray_batch: 5,
            spray_interval: Duration::from_millis(10),
            spray_max: 2048,
            birthday_window: Duration::from_secs(7),
            birthday_retry: Duration::from_millis(500),
            switch_ratio: 0.75,
            switch_margin: Duration::from_millis(1),
        }
    }
}

/// Where a disco message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Straight to this address over UDP, from the main socket.
    Direct(SocketAddr),
    /// Straight to this address over UDP, from spare socket `n` (birthday probing).
    Spare(u16, SocketAddr),
    /// Through the relay, to the peer's key.
    Relay,
}

/// A disco message for the driver to seal and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub dest: Dest,
    /// What.
    pub msg: Message,
    /// An IP TTL (hop limit) for this one packet, for primers; `None` is the default.
    pub ttl: Option<u8>,
}

/// The path traffic takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectPath {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Smoothed round-trip time of disco probes on it.
    pub rtt: Duration,
    /// The spare socket it uses, or `None` for the main socket.
    pub spare: Option<u16>,
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Traffic moves to this direct path, or back to the relay (`None`).
    PathChanged(Option<DirectPath>),
    /// A path became live: a pong sealed by the peer answered our ping to `addr` (from spare
    /// socket `spare`, or the main socket), so the peer really is there.
    Proven {
        /// The peer's address on that path.
        addr: SocketAddr,
        /// The spare socket of the path, if any.
        spare: Option<u16>,
    },
    /// The peer saw our main socket's packets come from this address: our public address
    /// towards it, which shows a mapping that depends on the destination when it differs
    /// from what STUN servers see.
    Observed(SocketAddr),
}

/// What happens to a peer's punching (see the crate's calling convention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Our own candidate addresses, told to the peer in CallMeMaybe (the first
    /// [`MAX_CANDIDATES`]).
    OurCandidates(Vec<SocketAddr>),
    /// What we know of our NAT; told to the peer in CallMeMaybe. It decides who does what in
    /// birthday probing.
    Nat(NatHint),
    /// The TTL of priming pings: enough hops to leave our own NATs (see
    /// [`PunchConfig::primer_ttl`]).
    PrimerTtl(u8),
    /// Addresses the peer is known by (from a ticket or a record).
    PeerCandidates(&'a [SocketAddr]),
    /// Application traffic moved at this time (either way, on any path): the connection is
    /// in use.
    Activity(Instant),
    /// A non-disco packet arrived straight over UDP at `at` from `from`: it keeps a proven
    /// path alive. Old news (the same time again) changes nothing.
    Received {
        /// When.
        at: Instant,
        /// From where.
        from: SocketAddr,
    },
    /// Start an attempt as the initiator (a new connection, or a retry). Does nothing while
    /// one is under way.
    Start,
    /// A disco message from the peer, `via` the relay or straight from an address.
    Message {
        /// How it came.
        via: Dest,
        /// What it said.
        msg: Message,
    },
    /// Time passes.
    Timeout,
}

/// What [`PeerPaths::poll_output`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A disco message to seal and send.
    Transmit(Transmit),
    /// Something changed.
    Event(Event),
    /// Nothing more to do until then (`None`: until the next input).
    Timeout(Option<Instant>),
}

/// Where punching stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing to do until an attempt starts.
    Idle,
    /// An attempt is under way.
    Punching {
        until: Instant,
        /// Pinging at full strength (else primed, and waiting for the other side).
        pinging: bool,
        /// When a waiting side starts pinging on its own.
        ping_from: Instant,
        next_probe: Instant,
    },
    /// The next attempt starts then.
    Waiting { retry_at: Instant },
}

/// One of the peer's addresses.
#[derive(Clone, Debug)]
struct Path {
    spare: Option<u16>,
    addr: SocketAddr,
    primed: bool,
    rtt: Option<Duration>,
    /// Proven and not since declared dead.
    live: bool,
    last_rx: Option<Instant>,
    last_ping: Option<Instant>,
    /// The first probe sent since the path last heard anything.
    unanswered_since: Option<Instant>,
}

impl Path {
    fn new(spare: Option<u16>, addr: SocketAddr) -> Path {
        Path {
            spare,
            addr,
            primed: false,
            rtt: None,
            live: false,
            last_rx: None,
            last_ping: None,
            unanswered_since: None,
        }
    }

    /// Something arrived on this path at `at`. Old news (a driver reporting the same last
    /// packet again) neither refreshes the path nor answers probes sent since.
    fn heard(&mut self, at: Instant) {
        if self.last_rx.is_none_or(|t| at > t) {
            self.last_rx = Some(at);
        }
        if self.unanswered_since.is_some_and(|u| at >= u) {
            self.unanswered_since = None;
        }
    }

    fn dest(&self) -> Dest {
        match self.spare {
            Some(n) => Dest::Spare(n, self.addr),
            None => Dest::Direct(self.addr),
        }
    }
}

/// Where a direct message came from or goes to: (spare socket, remote address).
fn split(dest: Dest) -> Option<(Option<u16>, SocketAddr)> {
    match dest {
        Dest::Direct(a) => Some((None, a)),
        Dest::Spare(n, a) => Some((Some(n), a)),
        Dest::Relay => None,
    }
}

/// Random-port probing of a hard-NAT peer's public IP: a permutation of the ports, walked
/// with a stride coprime to their count, so no port is probed twice.
#[derive(Clone, Copy, Debug)]
struct Spray {
    ip: std::net::IpAddr,
    start: u32,
    stride: u32,
    sent: u16,
    next: Instant,
    tx: TxId,
}

/// Ports a NAT picks mappings from (Linux: 1024..=65535 for unprivileged sources).
const SPRAY_PORT_BASE: u32 = 1024;
const SPRAY_PORTS: u32 = 65536 - SPRAY_PORT_BASE;

impl Spray {
    fn port(&self, i: u32) -> u16 {
        (SPRAY_PORT_BASE + (self.start + i.wrapping_mul(self.stride)) % SPRAY_PORTS) as u16
    }
}

/// A ping awaiting its pong.
#[derive(Clone, Copy, Debug)]
struct SentPing {
    tx: TxId,
    spare: Option<u16>,
    addr: SocketAddr,
    at: Instant,
}

/// Pings remembered for matching pongs; older ones are forgotten.
const MAX_SENT_PINGS: usize = 128;
/// Addresses tracked for one peer: its candidates and addresses it pinged us from.
const MAX_PATHS: usize = 2 * MAX_CANDIDATES;

/// Hole punching and path choice for one peer.
#[derive(Debug)]
pub struct PeerPaths {
    config: PunchConfig,
    rng: Rng,
    ours: Vec<SocketAddr>,
    paths: Vec<Path>,
    best: Option<usize>,
    phase: Phase,
    /// When our latest call of this attempt went out, while no call has come back.
    unanswered_call: Option<Instant>,
    /// What we know of our NAT.
    nat: NatHint,
    /// What the peer's last CallMeMaybe said of its NAT.
    peer_nat: NatHint,
    /// Spare sockets were primed in this attempt.
    spares_primed: bool,
    /// Birthday attempts that found nothing, since the last path.
    birthday_failures: u32,
    spray: Option<Spray>,
    /// The peer's public address: the first candidate it told us, where spares point.
    peer_public: Option<SocketAddr>,

    sent_pings: VecDeque<SentPing>,
    last_activity: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// The latest input's time, which the next timeout is reckoned from.
    now: Option<Instant>,
}

impl PeerPaths {
    /// A peer with no paths yet; `seed` feeds the transaction IDs (which need only be unique:
    /// disco packets are authenticated) and the birthday port order.
    pub fn new(config: PunchConfig, seed: u64) -> PeerPaths {
        PeerPaths {
            config,
            rng: Rng::new(seed),
            ours: Vec::new(),
            paths: Vec::new(),
            best: None,
            phase: Phase::Idle,
            unanswered_call: None,
            nat: NatHint::Easy,
            peer_nat: NatHint::Easy,
            spares_primed: false,
            birthday_failures: 0,
            spray: None,
            peer_public: None,
            sent_pings: VecDeque::new(),
            last_activity: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            now: None,
        }
    }

    /// Feeds one input (see the crate's calling convention).
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        self.now = Some(now);
        match input {
            Input::OurCandidates(mut addrs) => {
                addrs.truncate(MAX_CANDIDATES);
                self.ours = addrs;
            }
            Input::Nat(nat) => {
                let changed = nat != self.nat;
                self.nat = nat;
                // A hint that changes before a path is proven changes who does what in
                // birthday probing: start over, and tell the peer in a fresh CallMeMaybe.
                let in_use = self.is_punching()
                    || matches!(self.phase, Phase::Waiting { .. })
                        && self.last_activity.is_some_and(|t| {
                            now.saturating_duration_since(t) < self.config.retry_after
                        });
                if changed && self.best.is_none() && in_use {
                    self.phase = Phase::Idle;
                    self.start(now);
                }
            }
            Input::PrimerTtl(ttl) => self.config.primer_ttl = ttl.max(1),
            Input::PeerCandidates(addrs) => self.add_peer_candidates(addrs),
            Input::Activity(at) => self.last_activity = self.last_activity.max(Some(at)),
            Input::Received { at, from } => {
                if let Some(p) = self.paths.iter_mut().find(|p| p.addr == from && p.live) {
                    p.heard(at);
                }
            }
            Input::Start => self.start(now),
            Input::Message { via, msg } => self.handle_message(now, via, msg),
            Input::Timeout => self.handle_timeout(now),
        }
    }

    /// The next thing to do: transmits first, then events, then the next timeout.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.now.and_then(|now| self.poll_timeout(now)))
    }

    fn add_peer_candidates(&mut self, addrs: &[SocketAddr]) {
        if self.peer_public.is_none() {
            self.peer_public = addrs.first().copied();
        }
        for &a in addrs {
            self.path_index(None, a);
        }
    }

    /// Whether `addr` is one of the peer's paths (proven or not).
    pub fn knows(&self, addr: SocketAddr) -> bool {
        self.paths.iter().any(|p| p.addr == addr)
    }

    /// Whether a path to `addr` is live (proven and not since dead).
    pub fn is_live(&self, addr: SocketAddr) -> bool {
        self.paths.iter().any(|p| p.addr == addr && p.live)
    }

    /// Spare sockets that live paths use; the driver may close the others once no attempt is
    /// under way.
    pub fn spares_in_use(&self) -> impl Iterator<Item = u16> + '_ {
        self.paths.iter().filter(|p| p.live).filter_map(|p| p.spare)
    }

    /// The direct path in use, if any.
    pub fn best(&self) -> Option<DirectPath> {
        let p = &self.paths[self.best?];
        Some(DirectPath {
            addr: p.addr,
            rtt: p.rtt.unwrap_or_default(),
            spare: p.spare,
        })
    }

    /// Whether an attempt is under way.
    pub fn is_punching(&self) -> bool {
        matches!(self.phase, Phase::Punching { .. })
    }

    fn start(&mut self, now: Instant) {
        if self.is_punching() {
            return;
        }
        self.new_attempt();
        self.send_call(now, false);
        self.prime_all();
        self.prime_spares();
        self.phase = Phase::Punching {
            until: now + self.config.punch_window,
            pinging: false,
            ping_from: now + self.config.responder_wait,
            next_probe: now,
        };
    }

    fn new_attempt(&mut self) {
        self.spares_primed = false;
        self.spray = None;
        self.unanswered_call = None;
    }

    fn handle_message(&mut self, now: Instant, via: Dest, msg: Message) {
        match (msg, via) {
            (
                Message::CallMeMaybe {
                    candidates,
                    nat,
                    answer,
                },
                _,
            ) => self.handle_call(now, &candidates, nat, answer),
            (Message::Ping { tx }, via @ (Dest::Direct(_) | Dest::Spare(..))) => {
                self.handle_ping(now, via, tx)
            }
            (Message::Pong { tx, observed }, via @ (Dest::Direct(_) | Dest::Spare(..))) => {
                self.handle_pong(now, via, tx, observed)
            }
            // Probes only mean something on the path they test.
            (Message::Ping { .. } | Message::Pong { .. }, Dest::Relay) => {}
        }
    }

    fn handle_call(&mut self, now: Instant, candidates: &[SocketAddr], nat: NatHint, answer: bool) {
        self.peer_nat = nat;
        self.add_peer_candidates(candidates);
        let punching = self.is_punching();
        if !punching {
            self.new_attempt();
        }
        self.unanswered_call = None;
        self.prime_all();
        // The first candidate is the peer's public address, where spares must point.
        if let Some(&first) = candidates.first() {
            self.peer_public = Some(first);
        }
        self.prime_spares();
        let pinging = matches!(self.phase, Phase::Punching { pinging: true, .. });
        if answer || pinging {
            // The peer primed before answering (or we already ping): full strength now.
            self.phase = Phase::Punching {
                until: now + self.config.punch_window,
                pinging: true,
                ping_from: now,
                next_probe: now,
            };
        } else {
            // The peer lacks our candidates: answer, then wait for its pings.
            self.phase = Phase::Punching {
                until: now + self.config.punch_window,
                pinging: false,
                ping_from: now + self.config.responder_wait,
                next_probe: now,
            };
        }
        if !answer {
            self.send_call(now, true);
        }
        if self.birthday() || self.spraying() {
            if let Phase::Punching { until, .. } = &mut self.phase {
                *until = (*until).max(now + self.config.birthday_window);
            }
        }
    }

    fn handle_ping(&mut self, now: Instant, via: Dest, tx: TxId) {
        let Some((spare, from)) = split(via) else {
            return;
        };
        self.transmits.push_back(Transmit {
            dest: via,
            msg: Message::Pong { tx, observed: from },
            ttl: None,
        });
        if let Some(i) = self.path_index(spare, from) {
            // It pinged us, so its NAT is open towards us: no need to prime.
            self.paths[i].primed = true;
        }
        match &mut self.phase {
            Phase::Punching {
                pinging,
                next_probe,
                ..
            } if !*pinging => {
                *pinging = true;
                *next_probe = now;
            }
            // The peer is probing (a retry of its own, or a heartbeat): join in if we have no path.
            Phase::Idle | Phase::Waiting { .. } if self.best.is_none() => {
                self.new_attempt();
                self.phase = Phase::Punching {
                    until: now + self.config.punch_window,
                    pinging: true,
                    ping_from: now,
                    next_probe: now,
                };
            }
            _ => {}
        }
    }

    fn handle_pong(&mut self, now: Instant, via: Dest, tx: TxId, observed: SocketAddr) {
        let Some((spare, from)) = split(via) else {
            return;
        };
        if let Some(spray) = self.spray.filter(|s| s.tx == tx && spare.is_none()) {
            // A random port hit one of the peer's spare mappings: prove it like any path.
            if from.ip() == spray.ip {
                if let Some(i) = self.path_index(None, from) {
                    self.paths[i].primed = true;
                    self.ping(now, None, from);
                }
            }
            return;
        }
        let Some(pos) = self
            .sent_pings
            .iter()
            .position(|s| s.tx == tx && s.addr == from && s.spare == spare)
        else {
            return;
        };
        let sent = self.sent_pings.remove(pos).expect("position is in range");
        let Some(i) = self
            .paths
            .iter()
            .position(|p| p.addr == from && p.spare == spare)
        else {
            return;
        };
        let sample = now.saturating_duration_since(sent.at);
        let p = &mut self.paths[i];
        p.rtt = Some(match p.rtt {
            Some(r) => (r * 7 + sample) / 8,
            None => sample,
        });
        let proven = !p.live;
        p.live = true;
        p.heard(now);
        if proven {
            self.events.push_back(Event::Proven { addr: from, spare });
        }
        if spare.is_none() {
            self.events.push_back(Event::Observed(observed));
        }
        self.choose_best();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.check_paths(now);
        match self.phase {
            Phase::Idle => {}
            Phase::Waiting { retry_at } => {
                if now >= retry_at {
                    // Only a connection in use is worth punching for; a closed one would
                    // otherwise probe (and spray) forever.
                    if self
                        .last_activity
                        .is_some_and(|t| now.saturating_duration_since(t) < self.config.retry_after)
                    {
                        self.phase = Phase::Idle;
                        self.start(now);
                    } else {
                        self.phase = Phase::Waiting {
                            retry_at: now + self.config.retry_after,
                        };
                    }
                }
            }
            Phase::Punching {
                until,
                mut pinging,
                ping_from,
                mut next_probe,
            } => {
                if now >= until {
                    let birthday = self.birthday() || self.spraying();
                    self.phase = if self.best.is_some() {
                        self.birthday_failures = 0;
                        Phase::Idle
                    } else if birthday && self.birthday_failures == 0 {
                        self.birthday_failures += 1;
                        Phase::Waiting {
                            retry_at: now + self.config.birthday_retry,
                        }
                    } else {
                        self.birthday_failures += u32::from(birthday);
                        Phase::Waiting {
                            retry_at: now + self.config.retry_after,
                        }
                    };
                    return;
                }
                if self
                    .unanswered_call
                    .is_some_and(|t| now >= t + self.config.call_retry)
                {
                    self.send_call(now, false);
                }
                if !pinging && now >= ping_from {
                    pinging = true;
                    next_probe = now;
                }
                if pinging && now >= next_probe {
                    // A hard side's main socket meets the peer's public address through a
                    // fresh mapping the peer never sent to: such a ping only arrives early, and
                    // a bare router that keeps state for it remaps the peer's next flows (its
                    // birthday probes among them). The spares do that work instead.
                    let birthday_ip = self
                        .peer_public
                        .filter(|_| self.birthday() && self.peer_nat != NatHint::Open)
                        .map(|a| a.ip());
                    let unproven: Vec<(Option<u16>, SocketAddr)> = self
                        .paths
                        .iter()
                        .filter(|p| !p.live)
                        .filter(|p| p.spare.is_some() || Some(p.addr.ip()) != birthday_ip)
                        .map(|p| (p.spare, p.addr))
                        .collect();
                    for (spare, addr) in unproven {
                        self.ping(now, spare, addr);
                    }
                    next_probe = now + self.config.probe_interval;
                }
                if pinging {
                    self.spray(now);
                }
                self.phase = Phase::Punching {
                    until,
                    pinging,
                    ping_from,
                    next_probe,
                };
            }
        }
    }

    /// Heartbeats on live paths, and the death of silent ones.
    fn check_paths(&mut self, now: Instant) {
        let interval = self.heartbeat_interval(now);
        let mut died = false;
        for i in 0..self.paths.len() {
            let p = &self.paths[i];
            if !p.live {
                continue;
            }
            if p.unanswered_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.config.pong_timeout)
            {
                let p = &mut self.paths[i];
                p.live = false;
                p.unanswered_since = None;
                died = true;
                continue;
            }
            let quiet = p
                .last_rx
                .is_none_or(|t| now.saturating_duration_since(t) >= interval);
            let retry_due = p
                .last_ping
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.probe_interval);
            if quiet && retry_due {
                let (spare, addr) = (p.spare, p.addr);
                self.paths[i].unanswered_since.get_or_insert(now);
                self.ping(now, spare, addr);
            }
        }
        if died {
            self.choose_best();
            if self.best.is_none() && !self.is_punching() {
                self.phase = Phase::Waiting {
                    retry_at: now + self.config.retry_after,
                };
            }
        }
    }

    fn heartbeat_interval(&self, now: Instant) -> Duration {
        let active = self
            .last_activity
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.idle_after);
        if active {
            self.config.active_heartbeat
        } else {
            self.config.idle_keepalive
        }
    }

    /// The next time a timeout has something to do.
    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let mut next = match self.phase {
            Phase::Idle => None,
            Phase::Waiting { retry_at } => Some(retry_at),
            Phase::Punching {
                until,
                pinging,
                ping_from,
                next_probe,
            } => {
                let spray = self
                    .spray
                    .filter(|s| pinging && self.spraying() && s.sent < self.config.spray_max)
                    .map(|s| s.next);
                let call = self.unanswered_call.map(|t| t + self.config.call_retry);
                Some(
                    until
                        .min(if pinging { next_probe } else { ping_from })
                        .min(spray.unwrap_or(until))
                        .min(call.unwrap_or(until)),
                )
            }
        };
        let interval = self.heartbeat_interval(now);
        for p in self.paths.iter().filter(|p| p.live) {
            // The next probe, as check_paths decides it: once the path is quiet, and no faster
            // than the probe interval; and its death, if a probe is unanswered.
            let probe = p
                .last_rx
                .map_or(now, |t| t + interval)
                .max(p.last_ping.map_or(now, |l| l + self.config.probe_interval));
            let due = match p.unanswered_since {
                Some(t) => probe.min(t + self.config.pong_timeout),
                None => probe,
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next
    }

    /// Sends our candidates through the relay: as an answer, or as a call awaiting one.
    fn send_call(&mut self, now: Instant, answer: bool) {
        if !answer {
            self.unanswered_call = Some(now);
        }
        self.transmits.push_back(Transmit {
            dest: Dest::Relay,
            msg: Message::CallMeMaybe {
                candidates: self.ours.clone(),
                nat: self.nat,
                answer,
            },
            ttl: None,
        });
    }

    /// Primes every candidate not primed yet.
    fn prime_all(&mut self) {
        for i in 0..self.paths.len() {
            if !self.paths[i].primed {
                self.paths[i].primed = true;
                let tx = self.next_tx();
                self.transmits.push_back(Transmit {
                    dest: self.paths[i].dest(),
                    msg: Message::Ping { tx },
                    ttl: Some(self.config.primer_ttl),
                });
            }
        }
    }

    /// We are the hard side of a birthday pair.
    fn birthday(&self) -> bool {
        self.nat == NatHint::Hard && self.peer_nat != NatHint::Hard && self.config.spare_sockets > 0
    }

    /// Birthday probing, hard side: primes every spare socket towards the peer's public
    /// address, once per attempt, unless the peer is hard too (then no port can be guessed).
    fn prime_spares(&mut self) {
        if !self.birthday() || self.spares_primed || self.best.is_some() {
            return;
        }
        let Some(target) = self.peer_public else {
            return;
        };
        self.spares_primed = true;
        for n in 0..self.config.spare_sockets {
            let tx = self.next_tx();
            self.transmits.push_back(Transmit {
                dest: Dest::Spare(n, target),
                msg: Message::Ping { tx },
                ttl: Some(self.config.primer_ttl),
            });
        }
    }

    /// Birthday probing, easy side: the next batch of random-port pings at a hard peer.
    fn spraying(&self) -> bool {
        self.nat != NatHint::Hard && self.peer_nat == NatHint::Hard && self.best.is_none()
    }

    fn spray(&mut self, now: Instant) {
        if !self.spraying() {
            return;
        }
        let Some(target) = self.peer_public else {
            return;
        };
        let spray = match self.spray {
            Some(s) => s,
            None => {
                let r = self.next_tx();
                let word = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"));
                // Coprime to 64512 = 2^10 * 3^2 * 7: odd, and no factor 3 or 7.
                let mut stride = (word(4) % SPRAY_PORTS) | 1;
                while stride.is_multiple_of(3) || stride.is_multiple_of(7) {
                    stride += 2;
                }
                let s = Spray {
                    ip: target.ip(),
                    start: word(0) % SPRAY_PORTS,
                    stride,
                    sent: 0,
                    next: now,
                    tx: self.next_tx(),
                };
                self.spray = Some(s);
                s
            }
        };
        if now < spray.next || spray.sent >= self.config.spray_max {
            return;
        }
        let mut s = spray;
        for _ in 0..self.config.spray_batch.min(self.config.spray_max - s.sent) {
            let to = SocketAddr::new(s.ip, s.port(u32::from(s.sent)));
            s.sent += 1;
            self.transmits.push_back(Transmit {
                dest: Dest::Direct(to),
                msg: Message::Ping { tx: s.tx },
                ttl: None,
            });
        }
        s.next = now + self.config.spray_interval;
        self.spray = Some(s);
    }

    fn ping(&mut self, now: Instant, spare: Option<u16>, addr: SocketAddr) {
        let tx = self.next_tx();
        let Some(p) = self
            .paths
            .iter_mut()
            .find(|p| p.addr == addr && p.spare == spare)
        else {
            return;
        };
        p.last_ping = Some(now);
        let dest = p.dest();
        if self.sent_pings.len() >= MAX_SENT_PINGS {
            self.sent_pings.pop_front();
        }
        self.sent_pings.push_back(SentPing {
            tx,
            spare,
            addr,
            at: now,
        });
        self.transmits.push_back(Transmit {
            dest,
            msg: Message::Ping { tx },
            ttl: None,
        });
    }

    /// The path for (`spare`, `addr`), added if new and there is room (an unproven path
    /// makes room).
    fn path_index(&mut self, spare: Option<u16>, addr: SocketAddr) -> Option<usize> {
        if let Some(i) = self
            .paths
            .iter()
            .position(|p| p.addr == addr && p.spare == spare)
        {
            return Some(i);
        }
        if self.paths.len() >= MAX_PATHS {
            let best = self.best;
            let victim = (0..self.paths.len()).find(|&i| !self.paths[i].live && Some(i) != best)?;
            self.paths.remove(victim);
            self.best = self.best.map(|b| if b > victim { b - 1 } else { b });
        }
        self.paths.push(Path::new(spare, addr));
        Some(self.paths.len() - 1)
    }

    /// Re-picks the path with the lowest RTT, keeping the current one unless clearly beaten.
    fn choose_best(&mut self) {
        let fastest = self
            .paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.live)
            .min_by_key(|(_, p)| p.rtt.unwrap_or(Duration::MAX))
            .map(|(i, _)| i);
        let keep = match (self.best, fastest) {
            (Some(cur), Some(new)) if self.paths[cur].live => {
                let (c, n) = (
                    self.paths[cur].rtt.unwrap_or_default(),
                    self.paths[new].rtt.unwrap_or_default(),
                );
                !(n.as_secs_f64() < c.as_secs_f64() * self.config.switch_ratio
                    && c.saturating_sub(n) >= self.config.switch_margin)
            }
            _ => false,
        };
        let chosen = if keep { self.best } else { fastest };
        if chosen != self.best {
            self.best = chosen;
            self.events.push_back(Event::PathChanged(self.best()));
        }
    }

    fn next_tx(&mut self) -> TxId {
        self.rng.bytes()
    }
}

#[cfg(test)]
mod tests;
