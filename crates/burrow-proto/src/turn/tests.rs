//! The TURN core in virtual time: a scripted client, a driver that opens relayed sockets on
//! demand, and peers, all in memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::stun::integrity::{long_term_key, verify};
use crate::stun::{Class, Message, MessageWriter, Method, TransactionId};

const REALM: &str = "burrow";
const UNIX: u64 = 1_800_000_000;
const PEER: &str = "1.2.3.4:5000";
const RELAY_IP: [u8; 4] = [203, 0, 113, 10];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tuple(client: &str) -> FiveTuple {
    FiveTuple {
        client: addr(client),
        server: addr("203.0.113.10:3478"),
        transport: Transport::Udp,
    }
}

fn config() -> TurnConfig {
    TurnConfig {
        users: vec![
            ("alice".into(), "wonderland".into()),
            ("bob".into(), "builder".into()),
        ],
        secrets: vec!["sekrit".into()],
        software: Some("burrow-test".into()),
        ..TurnConfig::default()
    }
}

/// The server and the driver around it: relayed sockets open at once, on even ports where
/// asked, and what they are told to close is kept.
struct World {
    server: TurnServer,
    now: Instant,
    next_port: u16,
    opened: Vec<(RelayId, SocketAddr)>,
    closed: Vec<RelayId>,
    /// Relayed sockets open now (an even pair is two).
    sockets: std::collections::BTreeSet<RelayId>,
    /// Answer OpenRelay with RelayFailed instead.
    fail_opens: bool,
}

impl World {
    fn new(config: TurnConfig) -> World {
        World {
            server: TurnServer::new(config, 7),
            now: Instant::now(),
            next_port: 50_000,
            opened: Vec::new(),
            closed: Vec::new(),
            sockets: Default::default(),
            fail_opens: false,
        }
    }

    /// Feeds `input` and drains the output, playing the driver for events.
    fn feed(&mut self, input: Input<'_>) -> Vec<Transmit> {
        self.server.handle_input(self.now, input);
        let mut out = Vec::new();
        loop {
            match self.server.poll_output() {
                Output::Transmit(t) => out.push(t),
                Output::Event(Event::OpenRelay { relay, port, .. }) => {
                    if self.fail_opens {
                        self.server
                            .handle_input(self.now, Input::RelayFailed { relay });
                        continue;
                    }
                    if port != PortRequest::Any && self.next_port % 2 == 1 {
                        self.next_port += 1;
                    }
                    let at = SocketAddr::from((RELAY_IP, self.next_port));
                    self.next_port += if matches!(port, PortRequest::EvenPair { .. }) {
                        2
                    } else {
                        1
                    };
                    self.opened.push((relay, at));
                    self.sockets.insert(relay);
                    if let PortRequest::EvenPair { next } = port {
                        self.sockets.insert(next);
                    }
                    self.server
                        .handle_input(self.now, Input::RelayOpened { relay, addr: at });
                }
                Output::Event(Event::CloseRelay { relay }) => {
                    assert!(self.sockets.remove(&relay), "{relay:?} closed twice");
                    self.closed.push(relay);
                }
                Output::Timeout(_) => return out,
            }
        }
    }

    fn client(&mut self, tuple: FiveTuple, packet: &[u8]) -> Vec<Transmit> {
        self.feed(Input::Client {
            tuple,
            packet,
            unix_secs: UNIX,
        })
    }

    fn peer(&mut self, relay: RelayId, from: &str, packet: &[u8]) -> Vec<Transmit> {
        self.feed(Input::Peer {
            relay,
            from: addr(from),
            packet,
        })
    }

    /// Moves time on, firing every timer due on the way.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            let next = match self.server.poll_output() {
                Output::Timeout(Some(at)) if at <= until => at,
                Output::Timeout(_) => break,
                other => panic!("unexpected output while idle: {other:?}"),
            };
            self.now = next.max(self.now);
            self.feed(Input::Timeout);
        }
        self.now = until;
        self.feed(Input::Timeout);
    }
}

/// A client of one 5-tuple with long-term credentials, learning the nonce as a real one does.
struct Client {
    tuple: FiveTuple,
    username: String,
    key: Key,
    nonce: Option<String>,
    tid: u8,
    relay: Option<RelayId>,
}

impl Client {
    fn new(tuple: FiveTuple, username: &str, password: &str) -> Client {
        Client {
            tuple,
            username: username.to_string(),
            key: long_term_key(username, REALM, password),
            nonce: None,
            tid: 0,
            relay: None,
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        TransactionId([self.tid; 12])
    }

    /// A request, signed once the client has a nonce.
    fn request(
        &mut self,
        method: Method,
        tid: TransactionId,
        attrs: impl FnOnce(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Request, method, tid);
        attrs(&mut w);
        match &self.nonce {
            Some(nonce) => {
                w.username(&self.username).realm(REALM).nonce(nonce);
                w.finish_with_integrity(&self.key, true);
            }
            None => w.finish_with_fingerprint(),
        }
        buf
    }

    /// Sends a request and returns the response, retrying once after a 401 or 438 with the
    /// nonce it carries (as clients do).
    fn call(
        &mut self,
        world: &mut World,
        method: Method,
        attrs: impl Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        for _ in 0..2 {
            let tid = self.next_tid();
            let req = self.request(method, tid, &attrs);
            let resp = only_response(world.client(self.tuple, &req), self.tuple);
            let msg = Message::parse(&resp).unwrap();
            assert_eq!(msg.transaction_id, tid);
            match msg.error_code.map(|e| e.code) {
                Some(401 | 438) if self.nonce.as_deref() != msg.nonce => {
                    self.nonce = msg.nonce.map(str::to_string);
                }
                _ => return resp,
            }
        }
        panic!("still challenged with a fresh nonce");
    }

    fn allocate(&mut self, world: &mut World) -> SocketAddr {
        let resp = self.call(world, Method::ALLOCATE, |w| {
            w.requested_transport(PROTOCOL_UDP);
        });
        let msg = ok(&resp, self.key);
        let relayed = msg.xor_relayed_address.expect("XOR-RELAYED-ADDRESS");
        self.relay = world
            .opened
            .iter()
            .find(|(_, a)| *a == relayed)
            .map(|(r, _)| *r);
        relayed
    }

    fn permit(&mut self, world: &mut World, peer: &str) -> Vec<u8> {
        let peer = addr(peer);
        self.call(world, Method::CREATE_PERMISSION, |w| {
            w.xor_peer_address(peer);
        })
    }

    fn bind(&mut self, world: &mut World, channel: u16, peer: &str) -> Vec<u8> {
        let peer = addr(peer);
        self.call(world, Method::CHANNEL_BIND, |w| {
            w.channel_number(channel).xor_peer_address(peer);
        })
    }

    fn refresh(&mut self, world: &mut World, lifetime: u32) -> Vec<u8> {
        self.call(world, Method::REFRESH, |w| {
            w.lifetime(lifetime);
        })
    }

    fn send(&self, world: &mut World, peer: &str, data: &[u8]) -> Vec<Transmit> {
        let mut buf = Vec::new();
        let tid = TransactionId([0xee; 12]);
        let mut w = MessageWriter::new(&mut buf, Class::Indication, Method::SEND, tid);
        w.xor_peer_address(addr(peer)).data(data);
        w.finish();
        world.client(self.tuple, &buf)
    }
}

/// The success response `resp`, checked to be signed with `key`.
fn ok(resp: &[u8], key: Key) -> Message<'_> {
    let msg = Message::parse(resp).unwrap();
    assert_eq!(msg.class, Class::Success, "{:?}", msg.error_code);
    assert!(verify(resp, &msg, &key), "MESSAGE-INTEGRITY");
    msg
}

fn only_response(out: Vec<Transmit>, to: FiveTuple) -> Vec<u8> {
    match <[Transmit; 1]>::try_from(out) {
        Ok([Transmit::Client { tuple, data }]) if tuple == to => data,
        Ok(other) => panic!("not a response to {to:?}: {other:?}"),
        Err(out) => panic!("expected one response, got {out:?}"),
    }
}

fn error_code(resp: &[u8]) -> u16 {
    let msg = Message::parse(resp).unwrap();
    assert_eq!(msg.class, Class::Error);
    msg.error_code.unwrap().code
}

fn to_peer(out: &[Transmit]) -> Vec<(RelayId, SocketAddr, Vec<u8>)> {
    out.iter()
        .filter_map(|t| match t {
            Transmit::Peer { relay, to, data } => Some((*relay, *to, data.clone())),
            Transmit::Client { .. } => None,
        })
        .collect()
}

/// An allocated alice with a permission for [`PEER`].
fn alice_with_permission(world: &mut World) -> Client {
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    alice.allocate(world);
    ok(&alice.permit(world, PEER), alice.key);
    alice
}

#[test]
fn allocate_is_challenged_then_granted_with_the_right_key() {
    let mut world = World::new(config());
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    let tid = alice.next_tid();
    let req = alice.request(Method::ALLOCATE, tid, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    let resp = only_response(world.client(alice.tuple, &req), alice.tuple);
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(msg.error_code.unwrap().code, 401);
    assert_eq!(msg.realm, Some(REALM));
    assert!(msg.nonce.is_some() && msg.integrity.is_none() && msg.fingerprint);
    assert!(
        world.opened.is_empty(),
        "nothing allocated before the credentials"
    );

    let relayed = alice.allocate(&mut world);
    assert_eq!(world.opened.len(), 1);
    assert_eq!(relayed, world.opened[0].1);
    assert_eq!(world.server.allocation_count(), 1);
    assert_eq!(world.server.relayed_address(&alice.tuple), Some(relayed));
    assert_eq!(world.server.stats().challenges, 2, "the first of each call");
    assert_eq!(world.server.stats().allocations_created, 1);

    // The success, again for a retransmission; another Allocate on the 5-tuple is a mismatch.
    let tid = TransactionId([alice.tid; 12]);
    let again = alice.request(Method::ALLOCATE, tid, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    let resp = only_response(world.client(alice.tuple, &again), alice.tuple);
    let msg = ok(&resp, alice.key);
    assert_eq!(msg.xor_relayed_address, Some(relayed));
    assert_eq!(msg.lifetime, Some(600), "the default");
    assert_eq!(msg.mapped(), Some(alice.tuple.client));
    let resp = alice.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    assert_eq!(error_code(&resp), 437);
    assert_eq!(world.opened.len(), 1);
}

#[test]
fn a_wrong_password_gets_401_and_another_user_441() {
    let mut world = World::new(config());
    let mut mallory = Client::new(tuple("198.51.100.1:40000"), "alice", "guess");
    let resp = mallory.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(msg.error_code.unwrap().code, 401);
    assert!(msg.nonce.is_some(), "a 401 says how to retry");
    assert!(world.opened.is_empty());
    assert_eq!(world.server.stats().auth_failures, 1);

    let mut unknown = Client::new(tuple("198.51.100.1:40001"), "carol", "x");
    let resp = unknown.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    assert_eq!(error_code(&resp), 401);

    // Bob's valid credentials on Alice's 5-tuple: 441.
    let mut alice = alice_with_permission(&mut world);
    let mut bob = Client::new(alice.tuple, "bob", "builder");
    bob.nonce = alice.nonce.take();
    assert_eq!(error_code(&bob.refresh(&mut world, 600)), 441);
    assert_eq!(world.server.stats().wrong_credentials, 1);
}

#[test]
fn ephemeral_credentials_work_until_their_expiry() {
    let mut world = World::new(config());
    let user = format!("{}:alice", UNIX + 60);
    let password = ephemeral_password(b"sekrit", &user);
    let mut alice = Client::new(tuple("198.51.100.1:40000"), &user, &password);
    alice.allocate(&mut world);

    let expired = format!("{}:alice", UNIX - 1);
    let password = ephemeral_password(b"sekrit", &expired);
    let mut late = Client::new(tuple("198.51.100.1:40001"), &expired, &password);
    let resp = late.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    assert_eq!(error_code(&resp), 401);
    assert_eq!(world.server.stats().expired_credentials, 1);

    let wrong_secret = ephemeral_password(b"other", &user);
    let mut forger = Client::new(tuple("198.51.100.1:40002"), &user, &wrong_secret);
    let resp = forger.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    assert_eq!(error_code(&resp), 401);
    assert_eq!(world.server.allocation_count(), 1);
}

#[test]
fn a_stale_nonce_gets_438_and_a_fresh_one() {
    let mut world = World::new(config());
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    let resp = alice.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP).lifetime(3600);
    });
    ok(&resp, alice.key);
    world.advance(Duration::from_secs(601));
    let old = alice.nonce.clone().unwrap();
    let tid = alice.next_tid();
    let req = alice.request(Method::REFRESH, tid, |w| {
        w.lifetime(3600);
    });
    let resp = only_response(world.client(alice.tuple, &req), alice.tuple);
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(msg.error_code.unwrap().code, 438);
    assert_ne!(msg.nonce, Some(old.as_str()));
    assert_eq!(world.server.stats().stale_nonces, 1);
    // With the new nonce the refresh goes through.
    let resp = alice.refresh(&mut world, 3600);
    assert_eq!(ok(&resp, alice.key).lifetime, Some(3600));
}

#[test]
fn permissions_expire_after_300_seconds() {
    let mut world = World::new(config());
    let alice = alice_with_permission(&mut world);
    let relay = alice.relay.unwrap();
    world.advance(Duration::from_secs(299));
    let out = world.peer(relay, PEER, b"still");
    assert_eq!(out.len(), 1, "a Data indication");
    let Transmit::Client { data, .. } = &out[0] else {
        panic!("{out:?}")
    };
    let msg = Message::parse(data).unwrap();
    assert_eq!((msg.class, msg.method), (Class::Indication, Method::DATA));
    assert_eq!(msg.xor_peer_address, Some(addr(PEER)));
    assert_eq!(msg.data, Some(&b"still"[..]));
    assert_eq!(to_peer(&alice.send(&mut world, PEER, b"out")).len(), 1);

    world.advance(Duration::from_secs(2));
    assert!(world.peer(relay, PEER, b"late").is_empty());
    assert!(alice.send(&mut world, PEER, b"late").is_empty());
    assert_eq!(world.server.permission_and_channel_count(), (0, 0));
    // Peers without a permission were never heard, even on the right port.
    assert!(world.peer(relay, "1.2.3.5:5000", b"stranger").is_empty());
    assert_eq!(world.server.stats().dropped_no_permission, 3);
}

#[test]
fn channels_carry_data_both_ways_padded_on_tcp_only() {
    let mut world = World::new(config());
    let mut alice = alice_with_permission(&mut world);
    let relay = alice.relay.unwrap();
    // Before a channel: Send and Data indications.
    let out = alice.send(&mut world, PEER, b"via send");
    assert_eq!(to_peer(&out), [(relay, addr(PEER), b"via send".to_vec())]);

    ok(&alice.bind(&mut world, 0x4001, PEER), alice.key);
    let mut cd = Vec::new();
    ChannelData::encode(0x4001, b"via channel", Framing::Datagram, &mut cd);
    let out = world.client(alice.tuple, &cd);
    assert_eq!(
        to_peer(&out),
        [(relay, addr(PEER), b"via channel".to_vec())]
    );
    let back = only_response(world.peer(relay, PEER, b"reply"), alice.tuple);
    assert_eq!(
        back, b"\x40\x01\x00\x05reply",
        "ChannelData, unpadded over UDP"
    );
    // Unbound channels carry nothing; rebinding the channel or the peer elsewhere is refused.
    ChannelData::encode(0x4002, b"x", Framing::Datagram, &mut cd);
    assert!(world.client(alice.tuple, &cd).is_empty());
    assert_eq!(
        error_code(&alice.bind(&mut world, 0x4001, "1.2.3.4:5001")),
        400
    );
    assert_eq!(error_code(&alice.bind(&mut world, 0x4002, PEER)), 400);
    assert_eq!(
        error_code(&alice.bind(&mut world, 0x3fff, "1.2.3.4:5001")),
        400
    );
    ok(&alice.bind(&mut world, 0x4001, PEER), alice.key);
    assert_eq!(
        world.server.stats().channels_bound,
        1,
        "a refresh is no new channel"
    );

    // Over TCP the server pads.
    let mut tcp = Client::new(
        FiveTuple {
            transport: Transport::Tcp,
            ..tuple("198.51.100.2:40000")
        },
        "bob",
        "builder",
    );
    tcp.allocate(&mut world);
    ok(&tcp.bind(&mut world, 0x4abc, PEER), tcp.key);
    let back = only_response(world.peer(tcp.relay.unwrap(), PEER, b"reply"), tcp.tuple);
    assert_eq!(back, b"\x4a\xbc\x00\x05reply\0\0\0");
    ChannelData::encode(0x4abc, b"up", Framing::Stream, &mut cd);
    assert_eq!(to_peer(&world.client(tcp.tuple, &cd)).len(), 1);

    // A channel lasts 600 s, its permission 300 s unless refreshed.
    ok(&alice.refresh(&mut world, 3600), alice.key);
    world.advance(Duration::from_secs(301));
    assert!(world.peer(relay, PEER, b"late").is_empty());
    ok(&alice.permit(&mut world, PEER), alice.key);
    assert_eq!(world.peer(relay, PEER, b"again").len(), 1);
    world.advance(Duration::from_secs(300));
    ok(&alice.permit(&mut world, PEER), alice.key);
    let back = only_response(world.peer(relay, PEER, b"data"), alice.tuple);
    assert_eq!(
        Message::parse(&back).unwrap().method,
        Method::DATA,
        "the channel expired"
    );
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let mut world = World::new(config());
    let mut alice = alice_with_permission(&mut world);
    let relay = alice.relay.unwrap();
    let resp = alice.refresh(&mut world, 0);
    assert_eq!(ok(&resp, alice.key).lifetime, Some(0));
    assert_eq!(world.closed, [relay]);
    assert_eq!(world.server.allocation_count(), 0);
    assert!(world.peer(relay, PEER, b"gone").is_empty());
    assert_eq!(error_code(&alice.refresh(&mut world, 600)), 437);
    assert_eq!(world.server.stats().allocations_deleted, 1);
    // The 5-tuple may allocate again.
    alice.allocate(&mut world);
    assert_eq!(world.server.allocation_count(), 1);
}

#[test]
fn lifetimes_are_bounded_and_expiry_frees_the_relayed_socket() {
    let mut world = World::new(config());
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    alice.allocate(&mut world);
    let relay = alice.relay.unwrap();
    for (asked, granted) in [(7200, 3600), (10, 600), (1000, 1000)] {
        assert_eq!(
            ok(&alice.refresh(&mut world, asked), alice.key).lifetime,
            Some(granted)
        );
    }
    world.advance(Duration::from_secs(999));
    assert!(world.closed.is_empty());
    world.advance(Duration::from_secs(2));
    assert_eq!(world.closed, [relay]);
    assert_eq!(world.server.allocation_count(), 0);
    assert_eq!(world.server.relay_count(), 0);
    assert_eq!(world.server.stats().allocations_expired, 1);
    assert_eq!(
        world.server.poll_output(),
        Output::Timeout(None),
        "no timer left"
    );
}

#[test]
fn quotas_per_user_and_ip_give_486_and_capacity_508() {
    let mut world = World::new(TurnConfig {
        limits: TurnLimits {
            max_allocations_per_user: 1,
            max_allocations_per_ip: 2,
            max_allocations: 3,
            ..TurnLimits::default()
        },
        ..config()
    });
    let allocate = |world: &mut World, client: &str, user: &str, password: &str| {
        let mut c = Client::new(tuple(client), user, password);
        let resp = c.call(world, Method::ALLOCATE, |w| {
            w.requested_transport(PROTOCOL_UDP);
        });
        Message::parse(&resp).unwrap().error_code.map(|e| e.code)
    };
    assert_eq!(
        allocate(&mut world, "198.51.100.1:1", "alice", "wonderland"),
        None
    );
    assert_eq!(
        allocate(&mut world, "198.51.100.2:1", "alice", "wonderland"),
        Some(486)
    );
    assert_eq!(
        allocate(&mut world, "198.51.100.1:2", "bob", "builder"),
        None
    );
    let carol = format!("{}:carol", UNIX + 60);
    let carol_password = ephemeral_password(b"sekrit", &carol);
    assert_eq!(
        allocate(&mut world, "198.51.100.1:3", &carol, &carol_password),
        Some(486)
    );
    assert_eq!(
        allocate(&mut world, "198.51.100.3:1", &carol, &carol_password),
        None
    );
    let dave = format!("{}:dave", UNIX + 60);
    let dave_password = ephemeral_password(b"sekrit", &dave);
    assert_eq!(
        allocate(&mut world, "198.51.100.4:1", &dave, &dave_password),
        Some(508)
    );
    let stats = world.server.stats();
    assert_eq!((stats.quota_refused, stats.capacity_refused), (2, 1));
    assert_eq!(world.server.allocation_count(), 3);
}

#[test]
fn peers_in_private_ranges_are_forbidden_unless_allowed() {
    let mut world = World::new(config());
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    alice.allocate(&mut world);
    for peer in [
        "10.0.0.1:5000",
        "127.0.0.1:5000",
        "192.168.1.1:5000",
        "169.254.169.254:80",
    ] {
        assert_eq!(error_code(&alice.permit(&mut world, peer)), 403, "{peer}");
        assert_eq!(
            error_code(&alice.bind(&mut world, 0x4000, peer)),
            403,
            "{peer}"
        );
    }
    assert_eq!(error_code(&alice.permit(&mut world, "[2a00::1]:5000")), 443);
    assert!(alice.send(&mut world, "127.0.0.1:5000", b"x").is_empty());
    assert_eq!(world.server.stats().forbidden_peers, 8);

    let mut world = World::new(TurnConfig {
        peers: PeerFilter {
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        ..config()
    });
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    alice.allocate(&mut world);
    ok(&alice.permit(&mut world, "127.0.0.1:5000"), alice.key);
    assert_eq!(error_code(&alice.permit(&mut world, "127.0.0.2:5000")), 403);
}

#[test]
fn requests_without_an_allocation_get_437() {
    let mut world = World::new(config());
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    assert_eq!(error_code(&alice.refresh(&mut world, 600)), 437);
    assert_eq!(error_code(&alice.permit(&mut world, PEER)), 437);
    assert_eq!(error_code(&alice.bind(&mut world, 0x4000, PEER)), 437);
    assert!(alice.send(&mut world, PEER, b"x").is_empty());
    assert_eq!(world.server.stats().mismatches, 3);
    // Error responses after authentication are signed.
    let resp = alice.refresh(&mut world, 600);
    let msg = Message::parse(&resp).unwrap();
    assert!(verify(&resp, &msg, &alice.key));
}

#[test]
fn allocate_checks_transport_and_attributes() {
    let mut world = World::new(config());
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    let code = |alice: &mut Client, world: &mut World, attrs: &dyn Fn(&mut MessageWriter<'_>)| {
        error_code(&alice.call(world, Method::ALLOCATE, attrs))
    };
    assert_eq!(code(&mut alice, &mut world, &|_| {}), 400);
    assert_eq!(
        code(&mut alice, &mut world, &|w| {
            w.requested_transport(6);
        }),
        442
    );
    assert_eq!(
        code(&mut alice, &mut world, &|w| {
            w.requested_transport(PROTOCOL_UDP)
                .requested_address_family(0x02);
        }),
        440,
        "no IPv6 relay"
    );
    let resp = alice.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP).dont_fragment();
    });
    let msg = Message::parse(&resp).unwrap();
    assert_eq!(msg.error_code.unwrap().code, 420);
    assert_eq!(msg.unknown_attributes, Some(&[0x00, 0x1a][..]));
    assert_eq!(
        code(&mut alice, &mut world, &|w| {
            w.requested_transport(PROTOCOL_UDP)
                .even_port(false)
                .reservation_token([1; 8]);
        }),
        400
    );
    assert_eq!(
        code(&mut alice, &mut world, &|w| {
            w.requested_transport(PROTOCOL_UDP)
                .reservation_token([1; 8]);
        }),
        508,
        "no such reservation"
    );
    assert!(world.opened.is_empty());
    world.fail_opens = true;
    let resp = alice.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP);
    });
    assert_eq!(error_code(&resp), 508);
    assert_eq!(
        world.server.allocation_count(),
        0,
        "a failed socket leaves nothing"
    );
}

#[test]
fn even_port_reserves_the_next_port_for_a_token() {
    let mut world = World::new(config());
    let mut rtp = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    let resp = rtp.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP).even_port(true);
    });
    let msg = ok(&resp, rtp.key);
    let relayed = msg.xor_relayed_address.unwrap();
    assert_eq!(relayed.port() % 2, 0);
    let token = msg.reservation_token.expect("RESERVATION-TOKEN");
    assert_eq!(world.opened.len(), 1);
    assert_eq!(
        world.server.relay_count(),
        2,
        "the allocation and the reserved port"
    );

    let mut rtcp = Client::new(tuple("198.51.100.1:40001"), "alice", "wonderland");
    let resp = rtcp.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP).reservation_token(token);
    });
    let msg = ok(&resp, rtcp.key);
    assert_eq!(msg.xor_relayed_address.unwrap().port(), relayed.port() + 1);
    assert_eq!(world.opened.len(), 1, "the reserved socket, no new one");
    let mut third = Client::new(tuple("198.51.100.1:40002"), "alice", "wonderland");
    let resp = third.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP).reservation_token(token);
    });
    assert_eq!(error_code(&resp), 508, "a token is used once");

    // An unused reservation is given back after 30 s.
    let mut probe = Client::new(tuple("198.51.100.1:40003"), "alice", "wonderland");
    let resp = probe.call(&mut world, Method::ALLOCATE, |w| {
        w.requested_transport(PROTOCOL_UDP).even_port(true);
    });
    ok(&resp, probe.key);
    assert_eq!(world.server.relay_count(), 4);
    world.advance(Duration::from_secs(31));
    assert_eq!(world.closed.len(), 1);
    assert_eq!(world.server.relay_count(), 3);
}

#[test]
fn hostile_datagrams_from_many_clients_leave_bounded_state() {
    let limits = TurnLimits {
        max_allocations: 8,
        max_permissions: 4,
        max_channels: 4,
        ..TurnLimits::default()
    };
    let mut world = World::new(TurnConfig { limits, ..config() });
    // Real clients first, so mutations of their messages get past authentication.
    let mut seeds = Vec::new();
    for i in 0..4u8 {
        let mut c = Client::new(
            tuple(&format!("198.51.100.{i}:4000")),
            "alice",
            "wonderland",
        );
        c.allocate(&mut world);
        seeds.push(
            c.request(Method::CHANNEL_BIND, TransactionId([9; 12]), |w| {
                w.channel_number(0x4000 + u16::from(i))
                    .xor_peer_address(addr(&format!("1.2.3.{i}:5000")));
            }),
        );
        seeds.push(
            c.request(Method::CREATE_PERMISSION, TransactionId([8; 12]), |w| {
                w.xor_peer_address(addr(&format!("1.2.4.{i}:5000")));
            }),
        );
        seeds.push(c.request(Method::ALLOCATE, TransactionId([7; 12]), |w| {
            w.requested_transport(PROTOCOL_UDP).even_port(true);
        }));
    }
    let mut rng = crate::mutation::Mutator::new();
    for round in 0..30_000u32 {
        let seed = &seeds[(rng.next() as usize) % seeds.len()];
        let mut m = if round % 3 == 0 {
            seed.clone()
        } else {
            rng.overwrite(seed)
        };
        rng.truncate_below(&mut m, seed.len() + 1);
        let client = format!("198.51.100.{}:{}", rng.next() % 6, 4000 + rng.next() % 3);
        world.client(tuple(&client), &m);
        if round % 500 == 0 {
            world.advance(Duration::from_secs(rng.next() % 400));
        }
        assert!(world.server.relay_count() <= 8);
        let (p, c) = world.server.permission_and_channel_count();
        assert!(p <= 8 * 4 && c <= 8 * 4);
    }
    world.advance(Duration::from_secs(4000));
    assert_eq!(world.server.relay_count(), 0, "everything expires");
    assert!(
        world.sockets.is_empty(),
        "every socket closed: {:?}",
        world.sockets
    );
}

#[test]
fn a_closed_tcp_connection_takes_its_allocation_along() {
    let mut world = World::new(config());
    let tcp = |client| FiveTuple {
        transport: Transport::Tcp,
        ..tuple(client)
    };
    let mut alice = Client::new(tcp("198.51.100.1:40000"), "alice", "wonderland");
    alice.allocate(&mut world);
    let relay = alice.relay.unwrap();
    world.feed(Input::ClientClosed { tuple: alice.tuple });
    assert_eq!(world.closed, [relay]);
    assert_eq!(world.server.allocation_count(), 0);
    // Another connection's close, or a UDP 5-tuple's, changes nothing.
    let mut bob = Client::new(tcp("198.51.100.2:40000"), "bob", "builder");
    bob.allocate(&mut world);
    world.feed(Input::ClientClosed {
        tuple: tcp("198.51.100.2:40001"),
    });
    assert_eq!(world.server.allocation_count(), 1);

    // Closed while its even pair is being opened: both sockets closed once open.
    let mut server = TurnServer::new(config(), 1);
    let mut carol = Client::new(tcp("198.51.100.3:40000"), "carol", "x");
    let now = Instant::now();
    let outputs = |server: &mut TurnServer| {
        std::iter::from_fn(|| match server.poll_output() {
            Output::Timeout(_) => None,
            other => Some(other),
        })
        .collect::<Vec<_>>()
    };
    let user = format!("{}:carol", UNIX + 60);
    carol.username = user.clone();
    carol.key = long_term_key(&user, REALM, &ephemeral_password(b"sekrit", &user));
    for _ in 0..2 {
        let req = carol.request(Method::ALLOCATE, TransactionId([1; 12]), |w| {
            w.requested_transport(PROTOCOL_UDP).even_port(true);
        });
        let input = Input::Client {
            tuple: carol.tuple,
            packet: &req,
            unix_secs: UNIX,
        };
        server.handle_input(now, input);
        for out in outputs(&mut server) {
            if let Output::Transmit(Transmit::Client { data, .. }) = out {
                carol.nonce = Message::parse(&data).unwrap().nonce.map(str::to_string);
            }
        }
    }
    assert_eq!(server.allocation_count(), 1, "waiting for its sockets");
    server.handle_input(now, Input::ClientClosed { tuple: carol.tuple });
    assert_eq!(server.allocation_count(), 0);
    let opened = server.relay_count();
    assert_eq!(opened, 1);
    server.handle_input(
        now,
        Input::RelayOpened {
            relay: RelayId(1),
            addr: addr("203.0.113.10:50000"),
        },
    );
    let closed: Vec<_> = outputs(&mut server);
    assert_eq!(
        closed,
        [
            Output::Event(Event::CloseRelay { relay: RelayId(1) }),
            Output::Event(Event::CloseRelay { relay: RelayId(2) })
        ]
    );
    assert_eq!(server.relay_count(), 0);
}

#[test]
fn unsigned_answers_to_one_udp_source_are_limited() {
    let mut world = World::new(config());
    let mut req = Vec::new();
    let mut w = MessageWriter::new(
        &mut req,
        Class::Request,
        Method::ALLOCATE,
        TransactionId([1; 12]),
    );
    w.requested_transport(PROTOCOL_UDP);
    w.finish();
    // A forged source: 1000 requests at once get the burst of 401s, then a trickle.
    let victim = tuple("192.0.2.7:53");
    let answered: usize = (0..1000).map(|_| world.client(victim, &req).len()).sum();
    assert_eq!(answered, 100);
    world.advance(Duration::from_secs(1));
    let answered: usize = (0..1000).map(|_| world.client(victim, &req).len()).sum();
    assert_eq!(answered, 20);
    assert_eq!(world.server.stats().unsigned_limited, 1880);
    // Others are answered, and so are real clients from the same source once authenticated
    // (signed responses are not limited), and TCP, whose source cannot be forged.
    assert_eq!(world.client(tuple("192.0.2.8:53"), &req).len(), 1);
    let tcp = FiveTuple {
        transport: Transport::Tcp,
        ..victim
    };
    assert_eq!(world.client(tcp, &req).len(), 1);
    let mut alice = Client::new(tuple("198.51.100.1:40000"), "alice", "wonderland");
    alice.allocate(&mut world);
    for _ in 0..200 {
        ok(&alice.refresh(&mut world, 600), alice.key);
    }
}
