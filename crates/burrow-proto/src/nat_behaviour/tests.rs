//! NAT behaviour discovery against the real sans-IO STUN server through a model NAT, in
//! virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::stun::server::{Alternate, Outcome, Role, ServerConfig, StunServer};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Open,
    FullCone,
    Restricted,
    PortRestricted,
    Symmetric,
    Blocked,
}

/// A NAT in front of one host, with the kernel-like behaviours the lab builds.
struct Nat {
    kind: Kind,
    public_ip: IpAddr,
    mappings: BTreeMap<(SocketAddr, SocketAddr), SocketAddr>,
    /// (public mapped address, remote) pairs that have seen outbound traffic.
    sent_to: BTreeSet<(SocketAddr, SocketAddr)>,
    next_port: u16,
}

impl Nat {
    fn outbound(&mut self, local: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        if self.kind == Kind::Blocked {
            return None;
        }
        if self.kind == Kind::Open {
            return Some(local);
        }
        let key = if self.kind == Kind::Symmetric {
            (local, to)
        } else {
            (local, "0.0.0.0:0".parse().unwrap())
        };
        let next = &mut self.next_port;
        let ip = self.public_ip;
        let public = *self.mappings.entry(key).or_insert_with(|| {
            *next += 7;
            SocketAddr::new(ip, *next)
        });
        self.sent_to.insert((public, to));
        Some(public)
    }

    fn inbound(&self, from: SocketAddr, to: SocketAddr) -> Option<SocketAddr> {
        if self.kind == Kind::Open {
            return Some(to);
        }
        let allowed = match self.kind {
            Kind::FullCone => true,
            Kind::Restricted => self
                .sent_to
                .iter()
                .any(|(p, r)| *p == to && r.ip() == from.ip()),
            Kind::PortRestricted | Kind::Symmetric => self.sent_to.contains(&(to, from)),
            Kind::Blocked | Kind::Open => false,
        };
        if !allowed {
            return None;
        }
        // A hairpinned or inbound packet goes to whoever owns the mapping.
        self.mappings
            .iter()
            .find(|(_, p)| **p == to)
            .map(|((local, _), _)| *local)
    }
}

struct World {
    nat: Nat,
    servers: Vec<StunServer>,
    sockets: Vec<(SocketId, SocketAddr)>,
    one_way: Duration,
}

/// What the model's STUN servers offer beside their primary address.
#[derive(Clone, Copy, PartialEq)]
enum Servers {
    /// Nothing: plain Binding servers.
    Plain,
    /// A second port on the one IP.
    OneAddress,
    /// A second IP and port (RFC 5780).
    TwoAddresses,
}

/// STUN server `i` of the model internet: 203.0.113.(10 + 2i), and .(11 + 2i) as its second IP.
fn model_server(i: usize, servers: Servers) -> StunServer {
    StunServer::new(ServerConfig {
        primary: format!("203.0.113.{}:3478", 10 + 2 * i).parse().unwrap(),
        alternate: match servers {
            Servers::Plain => Alternate::None,
            Servers::OneAddress => Alternate::Port(3479),
            Servers::TwoAddresses => {
                Alternate::Address(format!("203.0.113.{}:3479", 11 + 2 * i).parse().unwrap())
            }
        },
        software: None,
    })
}

fn run(kind: Kind, servers: Servers, server_count: usize) -> (Findings, Duration) {
    run_with(
        kind,
        (0..server_count)
            .map(|i| model_server(i, servers))
            .collect(),
    )
}

/// A one-address server first, then an RFC 5780 one, both answering at the same time.
fn run_mixed(kind: Kind) -> (Findings, Duration) {
    run_with(
        kind,
        vec![
            model_server(0, Servers::OneAddress),
            model_server(1, Servers::TwoAddresses),
        ],
    )
}

fn run_with(kind: Kind, servers: Vec<StunServer>) -> (Findings, Duration) {
    let run = run_seeded(kind, servers, 1);
    (run.findings, run.took)
}

/// What a run did.
struct Run {
    findings: Findings,
    took: Duration,
    /// Every datagram sent, with its time since the start.
    sent: Vec<(Duration, Transmit)>,
}

fn run_seeded(kind: Kind, servers: Vec<StunServer>, seed: u64) -> Run {
    let host_ip: IpAddr = if kind == Kind::Open {
        "198.51.100.2".parse().unwrap()
    } else {
        "10.0.0.2".parse().unwrap()
    };
    let sockets = vec![
        (SocketId::Main4, SocketAddr::new(host_ip, 40000)),
        (SocketId::Filter4, SocketAddr::new(host_ip, 40001)),
    ];
    let mut world = World {
        nat: Nat {
            kind,
            public_ip: "198.18.0.2".parse().unwrap(),
            mappings: BTreeMap::new(),
            sent_to: BTreeSet::new(),
            next_port: 50000,
        },
        sockets: sockets.clone(),
        one_way: Duration::from_millis(20),
        servers,
    };
    let start = Instant::now();
    let mut d = NatBehaviour::new(
        NatBehaviourConfig {
            servers: world
                .servers
                .iter()
                .map(|s| s.address(Role::PRIMARY))
                .collect(),
            sockets,
            local_ips: vec![host_ip],
            deadline: start + Duration::from_secs(3),
        },
        seed,
    );
    d.handle_input(start, Input::Start);
    // (arrival time, destination socket, source, payload)
    let mut in_flight: Vec<(Instant, SocketId, SocketAddr, Vec<u8>)> = Vec::new();
    let mut sent = Vec::new();
    let mut now = start;
    loop {
        let timeout = match d.poll_output() {
            Output::Transmit(t) => {
                sent.push((now - start, t.clone()));
                world.deliver(now, t, &mut in_flight);
                continue;
            }
            Output::Event(Event::Done) => break,
            Output::Timeout(t) => t.expect("a machine that is not done has a timeout"),
        };
        let next_arrival = in_flight.iter().map(|f| f.0).min();
        match next_arrival {
            Some(at) if at <= timeout => {
                now = at;
                let i = in_flight.iter().position(|f| f.0 == at).unwrap();
                let (_, socket, from, packet) = in_flight.remove(i);
                d.handle_input(
                    now,
                    Input::Datagram {
                        socket,
                        from,
                        packet: &packet,
                    },
                );
            }
            _ => {
                now = timeout;
                d.handle_input(now, Input::Timeout);
            }
        }
    }
    assert!(d.is_done());
    assert_eq!(d.poll_output(), Output::Timeout(None));
    Run {
        findings: d.findings(),
        took: now - start,
        sent,
    }
}

impl World {
    fn deliver(
        &mut self,
        now: Instant,
        t: Transmit,
        in_flight: &mut Vec<(Instant, SocketId, SocketAddr, Vec<u8>)>,
    ) {
        let local = self.sockets.iter().find(|(s, _)| *s == t.socket).unwrap().1;
        let Some(public) = self.nat.outbound(local, t.to) else {
            return;
        };
        if t.to.ip() == self.nat.public_ip || t.to == public {
            // Hairpin: the model NAT loops back only for full cone.
            if self.nat.kind == Kind::FullCone {
                if let Some(dest) = self.nat.inbound(public, t.to) {
                    let socket = self.sockets.iter().find(|(_, a)| *a == dest).unwrap().0;
                    in_flight.push((now + self.one_way, socket, public, t.payload));
                }
            }
            return;
        }
        for server in &self.servers {
            let roles = server.roles();
            let Some((role, _)) = roles.iter().find(|(_, a)| *a == t.to) else {
                continue;
            };
            let mut out = Vec::new();
            let (Outcome::Success(reply) | Outcome::Error(reply, _)) =
                server.handle(*role, public, &t.payload, &mut out)
            else {
                return;
            };
            let from = server.address(reply.from);
            if let Some(dest) = self.nat.inbound(from, reply.to) {
                let socket = self.sockets.iter().find(|(_, a)| *a == dest).unwrap().0;
                in_flight.push((now + 2 * self.one_way, socket, from, out));
            }
            return;
        }
    }
}

fn check(kind: Kind, mapping: Mapping, filtering: Filtering, nat_type: NatType) {
    let (f, took) = run(kind, Servers::TwoAddresses, 2);
    assert_eq!(
        (f.mapping, f.filtering, f.nat_type),
        (mapping, filtering, nat_type)
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(f.udp);
}

#[test]
fn open() {
    check(Kind::Open, Mapping::None, Filtering::None, NatType::Open);
}

#[test]
fn full_cone() {
    check(
        Kind::FullCone,
        Mapping::EndpointIndependent,
        Filtering::EndpointIndependent,
        NatType::FullCone,
    );
    assert_eq!(
        run(Kind::FullCone, Servers::TwoAddresses, 1).0.hairpinning,
        Some(true)
    );
}

#[test]
fn restricted_cone() {
    check(
        Kind::Restricted,
        Mapping::EndpointIndependent,
        Filtering::AddressDependent,
        NatType::RestrictedCone,
    );
}

#[test]
fn port_restricted_cone() {
    check(
        Kind::PortRestricted,
        Mapping::EndpointIndependent,
        Filtering::AddressAndPortDependent,
        NatType::PortRestrictedCone,
    );
    assert_eq!(
        run(Kind::PortRestricted, Servers::TwoAddresses, 1)
            .0
            .hairpinning,
        Some(false)
    );
}

#[test]
fn symmetric() {
    check(
        Kind::Symmetric,
        Mapping::AddressAndPortDependent,
        Filtering::AddressAndPortDependent,
        NatType::Symmetric,
    );
}

#[test]
fn udp_blocked_ends_at_the_deadline() {
    let (f, took) = run(Kind::Blocked, Servers::TwoAddresses, 2);
    assert!(!f.udp);
    assert_eq!(f.nat_type, NatType::UdpBlocked);
    assert_eq!(f.public_addr, None);
    assert_eq!(took, Duration::from_secs(3));
    assert!(f
        .servers
        .iter()
        .all(|s| s.error.as_deref() == Some(TIMEOUT)));
}

#[test]
fn without_rfc5780_several_servers_still_reveal_a_symmetric_mapping() {
    let (f, _) = run(Kind::Symmetric, Servers::Plain, 2);
    assert_eq!(f.nat_type, NatType::Symmetric);
    assert_eq!(f.filtering, Filtering::Unknown);
    let (f, _) = run(Kind::PortRestricted, Servers::Plain, 2);
    assert_eq!(f.mapping, Mapping::EndpointIndependent);
    assert_eq!(f.nat_type, NatType::Unknown);
}

#[test]
fn one_address_servers_tell_the_mapping_and_port_dependent_filtering() {
    use Filtering as F;
    use Mapping as M;
    for (kind, mapping, filtering, nat_type) in [
        (Kind::Open, M::None, F::Unknown, NatType::Open),
        (
            Kind::FullCone,
            M::EndpointIndependent,
            F::Unknown,
            NatType::Unknown,
        ),
        (
            Kind::Restricted,
            M::EndpointIndependent,
            F::Unknown,
            NatType::Unknown,
        ),
        (
            Kind::PortRestricted,
            M::EndpointIndependent,
            F::AddressAndPortDependent,
            NatType::PortRestrictedCone,
        ),
        (
            Kind::Symmetric,
            M::AddressAndPortDependent,
            F::AddressAndPortDependent,
            NatType::Symmetric,
        ),
    ] {
        let (f, took) = run(kind, Servers::OneAddress, 1);
        assert_eq!(
            (f.mapping, f.filtering, f.nat_type),
            (mapping, filtering, nat_type)
        );
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
}

#[test]
fn a_second_ip_is_preferred_over_a_second_port() {
    // Server 0 offers a second port and answers first; server 1, a second IP, answers next.
    let (f, _) = run(Kind::Restricted, Servers::OneAddress, 1);
    assert_eq!(f.filtering, Filtering::Unknown);
    let (f, _) = run_mixed(Kind::Restricted);
    assert_eq!(
        (f.mapping, f.filtering, f.nat_type),
        (
            Mapping::EndpointIndependent,
            Filtering::AddressDependent,
            NatType::RestrictedCone
        )
    );
}

#[test]
fn public_address_and_rtt_are_reported() {
    let (f, _) = run(Kind::PortRestricted, Servers::TwoAddresses, 1);
    assert_eq!(
        f.public_addr.unwrap().ip(),
        "198.18.0.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(f.servers[0].rtt, Some(Duration::from_millis(40)));
    assert_eq!(f.servers[0].error, None);
}

#[test]
fn no_servers_means_unknown_at_once() {
    let start = Instant::now();
    let mut d = NatBehaviour::new(
        NatBehaviourConfig {
            servers: vec![],
            sockets: vec![(SocketId::Main4, "0.0.0.0:1".parse().unwrap())],
            local_ips: vec![],
            deadline: start + Duration::from_secs(3),
        },
        0,
    );
    assert_eq!(d.poll_output(), Output::Timeout(None));
    d.handle_input(start, Input::Start);
    assert_eq!(d.poll_output(), Output::Event(Event::Done));
    assert_eq!(d.poll_output(), Output::Timeout(None));
    assert!(d.is_done());
    assert_eq!(d.findings().nat_type, NatType::Unknown);
}

#[test]
fn the_same_seed_and_inputs_give_the_same_transmits() {
    // Four silent servers: every retransmission round has four requests due at once, the
    // order a map with random iteration order would shuffle.
    let servers = || {
        (0..4)
            .map(|i| model_server(i, Servers::TwoAddresses))
            .collect::<Vec<_>>()
    };
    for kind in [Kind::Blocked, Kind::Restricted, Kind::Symmetric] {
        let first = run_seeded(kind, servers(), 7);
        assert!(first.sent.len() > 8, "{}", first.sent.len());
        for _ in 0..5 {
            let again = run_seeded(kind, servers(), 7);
            assert!(
                again.sent == first.sent,
                "a run with the same seed sent otherwise"
            );
            assert_eq!(again.findings, first.findings);
        }
        // The seed is what picks the transaction IDs.
        let other = run_seeded(kind, servers(), 8);
        assert_eq!(other.sent.len(), first.sent.len());
        assert!(other.sent != first.sent);
    }
}

#[test]
fn inputs_before_start_are_ignored() {
    let start = Instant::now();
    let config = NatBehaviourConfig {
        servers: vec!["203.0.113.10:3478".parse().unwrap()],
        sockets: vec![(SocketId::Main4, "10.0.0.2:40000".parse().unwrap())],
        local_ips: vec![],
        deadline: start + Duration::from_secs(3),
    };
    let mut d = NatBehaviour::new(config, 0);
    // With nothing outstanding, a timeout would end a started machine.
    d.handle_input(start, Input::Timeout);
    assert_eq!(d.poll_output(), Output::Timeout(None));
    assert!(!d.is_done());
    let t1 = start + Duration::from_millis(1);
    d.handle_input(t1, Input::Start);
    assert!(matches!(d.poll_output(), Output::Transmit(_)));
    d.handle_input(t1, Input::Start);
    assert_eq!(
        d.poll_output(),
        Output::Timeout(Some(t1 + INITIAL_RTO)),
        "a second start sends nothing"
    );
}
