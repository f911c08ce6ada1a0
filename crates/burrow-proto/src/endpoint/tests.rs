//! The endpoint core in virtual time: strangers, NAT verdicts, deferred dials and garbage
//! collection, with real disco sealing and real STUN messages.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::disco::{Message, NatHint, SharedKey};
use crate::stun::{Class, Message as StunMessage, MessageWriter, Method};

const SERVER: &str = "203.0.113.30:3478";
const OUR_PUBLIC: &str = "198.18.1.2:40000";
const PEER_PUBLIC: &str = "198.18.2.2:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

/// A key of its own for stranger `i` (`i` below 2^24).
fn stranger(i: u32) -> SecretKey {
    let mut b = [0x5a; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_bytes(b)
}

/// Everything the core wants done now, and its next timeout.
fn drain(core: &mut EndpointCore) -> (Vec<Transmit>, Vec<Event>, Option<Instant>) {
    let (mut transmits, mut events) = (Vec::new(), Vec::new());
    loop {
        match core.poll_output() {
            Output::Transmit(t) => transmits.push(t),
            Output::Event(e) => events.push(e),
            Output::Timeout(at) => return (transmits, events, at),
        }
    }
}

/// Runs the core's timers up to `until`, with no traffic on any connection unless `busy`
/// names the peer; returns what it sent and said.
fn run(
    core: &mut EndpointCore,
    from: Instant,
    until: Instant,
    busy: &dyn Fn(&NodeId, Instant) -> bool,
) -> (Vec<Transmit>, Vec<Event>) {
    let (mut transmits, mut events, mut next) = drain(core);
    while let Some(at) = next.filter(|at| *at <= until) {
        let at = at.max(from);
        let activity = |node: &NodeId| Activity {
            direct_rx: None,
            any: busy(node, at).then_some(at),
        };
        core.handle_input(at, Input::Timeout(&activity));
        let (t, e, n) = drain(core);
        transmits.extend(t);
        events.extend(e);
        next = n;
    }
    (transmits, events)
}

fn idle(_: &NodeId, _: Instant) -> bool {
    false
}

/// A ping from `from` to `to`, sealed as `from`.
fn ping(from: &SecretKey, to: &NodeId, tx: u8) -> Vec<u8> {
    let k = SharedKey::new(from, to).unwrap();
    k.seal(&from.node_id(), &Message::Ping { tx: [tx; 12] }, [tx; 12])
        .unwrap()
}

/// The answer of a STUN server to the Binding request in `t`: our `mapped` address, and a
/// second port if given.
fn stun_answer(t: &Transmit, mapped: SocketAddr, alternate_port: Option<u16>) -> Vec<u8> {
    let req = StunMessage::parse(&t.payload).unwrap();
    let mut out = Vec::new();
    let mut w = MessageWriter::new(
        &mut out,
        Class::Success,
        Method::BINDING,
        req.transaction_id,
    );
    w.xor_mapped_address(mapped);
    if let Some(p) = alternate_port {
        w.alternate_port(p);
    }
    w.finish();
    out
}

/// The disco messages among `transmits` that `peer` can open, with where they went.
fn opened(transmits: &[Transmit], peer: &SecretKey, core: &NodeId) -> Vec<(Destination, Message)> {
    let k = SharedKey::new(peer, core).unwrap();
    transmits
        .iter()
        .filter_map(|t| Some((t.dest, k.open(&t.payload).ok()?)))
        .collect()
}

fn calls(msgs: &[(Destination, Message)]) -> Vec<NatHint> {
    msgs.iter()
        .filter_map(|(_, m)| match m {
            Message::CallMeMaybe { nat, .. } => Some(*nat),
            _ => None,
        })
        .collect()
}

fn stun_config() -> EndpointConfig {
    EndpointConfig {
        stun_servers: vec![addr(SERVER)],
        ..EndpointConfig::default()
    }
}

#[test]
fn ten_thousand_forged_pings_admit_nobody_and_cost_nothing() {
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let start = Instant::now();
    let victim = key(2).node_id();
    let mut now = start;
    for i in 0..10_000u32 {
        let from = SocketAddr::from((
            [198, 51, 100, (i % 250) as u8 + 1],
            1024 + (i % 60000) as u16,
        ));
        let attacker = stranger(i);
        let packet = match i % 4 {
            // Sealed with the attacker's key, claiming to be the victim.
            0 => {
                let mut p = ping(&attacker, &me.node_id(), 1);
                p[4..36].copy_from_slice(victim.as_bytes());
                p
            }
            // Sealed for someone else.
            1 => ping(&attacker, &key(3).node_id(), 2),
            // Authentic, but not a ping: straight over UDP that starts nothing.
            2 => {
                let k = SharedKey::new(&attacker, &me.node_id()).unwrap();
                let msg = Message::CallMeMaybe {
                    candidates: vec![from],
                    nat: NatHint::Easy,
                    answer: false,
                };
                k.seal(&attacker.node_id(), &msg, [3; 12]).unwrap()
            }
            // An authentic ping with one bit flipped.
            _ => {
                let mut p = ping(&attacker, &me.node_id(), 4);
                let last = p.len() - 1;
                p[last] ^= 1;
                p
            }
        };
        core.handle_input(
            now,
            Input::Udp {
                from,
                packet: &packet,
            },
        );
        // Spread over time, so that every one of them is tried (64 key agreements a second).
        now += Duration::from_millis(16);
    }
    let (transmits, events, _) = drain(&mut core);
    assert_eq!(core.peer_count(), 0);
    assert!(transmits.is_empty(), "{} answers", transmits.len());
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn strangers_pings_get_a_pong_each_within_the_budget_of_their_source() {
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let start = Instant::now();
    let budget = EndpointConfig::default().stranger_keys_per_source_per_sec;
    // 200 strangers from one address in one instant: only its burst of key agreements.
    for i in 0..200 {
        let from = SocketAddr::from(([198, 51, 100, 1], 2000 + i as u16));
        let p = ping(&stranger(i), &me.node_id(), 1);
        core.handle_input(start, Input::Udp { from, packet: &p });
    }
    let (transmits, _, _) = drain(&mut core);
    assert_eq!(
        transmits.len(),
        (2.0 * budget) as usize,
        "one pong per agreed key"
    );
    assert_eq!(core.peer_count(), 0, "strangers are not punched for");
    // Each pong goes back to the ping's source, sealed for that stranger.
    for (t, i) in transmits.iter().zip(0..) {
        let from = SocketAddr::from(([198, 51, 100, 1], 2000 + i as u16));
        assert_eq!(t.dest, Destination::Udp(from));
        let msgs = opened(std::slice::from_ref(t), &stranger(i), &me.node_id());
        assert!(matches!(msgs[..], [(_, Message::Pong { observed, .. })] if observed == from));
    }
    // Another source has its own budget.
    let p = ping(&stranger(500), &me.node_id(), 1);
    let from = SocketAddr::from(([198, 51, 100, 2], 2000));
    core.handle_input(start, Input::Udp { from, packet: &p });
    assert_eq!(drain(&mut core).0.len(), 1);
    // Thousands more over time: the table of strangers stays at its cap.
    for i in 1000..11_000u32 {
        let from = SocketAddr::from(([198, 51, (i / 250) as u8, (i % 250) as u8 + 1], 4000));
        let p = ping(&stranger(i), &me.node_id(), 1);
        let at = start + Duration::from_millis(u64::from(i));
        core.handle_input(at, Input::Udp { from, packet: &p });
    }
    assert_eq!(
        core.stranger_count(),
        EndpointConfig::default().max_strangers
    );
    assert_eq!(core.peer_count(), 0);
}

#[test]
fn a_deferred_dial_starts_when_the_nat_verdict_arrives() {
    let (me, peer) = (key(1), key(2));
    let mut core = EndpointCore::new(me.clone(), stun_config(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    let (stun, _, _) = drain(&mut core);
    assert_eq!(stun.len(), 1, "a Binding request to the server");
    core.handle_input(
        t0,
        Input::Connect {
            node: peer.node_id(),
            addrs: &[addr(PEER_PUBLIC)],
        },
    );
    let (t, _, next) = drain(&mut core);
    assert!(
        calls(&opened(&t, &peer, &me.node_id())).is_empty(),
        "no punching before the verdict"
    );
    assert_eq!(
        next,
        Some(t0 + Duration::from_millis(500)),
        "STUN's retry comes first"
    );
    // The server answers after 80 ms: the dial starts then, not after the 1 s wait.
    let at = t0 + Duration::from_millis(80);
    let answer = stun_answer(&stun[0], addr(OUR_PUBLIC), None);
    core.handle_input(
        at,
        Input::Udp {
            from: addr(SERVER),
            packet: &answer,
        },
    );
    let (t, events, _) = drain(&mut core);
    assert!(events.contains(&Event::Candidates(vec![addr(OUR_PUBLIC)])));
    let msgs = opened(&t, &peer, &me.node_id());
    assert_eq!(calls(&msgs), [NatHint::Easy]);
    let call = msgs
        .iter()
        .find(|(_, m)| matches!(m, Message::CallMeMaybe { .. }));
    assert_eq!(
        call,
        Some(&(
            Destination::Relay(peer.node_id()),
            Message::CallMeMaybe {
                candidates: vec![addr(OUR_PUBLIC)],
                nat: NatHint::Easy,
                answer: false,
            }
        ))
    );
}

#[test]
fn without_a_verdict_a_dial_starts_after_its_wait() {
    let (me, peer) = (key(1), key(2));
    let mut core = EndpointCore::new(me.clone(), stun_config(), 7);
    let t0 = Instant::now();
    core.handle_input(
        t0,
        Input::Connect {
            node: peer.node_id(),
            addrs: &[addr(PEER_PUBLIC)],
        },
    );
    let (t, _) = run(&mut core, t0, t0 + Duration::from_millis(999), &idle);
    assert!(calls(&opened(&t, &peer, &me.node_id())).is_empty());
    let (t, _) = run(&mut core, t0, t0 + Duration::from_millis(1000), &idle);
    assert_eq!(calls(&opened(&t, &peer, &me.node_id())), [NatHint::Easy]);
}

#[test]
fn a_nat_hint_that_turns_hard_mid_connection_starts_birthday_probing() {
    let (me, peer) = (key(1), key(2));
    let mut core = EndpointCore::new(me.clone(), stun_config(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    let (stun, _, _) = drain(&mut core);
    assert_eq!(core.nat(), None, "nothing known before STUN answers");
    // The server names a second port; our mapping towards the first is known.
    let answer = stun_answer(&stun[0], addr(OUR_PUBLIC), Some(3479));
    core.handle_input(
        t0 + Duration::from_millis(40),
        Input::Udp {
            from: addr(SERVER),
            packet: &answer,
        },
    );
    let (second, _, _) = drain(&mut core);
    let to_second = second
        .iter()
        .find(|t| t.dest == Destination::Udp(addr("203.0.113.30:3479")))
        .expect("the second port is asked at once");
    // The dial starts before the second port answers (its answer is slow), as easy.
    core.handle_input(
        t0 + Duration::from_millis(50),
        Input::Connect {
            node: peer.node_id(),
            addrs: &[addr(PEER_PUBLIC)],
        },
    );
    let (t, _) = run(&mut core, t0, t0 + Duration::from_millis(1100), &idle);
    let msgs = opened(&t, &peer, &me.node_id());
    assert_eq!(calls(&msgs), [NatHint::Easy]);
    assert!(!msgs
        .iter()
        .any(|(d, _)| matches!(d, Destination::Spare { .. })));
    assert_eq!(core.nat_hint(), NatHint::Easy);
    assert_eq!(core.nat(), Some(NatHint::Easy));
    // Then it answers: another port there. The NAT maps per destination.
    let late = stun_answer(to_second, addr("198.18.1.2:40007"), Some(3478));
    core.handle_input(
        t0 + Duration::from_millis(1200),
        Input::Udp {
            from: addr("203.0.113.30:3479"),
            packet: &late,
        },
    );
    let (t, events, _) = drain(&mut core);
    assert!(events.contains(&Event::Nat(NatHint::Hard)));
    assert_eq!(core.nat(), Some(NatHint::Hard));
    let msgs = opened(&t, &peer, &me.node_id());
    assert_eq!(calls(&msgs), [NatHint::Hard], "the peer hears it at once");
    let primed_spares = msgs
        .iter()
        .filter(|(d, m)| {
            matches!(d, Destination::Spare { to, .. } if *to == addr(PEER_PUBLIC))
                && matches!(m, Message::Ping { .. })
        })
        .count();
    assert_eq!(
        primed_spares,
        usize::from(PunchConfig::default().spare_sockets)
    );
    assert_eq!(core.spares_open(), primed_spares);
    let primers: Vec<Option<u8>> = t
        .iter()
        .filter(|t| matches!(t.dest, Destination::Spare { .. }))
        .map(|t| t.ttl)
        .collect();
    assert!(
        primers.iter().all(|ttl| *ttl == Some(2)),
        "primed, not sent at full strength"
    );
}

#[test]
fn ended_peers_are_forgotten_and_busy_ones_kept() {
    let me = key(1);
    let config = EndpointConfig {
        relay: true,
        ..EndpointConfig::default()
    };
    let mut core = EndpointCore::new(me, config, 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(None));
    let (ended, busy) = (key(2).node_id(), key(3).node_id());
    for node in [ended, busy] {
        core.handle_input(
            t0,
            Input::Connect {
                node,
                addrs: &[addr(PEER_PUBLIC)],
            },
        );
    }
    assert_eq!(core.peer_count(), 2);
    let is_busy = |node: &NodeId, _: Instant| *node == busy;
    let (_, events) = run(&mut core, t0, t0 + Duration::from_secs(59), &is_busy);
    assert!(
        !events.contains(&Event::PeerForgotten(ended)),
        "not before a minute"
    );
    let (_, events) = run(&mut core, t0, t0 + Duration::from_secs(120), &is_busy);
    assert!(events.contains(&Event::PeerForgotten(ended)));
    assert!(!events.contains(&Event::PeerForgotten(busy)));
    assert_eq!(core.peer_count(), 1);
    // The busy one goes quiet too: a minute later it is gone.
    let (_, events) = run(&mut core, t0, t0 + Duration::from_secs(200), &idle);
    assert!(events.contains(&Event::PeerForgotten(busy)));
    assert_eq!(core.peer_count(), 0);
}

#[test]
fn the_same_seed_and_inputs_give_the_same_output() {
    let out = || {
        let me = key(1);
        let mut core = EndpointCore::new(me.clone(), stun_config(), 42);
        let t0 = Instant::now();
        let mut all = Vec::new();
        core.handle_input(t0, Input::PrimerTtl(Some(2)));
        for n in 2..40 {
            core.handle_input(
                t0,
                Input::Connect {
                    node: key(n).node_id(),
                    addrs: &[addr(PEER_PUBLIC)],
                },
            );
        }
        let (t, _) = run(&mut core, t0, t0 + Duration::from_secs(3), &|_, _| true);
        all.extend(t.into_iter().map(|t| (t.dest, t.payload, t.ttl)));
        (t0, all)
    };
    let (t0, a) = out();
    let (t1, b) = out();
    assert!(a.len() > 100);
    assert_eq!(a, b, "runs from {t0:?} and {t1:?} differ");
}

/// Our main socket's address as a peer reports it in a pong to our ping.
fn pong_from_peer(
    core: &mut EndpointCore,
    me: &SecretKey,
    peer: &SecretKey,
    sent: &[Transmit],
    at: Instant,
    observed: SocketAddr,
) {
    let k = SharedKey::new(peer, &me.node_id()).unwrap();
    // A full-strength ping: primers are not answered.
    let full: Vec<Transmit> = sent.iter().filter(|t| t.ttl.is_none()).cloned().collect();
    let tx = opened(&full, peer, &me.node_id())
        .into_iter()
        .find_map(|(d, m)| match (d, m) {
            (Destination::Udp(to), Message::Ping { tx }) if to == addr(PEER_PUBLIC) => Some(tx),
            _ => None,
        })
        .expect("a ping to the peer");
    let pong = k
        .seal(&peer.node_id(), &Message::Pong { tx, observed }, [9; 12])
        .unwrap();
    core.handle_input(
        at,
        Input::Udp {
            from: addr(PEER_PUBLIC),
            packet: &pong,
        },
    );
}

#[test]
fn a_peer_that_sees_another_port_than_stun_means_a_hard_nat() {
    for (observed, hint) in [
        (OUR_PUBLIC, NatHint::Easy),
        // A peer on our LAN sees our LAN address: no evidence either way.
        ("10.1.0.2:4000", NatHint::Easy),
        ("198.18.1.2:61234", NatHint::Hard),
    ] {
        let (me, peer) = (key(1), key(2));
        let mut core = EndpointCore::new(me.clone(), stun_config(), 7);
        let t0 = Instant::now();
        core.handle_input(t0, Input::PrimerTtl(Some(2)));
        let (stun, _, _) = drain(&mut core);
        let answer = stun_answer(&stun[0], addr(OUR_PUBLIC), None);
        core.handle_input(
            t0,
            Input::Udp {
                from: addr(SERVER),
                packet: &answer,
            },
        );
        core.handle_input(
            t0,
            Input::Connect {
                node: peer.node_id(),
                addrs: &[addr(PEER_PUBLIC)],
            },
        );
        // Pings go out once the peer has had time to answer the CallMeMaybe.
        let (sent, _) = run(&mut core, t0, t0 + Duration::from_millis(1100), &idle);
        pong_from_peer(
            &mut core,
            &me,
            &peer,
            &sent,
            t0 + Duration::from_millis(1150),
            addr(observed),
        );
        assert_eq!(core.nat_hint(), hint, "{observed}");
    }
}

/// A CallMeMaybe from `from`, sealed for `to`, naming `candidates` and a hard NAT (which
/// would make an easy node spray the first candidate's IP).
fn call_me_maybe(from: &SecretKey, to: &NodeId, candidates: Vec<SocketAddr>) -> Vec<u8> {
    let k = SharedKey::new(from, to).unwrap();
    let msg = Message::CallMeMaybe {
        candidates,
        nat: NatHint::Hard,
        answer: false,
    };
    k.seal(&from.node_id(), &msg, [5; 12]).unwrap()
}

/// Everything sent to `ip` among `transmits`.
fn sent_to(transmits: &[Transmit], ip: IpAddr) -> usize {
    transmits
        .iter()
        .filter(|t| match t.dest {
            Destination::Udp(a) | Destination::Spare { to: a, .. } => a.ip() == ip,
            Destination::Relay(_) => false,
        })
        .count()
}

const VICTIM: &str = "192.0.2.99:443";

#[test]
fn strangers_calls_through_the_relay_make_us_send_nothing_and_tell_nothing() {
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), stun_config(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::LocalAddrs(vec![addr("10.1.0.2:4000")]));
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    let (stun, _, _) = drain(&mut core);
    let answer = stun_answer(&stun[0], addr(OUR_PUBLIC), None);
    core.handle_input(
        t0,
        Input::Udp {
            from: addr(SERVER),
            packet: &answer,
        },
    );
    drain(&mut core);
    // 1,000 strangers at once, each naming the victim (and our own LAN, and loopback).
    for i in 0..1000 {
        let s = stranger(i);
        let p = call_me_maybe(
            &s,
            &me.node_id(),
            vec![addr(VICTIM), addr("10.1.0.7:80"), addr("127.0.0.1:22")],
        );
        core.handle_input(
            t0,
            Input::Relayed {
                node: s.node_id(),
                packet: &p,
            },
        );
    }
    let (t, _) = run(&mut core, t0, t0 + Duration::from_secs(20), &|_, _| true);
    let victim = addr(VICTIM).ip();
    assert_eq!(sent_to(&t, victim), 0, "to the victim");
    assert_eq!(sent_to(&t, "10.1.0.7".parse().unwrap()), 0, "to our LAN");
    let to_strangers = t
        .iter()
        .filter(|t| matches!(t.dest, Destination::Relay(_)))
        .count();
    assert_eq!(
        to_strangers, 0,
        "no CallMeMaybe of ours, so none of our addresses"
    );
    assert_eq!(core.peer_count(), 0);
}

#[test]
fn a_revoked_peer_is_a_stranger_again() {
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    let peer = stranger(1);
    core.handle_input(
        t0,
        Input::Authenticated {
            node: peer.node_id(),
        },
    );
    let relayed = |core: &mut EndpointCore, at: Instant| {
        let p = call_me_maybe(&peer, &me.node_id(), vec![addr(PEER_PUBLIC)]);
        core.handle_input(
            at,
            Input::Relayed {
                node: peer.node_id(),
                packet: &p,
            },
        );
        drain(core).0
    };
    // Proven, its CallMeMaybe is answered and its candidate probed...
    let t = relayed(&mut core, t0);
    assert_eq!(calls(&opened(&t, &peer, &me.node_id())).len(), 1);
    assert!(sent_to(&t, addr(PEER_PUBLIC).ip()) > 0);
    // ...revoked, it is forgotten at once, and the same message gets nothing.
    let t1 = t0 + Duration::from_millis(100);
    core.handle_input(
        t1,
        Input::Revoked {
            node: peer.node_id(),
        },
    );
    let (_, events, _) = drain(&mut core);
    assert!(
        events.contains(&Event::PeerForgotten(peer.node_id())),
        "{events:?}"
    );
    assert_eq!(core.peer_count(), 0);
    assert!(
        relayed(&mut core, t1).is_empty(),
        "a stranger's call is held"
    );
    let (t, _) = run(&mut core, t1, t1 + Duration::from_secs(20), &|_, _| true);
    assert_eq!(sent_to(&t, addr(PEER_PUBLIC).ip()), 0, "no probes any more");
    assert_eq!(core.peer_count(), 0);
}

#[test]
fn a_peer_proven_over_quic_is_punched_for_but_one_ip_gets_only_its_budget() {
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    // A genuine peer's CallMeMaybe arrives before its handshake finishes: it waits...
    let genuine = stranger(1);
    let p = call_me_maybe(&genuine, &me.node_id(), vec![addr(PEER_PUBLIC)]);
    core.handle_input(
        t0,
        Input::Relayed {
            node: genuine.node_id(),
            packet: &p,
        },
    );
    assert!(drain(&mut core).0.is_empty());
    // ...and is answered once QUIC proves the key.
    let t1 = t0 + Duration::from_millis(80);
    core.handle_input(
        t1,
        Input::Authenticated {
            node: genuine.node_id(),
        },
    );
    let (t, _, _) = drain(&mut core);
    let msgs = opened(&t, &genuine, &me.node_id());
    assert!(calls(&msgs).len() == 1, "our answer: {msgs:?}");
    assert!(
        sent_to(&t, addr(PEER_PUBLIC).ip()) > 0,
        "primers to its address"
    );
    // 1,000 proven peers naming one victim: the victim's IP gets no more than its budget.
    for i in 10..1010 {
        let s = stranger(i);
        core.handle_input(t1, Input::Authenticated { node: s.node_id() });
        let p = call_me_maybe(&s, &me.node_id(), vec![addr(VICTIM)]);
        core.handle_input(
            t1,
            Input::Relayed {
                node: s.node_id(),
                packet: &p,
            },
        );
    }
    let (t, _) = run(&mut core, t1, t1 + Duration::from_secs(10), &|_, _| true);
    let to_victim = sent_to(&t, addr(VICTIM).ip());
    let c = EndpointConfig::default();
    let bound = c.probe_burst_per_ip + 10.0 * c.probes_per_ip_per_sec;
    assert!(
        (to_victim as f64) <= bound,
        "{to_victim} packets to the victim in 10 s, bound {bound}"
    );
    assert!(to_victim > 100, "the budget is used, not zero: {to_victim}");
}

#[test]
fn a_third_party_cannot_take_a_peers_proven_address() {
    let (me, b, m) = (key(1), key(2), key(3));
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(None));
    let x = addr(PEER_PUBLIC);
    core.handle_input(
        t0,
        Input::Connect {
            node: b.node_id(),
            addrs: &[x],
        },
    );
    let (sent, _) = run(&mut core, t0, t0 + Duration::from_millis(1100), &idle);
    pong_from_peer(
        &mut core,
        &me,
        &b,
        &sent,
        t0 + Duration::from_millis(1150),
        addr(OUR_PUBLIC),
    );
    assert_eq!(core.source_owner(&x), Some(b.node_id()));
    assert!(core.path(&b.node_id()).is_some());
    // M, proven over QUIC too, names X and pings "from" X (a replay with a spoofed source).
    core.handle_input(
        t0 + Duration::from_millis(1200),
        Input::Authenticated { node: m.node_id() },
    );
    let p = call_me_maybe(&m, &me.node_id(), vec![x]);
    core.handle_input(
        t0 + Duration::from_millis(1200),
        Input::Relayed {
            node: m.node_id(),
            packet: &p,
        },
    );
    let spoofed = ping(&m, &me.node_id(), 9);
    core.handle_input(
        t0 + Duration::from_millis(1210),
        Input::Udp {
            from: x,
            packet: &spoofed,
        },
    );
    let (_, events) = run(&mut core, t0, t0 + Duration::from_secs(5), &|n, _| {
        *n == b.node_id()
    });
    assert_eq!(core.source_owner(&x), Some(b.node_id()), "X is still B's");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::DirectSource { node, .. } if *node == m.node_id())),
        "{events:?}"
    );
}

#[test]
fn junk_at_ten_thousand_a_second_does_not_stop_a_genuine_newcomer() {
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let t0 = Instant::now();
    let junk_from = addr("198.51.100.66:9999");
    let genuine = stranger(7);
    let genuine_from = addr("198.51.100.7:5000");
    let mut answered = None;
    let mut junk = [0u8; 80];
    junk[..4].copy_from_slice(&disco::MAGIC);
    // Two seconds: a junk packet every 100 µs, and after the first 100 ms a genuine ping every
    // 200 ms.
    for step in 0..20_000u32 {
        let now = t0 + Duration::from_micros(u64::from(step) * 100);
        junk[4..8].copy_from_slice(&step.to_le_bytes());
        core.handle_input(
            now,
            Input::Udp {
                from: junk_from,
                packet: &junk,
            },
        );
        if step % 2000 == 1000 {
            let p = ping(&genuine, &me.node_id(), step as u8);
            core.handle_input(
                now,
                Input::Udp {
                    from: genuine_from,
                    packet: &p,
                },
            );
        }
        let (t, _, _) = drain(&mut core);
        if answered.is_none() && t.iter().any(|t| t.dest == Destination::Udp(genuine_from)) {
            answered = Some(now - t0);
        }
    }
    assert_eq!(
        answered,
        Some(Duration::from_millis(100)),
        "the first genuine ping is answered"
    );
    assert_eq!(core.source_owner(&genuine_from), Some(genuine.node_id()));
}

#[test]
fn a_hundred_thousand_strangers_leave_the_state_under_its_caps() {
    let me = key(1);
    let c = EndpointConfig::default();
    let mut core = EndpointCore::new(me.clone(), c.clone(), 7);
    let t0 = Instant::now();
    // Half send through the relay (kept unopened, so any bytes do), half straight from an
    // address of their own: one in ten of those an authentic ping, the rest junk.
    let mut junk = [0u8; 80];
    junk[..4].copy_from_slice(&disco::MAGIC);
    for i in 0..100_000u32 {
        let s = stranger(i);
        let now = t0 + Duration::from_micros(u64::from(i) * 500);
        let from = SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 1024 + (i % 1000) as u16));
        junk[4..36].copy_from_slice(s.node_id().as_bytes());
        let input = match i % 20 {
            0 => Some(ping(&s, &me.node_id(), 1)),
            n if n % 2 == 0 => None,
            _ => Some(junk.to_vec()),
        };
        match input {
            Some(p) => core.handle_input(now, Input::Udp { from, packet: &p }),
            None => core.handle_input(
                now,
                Input::Relayed {
                    node: s.node_id(),
                    packet: &junk,
                },
            ),
        }
        drain(&mut core);
    }
    assert_eq!(core.stranger_count(), c.max_strangers);
    let (tentative, proven) = core.source_counts();
    assert!(
        tentative > 1000 && tentative <= c.max_tentative_sources,
        "{tentative}"
    );
    assert_eq!((proven, core.peer_count()), (0, 0));
}

#[test]
fn a_new_connection_to_a_peer_without_a_direct_path_starts_its_punching_over() {
    const OLD: &str = "198.18.2.2:50000";
    const NEW: &str = "198.18.2.2:50001";
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    let peer = stranger(1);
    let call = |core: &mut EndpointCore, at: Instant, at_addr: &str| {
        let p = call_me_maybe(&peer, &me.node_id(), vec![addr(at_addr)]);
        core.handle_input(
            at,
            Input::Relayed {
                node: peer.node_id(),
                packet: &p,
            },
        );
    };
    core.handle_input(
        t0,
        Input::Authenticated {
            node: peer.node_id(),
        },
    );
    call(&mut core, t0, OLD);
    // Its first incarnation never answers; the connection stays busy over the relay.
    let (t, _) = run(&mut core, t0, t0 + Duration::from_secs(8), &|_, _| true);
    assert!(t.iter().any(|t| t.dest == Destination::Udp(addr(OLD))));
    // The node restarts at a new port and connects again.
    let t1 = t0 + Duration::from_secs(8);
    core.handle_input(
        t1,
        Input::Authenticated {
            node: peer.node_id(),
        },
    );
    call(&mut core, t1, NEW);
    let (t, _) = run(&mut core, t1, t1 + Duration::from_secs(3), &|_, _| true);
    let to = |a: &str| {
        t.iter()
            .filter(|t| t.dest == Destination::Udp(addr(a)))
            .count()
    };
    assert!(to(NEW) > 0, "the new address is probed");
    assert_eq!(to(OLD), 0, "the old incarnation's address is dropped");
    let msgs = opened(&t, &peer, &me.node_id());
    assert_eq!(calls(&msgs).len(), 1, "answered afresh: {msgs:?}");
    // A second connection right after (both ends dialled) leaves that attempt alone.
    let t2 = t1 + Duration::from_millis(500);
    core.handle_input(
        t2,
        Input::Authenticated {
            node: peer.node_id(),
        },
    );
    let (t, _, _) = drain(&mut core);
    assert!(calls(&opened(&t, &peer, &me.node_id())).is_empty());
}

#[test]
fn a_call_that_came_before_the_new_connection_is_answered_by_the_new_attempt() {
    const NEW: &str = "198.18.2.2:50001";
    let me = key(1);
    let mut core = EndpointCore::new(me.clone(), EndpointConfig::default(), 7);
    let t0 = Instant::now();
    core.handle_input(t0, Input::PrimerTtl(Some(2)));
    let peer = stranger(1);
    let authenticated = |core: &mut EndpointCore, at: Instant| {
        core.handle_input(
            at,
            Input::Authenticated {
                node: peer.node_id(),
            },
        );
    };
    authenticated(&mut core, t0);
    let _ = run(&mut core, t0, t0 + Duration::from_secs(8), &|_, _| true);
    // The restarted peer's call overtakes its connection...
    let t1 = t0 + Duration::from_secs(8);
    let p = call_me_maybe(&peer, &me.node_id(), vec![addr(NEW)]);
    core.handle_input(
        t1,
        Input::Relayed {
            node: peer.node_id(),
            packet: &p,
        },
    );
    drain(&mut core);
    // ...and the attempt that the connection starts answers it and probes its candidate.
    authenticated(&mut core, t1 + Duration::from_millis(50));
    let (t, _) = run(&mut core, t1, t1 + Duration::from_secs(2), &|_, _| true);
    assert_eq!(calls(&opened(&t, &peer, &me.node_id())).len(), 1);
    assert!(t.iter().any(|t| t.dest == Destination::Udp(addr(NEW))));
}
