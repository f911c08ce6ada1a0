use std::net::{Ipv6Addr, SocketAddr};

use ed25519_dalek::VerifyingKey;

use super::*;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

/// Node A's key for B and B's key for A.
fn pair() -> (SharedKey, SharedKey) {
    let (a, b) = (key(1), key(2));
    (
        SharedKey::new(&a, &b.node_id()).unwrap(),
        SharedKey::new(&b, &a.node_id()).unwrap(),
    )
}

fn v6(i: u16) -> SocketAddr {
    SocketAddr::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i).into(),
        40_000 + i,
    )
}

fn messages() -> Vec<Message> {
    vec![
        Message::Ping { tx: [0xaa; 12] },
        Message::Pong {
            tx: [0xbb; 12],
            observed: "203.0.113.7:41641".parse().unwrap(),
        },
        Message::Pong {
            tx: [0; 12],
            observed: v6(1),
        },
        Message::CallMeMaybe {
            candidates: vec![],
            nat: NatHint::Hard,
            answer: false,
        },
        Message::CallMeMaybe {
            candidates: vec![
                "192.168.1.2:1".parse().unwrap(),
                v6(2),
                "[::]:0".parse().unwrap(),
            ],
            nat: NatHint::Open,
            answer: true,
        },
        Message::CallMeMaybe {
            candidates: (0..MAX_CANDIDATES as u16).map(v6).collect(),
            nat: NatHint::Easy,
            answer: false,
        },
    ]
}

fn full_call_me_maybe() -> Message {
    messages().pop().unwrap()
}

#[test]
fn every_message_round_trips_both_ways() {
    let (ab, ba) = pair();
    let (a, b) = (key(1).node_id(), key(2).node_id());
    for msg in messages() {
        let packet = ab.seal(&a, &msg, [1; 12]).unwrap();
        assert!(looks_like_disco(&packet));
        assert_eq!(sender(&packet), Ok(a));
        assert_eq!(ba.open(&packet), Ok(msg.clone()));

        let packet = ba.seal(&b, &msg, [2; 12]).unwrap();
        assert_eq!(sender(&packet), Ok(b));
        assert_eq!(ab.open(&packet), Ok(msg));
    }
}

#[test]
fn max_packet_is_a_full_call_me_maybe_of_v6_addresses() {
    let (ab, ba) = pair();
    let packet = ab
        .seal(&key(1).node_id(), &full_call_me_maybe(), [0; 12])
        .unwrap();
    assert_eq!(packet.len(), MAX_PACKET);
    let mut longer = packet.clone();
    longer.push(0);
    assert_eq!(ba.open(&longer), Err(DiscoError::BadLength(MAX_PACKET + 1)));
    assert_eq!(sender(&longer), Err(DiscoError::BadLength(MAX_PACKET + 1)));
}

/// Pins the wire format: a change here breaks every deployed node. The expected bytes were
/// computed independently with Python's `cryptography` (X25519 of SHA-512(seed)[..32] and B's
/// key mapped to Montgomery form, HKDF-SHA256, ChaCha20-Poly1305).
#[test]
fn wire_format_is_stable() {
    let (ab, _) = pair();
    let a = key(1).node_id();
    let packet = ab
        .seal(&a, &Message::Ping { tx: [7; 12] }, [9; 12])
        .unwrap();
    assert_eq!(packet[..4], MAGIC);
    assert_eq!(packet[4..36], *a.as_bytes());
    assert_eq!(packet[36..48], [9; 12]);
    assert_eq!(packet.len(), 48 + 13 + 16);
    let hex: String = packet[48..].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_SEALED_PING);
}

const GOLDEN_SEALED_PING: &str = "8e5baec7fa1aa7255a7380278889f353b1aea130ea6f3be1effa982ec2";

#[test]
fn a_third_node_cannot_open_or_forge() {
    let (ab, _) = pair();
    let (a, c) = (key(1), key(3));
    let packet = ab
        .seal(&a.node_id(), &Message::Ping { tx: [1; 12] }, [0; 12])
        .unwrap();
    // C has a key for A, but not the one A shares with B.
    let ca = SharedKey::new(&c, &a.node_id()).unwrap();
    assert_eq!(ca.open(&packet), Err(DiscoError::Decrypt));
    // C's packet claiming to be from A, sealed with C's key for B.
    let cb = SharedKey::new(&c, &key(2).node_id()).unwrap();
    let forged = cb
        .seal(&a.node_id(), &Message::Ping { tx: [1; 12] }, [0; 12])
        .unwrap();
    let (_, ba) = pair();
    assert_eq!(ba.open(&forged), Err(DiscoError::Decrypt));
}

#[test]
fn sender_swapped_to_a_third_party_is_refused() {
    let (ab, ba) = pair();
    let (a, c) = (key(1).node_id(), key(3).node_id());
    let mut packet = ab
        .seal(&a, &Message::Ping { tx: [1; 12] }, [0; 12])
        .unwrap();
    packet[4..36].copy_from_slice(c.as_bytes());
    assert_eq!(sender(&packet), Ok(c));
    assert_eq!(
        ba.open(&packet),
        Err(DiscoError::WrongSender {
            expected: a,
            got: c
        })
    );
    // B's key for C accepts the sender field, but the header is authenticated.
    let bc = SharedKey::new(&key(2), &c).unwrap();
    assert_eq!(bc.open(&packet), Err(DiscoError::Decrypt));
}

#[test]
fn own_packets_reflected_back_are_refused() {
    let (ab, _) = pair();
    let a = key(1).node_id();
    let packet = ab
        .seal(&a, &Message::Ping { tx: [1; 12] }, [0; 12])
        .unwrap();
    assert!(matches!(
        ab.open(&packet),
        Err(DiscoError::WrongSender { got, .. }) if got == a
    ));
}

#[test]
fn tampering_with_any_byte_fails() {
    let (ab, ba) = pair();
    let a = key(1).node_id();
    let msg = Message::Pong {
        tx: [5; 12],
        observed: v6(9),
    };
    let packet = ab.seal(&a, &msg, [3; 12]).unwrap();
    for i in 0..packet.len() {
        for flip in [0x01, 0x80] {
            let mut bad = packet.clone();
            bad[i] ^= flip;
            let err = ba.open(&bad).unwrap_err();
            match i {
                0..4 => assert_eq!(err, DiscoError::NotDisco, "byte {i}"),
                4..36 => assert!(matches!(err, DiscoError::WrongSender { .. }), "byte {i}"),
                _ => assert_eq!(err, DiscoError::Decrypt, "byte {i}"),
            }
        }
    }
}

#[test]
fn every_truncation_fails() {
    let (ab, ba) = pair();
    let packet = ab
        .seal(&key(1).node_id(), &full_call_me_maybe(), [0; 12])
        .unwrap();
    for len in 0..packet.len() {
        let cut = &packet[..len];
        let expected = match len {
            0..4 => DiscoError::NotDisco,
            4..MIN_PACKET => DiscoError::BadLength(len),
            _ => DiscoError::Decrypt,
        };
        assert_eq!(ba.open(cut), Err(expected), "length {len}");
        if len < MIN_PACKET {
            assert!(sender(cut).is_err(), "length {len}");
        }
    }
}

#[test]
fn every_truncated_plaintext_fails() {
    for msg in messages() {
        let plain = msg.encode().unwrap();
        assert_eq!(Message::decode(&plain), Ok(msg));
        assert_eq!(Message::decode(&[]), Err(DiscoError::Empty));
        for len in 1..plain.len() {
            assert_eq!(
                Message::decode(&plain[..len]),
                Err(DiscoError::Truncated(plain[0])),
                "{:02x?}",
                &plain[..len]
            );
        }
    }
}

#[test]
fn too_many_candidates_are_refused_both_ways() {
    let (ab, ba) = pair();
    let a = key(1).node_id();
    let msg = Message::CallMeMaybe {
        candidates: (0..=MAX_CANDIDATES as u16).map(v6).collect(),
        nat: NatHint::Easy,
        answer: false,
    };
    assert_eq!(msg.encode(), Err(DiscoError::TooManyCandidates(33)));
    assert_eq!(
        ab.seal(&a, &msg, [0; 12]),
        Err(DiscoError::TooManyCandidates(33))
    );
    // A count over the limit is refused before reading any address.
    let packet = ab.seal_plaintext(&a, [0; 12], vec![T_CALL_ME_MAYBE, 33]);
    assert_eq!(ba.open(&packet), Err(DiscoError::TooManyCandidates(33)));
    let packet = ab.seal_plaintext(&a, [0; 12], vec![T_CALL_ME_MAYBE, 255]);
    assert_eq!(ba.open(&packet), Err(DiscoError::TooManyCandidates(255)));
}

#[test]
fn unknown_types_families_and_trailing_bytes_are_refused() {
    let (ab, ba) = pair();
    let a = key(1).node_id();
    let open_plain = |plain: Vec<u8>| ba.open(&ab.seal_plaintext(&a, [0; 12], plain));

    assert_eq!(open_plain(vec![]), Err(DiscoError::Empty));
    assert_eq!(open_plain(vec![0x00]), Err(DiscoError::UnknownType(0)));
    assert_eq!(
        open_plain(vec![0x04, 1, 2]),
        Err(DiscoError::UnknownType(4))
    );

    let mut ping = Message::Ping { tx: [1; 12] }.encode().unwrap();
    ping.extend_from_slice(&[0, 0]);
    assert_eq!(
        open_plain(ping),
        Err(DiscoError::TrailingBytes {
            msg_type: T_PING,
            extra: 2
        })
    );
    let mut cmm = Message::CallMeMaybe {
        candidates: vec![v6(1)],
        nat: NatHint::Easy,
        answer: false,
    }
    .encode()
    .unwrap();
    let mut flagged = cmm.clone();
    *flagged.last_mut().unwrap() = 0x03;
    assert_eq!(
        open_plain(flagged.clone()),
        Err(DiscoError::UnknownFlags(0x03))
    );
    // The answer bit goes with any NAT hint; bits above it are not defined.
    *flagged.last_mut().unwrap() = 0x05;
    assert_eq!(
        open_plain(flagged.clone()),
        Ok(Message::CallMeMaybe {
            candidates: vec![v6(1)],
            nat: NatHint::Hard,
            answer: true,
        })
    );
    *flagged.last_mut().unwrap() = 0x0c;
    assert_eq!(open_plain(flagged), Err(DiscoError::UnknownFlags(0x0c)));
    let mut unflagged = cmm.clone();
    unflagged.pop();
    assert_eq!(
        open_plain(unflagged),
        Err(DiscoError::Truncated(T_CALL_ME_MAYBE))
    );
    cmm.push(4);
    assert_eq!(
        open_plain(cmm),
        Err(DiscoError::TrailingBytes {
            msg_type: T_CALL_ME_MAYBE,
            extra: 1
        })
    );

    let mut pong = Message::Pong {
        tx: [1; 12],
        observed: v6(1),
    }
    .encode()
    .unwrap();
    pong[13] = 5;
    assert_eq!(open_plain(pong), Err(DiscoError::UnknownFamily(5)));
}

#[test]
fn bad_peer_keys_are_refused() {
    let ours = key(1);
    // The identity point decodes as an Ed25519 key but has order 1.
    let mut identity = [0; 32];
    identity[0] = 1;
    let low_order = NodeId::from_bytes(identity).unwrap();
    assert_eq!(
        SharedKey::new(&ours, &low_order).unwrap_err(),
        DiscoError::LowOrderKey
    );
    let not_a_point = (0..=255u8)
        .map(|b| [b; 32])
        .find(|b| VerifyingKey::from_bytes(b).is_err())
        .unwrap();
    assert_eq!(
        SharedKey::new(&ours, &NodeId(not_a_point)).unwrap_err(),
        DiscoError::InvalidKey
    );
}

#[test]
fn keys_and_demux() {
    let (ab, _) = pair();
    assert_eq!(
        format!("{ab:?}"),
        format!("SharedKey(peer {})", key(2).node_id().short())
    );
    assert!(looks_like_disco(&MAGIC));
    assert!(!looks_like_disco(&MAGIC[..3]));
    assert!(!looks_like_disco(&[0xc0, b'B', b'W', b'D'])); // QUIC long header
    assert!(!looks_like_disco(&[
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42
    ])); // STUN
    assert_eq!(sender(&[0x00, 0x01]), Err(DiscoError::NotDisco));
    assert_eq!(MAGIC[0] & 0xc0, 0);
}

#[test]
fn mutated_packets_and_plaintexts_never_panic() {
    let (ab, ba) = pair();
    let a = key(1).node_id();
    let seeds: Vec<(Vec<u8>, Vec<u8>)> = messages()
        .iter()
        .map(|m| (ab.seal(&a, m, [4; 12]).unwrap(), m.encode().unwrap()))
        .collect();
    let mut rng = crate::mutation::Mutator::new();
    let mut mutate = |seed: &[u8]| {
        let mut m = rng.overwrite(seed);
        rng.truncate_below(&mut m, seed.len() + 2);
        m
    };
    for i in 0..100_000 {
        let (packet, plain) = &seeds[i % seeds.len()];
        let p = mutate(packet);
        let _ = sender(&p);
        let _ = ba.open(&p);
        let m = mutate(plain);
        if let Ok(msg) = Message::decode(&m) {
            assert_eq!(msg.encode().unwrap(), m, "{msg:?}");
        }
    }
}
