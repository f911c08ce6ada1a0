//! The TURN core must never panic on any sequence of datagrams from many 5-tuples, peer
//! datagrams, socket answers and timeouts, and must keep its state bounded. Inputs are
//! records: a kind byte, a byte that picks the client (or peer), a length and the bytes. Some
//! records are requests the fuzzer shapes attribute by attribute and that are signed with a
//! real user's key and the nonce that client was last given, so they get past
//! authentication.
#![no_main]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use burrow_proto::stun::integrity::long_term_key;
use burrow_proto::stun::{Class, Message, MessageWriter, Method, TransactionId};
use burrow_proto::turn::{
    Event, FiveTuple, Input, Output, PeerFilter, RelayId, Transmit, Transport, TurnConfig,
    TurnLimits, TurnServer,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: TurnLimits = TurnLimits {
    max_allocations: 6,
    max_allocations_per_user: 4,
    max_allocations_per_ip: 3,
    rate_bytes_per_sec: 10_000,
    burst_bytes: 70_000,
    max_permissions: 3,
    max_channels: 3,
    default_lifetime: Duration::from_secs(600),
    max_lifetime: Duration::from_secs(3600),
};

fn tuple(who: u8) -> FiveTuple {
    FiveTuple {
        client: SocketAddr::from(([198, 51, 100, who % 4], 40_000 + u16::from(who % 3))),
        server: "203.0.113.10:3478".parse().unwrap(),
        transport: if who & 0x80 != 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        },
    }
}

/// A request of `method` with attributes the fuzzer chose, signed as alice.
fn signed(method: Method, who: u8, body: &[u8], nonce: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method, TransactionId([who; 12]));
    for chunk in body.chunks(3) {
        let [kind, a, b] = [0, 1, 2].map(|i| chunk.get(i).copied().unwrap_or(0));
        let peer = SocketAddr::from(([1, 2, a % 4, b % 4], 5000 + u16::from(b)));
        let _ = match kind % 12 {
            0 => w.requested_transport(if a & 1 == 0 { 17 } else { a }),
            1 => w.lifetime(u32::from(a) * 30 * u32::from(b % 3)),
            2 => w.xor_peer_address(peer),
            // In range, and now and then past it (at most 0xbffe).
            3 => {
                let n = u16::from_be_bytes([a % 0x40, b]) * (1 + u16::from(a >> 7));
                w.channel_number(0x4000 + n)
            }
            4 => w.even_port(a & 1 != 0),
            5 => w.reservation_token([a; 8]),
            6 => w.requested_address_family(a % 3),
            7 => w.data(&body[..usize::from(a).min(body.len())]),
            8 => w.dont_fragment(),
            9 => w.xor_peer_address(SocketAddr::from(([127, 0, 0, a], 5000))),
            _ => w.xor_peer_address(SocketAddr::from(([10, 0, a, b], 5000))),
        };
    }
    let user = if who & 0x40 != 0 { "bob" } else { "alice" };
    w.username(user).realm("burrow").nonce(nonce);
    w.finish_with_integrity(&long_term_key(user, "burrow", "pw"), who & 1 != 0);
    buf
}

fuzz_target!(|data: &[u8]| {
    let config = TurnConfig {
        users: vec![("alice".into(), "pw".into()), ("bob".into(), "pw".into())],
        secrets: vec!["s".into()],
        limits: LIMITS,
        peers: PeerFilter {
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        ..TurnConfig::default()
    };
    let mut core = TurnServer::new(config, 1);
    let mut now = Instant::now();
    let mut nonces: BTreeMap<FiveTuple, String> = BTreeMap::new();
    let mut relays: Vec<RelayId> = Vec::new();
    let mut next_port = 50_000u16;
    let mut rest = data;
    while let [kind, who, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let t = tuple(*who);
        let packet;
        let input = match kind & 0x0f {
            0..=5 => {
                packet = if kind & 0x80 != 0 {
                    let method = [
                        Method::ALLOCATE,
                        Method::REFRESH,
                        Method::CREATE_PERMISSION,
                        Method::CHANNEL_BIND,
                    ][usize::from(kind >> 4) & 3];
                    let nonce = nonces.get(&t).map_or("", String::as_str);
                    signed(method, *who, body, nonce)
                } else {
                    body.to_vec()
                };
                Input::Client {
                    tuple: t,
                    packet: &packet,
                    unix_secs: 1_800_000_000,
                }
            }
            6..=9 if !relays.is_empty() => {
                let relay = relays[usize::from(*who) % relays.len()];
                let from = SocketAddr::from(([1, 2, who % 4, 0], 5000));
                Input::Peer {
                    relay,
                    from,
                    packet: body,
                }
            }
            _ => {
                now += Duration::from_secs(u64::from(*who) * 3);
                Input::Timeout
            }
        };
        core.handle_input(now, input);
        loop {
            match core.poll_output() {
                Output::Transmit(Transmit::Client { tuple, data }) => {
                    // Remember nonces, as a real client would.
                    if let Ok(msg) = Message::parse(&data) {
                        if let Some(nonce) = msg.nonce {
                            nonces.insert(tuple, nonce.to_string());
                        }
                    }
                }
                Output::Transmit(Transmit::Peer { relay, .. }) => {
                    assert!(relays.contains(&relay), "a send from a socket never opened");
                }
                Output::Event(Event::OpenRelay { relay, .. }) => {
                    let input = if kind & 0x40 != 0 {
                        Input::RelayFailed { relay }
                    } else {
                        relays.push(relay);
                        next_port = next_port.wrapping_add(2).max(1024);
                        let addr = SocketAddr::from(([203, 0, 113, 10], next_port));
                        Input::RelayOpened { relay, addr }
                    };
                    core.handle_input(now, input);
                }
                Output::Event(Event::CloseRelay { relay }) => relays.retain(|r| *r != relay),
                Output::Timeout(_) => break,
            }
        }
        assert!(core.relay_count() <= LIMITS.max_allocations);
        let (permissions, channels) = core.permission_and_channel_count();
        assert!(permissions <= LIMITS.max_allocations * LIMITS.max_permissions);
        assert!(channels <= LIMITS.max_allocations * LIMITS.max_channels);
    }
});
