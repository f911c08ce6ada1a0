use std::net::SocketAddr;

use super::server::{Alternate, Ignored, Outcome, Role, ServerConfig, StunServer};
use super::*;

const TID: TransactionId = TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);

/// RFC 5769 2.2: sample IPv4 response (SOFTWARE, XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
/// FINGERPRINT).
const RFC5769_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

fn binding_request(fingerprint: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID);
    if fingerprint {
        w.finish_with_fingerprint();
    } else {
        w.finish();
    }
    buf
}

/// Appends a raw attribute and fixes the header length.
fn with_attr(mut msg: Vec<u8>, attr_type: u16, value: &[u8]) -> Vec<u8> {
    msg.extend_from_slice(&attr_type.to_be_bytes());
    msg.extend_from_slice(&(value.len() as u16).to_be_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().div_ceil(4) * 4, 0);
    let len = (msg.len() - HEADER_LEN) as u16;
    msg[2..4].copy_from_slice(&len.to_be_bytes());
    msg
}

#[test]
fn rfc5769_ipv4_response_vector() {
    let msg = Message::parse(&RFC5769_IPV4_RESPONSE).unwrap();
    assert_eq!(msg.class, Class::Success);
    assert_eq!(msg.method, Method::BINDING);
    assert_eq!(msg.software, Some("test vector"));
    assert!(msg.fingerprint);
    assert_eq!(msg.mapped(), Some("192.0.2.1:32853".parse().unwrap()));
}

#[test]
fn message_type_round_trips() {
    for class in [
        Class::Request,
        Class::Indication,
        Class::Success,
        Class::Error,
    ] {
        for m in [0x001, 0x003, 0x00a, 0xfff] {
            let t = message_type(class, Method(m));
            assert_eq!(t & 0xc000, 0);
            assert_eq!(split_message_type(t), (class, Method(m)));
        }
    }
    assert_eq!(message_type(Class::Request, Method::BINDING), 0x0001);
    assert_eq!(message_type(Class::Success, Method::BINDING), 0x0101);
    assert_eq!(message_type(Class::Error, Method::BINDING), 0x0111);
}

#[test]
fn writes_and_reads_every_attribute_v4_and_v6() {
    for addr in ["198.51.100.7:40000", "[2001:db8::1]:3478"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, Class::Success, Method::BINDING, TID);
        w.xor_mapped_address(addr)
            .mapped_address(addr)
            .response_origin(addr)
            .other_address(addr)
            .change_request(true, false)
            .response_port(5000)
            .padding(100)
            .software("burrow ✓");
        w.finish_with_fingerprint();
        assert_eq!(buf.len() % 4, 0);
        let msg = Message::parse(&buf).unwrap();
        assert_eq!(msg.transaction_id, TID);
        assert_eq!(msg.xor_mapped_address, Some(addr));
        assert_eq!(msg.mapped_address, Some(addr));
        assert_eq!(msg.response_origin, Some(addr));
        assert_eq!(msg.other_address, Some(addr));
        assert_eq!(
            msg.change_request,
            Some(ChangeRequest {
                ip: true,
                port: false
            })
        );
        assert_eq!(msg.response_port, Some(5000));
        assert_eq!(msg.padding_len, Some(100));
        assert_eq!(msg.software, Some("burrow ✓"));
        assert!(msg.fingerprint);
    }
}

#[test]
fn xor_address_really_is_xored() {
    let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Success, Method::BINDING, TID);
    w.xor_mapped_address(addr);
    w.finish();
    // Port 32853 ^ 0x2112 = 0xa147, as in RFC 5769.
    assert_eq!(&buf[26..28], &[0xa1, 0x47]);
    assert_eq!(&buf[28..32], &[0xe1, 0x12, 0xa6, 0x43]);
}

#[test]
fn error_code_round_trips() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Error, Method::BINDING, TID);
    w.error_code(420, "Unknown Attribute")
        .unknown_attributes(&[0x0002, 0x7777]);
    w.finish();
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(
        msg.error_code,
        Some(ErrorCode {
            code: 420,
            reason: "Unknown Attribute"
        })
    );
    assert_eq!(msg.unknown_attributes, Some(&[0, 2, 0x77, 0x77][..]));
}

#[test]
fn truncated_packets_are_too_short_or_mismatched() {
    let req = binding_request(true);
    for cut in 0..HEADER_LEN {
        assert_eq!(
            Message::parse(&req[..cut]),
            Err(StunError::TooShort { len: cut })
        );
    }
    for cut in HEADER_LEN..req.len() {
        assert!(matches!(
            Message::parse(&req[..cut]),
            Err(StunError::LengthMismatch { .. })
        ));
    }
}

#[test]
fn wrong_magic_cookie_is_rejected() {
    let mut req = binding_request(false);
    req[4] ^= 0xff;
    assert_eq!(
        Message::parse(&req),
        Err(StunError::BadMagicCookie { found: 0xde12a442 })
    );
}

#[test]
fn first_bits_must_be_zero() {
    let mut req = binding_request(false);
    req[0] |= 0x80;
    assert_eq!(Message::parse(&req), Err(StunError::NotStun));
}

#[test]
fn bad_lengths_are_rejected() {
    let mut req = binding_request(false);
    req.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        Message::parse(&req),
        Err(StunError::LengthMismatch {
            declared: 0,
            actual: 4
        })
    );
    req[3] = 2;
    assert_eq!(
        Message::parse(&req),
        Err(StunError::UnalignedLength { declared: 2 })
    );
    // An attribute that claims more bytes than the message holds.
    let mut over = with_attr(binding_request(false), 0x8022, b"abcd");
    over[22..24].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(
        Message::parse(&over),
        Err(StunError::AttributeOverrun {
            attr_type: 0x8022,
            offset: 20
        })
    );
}

#[test]
fn bad_fingerprint_is_rejected() {
    let mut req = binding_request(true);
    let last = req.len() - 1;
    req[last] ^= 1;
    assert!(matches!(
        Message::parse(&req),
        Err(StunError::BadFingerprint { .. })
    ));
    // A message altered after its fingerprint was computed fails too.
    let mut req = binding_request(true);
    req[10] ^= 1;
    assert!(matches!(
        Message::parse(&req),
        Err(StunError::BadFingerprint { .. })
    ));
}

#[test]
fn attribute_after_fingerprint_is_rejected() {
    let req = with_attr(binding_request(true), 0x8022, b"late");
    assert_eq!(
        Message::parse(&req),
        Err(StunError::AttributeAfterFingerprint)
    );
}

#[test]
fn unknown_comprehension_required_attributes_are_reported() {
    let req = with_attr(binding_request(false), 0x7777, &[1, 2, 3]);
    let req = with_attr(req, 0x0002, &[0; 8]);
    let req = with_attr(req, 0xc001, &[0; 4]); // comprehension-optional: ignored
    match Message::parse(&req) {
        Err(StunError::UnknownComprehensionRequired {
            class,
            transaction_id,
            types,
            ..
        }) => {
            assert_eq!(class, Class::Request);
            assert_eq!(transaction_id, TID);
            assert_eq!(types, vec![0x7777, 0x0002]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_known_attributes_are_rejected() {
    let cases: [(u16, &[u8]); 6] = [
        (0x0020, &[0, 1, 0, 0]),             // address too short for IPv4
        (0x0001, &[0, 3, 0, 0, 1, 2, 3, 4]), // unknown family
        (0x0003, &[0, 0, 0]),                // CHANGE-REQUEST not 4 bytes
        (0x8022, &[0xff, 0xfe]),             // SOFTWARE not UTF-8
        (0x0009, &[0, 0, 7, 0]),             // ERROR-CODE class 7
        (0x0027, &[0]),                      // RESPONSE-PORT too short
    ];
    for (attr_type, value) in cases {
        let req = with_attr(binding_request(false), attr_type, value);
        assert!(
            matches!(
                Message::parse(&req),
                Err(StunError::BadAttribute { attr_type: t, .. }) if t == attr_type
            ),
            "attribute {attr_type:#06x}"
        );
    }
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let req = with_attr(binding_request(false), 0x0008, &[0; 20]);
    let req = with_attr(req, 0x7777, &[0; 4]);
    assert!(Message::parse(&req).is_ok());
}

#[test]
fn looks_like_stun_demultiplexes() {
    assert!(looks_like_stun(&binding_request(false)));
    assert!(!looks_like_stun(&[0xc0; 40]));
    assert!(!looks_like_stun(&[0; 10]));
}

/// Deterministic mutation of valid messages: the parser must never panic.
#[test]
fn mutated_messages_never_panic() {
    let addr: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
    let mut seed = Vec::new();
    let mut w = MessageWriter::new(&mut seed, Class::Success, Method::BINDING, TID);
    w.xor_mapped_address(addr)
        .other_address(addr)
        .error_code(420, "x")
        .software("s");
    w.finish_with_fingerprint();
    let mut rng = crate::mutation::Mutator::new();
    for _ in 0..200_000 {
        let mut m = rng.overwrite(&seed);
        rng.truncate_below(&mut m, seed.len() + 1);
        let _ = Message::parse(&m);
    }
}

fn server(alternate: bool) -> StunServer {
    server_with(if alternate {
        Alternate::Address("203.0.113.11:3479".parse().unwrap())
    } else {
        Alternate::None
    })
}

fn server_with(alternate: Alternate) -> StunServer {
    StunServer::new(ServerConfig {
        primary: "203.0.113.10:3478".parse().unwrap(),
        alternate,
        software: Some("burrow-test".into()),
    })
}

fn request_with(f: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::BINDING, TID);
    f(&mut w);
    w.finish_with_fingerprint();
    buf
}

#[test]
fn server_answers_binding_with_mapped_and_5780_attributes() {
    let s = server(true);
    let client: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    let mut out = Vec::new();
    let outcome = s.handle(Role::PRIMARY, client, &binding_request(true), &mut out);
    assert_eq!(
        outcome,
        Outcome::Success(server::Reply {
            from: Role::PRIMARY,
            to: client
        })
    );
    let resp = Message::parse(&out).unwrap();
    assert_eq!(resp.class, Class::Success);
    assert_eq!(resp.transaction_id, TID);
    assert_eq!(resp.xor_mapped_address, Some(client));
    assert_eq!(
        resp.response_origin,
        Some("203.0.113.10:3478".parse().unwrap())
    );
    assert_eq!(
        resp.other_address,
        Some("203.0.113.11:3479".parse().unwrap())
    );
    assert!(resp.fingerprint);
    assert_eq!(s.roles().len(), 4);
}

#[test]
fn server_changes_ip_and_port_on_request() {
    let s = server(true);
    let client: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    let mut out = Vec::new();
    for (ip, port, origin) in [
        (true, true, "203.0.113.11:3479"),
        (true, false, "203.0.113.11:3478"),
        (false, true, "203.0.113.10:3479"),
    ] {
        let req = request_with(|w| {
            w.change_request(ip, port);
        });
        let Outcome::Success(reply) = s.handle(Role::PRIMARY, client, &req, &mut out) else {
            panic!("no success");
        };
        assert_eq!(
            reply.from,
            Role {
                alt_ip: ip,
                alt_port: port
            }
        );
        let resp = Message::parse(&out).unwrap();
        assert_eq!(resp.response_origin, Some(origin.parse().unwrap()));
    }
    // Received on the alternate address, OTHER-ADDRESS points back at the primary.
    let alt = Role {
        alt_ip: true,
        alt_port: true,
    };
    s.handle(alt, client, &binding_request(false), &mut out);
    let resp = Message::parse(&out).unwrap();
    assert_eq!(
        resp.other_address,
        Some("203.0.113.10:3478".parse().unwrap())
    );
}

#[test]
fn server_honours_response_port_and_padding() {
    let s = server(true);
    let client: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    let req = request_with(|w| {
        w.response_port(40001).padding(512);
    });
    let mut out = Vec::new();
    let outcome = s.handle(Role::PRIMARY, client, &req, &mut out);
    assert_eq!(
        outcome,
        Outcome::Success(server::Reply {
            from: Role::PRIMARY,
            to: "198.18.1.2:40001".parse().unwrap()
        })
    );
    assert_eq!(Message::parse(&out).unwrap().padding_len, Some(512));
}

#[test]
fn one_address_server_changes_only_the_port_and_names_it() {
    let s = server_with(Alternate::Port(3479));
    let primary: SocketAddr = "203.0.113.10:3478".parse().unwrap();
    let second: SocketAddr = "203.0.113.10:3479".parse().unwrap();
    assert_eq!(
        s.roles(),
        vec![
            (Role::PRIMARY, primary),
            (
                Role {
                    alt_ip: false,
                    alt_port: true
                },
                second
            )
        ]
    );
    let client: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    let mut out = Vec::new();
    let req = request_with(|w| {
        w.change_request(false, true);
    });
    let Outcome::Success(reply) = s.handle(Role::PRIMARY, client, &req, &mut out) else {
        panic!("no success");
    };
    assert_eq!(s.address(reply.from), second);
    let resp = Message::parse(&out).unwrap();
    assert_eq!(resp.response_origin, Some(second));
    assert_eq!(resp.alternate_port, Some(3479));
    assert_eq!(
        resp.other_address, None,
        "RFC 5780 7.4: only with a second IP"
    );
    // Asked on the second port, the other port is the primary one.
    s.handle(s.roles()[1].0, client, &binding_request(false), &mut out);
    assert_eq!(Message::parse(&out).unwrap().alternate_port, Some(3478));
    // A changed IP it cannot give.
    let req = request_with(|w| {
        w.change_request(true, false);
    });
    assert!(matches!(
        s.handle(Role::PRIMARY, client, &req, &mut out),
        Outcome::Error(_, 420)
    ));
}

#[test]
fn server_without_alternate_refuses_change_request_with_420() {
    let s = server(false);
    let req = request_with(|w| {
        w.change_request(true, true);
    });
    let mut out = Vec::new();
    let client: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    assert!(matches!(
        s.handle(Role::PRIMARY, client, &req, &mut out),
        Outcome::Error(_, 420)
    ));
    let resp = Message::parse(&out).unwrap();
    assert_eq!(resp.class, Class::Error);
    assert_eq!(resp.error_code.map(|e| e.code), Some(420));
    assert!(resp.other_address.is_none());
}

#[test]
fn server_answers_unknown_attributes_with_420_and_others_with_silence() {
    let s = server(true);
    let client: SocketAddr = "198.18.1.2:40000".parse().unwrap();
    let mut out = Vec::new();
    let req = with_attr(binding_request(false), 0x7777, &[0; 4]);
    assert!(matches!(
        s.handle(Role::PRIMARY, client, &req, &mut out),
        Outcome::Error(_, 420)
    ));
    let resp = Message::parse(&out).unwrap();
    assert_eq!(resp.unknown_attributes, Some(&[0x77, 0x77][..]));

    let mut bad = binding_request(true);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        s.handle(Role::PRIMARY, client, &bad, &mut out),
        Outcome::Ignored(Ignored::Malformed(StunError::BadFingerprint { .. }))
    ));
    assert!(matches!(
        s.handle(Role::PRIMARY, client, b"GET / HTTP/1.1\r\n\r\n", &mut out),
        Outcome::Ignored(Ignored::NotStun(_))
    ));
    assert_eq!(
        s.handle(Role::PRIMARY, client, &RFC5769_IPV4_RESPONSE, &mut out),
        Outcome::Ignored(Ignored::NotRequest)
    );
    let mut other_method = Vec::new();
    MessageWriter::new(&mut other_method, Class::Request, Method(0x003), TID).finish();
    assert!(matches!(
        s.handle(Role::PRIMARY, client, &other_method, &mut out),
        Outcome::Error(_, 400)
    ));
}

#[test]
fn rfc5769_message_integrity_verifies_with_its_short_term_key() {
    let msg = Message::parse(&RFC5769_IPV4_RESPONSE).unwrap();
    let key = b"VOkJxbRl1RmTxUk/WvJxBt";
    assert!(integrity::verify(&RFC5769_IPV4_RESPONSE, &msg, key));
    assert!(!integrity::verify(
        &RFC5769_IPV4_RESPONSE,
        &msg,
        b"VOkJxbRl1RmTxUk/WvJxBT"
    ));
    let mut tampered = RFC5769_IPV4_RESPONSE;
    tampered[30] ^= 1; // inside SOFTWARE, before the HMAC
    let fixed = with_fixed_fingerprint(&tampered);
    let msg = Message::parse(&fixed).unwrap();
    assert!(!integrity::verify(&fixed, &msg, key));
}

/// `msg` with its trailing FINGERPRINT recomputed.
fn with_fixed_fingerprint(msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    let at = m.len() - 4;
    let crc = crc32fast::hash(&m[..at - 4]) ^ FINGERPRINT_XOR;
    m[at..].copy_from_slice(&crc.to_be_bytes());
    m
}

#[test]
fn turn_attributes_round_trip_with_integrity() {
    let peer: SocketAddr = "[2001:db8::7]:5000".parse().unwrap();
    let second: SocketAddr = "198.51.100.9:6000".parse().unwrap();
    let key = integrity::long_term_key("alice", "burrow", "wonderland");
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::CHANNEL_BIND, TID);
    w.channel_number(0x4001)
        .xor_peer_address(peer)
        .xor_peer_address(second)
        .xor_relayed_address(second)
        .lifetime(777)
        .requested_transport(17)
        .requested_address_family(0x01)
        .even_port(true)
        .dont_fragment()
        .reservation_token([1, 2, 3, 4, 5, 6, 7, 8])
        .data(b"payload")
        .username("alice")
        .realm("burrow")
        .nonce("n0nce");
    w.finish_with_integrity(&key, true);
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.method, Method::CHANNEL_BIND);
    assert_eq!(msg.channel_number, Some(0x4001));
    assert_eq!(msg.xor_peer_address, Some(peer));
    assert_eq!(msg.peer_addresses().collect::<Vec<_>>(), [peer, second]);
    assert_eq!(msg.xor_relayed_address, Some(second));
    assert_eq!(msg.lifetime, Some(777));
    assert_eq!(msg.requested_transport, Some(17));
    assert_eq!(msg.requested_address_family, Some(0x01));
    assert_eq!(msg.even_port, Some(true));
    assert!(msg.dont_fragment && msg.fingerprint);
    assert_eq!(msg.reservation_token, Some([1, 2, 3, 4, 5, 6, 7, 8]));
    assert_eq!(msg.data, Some(&b"payload"[..]));
    assert_eq!(
        (msg.username, msg.realm, msg.nonce),
        (Some("alice"), Some("burrow"), Some("n0nce"))
    );
    assert!(integrity::verify(&buf, &msg, &key));
    assert!(!integrity::verify(&buf, &msg, &[0; 16]));

    // Attributes after MESSAGE-INTEGRITY do not count (RFC 8489 14.5).
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, Method::CREATE_PERMISSION, TID);
    w.xor_peer_address(peer);
    w.finish_with_integrity(&key, false);
    let buf = with_attr(
        buf,
        AttributeType::XOR_PEER_ADDRESS.0,
        &[0, 1, 0, 0, 1, 2, 3, 4],
    );
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.peer_addresses().count(), 1);
    assert!(
        integrity::verify(&buf, &msg, &key),
        "the HMAC ignores what follows it"
    );

    for (attr, value) in [
        (AttributeType::LIFETIME, &[0u8; 3][..]),
        (AttributeType::CHANNEL_NUMBER, &[0x40, 0]),
        (AttributeType::REQUESTED_TRANSPORT, &[17]),
        (AttributeType::RESERVATION_TOKEN, &[0; 4]),
        (AttributeType::EVEN_PORT, &[]),
        (AttributeType::MESSAGE_INTEGRITY, &[0; 19]),
        (AttributeType::XOR_PEER_ADDRESS, &[0, 1, 0]),
        (AttributeType::USERNAME, &[0xff]),
    ] {
        let msg = with_attr(binding_request(false), attr.0, value);
        assert!(
            matches!(Message::parse(&msg), Err(StunError::BadAttribute { .. })),
            "{attr:?}"
        );
    }
}
