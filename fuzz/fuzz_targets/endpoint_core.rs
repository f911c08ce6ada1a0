//! The endpoint core must never panic on any sequence of datagrams (main socket, spare
//! sockets, the relay) and timeouts, however hostile, and must keep its state bounded. Inputs
//! are split into records: one byte picks the kind, one the sender, then a length and the
//! bytes. Half the senders are a real peer whose packets some records seal properly.
#![no_main]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use burrow_proto::disco::{Message, NatHint, SharedKey};
use burrow_proto::endpoint::{Activity, EndpointConfig, EndpointCore, Input, Output};
use burrow_proto::identity::{NodeId, SecretKey};
use libfuzzer_sys::fuzz_target;

/// Us, a peer and the peer's key for us: derived once, not per input.
static KEYS: LazyLock<(SecretKey, NodeId, SharedKey)> = LazyLock::new(|| {
    let (us, peer) = (SecretKey::from_bytes([1; 32]), SecretKey::from_bytes([2; 32]));
    let key = SharedKey::new(&peer, &us.node_id()).unwrap();
    (us, peer.node_id(), key)
});

fuzz_target!(|data: &[u8]| {
    let (us, peer, key) = &*KEYS;
    let config = EndpointConfig {
        stun_servers: vec!["203.0.113.30:3478".parse().unwrap()],
        max_peers: 8,
        ..EndpointConfig::default()
    };
    let mut core = EndpointCore::new(us.clone(), config, 1);
    let mut now = Instant::now();
    let busy = |_: &NodeId| Activity { direct_rx: None, any: None };
    let mut rest = data;
    while let [kind, who, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        rest = next;
        let from = SocketAddr::from(([198, 51, 100, *who], 40000 + u16::from(*who)));
        // Some records carry a message the peer really sealed, so the core gets past the AEAD.
        let sealed;
        let packet = if kind & 0x80 != 0 {
            let msg = match kind & 3 {
                0 => Message::Ping { tx: [*who; 12] },
                1 => Message::Pong { tx: [*who; 12], observed: from },
                _ => Message::CallMeMaybe {
                    candidates: vec![from],
                    nat: if kind & 4 != 0 { NatHint::Hard } else { NatHint::Easy },
                    answer: kind & 8 != 0,
                },
            };
            sealed = key.seal(peer, &msg, [*who; 12]).unwrap();
            &sealed[..]
        } else {
            body
        };
        let input = match kind & 0x70 {
            0x00 => Input::Udp { from, packet },
            0x10 => Input::Spare { node: *peer, n: u16::from(*who), from, packet },
            0x20 => Input::Relayed { node: *peer, packet },
            0x30 => Input::Connect { node: *peer, addrs: &[from] },
            0x40 => Input::PrimerTtl(Some(*who)),
            0x50 if who & 1 == 0 => Input::Authenticated { node: *peer },
            0x50 => Input::Revoked { node: *peer },
            _ => {
                now += Duration::from_millis(u64::from(*who) * 50);
                Input::Timeout(&busy)
            }
        };
        core.handle_input(now, input);
        while !matches!(core.poll_output(), Output::Timeout(_)) {}
        assert!(core.peer_count() <= 8);
        assert!(core.spares_open() <= EndpointConfig::default().max_spares);
    }
});
