//! Two [`PeerPaths`] in virtual time, across a model of two port-restricted NATs.

use super::*;

const A_PUB: &str = "198.18.1.2:40000";
const B_PUB: &str = "198.18.2.2:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

/// A packet on its way.
struct InFlight {
    at: Instant,
    to: Side,
    /// Relayed, or the public address it was sent to.
    dest: Dest,
    /// The sender's public address (for direct packets).
    from: SocketAddr,
    msg: Message,
}

/// Two NATs joined by a direct link and a relay. B's is port-restricted; A's is too, or
/// symmetric (a fresh random public port for every socket and destination).
struct Net {
    now: Instant,
    a: PeerPaths,
    b: PeerPaths,
    /// One-way delay of the direct path (and of each relay hop).
    delay: Duration,
    /// The direct path is cut both ways.
    cut: bool,
    /// Relayed messages to each side sent before this time are lost (its relay connection is
    /// still being made, or the peer's).
    relay_lost_to: [Option<Instant>; 2],
    /// A's NAT maps per destination.
    a_symmetric: bool,
    /// A's symmetric mappings: (spare socket, destination) -> public port.
    a_mappings: Vec<(Option<u16>, SocketAddr, u16)>,
    rng: u64,
    /// Addresses each NAT has sent to at full strength or primed, with the time.
    opened: Vec<(Side, SocketAddr, Instant)>,
    /// Full-strength packets that reached a NAT before its host had sent towards the source.
    early: usize,
    flight: Vec<InFlight>,
    /// CallMeMaybe messages each side sent.
    calls: [usize; 2],
    /// Direct packets each side sent.
    sent: [usize; 2],
    events: Vec<(Instant, Side, Event)>,
    /// When each side's next timeout is due.
    timers: [Option<Instant>; 2],
}

impl Net {
    fn new(delay: Duration) -> Net {
        let now = Instant::now();
        let mut a = PeerPaths::new(PunchConfig::default(), 1);
        let mut b = PeerPaths::new(PunchConfig::default(), 2);
        a.handle_input(now, Input::OurCandidates(vec![addr(A_PUB)]));
        b.handle_input(now, Input::OurCandidates(vec![addr(B_PUB)]));
        Net {
            now,
            a,
            b,
            delay,
            cut: false,
            relay_lost_to: [None; 2],
            a_symmetric: false,
            a_mappings: Vec::new(),
            rng: 0x5eed,
            opened: Vec::new(),
            early: 0,
            flight: Vec::new(),
            calls: [0; 2],
            sent: [0; 2],
            events: Vec::new(),
            timers: [None; 2],
        }
    }

    /// Feeds `side` an input now.
    fn feed(&mut self, side: Side, input: Input<'_>) {
        let now = self.now;
        self.peer(side).handle_input(now, input);
    }

    /// A behind a symmetric NAT, which says so in its CallMeMaybe.
    fn symmetric_a(delay: Duration) -> Net {
        let mut net = Net::new(delay);
        net.a_symmetric = true;
        net.feed(Side::A, Input::Nat(NatHint::Hard));
        net
    }

    fn peer(&mut self, side: Side) -> &mut PeerPaths {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn public(side: Side) -> SocketAddr {
        addr(if side == Side::A { A_PUB } else { B_PUB })
    }

    /// The public address a packet from `side`'s socket to `to` leaves with.
    fn source(&mut self, side: Side, spare: Option<u16>, to: SocketAddr) -> SocketAddr {
        if side == Side::B || !self.a_symmetric {
            return Self::public(side);
        }
        if let Some(m) = self.a_mappings.iter().find(|m| m.0 == spare && m.1 == to) {
            return SocketAddr::new(addr(A_PUB).ip(), m.2);
        }
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 1024 + ((self.rng >> 33) % 64512) as u16;
        self.a_mappings.push((spare, to, port));
        SocketAddr::new(addr(A_PUB).ip(), port)
    }

    /// Moves every transmit onto the wire.
    fn drain(&mut self) {
        for side in [Side::A, Side::B] {
            let other = if side == Side::A { Side::B } else { Side::A };
            loop {
                let t = match self.peer(side).poll_output() {
                    Output::Transmit(t) => t,
                    Output::Event(e) => {
                        self.events.push((self.now, side, e));
                        continue;
                    }
                    Output::Timeout(at) => {
                        self.timers[side as usize] = at;
                        break;
                    }
                };
                if matches!(t.msg, Message::CallMeMaybe { .. }) {
                    self.calls[side as usize] += 1;
                }
                let (spare, to) = match t.dest {
                    Dest::Relay => {
                        if self.relay_lost_to[other as usize].is_some_and(|t| self.now < t) {
                            continue;
                        }
                        self.flight.push(InFlight {
                            at: self.now + self.delay * 2,
                            to: other,
                            dest: Dest::Relay,
                            from: Self::public(side),
                            msg: t.msg,
                        });
                        continue;
                    }
                    Dest::Direct(to) => (None, to),
                    Dest::Spare(n, to) => (Some(n), to),
                };
                self.sent[side as usize] += 1;
                let from = self.source(side, spare, to);
                self.opened.push((side, to, self.now));
                if to.ip() == Self::public(other).ip() && t.ttl.is_none() && !self.cut {
                    self.flight.push(InFlight {
                        at: self.now + self.delay,
                        to: other,
                        dest: Dest::Direct(to),
                        from,
                        msg: t.msg,
                    });
                }
            }
        }
    }

    /// Where a direct packet to `to` from `from` lands on `side`, if its NAT lets it in.
    fn arrive(&self, side: Side, to: SocketAddr, from: SocketAddr, now: Instant) -> Option<Dest> {
        if side == Side::A && self.a_symmetric {
            let m = self
                .a_mappings
                .iter()
                .find(|m| m.2 == to.port() && m.1 == from)?;
            return Some(match m.0 {
                Some(n) => Dest::Spare(n, from),
                None => Dest::Direct(from),
            });
        }
        let open = self
            .opened
            .iter()
            .any(|&(s, t, at)| s == side && t == from && at <= now);
        (to == Self::public(side) && open).then_some(Dest::Direct(from))
    }

    /// Runs until `until`, delivering packets and firing timers in time order.
    fn run(&mut self, until: Instant) {
        loop {
            self.drain();
            let next_packet = self.flight.iter().map(|f| f.at).min();
            let next_timer = self.timers.into_iter().flatten().min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                return;
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next.max(self.now);
            let now = self.now;
            if let Some(i) = self.flight.iter().position(|f| f.at <= now) {
                let f = self.flight.swap_remove(i);
                let via = match f.dest {
                    Dest::Relay => Dest::Relay,
                    Dest::Direct(to) | Dest::Spare(_, to) => {
                        if self.cut {
                            continue;
                        }
                        // The receiving NAT's filter: open only towards addresses its host
                        // sent to.
                        match self.arrive(f.to, to, f.from, now) {
                            Some(via) => via,
                            None => {
                                // Random-port probes are expected to miss; count the rest.
                                if !(f.to == Side::A && self.a_symmetric) {
                                    self.early += 1;
                                }
                                continue;
                            }
                        }
                    }
                };
                self.feed(f.to, Input::Message { via, msg: f.msg });
            } else {
                self.feed(Side::A, Input::Timeout);
                self.feed(Side::B, Input::Timeout);
            }
        }
    }

    fn path_change(&self, side: Side) -> Option<(Instant, Option<DirectPath>)> {
        self.events.iter().rev().find_map(|(t, s, e)| match e {
            Event::PathChanged(p) if *s == side => Some((*t, *p)),
            _ => None,
        })
    }
}

#[test]
fn punches_through_two_port_restricted_nats_without_early_packets() {
    let mut net = Net::new(Duration::from_millis(40));
    let start = net.now;
    net.feed(Side::A, Input::PeerCandidates(&[addr(B_PUB)]));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(2));

    assert_eq!(
        net.early, 0,
        "a full-strength probe reached a NAT not yet open"
    );
    let (at_a, path_a) = net.path_change(Side::A).expect("A found a path");
    let (at_b, path_b) = net.path_change(Side::B).expect("B found a path");
    assert_eq!(path_a.unwrap().addr, addr(B_PUB));
    assert_eq!(path_b.unwrap().addr, addr(A_PUB));
    // CallMeMaybe there and back through the relay (4 hops), then one direct round trip.
    assert!(
        at_a - start <= Duration::from_millis(400),
        "{:?}",
        at_a - start
    );
    assert!(
        at_b - start <= Duration::from_millis(500),
        "{:?}",
        at_b - start
    );
    let rtt = path_a.unwrap().rtt;
    assert!(
        rtt >= Duration::from_millis(80) && rtt < Duration::from_millis(100),
        "{rtt:?}"
    );
}

#[test]
fn without_the_peers_candidates_the_answer_brings_them() {
    // A's ticket held only a relay: it learns B's address from B's CallMeMaybe.
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(2));
    assert_eq!(net.early, 0);
    assert!(net.a.best().is_some() && net.b.best().is_some());
}

#[test]
fn a_silent_path_is_dropped_within_two_seconds_and_punching_retried() {
    let mut net = Net::new(Duration::from_millis(10));
    let start = net.now;
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(1));
    assert!(net.a.best().is_some());

    // Traffic flows, then the direct path is cut.
    let cut_at = start + Duration::from_secs(3);
    let mut t = start + Duration::from_secs(1);
    while t < cut_at {
        net.a.handle_input(t, Input::Activity(t));
        net.b.handle_input(t, Input::Activity(t));
        net.a.handle_input(
            t,
            Input::Received {
                at: t,
                from: addr(B_PUB),
            },
        );
        net.b.handle_input(
            t,
            Input::Received {
                at: t,
                from: addr(A_PUB),
            },
        );
        net.run(t);
        t += Duration::from_millis(50);
    }
    net.cut = true;
    let last_rx = cut_at - Duration::from_millis(50);
    let mut t = cut_at;
    while t < cut_at + Duration::from_secs(3) {
        net.a.handle_input(t, Input::Activity(t));
        net.b.handle_input(t, Input::Activity(t));
        // A driver keeps reporting the last packet it saw, which must not keep the path alive.
        net.a.handle_input(
            t,
            Input::Received {
                at: last_rx,
                from: addr(B_PUB),
            },
        );
        net.b.handle_input(
            t,
            Input::Received {
                at: last_rx,
                from: addr(A_PUB),
            },
        );
        net.run(t);
        t += Duration::from_millis(50);
    }
    for side in [Side::A, Side::B] {
        let (at, path) = net.path_change(side).unwrap();
        assert_eq!(path, None, "{side:?} back on the relay");
        assert!(
            at - cut_at <= Duration::from_secs(2),
            "{side:?}: {:?}",
            at - cut_at
        );
    }
    // The next attempt comes after retry_after, and finds the path again once it is back.
    net.cut = false;
    net.run(cut_at + Duration::from_secs(16));
    assert!(net.a.best().is_some(), "retried and found the path again");
}

#[test]
fn only_a_pong_to_our_ping_from_that_address_proves_a_path() {
    let mut p = PeerPaths::new(PunchConfig::default(), 7);
    let now = Instant::now();
    let b = addr(B_PUB);
    p.handle_input(now, Input::PeerCandidates(&[b]));
    p.handle_message(
        now,
        Dest::Relay,
        Message::CallMeMaybe {
            candidates: vec![],
            nat: NatHint::Easy,
            answer: false,
        },
    );
    p.handle_timeout(now + Duration::from_secs(1));
    let tx = transmits(&mut p)
        .into_iter()
        .find_map(|t| match t.msg {
            Message::Ping { tx } if t.ttl.is_none() && t.dest == Dest::Direct(b) => Some(tx),
            _ => None,
        })
        .expect("a full ping to b");
    let observed = addr(A_PUB);
    let later = now + Duration::from_millis(1100);
    // Wrong transaction, right address.
    p.handle_message(
        later,
        Dest::Direct(b),
        Message::Pong {
            tx: [9; 12],
            observed,
        },
    );
    // Right transaction, from another host.
    let third = addr("203.0.113.66:1234");
    p.handle_message(later, Dest::Direct(third), Message::Pong { tx, observed });
    // Right transaction, but through the relay.
    p.handle_message(later, Dest::Relay, Message::Pong { tx, observed });
    assert_eq!(p.best(), None);
    // The real one.
    p.handle_message(later, Dest::Direct(b), Message::Pong { tx, observed });
    assert_eq!(p.best().map(|d| d.addr), Some(b));
}

#[test]
fn the_lowest_rtt_path_wins() {
    let mut p = PeerPaths::new(PunchConfig::default(), 3);
    let t0 = Instant::now();
    let (far, near) = (addr("198.18.2.2:50000"), addr("10.0.0.7:50000"));
    p.handle_input(t0, Input::PeerCandidates(&[far, near]));
    p.handle_message(
        t0,
        Dest::Relay,
        Message::CallMeMaybe {
            candidates: vec![],
            nat: NatHint::Easy,
            answer: false,
        },
    );
    p.handle_timeout(t0 + Duration::from_secs(1));
    let pings: Vec<(SocketAddr, TxId)> = transmits(&mut p)
        .into_iter()
        .filter_map(|t| match (t.dest, t.msg, t.ttl) {
            (Dest::Direct(a), Message::Ping { tx }, None) => Some((a, tx)),
            _ => None,
        })
        .collect();
    let sent = t0 + Duration::from_secs(1);
    let observed = addr(A_PUB);
    for (a, tx) in pings {
        let rtt = if a == far { 60 } else { 2 };
        p.handle_message(
            sent + Duration::from_millis(rtt),
            Dest::Direct(a),
            Message::Pong { tx, observed },
        );
    }
    assert_eq!(p.best().map(|d| d.addr), Some(near));
}

#[test]
fn with_no_direct_path_it_stays_on_the_relay_and_retries_at_a_bounded_pace() {
    let mut net = Net::new(Duration::from_millis(20));
    net.cut = true;
    let start = net.now;
    net.feed(Side::A, Input::Start);
    // The connection is in use throughout.
    let mut t = start;
    while t < start + Duration::from_secs(60) {
        net.a.handle_input(t, Input::Activity(t));
        net.b.handle_input(t, Input::Activity(t));
        net.run(t);
        t += Duration::from_millis(500);
    }
    assert_eq!(net.a.best(), None);
    assert_eq!(net.path_change(Side::A), None);
    // One attempt per punch window plus retry delay (15 s), each one CallMeMaybe from each side.
    assert_eq!(
        net.calls[Side::A as usize],
        4,
        "attempts at 0, 15, 30 and 45 s"
    );
    assert_eq!(net.calls[Side::B as usize], 4);
}

#[test]
fn birthday_probing_finds_a_symmetric_nat_within_its_budget() {
    for (seed, a_starts) in [(1, true), (2, false), (3, true), (4, false)] {
        let mut net = Net::symmetric_a(Duration::from_millis(40));
        net.rng = seed;
        let start = net.now;
        if a_starts {
            net.feed(Side::A, Input::PeerCandidates(&[addr(B_PUB)]));
            net.feed(Side::A, Input::Start);
        } else {
            net.feed(Side::B, Input::PeerCandidates(&[addr(A_PUB)]));
            net.feed(Side::B, Input::Start);
        }
        net.run(start + Duration::from_secs(10));
        // Nothing reaches B before B sent towards it: A's main socket leaves B's public
        // address to the spares (an early packet there would remap B's probes).
        assert_eq!(net.early, 0, "seed {seed}: early packet at the easy side");
        let path_a = net
            .a
            .best()
            .unwrap_or_else(|| panic!("seed {seed}: A found no path"));
        let path_b = net
            .b
            .best()
            .unwrap_or_else(|| panic!("seed {seed}: B found no path"));
        assert_eq!(path_a.addr, addr(B_PUB));
        assert!(path_a.spare.is_some(), "the hard side uses a spare socket");
        assert_eq!(path_b.addr.ip(), addr(A_PUB).ip());
        assert!(path_b.spare.is_none());
        let (at, _) = net.path_change(Side::B).unwrap();
        assert!(
            at - start < Duration::from_secs(6),
            "seed {seed}: {:?}",
            at - start
        );
        // Bounded: the spares once, the spray at most its budget, and it stopped when found.
        let cfg = PunchConfig::default();
        assert!(net.sent[Side::A as usize] < usize::from(cfg.spare_sockets) + 200);
        assert!(net.sent[Side::B as usize] <= usize::from(cfg.spray_max) + 200);
        // Probes in flight when the first hit landed may prove a second spare or so.
        let in_use: Vec<u16> = net.a.spares_in_use().collect();
        assert!(
            in_use.contains(&path_a.spare.unwrap()) && in_use.len() <= 3,
            "{in_use:?}"
        );
    }
}

#[test]
fn two_symmetric_nats_do_not_spray() {
    let mut net = Net::symmetric_a(Duration::from_millis(20));
    net.feed(Side::B, Input::Nat(NatHint::Hard));
    let start = net.now;
    net.feed(Side::A, Input::PeerCandidates(&[addr(B_PUB)]));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(4));
    assert!(net.a.best().is_none());
    // A primed its spares before it knew B was hard too; nobody sprayed.
    let spares = usize::from(PunchConfig::default().spare_sockets);
    assert!(
        net.sent[0] < spares + 50 && net.sent[1] < 50,
        "{:?}",
        net.sent
    );
}

#[test]
fn a_connection_no_longer_used_is_not_punched_for_again() {
    let mut net = Net::new(Duration::from_millis(20));
    net.cut = true;
    let start = net.now;
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(60));
    assert_eq!(net.calls[Side::A as usize], 1, "one attempt, no retries");
    // Traffic again: the next check punches.
    let later = start + Duration::from_secs(60);
    net.a.handle_input(later, Input::Activity(later));
    net.run(later + Duration::from_secs(11));
    assert_eq!(net.calls[Side::A as usize], 2);
}

#[test]
fn an_idle_path_costs_one_probe_each_way_per_keepalive_interval() {
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    net.feed(Side::A, Input::PeerCandidates(&[addr(B_PUB)]));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(10));
    assert!(net.a.best().is_some());
    let before = net.sent;
    net.run(start + Duration::from_secs(70));
    let sent = [net.sent[0] - before[0], net.sent[1] - before[1]];
    // One ping and one pong per side every 10 s: 12 in 60 s, and some slack.
    assert!(
        sent[0] <= 14 && sent[1] <= 14,
        "{sent:?} direct packets in 60 s"
    );
}

#[test]
fn a_birthday_attempt_that_misses_is_retried_at_once_then_at_the_normal_pace() {
    let mut net = Net::symmetric_a(Duration::from_millis(20));
    // A budget that (almost) cannot hit: one spare, one probe.
    for p in [&mut net.a, &mut net.b] {
        p.config.spare_sockets = 1;
        p.config.spray_max = 1;
    }
    let start = net.now;
    net.feed(Side::A, Input::PeerCandidates(&[addr(B_PUB)]));
    net.feed(Side::A, Input::Start);
    let mut t = start;
    let mut calls_at = Vec::new();
    while t < start + Duration::from_secs(30) {
        net.a.handle_input(t, Input::Activity(t));
        net.b.handle_input(t, Input::Activity(t));
        let before = net.calls[Side::A as usize];
        net.run(t);
        if net.calls[Side::A as usize] > before {
            calls_at.push((t - start).as_secs_f64());
        }
        t += Duration::from_millis(100);
    }
    assert!(net.a.best().is_none());
    // Attempt at 0 s, its window (7 s), a retry 0.5 s later, then the 10 s pace.
    assert!(calls_at.len() >= 3, "{calls_at:?}");
    assert!((7.4..8.0).contains(&calls_at[1]), "{calls_at:?}");
    assert!(calls_at[2] - calls_at[1] > 10.0, "{calls_at:?}");
}

/// Every transmit `p` has queued.
fn transmits(p: &mut PeerPaths) -> Vec<Transmit> {
    std::iter::from_fn(|| match p.poll_output() {
        Output::Transmit(t) => Some(Some(t)),
        Output::Event(_) => Some(None),
        Output::Timeout(_) => None,
    })
    .flatten()
    .collect()
}

/// After every timeout the next one lies in the future: a deadline that is already due and
/// that handling it leaves due would spin the driver (found by fuzzing the endpoint core).
#[test]
fn a_stale_packet_time_never_leaves_a_deadline_in_the_past() {
    let mut p = PeerPaths::new(PunchConfig::default(), 3);
    let t0 = Instant::now();
    let b = addr(B_PUB);
    p.handle_input(t0, Input::PeerCandidates(&[b]));
    p.handle_input(
        t0,
        Input::Message {
            via: Dest::Relay,
            msg: Message::CallMeMaybe {
                candidates: vec![],
                nat: NatHint::Easy,
                answer: false,
            },
        },
    );
    let t1 = t0 + Duration::from_secs(1);
    p.handle_input(t1, Input::Timeout);
    let tx = transmits(&mut p)
        .into_iter()
        .find_map(|t| match t.msg {
            Message::Ping { tx } if t.ttl.is_none() => Some(tx),
            _ => None,
        })
        .expect("a ping");
    let observed = addr(A_PUB);
    p.handle_input(
        t1,
        Input::Message {
            via: Dest::Direct(b),
            msg: Message::Pong { tx, observed },
        },
    );
    assert!(p.best().is_some());
    // Quiet for 10 s: a heartbeat goes out, unanswered...
    let t2 = t1 + Duration::from_secs(10);
    p.handle_input(t2, Input::Timeout);
    assert!(!transmits(&mut p).is_empty(), "a heartbeat");
    // ...and the driver reports a packet from just before it.
    p.handle_input(
        t2 + Duration::from_millis(1),
        Input::Received {
            at: t2 - Duration::from_millis(1),
            from: b,
        },
    );
    let mut now = t2 + Duration::from_millis(1);
    for _ in 0..50 {
        p.handle_input(now, Input::Timeout);
        let at = loop {
            match p.poll_output() {
                Output::Timeout(at) => break at,
                _ => continue,
            }
        };
        let at = at.expect("a live path has a deadline");
        assert!(at > now, "deadline {:?} not after {:?}", at - t2, now - t2);
        now = at;
    }
}

/// Both sides switched to a direct path within `limit` of `start`, and no probe came early.
fn assert_direct_within(net: &Net, start: Instant, limit: Duration) {
    assert_eq!(net.early, 0);
    for side in [Side::A, Side::B] {
        let at = net
            .events
            .iter()
            .find_map(|(t, s, e)| match e {
                Event::PathChanged(Some(_)) if *s == side => Some(*t - start),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{side:?} never went direct"));
        assert!(at < limit, "{side:?} direct after {at:?}");
    }
}

#[test]
fn a_call_lost_on_the_relay_is_sent_again() {
    // A's relay connection is not up yet when it calls, and it knows none of B's addresses.
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    net.relay_lost_to[Side::B as usize] = Some(start + Duration::from_millis(300));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(3));
    assert_direct_within(&net, start, Duration::from_millis(1300));
    // The call once more, then no more once answered.
    assert_eq!(net.calls, [2, 1]);
}

#[test]
fn an_answer_lost_on_the_relay_is_asked_for_again() {
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    // A's call reaches B (at 40 ms); B's answer does not reach A.
    net.relay_lost_to[Side::A as usize] = Some(start + Duration::from_millis(100));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(3));
    assert_direct_within(&net, start, Duration::from_millis(1300));
    assert_eq!(net.calls, [2, 2], "a call again, and an answer again");
}

#[test]
fn a_peer_that_calls_after_our_call_was_lost_is_answered() {
    // A's call is lost; B calls on its own soon after (its own dial). Taking B's call for an
    // answer to ours would leave B without A's addresses.
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    net.relay_lost_to[Side::B as usize] = Some(start + Duration::from_millis(100));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_millis(300));
    net.feed(Side::B, Input::Start);
    net.run(start + Duration::from_secs(3));
    // Before A's call goes again (at 1 s): B's call got its answer.
    assert_direct_within(&net, start, Duration::from_millis(600));
}

#[test]
fn two_sides_that_call_at_once_answer_each_other() {
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    net.feed(Side::A, Input::Start);
    net.feed(Side::B, Input::Start);
    net.run(start + Duration::from_secs(3));
    assert_eq!(net.early, 0);
    assert!(net.a.best().is_some() && net.b.best().is_some());
    assert_eq!(net.calls, [2, 2], "a call and an answer each");
}

#[test]
fn an_unanswered_call_is_sent_again_a_bounded_number_of_times() {
    let mut net = Net::new(Duration::from_millis(20));
    let start = net.now;
    net.relay_lost_to[Side::B as usize] = Some(start + Duration::from_secs(3600));
    net.feed(Side::A, Input::Start);
    net.run(start + Duration::from_secs(60));
    // One attempt (nothing used the connection since): its 5 s window, a call every second.
    assert_eq!(net.calls[Side::A as usize], 5);
}
